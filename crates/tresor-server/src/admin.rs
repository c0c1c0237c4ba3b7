//! Handlers of the administration API (`/v1/admin/...`): apps, accounts, installations, tokens,
//! root key rotation and the audit log. All need an admin token; installation tokens get 403.

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use tresor_core::CoreError;
use tresor_core::audit::AuditQuery;
use tresor_core::backend::{AccountRow, AppRow, InstallationRow};
use tresor_core::json::parse_strict;
use tresor_core::model::{format_millis, parse_timestamp};
use tresor_core::service::KeysStatus;

use crate::AppState;
use crate::error::ApiError;
use crate::records::{authenticate, ctx_of};
use crate::request::{Media, int_param, parse_query, read_body};

/// Which admin resource a route serves.
#[derive(Debug, Clone, Copy)]
pub enum Resource {
    Apps,
    App,
    Accounts,
    Account,
    Installations,
    Installation,
    InstallationTokens,
    /// `POST /v1/admin/installations/{id}/rotate-key`: the installation key rotation.
    InstallationRotateKey,
    Token,
    Audit,
    /// `GET /v1/admin/keys`: root key versions, servers and re-wrap progress.
    Keys,
    /// `POST /v1/admin/keys/rotate`.
    KeysRotate,
    /// `GET /v1/admin/status`: the running system at a glance (`tresor status`).
    Status,
}

/// Admin JSON bodies are small; this bounds them.
const ADMIN_BODY_LIMIT: usize = 64 * 1024;

pub async fn route(state: AppState, resource: Resource, req: Request) -> Response {
    let ctx = ctx_of(&req);
    let rid = ctx.request_id.clone();
    match inner(state, resource, req).await {
        Ok(r) => r,
        Err(e) => ApiError::new(e, &rid).into_response(),
    }
}

async fn inner(state: AppState, resource: Resource, req: Request) -> Result<Response, CoreError> {
    let ctx = ctx_of(&req);
    let p = authenticate(&state, &req, &ctx).await?;
    p.require_admin()?;
    let svc = &state.service;
    let method = req.method().clone();
    let id = path_id(req.uri().path())?;
    let audit_params = [
        "installation_id",
        "account_id",
        "since",
        "until",
        "after",
        "limit",
    ];
    let q = parse_query(
        req.uri().query(),
        if matches!(resource, Resource::Audit) {
            &audit_params
        } else {
            &[]
        },
    )?;
    let headers = req.headers().clone();
    let body = if matches!(method, Method::PUT | Method::POST) {
        let bytes = read_body(&headers, req.into_body(), Media::Json, ADMIN_BODY_LIMIT).await?;
        if bytes.is_empty() {
            Value::Object(Default::default())
        } else {
            parse_strict(&bytes, 16)?
        }
    } else {
        Value::Null
    };
    match (resource, method) {
        (Resource::Apps, Method::GET) => {
            let rows = svc.list_apps(&p, &ctx).await?;
            ok_items(rows.iter().map(app_json).collect())
        }
        (Resource::App, Method::PUT) => {
            let scopes = string_list(&body, "scopes", true)?.unwrap_or_default();
            only_fields(&body, &["scopes"])?;
            let (row, created) = svc.put_app(&p, &ctx, &id, scopes).await?;
            ok_doc(created, app_json(&row))
        }
        (Resource::App, Method::GET) => ok_doc(false, app_json(&svc.get_app(&p, &ctx, &id).await?)),
        (Resource::App, Method::DELETE) => {
            svc.delete_app(&p, &ctx, &id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Resource::Accounts, Method::GET) => {
            let rows = svc.list_accounts(&p, &ctx).await?;
            ok_items(rows.iter().map(account_json).collect())
        }
        (Resource::Account, Method::PUT) => {
            only_fields(&body, &[])?;
            let (row, created) = svc.put_account(&p, &ctx, &id).await?;
            ok_doc(created, account_json(&row))
        }
        (Resource::Account, Method::GET) => {
            ok_doc(false, account_json(&svc.get_account(&p, &ctx, &id).await?))
        }
        (Resource::Account, Method::DELETE) => {
            svc.delete_account(&p, &ctx, &id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Resource::Installations, Method::GET) => {
            let rows = svc.list_installations(&p, &ctx).await?;
            ok_items(rows.iter().map(installation_json).collect())
        }
        (Resource::Installation, Method::PUT) => {
            only_fields(&body, &["app_id", "account_id"])?;
            let app_id = string_field(&body, "app_id")?;
            let account_id = string_field(&body, "account_id")?;
            let out = svc.install(&p, &ctx, &id, &app_id, &account_id).await?;
            let mut doc = installation_json(&out.installation);
            match &out.token {
                Some(t) => {
                    if let Some(o) = doc.as_object_mut() {
                        o.insert("token_id".into(), t.token_id.clone().into());
                        o.insert("token".into(), t.token.expose_secret().into());
                    }
                    ok_doc(true, doc)
                }
                None => ok_doc(false, doc),
            }
        }
        (Resource::Installation, Method::GET) => ok_doc(
            false,
            installation_json(&svc.get_installation(&p, &ctx, &id).await?),
        ),
        (Resource::Installation, Method::DELETE) => {
            svc.uninstall(&p, &ctx, &id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Resource::InstallationTokens, Method::POST) => {
            only_fields(&body, &["scopes", "ttl_seconds"])?;
            let scopes = string_list(&body, "scopes", false)?;
            let ttl = match body.get("ttl_seconds") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_i64()
                        .ok_or_else(|| CoreError::invalid("`ttl_seconds` must be an integer"))?,
                ),
            };
            let t = svc.create_token(&p, &ctx, &id, scopes, ttl).await?;
            ok_doc(
                true,
                json!({ "token_id": t.token_id, "token": t.token.expose_secret() }),
            )
        }
        (Resource::InstallationRotateKey, Method::POST) => {
            only_fields(&body, &[])?;
            let r = svc.rotate_installation_key(&p, &ctx, &id).await?;
            ok_doc(
                false,
                json!({
                    "installation_id": r.installation_id,
                    "records": r.records,
                    "credentials": r.credentials,
                    "oauth_flows": r.oauth_flows,
                }),
            )
        }
        (Resource::Token, Method::DELETE) => {
            svc.revoke_token(&p, &ctx, &id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Resource::Audit, Method::GET) => {
            let limit = int_param(&q, "limit")?.unwrap_or(100);
            if !(1..=1000).contains(&limit) {
                return Err(CoreError::invalid("limit must be from 1 to 1000"));
            }
            let after = match q.get("after") {
                None => None,
                Some(a) => Some(a.parse::<i64>().map_err(|_| {
                    CoreError::invalid("`after` must be a cursor from next_cursor")
                })?),
            };
            let query = AuditQuery {
                installation_id: q.get("installation_id").cloned(),
                account_id: q.get("account_id").cloned(),
                since: q.get("since").map(|s| parse_timestamp(s)).transpose()?,
                until: q.get("until").map(|s| parse_timestamp(s)).transpose()?,
                after,
                limit: limit as usize,
            };
            let (items, next) = svc.audit_query(&p, &ctx, query).await?;
            let body = json!({ "items": items, "next_cursor": next });
            Ok((StatusCode::OK, axum::Json(body)).into_response())
        }
        (Resource::Keys, Method::GET) => {
            ok_doc(false, keys_json(&svc.keys_status(&p, &ctx).await?))
        }
        (Resource::Status, Method::GET) => {
            let s = svc.status(&p, &ctx).await?;
            let c = &s.counts;
            ok_doc(
                false,
                json!({
                    "version": env!("CARGO_PKG_VERSION"),
                    "backend": s.backend,
                    "node_id": s.node_id,
                    "store": {
                        "apps": c.apps,
                        "accounts": c.accounts,
                        "installations": c.installations,
                        "records": c.records,
                        "credentials": c.credentials,
                        "audit_events": c.audit_events,
                        "bytes": c.bytes,
                    },
                    "keys": keys_json(&s.keys),
                    "last_backup": last_backup(state.last_backup_file.as_deref()),
                }),
            )
        }
        (Resource::KeysRotate, Method::POST) => {
            only_fields(&body, &[])?;
            let status = svc.rotate_root_key(&p, &ctx).await?;
            Ok((StatusCode::ACCEPTED, axum::Json(keys_json(&status))).into_response())
        }
        _ => Err(CoreError::internal("unrouted admin method")),
    }
}

/// What `tresor backup` recorded of the last backup (`null`: none, or not the embedded store).
/// A file that cannot be read or parsed is reported as such, never as "no backup".
fn last_backup(path: Option<&std::path::Path>) -> Value {
    let Some(path) = path else {
        return Value::Null;
    };
    match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Null,
        Err(e) => json!({ "error": format!("cannot read {}: {}", path.display(), e.kind()) }),
        Ok(bytes) => serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({ "error": format!("{} is not JSON", path.display()) })),
    }
}

/// The body of `GET /v1/admin/keys` and of a rotation's 202: version ids and counts only.
fn keys_json(s: &KeysStatus) -> Value {
    let servers: Vec<Value> = s
        .servers
        .iter()
        .map(|n| {
            json!({
                "node_id": n.node_id,
                "key_versions": n.key_versions,
                "last_seen": format_millis(n.last_seen),
                "live": n.live,
            })
        })
        .collect();
    let r = &s.rewrap;
    json!({
        "active": s.active,
        "newest": s.newest,
        "versions": s.versions,
        "servers": servers,
        "wrapped": s.wrapped,
        "rewrap": {
            "running": r.running,
            "done": r.remaining == 0,
            "total": r.total,
            "remaining": r.remaining,
            "rewrapped": r.rewrapped,
            "failed": r.failed,
            "last_error": r.last_error,
        },
    })
}

/// The id in the path, if the route has one: the segment after the resource name.
fn path_id(path: &str) -> Result<String, CoreError> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // ["v1", "admin", "<resource>", "<id>", ...]
    match segs.get(3) {
        None => Ok(String::new()),
        Some(raw) => percent_decode_str(raw)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| CoreError::invalid("the id is not valid UTF-8")),
    }
}

fn only_fields(body: &Value, allowed: &[&str]) -> Result<(), CoreError> {
    match body {
        Value::Object(o) => {
            if o.keys().any(|k| !allowed.contains(&k.as_str())) {
                return Err(crate::request::unknown("field in the body", allowed));
            }
            Ok(())
        }
        _ => Err(CoreError::invalid("the body must be a JSON object")),
    }
}

fn string_field(body: &Value, name: &str) -> Result<String, CoreError> {
    body.get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| CoreError::invalid(format!("`{name}` (a string) is required")))
}

fn string_list(body: &Value, name: &str, required: bool) -> Result<Option<Vec<String>>, CoreError> {
    match body.get(name) {
        None | Some(Value::Null) if !required => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| CoreError::invalid(format!("`{name}` must hold strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Err(CoreError::invalid(format!(
            "`{name}` must be an array of strings"
        ))),
    }
}

fn ok_doc(created: bool, doc: Value) -> Result<Response, CoreError> {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(doc)).into_response())
}

fn ok_items(items: Vec<Value>) -> Result<Response, CoreError> {
    Ok((StatusCode::OK, axum::Json(json!({ "items": items }))).into_response())
}

fn app_json(r: &AppRow) -> Value {
    json!({
        "app_id": r.app_id,
        "scopes": r.scopes,
        "created_at": format_millis(r.created_at),
        "updated_at": format_millis(r.updated_at),
    })
}

fn account_json(r: &AccountRow) -> Value {
    json!({
        "account_id": r.account_id,
        "created_at": format_millis(r.created_at),
        "updated_at": format_millis(r.updated_at),
    })
}

fn installation_json(r: &InstallationRow) -> Value {
    json!({
        "installation_id": r.installation_id,
        "app_id": r.app_id,
        "account_id": r.account_id,
        "created_at": format_millis(r.created_at),
    })
}
