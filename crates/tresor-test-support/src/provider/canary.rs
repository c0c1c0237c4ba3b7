//! A bare TCP listener that records every connection and request head it receives, for asserting
//! that a credential never reaches a host it was not meant for (a redirect target, a host outside
//! `allowed_hosts`). It speaks just enough HTTP to answer `200 ok` and close.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A listener on `127.0.0.1:0`; stops when dropped.
pub struct CanaryListener {
    addr: SocketAddr,
    log: Arc<Mutex<CanaryLog>>,
    task: JoinHandle<()>,
}

impl CanaryListener {
    pub async fn start() -> CanaryListener {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("canary: bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("canary: local_addr: {e}"));
        let log = Arc::new(Mutex::new(CanaryLog::default()));
        let task = tokio::spawn(accept_loop(listener, log.clone()));
        CanaryListener { addr, log, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn hits(&self) -> usize {
        lock(&self.log).hits
    }

    /// The raw request head of each connection (up to the blank line, lossy UTF-8; whatever
    /// arrived when a connection sent no complete head, say a TLS hello).
    pub fn received(&self) -> Vec<String> {
        lock(&self.log).received.clone()
    }
}

impl Drop for CanaryListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Default)]
struct CanaryLog {
    hits: usize,
    received: Vec<String>,
}

const MAX_HEAD: usize = 64 << 10;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

fn lock(log: &Mutex<CanaryLog>) -> MutexGuard<'_, CanaryLog> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept_loop(listener: TcpListener, log: Arc<Mutex<CanaryLog>>) {
    // Owned here so that aborting the loop also aborts the connections in flight.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors and the like: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        lock(&log).hits += 1;
        connections.spawn(serve(stream, log.clone()));
    }
}

async fn serve(mut stream: TcpStream, log: Arc<Mutex<CanaryLog>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let read_head = async {
        while head.len() < MAX_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(buf.get(..n).unwrap_or_default()),
            }
        }
    };
    let _ = tokio::time::timeout(READ_TIMEOUT, read_head).await;
    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(head.len(), |p| p + 4);
    let text = String::from_utf8_lossy(head.get(..end).unwrap_or_default()).into_owned();
    // Recorded before answering, so a client that has its answer finds the head logged.
    lock(&log).received.push(text);
    let answer = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}
