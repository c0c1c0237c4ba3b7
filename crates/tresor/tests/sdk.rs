//! The Rust SDK against the real server: typed reads and writes, the OCP-style `update` under
//! contention, paging, field ops, batches and the admin client.

use serde::{Deserialize, Serialize};
use serde_json::json;
use tresor_client::{BatchOp, Client, FieldOp, Store};
use tresor_test_support::server::TestServer;

fn bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Token {
    token: String,
    expiration: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sdk_end_to_end() {
    let s = TestServer::start(bin()).await;
    let admin = Client::new(&s.url(""), s.admin_token.clone()).unwrap();
    let a = admin.admin();
    a.put_app("app", &["storage:app"]).await.unwrap();
    a.put_account("acct").await.unwrap();
    let installed = a.install("inst", "app", "acct").await.unwrap();
    assert!(installed.created);
    let again = a.install("inst", "app", "acct").await.unwrap();
    assert!(!again.created && again.token.is_none());
    let c = Client::new(&s.url(""), installed.token.unwrap()).unwrap();

    // Typed get/put; a missing key is None.
    let secrets = c.secrets();
    assert!(secrets.get::<Token>("token").await.unwrap().is_none());
    let t = Token {
        token: "abc".into(),
        expiration: 1,
    };
    let out = secrets.put("token", &t).await.unwrap();
    assert!(out.created);
    let got = secrets.get::<Token>("token").await.unwrap().unwrap();
    assert_eq!(got.value, t);
    assert!(secrets.exists("token").await.unwrap());

    // update: 16 concurrent read-compute-write loops with If-Match lose nothing.
    let kv = c.kv();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let kv = c.kv();
        tasks.push(tokio::spawn(async move {
            kv.update::<i64, _>("n", |old| old.unwrap_or(0) + 1)
                .await
                .map(|r| r.value)
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(kv.get::<i64>("n").await.unwrap().unwrap().value, 16);

    // Paging through the list.
    for i in 0..7 {
        kv.put(&format!("p/{i}"), &i).await.unwrap();
    }
    let mut pages = kv.list("p/", Some(3));
    let mut seen = Vec::new();
    while let Some(page) = pages.next_page().await.unwrap() {
        assert!(page.len() <= 3);
        seen.extend(page.into_iter().map(|m| m.key));
    }
    assert_eq!(seen.len(), 7);

    // Field ops and batches.
    let out = kv
        .ops(
            "stats",
            vec![
                FieldOp::increment("hits", 2),
                FieldOp::list_push("log", [json!("a")], tresor_client::End::Back),
            ],
        )
        .await
        .unwrap();
    assert_eq!(out.results, vec![json!(2), json!(1)]);
    let res = c
        .batch(
            true,
            vec![
                BatchOp::put(Store::Kv, "b1", json!(1)),
                BatchOp::get(Store::Kv, "b1"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(res[0].status, 201);
    assert_eq!(res[1].record.as_ref().unwrap()["value"], json!(1));
    let err = c
        .batch(
            true,
            vec![BatchOp::put(Store::Kv, "b1", json!(2)).if_version(0)],
        )
        .await
        .unwrap_err();
    assert!(err.is_precondition_failed());
    assert_eq!(err.op_index(), Some(0));

    // Errors name the contract code.
    let err = c.store(Store::Shared).get::<i64>("x").await.unwrap_err();
    assert_eq!(err.status(), Some(403));
    a.uninstall("inst").await.unwrap();
    let err = secrets.get::<Token>("token").await.unwrap_err();
    assert_eq!(err.status(), Some(401));
}
