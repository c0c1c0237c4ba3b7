//! Black-box tests of tenancy and access: isolation between installations, scope refusals,
//! token kinds, revocation, scope narrowing, uninstall and reinstall, app and account deletion,
//! the shared store, and the audit log.

use serde_json::json;
use tresor_test_support::server::TestServer;

fn bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

#[tokio::test]
async fn installations_are_isolated() {
    let s = TestServer::start(bin()).await;
    let scopes = ["storage:app", "shared:read", "shared:write"];
    let a = s.install("app", &scopes, "acct1", "i1").await;
    let b = s.install("app", &scopes, "acct2", "i2").await;
    let other_app = s.install("app2", &scopes, "acct1", "i3").await;
    s.call(
        "PUT",
        "/v1/secrets/k",
        Some(&a),
        Some(&json!({"value": "a's"})),
    )
    .await;
    // The same key in another installation is another record; existence does not leak.
    for t in [&b, &other_app] {
        let r = s.call("GET", "/v1/secrets/k", Some(t), None).await;
        assert_eq!((r.status, r.code()), (404, Some("not_found")));
        let r = s.call("HEAD", "/v1/secrets/k", Some(t), None).await;
        assert_eq!(r.status, 404);
        let r = s.call("GET", "/v1/secrets", Some(t), None).await;
        assert_eq!(r.body["items"], json!([]));
    }
    s.call(
        "PUT",
        "/v1/secrets/k",
        Some(&b),
        Some(&json!({"value": "b's"})),
    )
    .await;
    let r = s.call("GET", "/v1/secrets/k", Some(&a), None).await;
    assert_eq!(r.body["value"], "a's");

    // The shared store is one per app: i1 and i2 share it, i3 (another app) does not.
    s.call(
        "PUT",
        "/v1/shared/map",
        Some(&a),
        Some(&json!({"value": {"ext": "i1"}})),
    )
    .await;
    let r = s.call("GET", "/v1/shared/map", Some(&b), None).await;
    assert_eq!(r.body["value"], json!({"ext": "i1"}));
    let r = s
        .call("GET", "/v1/shared/map", Some(&other_app), None)
        .await;
    assert_eq!(r.status, 404);
    // Uninstalling one installation keeps the app's shared store.
    assert_eq!(
        s.admin("DELETE", "/v1/admin/installations/i1", None)
            .await
            .status,
        204
    );
    let r = s.call("GET", "/v1/shared/map", Some(&b), None).await;
    assert_eq!(r.body["value"], json!({"ext": "i1"}));
}

#[tokio::test]
async fn scopes_are_enforced_and_named() {
    let s = TestServer::start(bin()).await;
    let t = s
        .install("ro", &["secrets:read", "kv:write"], "acct", "inst")
        .await;
    let t = Some(t.as_str());
    // (method, path, body, missing scope)
    let cases = [
        (
            "PUT",
            "/v1/secrets/k",
            Some(json!({"value": 1})),
            "secrets:write",
        ),
        ("GET", "/v1/settings/k", None, "settings:read"),
        ("GET", "/v1/kv/k", None, "kv:read"),
        ("GET", "/v1/kv", None, "kv:read"),
        (
            "PUT",
            "/v1/kv/k?return=previous",
            Some(json!({"value": 1})),
            "kv:read",
        ),
        ("GET", "/v1/shared/k", None, "shared:read"),
        ("DELETE", "/v1/secrets/k", None, "secrets:write"),
    ];
    for (method, path, body, scope) in cases {
        let r = s.call(method, path, t, body.as_ref()).await;
        assert_eq!(
            (r.status, r.code()),
            (403, Some("forbidden")),
            "{method} {path}: {r:?}"
        );
        let msg = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(scope),
            "{method} {path}: message `{msg}` does not name {scope}"
        );
    }
    // Scope comes before validation: a malformed body without the scope is 403, not 400.
    let r = s
        .raw(
            "PUT",
            "/v1/secrets/k",
            t,
            &[("content-type", "application/json".into())],
            Some(b"nope".to_vec()),
        )
        .await;
    assert_eq!(r.status, 403);
    // Write-only: PATCH answers metadata without the value.
    let r = s.call("PATCH", "/v1/kv/k", t, Some(&json!({"a": 1}))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.get("value").is_none());
    assert!(r.body["version"].is_u64());
    // Value-returning ops need read too.
    let r = s
        .call(
            "POST",
            "/v1/kv/k/ops",
            t,
            Some(&json!({"ops": [{"op": "list_pop", "field": "l"}]})),
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = s
        .call(
            "POST",
            "/v1/kv/k/ops",
            t,
            Some(&json!({"ops": [{"op": "list_push", "field": "l", "values": [1]}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // Batch ops are checked one by one.
    let r = s
        .call("POST", "/v1/batch", t, Some(&json!({"atomic": true, "ops": [{"op": "get", "store": "secrets", "key": "x"}, {"op": "put", "store": "secrets", "key": "x", "value": 1}]})))
        .await;
    assert_eq!(
        (r.status, r.body["error"]["op_index"].as_u64()),
        (403, Some(1)),
        "{r:?}"
    );

    // storage:app grants read and write on secrets, settings and kv, not shared.
    let t2 = s.install("forge", &["storage:app"], "acct", "inst2").await;
    for store in ["secrets", "settings", "kv"] {
        let r = s
            .call(
                "PUT",
                &format!("/v1/{store}/k"),
                Some(&t2),
                Some(&json!({"value": 1})),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let r = s.call("GET", "/v1/shared/k", Some(&t2), None).await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn token_kinds_revocation_and_narrowing() {
    let s = TestServer::start(bin()).await;
    let t = s
        .install("app", &["secrets:read", "secrets:write"], "acct", "inst")
        .await;
    // Admin tokens on tenant routes and installation tokens on admin routes are 403.
    let r = s.admin("GET", "/v1/secrets/k", None).await;
    assert_eq!((r.status, r.code()), (403, Some("forbidden")));
    let r = s.call("GET", "/v1/admin/apps", Some(&t), None).await;
    assert_eq!((r.status, r.code()), (403, Some("forbidden")));

    // A narrower second token, then revocation.
    let r = s
        .admin(
            "POST",
            "/v1/admin/installations/inst/tokens",
            Some(&json!({"scopes": ["secrets:read"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let ro = r.body["token"].as_str().unwrap().to_owned();
    let ro_id = r.body["token_id"].as_str().unwrap().to_owned();
    assert!(ro.starts_with("tsr_"));
    let r = s
        .call(
            "PUT",
            "/v1/secrets/k",
            Some(&ro),
            Some(&json!({"value": 1})),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = s
        .admin(
            "POST",
            "/v1/admin/installations/inst/tokens",
            Some(&json!({"scopes": ["kv:read"]})),
        )
        .await;
    assert_eq!(r.status, 400, "a token's scopes are a subset of its app's");
    assert_eq!(
        s.admin("DELETE", &format!("/v1/admin/tokens/{ro_id}"), None)
            .await
            .status,
        204
    );
    let r = s.call("GET", "/v1/secrets/k", Some(&ro), None).await;
    assert_eq!((r.status, r.code()), (401, Some("unauthenticated")));

    // Re-registering the app with fewer scopes narrows existing tokens at once.
    s.admin(
        "PUT",
        "/v1/admin/apps/app",
        Some(&json!({"scopes": ["secrets:read"]})),
    )
    .await;
    let r = s
        .call("PUT", "/v1/secrets/k", Some(&t), Some(&json!({"value": 1})))
        .await;
    assert_eq!(r.status, 403);

    // Expiring tokens.
    let r = s
        .admin(
            "POST",
            "/v1/admin/installations/inst/tokens",
            Some(&json!({"ttl_seconds": 1})),
        )
        .await;
    let short = r.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        s.call("GET", "/v1/secrets", Some(&short), None)
            .await
            .status,
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        s.call("GET", "/v1/secrets", Some(&short), None)
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn uninstall_and_reinstall_start_empty() {
    let s = TestServer::start(bin()).await;
    let t = s.install("app", &["storage:app"], "acct", "inst").await;
    let r = s
        .call(
            "PUT",
            "/v1/secrets/k",
            Some(&t),
            Some(&json!({"value": "v"})),
        )
        .await;
    let old_version = r.body["version"].as_u64().unwrap();
    assert_eq!(
        s.admin("DELETE", "/v1/admin/installations/inst", None)
            .await
            .status,
        204
    );
    // The token dies with the installation.
    assert_eq!(
        s.call("GET", "/v1/secrets/k", Some(&t), None).await.status,
        401
    );
    assert_eq!(
        s.admin("GET", "/v1/admin/installations/inst", None)
            .await
            .status,
        404
    );
    // Uninstall is idempotent.
    assert_eq!(
        s.admin("DELETE", "/v1/admin/installations/inst", None)
            .await
            .status,
        204
    );
    // A reinstall starts empty and never reuses a version.
    let r = s
        .admin(
            "PUT",
            "/v1/admin/installations/inst",
            Some(&json!({"app_id": "app", "account_id": "acct"})),
        )
        .await;
    assert_eq!(r.status, 201);
    let t2 = r.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        s.call("GET", "/v1/secrets/k", Some(&t2), None).await.status,
        404
    );
    assert_eq!(
        s.call("GET", "/v1/secrets/k", Some(&t), None).await.status,
        401
    );
    let r = s
        .call(
            "PUT",
            "/v1/secrets/k",
            Some(&t2),
            Some(&json!({"value": "w"})),
        )
        .await;
    assert!(r.body["version"].as_u64().unwrap() > old_version);

    // Install rules: same app and account again is 200 without a token, another is 409,
    // missing app or account is 404.
    let r = s
        .admin(
            "PUT",
            "/v1/admin/installations/inst",
            Some(&json!({"app_id": "app", "account_id": "acct"})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.get("token").is_none());
    s.admin("PUT", "/v1/admin/accounts/acct2", None).await;
    let r = s
        .admin(
            "PUT",
            "/v1/admin/installations/inst",
            Some(&json!({"app_id": "app", "account_id": "acct2"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, Some("conflict")));
    let r = s
        .admin(
            "PUT",
            "/v1/admin/installations/x",
            Some(&json!({"app_id": "nope", "account_id": "acct"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, Some("not_found")));
    let r = s
        .admin(
            "PUT",
            "/v1/admin/installations/x",
            Some(&json!({"app_id": "app", "account_id": "nope"})),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = s
        .admin(
            "PUT",
            "/v1/admin/apps/bad%20id",
            Some(&json!({"scopes": []})),
        )
        .await;
    assert_eq!(r.status, 400);

    // Deleting the app removes its installations; deleting an account removes its.
    let t3 = s.install("app", &["storage:app"], "acct2", "inst3").await;
    assert_eq!(
        s.admin("DELETE", "/v1/admin/apps/app", None).await.status,
        204
    );
    assert_eq!(
        s.call("GET", "/v1/secrets", Some(&t2), None).await.status,
        401
    );
    assert_eq!(
        s.call("GET", "/v1/secrets", Some(&t3), None).await.status,
        401
    );
    let t4 = s.install("app", &["storage:app"], "acct2", "inst4").await;
    assert_eq!(
        s.admin("DELETE", "/v1/admin/accounts/acct2", None)
            .await
            .status,
        204
    );
    assert_eq!(
        s.call("GET", "/v1/secrets", Some(&t4), None).await.status,
        401
    );
    let r = s.admin("GET", "/v1/admin/installations", None).await;
    assert_eq!(r.body["items"], json!([]));
}

/// Whatever a server keeps between requests about a token, each change below is seen by the
/// very next request, even while other requests with the same token keep it in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn access_changes_apply_to_the_next_request_however_warm() {
    let s = std::sync::Arc::new(TestServer::start(bin()).await);
    let scopes = ["storage:app"];
    let warm = |t: String| {
        let s = s.clone();
        async move {
            for _ in 0..20 {
                let r = s.call("GET", "/v1/kv/k", Some(&t), None).await;
                assert_eq!(r.status, 404, "{r:?}");
            }
        }
    };
    // Revocation, with the token busy on other connections until the revocation is answered.
    let t = s.install("app", &scopes, "acct", "inst").await;
    let issued = s
        .admin(
            "POST",
            "/v1/admin/installations/inst/tokens",
            Some(&json!({})),
        )
        .await;
    let extra = issued.body["token"].as_str().unwrap().to_owned();
    let extra_id = issued.body["token_id"].as_str().unwrap().to_owned();
    warm(extra.clone()).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy: Vec<_> = (0..4)
        .map(|_| {
            let (s, t, stop) = (s.clone(), extra.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    s.call("GET", "/v1/kv/k", Some(&t), None).await;
                }
            })
        })
        .collect();
    let r = s
        .admin("DELETE", &format!("/v1/admin/tokens/{extra_id}"), None)
        .await;
    assert_eq!(r.status, 204);
    for _ in 0..20 {
        let r = s.call("GET", "/v1/kv/k", Some(&extra), None).await;
        assert_eq!(r.status, 401, "a revoked token still works: {r:?}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for b in busy {
        b.await.unwrap();
    }
    // The installation's first token is untouched by the other's revocation.
    warm(t.clone()).await;

    // Narrowing the app's scopes narrows a warm token at once.
    s.admin(
        "PUT",
        "/v1/admin/apps/app",
        Some(&json!({"scopes": ["secrets:read"]})),
    )
    .await;
    let r = s.call("GET", "/v1/kv/k", Some(&t), None).await;
    assert_eq!((r.status, r.code()), (403, Some("forbidden")));
    s.admin(
        "PUT",
        "/v1/admin/apps/app",
        Some(&json!({"scopes": scopes})),
    )
    .await;
    warm(t.clone()).await;

    // Uninstall, app deletion and account deletion each end a warm token.
    assert_eq!(
        s.admin("DELETE", "/v1/admin/installations/inst", None)
            .await
            .status,
        204
    );
    assert_eq!(s.call("GET", "/v1/kv/k", Some(&t), None).await.status, 401);
    let t2 = s.install("app", &scopes, "acct", "inst2").await;
    warm(t2.clone()).await;
    assert_eq!(
        s.admin("DELETE", "/v1/admin/apps/app", None).await.status,
        204
    );
    assert_eq!(s.call("GET", "/v1/kv/k", Some(&t2), None).await.status, 401);
    let t3 = s.install("app", &scopes, "acct", "inst3").await;
    warm(t3.clone()).await;
    assert_eq!(
        s.admin("DELETE", "/v1/admin/accounts/acct", None)
            .await
            .status,
        204
    );
    assert_eq!(s.call("GET", "/v1/kv/k", Some(&t3), None).await.status, 401);

    // A reinstall under the same id: the old warm token stays dead, the new one works.
    let t4 = s.install("app", &scopes, "acct", "inst3").await;
    warm(t4.clone()).await;
    assert_eq!(s.call("GET", "/v1/kv/k", Some(&t3), None).await.status, 401);

    // A warm token that expires stops working on time.
    let r = s
        .admin(
            "POST",
            "/v1/admin/installations/inst3/tokens",
            Some(&json!({"ttl_seconds": 2})),
        )
        .await;
    let short = r.body["token"].as_str().unwrap().to_owned();
    warm(short.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        s.call("GET", "/v1/kv/k", Some(&short), None).await.status,
        401
    );
    // A forged token with a real token's id is refused, warm or not.
    let last = if t4.ends_with('A') { "B" } else { "A" };
    let forged = format!("{}{last}", &t4[..t4.len() - 1]);
    assert_eq!(
        s.call("GET", "/v1/kv/k", Some(&forged), None).await.status,
        401
    );
}

#[tokio::test]
async fn every_access_is_audited_without_values() {
    let s = TestServer::start(bin()).await;
    let t = s.install("app", &["storage:app"], "acct", "inst").await;
    s.call(
        "PUT",
        "/v1/secrets/audited",
        Some(&t),
        Some(&json!({"value": "CANARY-VALUE-1"})),
    )
    .await;
    s.call("GET", "/v1/secrets/audited", Some(&t), None).await;
    s.call("GET", "/v1/secrets/audited", Some("tsr_bad"), None)
        .await;
    // Read events reach the log through the writer within milliseconds.
    let mut events = Vec::new();
    for _ in 0..50 {
        let r = s
            .admin(
                "GET",
                "/v1/admin/audit?installation_id=inst&limit=1000",
                None,
            )
            .await;
        events = r.body["items"].as_array().cloned().unwrap_or_default();
        if events.iter().any(|e| e["operation"] == "get") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let put = events
        .iter()
        .find(|e| e["operation"] == "put")
        .expect("put event");
    assert_eq!(put["store"], "secrets");
    assert_eq!(put["key"], "audited");
    assert_eq!(put["status"], 201);
    assert_eq!(put["account_id"], "acct");
    assert!(put["token_id"].is_string());
    assert!(
        events
            .iter()
            .any(|e| e["operation"] == "get" && e["status"] == 200)
    );
    let all = s.admin("GET", "/v1/admin/audit?limit=1000", None).await;
    assert!(!all.text.contains("CANARY-VALUE-1"));
    assert!(!all.text.contains(&t), "no token in the audit log");
    assert!(
        all.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["operation"] == "authenticate" && e["status"] == 401)
    );
    // Paging with next_cursor as after.
    let p1 = s.admin("GET", "/v1/admin/audit?limit=2", None).await;
    let cursor = p1.body["next_cursor"].as_str().unwrap().to_owned();
    let p2 = s
        .admin(
            "GET",
            &format!("/v1/admin/audit?limit=2&after={cursor}"),
            None,
        )
        .await;
    assert!(p2.body["items"][0]["id"].as_i64() > p1.body["items"][1]["id"].as_i64());
}
