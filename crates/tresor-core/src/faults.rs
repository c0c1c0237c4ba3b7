//! Fault injection, for tests only: compiled with the feature `failpoints`, which no release
//! build has. The storage engines name each step of a write (begin, every statement that
//! writes, commit, and the moment after the commit before anyone is answered) with a fail point
//! of the `fail` crate; a test arms one through the admin route that `tresor-server` has with
//! the same feature, and the point's argument says what happens at that step:
//!
//! - `crash`: the process aborts there and then, with the transaction as far as it got, as a
//!   power cut or `kill -9` would leave it;
//! - `io`: the step fails with the I/O error the operating system would report there (SQLite's
//!   `SQLITE_IOERR_WRITE` for a statement, `SQLITE_IOERR_FSYNC` for a commit; a lost
//!   connection for PostgreSQL).
//!
//! Every point is listed in [`POINTS`]; `tests/faults.rs` in the `tresor` crate arms each one
//! at each of its hits during each mutating operation.

pub use fail;

/// Every fail point the storage engines have, by name.
pub const POINTS: &[&str] = &[
    "sqlite::begin",
    "sqlite::write",
    "sqlite::commit",
    "sqlite::acknowledge",
    "postgres::begin",
    "postgres::commit",
    "postgres::acknowledge",
];

/// An armed point's answer, when it does not end the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// Fail the step with an I/O error.
    Io,
}

/// Carries out what an armed `point` asks (`arg` is its `return(...)` argument): aborts the
/// process for `crash`, returns [`Injected::Io`] for `io`.
///
/// # Panics
///
/// On any other argument: the test that armed the point is wrong.
pub fn strike(point: &str, arg: Option<String>) -> Injected {
    match arg.as_deref() {
        Some("crash") => {
            // Straight to stderr: the log pipeline may buffer, and nothing after this line runs.
            eprintln!("fail point {point}: crash");
            std::process::abort()
        }
        Some("io") => {
            tracing::warn!(point, "fail point: injected I/O error");
            Injected::Io
        }
        other => panic!("fail point {point}: unknown action {other:?} (crash, io)"),
    }
}
