//! Tests of the fake provider, driven over HTTP as tresor drives it: a client that follows the
//! protocol gets through without violations, and each client mistake is refused the way a real
//! provider refuses it and recorded.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::form;
use super::{TestProvider, TokenAuth};

mod api;
mod oauth;

const REDIRECT: &str = "http://127.0.0.1:9/v1/oauth/callback";
/// RFC 7636 appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const STATE: &str = "st-0123456789abcdefghij";

/// A token endpoint answer or API answer.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    async fn from(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// An authorize URL as a correct client builds it.
fn authorize_request(p: &TestProvider, scope: &str) -> String {
    form::with_query(
        &p.authorize_url(),
        &[
            ("response_type", "code"),
            ("client_id", &p.config().client_id),
            ("redirect_uri", REDIRECT),
            ("scope", scope),
            ("state", STATE),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ],
    )
}

fn callback_params(url: &str) -> HashMap<String, String> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    form::parse(query).unwrap().into_iter().collect()
}

/// Runs the browser part and returns the code.
async fn code(p: &TestProvider) -> String {
    let callback = p.consent(&authorize_request(p, "read write"), false).await;
    assert!(callback.starts_with(&format!("{REDIRECT}?")), "{callback}");
    let params = callback_params(&callback);
    assert_eq!(params["state"], STATE);
    params["code"].clone()
}

async fn exchange(p: &TestProvider, code: &str, verifier: &str, redirect_uri: &str) -> Answer {
    let body = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ];
    token_request(p, &body).await
}

async fn refresh(p: &TestProvider, refresh_token: &str) -> Answer {
    let body = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    token_request(p, &body).await
}

/// A token request authenticated the way the provider expects.
async fn token_request(p: &TestProvider, pairs: &[(&str, &str)]) -> Answer {
    let config = p.config();
    match config.token_auth {
        TokenAuth::ClientSecretBasic => {
            let basic = basic_header(&config.client_id, &config.client_secret);
            token_request_raw(p, pairs, Some(&basic)).await
        }
        TokenAuth::ClientSecretPost => {
            let mut pairs = pairs.to_vec();
            pairs.push(("client_id", &config.client_id));
            pairs.push(("client_secret", &config.client_secret));
            token_request_raw(p, &pairs, None).await
        }
    }
}

async fn token_request_raw(
    p: &TestProvider,
    pairs: &[(&str, &str)],
    authorization: Option<&str>,
) -> Answer {
    let mut request = http()
        .post(p.token_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form::encode_pairs(pairs));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    Answer::from(request.send().await.unwrap()).await
}

/// RFC 6749 2.3.1: both parts form-encoded before base64.
fn basic_header(id: &str, secret: &str) -> String {
    let pair = format!("{}:{}", form::encode(id), form::encode(secret));
    format!("Basic {}", STANDARD.encode(pair))
}

async fn api(p: &TestProvider, path: &str, token: &str) -> Answer {
    let request = http()
        .get(format!("{}{path}", p.api_base()))
        .bearer_auth(token);
    Answer::from(request.send().await.unwrap()).await
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
        .to_owned()
}

fn assert_one_violation(p: &TestProvider, needle: &str) {
    let violations = p.stats().violations;
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0].contains(needle),
        "{needle:?} not in {violations:?}"
    );
}
