//! The audit events of reads and refusals: queued in memory before the response is sent and
//! written by one background task per process within milliseconds, so a read never waits for a
//! database commit (a crash may lose at most that window, as with the embedded store). The queue
//! is bounded: when the database is unreachable for long enough to fill it, `enqueue` refuses
//! and the request answers 503 rather than run unaudited (fail-closed).
//!
//! Ids come from the database clock like those of write transactions; the writer runs at READ
//! COMMITTED and moves an event to the next free id on a collision (`ON CONFLICT DO NOTHING`),
//! so it never fails because of a concurrent writer.

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
        match write(&pool, &batch).await {
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

async fn write(pool: &Pool, events: &[AuditEvent]) -> Result<(), TxError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let micros: i64 = tx.query_one(CLOCK_MICROS_SQL, &[]).await?.try_get(0)?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO audit (id, time, request_id, token_id, app_id, account_id, \
             installation_id, operation, store, key, status, remote_addr) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (id) DO NOTHING",
        )
        .await?;
    let mut id = micros;
    for ev in events {
        loop {
            let inserted = tx
                .execute(
                    &stmt,
                    &[
                        &id,
                        &ev.time,
                        &ev.request_id,
                        &ev.token_id,
                        &ev.app_id,
                        &ev.account_id,
                        &ev.installation_id,
                        &ev.operation,
                        &ev.store,
                        &ev.key,
                        &i32::from(ev.status),
                        &ev.remote_addr,
                    ],
                )
                .await?;
            id = id.saturating_add(1);
            if inserted == 1 {
                break;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}
