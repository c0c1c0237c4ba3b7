//! The audit events of reads and refusals: queued in memory before the response is sent and
//! written by one background task per process within milliseconds, so a read never waits for a
//! database commit (a crash may lose at most that window, as with the embedded store). The queue
//! is bounded: when the database is unreachable for long enough to fill it, `enqueue` refuses
//! and the request answers 503 rather than run unaudited (fail-closed).
//!
//! Ids come from the database clock like those of write transactions; the writer inserts a
//! whole batch in one autocommitted statement at READ COMMITTED and moves an event to a later
//! id on a collision (`ON CONFLICT DO NOTHING`), so it never fails because of a concurrent
//! writer, and never writes an event twice.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tresor_core::CoreError;
use tresor_core::audit::AuditEvent;

use crate::error::TxError;
use crate::tx::CLOCK_MICROS_SQL;

/// Events written per transaction.
const BATCH: usize = 512;
/// How long the writer waits to gather more events after the first.
const GATHER: Duration = Duration::from_millis(2);
/// Pause after a failed write before the next attempt.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

struct State {
    events: VecDeque<AuditEvent>,
    closed: bool,
}

pub(crate) struct AuditQueue {
    state: Mutex<State>,
    bound: usize,
    wake: Notify,
    /// Signalled by the writer when the queue is empty (for `shutdown`).
    drained: Notify,
}

impl AuditQueue {
    /// Starts the background writer over `pool`.
    pub(crate) fn start(pool: Pool, bound: usize) -> Arc<AuditQueue> {
        let queue = Arc::new(AuditQueue {
            state: Mutex::new(State {
                events: VecDeque::new(),
                closed: false,
            }),
            bound: bound.max(1),
            wake: Notify::new(),
            drained: Notify::new(),
        });
        tokio::spawn(run(Arc::clone(&queue), pool));
        queue
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind: keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn enqueue(&self, events: Vec<AuditEvent>) -> Result<(), CoreError> {
        if events.is_empty() {
            return Ok(());
        }
        {
            let mut state = self.lock();
            if state.closed {
                return Err(CoreError::Unavailable("the server is shutting down".into()));
            }
            if state.events.len() + events.len() > self.bound {
                return Err(CoreError::Unavailable(
                    "the audit queue is full (the database is not keeping up)".into(),
                ));
            }
            state.events.extend(events);
        }
        self.wake.notify_one();
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// Stops accepting events; the writer exits once the queue is written (or at once, when
    /// the backend is dropped without `shutdown`, which keeps what is queued unwritten).
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// Closes the queue and waits (up to 10 s) until what is queued is written.
    pub(crate) async fn shutdown(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.lock().events.is_empty() {
                break;
            }
            self.wake.notify_one();
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                tracing::warn!(
                    queued = self.len(),
                    "audit events of reads could not be written before shutdown"
                );
                break;
            }
        }
        self.close();
    }

    fn take(&self) -> (Vec<AuditEvent>, bool) {
        let mut state = self.lock();
        let n = state.events.len().min(BATCH);
        (state.events.drain(..n).collect(), state.closed)
    }

    fn put_back(&self, events: Vec<AuditEvent>) {
        let mut state = self.lock();
        for ev in events.into_iter().rev() {
            state.events.push_front(ev);
        }
    }
}

async fn run(queue: Arc<AuditQueue>, pool: Pool) {
    loop {
        let (batch, closed) = queue.take();
        if batch.is_empty() {
            queue.drained.notify_waiters();
            if closed {
                return;
            }
            queue.wake.notified().await;
            tokio::time::sleep(GATHER).await;
            continue;
        }
        let mut batch = batch;
        match write(&pool, &mut batch).await {
            Ok(()) => {}
            Err(e) => {
                let e = e.into_core();
                tracing::warn!(error = %e, events = batch.len(), "cannot write audit events yet");
                queue.put_back(batch);
                if queue.lock().closed && pool.is_closed() {
                    return;
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Inserts a batch of events in one statement: the columns as arrays, spread into rows by
/// `unnest` (one round trip and one plan for the whole batch, instead of one per event).
const INSERT_MANY: &str = "INSERT INTO audit (id, time, request_id, token_id, app_id, \
    account_id, installation_id, operation, store, key, status, remote_addr) \
    SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
    $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::INTEGER[], $12::TEXT[]) \
    ON CONFLICT (id) DO NOTHING RETURNING id";

/// Writes `events`, removing each from the vector once it is stored, so that after an error
/// the caller puts back exactly those not yet written. Each statement commits on its own
/// (READ COMMITTED, autocommit): ids come from the database clock plus the event's place in
/// the batch, and the events whose id a concurrent transaction took are written again with a
/// later clock.
async fn write(pool: &Pool, events: &mut Vec<AuditEvent>) -> Result<(), TxError> {
    let client = pool.get().await?;
    let insert = client.prepare_cached(INSERT_MANY).await?;
    while !events.is_empty() {
        let micros: i64 = client.query_one(CLOCK_MICROS_SQL, &[]).await?.try_get(0)?;
        let ids: Vec<i64> = (0..events.len())
            .map(|i| micros.saturating_add(i64::try_from(i).unwrap_or(i64::MAX)))
            .collect();
        let column = |f: fn(&AuditEvent) -> Option<&str>| -> Vec<Option<&str>> {
            events.iter().map(f).collect()
        };
        let times: Vec<i64> = events.iter().map(|e| e.time).collect();
        let request_ids = column(|e| Some(e.request_id.as_str()));
        let token_ids = column(|e| e.token_id.as_deref());
        let app_ids = column(|e| e.app_id.as_deref());
        let account_ids = column(|e| e.account_id.as_deref());
        let installation_ids = column(|e| e.installation_id.as_deref());
        let operations = column(|e| Some(e.operation.as_str()));
        let stores = column(|e| e.store.as_deref());
        let keys = column(|e| e.key.as_deref());
        let statuses: Vec<i32> = events.iter().map(|e| i32::from(e.status)).collect();
        let remote_addrs = column(|e| e.remote_addr.as_deref());
        let rows = client
            .query(
                &insert,
                &[
                    &ids,
                    &times,
                    &request_ids,
                    &token_ids,
                    &app_ids,
                    &account_ids,
                    &installation_ids,
                    &operations,
                    &stores,
                    &keys,
                    &statuses,
                    &remote_addrs,
                ],
            )
            .await?;
        let stored = rows
            .iter()
            .map(|r| r.try_get::<_, i64>(0))
            .collect::<Result<std::collections::HashSet<i64>, _>>()?;
        let mut ids = ids.into_iter();
        events.retain(|_| ids.next().is_none_or(|id| !stored.contains(&id)));
    }
    Ok(())
}
