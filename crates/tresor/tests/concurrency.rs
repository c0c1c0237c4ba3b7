//! Black-box tests of concurrent writers: merge patches of different fields and field ops lose
//! nothing, and a compare-and-swap counter under contention counts exactly.

use std::sync::Arc;

use serde_json::json;
use tresor_test_support::server::TestServer;

fn bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_merge_patches_lose_nothing() {
    let s = Arc::new(TestServer::start(bin()).await);
    let t = Arc::new(s.install("app", &["storage:app"], "acct", "inst").await);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (s, t) = (s.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            let r = s
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
        versions.push(task.await.unwrap_or(0));
    }
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), 64, "every patch got its own version");
    let r = s.call("GET", "/v1/kv/doc", Some(&t), None).await;
    let obj = r.body["value"].as_object().unwrap();
    assert_eq!(obj.len(), 64, "a merge patch was lost: {obj:?}");
    for i in 0..64 {
        assert_eq!(obj[&format!("f{i}")], json!(i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compare_and_swap_counter_under_contention() {
    let s = Arc::new(TestServer::start(bin()).await);
    let t = Arc::new(s.install("app", &["storage:app"], "acct", "inst").await);
    s.call(
        "PUT",
        "/v1/kv/counter",
        Some(&t),
        Some(&json!({"value": 0})),
    )
    .await;
    let workers = 16;
    let per_worker = 10;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (s, t) = (s.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            let mut retries = 0u32;
            for _ in 0..per_worker {
                loop {
                    let r = s.call("GET", "/v1/kv/counter", Some(&t), None).await;
                    let n = r.body["value"].as_i64().unwrap_or(-1);
                    let etag = r.header("etag").unwrap_or_default().to_owned();
                    let body = serde_json::to_vec(&json!({ "value": n + 1 })).unwrap_or_default();
                    let w = s
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
                        412 => retries += 1,
                        other => panic!("unexpected {other}: {w:?}"),
                    }
                }
            }
            retries
        }));
    }
    for task in tasks {
        task.await.unwrap_or(0);
    }
    let r = s.call("GET", "/v1/kv/counter", Some(&t), None).await;
    assert_eq!(r.body["value"], json!(workers * per_worker));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_increments_count_exactly() {
    let s = Arc::new(TestServer::start(bin()).await);
    let t = Arc::new(s.install("app", &["storage:app"], "acct", "inst").await);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (s, t) = (s.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                let r = s
                    .call(
                        "POST",
                        "/v1/kv/stats/ops",
                        Some(&t),
                        Some(&json!({"ops": [{"op": "increment", "field": "hits"}, {"op": "list_push", "field": "log", "values": [1]}]})),
                    )
                    .await;
                assert_eq!(r.status, 200, "{r:?}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap_or(());
    }
    let r = s.call("GET", "/v1/kv/stats", Some(&t), None).await;
    assert_eq!(r.body["value"]["hits"], json!(160));
    assert_eq!(r.body["value"]["log"].as_array().map(Vec::len), Some(160));
}
