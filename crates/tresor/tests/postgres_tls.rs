//! Black-box tests of TLS to the database: `tresor serve` over a PostgreSQL that accepts only
//! TLS and a password (`tresor_test_support::postgres::tls_cluster`). With
//! `--database-url '…?sslmode=require' --database-ca-file CA` it serves, and every session it
//! holds is encrypted; without the CA file (the system's roots, which do not know the test CA)
//! or with a CA that did not sign the server's certificate, it refuses to start, says why
//! without showing the password, and writes nothing.
//!
//! The servers are spawned here directly (not through `TestServer`, which would use the shared
//! plaintext cluster): these tests are about the database flags.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tresor_test_support::postgres::{TlsCluster, tls_cluster};
use tresor_test_support::server::free_port;

fn bin() -> &'static Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

/// The admin token of every server here (`TRESOR_ADMIN_TOKEN`).
const ADMIN: &str = "postgres-tls-test-admin-token-0123456789abcdef";

#[tokio::test]
async fn serve_with_the_database_ca_file_serves_over_tls() {
    let cluster = tls_cluster();
    let url = cluster.fresh_database().await;
    assert!(url.contains("sslmode=require"), "{url}");
    let tmp = tempdir();
    let key = keygen(tmp.path()).await;

    let port = free_port();
    let mut cmd = serve_command(&url, &key, &tmp.path().join("data"), port);
    cmd.arg("--database-ca-file").arg(cluster.ca_file());
    let mut server = Server::spawn(cmd, port, tmp.path().join("server.log"));
    server.wait_ready().await;

    let token = install(&server).await;
    let put = server
        .call(
            "PUT",
            "/v1/secrets/over-tls",
            Some(&token),
            Some(&json!({"value": "encrypted in transit"})),
        )
        .await;
    assert_eq!(put.0, 201, "{put:?}");
    let got = server
        .call("GET", "/v1/secrets/over-tls", Some(&token), None)
        .await;
    assert_eq!(got.0, 200, "{got:?}");
    assert_eq!(got.1["value"], "encrypted in transit", "{got:?}");

    // PostgreSQL's own view: the server's sessions on its database are all encrypted.
    let sessions = tresor_sessions(cluster, &url).await;
    assert!(!sessions.is_empty(), "the server holds no database session");
    for (pid, ssl) in &sessions {
        assert!(ssl, "session {pid} of the server is not encrypted");
    }

    assert_eq!(server.terminate(), Some(0), "{}", server.log());
    assert_no_password(cluster, &server.log());
}

#[tokio::test]
async fn serve_without_a_trusted_ca_refuses_to_start_and_writes_nothing() {
    let cluster = tls_cluster();
    let url = cluster.fresh_database().await;
    let tmp = tempdir();
    let key = keygen(tmp.path()).await;

    let cases: [(&str, Option<&Path>); 2] = [
        ("no --database-ca-file (system roots)", None),
        ("an unrelated CA", Some(cluster.unrelated_ca_file())),
    ];
    for (case, ca) in cases {
        let data = tmp.path().join("refused-data");
        let mut cmd = serve_command(&url, &key, &data, free_port());
        if let Some(ca) = ca {
            cmd.arg("--database-ca-file").arg(ca);
        }
        let out = run(cmd).await;
        eprintln!("{case}: {}", out.stderr.trim());
        assert_ne!(out.code, Some(0), "{case}: {out:?}");
        assert!(
            out.stderr.contains("error: connecting to"),
            "{case}: {out:?}"
        );
        // The database is named, with its password hidden.
        let shown = format!("postgres://postgres:***@127.0.0.1:{}/", cluster.port());
        assert!(out.stderr.contains(&shown), "{case}: {out:?}");
        assert!(
            out.stderr.contains("TLS with the database failed"),
            "{case}: the refusal names TLS: {out:?}"
        );
        assert!(!out.stderr.contains("serving on"), "{case}: {out:?}");
        assert_no_password(cluster, &out.stderr);
        assert_no_password(cluster, &out.stdout);
        assert_eq!(
            tables(cluster, &url).await,
            0,
            "{case}: the database changed"
        );
    }

    // `tresor migrate` takes the same flags and refuses the same way.
    let out = run(migrate_command(&url, None)).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("connecting to"), "{out:?}");
    assert_no_password(cluster, &out.stderr);
    assert_eq!(
        tables(cluster, &url).await,
        0,
        "migrate changed the database"
    );
    let out = run(migrate_command(&url, Some(cluster.ca_file()))).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_no_password(cluster, &out.stdout);
    assert_no_password(cluster, &out.stderr);
    assert!(tables(cluster, &url).await > 0, "migrate created nothing");
}

// ---- helpers ----

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tresor-pg-tls-")
        .tempdir()
        .unwrap()
}

/// A new root key file made by `tresor keygen`.
async fn keygen(dir: &Path) -> PathBuf {
    let path = dir.join("root.key");
    let mut cmd = Command::new(bin());
    cmd.arg("keygen").arg(&path);
    let out = run(cmd).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    path
}

/// `tresor serve` on `url` with a root key file and no CA file (the caller adds one).
fn serve_command(url: &str, key: &Path, data: &Path, port: u16) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .args(["--database-url", url, "--database-max-connections", "4"])
        .arg("--master-key-file")
        .arg(key)
        .env("TRESOR_ADMIN_TOKEN", ADMIN);
    cmd
}

fn migrate_command(url: &str, ca: Option<&Path>) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(["migrate", "--database-url", url]);
    if let Some(ca) = ca {
        cmd.arg("--database-ca-file").arg(ca);
    }
    cmd
}

#[derive(Debug)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs a command that must end by itself (within a minute), with a clean environment.
async fn run(mut cmd: Command) -> Output {
    clean_env(&mut cmd);
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::from(cmd).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("the command did not end within a minute"))
    .unwrap();
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Nothing of the test runner's environment decides where a server stores, what key it uses
/// or which CA it trusts.
fn clean_env(cmd: &mut Command) {
    for var in [
        "TRESOR_DATA_DIR",
        "TRESOR_DATABASE_URL",
        "TRESOR_DATABASE_MAX_CONNECTIONS",
        "TRESOR_DATABASE_CA_FILE",
        "TRESOR_MASTER_KEY",
        "TRESOR_MASTER_KEY_FILE",
        "TRESOR_LISTEN",
    ] {
        cmd.env_remove(var);
    }
    let given_admin = cmd.get_envs().any(|(k, _)| k == "TRESOR_ADMIN_TOKEN");
    if !given_admin {
        cmd.env_remove("TRESOR_ADMIN_TOKEN");
    }
}

/// The sessions with `application_name = 'tresor'` on the database of `url`, and whether each
/// is encrypted, seen over a separately verified connection.
async fn tresor_sessions(cluster: &TlsCluster, url: &str) -> Vec<(i32, bool)> {
    let client = cluster.connect(url).await;
    client
        .query(
            "SELECT a.pid, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = 'tresor' AND a.datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// How many tables the database of `url` has in its current schema.
async fn tables(cluster: &TlsCluster, url: &str) -> i64 {
    cluster
        .connect(url)
        .await
        .query_one(
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = current_schema()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

fn assert_no_password(cluster: &TlsCluster, text: &str) {
    assert!(
        !text.contains(cluster.password()),
        "the database password shows in:\n{text}"
    );
}

/// A `tresor serve` child; killed when dropped.
struct Server {
    child: Option<Child>,
    addr: String,
    log: PathBuf,
    http: reqwest::Client,
}

impl Server {
    fn spawn(mut cmd: Command, port: u16, log: PathBuf) -> Server {
        clean_env(&mut cmd);
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        Server {
            child: Some(cmd.spawn().unwrap()),
            addr: format!("127.0.0.1:{port}"),
            log,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self
                .http
                .get(format!("http://{}/readyz", self.addr))
                .send()
                .await
                && r.status().is_success()
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("tresor exited early ({status}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "tresor did not start; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// (status, body as JSON or null).
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self
            .http
            .request(method, format!("http://{}{path}", self.addr));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// SIGTERM, then the exit code.
    fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An app, an account and an installation; the installation token.
async fn install(server: &Server) -> String {
    let scopes = json!({"scopes": ["storage:app"]});
    let r = server
        .call("PUT", "/v1/admin/apps/app", Some(ADMIN), Some(&scopes))
        .await;
    assert!(r.0 == 200 || r.0 == 201, "{r:?}");
    let r = server
        .call("PUT", "/v1/admin/accounts/acct", Some(ADMIN), None)
        .await;
    assert!(r.0 == 200 || r.0 == 201, "{r:?}");
    let body = json!({"app_id": "app", "account_id": "acct"});
    let r = server
        .call(
            "PUT",
            "/v1/admin/installations/inst",
            Some(ADMIN),
            Some(&body),
        )
        .await;
    assert_eq!(r.0, 201, "{r:?}");
    r.1["token"].as_str().unwrap().to_owned()
}
