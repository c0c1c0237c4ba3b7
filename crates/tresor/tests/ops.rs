//! Black-box tests of operating the server: health, readiness, metrics, the served OpenAPI
//! document, TLS on the listener, refusals at start (plain HTTP on a public address, a wrong
//! root key, features of later releases), and `tresor keygen`.

use std::process::Command;

use serde_json::json;
use tresor_test_support::server::{TestServer, free_port};

fn bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

#[tokio::test]
async fn health_readiness_metrics_and_openapi() {
    let s = TestServer::start(bin()).await;
    let r = s.call("GET", "/healthz", None, None).await;
    assert_eq!(r.status, 200);
    let r = s.call("GET", "/readyz", None, None).await;
    assert_eq!(r.status, 200);
    let t = s
        .install("app", &["storage:app"], "acct-zq81", "inst-zq81")
        .await;
    s.call(
        "PUT",
        "/v1/secrets/SECRETKEYNAME",
        Some(&t),
        Some(&json!({"value": 1})),
    )
    .await;
    s.call("GET", "/v1/secrets/SECRETKEYNAME", Some(&t), None)
        .await;
    let r = s.call("GET", "/metrics", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
    for name in [
        "tresor_http_requests_total",
        "tresor_http_request_duration_seconds_bucket",
        "tresor_group_commit_batch_size_bucket",
        "# TYPE tresor_group_commit_failed_total counter\ntresor_group_commit_failed_total 0\n",
        "tresor_audit_events_committed_total ",
        "# TYPE tresor_sqlite_checkpoints_total counter\ntresor_sqlite_checkpoints_total ",
        "tresor_sqlite_checkpoints_failed_total 0\n",
    ] {
        assert!(r.text.contains(name), "metrics lack {name}");
    }
    assert!(r.text.contains("route=\"/v1/secrets/{key}\""));
    for leak in ["SECRETKEYNAME", "acct-zq81", "inst-zq81", &t] {
        assert!(!r.text.contains(leak), "a metric label carries `{leak}`");
    }
    // The served document is the committed one.
    let r = s.call("GET", "/openapi.json", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["openapi"], "3.1.0");
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/openapi.json"
        ))
        .unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(r.body, committed, "docs/openapi.json is stale");
}

#[tokio::test]
async fn tls_listener_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let s = TestServer::start_tls(bin(), &cert, &key, ck.cert.pem().as_bytes()).await;
    assert!(s.url("/").starts_with("https://"));
    let t = s.install("app", &["storage:app"], "acct", "inst").await;
    let r = s
        .call(
            "PUT",
            "/v1/secrets/k",
            Some(&t),
            Some(&json!({"value": "over tls"})),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = s.call("GET", "/v1/secrets/k", Some(&t), None).await;
    assert_eq!(r.body["value"], "over tls");
    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::get(format!("http://{}/healthz", s.addr)).await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}

#[test]
fn refusals_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let scratch = dir.path().join("scratch");
    let serve_in = |data: &std::path::Path, args: &[&str], envs: &[(&str, &str)]| {
        let mut c = Command::new(bin());
        c.arg("serve").arg("--data-dir").arg(data).args(args);
        c.env_remove("TRESOR_MASTER_KEY")
            .env_remove("TRESOR_ADMIN_TOKEN");
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let serve = |args: &[&str], envs: &[(&str, &str)]| serve_in(&scratch, args, envs);
    let port = free_port().to_string();
    let (code, err) = serve(&["--listen", &format!("0.0.0.0:{port}")], &[]);
    assert_ne!(code, Some(0));
    assert!(err.contains("--insecure-http"), "{err}");
    // Over PostgreSQL the root key must be supplied: refused before connecting.
    let (code, err) = serve(&["--database-url", "postgres://u:pw-x1@x/db"], &[]);
    assert_ne!(code, Some(0));
    assert!(err.contains("root key is missing"), "{err}");
    assert!(!err.contains("pw-x1"), "{err}");
    let (code, err) = serve(&[], &[("TRESOR_ADMIN_TOKEN", "short")]);
    assert_ne!(code, Some(0));
    assert!(err.contains("TRESOR_ADMIN_TOKEN"), "{err}");

    // A store created with one root key refuses another, before serving anything.
    let key1 = dir.path().join("k1");
    let key2 = dir.path().join("k2");
    for k in [&key1, &key2] {
        let st = Command::new(bin()).arg("keygen").arg(k).status().unwrap();
        assert!(st.success());
    }
    let st = Command::new(bin())
        .arg("keygen")
        .arg(&key1)
        .status()
        .unwrap();
    assert!(!st.success(), "keygen must not overwrite");
    let text = std::fs::read_to_string(&key1).unwrap();
    assert!(text.starts_with("tresor-root-key v1\n1:"));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key1).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let mut s = std::process::Command::new(bin())
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--master-key-file")
        .arg(&key1)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !data.join("admin.token").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not initialise {}",
            data.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = s.kill();
    let _ = s.wait();
    let key2_arg = key2.to_string_lossy().into_owned();
    let (code, err) = serve_in(
        &data,
        &[
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--master-key-file",
            &key2_arg,
        ],
        &[],
    );
    assert_ne!(code, Some(0));
    assert!(err.contains("wrong key file"), "{err}");
    let (code, err) = serve_in(
        &data,
        &["--listen", &format!("127.0.0.1:{}", free_port())],
        &[],
    );
    assert_ne!(code, Some(0), "no key file given and none in the data dir");
    assert!(err.contains("root key"), "{err}");

    // keygen --add-version keeps the old version and makes the new one active.
    let st = Command::new(bin())
        .args(["keygen", "--add-version"])
        .arg(&key1)
        .status()
        .unwrap();
    assert!(st.success());
    let text = std::fs::read_to_string(&key1).unwrap();
    let ids: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split(':').next())
        .collect();
    assert_eq!(ids, ["1", "2"]);
}

#[tokio::test]
async fn admin_token_from_the_environment() {
    let token = "an-operator-chosen-admin-token-0123456789";
    let s = TestServer::start_with(bin(), &[], &[("TRESOR_ADMIN_TOKEN", token)]).await;
    let r = s
        .call("PUT", "/v1/admin/accounts/a1", Some(token), None)
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = s
        .call("GET", "/v1/admin/accounts", Some(&s.admin_token), None)
        .await;
    assert_eq!(r.body["items"][0]["account_id"], "a1");
}

#[tokio::test]
async fn one_server_per_data_directory() {
    let s = TestServer::start(bin()).await;
    let out = Command::new(bin())
        .arg("serve")
        .arg("--data-dir")
        .arg(s.data_dir())
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another tresor serve"), "{err}");
    // The first server is unaffected.
    assert_eq!(s.call("GET", "/readyz", None, None).await.status, 200);
}

/// "tresor serving on URL" is logged once the listener is bound: with the port the system
/// chose for `--listen 127.0.0.1:0`, and not at all when the port is taken (the start ends
/// with the bind error instead).
#[tokio::test]
async fn serving_is_logged_once_the_port_is_bound() {
    use tokio::io::AsyncBufReadExt as _;

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let taken = held
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tokio::process::Command::new(bin())
            .args(["serve", "--listen", &taken.to_string(), "--data-dir"])
            .arg(dir.path().join("taken"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("serve on a taken port did not stop"))
    .unwrap_or_else(|e| panic!("{}: {e}", bin().display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("Address already in use"), "{stderr}");
    assert!(!stderr.contains("tresor serving on"), "{stderr}");
    drop(held);

    let mut child = tokio::process::Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("chosen"))
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin().display()));
    // The log goes to stderr.
    let log = child
        .stderr
        .take()
        .unwrap_or_else(|| panic!("no stderr pipe"));
    let mut lines = tokio::io::BufReader::new(log).lines();
    let url = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap_or(None) {
            if let Some((_, rest)) = line.split_once("tresor serving on ") {
                return rest.split_whitespace().next().map(str::to_owned);
            }
        }
        None
    })
    .await
    .unwrap_or_else(|_| panic!("no 'tresor serving on' line within 30 s"))
    .unwrap_or_else(|| panic!("the server ended without a 'tresor serving on' line"));
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(!url.ends_with(":0"), "the chosen port is logged: {url}");
    let r = reqwest::get(format!("{url}/healthz"))
        .await
        .unwrap_or_else(|e| panic!("GET {url}/healthz: {e}"));
    assert_eq!(r.status(), 200);
    let _ = child.kill().await;
}
