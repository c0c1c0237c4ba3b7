//! The pure parts of the credential request proxy: building the upstream URL from the provider's
//! base URL and the app's path and query ([`target`]), and judging where its host leads, with one
//! checked DNS resolution whose addresses the caller must pin ([`address`]).

pub mod address;
pub mod forward;
pub mod target;
pub mod token;

pub use address::{AddressClass, check_ip, classify, classify_host, resolve_checked};
pub use target::{
    build_target, default_allowed_hosts, fill_base_url, host_allowed, validate_allowed_host_entry,
};
