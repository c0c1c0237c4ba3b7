//! One measured case from start to end: the target (a server this tool spawned, or one given by
//! URL), the preload, the load, and the process readings around the measured window.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use http::HeaderValue;

use crate::client::Target;
use crate::preload::preload;
use crate::procfs;
use crate::report::{Readings, RunResult, Settings};
use crate::runner::{self, Pace};
use crate::server::SpawnedServer;
use crate::workload::{DataSet, Op, Workload};

/// The server under load.
pub enum Server {
    Spawned(SpawnedServer),
    External {
        url: String,
        admin_token: Option<String>,
        pid: Option<u32>,
    },
}

impl Server {
    /// Spawns `bin` (over a directory under `data_parent`; on PostgreSQL with
    /// `database_url`) or names a running server.
    pub async fn open(
        spawn: bool,
        bin: &Path,
        data_parent: Option<&Path>,
        database_url: Option<&str>,
        url: &str,
        admin_token: Option<String>,
        pid: Option<u32>,
    ) -> anyhow::Result<Server> {
        if spawn {
            let s = SpawnedServer::start(bin, data_parent, database_url, &[]).await?;
            eprintln!("spawned {} (pid {}) at {}", bin.display(), s.pid(), s.url);
            Ok(Server::Spawned(s))
        } else {
            Ok(Server::External {
                url: url.to_string(),
                admin_token,
                pid,
            })
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Server::Spawned(s) => &s.url,
            Server::External { url, .. } => url,
        }
    }

    pub fn admin_token(&self) -> Option<&str> {
        match self {
            Server::Spawned(s) => Some(&s.admin_token),
            Server::External { admin_token, .. } => admin_token.as_deref(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        match self {
            Server::Spawned(s) => Some(s.pid()),
            Server::External { pid, .. } => *pid,
        }
    }

    pub fn stop(self) -> anyhow::Result<()> {
        match self {
            Server::Spawned(s) => s.stop(),
            Server::External { .. } => Ok(()),
        }
    }
}

/// What the generator sends, apart from the pace.
#[derive(Debug, Clone)]
pub struct Load {
    pub op: Op,
    pub data: DataSet,
    pub batch_size: usize,
    /// The path of [`Op::Static`].
    pub path: String,
}

/// A target with its data set in place: preloaded once, measured many times.
pub struct Prepared {
    pub target: Target,
    pub tokens: Vec<HeaderValue>,
    pub pid: Option<u32>,
}

/// Preloads `data` through the API unless `op` needs none.
pub async fn prepare(
    server: &Server,
    data: &DataSet,
    needs_preload: bool,
) -> anyhow::Result<Prepared> {
    let target = Target::parse(server.url()).await?;
    let tokens = if needs_preload {
        let admin = server
            .admin_token()
            .context("an admin token is needed to preload (--admin-token or TRESOR_ADMIN_TOKEN)")?;
        let t0 = std::time::Instant::now();
        let tokens = preload(&target, admin, data).await?;
        eprintln!(
            "preloaded {} keys of {} B in {} installation(s) in {:.1} s",
            data.keys,
            data.value_size,
            data.installations,
            t0.elapsed().as_secs_f64()
        );
        tokens
    } else {
        Vec::new()
    };
    Ok(Prepared {
        target,
        tokens,
        pid: server.pid(),
    })
}

/// Readings when the measured window starts: server CPU s, generator CPU s, load average.
type WindowStart = (Option<f64>, f64, String, Option<f64>);

/// Runs `load` at `pace` against a prepared target and reads the processes around it.
pub async fn measure(
    p: &Prepared,
    load: &Load,
    pace: Pace,
    name: String,
) -> anyhow::Result<RunResult> {
    let tokens = if load.op.needs_preload() {
        p.tokens.clone()
    } else {
        Vec::new()
    };
    let workload = Workload::new(
        load.op,
        load.data.clone(),
        load.batch_size,
        tokens,
        &load.path,
    )?;
    measure_workload(p, load, Arc::new(workload), pace, name).await
}

/// [`measure`] with the workload already made (from `load`, perhaps restricted to some
/// installations).
pub async fn measure_workload(
    p: &Prepared,
    load: &Load,
    workload: Arc<Workload>,
    pace: Pace,
    name: String,
) -> anyhow::Result<RunResult> {
    let pid = p.pid;
    let at_start: Arc<Mutex<Option<WindowStart>>> = Arc::default();
    let slot = at_start.clone();
    let measured = runner::run(&p.target, workload, pace, move || {
        let reading = (
            pid.and_then(procfs::tree_cpu_seconds),
            procfs::own_cpu_seconds(),
            procfs::loadavg(),
            procfs::system_busy_seconds(),
        );
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(reading);
    })
    .await?;
    let (server_cpu0, gen_cpu0, loadavg, busy0) = at_start
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or((None, procfs::own_cpu_seconds(), procfs::loadavg(), None));
    let server_cpu_s = pid
        .and_then(procfs::tree_cpu_seconds)
        .zip(server_cpu0)
        .map(|(b, a)| b - a);
    let generator_cpu_s = procfs::own_cpu_seconds() - gen_cpu0;
    let readings = Readings {
        server_cpu_s,
        server_peak_rss_mib: pid.and_then(procfs::tree_peak_rss_mib),
        generator_cpu_s,
        other_cpu_s: others(busy0, server_cpu_s, generator_cpu_s),
        loadavg,
    };
    let settings = Settings {
        name,
        op: load.op.name().into(),
        concurrency: pace.concurrency,
        rate: pace.rate,
        value_size: load.data.value_size,
        keys: load.data.keys,
        installations: load.data.installations,
        ops_per_request: if load.op == Op::Batch {
            load.batch_size
        } else {
            1
        },
        warmup_s: pace.warmup.as_secs_f64(),
    };
    Ok(RunResult::new(&settings, &measured, readings))
}

/// CPU seconds of the other processes since `busy0` (all processors' busy time), given the
/// server's and the generator's.
pub fn others(busy0: Option<f64>, server: Option<f64>, generator: f64) -> Option<f64> {
    let busy = procfs::system_busy_seconds()? - busy0?;
    Some((busy - server.unwrap_or(0.0) - generator).max(0.0))
}

/// Seconds as a [`Duration`] (negative or NaN as zero).
pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// The server binary: `--server-bin`, else `tresor` beside this executable.
pub fn server_bin(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(crate::server::default_server_bin)
}
