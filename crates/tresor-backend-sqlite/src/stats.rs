//! Counters of the group-commit writer, kept in atomics so the server's metrics endpoint can read
//! them without talking to the writer thread (exported as `tresor_group_commit_batch_size` and
//! friends).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Upper bounds (inclusive) of the batch-size histogram buckets, in messages per transaction.
pub const BATCH_SIZE_BUCKETS: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/// Live counters, updated by the writer after every transaction.
#[derive(Debug, Default)]
pub struct GroupCommitStats {
    commits_total: AtomicU64,
    failed_commits_total: AtomicU64,
    requests_committed_total: AtomicU64,
    audit_events_committed_total: AtomicU64,
    last_batch_size: AtomicU64,
    batch_size_sum: AtomicU64,
    batch_size_buckets: [AtomicU64; BATCH_SIZE_BUCKETS.len()],
    checkpoints_total: AtomicU64,
    failed_checkpoints_total: AtomicU64,
    disk_full: AtomicBool,
    writer_stopped: AtomicBool,
}

/// A point-in-time copy of [`GroupCommitStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupCommitSnapshot {
    /// Transactions committed (each is one fsync).
    pub commits_total: u64,
    /// Transactions whose `COMMIT` failed; every request in them was answered with the error.
    pub failed_commits_total: u64,
    /// Requests and audit enqueues answered from a committed transaction (including requests
    /// that failed their own precondition inside it).
    pub requests_committed_total: u64,
    /// Audit events written, both with writes and from the audit queue.
    pub audit_events_committed_total: u64,
    /// Size of the most recent committed batch.
    pub last_batch_size: u64,
    /// Sum of all committed batch sizes (the histogram's `_sum`).
    pub batch_size_sum: u64,
    /// Per bucket of [`BATCH_SIZE_BUCKETS`]: committed batches whose size is at most that bound
    /// and more than the previous one (not cumulative).
    pub batch_size_buckets: [u64; BATCH_SIZE_BUCKETS.len()],
    /// WAL checkpoints run by the checkpoint thread.
    pub checkpoints_total: u64,
    /// WAL checkpoints that failed (the next one retries).
    pub failed_checkpoints_total: u64,
    /// The writer is in full-disk mode: writes answer 507 until space returns
    /// (`reserve.rs`).
    pub disk_full: bool,
    /// A storage failure at `BEGIN` or `COMMIT` stopped the writer: nothing is written until
    /// the server is restarted (`writer.rs`).
    pub writer_stopped: bool,
}

impl GroupCommitSnapshot {
    /// The buckets as Prometheus wants them: each counts every batch up to its bound.
    pub fn cumulative_buckets(&self) -> [(u64, u64); BATCH_SIZE_BUCKETS.len()] {
        let mut running = 0;
        let mut out = [(0, 0); BATCH_SIZE_BUCKETS.len()];
        for (i, bound) in BATCH_SIZE_BUCKETS.iter().enumerate() {
            running += self.batch_size_buckets[i];
            out[i] = (*bound, running);
        }
        out
    }

    /// Number of committed batches larger than one message: the evidence that grouping happens.
    pub fn grouped_batches(&self) -> u64 {
        self.batch_size_buckets[1..].iter().sum()
    }
}

impl GroupCommitStats {
    pub fn snapshot(&self) -> GroupCommitSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        GroupCommitSnapshot {
            commits_total: load(&self.commits_total),
            failed_commits_total: load(&self.failed_commits_total),
            requests_committed_total: load(&self.requests_committed_total),
            audit_events_committed_total: load(&self.audit_events_committed_total),
            last_batch_size: load(&self.last_batch_size),
            batch_size_sum: load(&self.batch_size_sum),
            batch_size_buckets: std::array::from_fn(|i| load(&self.batch_size_buckets[i])),
            checkpoints_total: load(&self.checkpoints_total),
            failed_checkpoints_total: load(&self.failed_checkpoints_total),
            disk_full: self.disk_full.load(Ordering::Relaxed),
            writer_stopped: self.writer_stopped.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn set_writer_stopped(&self) {
        self.writer_stopped.store(true, Ordering::Relaxed);
    }

    pub(crate) fn set_disk_full(&self, full: bool) {
        self.disk_full.store(full, Ordering::Relaxed);
    }

    pub(crate) fn record_checkpoint(&self, ok: bool) {
        let counter = if ok {
            &self.checkpoints_total
        } else {
            &self.failed_checkpoints_total
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_commit(&self, batch_size: usize, audit_events: usize) {
        let size = batch_size as u64;
        self.commits_total.fetch_add(1, Ordering::Relaxed);
        self.requests_committed_total
            .fetch_add(size, Ordering::Relaxed);
        self.audit_events_committed_total
            .fetch_add(audit_events as u64, Ordering::Relaxed);
        self.last_batch_size.store(size, Ordering::Relaxed);
        self.batch_size_sum.fetch_add(size, Ordering::Relaxed);
        // A batch is capped at the last bound, so it always finds a bucket; clamp regardless.
        let bucket = BATCH_SIZE_BUCKETS
            .iter()
            .position(|bound| size <= *bound)
            .unwrap_or(BATCH_SIZE_BUCKETS.len() - 1);
        self.batch_size_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_failure(&self) {
        self.failed_commits_total.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_land_in_their_bucket() {
        let stats = GroupCommitStats::default();
        for size in [1, 2, 3, 4, 5, 512, 0] {
            stats.record_commit(size, 0);
        }
        let snap = stats.snapshot();
        assert_eq!(snap.batch_size_buckets, [2, 1, 2, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(snap.commits_total, 7);
        assert_eq!(snap.batch_size_sum, 527);
        assert_eq!(snap.last_batch_size, 0);
        assert_eq!(snap.grouped_batches(), 5);
        assert_eq!(snap.cumulative_buckets()[9], (512, 7));
        assert_eq!(snap.cumulative_buckets()[2], (4, 5));
    }
}
