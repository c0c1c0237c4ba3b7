//! Audit events: one per data access, admin action and failed authentication. They name who,
//! what and the outcome, never a value, a secret or a token.

use serde::Serialize;

use crate::model::Millis;

/// One audit event, as stored and as served by `GET /v1/admin/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// Assigned by the backend when stored (0 before).
    pub id: i64,
    #[serde(serialize_with = "serialize_time")]
    pub time: Millis,
    pub request_id: String,
    pub token_id: Option<String>,
    pub app_id: Option<String>,
    pub account_id: Option<String>,
    pub installation_id: Option<String>,
    pub operation: String,
    pub store: Option<String>,
    pub key: Option<String>,
    pub status: u16,
    pub remote_addr: Option<String>,
}

fn serialize_time<S: serde::Serializer>(t: &Millis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::model::format_millis(*t))
}

/// A page request of audit events, oldest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub installation_id: Option<String>,
    pub account_id: Option<String>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
    /// Only events with an id greater than this (the cursor).
    pub after: Option<i64>,
    pub limit: usize,
}

/// Where a request came from, for its audit event.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub request_id: String,
    pub remote_addr: Option<String>,
}
