//! The group-commit writer: one thread owns the only write connection and commits many
//! concurrent requests in one transaction, so one fsync pays for the whole batch.
//!
//! The thread blocks for a first message, drains whatever else is queued (up to
//! [`MAX_BATCH`]), opens `BEGIN IMMEDIATE`, runs every request inside its own `SAVEPOINT` (a
//! request that fails is rolled back alone and answered with its own error), writes the queued
//! audit events, and `COMMIT`s once. Only after `COMMIT` returned does it answer anyone: a
//! request is acknowledged only when it is durable. If `COMMIT` fails, every request of the
//! batch gets the error.
//!
//! A commit that fails because the disk is full puts the writer in full-disk mode
//! ([`crate::reserve`]): it releases the audit reserve, answers every write 507 without running
//! it, keeps committing the audit events of reads into the freed space, and takes the reserve
//! back (and leaves the mode) once space returns.
//!
//! A `BEGIN` or `COMMIT` that fails with an I/O error or corruption (an fsync that failed, a
//! write the disk refused) stops the writer for good: after a failed fsync the kernel may have
//! dropped the pages it could not write and a later fsync can report success, so carrying on
//! could acknowledge writes that are not on disk. The batch is answered 503, the thread ends,
//! every later write and every read (whose audit event can no longer be committed) answers 503,
//! and `/readyz` fails until the server is restarted, which reopens the store from what the disk
//! really holds. The fail points `sqlite::begin`, `sqlite::commit` and `sqlite::acknowledge`
//! (and `sqlite::write` in [`crate::apply`]) let the tests inject those failures and crashes
//! (see `tresor_core::faults`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;
use tresor_core::CoreError;
use tresor_core::audit::AuditEvent;
use tresor_core::backend::Quota;

use crate::apply::{self, Op, Outcome, VersionCounter};
use crate::checkpoint;
use crate::error::{SqlResultExt, from_sqlite, poisoned};
use crate::reserve::{DiskReserve, PROBE_INTERVAL};
use crate::stats::GroupCommitStats;

type Result<T> = std::result::Result<T, CoreError>;

/// The most messages one transaction takes; more wait for the next one. The last histogram
/// bucket matches it.
pub(crate) const MAX_BATCH: usize = 512;

/// How long a batch of nothing but read audit events waits for more before it commits: one
/// fsync then covers every read of that window instead of a few. DESIGN.md allows "a few
/// milliseconds" of read events to be lost in a crash; a write request ends the wait at once.
const AUDIT_LINGER: Duration = Duration::from_millis(5);

/// How soon queued audit events that failed to commit (e.g. on a full disk) are tried again
/// when no other request comes along.
const AUDIT_RETRY: Duration = Duration::from_millis(200);

/// The handle the backend keeps: sends requests and audit events to the writer thread.
pub(crate) struct GroupCommitWriter {
    sender: Sender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The checkpoint thread; it exits once the writer's connection (and its WAL hook) is gone.
    checkpointer: Mutex<Option<JoinHandle<()>>>,
    closing: AtomicBool,
    /// Set by the writer thread when a storage failure stopped it (see the module documentation).
    stopped: Arc<AtomicBool>,
    /// Audit events enqueued and not yet committed: the queue's bound is on this number, so a
    /// disk that stays full fills the queue and reads fail closed.
    audit_pending: Arc<AtomicUsize>,
    audit_bound: usize,
    /// Audit events of reads wait here for the writer, which takes them all at its next
    /// commit: queueing one wakes nobody unless it is the first since that commit.
    inbox: Arc<Mutex<Vec<AuditEvent>>>,
    stats: Arc<GroupCommitStats>,
    /// See [`tresor_core::Backend::auth_epoch`]: bumped after every batch with an op that may
    /// change authentication, before anyone in it is answered.
    auth_epoch: Arc<AtomicU64>,
}

impl GroupCommitWriter {
    /// Starts the writer thread over an open, migrated connection.
    /// Its WAL checkpoints run on a thread of their own ([`checkpoint`]).
    pub(crate) fn start(
        mut conn: Connection,
        path: &Path,
        audit_bound: usize,
        reserve: DiskReserve,
        quota: Quota,
    ) -> Result<GroupCommitWriter> {
        let versions = VersionCounter::load(&conn)?;
        let (sender, receiver) = mpsc::channel();
        let audit_pending = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(GroupCommitStats::default());
        let checkpointer = checkpoint::start(path, &mut conn, stats.clone())?;
        let auth_epoch = Arc::new(AtomicU64::new(0));
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let stopped = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            conn,
            receiver,
            versions,
            inbox: inbox.clone(),
            audit: Vec::new(),
            audit_pending: audit_pending.clone(),
            stats: stats.clone(),
            auth_epoch: auth_epoch.clone(),
            stopping: false,
            reserve,
            quota,
            full_since_probe: None,
            saw_full: false,
            stopped: stopped.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("tresor-sqlite-writer".into())
            .spawn(move || worker.run())
            .map_err(|e| CoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(GroupCommitWriter {
            sender,
            thread: Mutex::new(Some(thread)),
            checkpointer: Mutex::new(Some(checkpointer)),
            closing: AtomicBool::new(false),
            stopped,
            audit_pending,
            audit_bound,
            inbox,
            stats,
            auth_epoch,
        })
    }

    /// Runs one op in the next batch and waits until its batch committed.
    pub(crate) async fn call(&self, op: Op) -> Result<Outcome> {
        if self.closing.load(Ordering::Acquire) {
            return Err(shutting_down());
        }
        if self.stopped.load(Ordering::Acquire) {
            return Err(storage_failed());
        }
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Msg::Request(Box::new(op), reply))
            .map_err(|_| writer_stopped())?;
        // A dropped reply means the thread died before COMMIT: the transaction rolled back.
        answer.await.map_err(|_| writer_stopped())?
    }

    /// Queues audit events for the next batch without waiting for it.
    pub(crate) fn enqueue_audit(&self, events: Vec<AuditEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        if self.closing.load(Ordering::Acquire) {
            return Err(shutting_down());
        }
        if self.stopped.load(Ordering::Acquire) {
            // Fail closed: the event could never be committed.
            return Err(storage_failed());
        }
        let n = events.len();
        let before = self.audit_pending.fetch_add(n, Ordering::AcqRel);
        if before.saturating_add(n) > self.audit_bound {
            self.audit_pending.fetch_sub(n, Ordering::AcqRel);
            return Err(CoreError::Unavailable("audit queue full".into()));
        }
        let first = {
            // Whole even after a panic elsewhere (see `take_inbox`).
            let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
            let first = inbox.is_empty();
            inbox.extend(events);
            first
        };
        // The first event since the writer last emptied the inbox wakes it; it then waits a
        // few milliseconds for more (see `AUDIT_LINGER`) before it commits them all.
        if first && self.sender.send(Msg::AuditReady).is_err() {
            return Err(writer_stopped());
        }
        Ok(())
    }

    pub(crate) fn stats(&self) -> &Arc<GroupCommitStats> {
        &self.stats
    }

    pub(crate) fn auth_epoch(&self) -> u64 {
        self.auth_epoch.load(Ordering::SeqCst)
    }

    pub(crate) fn audit_queue_len(&self) -> usize {
        self.audit_pending.load(Ordering::Acquire)
    }

    /// Is the writer thread still running and taking requests?
    pub(crate) fn check_alive(&self) -> Result<()> {
        if self.closing.load(Ordering::Acquire) {
            return Err(shutting_down());
        }
        if self.stopped.load(Ordering::Acquire) {
            return Err(storage_failed());
        }
        let thread = self.thread.lock().map_err(|_| poisoned("writer thread"))?;
        match thread.as_ref() {
            Some(t) if !t.is_finished() => Ok(()),
            _ => Err(writer_stopped()),
        }
    }

    /// The checkpoint thread to join (once), after the writer thread: its connection is then the
    /// last one open, and closing it checkpoints the whole log and removes it.
    pub(crate) fn take_checkpointer(&self) -> Option<JoinHandle<()>> {
        match self.checkpointer.lock() {
            Ok(mut t) => t.take(),
            Err(poison) => poison.into_inner().take(),
        }
    }

    /// Stops taking requests and hands back the thread to join, once: the thread commits
    /// everything queued before it exits.
    pub(crate) fn begin_shutdown(&self) -> Option<JoinHandle<()>> {
        self.closing.store(true, Ordering::Release);
        let thread = match self.thread.lock() {
            Ok(mut t) => t.take(),
            // The lock only guards the handle; a panic while holding it left the handle as is.
            Err(poison) => poison.into_inner().take(),
        };
        if thread.is_some() {
            // The thread may already be gone (then there is nothing to stop).
            let _ = self.sender.send(Msg::Shutdown);
        }
        thread
    }
}

fn shutting_down() -> CoreError {
    CoreError::Unavailable("the storage is shutting down".into())
}

fn storage_failed() -> CoreError {
    CoreError::Unavailable(
        "the storage failed to make a write durable; this server writes nothing more until it \
         is restarted"
            .into(),
    )
}

/// Does this error of `BEGIN` or `COMMIT` mean the disk may not hold what SQLite wrote (an I/O
/// error, fsync's included, or a damaged file)? A full disk, a busy lock or an interrupt does not.
fn is_storage_failure(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::DatabaseCorrupt
                    | rusqlite::ErrorCode::NotADatabase
            )
    )
}

/// `BEGIN IMMEDIATE`, behind the fail point `sqlite::begin`.
fn begin(conn: &Connection) -> rusqlite::Result<()> {
    tresor_core::fault_point!(
        "sqlite::begin",
        Err(crate::error::injected(rusqlite::ffi::SQLITE_IOERR_READ))
    );
    conn.execute_batch("BEGIN IMMEDIATE")
}

/// `COMMIT`, the step that fsyncs, behind the fail point `sqlite::commit` (whose injected error
/// is the one SQLite reports when its fsync fails).
fn commit(conn: &Connection) -> rusqlite::Result<()> {
    tresor_core::fault_point!(
        "sqlite::commit",
        Err(crate::error::injected(rusqlite::ffi::SQLITE_IOERR_FSYNC))
    );
    conn.execute_batch("COMMIT")
}

/// The fail point `sqlite::acknowledge`: after `COMMIT` returned, before anyone is answered (a
/// crash here leaves a durable write that nobody was told about).
fn acknowledge() {
    tresor_core::fault_point!("sqlite::acknowledge", ());
}

fn writer_stopped() -> CoreError {
    CoreError::Unavailable("the storage writer has stopped; nothing was written".into())
}

type Reply = oneshot::Sender<Result<Outcome>>;
type Answer = (Reply, Result<Outcome>);

/// The same failure for every one of `replies`.
fn fail_all(replies: impl Iterator<Item = Reply>, cause: &CoreError) -> Vec<Answer> {
    replies.map(|r| (r, Err(copy_error(cause)))).collect()
}

enum Msg {
    Request(Box<Op>, Reply),
    /// The audit inbox has events.
    AuditReady,
    Shutdown,
    /// Tests: the writer stops until the sender of this channel sends or is dropped, so the
    /// messages queued meanwhile all land in the next batch.
    #[cfg(test)]
    Hold(mpsc::Receiver<()>),
    /// Tests: runs SQL on the write connection between batches (e.g. to cap the file size).
    #[cfg(test)]
    Sql(String, oneshot::Sender<Result<()>>),
}

/// The writer thread's state.
struct Worker {
    conn: Connection,
    receiver: Receiver<Msg>,
    versions: VersionCounter,
    inbox: Arc<Mutex<Vec<AuditEvent>>>,
    /// Audit events taken from the inbox and not yet committed, oldest first.
    audit: Vec<AuditEvent>,
    audit_pending: Arc<AtomicUsize>,
    stats: Arc<GroupCommitStats>,
    auth_epoch: Arc<AtomicU64>,
    stopping: bool,
    /// Released when the disk fills, taken back when space returns.
    reserve: DiskReserve,
    /// The operator's storage quotas, checked inside each commit.
    quota: Quota,
    /// In full-disk mode: when the reserve was last tried.
    full_since_probe: Option<Instant>,
    /// The current batch failed because the disk is full.
    saw_full: bool,
    /// Set when `BEGIN` or `COMMIT` failed with a storage failure: the thread answers the batch
    /// and ends (see the module documentation).
    stopped: Arc<AtomicBool>,
}

impl Worker {
    fn run(mut self) {
        tracing::debug!("sqlite writer started");
        loop {
            let mut requests = Vec::new();
            let mut messages = 0;
            if let Some(first) = self.wait_first() {
                self.accept(first, &mut requests, &mut messages);
            }
            // Everything that queued up while the previous batch was being fsynced joins this one.
            while messages < MAX_BATCH {
                match self.receiver.try_recv() {
                    Ok(msg) => self.accept(msg, &mut requests, &mut messages),
                    Err(_) => break,
                }
            }
            if requests.is_empty() && messages > 0 {
                self.linger(&mut requests, &mut messages);
            }
            self.take_inbox();
            if self.full_since_probe.is_some() {
                requests = self.refuse_writes(requests);
            }
            if !requests.is_empty() || !self.audit.is_empty() {
                self.commit_batch(requests, messages);
            }
            self.track_disk_space();
            if self.stopped.load(Ordering::Acquire) {
                // Every message still queued is dropped with the receiver: its caller hears
                // that the writer stopped, and nothing of it was written.
                break;
            }
            if self.stopping && messages == 0 {
                // Drained: everything sent before the shutdown has been answered.
                if !self.audit.is_empty() {
                    tracing::error!(
                        events = self.audit.len(),
                        "audit events could not be committed before shutdown"
                    );
                }
                break;
            }
        }
        tracing::debug!("sqlite writer stopped");
    }

    /// Blocks for the first message of a batch; wakes up periodically while audit events wait
    /// for a retry. `None` when there is nothing to wait for.
    fn wait_first(&mut self) -> Option<Msg> {
        if self.stopping {
            return None;
        }
        let received = if !self.audit.is_empty() {
            self.receiver.recv_timeout(AUDIT_RETRY)
        } else if self.full_since_probe.is_some() {
            self.receiver.recv_timeout(PROBE_INTERVAL)
        } else {
            self.receiver
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected)
        };
        match received {
            Ok(msg) => Some(msg),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                // Every handle is gone: finish what is queued and stop.
                self.stopping = true;
                None
            }
        }
    }

    /// A batch of read audit events only: waits up to [`AUDIT_LINGER`] for more, or for a
    /// write request, whichever comes first.
    fn linger(&mut self, requests: &mut Vec<(Op, Reply)>, messages: &mut usize) {
        let deadline = Instant::now() + AUDIT_LINGER;
        while requests.is_empty() && *messages < MAX_BATCH && !self.stopping {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.receiver.recv_timeout(left) {
                Ok(msg) => self.accept(msg, requests, messages),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => self.stopping = true,
            }
        }
    }

    /// Full-disk mode: answers every write 507 without running it, so that the released
    /// reserve holds only audit events; keeps what writes nothing (an audit flush).
    fn refuse_writes(&mut self, requests: Vec<(Op, Reply)>) -> Vec<(Op, Reply)> {
        let (keep, refuse): (Vec<_>, Vec<_>) = requests
            .into_iter()
            .partition(|(op, _)| matches!(op, Op::FlushAudit));
        for (_, reply) in refuse {
            let _ = reply.send(Err(CoreError::InsufficientStorage));
        }
        keep
    }

    /// Enters full-disk mode after a batch that failed for want of space (releasing the
    /// reserve), and leaves it once the reserve could be taken back.
    fn track_disk_space(&mut self) {
        let saw_full = std::mem::take(&mut self.saw_full);
        match self.full_since_probe {
            None if saw_full => {
                let had_reserve = self.reserve.held();
                self.reserve.release();
                self.full_since_probe = Some(Instant::now());
                self.stats.set_disk_full(true);
                tracing::error!(
                    reserve_released = had_reserve,
                    "the disk is full: writes answer 507 insufficient_storage until space returns; \
                     reads go on while the audit reserve lasts, then answer 503"
                );
            }
            Some(probed) if probed.elapsed() >= PROBE_INTERVAL => {
                if self.reserve.take() {
                    self.full_since_probe = None;
                    self.stats.set_disk_full(false);
                    tracing::warn!("disk space returned: writes resume");
                } else {
                    self.full_since_probe = Some(Instant::now());
                }
            }
            _ => {}
        }
    }

    /// Remembers a failure for want of space (see [`Worker::track_disk_space`]).
    fn note(&mut self, e: &CoreError) {
        if matches!(e, CoreError::InsufficientStorage) {
            self.saw_full = true;
        }
    }

    /// Moves the events queued so far behind those still waiting for a commit.
    fn take_inbox(&mut self) {
        // A poisoned inbox only means a panic while pushing: the events in it are still whole.
        let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        if self.audit.is_empty() {
            std::mem::swap(&mut self.audit, &mut inbox);
        } else {
            self.audit.append(&mut inbox);
        }
    }

    fn accept(&mut self, msg: Msg, requests: &mut Vec<(Op, Reply)>, messages: &mut usize) {
        match msg {
            Msg::Request(op, reply) => {
                requests.push((*op, reply));
                *messages += 1;
            }
            Msg::AuditReady => *messages += 1,
            Msg::Shutdown => self.stopping = true,
            #[cfg(test)]
            Msg::Hold(release) => {
                let _ = release.recv();
            }
            #[cfg(test)]
            Msg::Sql(sql, reply) => {
                let _ = reply.send(self.conn.execute_batch(&sql).db());
            }
        }
    }

    fn commit_batch(&mut self, requests: Vec<(Op, Reply)>, messages: usize) {
        let changes_auth = requests.iter().any(|(op, _)| op.changes_auth());
        let answers = self.run_batch(requests, messages);
        if changes_auth {
            // After COMMIT (or whatever ended the batch) and before anyone is answered: a
            // reader that took the old epoch before its query may have read the old state.
            self.auth_epoch.fetch_add(1, Ordering::SeqCst);
        }
        for (reply, result) in answers {
            // The caller may have gone away (its request was cancelled); the write stands.
            let _ = reply.send(result);
        }
    }

    /// Runs one batch in one transaction and returns every request's answer, to be sent only
    /// once the batch is over.
    fn run_batch(&mut self, requests: Vec<(Op, Reply)>, messages: usize) -> Vec<Answer> {
        if !self.conn.is_autocommit() {
            // A transaction left open by a failed COMMIT and a failed ROLLBACK: clear it first.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        if let Err(e) = begin(&self.conn) {
            tracing::warn!(error = %e, "sqlite writer could not begin a transaction");
            self.stats.record_failure();
            if let Some(cause) = self.stop_on_storage_failure(&e) {
                return fail_all(requests.into_iter().map(|(_, r)| r), &cause);
            }
            let cause = from_sqlite(&e);
            self.note(&cause);
            return fail_all(requests.into_iter().map(|(_, r)| r), &cause);
        }
        if let Err(e) = self.versions.sync(&self.conn) {
            tracing::warn!(error = ?e, "sqlite writer could not read the version counter");
            let _ = self.conn.execute_batch("ROLLBACK");
            self.stats.record_failure();
            return fail_all(requests.into_iter().map(|(_, r)| r), &e);
        }
        let mut answers: Vec<Answer> = Vec::with_capacity(requests.len());
        let mut audit_written = 0;
        let mut requests = requests.into_iter();
        while let Some((op, reply)) = requests.next() {
            let events = op.audit_count();
            let result = apply::apply_in_savepoint(&self.conn, &mut self.versions, &self.quota, op);
            if self.conn.is_autocommit() {
                // SQLite rolled the whole transaction back by itself (it may on a full disk or
                // an I/O error), or the savepoint could not be undone: nothing of this batch
                // stands, so nobody in it may be acknowledged.
                let cause = match &result {
                    Err(e) => copy_error(e),
                    Ok(_) => CoreError::internal("the batch transaction ended unexpectedly"),
                };
                tracing::warn!(error = ?cause, "sqlite batch transaction was rolled back");
                self.stats.record_failure();
                self.note(&cause);
                let mut failed = vec![(reply, result.and_then(|_| Err(copy_error(&cause))))];
                let others = answers.into_iter().map(|(r, _)| r);
                failed.extend(fail_all(others.chain(requests.map(|(_, r)| r)), &cause));
                return failed;
            }
            match &result {
                Ok(_) => audit_written += events,
                Err(e) => self.note(e),
            }
            answers.push((reply, result));
        }
        let queued = self.write_queued_audit();
        let finished = self.versions.save(&self.conn).and_then(|()| {
            commit(&self.conn).map_err(|e| {
                self.stop_on_storage_failure(&e)
                    .unwrap_or_else(|| from_sqlite(&e))
            })
        });
        if let Err(e) = finished {
            self.note(&e);
            if self.full_since_probe.is_some() {
                // The mode's own message said it once; an audit retry fails every 200 ms.
                tracing::debug!(error = ?e, "audit commit failed on the full disk");
            } else {
                tracing::warn!(error = ?e, requests = answers.len(), "sqlite batch commit failed");
            }
            if !self.conn.is_autocommit() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            self.stats.record_failure();
            return answers
                .into_iter()
                .map(|(reply, result)| (reply, result.and_then(|_| Err(copy_error(&e)))))
                .collect();
        }
        acknowledge();
        self.versions.mark_persisted();
        if queued > 0 {
            self.audit.drain(..queued);
            self.audit_pending.fetch_sub(queued, Ordering::AcqRel);
        }
        if messages > 0 || queued > 0 {
            // A retry of queued audit events that wrote nothing is not a batch worth counting.
            self.stats
                .record_commit(messages.max(1), audit_written + queued);
        }
        answers
    }

    /// After `BEGIN` or `COMMIT` failed with `e`: when it is a storage failure, stops the writer
    /// (the run loop ends after this batch) and returns the error for the batch's requests.
    fn stop_on_storage_failure(&mut self, e: &rusqlite::Error) -> Option<CoreError> {
        if !is_storage_failure(e) {
            return None;
        }
        tracing::error!(
            error = %e,
            "the storage failed to make a write durable: this server writes nothing more and \
             /readyz fails; check the disk, then restart the server"
        );
        self.stopped.store(true, Ordering::Release);
        self.stats.set_writer_stopped();
        Some(storage_failed())
    }

    /// Writes the queued audit events in their own savepoint; returns how many were written
    /// (all or none). On failure they stay queued, still counted against the queue's bound, and
    /// are tried again with the next batch: a disk that stays full fills the queue, and reads
    /// then fail closed instead of running unaudited.
    fn write_queued_audit(&mut self) -> usize {
        if self.audit.is_empty() || self.conn.is_autocommit() {
            return 0;
        }
        let written = (|| -> Result<()> {
            self.conn.execute_batch("SAVEPOINT audit").db()?;
            let inserted = self
                .audit
                .iter()
                .try_for_each(|ev| apply::insert_audit(&self.conn, ev));
            if inserted.is_err() && !self.conn.is_autocommit() {
                self.conn.execute_batch("ROLLBACK TO audit").db()?;
            }
            if !self.conn.is_autocommit() {
                self.conn.execute_batch("RELEASE audit").db()?;
            }
            inserted
        })();
        match written {
            Ok(()) => self.audit.len(),
            Err(e) => {
                self.note(&e);
                if self.full_since_probe.is_some() {
                    tracing::debug!(error = ?e, events = self.audit.len(), "audit reserve used up");
                } else {
                    tracing::warn!(
                        error = ?e,
                        events = self.audit.len(),
                        "queued audit events not written; will retry"
                    );
                }
                0
            }
        }
    }
}

/// A copy of a batch failure for each request of the batch (`CoreError` is not `Clone`).
fn copy_error(e: &CoreError) -> CoreError {
    match e {
        CoreError::InsufficientStorage => CoreError::InsufficientStorage,
        CoreError::Unavailable(m) => CoreError::Unavailable(m.clone()),
        other => CoreError::Internal(format!("the batch did not commit: {other:?}")),
    }
}

#[cfg(test)]
impl GroupCommitWriter {
    /// Stops the writer until the returned sender sends or is dropped.
    pub(crate) fn hold(&self) -> mpsc::Sender<()> {
        let (release, held) = mpsc::channel();
        let _ = self.sender.send(Msg::Hold(held));
        release
    }

    /// Runs SQL on the write connection, outside any batch.
    pub(crate) async fn exec(&self, sql: &str) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Msg::Sql(sql.to_owned(), reply))
            .map_err(|_| writer_stopped())?;
        answer.await.map_err(|_| writer_stopped())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn io_errors_and_corruption_stop_the_writer_and_nothing_else_does() {
        use rusqlite::ffi;
        for code in [
            ffi::SQLITE_IOERR,
            ffi::SQLITE_IOERR_FSYNC,
            ffi::SQLITE_IOERR_WRITE,
            ffi::SQLITE_IOERR_DIR_FSYNC,
            ffi::SQLITE_CORRUPT,
            ffi::SQLITE_NOTADB,
        ] {
            assert!(is_storage_failure(&failure(code)), "{code}");
        }
        for code in [
            ffi::SQLITE_FULL,
            ffi::SQLITE_BUSY,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_INTERRUPT,
            ffi::SQLITE_CONSTRAINT,
        ] {
            assert!(!is_storage_failure(&failure(code)), "{code}");
        }
        assert!(!is_storage_failure(&rusqlite::Error::QueryReturnedNoRows));
    }
}
