//! The read pool: a few read-only connections, used on tokio's blocking threads so a query never
//! stalls an async worker. In WAL mode readers never wait for the writer, and each query sees
//! the last committed state at its start.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::Semaphore;
use tresor_core::CoreError;

use crate::error::poisoned;
use crate::schema;

type Result<T> = std::result::Result<T, CoreError>;

pub(crate) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection: at most that many reads run at once, the rest wait here,
    /// asynchronously.
    permits: Arc<Semaphore>,
}

impl ReadPool {
    pub(crate) fn open(path: &Path, size: usize) -> Result<Arc<ReadPool>> {
        let size = size.max(1);
        let idle = (0..size)
            .map(|_| schema::open_reader(path))
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(ReadPool {
            path: path.to_owned(),
            idle: Mutex::new(idle),
            permits: Arc::new(Semaphore::new(size)),
        }))
    }

    /// Runs `query` on a pooled connection on a blocking thread.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, query: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| CoreError::Unavailable("the read pool is closed".into()))?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = pool.take()?;
            let result = query(&conn);
            pool.give_back(conn);
            result
        })
        .await
        .map_err(|e| CoreError::internal(format!("a read task failed: {e}")))?
    }

    /// An idle connection. Holding a permit guarantees one exists, unless a query panicked and
    /// took its connection with it; then a fresh one replaces it.
    fn take(&self) -> Result<Connection> {
        let popped = self.idle.lock().map_err(|_| poisoned("read pool"))?.pop();
        match popped {
            Some(conn) => Ok(conn),
            None => schema::open_reader(&self.path),
        }
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
    }
}
