//! Write transactions: the isolation level, the clock, versions, and the retry loop.
//!
//! **Isolation: SERIALIZABLE.** A commit's preconditions include pure checks that write nothing
//! ("this key is absent" inside an atomic batch, the shared key space of credentials). Under
//! REPEATABLE READ two such transactions could each check what the other writes and both commit
//! (write skew); SERIALIZABLE (PostgreSQL's SSI, CockroachDB's default, YugabyteDB's
//! serializable level) turns every such race into a serialization failure, SQLSTATE 40001. The
//! rows a commit is about to change are still read `FOR UPDATE`, so that writers of one key
//! queue behind each other instead of all running to the end and failing at `COMMIT`. A
//! failure with 40001 or 40P01 (or a unique violation raced in by a concurrent writer) rolls
//! back and runs the whole operation again from its start, after a short randomized backoff;
//! callers never see it.
//!
//! **The clock.** Each attempt reads the database's clock once, at its start
//! (`clock_timestamp()`, in microseconds): every timestamp it writes and every expiry it judges
//! come from that one reading, so servers with skewed clocks agree.
//!
//! **Versions without a hot counter.** A write gives a key the version
//! `max(previous + 1, floor)`, where `previous` is the key's last version (a live or expired row,
//! or a remembered deleted one) and `floor` starts at the attempt's clock in microseconds and
//! moves past each version the transaction hands out. So:
//! - a key's versions strictly increase: the `previous + 1` term, with the row locked
//!   `FOR UPDATE` (or, for a new key, the unique insert serialized by SSI);
//! - versions of sequential commits increase across keys and across reinstalls (new
//!   namespaces), because each commit's clock reading is later than the previous commit's;
//! - within one commit versions increase in mutation order (the moving floor);
//! - a deleted key's next version is still greater than its last: a delete (or the purge of an
//!   expired row) whose version is not safely below the clock writes it to `version_floors`,
//!   and the next write of the key reads it as `previous`. "Safely below" means more than
//!   [`FLOOR_MARGIN_MICROS`] below, so the guarantee survives the database clock stepping back
//!   by up to that much (a failover to a node whose clock lags); floors that fall that far
//!   behind the clock are purged, because the clock term alone then exceeds them;
//! - versions stay below 2^53 (JavaScript's safe integers) until the clock reaches the year
//!   2255, and a key would need 2^53 − now writes within one microsecond to pass it.
//!
//! Nothing here is a single row that every writer updates, so writes to different keys never
//! contend, on PostgreSQL or on a distributed SQL database.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Pool, Transaction};
use tokio_postgres::IsolationLevel;
use tresor_core::CoreError;
use tresor_core::backend::Quota;
use tresor_core::model::Millis;

use crate::apply::{Op, Outcome, apply};
use crate::error::TxError;

/// The largest version the contract allows (JavaScript's safe integers).
pub(crate) const MAX_VERSION: u64 = (1 << 53) - 1;

/// How far below the clock a deleted key's last version must lie before it needs no floor row.
pub(crate) const FLOOR_MARGIN_MICROS: i64 = 60 * 1_000_000;

/// Attempts of one operation before the database's aborts are reported as `Unavailable`.
const MAX_ATTEMPTS: u32 = 30;

/// The database clock, read once per attempt, in SQL: microseconds since the epoch.
pub(crate) const CLOCK_MICROS_SQL: &str =
    "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT";

/// One attempt of a write transaction: the open transaction, its clock reading and the version
/// floor.
pub(crate) struct Tx<'a> {
    pub(crate) tx: Transaction<'a>,
    /// The database clock at the start of the attempt, in microseconds.
    pub(crate) micros: i64,
    /// The same instant in milliseconds: every timestamp the attempt writes.
    pub(crate) now: Millis,
    /// The smallest version the next write may get.
    floor: u64,
    /// The id of the next audit event the attempt writes.
    audit_next: i64,
    /// How many of a commit's namespace guards exist, when the attempt counted them in the same
    /// statement as its clock reading (one round trip instead of two).
    pub(crate) guards_found: Option<i64>,
    /// How many of the commit's guards a key rotation fences, plus how many of the keys it
    /// sealed under have been replaced, counted in the same statement.
    pub(crate) guards_held: i64,
    /// The operator's storage quotas.
    pub(crate) quota: Quota,
}

impl Tx<'_> {
    /// The next version of a key whose last version was `previous` (None: never written, or
    /// forgotten safely below the clock).
    pub(crate) fn next_version(&mut self, previous: Option<u64>) -> Result<u64, CoreError> {
        let version = previous.map_or(0, |p| p.saturating_add(1)).max(self.floor);
        if version > MAX_VERSION {
            return Err(CoreError::internal("record versions are exhausted"));
        }
        self.floor = version + 1;
        Ok(version)
    }

    /// The id of the next audit event: the attempt's clock in microseconds, plus one per event
    /// already written. Ids stay below 2^53 (JavaScript's safe integers) until the year 2255;
    /// an id a concurrent transaction took is a unique violation, retried with a later clock.
    pub(crate) fn next_audit_id(&mut self) -> i64 {
        let id = self.audit_next;
        self.audit_next = self.audit_next.saturating_add(1);
        id
    }

    /// Does a deleted key whose last version was `version` need a floor row?
    pub(crate) fn needs_floor(&self, version: i64) -> bool {
        version >= self.micros - FLOOR_MARGIN_MICROS
    }
}

/// Runs `op` in a SERIALIZABLE transaction on a pooled connection, retrying it from its start
/// while the database aborts it with a retryable error. Applying an op has no effect outside
/// its transaction, so an attempt can always be thrown away.
pub(crate) async fn write(pool: &Pool, op: &Op, quota: &Quota) -> Result<Outcome, CoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match attempt_once(pool, op, quota).await {
            Ok(out) => return Ok(out),
            Err(TxError::Core(e)) => return Err(e),
            Err(TxError::Retry(reason)) if attempt < MAX_ATTEMPTS => {
                tracing::debug!(attempt, reason, "retrying a postgres transaction");
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(TxError::Retry(reason)) if matches!(op, Op::Commit(_)) => {
                // A commit states its preconditions: after this many aborts, the service re-reads
                // and runs the operation again with its own backoff, as after any concurrent
                // change it lost to.
                tracing::debug!(
                    attempt,
                    reason,
                    "handing a contended commit back to the service"
                );
                return Err(CoreError::WriteConflict);
            }
            Err(TxError::Retry(reason)) => {
                tracing::warn!(attempt, reason, "giving up on a postgres transaction");
                return Err(CoreError::Unavailable(format!(
                    "the database kept aborting the transaction ({reason})"
                )));
            }
        }
    }
}

async fn attempt_once(pool: &Pool, op: &Op, quota: &Quota) -> Result<Outcome, TxError> {
    let mut client = pool.get().await?;
    let tx = match client
        .build_transaction()
        .isolation_level(IsolationLevel::Serializable)
        .start()
        .await
    {
        Ok(tx) => tx,
        // A pooled connection that broke while idle (the database restarted): nothing was
        // sent yet, so another attempt on a fresh connection is safe.
        Err(e) if e.is_closed() => return Err(TxError::Retry("a stale connection".into())),
        Err(e) => return Err(e.into()),
    };
    // A commit's incarnation guard (invariant 7) needs nothing but the transaction: it is read
    // with the clock, in one statement.
    let guards = match op {
        Op::Commit(c) if !c.guards.is_empty() || !c.keys.is_empty() => Some((
            sorted_guards(&c.guards),
            c.keys.iter().map(|k| k.ns).collect::<Vec<_>>(),
            c.keys
                .iter()
                .map(|k| k.wrapped_key.as_slice())
                .collect::<Vec<_>>(),
        )),
        _ => None,
    };
    let (micros, guards_found, guards_held): (i64, Option<i64>, i64) = match &guards {
        Some((g, key_ns, key_wrapped)) => {
            let row = tx
                .query_one(CLOCK_AND_GUARDS_SQL, &[g, key_ns, key_wrapped])
                .await?;
            (row.try_get(0)?, Some(row.try_get(1)?), row.try_get(2)?)
        }
        None => (
            tx.query_one(CLOCK_MICROS_SQL, &[]).await?.try_get(0)?,
            None,
            0,
        ),
    };
    let floor = u64::try_from(micros)
        .map_err(|_| CoreError::internal("the database clock is before 1970"))?;
    let mut attempt = Tx {
        tx,
        micros,
        now: micros.div_euclid(1000),
        floor,
        audit_next: micros,
        guards_found,
        guards_held,
        quota: *quota,
    };
    begun()?;
    match apply(&mut attempt, op).await {
        Ok(value) => {
            committing()?;
            attempt.tx.commit().await?;
            acknowledge();
            Ok(value)
        }
        Err(e) => {
            // Dropping would roll back too; an explicit rollback returns the connection clean.
            let _ = attempt.tx.rollback().await;
            Err(e)
        }
    }
}

// The fail points of a write (see `tresor_core::faults`). Everything between `BEGIN` and `COMMIT`
// happens inside the database's transaction, which the database rolls back whole when the
// connection goes (a crash) or the attempt fails: a point after `BEGIN` and one before `COMMIT`
// cover every statement in between. An injected I/O error is a lost connection.

/// `postgres::begin`: the transaction is open and the clock read; nothing is written yet.
fn begun() -> Result<(), TxError> {
    tresor_core::fault_point!("postgres::begin", Err(connection_lost()));
    Ok(())
}

/// `postgres::commit`: every statement of the operation ran; `COMMIT` is next.
fn committing() -> Result<(), TxError> {
    tresor_core::fault_point!("postgres::commit", Err(connection_lost()));
    Ok(())
}

/// `postgres::acknowledge`: `COMMIT` returned; nobody has been answered yet.
fn acknowledge() {
    tresor_core::fault_point!("postgres::acknowledge", ());
}

#[cfg(feature = "failpoints")]
fn connection_lost() -> TxError {
    TxError::Core(CoreError::Unavailable(
        "the database connection was lost (injected by a fail point)".into(),
    ))
}

/// The clock of [`CLOCK_MICROS_SQL`], the number of the guards (`$1`) that exist, and the
/// number that hold the commit off: guards fenced by a key rotation (a lease that has not
/// passed on this clock) plus keys it sealed under (`$2` namespaces, `$3` wrapped keys) that
/// are no longer their namespace's.
const CLOCK_AND_GUARDS_SQL: &str = "WITH c AS (SELECT floor(extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT AS micros) \
     SELECT c.micros, \
     (SELECT count(*) FROM namespaces WHERE ns = ANY($1)), \
     (SELECT count(*) FROM rekey_fences f WHERE f.ns = ANY($1) AND f.lease_until > c.micros / 1000) \
     + (SELECT count(*) FROM unnest($2::BIGINT[], $3::BYTEA[]) AS k(ns, wrapped_key) \
        JOIN namespaces n ON n.ns = k.ns WHERE n.wrapped_key <> k.wrapped_key) \
     FROM c";

/// A commit's guards, each once.
pub(crate) fn sorted_guards(guards: &[tresor_core::model::Ns]) -> Vec<tresor_core::model::Ns> {
    let mut g = guards.to_vec();
    g.sort_unstable();
    g.dedup();
    g
}

/// Exponential backoff with full jitter: up to 1, 2, 4 … 64 ms.
fn backoff(attempt: u32) -> Duration {
    static SALT: AtomicU64 = AtomicU64::new(0);
    let cap_micros = 1_000u64 << attempt.min(6);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(SALT.fetch_add(1, Ordering::Relaxed));
    Duration::from_micros(hasher.finish() % cap_micros + 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for attempt in 1..40 {
            let d = backoff(attempt);
            assert!(d >= Duration::from_micros(100));
            assert!(d <= Duration::from_micros(64_100), "{attempt}: {d:?}");
        }
    }
}
