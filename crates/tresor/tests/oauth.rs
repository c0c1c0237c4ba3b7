//! Black-box tests of the host-side OAuth authorization-code flow with PKCE against a local
//! provider that checks the client's side: start, consent, callback, status, the one-time
//! completion, denial, reuse of the state, and `return_to` rules.

use serde_json::json;
use tresor_test_support::provider::{ProviderConfig, TestProvider};
use tresor_test_support::server::TestServer;

fn bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

const SCOPES: &[&str] = &["credentials:read", "credentials:store", "credentials:use"];
const RETURN_TO: &str = "https://app.example.com/settings";

async fn setup(config: ProviderConfig) -> (TestServer, TestProvider, String) {
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
                "oauth2": {
                    "grant": "authorization_code",
                    "authorize_url": up.authorize_url(),
                    "token_url": up.token_url(),
                    "client_id": c.client_id,
                    "client_secret": c.client_secret,
                    "scopes": ["read"],
                    "pkce": true,
                    "authorize_params": {"access_type": "offline"},
                    "return_to_prefixes": [RETURN_TO],
                }
            })),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let t = s.install("app", SCOPES, "acct", "inst").await;
    (s, up, t)
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn authorization_code_flow_end_to_end() {
    let (s, up, t) = setup(ProviderConfig::default()).await;
    let r = s
        .call("POST", "/v1/oauth/flows", Some(&t), Some(&json!({"provider": "prov", "store_as": {"key": "shop"}, "return_to": format!("{RETURN_TO}/done")})))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let flow_id = r.body["flow_id"].as_str().unwrap().to_owned();
    let authorize = r.body["authorize_url"].as_str().unwrap().to_owned();
    assert!(authorize.starts_with(&up.authorize_url()));
    assert!(
        authorize.contains("code_challenge_method=S256")
            && authorize.contains("access_type=offline")
    );
    let status = s
        .call("GET", &format!("/v1/oauth/flows/{flow_id}"), Some(&t), None)
        .await;
    assert_eq!(status.body["status"], "pending");
    let r = s
        .call(
            "POST",
            &format!("/v1/oauth/flows/{flow_id}/complete"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (409, Some("conflict")),
        "pending: {r:?}"
    );

    // The user consents; the browser lands on the callback.
    let callback = up.consent(&authorize, false).await;
    assert!(
        callback.starts_with(&s.url("/v1/oauth/callback")),
        "{callback}"
    );
    let resp = no_redirects().get(&callback).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{RETURN_TO}/done?")),
        "{location}"
    );
    assert!(
        location.contains(&format!("flow_id={flow_id}")) && location.contains("status=completed")
    );
    assert_eq!(up.stats().code_exchanges, 1);

    let status = s
        .call("GET", &format!("/v1/oauth/flows/{flow_id}"), Some(&t), None)
        .await;
    assert_eq!(status.body["status"], "completed");
    // The access token comes back exactly once.
    let r = s
        .call(
            "POST",
            &format!("/v1/oauth/flows/{flow_id}/complete"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let access = r.body["access_token"].as_str().unwrap().to_owned();
    assert!(!access.is_empty());
    assert_eq!(r.body["credential"]["key"], "shop");
    assert_eq!(r.body["credential"]["kind"], "oauth2");
    let r = s
        .call(
            "POST",
            &format!("/v1/oauth/flows/{flow_id}/complete"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (410, Some("gone")));
    // The stored credential works through the proxy, and never comes back.
    let r = s
        .call(
            "POST",
            "/v1/credentials/shop/request",
            Some(&t),
            Some(&json!({"method": "GET", "path": "echo"})),
        )
        .await;
    assert_eq!(r.body["status"], 200, "{r:?}");
    assert!(!r.text.contains(&access));
    // The state is single-use: a second visit exchanges nothing.
    let resp = no_redirects().get(&callback).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().await.unwrap().contains("<h1>"));
    assert_eq!(up.stats().code_exchanges, 1);
    // Another installation does not see the flow.
    let other = s.install("app2", SCOPES, "acct", "inst2").await;
    let r = s
        .call(
            "GET",
            &format!("/v1/oauth/flows/{flow_id}"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(r.status, 404);
    assert!(
        up.stats().violations.is_empty(),
        "{:?}",
        up.stats().violations
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn denied_flows_fail_with_the_providers_error() {
    let (s, up, t) = setup(ProviderConfig::default()).await;
    let r = s
        .call(
            "POST",
            "/v1/oauth/flows",
            Some(&t),
            Some(&json!({"provider": "prov", "store_as": {"key": "shop"}})),
        )
        .await;
    let flow_id = r.body["flow_id"].as_str().unwrap().to_owned();
    let callback = up
        .consent(r.body["authorize_url"].as_str().unwrap(), true)
        .await;
    let resp = no_redirects().get(&callback).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let page = resp.text().await.unwrap();
    assert!(page.contains("access_denied"), "{page}");
    let status = s
        .call("GET", &format!("/v1/oauth/flows/{flow_id}"), Some(&t), None)
        .await;
    assert_eq!(status.body["status"], "failed");
    assert_eq!(status.body["error"], "access_denied");
    let r = s
        .call(
            "POST",
            &format!("/v1/oauth/flows/{flow_id}/complete"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(
        s.call("GET", "/v1/credentials/shop", Some(&t), None)
            .await
            .status,
        404
    );
    // Provider strings are escaped in the page.
    let r = s
        .call(
            "POST",
            "/v1/oauth/flows",
            Some(&t),
            Some(&json!({"provider": "prov", "store_as": {"key": "x"}})),
        )
        .await;
    let authorize = url::Url::parse(r.body["authorize_url"].as_str().unwrap()).unwrap();
    let state = authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let mut cb = url::Url::parse(&s.url("/v1/oauth/callback")).unwrap();
    cb.query_pairs_mut()
        .append_pair("state", &state)
        .append_pair("error", "<script>alert(1)</script>");
    let page = no_redirects()
        .get(cb.as_str())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains("<script>") && page.contains("&lt;script&gt;"),
        "{page}"
    );
    // Unknown state, and bad requests.
    let resp = no_redirects()
        .get(s.url("/v1/oauth/callback?state=nope&code=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    for body in [
        json!({"provider": "prov", "store_as": {"key": "k"}, "return_to": "https://evil.example/"}),
        json!({"provider": "nope", "store_as": {"key": "k"}}),
        json!({"provider": "prov"}),
        json!({"provider": "prov", "store_as": {"key": "k", "owner": "site"}}),
    ] {
        let r = s
            .call("POST", "/v1/oauth/flows", Some(&t), Some(&body))
            .await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
    }
    let ro = s.install("ro", &["credentials:read"], "acct", "ro").await;
    let r = s
        .call(
            "POST",
            "/v1/oauth/flows",
            Some(&ro),
            Some(&json!({"provider": "prov", "store_as": {"key": "k"}})),
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(
        up.stats().violations.is_empty(),
        "{:?}",
        up.stats().violations
    );
}

/// A token endpoint that misbehaves: answers `reply` to every request, after `delay`.
async fn bad_token_endpoint(reply: &'static str, delay: std::time::Duration) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = sock.read(&mut buf).await;
                tokio::time::sleep(delay).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/token")
}

#[tokio::test(flavor = "multi_thread")]
async fn exchange_failures_end_the_flow_as_failed_and_client_secret_post_works() {
    use tresor_test_support::provider::TokenAuth;
    let up = TestProvider::start(ProviderConfig {
        token_auth: TokenAuth::ClientSecretPost,
        ..ProviderConfig::default()
    })
    .await;
    let s = TestServer::start_with(bin(), &["--proxy-timeout", "1"], &[]).await;
    let c = up.config().clone();
    let t = s.install("app", SCOPES, "acct", "inst").await;
    let garbage = bad_token_endpoint("this is not json", std::time::Duration::ZERO).await;
    let no_token =
        bad_token_endpoint("{\"token_type\": \"Bearer\"}", std::time::Duration::ZERO).await;
    let slow = bad_token_endpoint("{}", std::time::Duration::from_secs(3)).await;
    for (name, token_url, want) in [
        ("post", up.token_url(), "completed"),
        ("garbage", garbage, "failed"),
        ("no-token", no_token, "failed"),
        ("slow", slow, "failed"),
    ] {
        let r = s
            .admin(
                "PUT",
                &format!("/v1/admin/providers/{name}"),
                Some(&json!({
                    "base_url": up.api_base(), "allow_private_network": true, "inject": {"type": "bearer"},
                    "oauth2": {"grant": "authorization_code", "authorize_url": up.authorize_url(),
                        "token_url": token_url, "client_id": c.client_id, "client_secret": c.client_secret,
                        "token_auth": "client_secret_post"}
                })),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let r = s
            .call(
                "POST",
                "/v1/oauth/flows",
                Some(&t),
                Some(&json!({"provider": name, "store_as": {"key": name}})),
            )
            .await;
        let flow_id = r.body["flow_id"].as_str().unwrap().to_owned();
        let callback = up
            .consent(r.body["authorize_url"].as_str().unwrap(), false)
            .await;
        let resp = no_redirects().get(&callback).send().await.unwrap();
        assert!(resp.status().as_u16() < 500, "{name}: {}", resp.status());
        let status = s
            .call("GET", &format!("/v1/oauth/flows/{flow_id}"), Some(&t), None)
            .await;
        assert_eq!(status.body["status"], want, "{name}: {status:?}");
        if want == "failed" {
            assert!(status.body["error"].is_string(), "{name}: {status:?}");
        }
    }
    // The access token of the completed flow never reaches the log or the audit log.
    let flows = s.admin("GET", "/v1/admin/audit?limit=1000", None).await;
    assert!(flows.text.contains("oauth.callback"));
    let r = s
        .call(
            "POST",
            "/v1/oauth/flows",
            Some(&t),
            Some(&json!({"provider": "post", "store_as": {"key": "again"}})),
        )
        .await;
    let flow_id = r.body["flow_id"].as_str().unwrap().to_owned();
    let callback = up
        .consent(r.body["authorize_url"].as_str().unwrap(), false)
        .await;
    no_redirects().get(&callback).send().await.unwrap();
    let done = s
        .call(
            "POST",
            &format!("/v1/oauth/flows/{flow_id}/complete"),
            Some(&t),
            None,
        )
        .await;
    let access = done.body["access_token"].as_str().unwrap().to_owned();
    let audit = s.admin("GET", "/v1/admin/audit?limit=1000", None).await;
    assert!(!audit.text.contains(&access));
    assert!(!s.log().contains(&access));
    assert!(
        up.stats().violations.is_empty(),
        "{:?}",
        up.stats().violations
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_code_the_provider_rejects_fails_the_flow_with_its_error() {
    let (s, up, t) = setup(ProviderConfig::default()).await;
    let r = s
        .call(
            "POST",
            "/v1/oauth/flows",
            Some(&t),
            Some(&json!({"provider": "prov", "store_as": {"key": "shop"}})),
        )
        .await;
    let flow_id = r.body["flow_id"].as_str().unwrap().to_owned();
    let callback = up
        .consent(r.body["authorize_url"].as_str().unwrap(), false)
        .await;
    let mut forged = url::Url::parse(&callback).unwrap();
    let pairs: Vec<(String, String)> = forged
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "code" {
                "forged-code".to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    let resp = no_redirects().get(forged.as_str()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let status = s
        .call("GET", &format!("/v1/oauth/flows/{flow_id}"), Some(&t), None)
        .await;
    assert_eq!(status.body["status"], "failed");
    assert_eq!(status.body["error"], "invalid_grant");
    assert_eq!(
        s.call("GET", "/v1/credentials/shop", Some(&t), None)
            .await
            .status,
        404
    );
}
