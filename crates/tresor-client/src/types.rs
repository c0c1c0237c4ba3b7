//! The contract's documents (`RecordMeta`, `Record`) and the options and outcomes of the
//! record-store calls.
//!
//! Deserialization never uses `#[serde(flatten)]`: with serde_json's `arbitrary_precision`
//! (which keeps numbers exactly as written) flattened fields fail to decode numbers.

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::error::{Error, Result, decode_error};

/// The four record stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    Secrets,
    Settings,
    Kv,
    Shared,
}

impl Store {
    /// Every store, in the contract's order.
    pub const ALL: [Store; 4] = [Store::Secrets, Store::Settings, Store::Kv, Store::Shared];

    /// The store's path segment and scope prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Store::Secrets => "secrets",
            Store::Settings => "settings",
            Store::Kv => "kv",
            Store::Shared => "shared",
        }
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Store {
    type Err = Error;

    fn from_str(s: &str) -> Result<Store> {
        Store::ALL
            .into_iter()
            .find(|store| store.as_str() == s)
            .ok_or_else(|| Error::InvalidArgument(format!("unknown store {s:?}")))
    }
}

/// A record's metadata: what listings return, and what writes answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    pub key: String,
    pub version: u64,
    #[serde(default)]
    pub description: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// A record: its metadata and its value. On the wire the metadata fields and `value` sit side
/// by side in one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<T> {
    pub meta: RecordMeta,
    pub value: T,
}

impl<T> Record<T> {
    /// The same record with its value transformed.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Record<U> {
        Record {
            meta: self.meta,
            value: f(self.value),
        }
    }
}

impl Record<Value> {
    /// Converts the value into a typed one.
    pub fn into_typed<T: DeserializeOwned>(self) -> Result<Record<T>> {
        let value =
            serde_json::from_value(self.value).map_err(|e| decode_error("record value", &e))?;
        Ok(Record {
            meta: self.meta,
            value,
        })
    }
}

impl<T: Serialize> Serialize for Record<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let meta = &self.meta;
        let mut map = serializer.serialize_map(Some(7))?;
        map.serialize_entry("key", &meta.key)?;
        map.serialize_entry("version", &meta.version)?;
        map.serialize_entry("description", &meta.description)?;
        map.serialize_entry("created_at", &meta.created_at)?;
        map.serialize_entry("updated_at", &meta.updated_at)?;
        map.serialize_entry("expires_at", &meta.expires_at)?;
        map.serialize_entry("value", &self.value)?;
        map.end()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Record<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Record<T>, D::Error> {
        #[derive(Deserialize)]
        struct Wire<T> {
            key: String,
            version: u64,
            #[serde(default)]
            description: Option<String>,
            created_at: String,
            updated_at: String,
            #[serde(default)]
            expires_at: Option<String>,
            value: T,
        }
        let wire = Wire::<T>::deserialize(deserializer)?;
        Ok(Record {
            meta: RecordMeta {
                key: wire.key,
                version: wire.version,
                description: wire.description,
                created_at: wire.created_at,
                updated_at: wire.updated_at,
                expires_at: wire.expires_at,
            },
            value: wire.value,
        })
    }
}

/// Options of [`crate::StoreClient::put_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    pub description: Option<String>,
    /// Expire the record after this many seconds (1..=3,153,600,000). Without it, a PUT removes
    /// any earlier expiry.
    pub ttl_seconds: Option<u64>,
    /// Write only if the current version is this one (`If-Match: "N"`).
    pub if_match: Option<u64>,
    /// Write only if the key does not exist (`If-None-Match: *`).
    pub if_none_match: bool,
    /// Ask for the record the write replaced (`?return=previous`; needs the read scope too).
    pub return_previous: bool,
}

/// The answer to a PUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    pub meta: RecordMeta,
    /// `true` for 201 (the key did not exist, or had expired), `false` for 200.
    pub created: bool,
    /// With `return_previous`: the replaced record, `None` when there was none.
    pub previous: Option<Record<Value>>,
}

/// Options of [`crate::StoreClient::patch_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchOptions {
    pub if_match: Option<u64>,
    /// Set a new expiry; without it PATCH keeps the current one.
    pub ttl_seconds: Option<u64>,
    pub return_previous: bool,
}

/// The answer to a PATCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchOutcome {
    pub meta: RecordMeta,
    /// The patched value; `None` when the token has only the write scope (the server then
    /// answers metadata only).
    pub value: Option<Value>,
    /// With `return_previous`: the record before the patch, `None` when there was none.
    pub previous: Option<Record<Value>>,
}

/// Options of [`crate::StoreClient::delete_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    pub if_match: Option<u64>,
    /// Remove only these top-level fields of an object value; empty deletes the record.
    pub fields: Vec<String>,
    pub return_previous: bool,
}

/// Options of [`crate::StoreClient::ops_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpsOptions {
    pub if_match: Option<u64>,
    /// Set a new expiry; without it the current one is kept.
    pub ttl_seconds: Option<u64>,
}

/// The answer to a field-ops request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OpsOutcome {
    /// The record after the ops; `None` for a read-only request on a missing key.
    #[serde(default)]
    pub record: Option<RecordMeta>,
    /// One entry per op, in order.
    pub results: Vec<Value>,
}

/// A PUT or PATCH answer: metadata, maybe a value, maybe the previous record.
#[derive(Deserialize)]
pub(crate) struct WriteAnswer {
    pub key: String,
    pub version: u64,
    #[serde(default)]
    pub description: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub value: Option<Value>,
    #[serde(default)]
    pub previous: Option<Record<Value>>,
}

impl WriteAnswer {
    pub(crate) fn split(self) -> (RecordMeta, Option<Value>, Option<Record<Value>>) {
        let meta = RecordMeta {
            key: self.key,
            version: self.version,
            description: self.description,
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
        };
        (meta, self.value, self.previous)
    }
}

/// The body of a DELETE with `?return=previous`.
#[derive(Deserialize)]
pub(crate) struct DeleteAnswer {
    #[serde(default)]
    pub previous: Option<Record<Value>>,
}

/// One page of a listing.
#[derive(Deserialize)]
pub(crate) struct ListAnswer<T> {
    pub items: Vec<T>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_decodes_with_exact_numbers_and_round_trips() {
        let text = r#"{"key":"a/b","version":7,"description":null,"created_at":"2026-01-01T00:00:00.000Z","updated_at":"2026-01-01T00:00:01.000Z","expires_at":null,"value":{"n":12345678901234567890123,"f":1.50}}"#;
        let record: Record<Value> = serde_json::from_str(text).unwrap();
        assert_eq!(record.meta.version, 7);
        assert_eq!(record.meta.key, "a/b");
        assert_eq!(serde_json::to_string(&record).unwrap(), text);
    }

    #[test]
    fn record_decodes_into_a_typed_value() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Token {
            token: String,
            site_id: u32,
        }
        let text = r#"{"key":"t","version":1,"created_at":"x","updated_at":"y","value":{"token":"abc","site_id":123}}"#;
        let record: Record<Token> = serde_json::from_str(text).unwrap();
        assert_eq!(record.value.site_id, 123);
        assert_eq!(record.meta.description, None);
    }

    #[test]
    fn store_names() {
        for store in Store::ALL {
            assert_eq!(store.as_str().parse::<Store>().unwrap(), store);
            assert_eq!(
                serde_json::to_value(store).unwrap(),
                Value::String(store.to_string())
            );
        }
        assert!("credentials".parse::<Store>().is_err());
    }
}
