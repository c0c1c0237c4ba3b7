//! Per-request context: the request id (kept from the client when well-formed, otherwise made
//! here), the client's address (the peer, or what `X-Forwarded-For` says when the peer is a
//! trusted proxy; see `ratelimit`), and the middleware that stamps `X-Request-Id` and
//! `Cache-Control` on every answer and turns the router's bare 405s into contract errors.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tresor_core::ErrorCode;
use tresor_core::audit::RequestContext;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Stored in the request's extensions by [`stamp`].
#[derive(Debug, Clone)]
pub struct Ctx(pub RequestContext);

/// The client's address as resolved by [`stamp`], for the per-address limits; the audit's
/// `remote_addr` is the same address.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// The client's address of a request, if it came over a socket.
pub fn client_ip(req: &Request) -> Option<IpAddr> {
    req.extensions().get::<ClientIp>().map(|c| c.0)
}

/// Gives every request an id and a context, and every answer its id and `no-store`.
pub async fn stamp(State(state): State<crate::AppState>, mut req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(new_request_id);
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| state.rate_limits.client_addr(c.0.ip(), req.headers()));
    let remote_addr = client.map(|ip| ip.to_string());
    if let Some(ip) = client {
        req.extensions_mut().insert(ClientIp(ip));
    }
    req.extensions_mut().insert(Ctx(RequestContext {
        request_id: request_id.clone(),
        remote_addr,
    }));
    let mut resp = next.run(req).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && resp.headers().get(header::CONTENT_TYPE).is_none()
    {
        let allow = resp.headers().get(header::ALLOW).cloned();
        resp = crate::error::plain_error(
            ErrorCode::MethodNotAllowed,
            "this route does not take that method; see the Allow header",
            &request_id,
        );
        if let Some(a) = allow {
            resp.headers_mut().insert(header::ALLOW, a);
        }
    }
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(X_REQUEST_ID.clone(), v);
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// `[A-Za-z0-9._-]{1,64}`.
pub fn valid_request_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn new_request_id() -> String {
    let bytes: [u8; 12] = tresor_crypto::random_bytes().unwrap_or([0; 12]);
    let mut s = String::with_capacity(28);
    s.push_str("req_");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::valid_request_id;

    #[test]
    fn request_id_pattern() {
        assert!(valid_request_id("abc-DEF_1.2"));
        assert!(valid_request_id(&"a".repeat(64)));
        assert!(!valid_request_id(&"a".repeat(65)));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("a b"));
        assert!(!valid_request_id("a/b"));
    }
}
