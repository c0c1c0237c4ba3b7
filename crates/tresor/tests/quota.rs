//! Storage quotas (issue 7, item 7): a write that would take an installation (or an app's
//! shared store) past `--quota-records` or `--quota-bytes` answers 403 `quota_exceeded` and
//! writes nothing; deletes, shrinking and overwriting in place stay possible; other tenants are
//! untouched; and servers sharing one PostgreSQL database enforce one quota together.

use serde_json::json;
use tresor_test_support::server::TestServer;

fn bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

fn value(len: usize) -> serde_json::Value {
    json!({ "value": "q".repeat(len) })
}

#[tokio::test]
async fn records_and_bytes_quotas_refuse_growth_only() {
    let s = TestServer::start_with(
        bin(),
        &["--quota-records", "3", "--quota-bytes", "5000"],
        &[],
    )
    .await;
    let a = s.install("app", &["storage:app"], "acct-a", "inst-a").await;
    let b = s.install("app", &["storage:app"], "acct-b", "inst-b").await;
    // Records are counted over all of an installation's stores.
    for (store, key) in [("secrets", "k1"), ("settings", "k2"), ("kv", "k3")] {
        let r = s
            .call(
                "PUT",
                &format!("/v1/{store}/{key}"),
                Some(&a),
                Some(&value(10)),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let r = s.call("PUT", "/v1/kv/k4", Some(&a), Some(&value(10))).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.code(), Some("quota_exceeded"));
    assert_eq!(s.call("GET", "/v1/kv/k4", Some(&a), None).await.status, 404);
    // A field op that would create a record is refused the same way.
    let ops = json!({"ops": [{"op": "increment", "field": "n"}]});
    let r = s.call("POST", "/v1/kv/k5/ops", Some(&a), Some(&ops)).await;
    assert_eq!(r.code(), Some("quota_exceeded"), "{:?}", r.body);
    // Overwriting in place does not grow the count.
    let r = s.call("PUT", "/v1/kv/k3", Some(&a), Some(&value(12))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Another installation has its own quota.
    for key in ["k1", "k2", "k3"] {
        let r = s
            .call("PUT", &format!("/v1/kv/{key}"), Some(&b), Some(&value(10)))
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    // A delete makes room.
    assert_eq!(
        s.call("DELETE", "/v1/kv/k3", Some(&a), None).await.status,
        204
    );
    let r = s.call("PUT", "/v1/kv/k4", Some(&a), Some(&value(10))).await;
    assert_eq!(r.status, 201, "{:?}", r.body);

    // Bytes: growing past 5,000 stored bytes is refused, shrinking is not.
    let r = s
        .call("PUT", "/v1/secrets/k1", Some(&a), Some(&value(3000)))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = s
        .call("PUT", "/v1/settings/k2", Some(&a), Some(&value(3000)))
        .await;
    assert_eq!(r.code(), Some("quota_exceeded"), "{:?}", r.body);
    let r = s.call("GET", "/v1/settings/k2", Some(&a), None).await;
    assert_eq!(r.body["value"], "q".repeat(10), "nothing was written");
    let r = s
        .call("PUT", "/v1/secrets/k1", Some(&a), Some(&value(100)))
        .await;
    assert_eq!(r.status, 200, "shrinking is allowed: {:?}", r.body);
    let r = s
        .call("PUT", "/v1/settings/k2", Some(&a), Some(&value(3000)))
        .await;
    assert_eq!(r.status, 200, "now it fits: {:?}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_over_one_database_enforce_one_quota() {
    let servers = TestServer::start_cluster(bin(), 2, &["--quota-records", "5"], &[]).await;
    let t = servers[0]
        .install("app", &["storage:app"], "acct", "inst")
        .await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (http, url) = (
            servers[i % 2].http.clone(),
            servers[i % 2].url(&format!("/v1/kv/race{i}")),
        );
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            http.put(url)
                .bearer_auth(t)
                .json(&value(10))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("join").expect("request"));
    }
    let created = statuses.iter().filter(|&&c| c == 201).count();
    let refused = statuses.iter().filter(|&&c| c == 403).count();
    assert_eq!((created, refused), (5, 15), "{statuses:?}");
    let r = servers[1].call("GET", "/v1/kv", Some(&t), None).await;
    assert_eq!(
        r.body["items"].as_array().map(Vec::len),
        Some(5),
        "{:?}",
        r.body
    );
}
