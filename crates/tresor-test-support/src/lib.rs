//! Test support for tresor, used only by tests: the backend conformance suite that every storage
//! backend runs unchanged ([`conformance`]), and [`server`], which spawns the real binary for
//! black-box tests.

pub mod conformance;
pub mod server;
