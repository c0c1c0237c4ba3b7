//! Smoke test of the load generator: it runs for a couple of seconds against a `tresor serve`
//! it spawns itself, over every operation and in both loops, and must finish with successful
//! requests, no errors and well-formed JSON. Nothing here is timed: the figures are not
//! checked, only that the tool works.
//!
//! The server is the `tresor` binary of the same build, beside `tresor-bench` in
//! `target/<profile>/`: `cargo test --workspace` builds every binary of the workspace (the
//! `tresor` crate's integration tests need its binary) before it runs any test.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn bench_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tresor-bench"))
}

/// `target/<profile>/tresor`, beside the bench tool.
fn server_bin() -> PathBuf {
    let bin = bench_bin()
        .parent()
        .map(|d| d.join("tresor"))
        .unwrap_or_default();
    assert!(
        bin.is_file(),
        "no tresor binary at {}: build it first (`cargo build -p tresor`; `cargo test --workspace` \
         builds it)",
        bin.display()
    );
    bin
}

/// Runs the tool with `args` (and `--spawn --server-bin …`); answers its JSON output.
fn check(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let mut cmd = Command::new(bench_bin());
    cmd.args(args)
        .arg("--spawn")
        .arg("--server-bin")
        .arg(server_bin())
        .arg("--data-parent")
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .env_remove("TRESOR_ADMIN_TOKEN");
    if args[0] == "sweep" {
        cmd.arg("--png").arg(dir.path().join("sweep.png"));
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tresor-bench {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("req/s"), "no figures printed:\n{stdout}");
    if args[0] == "sweep" {
        let png = std::fs::read(dir.path().join("sweep.png")).unwrap();
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "the chart is not a PNG"
        );
    }
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

fn assert_ok(result: &Value) {
    let name = &result["name"];
    assert!(
        result["requests"].as_u64().unwrap() > 0,
        "{name}: no request: {result}"
    );
    assert_eq!(
        result["errors"].as_u64(),
        Some(0),
        "{name}: errors: {result}"
    );
    for field in [
        "rps",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "p999_ms",
        "server_cpu_s",
        "server_peak_rss_mib",
    ] {
        let v = result[field].as_f64();
        assert!(v.is_some_and(|v| v >= 0.0), "{name}: {field} is {v:?}");
    }
    assert!(
        result["p50_ms"].as_f64() <= result["p99_ms"].as_f64(),
        "{name}: {result}"
    );
}

#[test]
fn every_operation_closed_loop() {
    let results = check(&[
        "sweep",
        "--ops",
        "get,put,patch,ops,batch,mix90,mix50",
        "--levels",
        "2",
        "--keys",
        "64",
        "--installations",
        "4",
        "--value-size",
        "256",
        "--duration",
        "0.3",
        "--warmup",
        "0.1",
    ]);
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 7);
    for r in results {
        assert_ok(r);
        assert_eq!(r["mode"], "closed");
    }
}

#[test]
fn open_loop_at_a_fixed_rate() {
    let out = check(&[
        "run",
        "--op",
        "get",
        "--rate",
        "200",
        "-c",
        "4",
        "--keys",
        "32",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--runs",
        "2",
    ]);
    for r in out["runs"].as_array().unwrap() {
        assert_ok(r);
        assert_eq!(r["mode"], "open");
        assert_eq!(r["rate"].as_f64(), Some(200.0));
    }
    assert_ok(&out["median"]);
}

/// The PostgreSQL suite, cut to one second per case: pgbench, the floor service and tresor over
/// one throwaway cluster (from the installed server binaries, as the PostgreSQL tests use).
#[test]
fn postgres_suite_with_its_floor() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let out = Command::new(bench_bin())
        .args([
            "postgres",
            "--runs",
            "1",
            "--duration",
            "1",
            "--warmup",
            "0",
        ])
        .args(["--keys", "200", "--value-size", "256"])
        .arg("--server-bin")
        .arg(server_bin())
        .arg("--json")
        .arg(&json)
        .env_remove("TRESOR_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tresor-bench postgres failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let medians = report["medians"].as_object().unwrap();
    for case in [
        "pgbench select c=32",
        "pgbench upsert c=32",
        "floor get c=32",
        "floor put c=32",
        "tresor-pg get c=32",
        "tresor-pg put c=32",
        "tresor-pg patch c=32",
        "tresor-pg get c=1",
        "tresor-pg put c=1",
    ] {
        let r = medians.get(case).unwrap_or_else(|| panic!("no {case}"));
        assert!(r["requests"].as_u64().unwrap() > 0, "{case}: no request");
        assert_eq!(r["errors"].as_u64(), Some(0), "{case}: errors");
    }
    let checks = report["checks"].as_array().unwrap();
    let targets = checks.iter().filter(|c| c["met"].is_boolean()).count();
    assert_eq!(targets, 3, "three targets against the floor: {checks:?}");
    assert_eq!(checks.len(), 7, "and four ratios stated: {checks:?}");
}

/// The noisy-neighbour scenario, cut to about three seconds: one run, three installations, the
/// noisy one at and far past a low limit. Only that it finishes, the three phases are reported,
/// the noisy installation was answered at its limit and refused past it, and the quiet ones
/// were never refused; nothing timed.
#[test]
fn noisy_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let markdown = dir.path().join("out.md");
    let out = Command::new(bench_bin())
        .args(["neighbours", "--runs", "1", "--installations", "3"])
        .args(["--rate-limit", "50", "-c", "4"])
        .args(["--duration", "0.8", "--warmup", "0.2"])
        .args(["--keys", "30", "--value-size", "256"])
        // The noisy client runs as a process of its own, here at a lower priority.
        .args(["--noisy-nice", "5"])
        .arg("--server-bin")
        .arg(server_bin())
        .arg("--data-parent")
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .arg("--markdown")
        .arg(&markdown)
        .env_remove("TRESOR_ADMIN_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tresor-bench neighbours failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| neighbour over its limit |"),
        "no table:\n{stdout}"
    );
    assert!(
        std::fs::read_to_string(&markdown)
            .unwrap()
            .contains("| alone |")
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    for phase in ["alone", "at_limit", "over_limit"] {
        let quiet = &run[phase]["quiet"];
        assert_ok(quiet);
        assert_eq!(quiet["mode"], "open");
    }
    assert!(run["alone"]["noisy"].is_null());
    assert!(run["at_limit"]["noisy"]["answered_2xx"].as_u64().unwrap() > 0);
    let noisy = &run["over_limit"]["noisy"];
    assert!(
        noisy["answered_429"].as_u64().unwrap() > 0,
        "the noisy installation was never refused: {noisy}"
    );
    assert!(noisy["sent"].as_u64().unwrap() >= noisy["answered_429"].as_u64().unwrap());
    assert!(run["p99_ratio"].as_f64().is_some_and(|r| r > 0.0));
    assert!(
        run["noisy_client_cpu_s"][1]
            .as_f64()
            .is_some_and(|c| c > 0.0),
        "the noisy client's CPU was not read: {run}"
    );
    assert_eq!(report["config"]["noisy_nice"], 5);
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 4, "{checks:?}");
    assert_eq!(checks[1]["met"], true, "quiet errors: {checks:?}");
}
