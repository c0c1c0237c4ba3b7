//! Runs the TypeScript SDK's tests (`sdk/typescript`, Node's built-in test runner) against the
//! `tresor` binary of this build, so that `cargo test --workspace` covers the SDK and its
//! example apps (`examples/`).
//!
//! Needs Node.js 18 or later and npm on the `PATH`: without them this test fails with a message
//! saying so (it never skips). `npm ci` runs only when `node_modules` is missing or older than
//! `package.json` / `package-lock.json`; then `npm run build` (the SDK and the examples) and
//! `node --test` with `TRESOR_BIN` set. A lock file in the target directory keeps concurrent
//! `cargo test` runs from building the package at the same time.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../sdk/typescript")
        .canonicalize()
        .unwrap_or_else(|e| panic!("sdk/typescript: {e}"))
}

/// Runs `program args` in `dir` with a deadline; panics with everything it printed when it
/// cannot start, fails or overruns. Returns its output.
fn run(dir: &Path, program: &str, args: &[&str], deadline: Duration) -> String {
    let logs = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let out_path = logs.path().join("out");
    let out = File::create(&out_path).unwrap_or_else(|e| panic!("{}: {e}", out_path.display()));
    let err = out.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
    let shown = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("TRESOR_BIN", env!("CARGO_BIN_EXE_tresor"))
        .env_remove("TRESOR_ADDR")
        .env_remove("TRESOR_TOKEN")
        .env("NPM_CONFIG_UPDATE_NOTIFIER", "false")
        .env("NPM_CONFIG_FUND", "false")
        .env("NPM_CONFIG_AUDIT", "false")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{shown}`: {e}\nThe TypeScript SDK tests need Node.js 18 or later and \
                 npm on the PATH (https://nodejs.org, or your system's nodejs and npm packages)."
            )
        });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("{shown}: {e}")) {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{shown}` did not finish within {deadline:?}; output:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(
        status.success(),
        "`{shown}` in {} failed ({status}); output:\n{output}",
        dir.display()
    );
    output
}

/// Node's major version, from `node --version` (`v20.11.1`).
fn node_major(dir: &Path) -> u32 {
    let version = run(dir, "node", &["--version"], Duration::from_secs(30));
    version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the Node.js version from {version:?}"))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `node_modules` is missing, incomplete, or older than the manifest or the lock file.
fn node_modules_stale(dir: &Path) -> bool {
    let Some(installed) = modified(&dir.join("node_modules/.package-lock.json")) else {
        return true;
    };
    if !dir.join("node_modules/typescript/bin/tsc").exists() {
        return true;
    }
    ["package.json", "package-lock.json"]
        .iter()
        .any(|f| modified(&dir.join(f)).is_none_or(|m| m > installed))
}

/// The test files, `test/*.test.mjs`, in name order.
fn test_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir.join("test"))
        .unwrap_or_else(|e| panic!("sdk/typescript/test: {e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".test.mjs"))
        .map(|n| format!("test/{n}"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no test/*.test.mjs in sdk/typescript");
    files
}

#[test]
fn typescript_sdk_tests_pass_against_this_build() {
    let dir = sdk_dir();
    let major = node_major(&dir);
    assert!(
        major >= 18,
        "the TypeScript SDK needs Node.js 18 or later; `node --version` says {major}"
    );
    run(&dir, "npm", &["--version"], Duration::from_secs(30));

    // One run at a time per target directory: concurrent `cargo test` runs share the package.
    let lock_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("typescript-sdk.lock");
    let lock = File::create(&lock_path).unwrap_or_else(|e| panic!("{}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", lock_path.display()));

    if node_modules_stale(&dir) {
        run(
            &dir,
            "npm",
            &["ci", "--no-audit", "--no-fund"],
            Duration::from_secs(300),
        );
    }
    run(&dir, "npm", &["run", "build"], Duration::from_secs(120));
    let files = test_files(&dir);
    let mut args = vec!["--test"];
    if major >= 20 {
        args.push("--test-reporter=spec");
    }
    args.extend(files.iter().map(String::as_str));
    // Fails (with the whole output) when any test fails: node exits non-zero.
    let output = run(&dir, "node", &args, Duration::from_secs(240));
    // The summary, for `cargo test -- --nocapture`.
    let summary: Vec<&str> = output.lines().filter(|l| l.starts_with('ℹ')).collect();
    println!("{}", summary.join("\n"));
}
