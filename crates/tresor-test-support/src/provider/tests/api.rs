//! The upstream API's side: endpoints, credential injection modes, duplicate credentials, stray
//! paths, and the canary listener.

use serde_json::{Value, json};

use super::super::{CanaryListener, ProviderConfig, TestProvider};
use super::*;

#[tokio::test]
async fn api_endpoints() {
    let p = TestProvider::start(ProviderConfig::default()).await;
    let token = p.mint_access_token();
    let get = |path: &str| {
        http()
            .get(format!("{}{path}", p.api_base()))
            .bearer_auth(&token)
            .send()
    };
    let binary = get("binary").await.unwrap();
    assert_eq!(binary.headers()["content-type"], "application/octet-stream");
    assert_eq!(
        binary.bytes().await.unwrap().to_vec(),
        (0..=255u8).collect::<Vec<_>>()
    );
    let hello = get("text").await.unwrap();
    assert!(
        hello.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(hello.text().await.unwrap(), "hello");
    assert_eq!(
        get("big?bytes=100000")
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len(),
        100_000
    );
    assert_eq!(get("slow?ms=20").await.unwrap().status(), 200);
    let teapot = get("status/418").await.unwrap();
    assert_eq!(teapot.status(), 418);
    assert_eq!(
        teapot.json::<Value>().await.unwrap()["status"].as_u64(),
        Some(418)
    );
    assert_eq!(get("status/204").await.unwrap().status(), 204);
    let redirect = get("redirect?to=http%3A%2F%2F127.0.0.1%3A1%2Fx")
        .await
        .unwrap();
    assert_eq!(redirect.status(), 302);
    assert_eq!(redirect.headers()["location"], "http://127.0.0.1:1/x");
    let cookie = get("set-cookie").await.unwrap();
    assert!(
        cookie.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("session=")
    );
    assert_eq!(get("nowhere").await.unwrap().status(), 404);

    let posted = http()
        .post(format!("{}echo", p.api_base()))
        .bearer_auth(&token)
        .json(&json!({"a": [1, 2]}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        (posted["method"].as_str(), &posted["body"]),
        (Some("POST"), &json!({"a": [1, 2]}))
    );
    let binary_body = http()
        .put(format!("{}echo", p.api_base()))
        .bearer_auth(&token)
        .body(vec![0xff, 0x00])
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(binary_body["body_base64"], "/wA=");
    p.assert_no_violations();
    assert_eq!(p.stats().api_calls, 11);
}

#[tokio::test]
async fn api_accepts_every_injection_mode() {
    let p = TestProvider::start(ProviderConfig::default()).await;
    let token = p.mint_access_token();
    let echo = format!("{}echo", p.api_base());
    let by_query = http()
        .get(format!("{echo}?api_key={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.headers()["x-echo-token"], token.as_str());
    let by_header = http()
        .get(&echo)
        .header("x-api-key", format!("Token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_header.headers()["x-echo-token"], token.as_str());
    let (user, password) = p.mint_basic();
    let by_basic = http()
        .get(&echo)
        .basic_auth(user, Some(&password))
        .send()
        .await
        .unwrap();
    assert_eq!(by_basic.headers()["x-echo-token"], password.as_str());
    let nothing = http().get(&echo).send().await.unwrap();
    assert_eq!(nothing.status(), 401);
    assert_eq!(p.stats().api_rejected, 1);
    p.assert_no_violations();
}

#[tokio::test]
async fn duplicate_credentials_and_stray_paths_are_violations() {
    let p = TestProvider::start(ProviderConfig::default()).await;
    let token = p.mint_access_token();
    let twice = http()
        .get(format!("{}echo", p.api_base()))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 200);
    assert_one_violation(&p, "Authorization header sent more than once");
    let stray = http()
        .get(format!("{}/v1/other", p.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(stray.status(), 404);
    assert!(p.stats().violations[1].contains("GET /v1/other"));
}

#[tokio::test]
async fn canary_records_connections_and_request_heads() {
    let canary = CanaryListener::start().await;
    assert_eq!(canary.hits(), 0);
    let answer = http()
        .get(format!("{}/leak?x=1", canary.url()))
        .header("authorization", "Bearer at-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.text().await.unwrap(), "ok");
    assert_eq!(canary.hits(), 1);
    let received = canary.received();
    assert!(
        received[0].starts_with("GET /leak?x=1 HTTP/1.1\r\n"),
        "{received:?}"
    );
    assert!(received[0].contains("Bearer at-secret"), "{received:?}");
    assert_eq!(canary.url(), format!("http://{}", canary.addr()));
}
