//! The fake authorization server's front channel: the authorize endpoint, which validates the
//! request as RFC 6749 4.1.1 and RFC 7636 4.3 say and shows a consent page, and the decision the
//! user posts from it, which sends the browser back with a code or an error. Errors are sent to
//! the redirect URI only once client_id and redirect_uri are known good.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::form::{self, Params};
use super::state::{IssuedCode, PendingAuthorization, Shared, random_id};
use super::token::check_scope;

/// Where the consent page posts the user's decision.
pub(super) const DECISION_PATH: &str = "/oauth/authorize/decision";
/// Carries the pending request's id on the consent page, for [`super::TestProvider::consent`].
pub(super) const CONSENT_REQUEST_HEADER: &str = "x-consent-request";

/// 96 bits in base64url; anything shorter is not an unguessable CSRF token.
const MIN_STATE_LEN: usize = 16;

/// `GET /oauth/authorize`: validates the request and shows the consent page.
pub(super) async fn authorize(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let pairs = match form::parse(uri.query().unwrap_or("")) {
        Ok(pairs) => pairs,
        Err(e) => return refuse_page(&shared, format!("authorize: query: {e}")),
    };
    shared.lock().stats.last_authorize_query = pairs.clone();
    let params = match Params::unique(pairs) {
        Ok(params) => params,
        Err(name) => return refuse_page(&shared, format!("authorize: parameter {name} repeated")),
    };
    // Until client_id and redirect_uri check out, errors go to the user, never to the redirect
    // URI (RFC 6749 4.1.2.1).
    match params.get("client_id") {
        None => return refuse_page(&shared, "authorize: client_id missing".to_owned()),
        Some(id) if id != shared.config.client_id => {
            return refuse_page(&shared, format!("authorize: unknown client_id {id:?}"));
        }
        Some(_) => {}
    }
    let Some(redirect_uri) = params.get("redirect_uri") else {
        return refuse_page(&shared, "authorize: redirect_uri missing".to_owned());
    };
    let registered = shared.config.registered_redirect_uri.as_deref();
    if let Err(e) = check_redirect_uri(redirect_uri, registered) {
        return refuse_page(&shared, format!("authorize: {e}"));
    }

    let state = params.get("state");
    let refuse = |error: &str, violation: String| {
        let response = error_redirect(redirect_uri, error, &violation, state);
        shared.violation(violation);
        response
    };
    if params.get("response_type") != Some("code") {
        let got = params.get("response_type");
        return refuse(
            "unsupported_response_type",
            format!("authorize: response_type must be code, got {got:?}"),
        );
    }
    match state {
        None => {
            return refuse(
                "invalid_request",
                "authorize: state missing (CSRF protection)".to_owned(),
            );
        }
        // Real providers accept any state, so the flow goes on; the weakness is still the
        // client's.
        Some(s) if s.len() < MIN_STATE_LEN => {
            shared.violation(format!(
                "authorize: state {s:?} is too short to be unguessable"
            ));
        }
        Some(_) => {}
    }
    let challenge = params.get("code_challenge");
    let code_challenge = match (challenge, params.get("code_challenge_method")) {
        (None, None) if shared.config.require_pkce => {
            return refuse(
                "invalid_request",
                "authorize: code_challenge missing (PKCE is required)".to_owned(),
            );
        }
        (None, None) => None,
        (None, Some(_)) => {
            return refuse(
                "invalid_request",
                "authorize: code_challenge_method without code_challenge".to_owned(),
            );
        }
        (Some(_), method) if method != Some("S256") => {
            return refuse(
                "invalid_request",
                format!(
                    "authorize: code_challenge_method must be S256, got {method:?} (absent means plain)"
                ),
            );
        }
        (Some(c), _) if !is_s256_challenge(c) => {
            return refuse(
                "invalid_request",
                format!("authorize: code_challenge {c:?} is not base64url-no-pad of a SHA-256"),
            );
        }
        (Some(c), _) => Some(c.to_owned()),
    };
    let scope = params.get("scope");
    if let Some(Err(e)) = scope.map(check_scope) {
        return refuse("invalid_scope", format!("authorize: {e}"));
    }

    let request_id = random_id("req-");
    let pending = PendingAuthorization {
        redirect_uri: redirect_uri.to_owned(),
        state: state.map(str::to_owned),
        code_challenge,
        scope: scope.unwrap_or_default().to_owned(),
    };
    shared.lock().pending.insert(request_id.clone(), pending);
    consent_page(&request_id)
}

/// `POST /oauth/authorize/decision`: the user's answer on the consent page.
pub(super) async fn decision(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let params = std::str::from_utf8(&body)
        .ok()
        .and_then(|b| form::parse(b).ok())
        .and_then(|pairs| Params::unique(pairs).ok());
    let Some(params) = params else {
        return refuse_page(&shared, "consent: malformed decision form".to_owned());
    };
    let pending = params
        .get("request_id")
        .and_then(|id| shared.lock().pending.remove(id));
    let Some(pending) = pending else {
        return refuse_page(
            &shared,
            "consent: unknown or already decided authorization request".to_owned(),
        );
    };
    let state = pending.state.as_deref();
    if params.get("decision") != Some("allow") {
        let description = "The user denied access";
        return error_redirect(&pending.redirect_uri, "access_denied", description, state);
    }
    let code = random_id("code-");
    let mut pairs = vec![("code", code.as_str())];
    pairs.extend(state.map(|s| ("state", s)));
    let location = form::with_query(&pending.redirect_uri, &pairs);
    let issued = IssuedCode {
        redirect_uri: pending.redirect_uri,
        code_challenge: pending.code_challenge,
        scope: pending.scope,
        issued_at: std::time::Instant::now(),
        used: false,
        grant: None,
    };
    shared.lock().codes.insert(code, issued);
    redirect_to(&location)
}

/// An absolute http(s) URI without a fragment, and the registered one when there is one.
fn check_redirect_uri(uri: &str, registered: Option<&str>) -> Result<(), String> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))
        .ok_or_else(|| format!("redirect_uri {uri:?} is not an absolute http(s) URI"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("redirect_uri {uri:?} has no host"));
    }
    if uri.contains('#') {
        return Err(format!("redirect_uri {uri:?} has a fragment"));
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "redirect_uri {uri:?} has whitespace or control characters"
        ));
    }
    match registered {
        Some(r) if r != uri => Err(format!("redirect_uri {uri:?} is not the registered {r:?}")),
        _ => Ok(()),
    }
}

/// S256 challenges are base64url-no-pad of 32 bytes: 43 characters, canonical.
fn is_s256_challenge(challenge: &str) -> bool {
    URL_SAFE_NO_PAD
        .decode(challenge)
        .is_ok_and(|bytes| bytes.len() == 32)
}

fn error_redirect(
    redirect_uri: &str,
    error: &str,
    description: &str,
    state: Option<&str>,
) -> Response {
    let mut pairs = vec![("error", error), ("error_description", description)];
    pairs.extend(state.map(|s| ("state", s)));
    redirect_to(&form::with_query(redirect_uri, &pairs))
}

fn redirect_to(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::FOUND, [(LOCATION, value)]).into_response(),
        Err(_) => page(StatusCode::BAD_REQUEST, "The redirect URI cannot be used."),
    }
}

fn consent_page(request_id: &str) -> Response {
    let body = format!(
        "<!doctype html><title>Authorize</title><form method=post action=\"{DECISION_PATH}\">\
         <input type=hidden name=request_id value=\"{request_id}\">\
         <button name=decision value=allow>Allow</button>\
         <button name=decision value=deny>Deny</button></form>"
    );
    let mut response = Html(body).into_response();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(CONSENT_REQUEST_HEADER, value);
    }
    response
}

/// Answers the user directly, never the redirect URI, and records the violation.
fn refuse_page(shared: &Shared, violation: String) -> Response {
    let response = page(StatusCode::BAD_REQUEST, &violation);
    shared.violation(violation);
    response
}

fn page(status: StatusCode, message: &str) -> Response {
    let escaped = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    let body = format!("<!doctype html><title>Authorization error</title><p>{escaped}</p>");
    (status, Html(body)).into_response()
}
