//! Starts `tresor serve` for a run (`--spawn`): a fresh data directory, a free loopback port, a
//! random admin token in `TRESOR_ADMIN_TOKEN`, the log in `server.log` beside the data, and a
//! SIGTERM at the end. Knowing the pid is what lets the tool report the server's CPU time and
//! peak RSS.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::client::{Conn, Req, Target};

/// A running `tresor serve` that this tool started.
pub struct SpawnedServer {
    child: Child,
    /// Holds the data directory (removed on drop unless kept).
    dir: tempfile::TempDir,
    pub url: String,
    pub admin_token: String,
}

impl SpawnedServer {
    /// Starts `bin serve` over a new directory under `parent` (the system's temporary
    /// directory when `None`), on the embedded store or, with `database_url`, on that
    /// PostgreSQL database (with a root key file made by `bin keygen` in the directory), with
    /// `extra_args` after the tool's own (e.g. `--rate-limit-per-installation 200`), and waits
    /// until `/readyz` answers 200.
    pub async fn start(
        bin: &Path,
        parent: Option<&Path>,
        database_url: Option<&str>,
        extra_args: &[String],
    ) -> anyhow::Result<SpawnedServer> {
        if !bin.is_file() {
            bail!(
                "no tresor binary at {} (build it with `cargo build --release -p tresor`, or pass \
                 --server-bin)",
                bin.display()
            );
        }
        let mut builder = tempfile::Builder::new();
        builder.prefix("tresor-bench-");
        let dir = match parent {
            Some(p) => builder.tempdir_in(p),
            None => builder.tempdir(),
        }
        .context("creating the data directory")?;
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let admin_token = format!("bench-admin-{}", random_hex(24)?);
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.path().join("data"));
        if let Some(url) = database_url {
            let key = dir.path().join("root.key");
            let out = Command::new(bin)
                .arg("keygen")
                .arg(&key)
                .stdin(Stdio::null())
                .output()
                .with_context(|| format!("running {} keygen", bin.display()))?;
            if !out.status.success() {
                bail!(
                    "{} keygen failed: {}",
                    bin.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            cmd.arg("--master-key-file")
                .arg(&key)
                .env("TRESOR_DATABASE_URL", url);
        }
        cmd.args(extra_args);
        let child = cmd
            .env("TRESOR_ADMIN_TOKEN", &admin_token)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = SpawnedServer {
            child,
            dir,
            url,
            admin_token,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let target = Target::parse(&self.url).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                bail!("tresor serve exited with {status} before it was ready:\n{log}");
            }
            if let Ok(mut conn) = Conn::connect(&target).await
                && let Ok((200, _)) = conn
                    .send(&Req::new(http::Method::GET, "/readyz".parse()?))
                    .await
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "tresor serve was not ready within 60 s (log: {})",
                    self.log_path().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits up to 10 s (SIGKILL after that).
    pub fn stop(mut self) -> anyhow::Result<()> {
        terminate(&mut self.child, Duration::from_secs(10))
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// SIGTERM to `child`; SIGKILL if it has not exited after `grace`.
pub fn terminate(child: &mut Child, grace: Duration) -> anyhow::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    child.wait()?;
    Ok(())
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `n` random bytes from the kernel, as hex.
pub fn random_hex(n: usize) -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The `tresor` binary next to this one (`target/<profile>/tresor` beside
/// `target/<profile>/tresor-bench`).
pub fn default_server_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("tresor")))
        .unwrap_or_else(|| PathBuf::from("tresor"))
}
