//! Handlers of write-only credentials (`/v1/credentials`, `/v1/credentials/{key}`) and of
//! providers (`/v1/admin/providers`, `/v1/admin/providers/{name}`). No handler here can answer
//! a secret: the service returns only metadata.

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};
use tresor_core::CoreError;
use tresor_core::backend::CredentialOwner;
use tresor_core::json::parse_strict;
use tresor_core::model::format_millis;
use tresor_core::service::{CredentialInput, CredentialMeta, ProviderOut};

use crate::AppState;
use crate::error::ApiError;
use crate::records::{authenticate, ctx_of};
use crate::request::{Media, decode_key, parse_query, read_body};

/// Provider documents and credential bodies are small.
const BODY_LIMIT: usize = 64 * 1024;

/// `/v1/credentials/{key}`: PUT, GET, DELETE.
pub async fn credential_route(state: AppState, req: Request) -> Response {
    let rid = ctx_of(&req).request_id;
    match credential_inner(state, req).await {
        Ok(r) => r,
        Err(e) => ApiError::new(e, &rid).into_response(),
    }
}

/// `POST /v1/credentials/{key}/request`: the authenticated request proxy.
pub async fn request_route(state: AppState, req: Request) -> Response {
    let ctx = ctx_of(&req);
    let rid = ctx.request_id.clone();
    let principal = match authenticate(&state, &req, &ctx).await {
        Ok(p) => p,
        Err(e) => return ApiError::new(e, &rid).into_response(),
    };
    let raw_key = req
        .uri()
        .path()
        .strip_prefix("/v1/credentials/")
        .and_then(|p| p.strip_suffix("/request"))
        .unwrap_or("")
        .to_owned();
    let result = request_inner(&state, &principal, req).await;
    let status = match &result {
        Ok(_) => 200,
        Err(e) => e.code().http_status(),
    };
    let key_for_audit = percent_decode_str(&raw_key)
        .decode_utf8_lossy()
        .into_owned();
    if let Err(e) = state
        .service
        .audit_credential_use(&principal, &ctx, &key_for_audit, status)
    {
        return ApiError::new(e, &rid).into_response();
    }
    match result {
        Ok(doc) => (StatusCode::OK, axum::Json(doc)).into_response(),
        Err(e) => ApiError::new(e, &rid).into_response(),
    }
}

async fn request_inner(
    state: &AppState,
    principal: &tresor_core::model::Principal,
    req: Request,
) -> Result<Value, CoreError> {
    principal
        .installation()?
        .require(tresor_core::model::Scope::CredentialsUse)?;
    let raw = req
        .uri()
        .path()
        .strip_prefix("/v1/credentials/")
        .and_then(|p| p.strip_suffix("/request"))
        .unwrap_or("")
        .to_owned();
    let key = decode_key(&raw)?;
    parse_query(req.uri().query(), &[])?;
    let headers = req.headers().clone();
    let limit = state.service.limits().max_body_bytes();
    let body = read_body(&headers, req.into_body(), Media::Json, limit).await?;
    let proxied = crate::proxy::forward::parse_request(parse_strict(&body, 128)?)?;
    let svc = &state.service;
    let limits = &state.proxy_limits;
    let mut cred = svc.credential_for_use(principal, &key).await?;
    if cred.needs_renewal(tresor_core::model::now_millis()) {
        cred = renew(state, principal, &cred).await?;
    }
    let (status, doc) = crate::proxy::forward::forward(&cred, proxied.clone(), limits).await?;
    if status != 401 || !cred.renewable() {
        return Ok(doc);
    }
    // After a 401, once: a token another request already replaced is used as it is;
    // otherwise this request refreshes (single-flight) and tries again.
    let latest = svc.credential_for_use(principal, &key).await?;
    let retry = if latest.version() != cred.version() {
        latest
    } else {
        renew(state, principal, &latest).await?
    };
    crate::proxy::forward::forward(&retry, proxied, limits)
        .await
        .map(|(_, doc)| doc)
}

/// A fresh token for `cred`: refreshed by this request under the lease, or by whoever held it.
async fn renew(
    state: &AppState,
    principal: &tresor_core::model::Principal,
    cred: &tresor_core::service::UsableCredential,
) -> Result<tresor_core::service::UsableCredential, CoreError> {
    use tresor_core::service::{RefreshFailure, RefreshStep};
    let svc = &state.service;
    match svc.begin_refresh(principal, cred).await? {
        RefreshStep::Fresh(c) => Ok(c),
        RefreshStep::Refresh(mut work) => {
            svc.refresh_endpoint_secret(&mut work).await?;
            let outcome = {
                let params: Vec<(&str, &str)> =
                    work.params.iter().map(|(k, v)| (*k, v.as_str())).collect();
                match crate::proxy::token::request_tokens(
                    &work.endpoint,
                    &params,
                    &state.proxy_limits,
                )
                .await
                {
                    Ok(t) => Ok(t),
                    Err(crate::proxy::token::TokenError::Provider(e)) if e == "invalid_grant" => {
                        Err(RefreshFailure::InvalidGrant)
                    }
                    Err(e) => Err(RefreshFailure::Other(e.describe())),
                }
            };
            svc.finish_refresh(principal, work, outcome).await
        }
    }
}

/// `/v1/credentials`: the listing.
pub async fn credential_list_route(state: AppState, req: Request) -> Response {
    let rid = ctx_of(&req).request_id;
    match list_inner(state, req).await {
        Ok(r) => r,
        Err(e) => ApiError::new(e, &rid).into_response(),
    }
}

/// `/v1/admin/providers[/{name}]`.
pub async fn provider_route(state: AppState, req: Request) -> Response {
    let rid = ctx_of(&req).request_id;
    match provider_inner(state, req).await {
        Ok(r) => r,
        Err(e) => ApiError::new(e, &rid).into_response(),
    }
}

async fn credential_inner(state: AppState, req: Request) -> Result<Response, CoreError> {
    let ctx = ctx_of(&req);
    let principal = authenticate(&state, &req, &ctx).await?;
    let p = principal.installation()?;
    let scope = match *req.method() {
        Method::GET => tresor_core::model::Scope::CredentialsRead,
        _ => tresor_core::model::Scope::CredentialsStore,
    };
    p.require(scope)?;
    let raw = req
        .uri()
        .path()
        .strip_prefix("/v1/credentials/")
        .unwrap_or("")
        .to_owned();
    let key = decode_key(&raw)?;
    parse_query(req.uri().query(), &[])?;
    let svc = &state.service;
    match req.method().clone() {
        Method::GET => {
            let meta = svc.get_credential(&principal, &ctx, &key).await?;
            Ok((StatusCode::OK, axum::Json(credential_json(&meta))).into_response())
        }
        Method::DELETE => {
            svc.delete_credential(&principal, &ctx, &key).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Method::PUT => {
            let headers = req.headers().clone();
            let body = read_body(&headers, req.into_body(), Media::Json, BODY_LIMIT).await?;
            let input = parse_credential_body(&body)?;
            let (meta, created) = svc.put_credential(&principal, &ctx, &key, input).await?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, axum::Json(credential_json(&meta))).into_response())
        }
        _ => Err(CoreError::internal("unrouted credential method")),
    }
}

async fn list_inner(state: AppState, req: Request) -> Result<Response, CoreError> {
    let ctx = ctx_of(&req);
    let principal = authenticate(&state, &req, &ctx).await?;
    principal
        .installation()?
        .require(tresor_core::model::Scope::CredentialsRead)?;
    let q = parse_query(req.uri().query(), &["prefix", "limit", "cursor"])?;
    let limit = match q.get("limit") {
        None => None,
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| CoreError::invalid("limit must be an integer from 1 to 1000"))?,
        ),
    };
    let page = state
        .service
        .list_credentials(
            &principal,
            &ctx,
            q.get("prefix").map(String::as_str).unwrap_or(""),
            q.get("cursor").map(String::as_str),
            limit,
        )
        .await?;
    let items: Vec<Value> = page.items.iter().map(credential_json).collect();
    Ok((
        StatusCode::OK,
        axum::Json(json!({ "items": items, "next_cursor": page.next_cursor })),
    )
        .into_response())
}

/// `{"owner"?, "provider", "secret": {...}, "metadata"?: {...}, "ttl_seconds"?}`.
fn parse_credential_body(body: &[u8]) -> Result<CredentialInput, CoreError> {
    let Value::Object(mut obj) = parse_strict(body, 32)? else {
        return Err(CoreError::invalid("the body must be a JSON object"));
    };
    let owner = match obj.shift_remove("owner") {
        None | Some(Value::Null) => CredentialOwner::Installation,
        Some(Value::String(s)) => CredentialOwner::parse(&s)
            .ok_or_else(|| CoreError::invalid("`owner` is `installation` or `account`"))?,
        Some(_) => return Err(CoreError::invalid("`owner` is `installation` or `account`")),
    };
    let provider = match obj.shift_remove("provider") {
        Some(Value::String(s)) => s,
        _ => return Err(CoreError::invalid("`provider` (a string) is required")),
    };
    let secret = match obj.shift_remove("secret") {
        Some(Value::Object(m)) => m,
        _ => return Err(CoreError::invalid("`secret` (an object) is required")),
    };
    let metadata = match obj.shift_remove("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(CoreError::invalid("`metadata` must be an object")),
    };
    let ttl = match obj.shift_remove("ttl_seconds") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_i64()
                .ok_or_else(|| CoreError::invalid("`ttl_seconds` must be an integer"))?,
        ),
        Some(_) => return Err(CoreError::invalid("`ttl_seconds` must be an integer")),
    };
    if !obj.is_empty() {
        return Err(crate::request::unknown(
            "field in the body",
            &["owner", "provider", "secret", "metadata", "ttl_seconds"],
        ));
    }
    Ok(CredentialInput {
        owner,
        provider,
        secret,
        metadata,
        ttl,
    })
}

pub fn credential_json(m: &CredentialMeta) -> Value {
    json!({
        "key": m.key,
        "owner": m.owner.as_str(),
        "provider": m.provider,
        "kind": m.kind,
        "version": m.version,
        "created_at": format_millis(m.created_at),
        "updated_at": format_millis(m.updated_at),
        "expires_at": m.expires_at.map(format_millis),
        "token_expires_at": m.token_expires_at.map(format_millis),
        "scopes": m.scopes,
        "metadata": m.metadata,
        "needs_reconsent": m.needs_reconsent,
    })
}

async fn provider_inner(state: AppState, req: Request) -> Result<Response, CoreError> {
    let ctx = ctx_of(&req);
    let p = authenticate(&state, &req, &ctx).await?;
    p.require_admin()?;
    parse_query(req.uri().query(), &[])?;
    let name = match req.uri().path().strip_prefix("/v1/admin/providers/") {
        Some(raw) => Some(
            percent_decode_str(raw)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| CoreError::invalid("the name is not valid UTF-8"))?,
        ),
        None => None,
    };
    let svc = &state.service;
    match (req.method().clone(), name) {
        (Method::GET, None) => {
            let items: Vec<Value> = svc
                .list_providers(&p, &ctx)
                .await?
                .iter()
                .map(provider_json)
                .collect();
            Ok((StatusCode::OK, axum::Json(json!({ "items": items }))).into_response())
        }
        (Method::GET, Some(name)) => {
            let out = svc.get_provider(&p, &ctx, &name).await?;
            Ok((StatusCode::OK, axum::Json(provider_json(&out))).into_response())
        }
        (Method::DELETE, Some(name)) => {
            svc.delete_provider(&p, &ctx, &name).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Method::PUT, Some(name)) => {
            let headers = req.headers().clone();
            let body = read_body(&headers, req.into_body(), Media::Json, BODY_LIMIT).await?;
            let doc = parse_strict(&body, 16)?;
            let (out, created) = svc.put_provider(&p, &ctx, &name, doc).await?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, axum::Json(provider_json(&out))).into_response())
        }
        _ => Err(CoreError::internal("unrouted provider method")),
    }
}

/// The provider document without its secret: `oauth2.client_secret_set` says whether one is
/// stored.
pub fn provider_json(p: &ProviderOut) -> Value {
    let mut doc = serde_json::to_value(&p.doc).unwrap_or(Value::Null);
    if let Some(obj) = doc.as_object_mut() {
        if let Some(o) = obj.get_mut("oauth2").and_then(Value::as_object_mut) {
            o.insert("client_secret_set".into(), p.client_secret_set.into());
        }
        obj.insert("name".into(), p.name.clone().into());
        obj.insert("created_at".into(), format_millis(p.created_at).into());
        obj.insert("updated_at".into(), format_millis(p.updated_at).into());
    }
    doc
}
