//! The one place where SQLite errors become [`CoreError`]s, by SQLite result code: a full disk is
//! 507, a busy, locked, unreadable or unopenable database is 503, corruption and anything else
//! is an internal error whose detail stays in the log.

use rusqlite::ErrorCode;
use tresor_core::CoreError;

/// Translates a rusqlite error. Takes a reference so one failed `COMMIT` can answer every request
/// of its batch with its own copy of the error.
pub(crate) fn from_sqlite(e: &rusqlite::Error) -> CoreError {
    let rusqlite::Error::SqliteFailure(failure, _) = e else {
        // Conversion and API errors: the stored data or our own SQL is not what we expect.
        return CoreError::Internal(format!("sqlite: {e}"));
    };
    match failure.code {
        ErrorCode::DiskFull => CoreError::InsufficientStorage,
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
            CoreError::Unavailable("the database is busy".into())
        }
        ErrorCode::SystemIoFailure
        | ErrorCode::CannotOpen
        | ErrorCode::PermissionDenied
        | ErrorCode::ReadOnly
        | ErrorCode::FileLockingProtocolFailed
        | ErrorCode::NoLargeFileSupport
        | ErrorCode::OutOfMemory => {
            CoreError::Unavailable(format!("the database cannot be used ({:?})", failure.code))
        }
        ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
            CoreError::Internal(format!("the database is corrupt: {e}"))
        }
        // Every write checks what it needs before it inserts, and there is only one writer, so
        // a violated constraint is a bug in this crate rather than something a caller did.
        ErrorCode::ConstraintViolation => {
            CoreError::Internal(format!("a database constraint failed: {e}"))
        }
        _ => CoreError::Internal(format!("sqlite: {e}")),
    }
}

/// `.db()` on a rusqlite result: the `?`-friendly form of [`from_sqlite`].
pub(crate) trait SqlResultExt<T> {
    fn db(self) -> Result<T, CoreError>;
}

impl<T> SqlResultExt<T> for Result<T, rusqlite::Error> {
    fn db(self) -> Result<T, CoreError> {
        self.map_err(|e| from_sqlite(&e))
    }
}

/// The error a fail point injects in place of SQLite's (see `tresor_core::faults`).
#[cfg(feature = "failpoints")]
pub(crate) fn injected(code: std::ffi::c_int) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(code),
        Some("injected by a fail point".into()),
    )
}

/// A mutex whose holder panicked: the data behind it may be half-changed.
pub(crate) fn poisoned(what: &str) -> CoreError {
    CoreError::Internal(format!("the {what} lock was poisoned by a panic"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tresor_core::ErrorCode as Code;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn result_codes_map_to_contract_codes() {
        let check = |code: i32, want: Code| {
            assert_eq!(
                from_sqlite(&failure(code)).code(),
                want,
                "sqlite code {code}"
            );
        };
        check(rusqlite::ffi::SQLITE_FULL, Code::InsufficientStorage);
        check(rusqlite::ffi::SQLITE_BUSY, Code::Unavailable);
        check(rusqlite::ffi::SQLITE_LOCKED, Code::Unavailable);
        check(rusqlite::ffi::SQLITE_IOERR, Code::Unavailable);
        check(rusqlite::ffi::SQLITE_IOERR_FSYNC, Code::Unavailable);
        check(rusqlite::ffi::SQLITE_CANTOPEN, Code::Unavailable);
        check(rusqlite::ffi::SQLITE_CORRUPT, Code::Internal);
        check(rusqlite::ffi::SQLITE_NOTADB, Code::Internal);
        check(rusqlite::ffi::SQLITE_CONSTRAINT, Code::Internal);
        assert_eq!(
            from_sqlite(&rusqlite::Error::QueryReturnedNoRows).code(),
            Code::Internal
        );
    }
}
