//! The two ways of sending load.
//!
//! - **Closed loop** (no `--rate`): N workers, each with its own keep-alive connection, send
//!   a request, wait for the answer, send the next. Throughput is what the server sustains at
//!   that concurrency; latency is per request.
//! - **Open loop** (`--rate R`): a pacing thread releases request tickets at the fixed
//!   schedule `t0 + i/R` (a thread with `nanosleep`, since tokio's timer is only accurate to a
//!   millisecond); N workers take tickets in order and send at once. Latency is measured from
//!   the ticket's *intended* send time, so a server that stalls is charged for every request
//!   that should have been sent meanwhile (no coordinated omission). N bounds the requests in
//!   flight; a ticket waiting for a free worker counts its wait as latency.
//!
//! Both run a warm-up first (answers not counted), then the measured window; a request counts
//! in the window when it was (meant to be) sent inside it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{Mutex, mpsc};

use crate::client::{Conn, Target};
use crate::workload::{Rng, Workload};

/// How to send.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Requests per second for the open loop; closed loop when `None`.
    pub rate: Option<f64>,
}

/// What one measured window saw.
pub struct Measured {
    /// Latency of successful requests, in nanoseconds.
    pub latency: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub window: Duration,
}

impl Measured {
    pub fn new(window: Duration) -> Measured {
        Measured {
            latency: new_histogram(),
            ok: 0,
            errors: 0,
            error_kinds: BTreeMap::new(),
            window,
        }
    }

    fn merge(&mut self, other: Measured) {
        self.latency
            .add(&other.latency)
            .expect("histograms of equal bounds");
        self.ok += other.ok;
        self.errors += other.errors;
        for (k, v) in other.error_kinds {
            *self.error_kinds.entry(k).or_default() += v;
        }
    }

    fn error(&mut self, kind: String) {
        self.errors += 1;
        *self.error_kinds.entry(kind).or_default() += 1;
    }
}

/// 1 ns to 100 s at 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Sends `workload` to `target` as `pace` says; `on_window` is called when the measured
/// window starts (to read the server's CPU time there).
pub async fn run(
    target: &Target,
    workload: Arc<Workload>,
    pace: Pace,
    on_window: impl FnOnce() + Send + 'static,
) -> anyhow::Result<Measured> {
    let mut conns = Vec::with_capacity(pace.concurrency);
    for _ in 0..pace.concurrency.max(1) {
        conns.push(Conn::connect(target).await?);
    }
    let t0 = Instant::now();
    let window_start = t0 + pace.warmup;
    let end = window_start + pace.duration;
    let tickets = pace.rate.map(|rate| {
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || pacer(tx, t0, end, rate));
        Arc::new(Mutex::new(rx))
    });
    let mut handles = Vec::new();
    for (w, conn) in conns.into_iter().enumerate() {
        let workload = workload.clone();
        let tickets = tickets.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = Rng::new(w as u64 * 0x1000_0000 + 1);
            match tickets {
                None => closed_worker(conn, &workload, &mut rng, window_start, end).await,
                Some(t) => open_worker(conn, &workload, &mut rng, t, window_start).await,
            }
        }));
    }
    tokio::time::sleep_until(window_start.into()).await;
    on_window();
    let mut total = Measured::new(pace.duration);
    for h in handles {
        total.merge(h.await?);
    }
    Ok(total)
}

/// Sends the tickets `t0 + i/rate` until `end`, each at its time (late ones at once).
fn pacer(tx: mpsc::UnboundedSender<Instant>, t0: Instant, end: Instant, rate: f64) {
    let interval = Duration::from_secs_f64(1.0 / rate);
    for i in 0u32.. {
        let intended = t0 + interval * i;
        if intended >= end {
            return;
        }
        let now = Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        if tx.send(intended).is_err() {
            return;
        }
    }
}

async fn closed_worker(
    mut conn: Conn,
    workload: &Workload,
    rng: &mut Rng,
    window_start: Instant,
    end: Instant,
) -> Measured {
    let mut m = Measured::new(end - window_start);
    for seq in 0u64.. {
        let req = workload.request(rng, seq);
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let answer = conn.send(&req).await;
        if sent >= window_start {
            record(&mut m, answer, sent);
        }
    }
    m
}

async fn open_worker(
    mut conn: Conn,
    workload: &Workload,
    rng: &mut Rng,
    tickets: Arc<Mutex<mpsc::UnboundedReceiver<Instant>>>,
    window_start: Instant,
) -> Measured {
    let mut m = Measured::new(Duration::ZERO);
    for seq in 0u64.. {
        let Some(intended) = tickets.lock().await.recv().await else {
            break;
        };
        let req = workload.request(rng, seq);
        let answer = conn.send(&req).await;
        if intended >= window_start {
            record(&mut m, answer, intended);
        }
    }
    m
}

fn record(m: &mut Measured, answer: anyhow::Result<(u16, bytes::Bytes)>, since: Instant) {
    match answer {
        Ok((status, _)) if (200..300).contains(&status) => {
            m.ok += 1;
            let ns = since.elapsed().as_nanos().min(u64::MAX as u128) as u64;
            m.latency.saturating_record(ns.max(1));
        }
        Ok((status, _)) => m.error(format!("status {status}")),
        Err(e) => m.error(format!("transport: {}", root_cause(&e))),
    }
}

fn root_cause(e: &anyhow::Error) -> String {
    let mut s = e.root_cause().to_string();
    s.truncate(80);
    s
}
