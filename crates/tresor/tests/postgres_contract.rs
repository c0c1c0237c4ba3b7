//! The black-box contract tests again, with every server on PostgreSQL: this binary's name
//! starts with `postgres_`, which makes `TestServer::start` and its siblings put each server on
//! a fresh database of the throwaway PostgreSQL (see `tresor_test_support::server`). The test
//! files are included unchanged as modules, so a test is written once and runs on both stores.
//!
//! Left out: the files that look at the embedded store itself — `durability.rs` (one test scans
//! the SQLite data directory for plaintext), `tamper.rs` (edits the SQLite file), `ops.rs`
//! (the data directory's lock file, the root key created beside the data, SQLite's group-commit
//! metrics) — and `source_docs.rs`, which starts no server.

#[path = "cli.rs"]
mod cli;
#[path = "concurrency.rs"]
mod concurrency;
#[path = "credentials.rs"]
mod credentials;
#[path = "oauth.rs"]
mod oauth;
#[path = "proxy.rs"]
mod proxy;
#[path = "records.rs"]
mod records;
#[path = "refresh.rs"]
mod refresh;
#[path = "sdk.rs"]
mod sdk;
#[path = "status.rs"]
mod status;
#[path = "tenancy.rs"]
mod tenancy;

use serde_json::json;
use tresor_test_support::server::{StorageBackend, TestServer, on_postgres};

/// The rule that puts this binary's servers on PostgreSQL holds.
#[test]
fn servers_of_this_binary_run_on_postgres() {
    assert!(on_postgres());
}

/// The harness's cluster: servers on one database see each other's writes, and one of them
/// restarting (or dying) leaves the others serving.
#[tokio::test]
async fn servers_of_a_cluster_share_one_database() {
    let bin: &std::path::Path = env!("CARGO_BIN_EXE_tresor").as_ref();
    let mut servers = TestServer::start_cluster(bin, 2, &[], &[]).await;
    assert!(matches!(
        servers[0].backend(),
        StorageBackend::Postgres { .. }
    ));
    assert_eq!(servers[0].backend(), servers[1].backend());
    assert_eq!(servers[0].admin_token, servers[1].admin_token);
    let t = servers[0]
        .install("app", &["storage:app"], "acct", "inst")
        .await;
    let r = servers[0]
        .call("PUT", "/v1/secrets/k", Some(&t), Some(&json!({"value": 1})))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = servers[1]
        .call("GET", "/v1/secrets/k", Some(&t), None)
        .await;
    assert_eq!(r.body["value"], json!(1), "{r:?}");

    servers[0].kill9();
    let r = servers[1]
        .call("PUT", "/v1/secrets/k", Some(&t), Some(&json!({"value": 2})))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    servers[0].launch().await;
    let r = servers[0]
        .call("GET", "/v1/secrets/k", Some(&t), None)
        .await;
    assert_eq!(r.body["value"], json!(2), "{r:?}");
    assert_eq!(servers[1].terminate(), Some(0), "{}", servers[1].log());
}
