//! Black-box tests of TLS to the database: `tresor serve` over a PostgreSQL that accepts only
//! TLS and a password (`tresor_test_support::postgres::tls_cluster`). With
//! `--database-url '…?sslmode=require' --database-ca-file CA` it serves, and every session it
//! holds is encrypted; without the CA file (the system's roots, which do not know the test CA)
//! or with a CA that did not sign the server's certificate, it refuses to start, says why
//! without showing the password, and writes nothing.
//!
//! The servers are started with exact command lines (`TestServer::start_exact`, nothing added;
//! the standard start would use the shared plaintext cluster): these tests are about the
//! database flags.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use serde_json::json;
use tresor_test_support::postgres::{TlsCluster, tls_cluster};
use tresor_test_support::process::run;
use tresor_test_support::server::{TestServer, free_port};

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

    let mut args = serve_command(&url, &key, &tmp.path().join("data"), free_port());
    args.extend(["--database-ca-file".into(), cluster.ca_file().into()]);
    let mut server = TestServer::start_exact(bin(), &args, &serve_env(), None).await;

    let token = install(&server).await;
    let put = server
        .call(
            "PUT",
            "/v1/secrets/over-tls",
            Some(&token),
            Some(&json!({"value": "encrypted in transit"})),
        )
        .await;
    assert_eq!(put.status, 201, "{put:?}");
    let got = server
        .call("GET", "/v1/secrets/over-tls", Some(&token), None)
        .await;
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.body["value"], "encrypted in transit", "{got:?}");

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
        let mut args = serve_command(&url, &key, &data, free_port());
        if let Some(ca) = ca {
            args.extend(["--database-ca-file".into(), ca.into()]);
        }
        let out = run(bin(), &args, &serve_env()).await;
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
    let out = run(bin(), &migrate_command(&url, None), &[]).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("connecting to"), "{out:?}");
    assert_no_password(cluster, &out.stderr);
    assert_eq!(
        tables(cluster, &url).await,
        0,
        "migrate changed the database"
    );
    let out = run(bin(), &migrate_command(&url, Some(cluster.ca_file())), &[]).await;
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
    let out = run(bin(), &[OsStr::new("keygen"), path.as_os_str()], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    path
}

/// The arguments of `tresor serve` on `url` with a root key file and no CA file (the caller
/// adds one).
fn serve_command(url: &str, key: &Path, data: &Path, port: u16) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["serve", "--listen", &format!("127.0.0.1:{port}")]
        .map(OsString::from)
        .into();
    args.extend(["--data-dir".into(), data.into()]);
    args.extend(["--database-url", url, "--database-max-connections", "4"].map(OsString::from));
    args.extend(["--master-key-file".into(), key.into()]);
    args
}

/// The only environment `tresor serve` gets here: nothing of the test runner's decides where
/// it stores, what key it uses or which CA it trusts.
fn serve_env() -> [(&'static str, &'static str); 1] {
    [("TRESOR_ADMIN_TOKEN", ADMIN)]
}

fn migrate_command(url: &str, ca: Option<&Path>) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["migrate", "--database-url", url]
        .map(OsString::from)
        .into();
    if let Some(ca) = ca {
        args.extend(["--database-ca-file".into(), ca.into()]);
    }
    args
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

/// An app, an account and an installation; the installation token.
async fn install(server: &TestServer) -> String {
    server
        .install("app", &["storage:app"], "acct", "inst")
        .await
}
