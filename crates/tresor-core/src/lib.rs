//! The tresor domain: tenancy, scopes, records, limits, versions, TTL, merge patch, field ops,
//! batches and audit events, the [`service::Service`] that enforces every rule, and the
//! [`backend::Backend`] trait that storage engines implement.

pub mod audit;
pub mod backend;
pub mod credentials;
pub mod dump;
pub mod error;
pub mod field_ops;
pub mod json;
pub mod keyring;
pub mod merge_patch;
pub mod model;
pub mod service;

pub use error::{CoreError, ErrorCode, Result};
