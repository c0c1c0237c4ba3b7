//! `tresor status` and `GET /v1/admin/status` (issue 8, item 5): the version, the backend, this
//! server, what the store holds, the root key versions and, on the embedded store, the last
//! backup — through the CLI as an operator runs it.

use std::path::Path;

use serde_json::{Value, json};
use tresor_test_support::ALL_SCOPES;
use tresor_test_support::process::run;
use tresor_test_support::server::{StorageBackend, TestServer};

fn bin() -> &'static Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

async fn cli_status(s: &TestServer) -> Value {
    let addr = format!("http://{}", s.addr);
    let envs = [
        ("TRESOR_ADDR", addr.as_str()),
        ("TRESOR_ADMIN_TOKEN", s.admin_token.as_str()),
    ];
    let out = run(bin(), &["status"], &envs).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_the_running_system() {
    let s = TestServer::start(bin()).await;
    let t = s
        .install("status-app", &ALL_SCOPES, "status-acct", "status-inst")
        .await;
    for k in 0..3 {
        let r = s
            .call(
                "PUT",
                &format!("/v1/kv/k{k}"),
                Some(&t),
                Some(&json!({"value": k})),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
    }

    let status = cli_status(&s).await;
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    let sqlite = s.backend() == StorageBackend::Sqlite;
    assert_eq!(
        status["backend"],
        if sqlite { "sqlite" } else { "postgres" }
    );
    assert!(
        status["node_id"]
            .as_str()
            .is_some_and(|n| n.starts_with("node_"))
    );
    let store = &status["store"];
    assert_eq!(store["apps"], 1, "{status}");
    assert_eq!(store["accounts"], 1);
    assert_eq!(store["installations"], 1);
    assert_eq!(store["records"], 3);
    assert!(
        store["audit_events"].as_u64().is_some_and(|n| n >= 6),
        "{status}"
    );
    assert!(store["bytes"].as_u64().is_some_and(|n| n > 0), "{status}");
    assert_eq!(status["keys"]["active"], "1");
    assert_eq!(status["keys"]["versions"], json!(["1"]));
    assert_eq!(status["keys"]["rewrap"]["done"], true);
    assert_eq!(status["last_backup"], Value::Null, "no backup yet");

    // The installation token is refused; the answer names no tenant data.
    let r = s.call("GET", "/v1/admin/status", Some(&t), None).await;
    assert_eq!(r.status, 403, "{r:?}");

    if sqlite {
        let file = s.data_dir().join("status-backup.db");
        let out = run(
            bin(),
            &[
                "backup".as_ref(),
                "--data-dir".as_ref(),
                s.data_dir().as_os_str(),
                file.as_os_str(),
            ],
            &[],
        )
        .await;
        assert_eq!(out.code, Some(0), "{out:?}");
        let status = cli_status(&s).await;
        let last = &status["last_backup"];
        assert!(last.is_object(), "{status}");
        assert!(
            last.to_string().contains("status-backup.db"),
            "the last backup names its file: {last}"
        );
    }
}
