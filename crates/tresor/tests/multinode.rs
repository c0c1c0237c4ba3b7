//! Multi-node correctness: three `tresor serve` processes over one PostgreSQL database, as
//! behind a load balancer. What one server acknowledges, the others read at once; revocation,
//! uninstall and app deletion take effect on every server at once; concurrent merge patches,
//! field ops and compare-and-swap spread over the servers lose nothing; an OAuth refresh stays
//! single-flight across servers; and every server records which root key versions it holds.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tresor_test_support::provider::{ProviderConfig, TestProvider};
use tresor_test_support::server::{StorageBackend, TestServer};

fn bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

async fn three() -> Vec<Arc<TestServer>> {
    TestServer::start_cluster(bin(), 3, &[], &[])
        .await
        .into_iter()
        .map(Arc::new)
        .collect()
}

fn database_url(s: &TestServer) -> String {
    match s.backend() {
        StorageBackend::Postgres { database_url } => database_url,
        StorageBackend::Sqlite => panic!("a cluster server runs on PostgreSQL"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_acknowledged_by_one_server_is_read_by_the_others_at_once() {
    let s = three().await;
    let t = s[0].install("app", &["storage:app"], "acct", "inst").await;
    for round in 0..20 {
        let writer = &s[round % 3];
        let w = writer
            .call(
                "PUT",
                "/v1/secrets/k",
                Some(&t),
                Some(&json!({"value": {"round": round}})),
            )
            .await;
        assert!(w.status == 200 || w.status == 201, "{w:?}");
        let version = w.body["version"].as_u64().expect("a version");
        // No wait, no retry: the very next read on every other server sees it.
        for reader in &s {
            let r = reader.call("GET", "/v1/secrets/k", Some(&t), None).await;
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.body["value"]["round"], json!(round));
            assert_eq!(r.body["version"].as_u64(), Some(version));
        }
    }
    // A merge patch on one, a delete on another, a 404 on the third.
    let p = s[1]
        .call(
            "PATCH",
            "/v1/secrets/k",
            Some(&t),
            Some(&json!({"extra": 1})),
        )
        .await;
    assert_eq!(p.status, 200, "{p:?}");
    let r = s[2].call("GET", "/v1/secrets/k", Some(&t), None).await;
    assert_eq!(r.body["value"], json!({"round": 19, "extra": 1}));
    let d = s[2].call("DELETE", "/v1/secrets/k", Some(&t), None).await;
    assert!(d.status == 204 || d.status == 200, "{d:?}");
    let r = s[0].call("GET", "/v1/secrets/k", Some(&t), None).await;
    assert_eq!(r.status, 404, "{r:?}");
    // A conditional create on one server sees the key another server just created.
    let c = s[0]
        .raw(
            "PUT",
            "/v1/kv/once",
            Some(&t),
            &[
                ("content-type", "application/json".into()),
                ("if-none-match", "*".into()),
            ],
            Some(br#"{"value": 1}"#.to_vec()),
        )
        .await;
    assert_eq!(c.status, 201, "{c:?}");
    let again = s[1]
        .raw(
            "PUT",
            "/v1/kv/once",
            Some(&t),
            &[
                ("content-type", "application/json".into()),
                ("if-none-match", "*".into()),
            ],
            Some(br#"{"value": 2}"#.to_vec()),
        )
        .await;
    assert_eq!(again.status, 412, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_uninstall_and_app_deletion_take_effect_on_every_server_at_once() {
    let s = three().await;
    let t = s[0].install("app", &["storage:app"], "acct", "inst").await;
    // A second token for the same installation, used on every server first (so any cache
    // would be warm).
    let issued = s[0]
        .admin(
            "POST",
            "/v1/admin/installations/inst/tokens",
            Some(&json!({})),
        )
        .await;
    assert_eq!(issued.status, 201, "{issued:?}");
    let extra = issued.body["token"].as_str().expect("a token").to_owned();
    let extra_id = issued.body["token_id"]
        .as_str()
        .expect("a token id")
        .to_owned();
    for server in &s {
        let w = server
            .call(
                "PUT",
                "/v1/kv/warm",
                Some(&extra),
                Some(&json!({"value": 1})),
            )
            .await;
        assert!(w.status == 200 || w.status == 201, "{w:?}");
    }
    let r = s[1]
        .admin("DELETE", &format!("/v1/admin/tokens/{extra_id}"), None)
        .await;
    assert!(r.status == 204 || r.status == 200, "{r:?}");
    for server in &s {
        let r = server.call("GET", "/v1/kv/warm", Some(&extra), None).await;
        assert_eq!(
            r.status, 401,
            "a revoked token still works somewhere: {r:?}"
        );
        let r = server.call("GET", "/v1/kv/warm", Some(&t), None).await;
        assert_eq!(r.status, 200, "the other token still works: {r:?}");
    }

    // Uninstall on one server: the token dies everywhere, and a reinstall starts empty.
    let r = s[2]
        .admin("DELETE", "/v1/admin/installations/inst", None)
        .await;
    assert!(r.status == 204 || r.status == 200, "{r:?}");
    for server in &s {
        let r = server.call("GET", "/v1/kv/warm", Some(&t), None).await;
        assert_eq!(
            r.status, 401,
            "an uninstalled installation's token works: {r:?}"
        );
        let w = server
            .call("PUT", "/v1/kv/after", Some(&t), Some(&json!({"value": 1})))
            .await;
        assert_eq!(w.status, 401, "a write landed after uninstall: {w:?}");
    }
    let r = s[1]
        .admin(
            "PUT",
            "/v1/admin/installations/inst",
            Some(&json!({"app_id": "app", "account_id": "acct"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let t2 = r.body["token"].as_str().expect("a token").to_owned();
    for server in &s {
        let r = server.call("GET", "/v1/kv/warm", Some(&t2), None).await;
        assert_eq!(r.status, 404, "the reinstall sees old data: {r:?}");
    }

    // Deleting the app on one server ends its installations everywhere.
    let r = s[0].admin("DELETE", "/v1/admin/apps/app", None).await;
    assert!(r.status == 204 || r.status == 200, "{r:?}");
    for server in &s {
        let r = server.call("GET", "/v1/kv/warm", Some(&t2), None).await;
        assert_eq!(r.status, 401, "a deleted app's token works: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_clients_over_three_servers_lose_nothing() {
    let s = three().await;
    let t = Arc::new(s[0].install("app", &["storage:app"], "acct", "inst").await);

    // Merge patches of 64 different fields of one document.
    let mut tasks = Vec::new();
    for i in 0..64usize {
        let (server, t) = (Arc::clone(&s[i % 3]), Arc::clone(&t));
        tasks.push(tokio::spawn(async move {
            let r = server
                .call(
                    "PATCH",
                    "/v1/kv/doc",
                    Some(&t),
                    Some(&json!({ format!("f{i}"): i })),
                )
                .await;
            assert_eq!(r.status, 200, "{r:?}");
            r.body["version"].as_u64().unwrap_or(0)
        }));
    }
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.expect("join"));
    }
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), 64, "every patch got its own version");
    let r = s[1].call("GET", "/v1/kv/doc", Some(&t), None).await;
    let obj = r.body["value"].as_object().expect("an object");
    assert_eq!(obj.len(), 64, "a merge patch was lost: {obj:?}");

    // Field ops: 64 clients × 3 increments and list pushes.
    let mut tasks = Vec::new();
    for i in 0..64usize {
        let (server, t) = (Arc::clone(&s[i % 3]), Arc::clone(&t));
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let r = server
                    .call(
                        "POST",
                        "/v1/kv/stats/ops",
                        Some(&t),
                        Some(&json!({"ops": [{"op": "increment", "field": "hits"},
                            {"op": "list_push", "field": "log", "values": [i]}]})),
                    )
                    .await;
                assert_eq!(r.status, 200, "{r:?}");
            }
        }));
    }
    for task in tasks {
        task.await.expect("join");
    }
    let r = s[2].call("GET", "/v1/kv/stats", Some(&t), None).await;
    assert_eq!(r.body["value"]["hits"], json!(192));
    assert_eq!(r.body["value"]["log"].as_array().map(Vec::len), Some(192));

    // Compare-and-swap with If-Match: 64 clients, 2 increments each.
    let w = s[0]
        .call(
            "PUT",
            "/v1/kv/counter",
            Some(&t),
            Some(&json!({"value": 0})),
        )
        .await;
    assert_eq!(w.status, 201, "{w:?}");
    let mut tasks = Vec::new();
    for i in 0..64usize {
        let (server, t) = (Arc::clone(&s[i % 3]), Arc::clone(&t));
        tasks.push(tokio::spawn(async move {
            for _ in 0..2 {
                loop {
                    let r = server.call("GET", "/v1/kv/counter", Some(&t), None).await;
                    let n = r.body["value"].as_i64().expect("a number");
                    let etag = r.header("etag").unwrap_or_default().to_owned();
                    let body = serde_json::to_vec(&json!({ "value": n + 1 })).unwrap_or_default();
                    let w = server
                        .raw(
                            "PUT",
                            "/v1/kv/counter",
                            Some(&t),
                            &[
                                ("content-type", "application/json".into()),
                                ("if-match", etag),
                            ],
                            Some(body),
                        )
                        .await;
                    match w.status {
                        200 => break,
                        412 => continue,
                        other => panic!("unexpected {other}: {w:?}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("join");
    }
    let r = s[1].call("GET", "/v1/kv/counter", Some(&t), None).await;
    assert_eq!(r.body["value"], json!(128));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oauth_refresh_stays_single_flight_across_servers() {
    let up = TestProvider::start(ProviderConfig {
        refresh_delay: Duration::from_millis(300),
        ..ProviderConfig::default()
    })
    .await;
    let s = three().await;
    let c = up.config().clone();
    let r = s[0]
        .admin(
            "PUT",
            "/v1/admin/providers/prov",
            Some(&json!({
                "base_url": up.api_base(),
                "allow_private_network": true,
                "inject": {"type": "bearer"},
                "oauth2": {"grant": "authorization_code", "authorize_url": up.authorize_url(),
                    "token_url": up.token_url(), "client_id": c.client_id,
                    "client_secret": c.client_secret, "scopes": ["read"]}
            })),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let t = s[0]
        .install(
            "app",
            &["credentials:read", "credentials:store", "credentials:use"],
            "acct",
            "inst",
        )
        .await;
    // The flow starts on one server (whose public URL the provider redirects to; behind a
    // load balancer every server shares one).
    let r = s[1]
        .call(
            "POST",
            "/v1/oauth/flows",
            Some(&t),
            Some(&json!({"provider": "prov", "store_as": {"key": "conn"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let callback = up
        .consent(r.body["authorize_url"].as_str().unwrap_or_default(), false)
        .await;
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(&callback)
        .send()
        .await
        .expect("callback");
    assert_eq!(resp.status().as_u16(), 200);

    let t = Arc::new(t);
    let call = |server: Arc<TestServer>, t: Arc<String>| async move {
        server
            .call(
                "POST",
                "/v1/credentials/conn/request",
                Some(&t),
                Some(&json!({"method": "GET", "path": "echo"})),
            )
            .await
    };
    let r = call(Arc::clone(&s[0]), Arc::clone(&t)).await;
    assert_eq!(r.body["status"], 200, "{r:?}");
    up.expire_access_tokens();
    let mut tasks = Vec::new();
    for i in 0..50usize {
        tasks.push(tokio::spawn(call(Arc::clone(&s[i % 3]), Arc::clone(&t))));
    }
    for task in tasks {
        let r = task.await.expect("join");
        assert_eq!(
            (r.status, r.body["status"].as_u64()),
            (200, Some(200)),
            "{r:?}"
        );
    }
    assert_eq!(up.stats().refreshes, 1, "refreshes: {:?}", up.stats());
    assert!(
        up.stats().violations.is_empty(),
        "{:?}",
        up.stats().violations
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_server_records_the_root_key_versions_it_holds() {
    let mut s: Vec<TestServer> = TestServer::start_cluster(bin(), 3, &[], &[]).await;
    let url = database_url(&s[0]);
    let db = tresor_test_support::postgres::connect(&url).await;
    let rows = db
        .query(
            "SELECT node_id, key_versions FROM nodes ORDER BY node_id",
            &[],
        )
        .await
        .expect("the node registry");
    assert_eq!(rows.len(), 3, "one row per running server");
    let mut versions = Vec::new();
    for row in &rows {
        let held: String = row.get(1);
        let held: Vec<String> = serde_json::from_str(&held).expect("a JSON array of ids");
        assert!(!held.is_empty());
        // Ids only: short identifiers, never key material.
        assert!(
            held.iter().all(|v| v.len() <= 64 && !v.contains('=')),
            "{held:?}"
        );
        versions.push(held);
    }
    assert!(versions.windows(2).all(|w| w[0] == w[1]), "{versions:?}");
    // A server that stops cleanly removes its registration.
    assert_eq!(s[2].terminate(), Some(0));
    let left: i64 = db
        .query_one("SELECT count(*) FROM nodes", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 2);
    drop(s.pop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_holds_no_plaintext_value_description_or_token() {
    let s = three().await;
    let t = s[0].install("app", &["storage:app"], "acct", "inst").await;
    let value = "canary-value-5f1d2a";
    let description = "canary-description-77b0e1";
    let w = s[1]
        .call(
            "PUT",
            "/v1/secrets/k",
            Some(&t),
            Some(&json!({"value": {"v": value}, "description": description})),
        )
        .await;
    assert_eq!(w.status, 201, "{w:?}");
    let p = s[2]
        .call("PATCH", "/v1/kv/doc", Some(&t), Some(&json!({"v": value})))
        .await;
    assert_eq!(p.status, 200, "{p:?}");
    // Reads of every server, so their queued audit events land too.
    for server in &s {
        assert_eq!(
            server
                .call("GET", "/v1/secrets/k", Some(&t), None)
                .await
                .status,
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let db = tresor_test_support::postgres::connect(&database_url(&s[0])).await;
    let tables = db
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .await
        .expect("tables");
    let token_secret = t.rsplit('_').next().expect("a token secret").to_owned();
    let mut scanned = 0usize;
    for table in &tables {
        let name: String = table.get(0);
        // Every row as text; bytea columns print as hex, so plaintext bytes would show as the
        // hex of the canary, which is searched for as well.
        let rows = db
            .query(&format!("SELECT t::text FROM \"{name}\" t"), &[])
            .await
            .expect("rows");
        for row in rows {
            let text: String = row.get(0);
            scanned += text.len();
            for needle in [value, description, token_secret.as_str(), t.as_str()] {
                let hex: String = needle.bytes().map(|b| format!("{b:02x}")).collect();
                assert!(
                    !text.contains(needle) && !text.contains(&hex),
                    "table {name} holds a plaintext canary"
                );
            }
        }
    }
    assert!(scanned > 1_000, "scanned too little: {scanned} bytes");
}
