//! Handlers of the OAuth flow endpoints: start a flow, the provider's callback (the user's
//! browser, no token), the flow status, and the one-time completion that hands the access token
//! out.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use tresor_core::CoreError;
use tresor_core::backend::CredentialOwner;
use tresor_core::json::parse_strict;
use tresor_core::model::{RecordKey, format_millis};
use tresor_core::service::StartFlow;

use crate::AppState;
use crate::credentials::credential_json;
use crate::error::ApiError;
use crate::proxy::token::{TokenError, request_tokens};
use crate::records::{authenticate, ctx_of};
use crate::request::{Media, parse_query, read_body};

const BODY_LIMIT: usize = 16 * 1024;

/// The redirect URI registered with providers.
pub fn redirect_uri(public_url: &str) -> String {
    format!("{}/v1/oauth/callback", public_url.trim_end_matches('/'))
}

/// `POST /v1/oauth/flows`.
pub async fn start_route(state: AppState, req: Request) -> Response {
    let rid = ctx_of(&req).request_id;
    match start_inner(state, req).await {
        Ok(r) => r,
        Err(e) => ApiError::new(e, &rid).into_response(),
    }
}

async fn start_inner(state: AppState, req: Request) -> Result<Response, CoreError> {
    let ctx = ctx_of(&req);
    let principal = authenticate(&state, &req, &ctx).await?;
    principal
        .installation()?
        .require(tresor_core::model::Scope::CredentialsStore)?;
    parse_query(req.uri().query(), &[])?;
    let headers = req.headers().clone();
    let body = read_body(&headers, req.into_body(), Media::Json, BODY_LIMIT).await?;
    let Value::Object(mut obj) = parse_strict(&body, 8)? else {
        return Err(CoreError::invalid("the body must be a JSON object"));
    };
    let provider = match obj.shift_remove("provider") {
        Some(Value::String(s)) => s,
        _ => return Err(CoreError::invalid("`provider` (a string) is required")),
    };
    let Some(Value::Object(mut store_as)) = obj.shift_remove("store_as") else {
        return Err(CoreError::invalid(
            "`store_as` ({\"key\", \"owner\"?}) is required",
        ));
    };
    let key = match store_as.shift_remove("key") {
        Some(Value::String(k)) => RecordKey::parse(&k)?,
        _ => return Err(CoreError::invalid("`store_as.key` (a string) is required")),
    };
    let owner = match store_as.shift_remove("owner") {
        None | Some(Value::Null) => CredentialOwner::Installation,
        Some(Value::String(o)) => CredentialOwner::parse(&o)
            .ok_or_else(|| CoreError::invalid("`store_as.owner` is `installation` or `account`"))?,
        Some(_) => {
            return Err(CoreError::invalid(
                "`store_as.owner` is `installation` or `account`",
            ));
        }
    };
    if !store_as.is_empty() {
        return Err(crate::request::unknown(
            "field in `store_as`",
            &["key", "owner"],
        ));
    }
    let scopes = match obj.shift_remove("scopes") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(
            a.into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(CoreError::invalid("`scopes` must hold strings")),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(CoreError::invalid("`scopes` must be an array of strings")),
    };
    let return_to = match obj.shift_remove("return_to") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(CoreError::invalid("`return_to` must be a URL")),
    };
    if !obj.is_empty() {
        return Err(crate::request::unknown(
            "field in the body",
            &["provider", "store_as", "scopes", "return_to"],
        ));
    }
    let started = state
        .service
        .start_flow(
            &principal,
            &ctx,
            StartFlow {
                provider,
                store_key: key,
                store_owner: owner,
                scopes,
                return_to,
            },
            &redirect_uri(&state.public_url),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "flow_id": started.flow_id,
            "authorize_url": started.authorize_url,
            "expires_at": format_millis(started.expires_at),
        })),
    )
        .into_response())
}

/// `GET /v1/oauth/flows/{id}` and `POST /v1/oauth/flows/{id}/complete`.
pub async fn flow_route(state: AppState, req: Request) -> Response {
    let rid = ctx_of(&req).request_id;
    match flow_inner(state, req).await {
        Ok(r) => r,
        Err(e) => ApiError::new(e, &rid).into_response(),
    }
}

async fn flow_inner(state: AppState, req: Request) -> Result<Response, CoreError> {
    let ctx = ctx_of(&req);
    let principal = authenticate(&state, &req, &ctx).await?;
    principal
        .installation()?
        .require(tresor_core::model::Scope::CredentialsStore)?;
    parse_query(req.uri().query(), &[])?;
    let path = req.uri().path().to_owned();
    let rest = path.strip_prefix("/v1/oauth/flows/").unwrap_or("");
    let (raw_id, complete) = match rest.strip_suffix("/complete") {
        Some(id) => (id, true),
        None => (rest, false),
    };
    let flow_id = percent_decode_str(raw_id).decode_utf8_lossy().into_owned();
    if complete {
        let (meta, token) = state
            .service
            .complete_flow(&principal, &ctx, &flow_id)
            .await?;
        let body = json!({ "credential": credential_json(&meta), "access_token": token.as_str() });
        return Ok((StatusCode::OK, axum::Json(body)).into_response());
    }
    let view = state
        .service
        .flow_status(&principal, &ctx, &flow_id)
        .await?;
    let mut body = json!({
        "flow_id": view.flow_id,
        "status": view.status,
        "expires_at": format_millis(view.expires_at),
    });
    if let (Some(e), Some(o)) = (view.error, body.as_object_mut()) {
        o.insert("error".into(), e.into());
    }
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

/// `GET /v1/oauth/callback`: the user's browser lands here from the provider.
pub async fn callback_route(state: AppState, req: Request) -> Response {
    let ctx = ctx_of(&req);
    // Before anything is read: the per-address limit, answered like the callback's other
    // refusals (a page for the browser) and audited as they are.
    if let Some(ip) = crate::context::client_ip(&req)
        && let Err(secs) = state.rate_limits.check_oauth_callback(ip)
    {
        state
            .metrics
            .count_rate_limited(crate::ratelimit::LimitKind::OauthCallback);
        let _ = state.service.audit_callback_refusal(&ctx, 429);
        let mut resp = page(
            StatusCode::TOO_MANY_REQUESTS,
            "Sign-in failed",
            "Too many attempts from this address; try again later.",
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return resp;
    }
    let q = match parse_query(
        req.uri().query(),
        &[
            "state",
            "code",
            "error",
            "error_description",
            "error_uri",
            "scope",
            "iss",
            "session_state",
        ],
    ) {
        Ok(q) => q,
        Err(_) => {
            return page(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                "The link is malformed.",
            );
        }
    };
    let Some(st) = q.get("state") else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The link has no state.",
        );
    };
    let redirect = redirect_uri(&state.public_url);
    let work = match state.service.callback_begin(st, &redirect).await {
        Ok(w) => w,
        Err(e) => {
            let mut ev_ctx = ctx.clone();
            ev_ctx.request_id = ctx.request_id.clone();
            let _ = state
                .service
                .audit_callback_refusal(&ev_ctx, e.code().http_status());
            return page(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                &e.public_message(),
            );
        }
    };
    let outcome: Result<(), String> = match (q.get("error"), q.get("code")) {
        (Some(err), _) => Err(err.clone()),
        (None, None) => Err("invalid_request".into()),
        (None, Some(code)) => {
            let mut params: Vec<(&str, &str)> = vec![
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", work.redirect_uri.as_str()),
            ];
            if let Some(v) = &work.verifier {
                params.push(("code_verifier", v.as_str()));
            }
            match request_tokens(&work.endpoint, &params, &state.proxy_limits).await {
                Ok(tokens) => match state.service.callback_complete(&ctx, &work, tokens).await {
                    Ok(()) => Ok(()),
                    Err(CoreError::InvalidRequest(m)) => {
                        return page(StatusCode::BAD_REQUEST, "Sign-in failed", &m);
                    }
                    Err(e) => Err(match e {
                        CoreError::Conflict(_) => "conflict".to_owned(),
                        _ => "server_error".to_owned(),
                    }),
                },
                Err(TokenError::Provider(code)) => Err(code),
                Err(TokenError::Failed(_)) => Err("temporarily_unavailable".into()),
            }
        }
    };
    let status = match &outcome {
        Ok(()) => "completed",
        Err(error) => {
            if let Err(e) = state.service.callback_fail(&ctx, &work, error).await {
                return page(
                    StatusCode::BAD_REQUEST,
                    "Sign-in failed",
                    &e.public_message(),
                );
            }
            "failed"
        }
    };
    match &work.return_to {
        Some(rt) => {
            let mut url = match url::Url::parse(rt) {
                Ok(u) => u,
                Err(_) => return page(StatusCode::OK, "Done", "You can close this window."),
            };
            url.query_pairs_mut()
                .append_pair("flow_id", &work.flow_id)
                .append_pair("status", status);
            let mut resp = StatusCode::FOUND.into_response();
            if let Ok(v) = HeaderValue::from_str(url.as_str()) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        None => match outcome {
            Ok(()) => page(
                StatusCode::OK,
                "Connected",
                "The account is connected. You can close this window.",
            ),
            Err(e) => page(
                StatusCode::OK,
                "Sign-in failed",
                &format!("The provider answered: {e}"),
            ),
        },
    }
}

/// A small HTML page; every dynamic string is escaped.
fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body><h1>{t}</h1><p>{m}</p></body></html>",
        t = escape_html(title),
        m = escape_html(message)
    );
    let mut resp = (status, Html(body)).into_response();
    resp.headers_mut().insert(
        header::HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static("default-src 'none'"),
    );
    resp
}

pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn html_is_escaped() {
        assert_eq!(
            super::escape_html("<script>alert('x')&\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;)&amp;&quot;&lt;/script&gt;"
        );
    }
}
