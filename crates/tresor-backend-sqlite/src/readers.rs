//! The read pool: a few threads, each owning one read-only connection, so a query never stalls
//! an async worker. In WAL mode readers never wait for the writer, and each query sees the last
//! committed state at its start.
//!
//! Queries wait in one queue. A thread takes the next one as soon as it is done with the last,
//! so under load the threads run back to back without being woken; only a query that finds a
//! thread asleep wakes one (tokio's `spawn_blocking` would wake or spawn a thread for every
//! query, and allocate a task for it). The answer goes back over a oneshot channel.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;
use tresor_core::CoreError;

use crate::error::poisoned;
use crate::schema;

type Result<T> = std::result::Result<T, CoreError>;

/// A query with its answer channel, ready to run on any read connection.
type Job = Box<dyn FnOnce(&Connection) + Send>;

pub(crate) struct ReadPool {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a job is queued while a thread sleeps, and at close.
    work: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Threads waiting on `work`.
    sleeping: usize,
    closed: bool,
}

impl ReadPool {
    /// Opens `size` read connections (at least one) and starts a thread for each. Fails if a
    /// connection cannot be opened, before any thread starts.
    pub(crate) fn open(path: &Path, size: usize) -> Result<ReadPool> {
        let connections = (0..size.max(1))
            .map(|_| schema::open_reader(path))
            .collect::<Result<Vec<_>>>()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
        });
        let pool = ReadPool {
            shared: shared.clone(),
            threads: Mutex::new(Vec::new()),
        };
        for (i, conn) in connections.into_iter().enumerate() {
            let shared = shared.clone();
            let thread = std::thread::Builder::new()
                .name(format!("tresor-sqlite-read-{i}"))
                .spawn(move || shared.serve(conn))
                .map_err(|e| CoreError::Unavailable(format!("cannot start a read thread: {e}")))?;
            pool.threads
                .lock()
                .map_err(|_| poisoned("read threads"))?
                .push(thread);
        }
        Ok(pool)
    }

    /// Runs `query` on the next free read connection and waits for its answer.
    pub(crate) async fn run<T, F>(&self, query: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // The caller may have gone away; the read changed nothing.
            let _ = reply.send(query(conn));
        });
        self.shared.submit(job)?;
        answer
            .await
            .map_err(|_| CoreError::internal("a read failed on its thread"))?
    }
}

impl Shared {
    /// The queue's state. It is whole even after a panic elsewhere (nothing runs while it is
    /// held but a push or a pop), so a poisoned lock is taken as is: refusing it would strand
    /// the queued reads, whose callers would wait forever.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn submit(&self, job: Job) -> Result<()> {
        let wake = {
            let mut state = self.lock();
            if state.closed {
                return Err(CoreError::Unavailable("the read pool is closed".into()));
            }
            state.queue.push_back(job);
            state.sleeping > 0
        };
        if wake {
            self.work.notify_one();
        }
        Ok(())
    }

    /// A read thread: runs queued jobs until the pool closes and the queue is empty.
    fn serve(&self, conn: Connection) {
        while let Some(job) = self.next_job() {
            // A panicking query loses only its own answer (its caller sees a failed read); the
            // thread and its connection go on serving.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&conn)));
            if ran.is_err() {
                tracing::error!("a read query panicked");
            }
        }
    }

    fn next_job(&self) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.queue.pop_front() {
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state.sleeping += 1;
            state = self
                .work
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.sleeping -= 1;
        }
    }
}

impl ReadPool {
    /// Closes the queue: later queries are refused, queued ones still run. Hands back the
    /// threads to join (once); each closes its connection as it exits.
    pub(crate) fn close(&self) -> Vec<JoinHandle<()>> {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
        match self.threads.lock() {
            Ok(mut threads) => std::mem::take(&mut *threads),
            Err(poison) => std::mem::take(&mut *poison.into_inner()),
        }
    }
}

impl Drop for ReadPool {
    /// Closes the queue; the threads finish what is queued and exit on their own (not joined
    /// here: the pool may be dropped on an async thread; [`crate::SqliteBackend::shutdown`]
    /// joins them).
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(size: usize) -> (tempfile::TempDir, ReadPool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        rusqlite::Connection::open(&path)
            .and_then(|c| c.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x);"))
            .expect("a database");
        let pool = ReadPool::open(&path, size).expect("a pool");
        (dir, pool)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_queries_share_few_threads() {
        let (_dir, pool) = pool(2);
        let pool = Arc::new(pool);
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    pool.run(move |conn| {
                        let n: i64 = conn
                            .query_row("SELECT ?1 + 1", [i], |r| r.get(0))
                            .map_err(|e| crate::error::from_sqlite(&e))?;
                        Ok((n, std::thread::current().name().map(str::to_owned)))
                    })
                    .await
                })
            })
            .collect();
        let mut threads = std::collections::BTreeSet::new();
        for (i, t) in tasks.into_iter().enumerate() {
            let (n, name) = t.await.expect("joined").expect("answered");
            assert_eq!(n, i as i64 + 1);
            threads.insert(name.expect("a named thread"));
        }
        assert!(threads.len() <= 2, "{threads:?}");
        assert!(threads.iter().all(|n| n.starts_with("tresor-sqlite-read-")));
    }

    #[tokio::test]
    async fn a_panicking_query_fails_alone() {
        let (_dir, pool) = pool(1);
        let failed = pool
            .run(|_| -> Result<()> { panic!("a query that panics") })
            .await;
        assert!(failed.is_err());
        // The only thread survived and serves the next query.
        let n = pool
            .run(|conn| {
                conn.query_row("SELECT 41 + 1", [], |r| r.get::<_, i64>(0))
                    .map_err(|e| crate::error::from_sqlite(&e))
            })
            .await
            .expect("answered");
        assert_eq!(n, 42);
    }

    #[tokio::test]
    async fn a_closed_pool_refuses_at_once() {
        let (_dir, pool) = pool(1);
        pool.shared.lock().closed = true;
        assert!(matches!(
            pool.run(|_| Ok(())).await,
            Err(CoreError::Unavailable(_))
        ));
    }
}
