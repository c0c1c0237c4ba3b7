//! Black-box tests of starting servers over PostgreSQL and of `tresor migrate`: a missing or a
//! wrong root key stops the server before it migrates or writes anything (the database is
//! compared table by table before and after); `tresor migrate` prepares an empty database for
//! a server; servers that start together on an empty database all come up (the migration lock)
//! and register in the node registry, and a clean stop unregisters; the embedded store's
//! `tresor migrate`. No log line ever shows the database password.
//!
//! The servers are spawned here directly (not through `TestServer`), because these tests are
//! about the start itself: its flags, its exit code and its messages.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tresor_test_support::postgres::fresh_database;
use tresor_test_support::server::free_port;

fn bin() -> &'static Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

/// The admin token of every server here (`TRESOR_ADMIN_TOKEN`).
const ADMIN: &str = "postgres-start-test-admin-token-0123456789";

#[tokio::test]
async fn a_missing_root_key_stops_the_server_before_it_touches_anything() {
    let url = fresh_database().await;
    let tmp = tempdir();
    let data = tmp.path().join("data");
    let before = snapshot(&url).await;
    assert!(
        before.is_empty(),
        "a fresh database has no tables: {before:?}"
    );

    let out = run(serve_command(&url, &Key::None, &data, free_port())).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("root key is missing"), "{out:?}");
    assert!(out.stderr.contains("--master-key-file"), "{out:?}");
    assert!(out.stderr.contains("TRESOR_MASTER_KEY"), "{out:?}");
    assert_no_password(&url, &out.stderr);
    assert_eq!(snapshot(&url).await, before, "the database changed");
    assert!(!data.exists(), "the data directory was created");
}

#[tokio::test]
async fn a_wrong_root_key_is_refused_and_the_database_stays_as_it_was() {
    let url = fresh_database().await;
    let tmp = tempdir();
    let right = keygen(tmp.path(), "right.key").await;
    let wrong = keygen(tmp.path(), "wrong.key").await;

    // A store written with the right key: an installation and a secret.
    let mut server = Server::start(&url, &Key::File(right.clone()), tmp.path(), "first").await;
    let token = install(&server).await;
    let put = server
        .call(
            "PUT",
            "/v1/secrets/kept",
            Some(&token),
            Some(&json!({"value": "v1"})),
        )
        .await;
    assert_eq!(put.0, 201, "{put:?}");
    assert_eq!(server.terminate(), Some(0), "{}", server.log());
    let before = snapshot(&url).await;
    assert!(!before.is_empty());

    let refusals = [
        (Key::File(wrong), "wrong key"),
        (Key::Base64(b64_key([7; 32])), "wrong key"),
        (Key::None, "root key is missing"),
    ];
    for (key, says) in refusals {
        let out = run(serve_command(
            &url,
            &key,
            &tmp.path().join("refused"),
            free_port(),
        ))
        .await;
        assert_ne!(out.code, Some(0), "{key:?}: {out:?}");
        assert!(out.stderr.contains(says), "{key:?}: {out:?}");
        assert!(!out.stderr.contains("serving on"), "{key:?}: {out:?}");
        assert_no_password(&url, &out.stderr);
        assert_eq!(snapshot(&url).await, before, "{key:?} changed the database");
    }

    // The right key still opens everything.
    let server = Server::start(&url, &Key::File(right), tmp.path(), "again").await;
    let got = server
        .call("GET", "/v1/secrets/kept", Some(&token), None)
        .await;
    assert_eq!(got.0, 200, "{got:?}");
    assert_eq!(got.1["value"], "v1");
}

#[tokio::test]
async fn migrate_prepares_an_empty_database_for_a_server() {
    let url = fresh_database().await;
    let tmp = tempdir();
    let key = keygen(tmp.path(), "root.key").await;

    let out = run(migrate_command(&["--database-url", &url])).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("schema version 0 before"), "{out:?}");
    assert!(out.stdout.contains("applied migrations 1"), "{out:?}");
    assert_no_password(&url, &out.stdout);
    assert_no_password(&url, &out.stderr);
    let migrated = snapshot(&url).await;
    assert!(!migrated.is_empty());

    // Again: nothing to apply, nothing changed.
    let out = run(migrate_command(&["--database-url", &url])).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("nothing to apply"), "{out:?}");
    assert_eq!(snapshot(&url).await, migrated);

    // Without a store to migrate, or with two, it refuses.
    let out = run(migrate_command(&[])).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    let dir = tmp.path().to_string_lossy().into_owned();
    let out = run(migrate_command(&[
        "--database-url",
        &url,
        "--data-dir",
        &dir,
    ]))
    .await;
    assert_ne!(out.code, Some(0), "{out:?}");

    let mut server = Server::start(&url, &Key::File(key), tmp.path(), "server").await;
    let ready = server.call("GET", "/readyz", None, None).await;
    assert_eq!(ready.0, 200, "{ready:?}");
    assert_eq!(ready.1, json!({"status": "ready", "backend": "postgres"}));
    let token = install(&server).await;
    let put = server
        .call("PUT", "/v1/kv/k", Some(&token), Some(&json!({"value": 1})))
        .await;
    assert_eq!(put.0, 201, "{put:?}");
    let metrics = server.metrics().await;
    assert_eq!(gauge(&metrics, "tresor_nodes"), Some(1), "{metrics}");
    assert!(
        !metrics.contains("tresor_group_commit"),
        "no group-commit numbers over PostgreSQL: {metrics}"
    );
    assert_eq!(server.terminate(), Some(0), "{}", server.log());
    assert_no_password(&url, &server.log());
}

#[tokio::test]
async fn servers_starting_together_on_an_empty_database_all_come_up() {
    let url = fresh_database().await;
    let tmp = tempdir();
    let key = Key::File(keygen(tmp.path(), "root.key").await);

    // Both spawned before either is waited for: they migrate at the same moment.
    let mut a = Server::spawn(&url, &key, tmp.path(), "a");
    let mut b = Server::spawn(&url, &key, tmp.path(), "b");
    a.wait_ready().await;
    b.wait_ready().await;

    // One database: what one server writes, the other reads.
    let token = install(&a).await;
    let put = a
        .call(
            "PUT",
            "/v1/settings/s",
            Some(&token),
            Some(&json!({"value": "x"})),
        )
        .await;
    assert_eq!(put.0, 201, "{put:?}");
    let got = b.call("GET", "/v1/settings/s", Some(&token), None).await;
    assert_eq!(got.0, 200, "{got:?}");

    // Each registered itself; the later registration saw both.
    let counts = [
        gauge(&a.metrics().await, "tresor_nodes"),
        gauge(&b.metrics().await, "tresor_nodes"),
    ];
    assert_eq!(counts.iter().max(), Some(&Some(2)), "{counts:?}");

    // A clean stop unregisters: a third server counts itself and b.
    assert_eq!(a.terminate(), Some(0), "{}", a.log());
    let c = Server::start(&url, &key, tmp.path(), "c").await;
    assert_eq!(gauge(&c.metrics().await, "tresor_nodes"), Some(2));
    for s in [&a, &b, &c] {
        assert_no_password(&url, &s.log());
    }
}

#[tokio::test]
async fn migrate_on_the_embedded_store() {
    let tmp = tempdir();
    let dir = tmp.path().join("data");
    let dir_arg = dir.to_string_lossy().into_owned();

    let out = run(migrate_command(&["--data-dir", &dir_arg])).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("holds no embedded store"), "{out:?}");

    // A running server holds the data directory: migrate waits for no one and refuses.
    let port = free_port();
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", &dir_arg]);
    let mut server = Server::from_command(cmd, port, tmp.path().join("embedded.log"));
    server.wait_ready().await;
    let out = run(migrate_command(&["--data-dir", &dir_arg])).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("lock"), "{out:?}");
    assert_eq!(server.terminate(), Some(0), "{}", server.log());

    let out = run(migrate_command(&["--data-dir", &dir_arg])).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("nothing to apply"), "{out:?}");
    let versions = out
        .stdout
        .split("schema version ")
        .nth(1)
        .map(|rest| rest.split(' ').next().unwrap_or_default().to_owned());
    assert!(
        versions.is_some_and(|v| v.parse::<i64>().is_ok_and(|v| v > 0)),
        "{out:?}"
    );
}

#[test]
fn migrate_help_says_no_root_key_is_needed() {
    let out = Command::new(bin())
        .args(["migrate", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("no root key is needed"), "{text}");
    assert!(text.contains("--database-url"), "{text}");
    assert!(text.contains("--data-dir"), "{text}");
}

// ---- helpers ----

/// How a server gets (or does not get) its root key.
#[derive(Debug, Clone)]
enum Key {
    None,
    File(PathBuf),
    Base64(String),
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tresor-pg-start-")
        .tempdir()
        .unwrap()
}

fn b64_key(bytes: [u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A new root key file made by `tresor keygen`.
async fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let mut cmd = Command::new(bin());
    cmd.arg("keygen").arg(&path);
    let out = run(cmd).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    path
}

/// `tresor serve` on `url`, with only the environment given here.
fn serve_command(url: &str, key: &Key, data: &Path, port: u16) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .args(["--database-url", url, "--database-max-connections", "4"])
        .env("TRESOR_ADMIN_TOKEN", ADMIN);
    match key {
        Key::None => {}
        Key::File(path) => {
            cmd.arg("--master-key-file").arg(path);
        }
        Key::Base64(b64) => {
            cmd.env("TRESOR_MASTER_KEY", b64);
        }
    }
    cmd
}

fn migrate_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("migrate").args(args);
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

/// Nothing of the test runner's environment decides where a server stores or what key it uses.
fn clean_env(cmd: &mut Command) {
    for var in [
        "TRESOR_DATA_DIR",
        "TRESOR_DATABASE_URL",
        "TRESOR_DATABASE_MAX_CONNECTIONS",
        "TRESOR_DATABASE_CA_FILE",
        "TRESOR_MASTER_KEY_FILE",
        "TRESOR_LISTEN",
    ] {
        cmd.env_remove(var);
    }
    // Keep what the command was given explicitly.
    let given: Vec<_> = cmd
        .get_envs()
        .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
        .collect();
    if !given.iter().any(|(k, _)| k == "TRESOR_MASTER_KEY") {
        cmd.env_remove("TRESOR_MASTER_KEY");
    }
    if !given.iter().any(|(k, _)| k == "TRESOR_ADMIN_TOKEN") {
        cmd.env_remove("TRESOR_ADMIN_TOKEN");
    }
}

/// A `tresor serve` child; killed when dropped.
struct Server {
    child: Option<Child>,
    addr: String,
    log: PathBuf,
    http: reqwest::Client,
}

impl Server {
    /// Spawns and waits until it answers.
    async fn start(url: &str, key: &Key, dir: &Path, name: &str) -> Server {
        let mut s = Server::spawn(url, key, dir, name);
        s.wait_ready().await;
        s
    }

    fn spawn(url: &str, key: &Key, dir: &Path, name: &str) -> Server {
        let port = free_port();
        let cmd = serve_command(url, key, &dir.join(format!("{name}-data")), port);
        Server::from_command(cmd, port, dir.join(format!("{name}.log")))
    }

    fn from_command(mut cmd: Command, port: u16, log: PathBuf) -> Server {
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

    async fn metrics(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
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

/// The value of an unlabelled gauge in the text format.
fn gauge(metrics: &str, name: &str) -> Option<i64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The database password (when the URL has one) never shows.
fn assert_no_password(url: &str, text: &str) {
    let password = url::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned));
    if let Some(pw) = password.filter(|p| !p.is_empty()) {
        assert!(
            !text.contains(&pw),
            "the database password shows in:\n{text}"
        );
    }
}

/// Every table of the database: name, columns, row count and a digest of all its rows, in
/// name order. Equal snapshots mean nothing was written (nor created, nor altered).
async fn snapshot(url: &str) -> Vec<(String, String, i64, String)> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::TEXT FROM information_schema.tables \
             WHERE table_schema = current_schema() ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for table in tables {
        let columns: String = client
            .query_one(
                "SELECT COALESCE(string_agg(column_name || ' ' || data_type, ', ' \
                 ORDER BY ordinal_position), '') FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1",
                &[&table],
            )
            .await
            .unwrap()
            .get(0);
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), COALESCE(md5(string_agg(t::TEXT, '|' ORDER BY t::TEXT)), '') \
                     FROM \"{table}\" t"
                ),
                &[],
            )
            .await
            .unwrap();
        out.push((table, columns, row.get(0), row.get(1)));
    }
    drop(client);
    let _ = driver.await;
    out
}
