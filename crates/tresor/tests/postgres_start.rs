//! Black-box tests of starting servers over PostgreSQL and of `tresor migrate`: a missing or a
//! wrong root key stops the server before it migrates or writes anything (the database is
//! compared table by table before and after); `tresor migrate` prepares an empty database for
//! a server; servers that start together on an empty database all come up (the migration lock)
//! and register in the node registry, and a clean stop unregisters; the embedded store's
//! `tresor migrate`. No log line ever shows the database password.
//!
//! The servers are started with exact command lines (`TestServer::start_exact`, nothing added),
//! because these tests are about the start itself: its flags, its exit code and its messages.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use tresor_test_support::postgres::fresh_database;
use tresor_test_support::process::run;
use tresor_test_support::server::{TestServer, free_port};

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

    let (args, envs) = serve_command(&url, &Key::None, &data, free_port());
    let out = run(bin(), &args, &envs).await;
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
    let mut server = start(&url, &Key::File(right.clone()), tmp.path(), "first").await;
    let token = install(&server).await;
    let put = server
        .call(
            "PUT",
            "/v1/secrets/kept",
            Some(&token),
            Some(&json!({"value": "v1"})),
        )
        .await;
    assert_eq!(put.status, 201, "{put:?}");
    assert_eq!(server.terminate(), Some(0), "{}", server.log());
    let before = snapshot(&url).await;
    assert!(!before.is_empty());

    let refusals = [
        (Key::File(wrong), "wrong key"),
        (Key::Base64(b64_key([7; 32])), "wrong key"),
        (Key::None, "root key is missing"),
    ];
    for (key, says) in refusals {
        let (args, envs) = serve_command(&url, &key, &tmp.path().join("refused"), free_port());
        let out = run(bin(), &args, &envs).await;
        assert_ne!(out.code, Some(0), "{key:?}: {out:?}");
        assert!(out.stderr.contains(says), "{key:?}: {out:?}");
        assert!(!out.stderr.contains("serving on"), "{key:?}: {out:?}");
        assert_no_password(&url, &out.stderr);
        assert_eq!(snapshot(&url).await, before, "{key:?} changed the database");
    }

    // The right key still opens everything.
    let server = start(&url, &Key::File(right), tmp.path(), "again").await;
    let got = server
        .call("GET", "/v1/secrets/kept", Some(&token), None)
        .await;
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.body["value"], "v1");
}

/// The same check as the embedded store's (it lives in the core): a key file that lacks the
/// root key version some namespace keys were wrapped with, or holds another key under that id,
/// is refused although version 1 (the token pepper's) is right.
#[tokio::test]
async fn a_key_file_without_the_databases_newer_version_is_refused() {
    let url = fresh_database().await;
    let tmp = tempdir();
    let key = keygen(tmp.path(), "root.key").await;
    let old_copy = tmp.path().join("old-copy.key");
    let other_copy = tmp.path().join("other-copy.key");
    std::fs::copy(&key, &old_copy).unwrap();
    std::fs::copy(&key, &other_copy).unwrap();
    let mut server = start(&url, &Key::File(key.clone()), tmp.path(), "v1").await;
    install(&server).await;
    assert_eq!(server.terminate(), Some(0), "{}", server.log());
    for file in [&key, &other_copy] {
        let out = run(
            bin(),
            &[
                OsStr::new("keygen"),
                OsStr::new("--add-version"),
                file.as_os_str(),
            ],
            &[],
        )
        .await;
        assert_eq!(out.code, Some(0), "{out:?}");
    }
    // A rotation makes version 2 the database's active one; a namespace key wrapped under it.
    let mut server = start(&url, &Key::File(key.clone()), tmp.path(), "v2").await;
    let rotated = server.admin("POST", "/v1/admin/keys/rotate", None).await;
    assert_eq!(rotated.status, 202, "{rotated:?}");
    server
        .install("app", &["storage:app"], "acct2", "inst2")
        .await;
    assert_eq!(server.terminate(), Some(0), "{}", server.log());
    let before = snapshot(&url).await;

    let refusals = [
        (Key::File(old_copy), "does not hold version `2`"),
        (
            Key::File(other_copy),
            "version `2` of the root key file does not open",
        ),
    ];
    for (key, says) in refusals {
        let (args, envs) = serve_command(&url, &key, &tmp.path().join("refused"), free_port());
        let out = run(bin(), &args, &envs).await;
        assert_ne!(out.code, Some(0), "{key:?}: {out:?}");
        assert!(out.stderr.contains(says), "{key:?}: {out:?}");
        assert!(out.stderr.contains("wrong key file"), "{key:?}: {out:?}");
        assert_eq!(snapshot(&url).await, before, "{key:?} changed the database");
    }
    let server = start(&url, &Key::File(key), tmp.path(), "again").await;
    drop(server);
}

#[tokio::test]
async fn migrate_prepares_an_empty_database_for_a_server() {
    let url = fresh_database().await;
    let tmp = tempdir();
    let key = keygen(tmp.path(), "root.key").await;

    let out = migrate(&["--database-url", &url]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("schema version 0 before"), "{out:?}");
    assert!(out.stdout.contains("applied migrations 1"), "{out:?}");
    assert_no_password(&url, &out.stdout);
    assert_no_password(&url, &out.stderr);
    let migrated = snapshot(&url).await;
    assert!(!migrated.is_empty());

    // Again: nothing to apply, nothing changed.
    let out = migrate(&["--database-url", &url]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("nothing to apply"), "{out:?}");
    assert_eq!(snapshot(&url).await, migrated);

    // Without a store to migrate, or with two, it refuses.
    let out = migrate(&[]).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    let dir = tmp.path().to_string_lossy().into_owned();
    let out = migrate(&["--database-url", &url, "--data-dir", &dir]).await;
    assert_ne!(out.code, Some(0), "{out:?}");

    let mut server = start(&url, &Key::File(key), tmp.path(), "server").await;
    let ready = server.call("GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(
        ready.body,
        json!({"status": "ready", "backend": "postgres"})
    );
    let token = install(&server).await;
    let put = server
        .call("PUT", "/v1/kv/k", Some(&token), Some(&json!({"value": 1})))
        .await;
    assert_eq!(put.status, 201, "{put:?}");
    let metrics = metrics(&server).await;
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
    let mut a = spawn(&url, &key, tmp.path(), "a");
    let mut b = spawn(&url, &key, tmp.path(), "b");
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
    assert_eq!(put.status, 201, "{put:?}");
    let got = b.call("GET", "/v1/settings/s", Some(&token), None).await;
    assert_eq!(got.status, 200, "{got:?}");

    // Each registered itself; the later registration saw both.
    let counts = [
        gauge(&metrics(&a).await, "tresor_nodes"),
        gauge(&metrics(&b).await, "tresor_nodes"),
    ];
    assert_eq!(counts.iter().max(), Some(&Some(2)), "{counts:?}");

    // A clean stop unregisters: a third server counts itself and b.
    assert_eq!(a.terminate(), Some(0), "{}", a.log());
    let c = start(&url, &key, tmp.path(), "c").await;
    assert_eq!(gauge(&metrics(&c).await, "tresor_nodes"), Some(2));
    for s in [&a, &b, &c] {
        assert_no_password(&url, &s.log());
    }
}

#[tokio::test]
async fn migrate_on_the_embedded_store() {
    let tmp = tempdir();
    let dir = tmp.path().join("data");
    let dir_arg = dir.to_string_lossy().into_owned();

    let out = migrate(&["--data-dir", &dir_arg]).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("holds no embedded store"), "{out:?}");

    // A running server holds the data directory: migrate waits for no one and refuses.
    let listen = format!("127.0.0.1:{}", free_port());
    let args = ["serve", "--listen", &listen, "--data-dir", &dir_arg];
    let mut server = TestServer::start_exact(bin(), &args, &[], None).await;
    let out = migrate(&["--data-dir", &dir_arg]).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("lock"), "{out:?}");
    assert_eq!(server.terminate(), Some(0), "{}", server.log());

    let out = migrate(&["--data-dir", &dir_arg]).await;
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
    let out = run(bin(), &[OsStr::new("keygen"), path.as_os_str()], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    path
}

/// `tresor serve` on `url`: its arguments and the only environment it gets (nothing of the test
/// runner's decides where it stores or what key it uses).
fn serve_command<'k>(
    url: &str,
    key: &'k Key,
    data: &Path,
    port: u16,
) -> (Vec<OsString>, Vec<(&'static str, &'k str)>) {
    let mut args: Vec<OsString> = ["serve", "--listen", &format!("127.0.0.1:{port}")]
        .into_iter()
        .map(OsString::from)
        .collect();
    args.extend(["--data-dir".into(), data.into()]);
    args.extend(["--database-url", url, "--database-max-connections", "4"].map(OsString::from));
    let mut envs = vec![("TRESOR_ADMIN_TOKEN", ADMIN)];
    match key {
        Key::None => {}
        Key::File(path) => args.extend(["--master-key-file".into(), path.into()]),
        Key::Base64(b64) => envs.push(("TRESOR_MASTER_KEY", b64.as_str())),
    }
    (args, envs)
}

/// `tresor migrate ARGS`, run to its end.
async fn migrate(args: &[&str]) -> tresor_test_support::process::Output {
    let mut all = vec!["migrate"];
    all.extend_from_slice(args);
    run(bin(), &all, &[]).await
}

/// `tresor serve` on `url`, spawned and not yet waited for, its data directory under `dir`
/// named by `name`.
fn spawn(url: &str, key: &Key, dir: &Path, name: &str) -> TestServer {
    let (args, envs) = serve_command(url, key, &dir.join(format!("{name}-data")), free_port());
    TestServer::spawn_exact(bin(), &args, &envs, Some(ADMIN))
}

/// [`spawn`], then wait until it is ready.
async fn start(url: &str, key: &Key, dir: &Path, name: &str) -> TestServer {
    let mut s = spawn(url, key, dir, name);
    s.wait_ready().await;
    s
}

/// An app, an account and an installation; the installation token.
async fn install(server: &TestServer) -> String {
    server
        .install("app", &["storage:app"], "acct", "inst")
        .await
}

/// The metrics in the text format.
async fn metrics(server: &TestServer) -> String {
    server.call("GET", "/metrics", None, None).await.text
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
