//! `PUT /v1/admin/failpoints/{name}` and `DELETE /v1/admin/failpoints/{name}`: arming the
//! storage engines' fail points from a test (see `tresor_core::faults`). Compiled only with the
//! feature `failpoints`, which only test builds have; a release build has no such route (404).
//! Admin only, like every admin route.
//!
//! The body of a PUT is `{"actions": "…"}` in the `fail` crate's syntax, e.g.
//! `"2*off->1*return(crash)"`: let two hits pass, crash at the third, pass afterwards; or
//! `{"count": true}`: count the point's hits from now on, injecting nothing, and
//! `GET /v1/admin/failpoints/{name}` answers `{"hits": n}`. A test counts the hits of an
//! operation this way, then arms each of them in turn.
//!
//! Before it arms a point, a PUT waits until the audit events of earlier reads are committed,
//! so that their commit does not take a hit meant for the operation that follows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tresor_core::CoreError;
use tresor_core::audit::AuditQuery;
use tresor_core::faults::{POINTS, fail};
use tresor_core::json::parse_strict;

use crate::AppState;
use crate::error::ApiError;
use crate::records::{authenticate, ctx_of};
use crate::request::{Media, read_body};

pub(crate) async fn route(state: AppState, req: Request) -> Response {
    let rid = ctx_of(&req).request_id;
    match inner(state, req).await {
        Ok(Some(hits)) => axum::Json(json!({ "hits": hits })).into_response(),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => ApiError::new(e, &rid).into_response(),
    }
}

/// The hit counters of points in counting mode.
static HITS: LazyLock<Mutex<HashMap<&'static str, Arc<AtomicU64>>>> =
    LazyLock::new(Default::default);

fn counter(name: &'static str) -> Arc<AtomicU64> {
    HITS.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(name)
        .or_default()
        .clone()
}

async fn inner(state: AppState, req: Request) -> Result<Option<u64>, CoreError> {
    let ctx = ctx_of(&req);
    authenticate(&state, &req, &ctx).await?.require_admin()?;
    let name = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .and_then(|n| POINTS.iter().find(|p| **p == n))
        .ok_or_else(|| CoreError::NotFound(format!("no such fail point; known: {POINTS:?}")))?;
    match *req.method() {
        Method::DELETE => {
            fail::remove(name);
            return Ok(None);
        }
        Method::GET => return Ok(Some(counter(name).load(Ordering::SeqCst))),
        Method::PUT => {}
        _ => return Err(CoreError::invalid("fail points take PUT, GET or DELETE")),
    }
    let headers = req.headers().clone();
    let body = read_body(&headers, req.into_body(), Media::Json, 4096).await?;
    let body = parse_strict(&body, 4)?;
    // Reading the audit log commits every event queued before it.
    let drain = AuditQuery {
        limit: 1,
        ..AuditQuery::default()
    };
    state.service.backend().audit_query(&drain).await?;
    if body["count"] == true {
        let hits = counter(name);
        hits.store(0, Ordering::SeqCst);
        return fail::cfg_callback(*name, move || {
            hits.fetch_add(1, Ordering::SeqCst);
        })
        .map(|()| None)
        .map_err(CoreError::InvalidRequest);
    }
    let actions = body["actions"].as_str().ok_or_else(|| {
        CoreError::invalid("the body is {\"actions\": \"…\"} or {\"count\": true}")
    })?;
    fail::cfg(*name, actions)
        .map(|()| None)
        .map_err(CoreError::InvalidRequest)
}
