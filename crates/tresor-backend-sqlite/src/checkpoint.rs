//! WAL checkpoints off the writer thread.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold, on the
//! committing connection: with one writer thread, every request of that batch and of the
//! batches queued behind it waits for pages to be copied into the database file and for its
//! fsync (the tail of the PUT latency in BENCHMARKS.md). Here the writer's WAL hook only
//! signals a checkpoint thread with its own connection, which runs `PASSIVE` checkpoints: they
//! never block the writer or readers, and copy whatever no reader still needs.
//!
//! Checkpoints are counted in [`GroupCommitStats`] (`tresor_sqlite_checkpoints_total`).
//!
//! Should the checkpoint thread fall far behind (or be gone), the writer checkpoints itself
//! once the WAL passes [`WRITER_FALLBACK_PAGES`], so the log stays bounded whatever happens.

use std::os::raw::c_int;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use rusqlite::hooks::Wal;
use rusqlite::{Connection, wal::CheckpointMode};
use tresor_core::CoreError;

use crate::error::SqlResultExt;
use crate::stats::GroupCommitStats;

/// WAL pages after which a checkpoint is asked for (SQLite's own default threshold).
pub(crate) const CHECKPOINT_PAGES: c_int = 1000;

/// WAL pages after which the writer stops waiting for the checkpoint thread.
const WRITER_FALLBACK_PAGES: c_int = 64 * CHECKPOINT_PAGES;

/// Starts the checkpoint thread over its own connection to `path`, and hooks the writer's
/// connection to it. Replaces SQLite's automatic checkpoint on `writer`.
pub(crate) fn start(
    path: &Path,
    writer: &mut Connection,
    stats: Arc<GroupCommitStats>,
) -> Result<JoinHandle<()>, CoreError> {
    let conn = Connection::open(path).db()?;
    conn.busy_timeout(crate::schema::BUSY_TIMEOUT).db()?;
    conn.pragma_update(None, "synchronous", "FULL").db()?;
    // One pending signal is enough: the checkpoint takes whatever the log holds by then.
    let (signal, signals) = mpsc::sync_channel::<()>(1);
    let thread = std::thread::Builder::new()
        .name("tresor-sqlite-checkpoint".into())
        .spawn(move || run(&conn, &signals, &stats))
        .map_err(|e| CoreError::Unavailable(format!("cannot start the checkpoint thread: {e}")))?;
    writer
        .wal_hook(Some(move |wal: &mut Wal, pages: c_int| {
            hook(&signal, wal, pages)
        }))
        .db()?;
    Ok(thread)
}

/// Runs after every commit of the writer, with the pages now in the log. Must not fail: the
/// commit has already happened, and an error here would be reported as the commit's.
fn hook(signal: &SyncSender<()>, wal: &mut Wal, pages: c_int) -> rusqlite::Result<()> {
    if pages >= WRITER_FALLBACK_PAGES {
        if let Err(e) = wal.checkpoint_v2(CheckpointMode::PASSIVE) {
            tracing::warn!(error = %e, pages, "the writer's fallback checkpoint failed");
        }
    } else if pages >= CHECKPOINT_PAGES {
        // Full means a signal is already pending; gone means the thread stopped, and the
        // fallback above will do.
        let _ = signal.try_send(());
    }
    Ok(())
}

fn run(conn: &Connection, signals: &Receiver<()>, stats: &GroupCommitStats) {
    // Ends when the writer's connection, and with it the hook's sender, is gone.
    while signals.recv().is_ok() {
        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        });
        match done {
            Ok(_) => stats.record_checkpoint(true),
            Err(e) => {
                stats.record_checkpoint(false);
                tracing::warn!(error = %e, "a WAL checkpoint failed; the next one will retry");
            }
        }
    }
}
