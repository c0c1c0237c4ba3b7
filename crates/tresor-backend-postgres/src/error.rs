//! The one place where database errors become [`CoreError`]s, by SQLSTATE (as Quickwit's
//! metastore does): serialization failures and deadlocks are retried by the transaction runner,
//! a full disk is 507, a database that is down, restarting, read-only (a standby after a
//! failover) or out of connections is 503, and anything else is an internal error whose detail
//! stays in the log. Messages name the condition, never a parameter of the statement.

use tresor_core::CoreError;

/// What went wrong inside a write transaction: something to retry from the start, or a final
/// answer.
#[derive(Debug)]
pub(crate) enum TxError {
    /// The database aborted the transaction so that it can be run again: a serialization
    /// failure (40001), a deadlock (40P01), or a unique violation raced in by a concurrent
    /// writer (23505; the retry re-runs the existence checks and answers as the operation
    /// needs). The text is for the log.
    Retry(String),
    Core(CoreError),
}

impl TxError {
    /// The final answer: a retryable abort that is not retried is reported as unavailable.
    pub(crate) fn into_core(self) -> CoreError {
        match self {
            TxError::Core(e) => e,
            TxError::Retry(reason) => {
                CoreError::Unavailable(format!("the database aborted the statement ({reason})"))
            }
        }
    }
}

impl From<CoreError> for TxError {
    fn from(e: CoreError) -> TxError {
        TxError::Core(e)
    }
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> TxError {
        match retry_reason(&e) {
            Some(reason) => TxError::Retry(reason.to_owned()),
            None => TxError::Core(from_postgres(&e)),
        }
    }
}

impl From<deadpool_postgres::PoolError> for TxError {
    fn from(e: deadpool_postgres::PoolError) -> TxError {
        TxError::Core(from_pool(&e))
    }
}

/// Why a failed statement may simply be run again in a new transaction, if it may.
pub(crate) fn retry_reason(e: &tokio_postgres::Error) -> Option<&'static str> {
    match e.code()?.code() {
        "40001" => Some("serialization failure"),
        "40P01" => Some("deadlock detected"),
        "23505" => Some("unique violation by a concurrent writer"),
        _ => None,
    }
}

/// Translates a database or connection error outside the retry loop (or once retries are
/// exhausted).
pub(crate) fn from_postgres(e: &tokio_postgres::Error) -> CoreError {
    let Some(db) = e.as_db_error() else {
        // No SQLSTATE: TLS failed, the connection broke or timed out, or a value did not
        // convert.
        if let Some(tls) = tls_error(e) {
            return CoreError::Unavailable(format!(
                "TLS with the database failed ({tls}); check --database-ca-file and the host \
                 name in the database URL"
            ));
        }
        if e.is_closed() || is_io(e) {
            return CoreError::Unavailable("the database connection was lost".into());
        }
        return CoreError::Internal(format!("postgres: {e}"));
    };
    let code = db.code().code();
    match code {
        // disk_full
        "53100" => CoreError::InsufficientStorage,
        // insufficient_resources, out_of_memory, too_many_connections, configuration_limit
        "53000" | "53200" | "53300" | "53400" => {
            CoreError::Unavailable(format!("the database is out of resources ({code})"))
        }
        // read_only_sql_transaction: a standby, or a primary demoted by a failover.
        "25006" => CoreError::Unavailable("the database is read-only".into()),
        // query_canceled (statement timeout), lock_not_available
        "57014" | "55P03" => CoreError::Unavailable(format!("the database timed out ({code})")),
        // statement_completion_unknown: the outcome of a commit is not known.
        "40003" => CoreError::Unavailable("the database lost track of a statement".into()),
        // The schema is not there (never migrated, or dropped under us).
        "42P01" | "42703" => CoreError::Unavailable(format!(
            "the database schema is missing or incomplete ({code}); run `tresor migrate`"
        )),
        // Retryable codes reach here only once the retries ran out.
        "40001" | "40P01" => CoreError::Unavailable(format!(
            "the database kept aborting the transaction ({code})"
        )),
        "23505" => CoreError::Conflict("the row exists already".into()),
        _ => match &code[..2] {
            // connection_exception
            "08" => CoreError::Unavailable(format!("the database connection failed ({code})")),
            // operator_intervention: shutdown, crash recovery, cannot connect now
            "57" => CoreError::Unavailable(format!("the database is shutting down ({code})")),
            // system_error: I/O errors of the server
            "58" => CoreError::Unavailable(format!("the database reports an I/O error ({code})")),
            // invalid_authorization_specification, invalid_catalog_name
            "28" | "3D" => CoreError::Unavailable(format!("the database refused us ({code})")),
            _ => CoreError::Internal(format!("postgres {code}: {}", db.message())),
        },
    }
}

/// A pool that cannot hand out a connection: the database is down, unreachable or saturated.
pub(crate) fn from_pool(e: &deadpool_postgres::PoolError) -> CoreError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => match from_postgres(e) {
            CoreError::Internal(detail) => {
                CoreError::Unavailable(format!("cannot connect to the database: {detail}"))
            }
            other => other,
        },
        PoolError::Timeout(_) => {
            CoreError::Unavailable("no database connection became free in time".into())
        }
        PoolError::Closed => CoreError::Unavailable("the database pool is closed".into()),
        other => CoreError::Unavailable(format!("no database connection: {other}")),
    }
}

/// The rustls error behind a failed connection (an untrusted certificate, a wrong host name),
/// if that is what failed. Its text names the certificate problem, never a credential.
fn tls_error(e: &tokio_postgres::Error) -> Option<String> {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        // An `io::Error` wrapping the rustls error reports the wrapped error's source, not the
        // wrapped error itself: look inside.
        if let Some(tls) = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls.to_string());
        }
        source = s.source();
    }
    None
}

fn is_io(e: &tokio_postgres::Error) -> bool {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// `.db()` on a tokio-postgres result: the `?`-friendly form of [`from_postgres`], for code
/// outside the retry loop.
pub(crate) trait PgResultExt<T> {
    fn db(self) -> Result<T, CoreError>;
}

impl<T> PgResultExt<T> for Result<T, tokio_postgres::Error> {
    fn db(self) -> Result<T, CoreError> {
        self.map_err(|e| from_postgres(&e))
    }
}

impl<T> PgResultExt<T> for Result<T, deadpool_postgres::PoolError> {
    fn db(self) -> Result<T, CoreError> {
        self.map_err(|e| from_pool(&e))
    }
}
