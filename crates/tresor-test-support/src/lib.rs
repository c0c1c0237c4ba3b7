//! Test support for tresor, used only by tests: the backend conformance suite that every storage
//! backend runs unchanged ([`conformance`]), [`server`], which spawns the real binary for
//! black-box tests, and [`provider`], a fake OAuth 2.0 provider and upstream API on loopback that
//! plays the other side of tresor's credential proxy and OAuth flows.

pub mod conformance;
pub mod provider;
pub mod server;
