//! JSON shapes of answers: `RecordMeta`, `Record` (the stored value spliced in as it is, never
//! re-parsed into a tree), and the error body inside batch results.

use serde::Serialize;
use serde_json::value::RawValue;
use tresor_core::CoreError;
use tresor_core::model::format_millis;
use tresor_core::service::{RecordMeta, RecordOut, RecordWithValue};

#[derive(Serialize)]
pub struct MetaJson<'a> {
    key: &'a str,
    version: u64,
    description: Option<&'a str>,
    created_at: String,
    updated_at: String,
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a RawValue>,
    /// `?return=previous`: the record the write replaced, or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    previous: Option<Option<Box<MetaJson<'a>>>>,
}

/// The body of a `DELETE ?return=previous`.
#[derive(Serialize)]
pub struct PreviousOnly<'a> {
    pub previous: Option<MetaJson<'a>>,
}

impl<'a> MetaJson<'a> {
    pub fn with_previous(mut self, previous: Option<MetaJson<'a>>) -> MetaJson<'a> {
        self.previous = Some(previous.map(Box::new));
        self
    }
}

pub fn meta_json(m: &RecordMeta) -> MetaJson<'_> {
    MetaJson {
        key: &m.key,
        version: m.version,
        description: m.description.as_deref(),
        created_at: format_millis(m.created_at),
        updated_at: format_millis(m.updated_at),
        expires_at: m.expires_at.map(format_millis),
        value: None,
        previous: None,
    }
}

pub fn record_json(r: &RecordWithValue) -> Result<MetaJson<'_>, CoreError> {
    let mut j = meta_json(&r.meta);
    // The stored bytes are compact JSON that this server wrote; borrowing them as a RawValue
    // splices them into the answer without building a tree.
    let raw: &RawValue = serde_json::from_slice(&r.value).map_err(|_| CoreError::Integrity)?;
    j.value = Some(raw);
    Ok(j)
}

pub fn out_json(r: &RecordOut) -> Result<MetaJson<'_>, CoreError> {
    match r {
        RecordOut::Meta(m) => Ok(meta_json(m)),
        RecordOut::Full(f) => record_json(f),
    }
}

/// Serializes to bytes, mapping the (impossible in practice) failure to an internal error.
pub fn to_vec<T: Serialize>(v: &T) -> Result<Vec<u8>, CoreError> {
    serde_json::to_vec(v).map_err(|e| CoreError::internal(format!("json encoding failed: {e}")))
}
