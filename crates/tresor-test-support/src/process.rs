//! The binary as a child process with exactly the command line a test gives: [`run`] runs it to
//! its end and captures what it printed; [`Process`] keeps one running with its output in a log
//! file (what [`crate::server::TestServer`] is built on).
//!
//! Nothing of the test runner's environment decides where the binary stores, what root key it
//! uses, which CA it trusts for the database, where it listens or what admin token it accepts:
//! the variables of [`STORE_ENV`] are removed, and only the ones the test gives reach it.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The variables removed from the inherited environment of every child (a test sets them again
/// explicitly when it means them).
pub const STORE_ENV: &[&str] = &[
    "TRESOR_DATA_DIR",
    "TRESOR_DATABASE_URL",
    "TRESOR_DATABASE_MAX_CONNECTIONS",
    "TRESOR_DATABASE_CA_FILE",
    "TRESOR_MASTER_KEY",
    "TRESOR_MASTER_KEY_FILE",
    "TRESOR_LISTEN",
    "TRESOR_ADMIN_TOKEN",
];

/// How long [`run`] waits for the command to end.
const RUN_WITHIN: Duration = Duration::from_secs(60);

/// How a command run by [`run`] ended.
#[derive(Debug)]
pub struct Output {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// `bin` with these arguments and environment variables (on top of the runner's, less
/// [`STORE_ENV`]), no stdin, and stdout/stderr in `stdout`/`stderr`.
fn command(bin: &Path, args: &[impl AsRef<OsStr>], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args).stdin(Stdio::null());
    for var in STORE_ENV {
        cmd.env_remove(var);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `bin ARGS` with `envs` (see [`STORE_ENV`]) to its end, which must come within a minute.
pub async fn run(bin: &Path, args: &[impl AsRef<OsStr>], envs: &[(&str, &str)]) -> Output {
    let cmd = command(bin, args, envs);
    let shown: Vec<_> = cmd.get_args().map(OsStr::to_os_string).collect();
    let out = tokio::time::timeout(RUN_WITHIN, tokio::process::Command::from(cmd).output())
        .await
        .unwrap_or_else(|_| panic!("{shown:?} did not end within a minute"))
        .unwrap_or_else(|e| panic!("{} {shown:?}: {e}", bin.display()));
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A running child whose stdout and stderr go to a log file; killed (SIGKILL) when dropped.
pub struct Process {
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    /// Spawns `bin ARGS` with `envs` (see [`STORE_ENV`]), appending its output to `log`.
    pub fn spawn(
        bin: &Path,
        args: &[impl AsRef<OsStr>],
        envs: &[(&str, &str)],
        log: &Path,
    ) -> Process {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
        let child = command(bin, args, envs)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        Process {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// How it ended, if it has ended (and was not stopped through this handle).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Its stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (a minute at the most, then SIGKILL); returns the exit code, `None`
    /// when it did not end by itself or was stopped already.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("kill -TERM: {e}"));
        assert!(sent.success(), "kill -TERM {}: {sent}", c.id());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return s.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The value of `flag` in an argument list (`--flag VALUE` or `--flag=VALUE`), the last one.
pub fn flag_value(args: &[OsString], flag: &str) -> Option<String> {
    let mut found = None;
    let mut it = args.iter().map(|a| a.to_string_lossy());
    while let Some(arg) = it.next() {
        if arg == flag {
            found = it.next().map(|v| v.into_owned());
        } else if let Some(v) = arg.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
            found = Some(v.to_owned());
        }
    }
    found
}
