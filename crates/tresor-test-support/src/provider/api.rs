//! The fake upstream API under `/api/v2/`: authenticates every request by the credential tresor
//! injects (Bearer, `X-Api-Key`, `api_key` query parameter or Basic) and serves endpoints for
//! proxy tests. `echo` reflects the request and the presented credential, so tests can check
//! injection and redaction. Anything outside `/api/v2` and the OAuth endpoints is a violation.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, SET_COOKIE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::form;
use super::state::{ProviderState, Shared, random_id};

/// The username of [`super::TestProvider::mint_basic`] credentials.
pub(super) const BASIC_USER: &str = "user";
/// Request bodies up to this size are read (axum's default of 2 MB is too small for proxy tests).
pub(super) const MAX_BODY: usize = 64 << 20;

const MAX_BIG: usize = 256 << 20;
const MAX_SLOW_MS: u64 = 600_000;

/// Everything the router does not match: the API, or a violation.
pub(super) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let endpoint = match path.strip_prefix("/api/v2") {
        Some("") => Some(""),
        Some(rest) => rest.strip_prefix('/'),
        None => None,
    };
    let Some(endpoint) = endpoint else {
        shared.violation(format!(
            "request outside the API and OAuth endpoints: {method} {path}"
        ));
        return json_answer(StatusCode::NOT_FOUND, json!({"error": "not_found"}));
    };
    let (presented, violations) = presented_credentials(&uri, &headers);
    let accepted = {
        let mut st = shared.lock();
        st.stats.api_calls += 1;
        for v in violations {
            st.violation(v);
        }
        let accepted = presented.into_iter().find(|c| c.accepted_by(&st));
        if accepted.is_none() {
            st.stats.api_rejected += 1;
        }
        accepted
    };
    let Some(credential) = accepted else {
        return unauthorized();
    };
    let secret = credential.secret();
    if endpoint == "echo" {
        return echo(&method, &uri, &headers, &body, secret);
    }
    if method != Method::GET && method != Method::HEAD {
        return json_answer(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "method_not_allowed"}),
        );
    }
    let query = form::parse(uri.query().unwrap_or_default()).unwrap_or_default();
    let param = |name: &str| {
        query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    match endpoint {
        "binary" => bytes_answer("application/octet-stream", (0..=255u8).collect()),
        "text" => bytes_answer("text/plain; charset=utf-8", b"hello".to_vec()),
        "big" => match param("bytes").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n <= MAX_BIG => bytes_answer("application/octet-stream", vec![b'x'; n]),
            _ => bad_request("bytes must be a number up to 256 MiB"),
        },
        "slow" => match param("ms").and_then(|n| n.parse::<u64>().ok()) {
            Some(ms) if ms <= MAX_SLOW_MS => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                json_answer(StatusCode::OK, json!({"slept_ms": ms}))
            }
            _ => bad_request("ms must be a number up to 600000"),
        },
        "redirect" => match param("to").and_then(|to| HeaderValue::from_str(to).ok()) {
            Some(to) => {
                let body = Json(json!({"redirect": true}));
                (StatusCode::FOUND, [(LOCATION, to)], body).into_response()
            }
            None => bad_request("to must be a URL"),
        },
        "set-cookie" => {
            let cookie = format!("session={}; Path=/; HttpOnly", random_id("sess-"));
            let mut response = json_answer(StatusCode::OK, json!({"cookie": true}));
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(SET_COOKIE, value);
            }
            response
        }
        _ => match endpoint.strip_prefix("status/") {
            Some(code) => status(code),
            None => json_answer(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
        },
    }
}

/// A credential as presented; the API accepts a request when any one of them is valid.
enum Credential {
    Token(String),
    Password(String),
}

impl Credential {
    fn accepted_by(&self, st: &ProviderState) -> bool {
        match self {
            Credential::Token(t) => st.accepts_token(t),
            Credential::Password(p) => st.accepts_password(p),
        }
    }

    fn secret(&self) -> &str {
        match self {
            Credential::Token(s) | Credential::Password(s) => s,
        }
    }
}

/// The credentials in the request, and violations (a credential sent twice).
fn presented_credentials(uri: &Uri, headers: &HeaderMap) -> (Vec<Credential>, Vec<String>) {
    let mut credentials = Vec::new();
    let mut violations = Vec::new();
    let authorization: Vec<&str> = headers
        .get_all(AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if authorization.len() > 1 {
        violations.push("api: Authorization header sent more than once".to_owned());
    }
    for value in authorization {
        let Some((scheme, rest)) = value.split_once(' ') else {
            continue;
        };
        if scheme.eq_ignore_ascii_case("bearer") {
            credentials.push(Credential::Token(rest.trim().to_owned()));
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok());
            if let Some((BASIC_USER, password)) = decoded.as_deref().and_then(|d| d.split_once(':'))
            {
                credentials.push(Credential::Password(password.to_owned()));
            }
        }
    }
    let api_keys: Vec<&str> = headers
        .get_all("x-api-key")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if api_keys.len() > 1 {
        violations.push("api: X-Api-Key header sent more than once".to_owned());
    }
    // The key is the last word, so a configured prefix such as "Token " is accepted.
    credentials.extend(
        api_keys
            .into_iter()
            .filter_map(|v| v.split_whitespace().last())
            .map(|k| Credential::Token(k.to_owned())),
    );
    let query = form::parse(uri.query().unwrap_or_default()).unwrap_or_default();
    let query_keys: Vec<String> = query
        .into_iter()
        .filter(|(name, _)| name == "api_key")
        .map(|(_, value)| value)
        .collect();
    if query_keys.len() > 1 {
        violations.push("api: api_key query parameter sent more than once".to_owned());
    }
    credentials.extend(query_keys.into_iter().map(Credential::Token));
    (credentials, violations)
}

/// What arrived, as JSON, plus the presented credential in `token` and `x-echo-token`.
fn echo(method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes, secret: &str) -> Response {
    let mut header_map = Map::new();
    for name in headers.keys() {
        let values = headers
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        header_map.insert(name.as_str().to_owned(), one_or_many(values));
    }
    let raw_query = uri.query();
    let mut query = Map::new();
    for (name, value) in form::parse(raw_query.unwrap_or_default()).unwrap_or_default() {
        let entry = query.entry(name).or_insert(Value::Array(Vec::new()));
        if let Value::Array(values) = entry {
            values.push(Value::String(value));
        }
    }
    for value in query.values_mut() {
        if let Value::Array(values) = value {
            *value = one_or_many(std::mem::take(values));
        }
    }
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|ct| ct == "application/json" || ct.ends_with("+json"));
    let (body_value, body_base64) = if body.is_empty() {
        (Value::Null, None)
    } else if let Some(v) = is_json.then(|| serde_json::from_slice(body).ok()).flatten() {
        (v, None)
    } else if let Ok(text) = std::str::from_utf8(body) {
        (Value::String(text.to_owned()), None)
    } else {
        (Value::Null, Some(STANDARD.encode(body)))
    };
    let mut answer = json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": query,
        "raw_query": raw_query,
        "headers": header_map,
        "body": body_value,
        "token": secret,
    });
    if let (Some(b64), Value::Object(fields)) = (body_base64, &mut answer) {
        fields.insert("body_base64".to_owned(), Value::String(b64));
    }
    let mut response = json_answer(StatusCode::OK, answer);
    if let Ok(value) = HeaderValue::from_str(secret) {
        response.headers_mut().insert("x-echo-token", value);
    }
    response
}

fn one_or_many(mut values: Vec<Value>) -> Value {
    if values.len() == 1 {
        values.remove(0)
    } else {
        Value::Array(values)
    }
}

fn status(code: &str) -> Response {
    let Some(status) = code
        .parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
    else {
        return bad_request("status must be 200-599");
    };
    match status.as_u16() {
        204 | 205 | 304 => status.into_response(),
        code => json_answer(status, json!({"status": code})),
    }
}

fn unauthorized() -> Response {
    let body = json!({"error": "invalid_token", "error_description": "missing, expired or revoked credential"});
    let mut response = json_answer(StatusCode::UNAUTHORIZED, body);
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"tresor-test-provider\", error=\"invalid_token\""),
    );
    response
}

fn bad_request(message: &str) -> Response {
    json_answer(
        StatusCode::BAD_REQUEST,
        json!({"error": "invalid_request", "error_description": message}),
    )
}

fn json_answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn bytes_answer(content_type: &'static str, bytes: Vec<u8>) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static(content_type))],
        bytes,
    )
        .into_response()
}
