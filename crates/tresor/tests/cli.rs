//! Black-box tests of the command-line client against the real server: the README walk-through,
//! exit codes, and values that never need to appear on the command line.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use tresor_test_support::server::TestServer;

fn bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

struct Cli<'a> {
    s: &'a TestServer,
    token: Option<String>,
}

impl Cli<'_> {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = Command::new(bin());
        c.args(args)
            .env("TRESOR_ADDR", self.s.url(""))
            .env("TRESOR_ADMIN_TOKEN", &self.s.admin_token)
            .env_remove("TRESOR_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = &self.token {
            c.env("TRESOR_TOKEN", t);
        }
        let mut child = c.spawn().unwrap_or_else(|e| panic!("spawn: {e}"));
        if let Some(input) = stdin {
            if let Some(mut i) = child.stdin.take() {
                let _ = i.write_all(input.as_bytes());
            }
        } else {
            drop(child.stdin.take());
        }
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("wait: {e}"))
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert_eq!(
            out.status.code(),
            Some(0),
            "tresor {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn walk_through_and_exit_codes() {
    let s = TestServer::start(bin()).await;
    let mut cli = Cli { s: &s, token: None };
    cli.ok(&["admin", "app", "put", "weather", "--scope", "storage:app"]);
    cli.ok(&["admin", "account", "put", "acme"]);
    let token = cli.ok(&[
        "admin",
        "install",
        "weather-acme",
        "--app",
        "weather",
        "--account",
        "acme",
    ]);
    let token = token.trim().to_owned();
    assert!(token.starts_with("tsr_"), "{token}");
    cli.token = Some(token);

    cli.ok(&[
        "secrets",
        "put",
        "apiKey",
        "sk_live_abc123",
        "--string",
        "--description",
        "third-party API key",
    ]);
    assert_eq!(
        cli.ok(&["secrets", "get", "apiKey"]).trim_end(),
        "sk_live_abc123"
    );
    cli.ok(&[
        "secrets",
        "put",
        "authToken",
        "{\"token\": \"abc\", \"siteId\": 123}",
    ]);
    cli.ok(&["secrets", "patch", "authToken", "{\"token\": \"def\"}"]);
    let v: serde_json::Value =
        serde_json::from_str(&cli.ok(&["secrets", "get", "authToken"])).unwrap_or_default();
    assert_eq!(v, serde_json::json!({"token": "def", "siteId": 123}));
    // A value from stdin never appears in the process list or shell history.
    let out = cli.run(
        &["secrets", "put", "fromStdin", "-", "--string"],
        Some("s3cr3t\n"),
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        cli.ok(&["secrets", "get", "fromStdin"]).trim_end(),
        "s3cr3t"
    );
    let ls = cli.ok(&["secrets", "ls"]);
    assert_eq!(
        ls.lines().collect::<Vec<_>>(),
        ["apiKey", "authToken", "fromStdin"]
    );
    let ops = cli.ok(&[
        "kv",
        "ops",
        "counters",
        "[{\"op\": \"increment\", \"field\": \"calls\"}]",
    ]);
    assert!(ops.contains('1'), "{ops}");

    // Missing key: nothing on stdout, exit 1 (GetSecret → null).
    let out = cli.run(&["secrets", "get", "missing"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        cli.run(&["secrets", "exists", "apiKey"], None)
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        cli.run(&["secrets", "exists", "missing"], None)
            .status
            .code(),
        Some(1)
    );
    cli.ok(&["secrets", "rm", "apiKey"]);
    assert_eq!(
        cli.run(&["secrets", "exists", "apiKey"], None)
            .status
            .code(),
        Some(1)
    );
    // Usage errors exit 2; API errors exit 3 with the code on stderr.
    assert_eq!(
        cli.run(&["secrets", "frobnicate"], None).status.code(),
        Some(2)
    );
    let out = cli.run(&["secrets", "put", "k", "{not json"], None);
    assert_ne!(out.status.code(), Some(0));

    cli.ok(&["admin", "uninstall", "weather-acme"]);
    let out = cli.run(&["secrets", "get", "authToken"], None);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthenticated"));
    let audit = cli.ok(&["admin", "audit", "--limit", "1000"]);
    assert!(audit.contains("uninstall"), "{audit}");
    assert!(!audit.contains("sk_live_abc123") && !audit.contains("s3cr3t"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_reports_transport_errors() {
    let out = Command::new(bin())
        .args(["secrets", "get", "k"])
        .env("TRESOR_ADDR", "http://127.0.0.1:1")
        .env("TRESOR_TOKEN", "tsr_x")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(4));
}
