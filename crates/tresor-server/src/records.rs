//! Handlers of the record stores: `/v1/{store}/{key}` (GET, HEAD, PUT, PATCH, DELETE),
//! `/v1/{store}` (listing), `/v1/{store}/{key}/ops` and `/v1/batch`. Each authenticates,
//! checks scope, validates, and hands one command to the service.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use tresor_core::CoreError;
use tresor_core::audit::RequestContext;
use tresor_core::json::parse_strict;
use tresor_core::model::{Principal, RecordKey, StoreKind};
use tresor_core::service::{Condition, OpOutput, OpRequest, RecordOp, RecordOut};

use crate::error::ApiError;
use crate::render::{PreviousOnly, meta_json, out_json, record_json, to_vec};
use crate::request::{
    Media, condition, decode_key, fields_param, int_param, parse_query, read_body, return_previous,
};
use crate::{AppState, Ctx};

/// `/v1/{store}/{key}` for every method.
pub async fn key_route(state: AppState, store: StoreKind, req: Request) -> Response {
    let ctx = ctx_of(&req);
    let rid = ctx.request_id.clone();
    into_response(key_route_inner(state, store, ctx, req).await, &rid)
}

/// `/v1/{store}/{key}/ops`.
pub async fn ops_route(state: AppState, store: StoreKind, req: Request) -> Response {
    let ctx = ctx_of(&req);
    let rid = ctx.request_id.clone();
    into_response(ops_inner(state, store, ctx, req).await, &rid)
}

/// `/v1/{store}`: the listing.
pub async fn list_route(state: AppState, store: StoreKind, req: Request) -> Response {
    let ctx = ctx_of(&req);
    let rid = ctx.request_id.clone();
    into_response(list_inner(state, store, ctx, req).await, &rid)
}

/// `/v1/{store}/`: an empty key (400, after authentication and the token's access to the store,
/// like every validation error).
pub async fn empty_key_route(state: AppState, store: StoreKind, req: Request) -> Response {
    let ctx = ctx_of(&req);
    let rid = ctx.request_id.clone();
    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
    let r = match authenticate(&state, &req, &ctx).await {
        Ok(p) => state
            .service
            .precheck_store_access(&p, store, write)
            .and(Err(CoreError::invalid("the key is empty"))),
        Err(e) => Err(e),
    };
    into_response(r, &rid)
}

/// `/v1/batch`.
pub async fn batch_route(state: AppState, req: Request) -> Response {
    let ctx = ctx_of(&req);
    let rid = ctx.request_id.clone();
    into_response(batch_inner(state, ctx, req).await, &rid)
}

pub fn ctx_of(req: &Request) -> RequestContext {
    req.extensions()
        .get::<Ctx>()
        .map(|c| c.0.clone())
        .unwrap_or_default()
}

fn into_response(r: Result<Response, CoreError>, request_id: &str) -> Response {
    match r {
        Ok(resp) => resp,
        Err(e) => ApiError::new(e, request_id).into_response(),
    }
}

/// The bearer token of the request as a principal, within the rate limits (see
/// `ratelimit::authenticate`).
pub fn authenticate<'a>(
    state: &'a AppState,
    req: &Request,
    ctx: &'a RequestContext,
) -> impl std::future::Future<Output = Result<Principal, CoreError>> + Send + 'a {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let client = crate::context::client_ip(req);
    async move { crate::ratelimit::authenticate(state, auth.as_deref(), client, ctx).await }
}

/// The raw key segment of a `/v1/{store}/{key}[/ops]` path.
fn raw_key(path: &str, store: StoreKind, ops: bool) -> &str {
    let rest = path
        .strip_prefix("/v1/")
        .and_then(|p| p.strip_prefix(store.as_str()))
        .and_then(|p| p.strip_prefix('/'))
        .unwrap_or("");
    if ops {
        rest.strip_suffix("/ops").unwrap_or(rest)
    } else {
        rest
    }
}

async fn key_route_inner(
    state: AppState,
    store: StoreKind,
    ctx: RequestContext,
    req: Request,
) -> Result<Response, CoreError> {
    let principal = authenticate(&state, &req, &ctx).await?;
    let method = req.method().clone();
    let write = !matches!(method, Method::GET | Method::HEAD);
    state
        .service
        .precheck_store_access(&principal, store, write)?;
    let key = decode_key(raw_key(req.uri().path(), store, false))?;
    let query = req.uri().query().map(str::to_owned);
    let headers = req.headers().clone();
    let limits = state.service.limits().clone();
    let svc = &state.service;
    // Conditional headers apply to writes; on reads they are ignored, as generic HTTP clients
    // may send them.
    let cond = if write {
        condition(&headers)?
    } else {
        Condition::None
    };
    match method {
        Method::GET | Method::HEAD => {
            let q = parse_query(query.as_deref(), &["fields"])?;
            let fields = fields_param(&q)?;
            let head = method == Method::HEAD;
            let op = if head {
                RecordOp::Exists
            } else {
                RecordOp::Get { fields }
            };
            let out = svc
                .record_op(
                    &principal,
                    &ctx,
                    request(store, key, op, Condition::None, false),
                )
                .await?;
            let record = out
                .record
                .ok_or_else(|| CoreError::internal("a read without a record"))?;
            if head {
                let mut resp = StatusCode::OK.into_response();
                set_etag(&mut resp, record.meta().version);
                return Ok(resp);
            }
            json_answer(
                StatusCode::OK,
                &out_json(&record)?,
                Some(record.meta().version),
            )
        }
        Method::PUT => {
            let q = parse_query(query.as_deref(), &["return"])?;
            let prev = return_previous(&q)?;
            let body = read_body(
                &headers,
                req.into_body(),
                Media::Json,
                limits.max_body_bytes(),
            )
            .await?;
            let (value, description, ttl) = parse_put_body(&body, limits.max_depth)?;
            let op = RecordOp::Put {
                value,
                description,
                ttl,
            };
            let out = svc
                .record_op(&principal, &ctx, request(store, key, op, cond, prev))
                .await?;
            write_answer(out)
        }
        Method::PATCH => {
            let q = parse_query(query.as_deref(), &["return", "ttl_seconds"])?;
            let prev = return_previous(&q)?;
            let ttl = int_param(&q, "ttl_seconds")?;
            let body = read_body(
                &headers,
                req.into_body(),
                Media::MergePatch,
                limits.max_body_bytes(),
            )
            .await?;
            let patch = parse_strict(&body, limits.max_depth)?;
            let op = RecordOp::Patch { patch, ttl };
            let out = svc
                .record_op(&principal, &ctx, request(store, key, op, cond, prev))
                .await?;
            write_answer(out)
        }
        Method::DELETE => {
            let q = parse_query(query.as_deref(), &["return", "fields"])?;
            let prev = return_previous(&q)?;
            let fields = fields_param(&q)?;
            let op = RecordOp::Delete { fields };
            let out = svc
                .record_op(&principal, &ctx, request(store, key, op, cond, prev))
                .await?;
            write_answer(out)
        }
        _ => Err(CoreError::internal("unrouted method")),
    }
}

fn request(
    store: StoreKind,
    key: RecordKey,
    op: RecordOp,
    condition: Condition,
    return_previous: bool,
) -> OpRequest {
    OpRequest {
        store,
        key,
        op,
        condition,
        return_previous,
    }
}

/// The answer to PUT, PATCH and DELETE, with `previous` when it was asked for.
fn write_answer(out: OpOutput) -> Result<Response, CoreError> {
    let status = StatusCode::from_u16(out.status).unwrap_or(StatusCode::OK);
    let version = out.record.as_ref().map(|r| r.meta().version);
    let previous = match &out.previous {
        None => None,
        Some(None) => Some(None),
        Some(Some(p)) => Some(Some(record_json(p)?)),
    };
    match (&out.record, previous) {
        (None, None) => Ok(status.into_response()),
        (Some(r), None) => json_answer(status, &out_json(r)?, version),
        (Some(r), Some(prev)) => json_answer(status, &out_json(r)?.with_previous(prev), version),
        (None, Some(prev)) => json_answer(status, &PreviousOnly { previous: prev }, version),
    }
}

fn json_answer<T: serde::Serialize>(
    status: StatusCode,
    body: &T,
    etag: Option<u64>,
) -> Result<Response, CoreError> {
    let bytes = to_vec(body)?;
    let mut resp = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::from(bytes),
    )
        .into_response();
    if let Some(v) = etag {
        set_etag(&mut resp, v);
    }
    Ok(resp)
}

fn set_etag(resp: &mut Response, version: u64) {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        resp.headers_mut().insert(header::ETAG, v);
    }
}

/// `{"value": V, "description"?: S, "ttl_seconds"?: N}`, nothing else.
#[doc(hidden)]
pub fn parse_put_body(
    body: &[u8],
    max_depth: usize,
) -> Result<(Value, Option<String>, Option<i64>), CoreError> {
    // One more level for the wrapping object; the value's own depth is checked by the service.
    let doc = parse_strict(body, max_depth + 1)?;
    let Value::Object(mut obj) = doc else {
        return Err(CoreError::invalid("the body must be a JSON object"));
    };
    let value = obj
        .shift_remove("value")
        .ok_or_else(|| CoreError::invalid("the body has no `value`"))?;
    let description = match obj.shift_remove("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(CoreError::invalid("`description` must be a string")),
    };
    let ttl = ttl_member(obj.shift_remove("ttl_seconds"))?;
    if !obj.is_empty() {
        return Err(crate::request::unknown(
            "field in the body",
            &["value", "description", "ttl_seconds"],
        ));
    }
    Ok((value, description, ttl))
}

fn ttl_member(v: Option<Value>) -> Result<Option<i64>, CoreError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| CoreError::invalid("`ttl_seconds` must be an integer")),
        Some(_) => Err(CoreError::invalid("`ttl_seconds` must be an integer")),
    }
}

async fn ops_inner(
    state: AppState,
    store: StoreKind,
    ctx: RequestContext,
    req: Request,
) -> Result<Response, CoreError> {
    let principal = authenticate(&state, &req, &ctx).await?;
    // Either scope may suffice (a read-only request needs only read); the service decides
    // exactly once the ops are known.
    let p = principal.installation()?;
    if !p.has(tresor_core::model::Scope::Read(store)) {
        state
            .service
            .precheck_store_access(&principal, store, true)?;
    }
    let key = decode_key(raw_key(req.uri().path(), store, true))?;
    parse_query(req.uri().query(), &[])?;
    let headers = req.headers().clone();
    let cond = condition(&headers)?;
    let limits = state.service.limits().clone();
    let body = read_body(
        &headers,
        req.into_body(),
        Media::Json,
        limits.max_body_bytes(),
    )
    .await?;
    let doc = parse_strict(&body, limits.max_depth + 3)?;
    let Value::Object(mut obj) = doc else {
        return Err(CoreError::invalid("the body must be a JSON object"));
    };
    let ops_value = obj
        .shift_remove("ops")
        .ok_or_else(|| CoreError::invalid("the body has no `ops`"))?;
    let ttl = ttl_member(obj.shift_remove("ttl_seconds"))?;
    if !obj.is_empty() {
        return Err(crate::request::unknown(
            "field in the body",
            &["ops", "ttl_seconds"],
        ));
    }
    let ops = tresor_core::field_ops::parse_ops(ops_value)?;
    let out = state
        .service
        .record_op(
            &principal,
            &ctx,
            request(store, key, RecordOp::Ops { ops, ttl }, cond, false),
        )
        .await?;
    let record = out.record.as_ref().map(|r| meta_json(r.meta()));
    let body = serde_json::json!({
        "record": record.map(serde_json::to_value).transpose().map_err(|e| CoreError::internal(e.to_string()))?,
        "results": out.results.unwrap_or_default(),
    });
    json_answer(
        StatusCode::OK,
        &body,
        out.record.as_ref().map(|r| r.meta().version),
    )
}

async fn list_inner(
    state: AppState,
    store: StoreKind,
    ctx: RequestContext,
    req: Request,
) -> Result<Response, CoreError> {
    let principal = authenticate(&state, &req, &ctx).await?;
    state
        .service
        .precheck_store_access(&principal, store, false)?;
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
        .list_records(
            &principal,
            &ctx,
            store,
            q.get("prefix").map(String::as_str).unwrap_or(""),
            q.get("cursor").map(String::as_str),
            limit,
        )
        .await?;
    let items: Vec<_> = page.items.iter().map(meta_json).collect();
    let body = serde_json::json!({
        "items": serde_json::to_value(items).map_err(|e| CoreError::internal(e.to_string()))?,
        "next_cursor": page.next_cursor,
    });
    json_answer(StatusCode::OK, &body, None)
}

async fn batch_inner(
    state: AppState,
    ctx: RequestContext,
    req: Request,
) -> Result<Response, CoreError> {
    let principal = authenticate(&state, &req, &ctx).await?;
    principal.installation()?;
    parse_query(req.uri().query(), &[])?;
    let headers = req.headers().clone();
    let limits = state.service.limits().clone();
    let body = read_body(
        &headers,
        req.into_body(),
        Media::Json,
        limits.max_batch_body_bytes(),
    )
    .await?;
    let doc = parse_strict(&body, limits.max_depth + 3)?;
    let Value::Object(mut obj) = doc else {
        return Err(CoreError::invalid("the body must be a JSON object"));
    };
    let atomic = match obj.shift_remove("atomic") {
        Some(Value::Bool(b)) => b,
        _ => return Err(CoreError::invalid("`atomic` (true or false) is required")),
    };
    let Some(Value::Array(items)) = obj.shift_remove("ops") else {
        return Err(CoreError::invalid("`ops` must be an array of 1 to 100 ops"));
    };
    if !obj.is_empty() {
        return Err(crate::request::unknown(
            "field in the body",
            &["atomic", "ops"],
        ));
    }
    if items.is_empty() || items.len() > limits.max_batch_ops {
        return Err(CoreError::invalid(format!(
            "`ops` must hold 1 to {} ops",
            limits.max_batch_ops
        )));
    }
    let ops = items
        .into_iter()
        .enumerate()
        .map(|(i, v)| parse_batch_op(v).map_err(|e| prefix_op(i, e)))
        .collect::<Result<Vec<_>, _>>()?;
    match state.service.batch(&principal, &ctx, ops, atomic).await {
        Ok(results) => {
            let mut out = Vec::with_capacity(results.len());
            for r in results {
                out.push(batch_result(r, &ctx.request_id)?);
            }
            json_answer(StatusCode::OK, &serde_json::json!({ "results": out }), None)
        }
        Err((index, e)) => {
            let mut err = ApiError::new(e, &ctx.request_id);
            err.op_index = index;
            Ok(err.into_response())
        }
    }
}

fn prefix_op(i: usize, e: CoreError) -> CoreError {
    match e {
        CoreError::InvalidRequest(m) => CoreError::InvalidRequest(format!("op {i}: {m}")),
        CoreError::PayloadTooLarge(m) => CoreError::PayloadTooLarge(format!("op {i}: {m}")),
        other => other,
    }
}

fn batch_result(r: Result<OpOutput, CoreError>, request_id: &str) -> Result<Value, CoreError> {
    match r {
        Ok(out) if out.status == 404 => {
            // A get or exists of a missing key: a result, not a failure, with the error body a
            // single request would have had.
            let body = crate::error::error_body(
                tresor_core::ErrorCode::NotFound,
                "no such key",
                request_id,
                None,
            );
            Ok(serde_json::json!({ "status": 404, "error": body["error"] }))
        }
        Ok(out) => {
            let mut obj = Map::new();
            obj.insert("status".into(), out.status.into());
            if let Some(rec) = &out.record {
                let j: &RecordOut = rec;
                obj.insert(
                    "record".into(),
                    serde_json::to_value(out_json(j)?)
                        .map_err(|e| CoreError::internal(e.to_string()))?,
                );
            }
            Ok(Value::Object(obj))
        }
        Err(e) => {
            let status = e.code().http_status();
            let body = crate::error::error_body(e.code(), &e.public_message(), request_id, None);
            Ok(serde_json::json!({ "status": status, "error": body["error"] }))
        }
    }
}

#[doc(hidden)]
pub fn parse_batch_op(v: Value) -> Result<OpRequest, CoreError> {
    let Value::Object(mut o) = v else {
        return Err(CoreError::invalid("each op must be an object"));
    };
    let take_str = |o: &mut Map<String, Value>, name: &str| -> Result<String, CoreError> {
        match o.shift_remove(name) {
            Some(Value::String(s)) => Ok(s),
            _ => Err(CoreError::invalid(format!("`{name}` must be a string"))),
        }
    };
    let op = take_str(&mut o, "op")?;
    let store_name = take_str(&mut o, "store")?;
    let store = StoreKind::parse(&store_name).ok_or_else(|| {
        crate::request::unknown("store", &["secrets", "settings", "kv", "shared"])
    })?;
    let key = RecordKey::parse(&take_str(&mut o, "key")?)?;
    let value = o.shift_remove("value");
    let description = match o.shift_remove("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(CoreError::invalid("`description` must be a string")),
    };
    let ttl = ttl_member(o.shift_remove("ttl_seconds"))?;
    let condition = match o.shift_remove("if_version") {
        None | Some(Value::Null) => Condition::None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => Condition::IfNoneMatch,
            Some(v) => Condition::IfMatch(v),
            None => {
                return Err(CoreError::invalid(
                    "`if_version` must be a non-negative integer",
                ));
            }
        },
        Some(_) => {
            return Err(CoreError::invalid(
                "`if_version` must be a non-negative integer",
            ));
        }
    };
    if !o.is_empty() {
        return Err(crate::request::unknown(
            "field in an op",
            &[
                "op",
                "store",
                "key",
                "value",
                "description",
                "ttl_seconds",
                "if_version",
            ],
        ));
    }
    // Members an op does not use are refused rather than silently ignored.
    let has_description = description.is_some();
    let has_ttl = ttl.is_some();
    let no_value = |v: &Option<Value>| -> Result<(), CoreError> {
        if v.is_some() || has_description || has_ttl {
            Err(CoreError::invalid(format!(
                "`{op}` takes no `value`, `description` or `ttl_seconds`"
            )))
        } else {
            Ok(())
        }
    };
    let rop = match op.as_str() {
        "get" => {
            no_value(&value)?;
            RecordOp::Get { fields: None }
        }
        "exists" => {
            no_value(&value)?;
            RecordOp::Exists
        }
        "delete" => {
            no_value(&value)?;
            RecordOp::Delete { fields: None }
        }
        "put" => RecordOp::Put {
            value: value.ok_or_else(|| CoreError::invalid("`put` needs a `value`"))?,
            description,
            ttl,
        },
        "patch" if has_description => {
            return Err(CoreError::invalid("`patch` takes no `description`"));
        }
        "patch" => RecordOp::Patch {
            patch: value
                .ok_or_else(|| CoreError::invalid("`patch` needs a `value` (the merge patch)"))?,
            ttl,
        },
        _ => {
            return Err(crate::request::unknown(
                "op",
                &["get", "exists", "put", "patch", "delete"],
            ));
        }
    };
    Ok(OpRequest {
        store,
        key,
        op: rop,
        condition,
        return_previous: false,
    })
}
