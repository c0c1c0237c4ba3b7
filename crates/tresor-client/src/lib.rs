//! The Rust SDK for the tresor HTTP API, version 1: the record stores (`secrets`, `settings`,
//! `kv`, `shared`) with conditional writes, merge patches, field ops, batches, and the OCP-style
//! read-compute-write [`StoreClient::update`]; write-only credentials ([`Client::credentials`]),
//! whose secrets are sent but never answered; and the administration API.
//!
//! ```no_run
//! # async fn demo() -> tresor_client::Result<()> {
//! use serde::{Deserialize, Serialize};
//! use tresor_client::Client;
//!
//! #[derive(Serialize, Deserialize)]
//! struct AuthToken { token: String, site_id: u64 }
//!
//! // TRESOR_ADDR (default http://127.0.0.1:8200) and TRESOR_TOKEN.
//! let client = Client::from_env()?;
//! let secrets = client.secrets();
//! secrets.put("authToken", &AuthToken { token: "t".into(), site_id: 123 }).await?;
//! if let Some(record) = secrets.get::<AuthToken>("authToken").await? {
//!     println!("site {} at version {}", record.value.site_id, record.meta.version);
//! }
//! secrets.patch("authToken", &serde_json::json!({"token": "t2"})).await?;
//! # Ok(()) }
//! ```
//!
//! Every call answers either its result or an [`Error`]; [`Error::Api`] carries the contract's
//! [`ErrorCode`]. Reads of a missing key answer `None` rather than an error. The token never
//! appears in `Debug` output or in an error.

mod admin;
mod batch;
mod client;
mod credentials;
mod encode;
mod error;
mod ops;
mod store;
mod types;

pub use admin::{AdminClient, AuditPage, AuditQuery, Installed, IssuedToken, Upserted};
pub use batch::{BatchOp, BatchOpKind, BatchResult};
pub use client::{Client, ClientBuilder, DEFAULT_ADDR};
pub use credentials::{
    CredentialMeta, CredentialPages, CredentialPut, CredentialsClient, Owner, zeroize_json,
};
pub use encode::encode_key;
pub use error::{ApiErrorBody, Error, ErrorCode, Result};
pub use ops::{End, FieldOp};
pub use store::{Pages, StoreClient, UPDATE_ATTEMPTS};
pub use types::{
    DeleteOptions, OpsOptions, OpsOutcome, PatchOptions, PatchOutcome, PutOptions, PutOutcome,
    Record, RecordMeta, Store,
};
