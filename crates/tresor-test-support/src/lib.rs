//! Test support for tresor, used only by tests: the backend conformance suite that every storage
//! backend runs unchanged ([`conformance`]), [`server`], which spawns the real binary for
//! black-box tests, and [`provider`], a fake OAuth 2.0 provider and upstream API on loopback that
//! plays the other side of tresor's credential proxy and OAuth flows. [`postgres`] starts a
//! throwaway PostgreSQL once per test process and hands out fresh databases on it, for the
//! PostgreSQL backend's tests and for servers started on PostgreSQL. [`process`] runs the binary
//! with exactly the command line a test gives (what [`server`] is built on).

pub mod conformance;
pub mod postgres;
pub mod process;
pub mod provider;
pub mod server;

/// Every scope an app's manifest may ask for (the contract's list): an app with all of them
/// reaches every store and every credential route.
pub const ALL_SCOPES: [&str; 11] = [
    "secrets:read",
    "secrets:write",
    "settings:read",
    "settings:write",
    "kv:read",
    "kv:write",
    "shared:read",
    "shared:write",
    "credentials:read",
    "credentials:store",
    "credentials:use",
];
