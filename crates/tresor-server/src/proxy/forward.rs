//! The authenticated request proxy: turns an app's request description into one outbound
//! request to the provider's allowed host, injects the credential, and answers with the
//! upstream's status, headers and body, with every copy of the injected secret redacted.
//!
//! The destination is checked before anything is sent: the URL is built on the provider's base
//! URL, its host must be allowed, and DNS is resolved once here and pinned for the connection,
//! so a name cannot resolve to a checked address first and a forbidden one later. Redirects are
//! never followed: a 3xx goes back to the app, so the credential never reaches another host.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};
use tresor_core::CoreError;
use tresor_core::credentials::{CredentialKind, Inject};
use tresor_core::service::UsableCredential;
use zeroize::Zeroizing;

use super::address::resolve_checked;
use super::target::{build_target, default_allowed_hosts, fill_base_url, host_allowed};

/// Time and size caps of one proxied request.
#[derive(Debug, Clone)]
pub struct ProxyLimits {
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

impl Default for ProxyLimits {
    fn default() -> Self {
        ProxyLimits {
            timeout: Duration::from_secs(30),
            max_response_bytes: 10 * 1024 * 1024,
        }
    }
}

/// What the app asks for: `{"method", "path", "query"?, "headers"?, "body"? | "body_base64"?}`.
#[derive(Clone)]
pub struct ProxyRequest {
    pub method: reqwest::Method,
    pub path: Option<String>,
    pub query: Option<Map<String, Value>>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<Bytes>,
    /// Whether `body` came from JSON (so it is sent as application/json unless the app says
    /// otherwise).
    pub json_body: bool,
}

/// Methods the proxy forwards.
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Request headers an app may never set: they belong to the connection or to the host.
const FORBIDDEN_REQUEST_HEADERS: &[&str] = &[
    "host",
    "cookie",
    "authorization",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
];

/// Response headers that never go back to the app.
const DROPPED_RESPONSE_HEADERS: &[&str] = &[
    "set-cookie",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Parses the request description.
pub fn parse_request(doc: Value) -> Result<ProxyRequest, CoreError> {
    let Value::Object(mut obj) = doc else {
        return Err(CoreError::invalid("the body must be a JSON object"));
    };
    let method = match obj.shift_remove("method") {
        Some(Value::String(m)) if METHODS.contains(&m.as_str()) => {
            reqwest::Method::from_bytes(m.as_bytes())
                .map_err(|_| CoreError::invalid("`method` is not a method"))?
        }
        _ => {
            return Err(CoreError::invalid(
                "`method` must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
            ));
        }
    };
    let path = match obj.shift_remove("path") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => Some(p),
        Some(_) => return Err(CoreError::invalid("`path` must be a string")),
    };
    let query = match obj.shift_remove("query") {
        None | Some(Value::Null) => None,
        Some(Value::Object(q)) => Some(q),
        Some(_) => return Err(CoreError::invalid("`query` must be an object")),
    };
    let mut headers = Vec::new();
    match obj.shift_remove("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (k, v) in h {
                let Value::String(v) = v else {
                    return Err(CoreError::invalid(format!("header `{k}` must be a string")));
                };
                let name = HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| CoreError::invalid(format!("`{k}` is not a header name")))?;
                let lower = name.as_str();
                if FORBIDDEN_REQUEST_HEADERS.contains(&lower) || lower.starts_with("proxy-") {
                    return Err(CoreError::invalid(format!(
                        "the header `{lower}` may not be set through the proxy"
                    )));
                }
                let value = HeaderValue::from_str(&v)
                    .map_err(|_| CoreError::invalid(format!("header `{lower}` has a bad value")))?;
                headers.push((name, value));
            }
        }
        Some(_) => return Err(CoreError::invalid("`headers` must be an object")),
    }
    let (body, json_body) = match (obj.shift_remove("body"), obj.shift_remove("body_base64")) {
        (Some(_), Some(_)) => {
            return Err(CoreError::invalid("send `body` or `body_base64`, not both"));
        }
        (Some(Value::Null), None) | (None, None) => (None, false),
        (Some(v), None) => {
            let bytes = serde_json::to_vec(&v)
                .map_err(|e| CoreError::internal(format!("json encoding failed: {e}")))?;
            (Some(Bytes::from(bytes)), true)
        }
        (None, Some(Value::String(b64))) => {
            let bytes = STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| CoreError::invalid("`body_base64` is not base64"))?;
            (Some(Bytes::from(bytes)), false)
        }
        (None, Some(_)) => return Err(CoreError::invalid("`body_base64` must be a string")),
    };
    if !obj.is_empty() {
        return Err(crate::request::unknown(
            "field in the body",
            &["method", "path", "query", "headers", "body", "body_base64"],
        ));
    }
    Ok(ProxyRequest {
        method,
        path,
        query,
        headers,
        body,
        json_body,
    })
}

/// Sends the request with the credential injected and returns the upstream's status and the
/// answer document.
pub async fn forward(
    cred: &UsableCredential,
    req: ProxyRequest,
    limits: &ProxyLimits,
) -> Result<(u16, Value), CoreError> {
    let provider = &cred.provider;
    let base = fill_base_url(&provider.base_url, &cred.meta.metadata)?;
    let injection = Injection::of(cred)?;
    let mut query = req.query.clone().unwrap_or_default();
    if let Injection::Query { name, .. } = &injection {
        if query.contains_key(name) {
            return Err(CoreError::invalid(format!(
                "the query parameter `{name}` carries the credential and may not be set"
            )));
        }
        query.insert(name.clone(), Value::Null);
    }
    for (name, _) in &req.headers {
        if injection
            .header_name()
            .is_some_and(|h| h.eq_ignore_ascii_case(name.as_str()))
        {
            return Err(CoreError::invalid(format!(
                "the header `{}` carries the credential and may not be set",
                name.as_str()
            )));
        }
    }
    // The app's query first; the injected parameter is appended after the checks below.
    query.retain(|_, v| !v.is_null());
    let mut url = build_target(&base, req.path.as_deref(), Some(&query))?;
    let allowed = if provider.allowed_hosts.is_empty() {
        default_allowed_hosts(&base)
    } else {
        provider.allowed_hosts.clone()
    };
    if !host_allowed(&url, &allowed) {
        // destination_forbidden
        return Err(CoreError::DestinationForbidden(
            "destination refused: the host is not among the provider's allowed hosts".into(),
        ));
    }
    let addrs = resolve_checked(&url, provider.allow_private_network).await?;
    if let Injection::Query { name, value } = &injection {
        url.query_pairs_mut().append_pair(name, value);
    }

    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(limits.timeout)
        .connect_timeout(limits.timeout.min(Duration::from_secs(10)));
    if let Some(host) = url.host_str() {
        builder =
            builder.resolve_to_addrs(host.trim_start_matches('[').trim_end_matches(']'), &addrs);
    }
    let client = builder
        .build()
        .map_err(|e| CoreError::internal(format!("outbound client: {e}")))?;
    let mut outbound = client.request(req.method.clone(), url);
    let mut headers = HeaderMap::new();
    for (k, v) in req.headers {
        headers.append(k, v);
    }
    if req.json_body && !headers.contains_key(reqwest::header::CONTENT_TYPE) {
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    injection.apply(&mut headers)?;
    outbound = outbound.headers(headers);
    if let Some(b) = req.body {
        outbound = outbound.body(b);
    }
    let mut resp = outbound.send().await.map_err(upstream_error)?;
    let status = resp.status().as_u16();
    let resp_headers = resp.headers().clone();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(upstream_error)? {
        if body.len() + chunk.len() > limits.max_response_bytes {
            return Err(CoreError::UpstreamFailed(format!(
                "the provider's answer is over {} bytes",
                limits.max_response_bytes
            )));
        }
        body.extend_from_slice(&chunk);
    }
    let secrets = injection.redactions(cred);
    let head = req.method == reqwest::Method::HEAD;
    Ok((status, answer(status, &resp_headers, body, &secrets, head)))
}

fn upstream_error(e: reqwest::Error) -> CoreError {
    let what = if e.is_timeout() {
        "the provider did not answer in time"
    } else if e.is_connect() {
        "the provider could not be reached"
    } else {
        "the exchange with the provider failed"
    };
    CoreError::UpstreamFailed(what.into())
}

/// How the credential goes into the request.
enum Injection {
    Header {
        name: HeaderName,
        value: Zeroizing<String>,
    },
    Query {
        name: String,
        value: Zeroizing<String>,
    },
}

impl Injection {
    fn of(cred: &UsableCredential) -> Result<Injection, CoreError> {
        let field = |name: &str| {
            cred.secret.field(name).ok_or_else(|| {
                CoreError::Conflict(format!("the credential holds no `{name}` to inject"))
            })
        };
        let kind = cred.meta.kind.as_str();
        let token = || -> Result<Zeroizing<String>, CoreError> {
            if kind == CredentialKind::ApiKey.as_str() {
                field("api_key")
            } else {
                field("access_token")
            }
        };
        Ok(match &cred.provider.inject {
            Inject::Bearer => Injection::Header {
                name: reqwest::header::AUTHORIZATION,
                value: Zeroizing::new(format!("Bearer {}", field("access_token")?.as_str())),
            },
            Inject::Basic => {
                let user = field("username")?;
                let pass = field("password")?;
                let pair = Zeroizing::new(format!("{}:{}", user.as_str(), pass.as_str()));
                Injection::Header {
                    name: reqwest::header::AUTHORIZATION,
                    value: Zeroizing::new(format!("Basic {}", STANDARD.encode(pair.as_bytes()))),
                }
            }
            Inject::Header { name, prefix } => Injection::Header {
                name: HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| CoreError::internal("stored provider header name is invalid"))?,
                value: Zeroizing::new(format!(
                    "{}{}",
                    prefix.as_deref().unwrap_or(""),
                    token()?.as_str()
                )),
            },
            Inject::Query { name } => Injection::Query {
                name: name.clone(),
                value: token()?,
            },
        })
    }

    fn header_name(&self) -> Option<&str> {
        match self {
            Injection::Header { name, .. } => Some(name.as_str()),
            Injection::Query { .. } => None,
        }
    }

    fn apply(&self, headers: &mut HeaderMap) -> Result<(), CoreError> {
        if let Injection::Header { name, value } = self {
            let mut v = HeaderValue::from_str(value).map_err(|_| {
                CoreError::Conflict("the credential cannot go into a header".into())
            })?;
            v.set_sensitive(true);
            headers.insert(name.clone(), v);
        }
        Ok(())
    }

    /// Every string that must not come back to the app: the injected value and the secret's
    /// own fields (a provider may echo any of them).
    fn redactions(&self, cred: &UsableCredential) -> Vec<Zeroizing<String>> {
        let mut out = Vec::new();
        match self {
            Injection::Header { value, .. } => {
                out.push(value.clone());
                if let Some((_, rest)) = value.split_once(' ') {
                    out.push(Zeroizing::new(rest.to_owned()));
                }
            }
            Injection::Query { value, .. } => out.push(value.clone()),
        }
        for f in [
            "access_token",
            "refresh_token",
            "api_key",
            "password",
            "client_secret",
            "id_token",
        ] {
            if let Some(v) = cred.secret.field(f) {
                out.push(v);
            }
        }
        // Longest first, so a secret that contains another is replaced whole; very short
        // values are skipped, they would redact ordinary text.
        out.retain(|s| s.len() >= 6);
        out.sort_by_key(|s| std::cmp::Reverse(s.len()));
        out
    }
}

/// The answer document: status, lowercase headers (without cookies and hop-by-hop ones) and
/// the body as JSON, text or base64, with every secret replaced by `[REDACTED]`.
fn answer(
    status: u16,
    headers: &HeaderMap,
    body: Vec<u8>,
    secrets: &[Zeroizing<String>],
    head: bool,
) -> Value {
    let mut out_headers = Map::new();
    for (name, value) in headers {
        let n = name.as_str();
        if DROPPED_RESPONSE_HEADERS.contains(&n) {
            continue;
        }
        let v = redact(value.as_bytes(), secrets);
        let v = String::from_utf8_lossy(&v).into_owned();
        match out_headers.get_mut(n) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&v);
            }
            _ => {
                out_headers.insert(n.to_owned(), Value::String(v));
            }
        }
    }
    let content_type = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let body = redact(&body, secrets);
    let mut doc = Map::new();
    doc.insert("status".into(), status.into());
    doc.insert("headers".into(), Value::Object(out_headers));
    if head {
        return Value::Object(doc);
    }
    let is_json = content_type == "application/json" || content_type.ends_with("+json");
    let parsed = if is_json {
        tresor_core::json::parse_strict(&body, 128).ok()
    } else {
        None
    };
    match parsed {
        Some(v) => {
            doc.insert("body".into(), v);
        }
        None if content_type.starts_with("text/")
            || (is_json && std::str::from_utf8(&body).is_ok()) =>
        {
            match String::from_utf8(body) {
                Ok(s) => {
                    doc.insert("body".into(), Value::String(s));
                }
                Err(e) => {
                    doc.insert("body_base64".into(), STANDARD.encode(e.as_bytes()).into());
                }
            }
        }
        None => {
            doc.insert("body_base64".into(), STANDARD.encode(&body).into());
        }
    }
    Value::Object(doc)
}

/// Replaces every copy of each secret (raw, and as it appears inside a JSON string) with
/// `[REDACTED]`.
fn redact(input: &[u8], secrets: &[Zeroizing<String>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for s in secrets {
        let raw = s.as_bytes();
        out = replace_all(&out, raw, b"[REDACTED]");
        let escaped = serde_json::to_string(s.as_str()).unwrap_or_default();
        let escaped = escaped.as_bytes();
        if escaped.len() > 2 && &escaped[1..escaped.len() - 1] != raw {
            out = replace_all(&out, &escaped[1..escaped.len() - 1], b"[REDACTED]");
        }
    }
    out
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_replaces_raw_and_json_escaped_copies() {
        let secrets = vec![Zeroizing::new("s3cr\"et-value".to_owned())];
        let body = br#"{"echo":"s3cr\"et-value","raw":"x s3cr"et-value y"}"#;
        let out = String::from_utf8(redact(body, &secrets)).unwrap();
        assert!(!out.contains("et-value"), "{out}");
        assert_eq!(out.matches("[REDACTED]").count(), 2);
    }

    #[test]
    fn request_descriptions_are_checked() {
        let ok = parse_request(
            serde_json::json!({"method": "GET", "path": "users", "query": {"a": "1"}, "headers": {"X-Trace": "1"}}),
        );
        assert!(ok.is_ok());
        for bad in [
            serde_json::json!({"method": "TRACE"}),
            serde_json::json!({"method": "GET", "headers": {"Authorization": "x"}}),
            serde_json::json!({"method": "GET", "headers": {"authorization": "x"}}),
            serde_json::json!({"method": "GET", "headers": {"Host": "evil"}}),
            serde_json::json!({"method": "GET", "headers": {"Cookie": "a=b"}}),
            serde_json::json!({"method": "GET", "headers": {"Proxy-Authorization": "x"}}),
            serde_json::json!({"method": "GET", "headers": {"Transfer-Encoding": "chunked"}}),
            serde_json::json!({"method": "GET", "headers": {"Connection": "close"}}),
            serde_json::json!({"method": "POST", "body": {}, "body_base64": "AA=="}),
            serde_json::json!({"method": "POST", "body_base64": "!!"}),
            serde_json::json!({"method": "GET", "extra": 1}),
        ] {
            assert!(parse_request(bad.clone()).is_err(), "{bad}");
        }
    }
}
