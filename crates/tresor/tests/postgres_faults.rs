//! The fault-injection suite of `faults.rs` on PostgreSQL: this binary's name starts with
//! `postgres_`, which puts every server on a fresh database of the throwaway PostgreSQL (see
//! `tresor_test_support::server`), and the suite then arms the PostgreSQL backend's fail points
//! (after `BEGIN`, before `COMMIT`, after `COMMIT`).

#[path = "faults.rs"]
mod faults;
