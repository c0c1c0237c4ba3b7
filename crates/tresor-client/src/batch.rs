//! `POST /v1/batch`: the ops ([`BatchOp`]) and their per-op results ([`BatchResult`]).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::error::{ApiErrorBody, Error, Result, decode_error};
use crate::types::{Record, RecordMeta, Store};

/// What a batch op does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchOpKind {
    Get,
    Exists,
    Put,
    Patch,
    Delete,
}

/// One op of a batch; serializes to
/// `{"op", "store", "key", "value"?, "description"?, "ttl_seconds"?, "if_version"?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchOp {
    op: BatchOpKind,
    store: Store,
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    if_version: Option<u64>,
}

impl BatchOp {
    /// Read a record (result 200 with the `Record`, or 404).
    pub fn get(store: Store, key: impl Into<String>) -> BatchOp {
        BatchOp::new(BatchOpKind::Get, store, key, None)
    }

    /// Test for a record (200 or 404, no record).
    pub fn exists(store: Store, key: impl Into<String>) -> BatchOp {
        BatchOp::new(BatchOpKind::Exists, store, key, None)
    }

    /// Create or replace a record (201/200 with `RecordMeta`).
    pub fn put(store: Store, key: impl Into<String>, value: Value) -> BatchOp {
        BatchOp::new(BatchOpKind::Put, store, key, Some(value))
    }

    /// Apply a JSON merge patch (200 with the `Record`).
    pub fn patch(store: Store, key: impl Into<String>, patch: Value) -> BatchOp {
        BatchOp::new(BatchOpKind::Patch, store, key, Some(patch))
    }

    /// Delete a record (204).
    pub fn delete(store: Store, key: impl Into<String>) -> BatchOp {
        BatchOp::new(BatchOpKind::Delete, store, key, None)
    }

    /// Only if the current version is `version`; `0` means "only if the key does not exist".
    pub fn if_version(mut self, version: u64) -> BatchOp {
        self.if_version = Some(version);
        self
    }

    /// Expire the record after `seconds`.
    pub fn ttl_seconds(mut self, seconds: u64) -> BatchOp {
        self.ttl_seconds = Some(seconds);
        self
    }

    /// Set the record's description.
    pub fn description(mut self, description: impl Into<String>) -> BatchOp {
        self.description = Some(description.into());
        self
    }

    /// What the op does.
    pub fn kind(&self) -> BatchOpKind {
        self.op
    }

    fn new(op: BatchOpKind, store: Store, key: impl Into<String>, value: Option<Value>) -> Self {
        BatchOp {
            op,
            store,
            key: key.into(),
            value,
            description: None,
            ttl_seconds: None,
            if_version: None,
        }
    }
}

/// The result of one op.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BatchResult {
    /// The HTTP status the op would have had on its own.
    pub status: u16,
    /// `Record` for get and patch, `RecordMeta` for put.
    #[serde(default)]
    pub record: Option<Value>,
    #[serde(default, deserialize_with = "error_body")]
    pub error: Option<ApiErrorBody>,
}

impl BatchResult {
    /// `true` for a 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The op's record (of a get or patch) with a typed value; `None` when there is none (404,
    /// delete, exists).
    pub fn record_as<T: DeserializeOwned>(&self) -> Result<Option<Record<T>>> {
        self.decode_record("batch record")
    }

    /// The op's record metadata (of a get, put or patch).
    pub fn meta(&self) -> Result<Option<RecordMeta>> {
        self.decode_record("batch record metadata")
    }

    /// The op's failure as an [`Error::Api`] (`None` for a success or a plain 404 of a read).
    pub fn error(&self) -> Option<Error> {
        self.error
            .as_ref()
            .map(|body| body.clone().into_error(self.status))
    }

    fn decode_record<T: DeserializeOwned>(&self, what: &str) -> Result<Option<T>> {
        match &self.record {
            None | Some(Value::Null) => Ok(None),
            Some(record) => serde_json::from_value(record.clone())
                .map(Some)
                .map_err(|e| decode_error(what, &e)),
        }
    }
}

/// A per-op `error` may be the standard body `{"error": {...}}` or its inside; both are read.
fn error_body<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<ApiErrorBody>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    let inner = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(mut map)) if map.get("error").is_some_and(Value::is_object) => {
            map.remove("error").unwrap_or_default()
        }
        Some(other) => other,
    };
    serde_json::from_value(inner)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn batch_ops_serialize_as_the_contract_says() {
        let table = [
            (
                BatchOp::get(Store::Secrets, "a/b"),
                r#"{"op":"get","store":"secrets","key":"a/b"}"#,
            ),
            (
                BatchOp::exists(Store::Kv, "k"),
                r#"{"op":"exists","store":"kv","key":"k"}"#,
            ),
            (
                BatchOp::put(Store::Settings, "s", json!({"x": 1}))
                    .description("d")
                    .ttl_seconds(60)
                    .if_version(0),
                r#"{"op":"put","store":"settings","key":"s","value":{"x":1},"description":"d","ttl_seconds":60,"if_version":0}"#,
            ),
            (
                BatchOp::patch(Store::Shared, "p", json!({"x": null})).if_version(7),
                r#"{"op":"patch","store":"shared","key":"p","value":{"x":null},"if_version":7}"#,
            ),
            (
                BatchOp::delete(Store::Kv, "d"),
                r#"{"op":"delete","store":"kv","key":"d"}"#,
            ),
        ];
        for (op, expected) in table {
            assert_eq!(serde_json::to_string(&op).unwrap(), expected);
        }
    }

    #[test]
    fn batch_results_decode() {
        let text = r#"[
            {"status": 200, "record": {"key":"k","version":3,"description":null,"created_at":"c","updated_at":"u","expires_at":null,"value":"v"}},
            {"status": 404, "error": {"error": {"code": "not_found", "message": "no such key", "request_id": "r"}}},
            {"status": 412, "error": {"code": "precondition_failed", "message": "m", "request_id": "r"}},
            {"status": 204}
        ]"#;
        let results: Vec<BatchResult> = serde_json::from_str(text).unwrap();
        let record = results[0].record_as::<String>().unwrap().unwrap();
        assert_eq!(record.value, "v");
        assert_eq!(record.meta.version, 3);
        assert!(results[0].is_success() && results[0].error().is_none());
        assert!(results[1].error().unwrap().is_not_found());
        assert!(results[2].error().unwrap().is_precondition_failed());
        assert!(results[3].is_success());
        assert_eq!(results[3].meta().unwrap(), None);
    }
}
