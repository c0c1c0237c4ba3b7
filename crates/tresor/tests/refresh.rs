//! Black-box tests of token renewal: refresh before expiry and after a 401, single-flight
//! under 50 concurrent calls, rotating refresh tokens, `invalid_grant` turning into
//! `reconsent_required`, and the client-credentials grant run host-side.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tresor_test_support::provider::{ProviderConfig, TestProvider};
use tresor_test_support::server::TestServer;

fn bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

const SCOPES: &[&str] = &["credentials:read", "credentials:store", "credentials:use"];

async fn connected(config: ProviderConfig) -> (TestServer, TestProvider, String) {
    let up = TestProvider::start(config).await;
    let s = TestServer::start(bin()).await;
    let c = up.config().clone();
    let r = s
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
    let t = s.install("app", SCOPES, "acct", "inst").await;
    let r = s
        .call(
            "POST",
            "/v1/oauth/flows",
            Some(&t),
            Some(&json!({"provider": "prov", "store_as": {"key": "conn"}})),
        )
        .await;
    let callback = up
        .consent(r.body["authorize_url"].as_str().unwrap_or_default(), false)
        .await;
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&callback)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    (s, up, t)
}

async fn call(s: &TestServer, t: &str) -> tresor_test_support::server::Answer {
    s.call(
        "POST",
        "/v1/credentials/conn/request",
        Some(t),
        Some(&json!({"method": "GET", "path": "echo"})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_calls_after_a_401_share_one_refresh() {
    let (s, up, t) = connected(ProviderConfig {
        refresh_delay: Duration::from_millis(300),
        ..ProviderConfig::default()
    })
    .await;
    assert_eq!(call(&s, &t).await.body["status"], 200);
    // Every call now gets a 401 with the stored token; exactly one refresh must happen.
    up.expire_access_tokens();
    let s = Arc::new(s);
    let t = Arc::new(t);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (s, t) = (s.clone(), t.clone());
        tasks.push(tokio::spawn(async move { call(&s, &t).await }));
    }
    for task in tasks {
        let r = task.await.unwrap();
        assert_eq!(
            (r.status, r.body["status"].as_u64()),
            (200, Some(200)),
            "{r:?}"
        );
    }
    assert_eq!(up.stats().refreshes, 1, "refreshes: {:?}", up.stats());
    // Rotation: the next refresh presents the newest refresh token.
    up.expire_access_tokens();
    assert_eq!(call(&s, &t).await.body["status"], 200);
    assert_eq!(up.stats().refreshes, 2);
    assert!(
        up.stats().violations.is_empty(),
        "{:?}",
        up.stats().violations
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_refreshed_before_they_expire() {
    // Tokens that live 30 s are inside the 60 s margin at once: the first call refreshes first.
    let (s, up, t) = connected(ProviderConfig {
        access_token_lifetime: Duration::from_secs(30),
        ..ProviderConfig::default()
    })
    .await;
    let before = s.call("GET", "/v1/credentials/conn", Some(&t), None).await;
    let r = call(&s, &t).await;
    assert_eq!(r.body["status"], 200, "{r:?}");
    assert_eq!(up.stats().refreshes, 1);
    assert_eq!(
        up.stats().api_rejected,
        0,
        "the upstream never saw an expiring token"
    );
    let after = s.call("GET", "/v1/credentials/conn", Some(&t), None).await;
    assert!(after.body["version"].as_u64() > before.body["version"].as_u64());
    assert!(
        up.stats().violations.is_empty(),
        "{:?}",
        up.stats().violations
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_grant_needs_reconsent() {
    let (s, up, t) = connected(ProviderConfig::default()).await;
    up.revoke_all();
    let r = call(&s, &t).await;
    assert_eq!(
        (r.status, r.code()),
        (409, Some("reconsent_required")),
        "{r:?}"
    );
    let meta = s.call("GET", "/v1/credentials/conn", Some(&t), None).await;
    assert_eq!(meta.body["needs_reconsent"], true);
    let refreshes = up.stats().refreshes;
    let r = call(&s, &t).await;
    assert_eq!(r.code(), Some("reconsent_required"));
    assert_eq!(
        up.stats().refreshes,
        refreshes,
        "no retry loop against the provider"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_credentials_tokens_are_obtained_and_cached_host_side() {
    let up = TestProvider::start(ProviderConfig::default()).await;
    let s = TestServer::start(bin()).await;
    let r = s
        .admin(
            "PUT",
            "/v1/admin/providers/cc",
            Some(&up.client_credentials_document()),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let t = s.install("app", SCOPES, "acct", "inst").await;
    let r = s
        .call(
            "PUT",
            "/v1/credentials/conn",
            Some(&t),
            Some(&json!({"provider": "cc", "secret": {}})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["kind"].as_str()),
        (201, Some("client_credentials")),
        "{r:?}"
    );
    for _ in 0..3 {
        let r = call(&s, &t).await;
        assert_eq!(r.body["status"], 200, "{r:?}");
    }
    assert_eq!(
        up.stats().client_credentials_grants,
        1,
        "the token is cached"
    );
    let meta = s.call("GET", "/v1/credentials/conn", Some(&t), None).await;
    assert_eq!(meta.body["kind"], "client_credentials");
    assert!(meta.body["token_expires_at"].is_string());
    up.expire_access_tokens();
    assert_eq!(call(&s, &t).await.body["status"], 200);
    assert_eq!(
        up.stats().client_credentials_grants,
        2,
        "renewed after a 401"
    );
    assert!(
        up.stats().violations.is_empty(),
        "{:?}",
        up.stats().violations
    );
}
