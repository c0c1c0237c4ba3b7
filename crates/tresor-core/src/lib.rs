//! The tresor domain: tenancy, scopes, records, limits, versions, TTL, merge patch, field ops,
//! batches and audit events, the [`service::Service`] that enforces every rule, and the
//! [`backend::Backend`] trait that storage engines implement.

pub mod audit;
pub mod backend;
pub mod credentials;
pub mod dump;
pub mod error;
#[cfg(feature = "failpoints")]
pub mod faults;
pub mod field_ops;
pub mod json;
pub mod key_provider;
pub mod keyring;
pub mod merge_patch;
pub mod model;
pub mod sealed_rows;
pub mod service;

pub use error::{CoreError, ErrorCode, Result};

/// A fail point that injects a crash or an I/O error: `fault_point!("name", io_error)` returns
/// `io_error` from the enclosing function when the point is armed with `return(io)`, and aborts
/// the process with `return(crash)` (see the module `faults`, which exists with the feature
/// `failpoints`). Expands to nothing unless the calling crate's feature `failpoints` is on.
#[macro_export]
macro_rules! fault_point {
    ($name:literal, $io:expr) => {
        #[cfg(feature = "failpoints")]
        $crate::faults::fail::fail_point!($name, |arg| {
            let $crate::faults::Injected::Io = $crate::faults::strike($name, arg);
            $io
        });
    };
}
