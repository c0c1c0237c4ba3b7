//! The authorization server's side: code flow with PKCE, refresh rotation and reuse detection,
//! client authentication, and the mistakes each check catches.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::super::form;
use super::super::{ProviderConfig, TestProvider, TokenAuth};
use super::*;

#[tokio::test]
async fn code_flow_with_pkce_then_refresh_rotation_and_stale_token_reuse() {
    let p = TestProvider::start(ProviderConfig::default()).await;
    let code = code(&p).await;
    let t = exchange(&p, &code, VERIFIER, REDIRECT).await;
    assert_eq!(t.status, 200, "{}", t.body);
    assert_eq!(t.headers["cache-control"], "no-store");
    assert_eq!(t.body["token_type"], "Bearer");
    assert_eq!(t.body["expires_in"].as_u64(), Some(3600));
    assert_eq!(t.body["scope"], "read write");
    let (at1, rt1) = (
        text(&t.body["access_token"]),
        text(&t.body["refresh_token"]),
    );
    assert!(
        at1.starts_with("at-") && rt1.starts_with("rt-"),
        "{}",
        t.body
    );

    let echo = api(&p, "echo?x=1&x=2&y=%20", &at1).await;
    assert_eq!(echo.status, 200, "{}", echo.body);
    assert_eq!(echo.headers["x-echo-token"], at1.as_str());
    assert_eq!(echo.body["token"], at1.as_str());
    assert_eq!(
        echo.body["headers"]["authorization"],
        format!("Bearer {at1}")
    );
    assert_eq!(echo.body["method"], "GET");
    assert_eq!(echo.body["path"], "/api/v2/echo");
    assert_eq!(echo.body["query"], json!({"x": ["1", "2"], "y": " "}));

    let r = refresh(&p, &rt1).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (at2, rt2) = (
        text(&r.body["access_token"]),
        text(&r.body["refresh_token"]),
    );
    assert!(at2 != at1 && rt2 != rt1);
    assert_eq!(api(&p, "text", &at2).await.status, 200);
    p.assert_no_violations();

    let stale = refresh(&p, &rt1).await;
    assert_eq!(
        (stale.status, stale.body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let violations = p.stats().violations;
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0].contains("stale refresh token presented"),
        "{violations:?}"
    );
    // The whole grant is gone: the latest refresh token and its access token too.
    assert_eq!(refresh(&p, &rt2).await.body["error"], "invalid_grant");
    assert_eq!(api(&p, "text", &at2).await.status, 401);
    let stats = p.stats();
    assert_eq!(stats.violations.len(), 1, "{:?}", stats.violations);
    assert_eq!(
        (
            stats.code_exchanges,
            stats.refreshes,
            stats.api_calls,
            stats.api_rejected
        ),
        (1, 3, 3, 1)
    );
}

#[tokio::test]
async fn wrong_code_verifier_is_rejected() {
    let p = TestProvider::start(ProviderConfig::default()).await;
    let code = code(&p).await;
    let other = "x".repeat(43);
    let t = exchange(&p, &code, &other, REDIRECT).await;
    assert_eq!(
        (t.status, t.body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_one_violation(&p, "code_verifier does not match");
}

#[tokio::test]
async fn malformed_code_verifier_is_rejected() {
    let p = TestProvider::start(ProviderConfig::default()).await;
    let code = code(&p).await;
    let t = exchange(&p, &code, "too-short", REDIRECT).await;
    assert_eq!(t.body["error"], "invalid_grant");
    assert_one_violation(&p, "43-128 characters");
}

#[tokio::test]
async fn redirect_uri_mismatch_is_rejected() {
    let p = TestProvider::start(ProviderConfig::default()).await;
    let code = code(&p).await;
    let t = exchange(&p, &code, VERIFIER, "http://127.0.0.1:9/v1/oauth/callback/").await;
    assert_eq!(
        (t.status, t.body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_one_violation(&p, "redirect_uri");
}

#[tokio::test]
async fn code_reuse_is_rejected_and_revokes_its_grant() {
    let p = TestProvider::start(ProviderConfig::default()).await;
    let code = code(&p).await;
    let first = exchange(&p, &code, VERIFIER, REDIRECT).await;
    assert_eq!(first.status, 200);
    let again = exchange(&p, &code, VERIFIER, REDIRECT).await;
    assert_eq!(
        (again.status, again.body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_one_violation(&p, "authorization code reused");
    assert_eq!(
        api(&p, "text", &text(&first.body["access_token"]))
            .await
            .status,
        401
    );
    assert_eq!(p.stats().code_exchanges, 2);
}

#[tokio::test]
async fn consent_denied_and_authorize_mistakes_come_back_as_error_redirects() {
    let p = TestProvider::start(ProviderConfig::default()).await;
    let denied = callback_params(&p.consent(&authorize_request(&p, "read"), true).await);
    assert_eq!(denied["error"], "access_denied");
    assert_eq!(denied["state"], STATE);
    p.assert_no_violations();

    let plain = form::with_query(
        &p.authorize_url(),
        &[
            ("response_type", "code"),
            ("client_id", "tresor-test-client"),
            ("redirect_uri", REDIRECT),
            ("state", STATE),
            ("code_challenge", VERIFIER),
        ],
    );
    let answer = p.consent(&plain, false).await;
    assert!(answer.starts_with(REDIRECT), "{answer}");
    let params = callback_params(&answer);
    assert_eq!(
        (params["error"].as_str(), params["state"].as_str()),
        ("invalid_request", STATE)
    );
    assert_one_violation(&p, "must be S256");
    assert_eq!(
        p.stats().last_authorize_query.first(),
        Some(&("response_type".to_owned(), "code".to_owned()))
    );
}

#[tokio::test]
async fn authorize_without_pkce_is_refused_unless_not_required() {
    let pairs = [
        ("response_type", "code"),
        ("client_id", "tresor-test-client"),
        ("redirect_uri", REDIRECT),
        ("state", STATE),
        ("scope", "read"),
    ];
    let strict = TestProvider::start(ProviderConfig::default()).await;
    let url = form::with_query(&strict.authorize_url(), &pairs);
    assert_eq!(
        callback_params(&strict.consent(&url, false).await)["error"],
        "invalid_request"
    );
    assert_one_violation(&strict, "code_challenge missing");

    let lax = TestProvider::start(ProviderConfig {
        require_pkce: false,
        ..ProviderConfig::default()
    })
    .await;
    let url = form::with_query(&lax.authorize_url(), &pairs);
    let code = callback_params(&lax.consent(&url, false).await)["code"].clone();
    let body = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    assert_eq!(token_request(&lax, &body).await.status, 200);
    lax.assert_no_violations();
}

#[tokio::test]
#[should_panic(expected = "unknown client_id")]
async fn consent_panics_when_the_provider_cannot_redirect() {
    let p = TestProvider::start(ProviderConfig::default()).await;
    let url = authorize_request(&p, "read").replace("tresor-test-client", "someone-else");
    p.consent(&url, false).await;
}

#[tokio::test]
async fn short_state_is_a_violation_but_the_flow_goes_on() {
    let p = TestProvider::start(ProviderConfig::default()).await;
    let url = authorize_request(&p, "read").replace(STATE, "abc");
    let params = callback_params(&p.consent(&url, false).await);
    assert!(params.contains_key("code"), "{params:?}");
    assert_one_violation(&p, "too short");
}

#[tokio::test]
async fn client_credentials_grant_issues_an_access_token_only() {
    let p = TestProvider::start(ProviderConfig::default()).await;
    let t = token_request(
        &p,
        &[("grant_type", "client_credentials"), ("scope", "read")],
    )
    .await;
    assert_eq!(t.status, 200, "{}", t.body);
    assert!(t.body.get("refresh_token").is_none(), "{}", t.body);
    assert_eq!(t.body["scope"], "read");
    assert_eq!(
        api(&p, "text", &text(&t.body["access_token"])).await.status,
        200
    );
    assert_eq!(p.stats().client_credentials_grants, 1);
    p.assert_no_violations();
}

#[tokio::test]
async fn revoke_all_ends_refreshes_and_api_access_without_violations() {
    let p = TestProvider::start(ProviderConfig::default()).await;
    let t = exchange(&p, &code(&p).await, VERIFIER, REDIRECT).await;
    let minted = p.mint_access_token();
    let (user, password) = p.mint_basic();
    p.revoke_all();
    let r = refresh(&p, &text(&t.body["refresh_token"])).await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(
        api(&p, "text", &text(&t.body["access_token"])).await.status,
        401
    );
    assert_eq!(api(&p, "text", &minted).await.status, 401);
    let basic = http()
        .get(format!("{}text", p.api_base()))
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    p.assert_no_violations();
}

#[tokio::test]
async fn expired_access_tokens_get_401_and_refresh_still_works() {
    let p = TestProvider::start(ProviderConfig::default()).await;
    let t = exchange(&p, &code(&p).await, VERIFIER, REDIRECT).await;
    let minted = p.mint_access_token();
    p.expire_access_tokens();
    let expired = api(&p, "echo", &text(&t.body["access_token"])).await;
    assert_eq!(
        (expired.status, expired.body["error"].as_str()),
        (401, Some("invalid_token"))
    );
    assert!(expired.headers.contains_key("www-authenticate"));
    assert_eq!(api(&p, "text", &minted).await.status, 401);
    let r = refresh(&p, &text(&t.body["refresh_token"])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        api(&p, "text", &text(&r.body["access_token"])).await.status,
        200
    );
    p.assert_no_violations();
}

#[tokio::test]
async fn zero_lifetime_tokens_are_expired_on_issue() {
    let p = TestProvider::start(ProviderConfig {
        access_token_lifetime: Duration::ZERO,
        ..ProviderConfig::default()
    })
    .await;
    let t = exchange(&p, &code(&p).await, VERIFIER, REDIRECT).await;
    assert_eq!(t.body["expires_in"].as_u64(), Some(0));
    assert_eq!(
        api(&p, "text", &text(&t.body["access_token"])).await.status,
        401
    );
}

#[tokio::test]
async fn without_rotation_refresh_answers_carry_no_refresh_token() {
    let p = TestProvider::start(ProviderConfig {
        rotate_refresh_tokens: false,
        ..ProviderConfig::default()
    })
    .await;
    let t = exchange(&p, &code(&p).await, VERIFIER, REDIRECT).await;
    let rt = text(&t.body["refresh_token"]);
    for _ in 0..2 {
        let r = refresh(&p, &rt).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.get("refresh_token").is_none(), "{}", r.body);
    }
    p.assert_no_violations();
}

#[tokio::test]
async fn concurrent_refreshes_with_rotation_are_caught() {
    let p = TestProvider::start(ProviderConfig {
        refresh_delay: Duration::from_millis(100),
        ..ProviderConfig::default()
    })
    .await;
    let t = exchange(&p, &code(&p).await, VERIFIER, REDIRECT).await;
    let rt = text(&t.body["refresh_token"]);
    let (a, b) = tokio::join!(refresh(&p, &rt), refresh(&p, &rt));
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400]);
    assert_one_violation(&p, "stale refresh token presented");
    assert_eq!(p.stats().refreshes, 2);
}

#[tokio::test]
async fn client_secret_post_mode() {
    let p = TestProvider::start(ProviderConfig {
        token_auth: TokenAuth::ClientSecretPost,
        ..ProviderConfig::default()
    })
    .await;
    let t = exchange(&p, &code(&p).await, VERIFIER, REDIRECT).await;
    assert_eq!(t.status, 200, "{}", t.body);
    p.assert_no_violations();

    let body = [("grant_type", "client_credentials")];
    let basic = basic_header("tresor-test-client", "tresor-test-secret");
    let wrong_method = token_request_raw(&p, &body, Some(&basic)).await;
    assert_eq!(
        (wrong_method.status, wrong_method.body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(wrong_method.headers.contains_key("www-authenticate"));
    assert_one_violation(&p, "expects ClientSecretPost");
}

#[tokio::test]
async fn basic_client_authentication_is_form_encoded_and_checked() {
    let secret = "p+ss:w/rd%=";
    let p = TestProvider::start(ProviderConfig {
        client_secret: secret.to_owned(),
        ..ProviderConfig::default()
    })
    .await;
    let body = [("grant_type", "client_credentials")];
    let encoded = basic_header("tresor-test-client", secret);
    assert_eq!(
        token_request_raw(&p, &body, Some(&encoded)).await.status,
        200
    );
    p.assert_no_violations();

    let raw = format!(
        "Basic {}",
        STANDARD.encode(format!("tresor-test-client:{secret}"))
    );
    assert_eq!(token_request_raw(&p, &body, Some(&raw)).await.status, 401);
    let wrong = basic_header("tresor-test-client", "nope");
    assert_eq!(token_request_raw(&p, &body, Some(&wrong)).await.status, 401);
    let none = token_request_raw(&p, &body, None).await;
    assert_eq!(
        (none.status, none.body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let violations = p.stats().violations;
    assert_eq!(violations.len(), 3, "{violations:?}");
    assert!(
        violations.iter().all(|v| !v.contains("nope")),
        "secrets stay out: {violations:?}"
    );
}

#[tokio::test]
async fn token_requests_must_be_form_posts() {
    let p = TestProvider::start(ProviderConfig::default()).await;
    let json_body = http()
        .post(p.token_url())
        .header(
            "authorization",
            basic_header("tresor-test-client", "tresor-test-secret"),
        )
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status(), 400);
    let in_query = http()
        .post(format!("{}?grant_type=client_credentials", p.token_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(in_query.status(), 400);
    let get = http().get(p.token_url()).send().await.unwrap();
    assert_eq!(get.status(), 405);
    let violations = p.stats().violations;
    assert_eq!(violations.len(), 3, "{violations:?}");
    assert!(violations[0].contains("Content-Type"), "{violations:?}");
}
