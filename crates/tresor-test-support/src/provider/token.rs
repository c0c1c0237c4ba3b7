//! The fake authorization server's token endpoint (RFC 6749 3.2): client authentication, and
//! the `authorization_code` (with RFC 7636 PKCE verification), `refresh_token` (with rotation and
//! reuse detection) and `client_credentials` grants. Every refusal caused by the client is also
//! recorded as a violation.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

use super::form::{self, Params};
use super::state::{ProviderState, Shared};
use super::{ProviderConfig, TokenAuth};

const CODE_LIFETIME: Duration = Duration::from_secs(60);

/// Any other method on an OAuth endpoint.
pub(super) async fn wrong_method(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
) -> Response {
    let violation = format!("{method} {}: method not allowed", uri.path());
    reject(
        &shared,
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        violation,
    )
}

/// `POST /oauth/token`.
pub(super) async fn token(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(query) = uri.query() {
        // Only the names: the values may be secrets.
        let names = form::parse(query)
            .map(|pairs| {
                pairs
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|_| "malformed".to_owned());
        let violation = format!("token: URL query ({names}); parameters belong in the form body");
        return reject(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            violation,
        );
    }
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        let violation = format!(
            "token: Content-Type {content_type:?}, expected application/x-www-form-urlencoded"
        );
        return reject(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            violation,
        );
    }
    let pairs = std::str::from_utf8(&body)
        .map_err(|_| "body is not UTF-8".to_owned())
        .and_then(form::parse);
    let params = match pairs.map(|pairs| Params::unique(pairs).map_err(|n| format!("{n} repeated")))
    {
        Ok(Ok(params)) => params,
        Ok(Err(e)) | Err(e) => {
            let violation = format!("token: form body: {e}");
            return reject(
                &shared,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                violation,
            );
        }
    };
    let grant_type = params.get("grant_type");
    {
        let stats = &mut shared.lock().stats;
        match grant_type {
            Some("authorization_code") => stats.code_exchanges += 1,
            Some("refresh_token") => stats.refreshes += 1,
            Some("client_credentials") => stats.client_credentials_grants += 1,
            _ => {}
        }
    }
    if let Err((status, error, violation)) = authenticate_client(&shared.config, &headers, &params)
    {
        return reject(&shared, status, error, violation);
    }
    match grant_type {
        Some("authorization_code") => exchange_code(&shared, &params),
        Some("refresh_token") => refresh(&shared, &params).await,
        Some("client_credentials") => client_credentials(&shared, &params),
        None => {
            let violation = "token: grant_type missing".to_owned();
            reject(
                &shared,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                violation,
            )
        }
        Some(other) => {
            let violation = format!("token: unsupported grant_type {other:?}");
            reject(
                &shared,
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                violation,
            )
        }
    }
}

/// RFC 6749 2.3: exactly one method, the one configured, with the right id and secret. Err is
/// (status, OAuth error, violation).
fn authenticate_client(
    config: &ProviderConfig,
    headers: &HeaderMap,
    params: &Params,
) -> Result<(), (StatusCode, &'static str, String)> {
    let unauthorized =
        |violation: String| Err((StatusCode::UNAUTHORIZED, "invalid_client", violation));
    let bad_request =
        |violation: String| Err((StatusCode::BAD_REQUEST, "invalid_request", violation));
    let mut authorization = headers.get_all(AUTHORIZATION).iter();
    let header = authorization.next();
    if authorization.next().is_some() {
        return bad_request("token: Authorization header repeated".to_owned());
    }
    let basic = match header.map(parse_basic) {
        None => None,
        Some(Ok(pair)) => Some(pair),
        Some(Err(e)) => return unauthorized(format!("token: {e}")),
    };
    let body_id = params.get("client_id");
    let (method, id, secret) = match (basic, params.get("client_secret")) {
        (Some(_), Some(_)) => {
            return bad_request(
                "token: client used both client_secret_basic and client_secret_post".to_owned(),
            );
        }
        (Some((id, secret)), None) => (TokenAuth::ClientSecretBasic, id, secret),
        (None, Some(secret)) => {
            let Some(id) = body_id else {
                return unauthorized("token: client_secret without client_id".to_owned());
            };
            (
                TokenAuth::ClientSecretPost,
                id.to_owned(),
                secret.to_owned(),
            )
        }
        (None, None) => return unauthorized("token: no client authentication".to_owned()),
    };
    if method != config.token_auth {
        let expected = config.token_auth;
        return unauthorized(format!(
            "token: client authenticated with {method:?}, the provider expects {expected:?}"
        ));
    }
    if body_id.is_some_and(|b| b != id) {
        return bad_request("token: client_id in the body differs from the Basic one".to_owned());
    }
    if id != config.client_id || secret != config.client_secret {
        return unauthorized(format!(
            "token: wrong client credentials (client_id {id:?}, {method:?})"
        ));
    }
    Ok(())
}

/// RFC 6749 2.3.1: base64 of `urlencode(id) ":" urlencode(secret)`.
fn parse_basic(value: &HeaderValue) -> Result<(String, String), String> {
    let value = value
        .to_str()
        .map_err(|_| "Authorization header is not visible ASCII".to_owned())?;
    let (scheme, credentials) = value
        .split_once(' ')
        .ok_or_else(|| "Authorization header without credentials".to_owned())?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(format!("Authorization scheme {scheme:?}, expected Basic"));
    }
    let decoded = STANDARD
        .decode(credentials.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or_else(|| "Basic credentials are not base64 of UTF-8".to_owned())?;
    let (id, secret) = decoded
        .split_once(':')
        .ok_or_else(|| "Basic credentials without ':'".to_owned())?;
    // Not the decoder's message: it would quote the secret.
    let not_encoded =
        |_| "Basic client id or secret is not form-encoded (RFC 6749 2.3.1)".to_owned();
    Ok((
        form::decode(id).map_err(not_encoded)?,
        form::decode(secret).map_err(not_encoded)?,
    ))
}

fn exchange_code(shared: &Shared, params: &Params) -> Response {
    let lifetime = shared.config.access_token_lifetime;
    let Some(code) = params.get("code") else {
        let violation = "token: code missing".to_owned();
        return reject(
            shared,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            violation,
        );
    };
    let mut st = shared.lock();
    let Some(issued) = st.codes.get_mut(code) else {
        return invalid_grant(&mut st, "token: unknown authorization code".to_owned());
    };
    if issued.used {
        // RFC 6749 4.1.2: revoke what the code already granted.
        if let Some(grant) = issued.grant {
            st.revoke(grant);
        }
        let violation = "token: authorization code reused (its grant is revoked)".to_owned();
        return invalid_grant(&mut st, violation);
    }
    issued.used = true;
    let age = issued.issued_at.elapsed();
    let redirect_uri = issued.redirect_uri.clone();
    let challenge = issued.code_challenge.clone();
    let scope = issued.scope.clone();
    if age > CODE_LIFETIME {
        return invalid_grant(
            &mut st,
            format!("token: authorization code expired ({age:?} old)"),
        );
    }
    match params.get("redirect_uri") {
        None => {
            let violation = "token: redirect_uri missing (it was given at authorize)".to_owned();
            st.violation(violation.clone());
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &violation);
        }
        Some(r) if r != redirect_uri => {
            let violation = format!(
                "token: redirect_uri {r:?} differs from {redirect_uri:?} given at authorize"
            );
            return invalid_grant(&mut st, violation);
        }
        Some(_) => {}
    }
    if let Some(challenge) = challenge {
        let Some(verifier) = params.get("code_verifier") else {
            return invalid_grant(&mut st, "token: code_verifier missing".to_owned());
        };
        if !is_valid_verifier(verifier) {
            let violation =
                "token: code_verifier is not 43-128 characters of [A-Za-z0-9-._~]".to_owned();
            return invalid_grant(&mut st, violation);
        }
        if s256(verifier) != challenge {
            let violation = "token: code_verifier does not match the S256 code_challenge";
            return invalid_grant(&mut st, violation.to_owned());
        }
    }
    let grant = st.new_grant(scope.clone());
    if let Some(issued) = st.codes.get_mut(code) {
        issued.grant = Some(grant);
    }
    let access = st.issue_access_token(grant, Some(lifetime));
    let refresh = st.issue_refresh_token(grant);
    drop(st);
    token_response(&access, lifetime, Some(&refresh), &scope)
}

async fn refresh(shared: &Shared, params: &Params) -> Response {
    let config = &shared.config;
    if !config.refresh_delay.is_zero() {
        tokio::time::sleep(config.refresh_delay).await;
    }
    let Some(token) = params.get("refresh_token") else {
        let violation = "token: refresh_token missing".to_owned();
        return reject(
            shared,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            violation,
        );
    };
    let mut st = shared.lock();
    let Some(grant) = st.refresh_token_grant(token) else {
        return invalid_grant(&mut st, "token: unknown refresh token".to_owned());
    };
    if st.is_revoked(grant) {
        // The test revoked it, or an earlier violation did (recorded then).
        let description = "The grant has been revoked";
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description);
    }
    if !st.is_latest_refresh_token(grant, token) {
        st.revoke(grant);
        let violation =
            format!("token: stale refresh token presented (grant {grant}); the grant is revoked");
        return invalid_grant(&mut st, violation);
    }
    let granted = st.grant_scope(grant);
    let scope = match params.get("scope") {
        None => granted,
        Some(requested)
            if requested
                .split(' ')
                .all(|s| granted.split(' ').any(|g| g == s)) =>
        {
            requested.to_owned()
        }
        Some(requested) => {
            let violation = format!(
                "token: refresh asks for scope {requested:?} beyond the granted {granted:?}"
            );
            st.violation(violation.clone());
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", &violation);
        }
    };
    let access = st.issue_access_token(grant, Some(config.access_token_lifetime));
    let refresh = config
        .rotate_refresh_tokens
        .then(|| st.issue_refresh_token(grant));
    drop(st);
    token_response(
        &access,
        config.access_token_lifetime,
        refresh.as_deref(),
        &scope,
    )
}

fn client_credentials(shared: &Shared, params: &Params) -> Response {
    let lifetime = shared.config.access_token_lifetime;
    let scope = params.get("scope");
    if let Some(Err(e)) = scope.map(check_scope) {
        let violation = format!("token: {e}");
        return reject(shared, StatusCode::BAD_REQUEST, "invalid_scope", violation);
    }
    let scope = scope.unwrap_or_default();
    let mut st = shared.lock();
    let grant = st.new_grant(scope.to_owned());
    let access = st.issue_access_token(grant, Some(lifetime));
    drop(st);
    token_response(&access, lifetime, None, scope)
}

fn token_response(
    access: &str,
    lifetime: Duration,
    refresh: Option<&str>,
    scope: &str,
) -> Response {
    let mut body = Map::new();
    body.insert("access_token".to_owned(), json!(access));
    body.insert("token_type".to_owned(), json!("Bearer"));
    body.insert("expires_in".to_owned(), json!(lifetime.as_secs()));
    if let Some(refresh) = refresh {
        body.insert("refresh_token".to_owned(), json!(refresh));
    }
    body.insert("scope".to_owned(), json!(scope));
    no_store((StatusCode::OK, Json(Value::Object(body))).into_response())
}

/// Records `violation` and answers the OAuth error, with the violation as its description.
fn reject(shared: &Shared, status: StatusCode, error: &str, violation: String) -> Response {
    let response = oauth_error(status, error, &violation);
    shared.violation(violation);
    response
}

fn invalid_grant(st: &mut ProviderState, violation: String) -> Response {
    let response = oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &violation);
    st.violation(violation);
    response
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({"error": error, "error_description": description});
    let mut response = no_store((status, Json(body)).into_response());
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"tresor-test-provider\""),
        );
    }
    response
}

fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// RFC 6749 3.3: `scope-token *( SP scope-token )`, scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
pub(super) fn check_scope(scope: &str) -> Result<(), String> {
    let token_ok = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
    };
    if scope.split(' ').all(token_ok) {
        Ok(())
    } else {
        Err(format!(
            "scope {scope:?} is not space-separated scope tokens"
        ))
    }
}

/// RFC 7636 4.1.
fn is_valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()))
}
