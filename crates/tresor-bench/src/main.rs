//! `tresor-bench`: the load generator of the performance work. It sends the contract's
//! operations to a tresor server over HTTP/1.1 keep-alive connections, closed loop (N
//! connections) or open loop (a fixed rate, latency from the intended send time), after putting
//! its own data in place through the API, and reports throughput, latency percentiles, errors,
//! and the server's CPU time and peak RSS (with `--spawn`, which starts the server itself).
//! `sweep` measures across concurrencies and draws the chart; `nginx` and `pgbench` measure the
//! baselines; `suite` runs the whole set with its baselines, several times, and
//! `postgres` does the same for tresor over PostgreSQL against its floor (a minimal axum +
//! tokio-postgres service, `pg-floor`) and pgbench. `neighbours` measures whether one
//! installation far past its rate limit slows the others.
//!
//! See BENCHMARKS.md for how the published figures were made.

mod baseline;
mod chart;
mod client;
mod floor;
mod measure;
mod neighbours;
mod preload;
mod procfs;
mod report;
mod runner;
mod server;
mod suite;
mod workload;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::baseline::{Nginx, PgbenchScript, Postgres, STATIC_PATH};
use crate::floor::Floor;
use crate::measure::{Load, Server, measure, prepare, secs, server_bin};
use crate::report::{RunResult, median_of, write_json};
use crate::runner::Pace;
use crate::workload::{DataSet, Op};

#[derive(Parser)]
#[command(
    name = "tresor-bench",
    version,
    about = "Load generator for tresor's HTTP API"
)]
struct Cli {
    /// Threads of the generator's runtime (it shares the machine with the server).
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure one operation (optionally several times, with the median).
    Run(RunArgs),
    /// Measure GET and PUT (or --ops) at each concurrency, and draw throughput and p99 as a PNG.
    Sweep(SweepArgs),
    /// Baseline: a static 1 KiB file served by nginx, with this generator's settings.
    Nginx(NginxArgs),
    /// Baseline: pgbench point SELECT and durable UPSERT on a throwaway PostgreSQL.
    Pgbench(PgbenchArgs),
    /// The figures: baselines and tresor, --runs times, medians and ratios.
    Suite(SuiteArgs),
    /// The PostgreSQL figures: pgbench, the floor service and tresor over one throwaway
    /// cluster, --runs times, medians and ratios.
    Postgres(SuiteArgs),
    /// The floor service itself (started by `postgres`; the database URL comes from
    /// TRESOR_BENCH_FLOOR_DATABASE_URL).
    #[command(hide = true)]
    PgFloor(FloorArgs),
    /// Noisy neighbours: the quiet installations' latency alone and while one installation
    /// sends at ten times its rate limit, on a server spawned with that limit.
    Neighbours(NeighboursArgs),
    /// The noisy installation's load of `neighbours`, in a process of its own (started by
    /// `neighbours`; its instructions come on standard input).
    #[command(hide = true)]
    NoisyClient,
    /// Redraw a sweep's chart from its JSON.
    Chart(ChartArgs),
}

#[derive(Args, Clone)]
struct ServerArgs {
    /// Base URL of a running server (not used with --spawn).
    #[arg(long, default_value = "http://127.0.0.1:8200")]
    url: String,
    /// Admin token of that server, to preload (apps, accounts, installations).
    #[arg(long, env = "TRESOR_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Start `tresor serve` on a fresh data directory and a free port, and stop it at the end.
    #[arg(long)]
    spawn: bool,
    /// The tresor binary for --spawn [default: `tresor` beside this executable].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Where --spawn makes its data directory [default: the system's temporary directory].
    #[arg(long)]
    data_parent: Option<PathBuf>,
    /// Pid of a server given by --url, to report its CPU time and peak RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// With --spawn: run tresor over this PostgreSQL database instead of the embedded store
    /// (a root key file is made for it in the data directory).
    #[arg(long, env = "TRESOR_BENCH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

impl ServerArgs {
    async fn open(&self) -> anyhow::Result<Server> {
        Server::open(
            self.spawn,
            &server_bin(self.server_bin.clone()),
            self.data_parent.as_deref(),
            self.database_url.as_deref(),
            &self.url,
            self.admin_token.clone(),
            self.server_pid,
        )
        .await
    }
}

#[derive(Args, Clone)]
struct LoadArgs {
    /// Connections (closed loop: requests in flight; open loop: at most in flight).
    #[arg(short = 'c', long, default_value_t = 32)]
    concurrency: usize,
    /// Bytes of each value (its compact JSON).
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Keys preloaded and drawn from (uniformly).
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Installations the keys are spread over (each with its own token).
    #[arg(long, default_value_t = 1)]
    installations: usize,
    /// The record store: secrets, settings or kv.
    #[arg(long, default_value = "secrets")]
    store: String,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Open loop at this many requests per second (latency from the intended send time).
    #[arg(long)]
    rate: Option<f64>,
    /// PUTs per atomic batch (--op batch).
    #[arg(long, default_value_t = 10)]
    batch_size: usize,
    /// The path of --op static.
    #[arg(long, default_value = "/")]
    path: String,
    /// The server (--url) already holds this data set from an earlier run: skip putting the
    /// records, only mint a token per installation (for the 1,000,000-record case).
    #[arg(long)]
    reuse_data: bool,
}

impl LoadArgs {
    fn data(&self) -> DataSet {
        DataSet {
            store: self.store.clone(),
            keys: self.keys.max(1),
            installations: self.installations.clamp(1, self.keys.max(1)),
            value_size: self.value_size,
            reuse: self.reuse_data,
        }
    }

    fn load(&self, op: Op) -> Load {
        Load {
            op,
            data: self.data(),
            batch_size: self.batch_size,
            path: self.path.clone(),
        }
    }

    fn pace(&self, concurrency: usize) -> Pace {
        Pace {
            concurrency: concurrency.max(1),
            warmup: secs(self.warmup),
            duration: secs(self.duration),
            rate: self.rate,
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    load: LoadArgs,
    /// What to send.
    #[arg(long, value_enum, default_value_t = Op::Get)]
    op: Op,
    /// Measured windows (on one server and data set); the median is printed last.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Write the results (each run, and the median) as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct SweepArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    load: LoadArgs,
    /// Operations swept.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "get,put")]
    ops: Vec<Op>,
    /// Concurrencies swept.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,4,8,16,32,64,128,256"
    )]
    levels: Vec<usize>,
    /// The chart.
    #[arg(long, default_value = "sweep.png")]
    png: PathBuf,
    /// TrueType font for the chart's text.
    #[arg(long, default_value = chart::DEFAULT_FONT)]
    font: PathBuf,
    /// Write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct NginxArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// The nginx binary.
    #[arg(long, default_value = "nginx")]
    nginx_bin: PathBuf,
    #[arg(long, default_value_t = 1)]
    runs: usize,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct PgbenchArgs {
    /// pgbench clients.
    #[arg(short = 'c', long, default_value_t = 32)]
    clients: usize,
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// PostgreSQL's server binaries [default: the newest /usr/lib/postgresql/*/bin].
    #[arg(long)]
    pg_bin: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    runs: usize,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct SuiteArgs {
    /// Runs (each: every baseline and every case).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// The tresor binary [default: `tresor` beside this executable].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    #[arg(long, default_value = "nginx")]
    nginx_bin: PathBuf,
    #[arg(long)]
    pg_bin: Option<PathBuf>,
    /// Write every result, the medians and the checks as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the tables as Markdown.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

#[derive(Args)]
struct NeighboursArgs {
    /// The server's --rate-limit-per-installation (req/s).
    #[arg(long, default_value_t = 200.0)]
    rate_limit: f64,
    /// The server's --rate-limit-burst [default: one second's worth, ceil(--rate-limit)].
    #[arg(long)]
    burst: Option<u32>,
    /// Installations: installation 0 is the noisy one, the others are quiet.
    #[arg(long, default_value_t = 10)]
    installations: usize,
    /// Each quiet installation's rate, as a fraction of the limit.
    #[arg(long, default_value_t = 0.5)]
    quiet_share: f64,
    /// The noisy installation's rate, as a multiple of the limit.
    #[arg(long, default_value_t = 10.0)]
    noisy_factor: f64,
    /// Connections of the quiet load and of the noisy load (each; at most in flight).
    #[arg(short = 'c', long, default_value_t = 32)]
    concurrency: usize,
    /// Runs (each: the quiet installations alone, then with the noisy one).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Worker threads of the noisy client process.
    #[arg(long, default_value_t = 1)]
    noisy_threads: usize,
    /// Nice value of the noisy client process (e.g. 19 to stand for a client on other
    /// cores); 0 runs it at the generator's priority.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    noisy_nice: i32,
    /// Seconds measured per phase.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before each phase's measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// The tresor binary [default: `tresor` beside this executable].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Where the server's data directory is made [default: the system's temporary directory].
    #[arg(long)]
    data_parent: Option<PathBuf>,
    /// Write every run, the medians and the checks as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the tables as Markdown.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

#[derive(Args)]
struct FloorArgs {
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Connections to PostgreSQL (tresor's default pool size).
    #[arg(long, default_value_t = 16)]
    pool: usize,
    #[arg(long, env = "TRESOR_BENCH_FLOOR_DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

#[derive(Args)]
struct ChartArgs {
    /// A sweep's JSON (`--json` of `sweep`).
    json: PathBuf,
    #[arg(long, default_value = "sweep.png")]
    png: PathBuf,
    #[arg(long, default_value = chart::DEFAULT_FONT)]
    font: PathBuf,
    #[arg(long, default_value = "tresor")]
    title: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Run(a) => run(a).await,
            Command::Sweep(a) => sweep(a).await,
            Command::Nginx(a) => nginx(a).await,
            Command::Pgbench(a) => pgbench(a),
            Command::Suite(a) => suite(a).await,
            Command::Postgres(a) => postgres(a).await,
            Command::Neighbours(a) => neighbours(a).await,
            Command::NoisyClient => neighbours::noisy_client().await,
            Command::PgFloor(a) => floor::serve(a.listen, &a.database_url, a.pool).await,
            Command::Chart(a) => {
                let results: Vec<RunResult> =
                    serde_json::from_str(&std::fs::read_to_string(&a.json)?)?;
                chart::draw(&a.png, &results, &a.title, &a.font)?;
                println!("wrote {}", a.png.display());
                Ok(())
            }
        }
    })
}

/// Prints each result, then the median when there are several; writes them as JSON.
fn finish(results: Vec<RunResult>, json: Option<&PathBuf>) -> anyhow::Result<()> {
    let median = (results.len() > 1).then(|| median_of(&results)).flatten();
    if let Some(m) = &median {
        println!("{}", m.line());
    }
    if let Some(path) = json {
        write_json(
            path,
            &serde_json::json!({"runs": results, "median": median}),
        )?;
    }
    anyhow::ensure!(
        results.iter().all(|r| r.requests > 0),
        "a run completed no request"
    );
    Ok(())
}

async fn run(a: RunArgs) -> anyhow::Result<()> {
    let server = a.server.open().await?;
    let load = a.load.load(a.op);
    let prepared = prepare(&server, &load.data, a.op.needs_preload()).await?;
    let mut results = Vec::new();
    for _ in 0..a.runs.max(1) {
        let name = format!("{} c={}", a.op.name(), a.load.concurrency);
        let r = measure(&prepared, &load, a.load.pace(a.load.concurrency), name).await?;
        println!("{}", r.line());
        results.push(r);
    }
    server.stop()?;
    finish(results, a.json.as_ref())
}

async fn sweep(a: SweepArgs) -> anyhow::Result<()> {
    let server = a.server.open().await?;
    let data = a.load.data();
    let prepared = prepare(&server, &data, true).await?;
    let mut results = Vec::new();
    for &op in &a.ops {
        for &c in &a.levels {
            let r = measure(
                &prepared,
                &a.load.load(op),
                a.load.pace(c),
                format!("{} c={c}", op.name()),
            )
            .await?;
            println!("{}", r.line());
            results.push(r);
        }
    }
    server.stop()?;
    if let Some(path) = &a.json {
        write_json(path, &results)?;
    }
    let title = format!(
        "tresor, embedded store: {} B values, {} keys, {:.0} s per point",
        data.value_size, data.keys, a.load.duration
    );
    chart::draw(&a.png, &results, &title, &a.font)?;
    println!("wrote {}", a.png.display());
    Ok(())
}

async fn nginx(a: NginxArgs) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for _ in 0..a.runs.max(1) {
        results.push(nginx_once(&a.nginx_bin, &a.load).await?);
        println!("{}", results.last().map(|r| r.line()).unwrap_or_default());
    }
    finish(results, a.json.as_ref())
}

async fn nginx_once(bin: &std::path::Path, load: &LoadArgs) -> anyhow::Result<RunResult> {
    let nginx = Nginx::start(bin).await?;
    let server = Server::External {
        url: nginx.url.clone(),
        admin_token: None,
        pid: Some(nginx.pid()),
    };
    let prepared = prepare(&server, &load.data(), false).await?;
    let mut l = load.load(Op::Static);
    l.path = STATIC_PATH.into();
    let r = measure(
        &prepared,
        &l,
        load.pace(load.concurrency),
        format!("nginx static c={}", load.concurrency),
    )
    .await?;
    nginx.stop()?;
    Ok(r)
}

fn pgbench(a: PgbenchArgs) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for _ in 0..a.runs.max(1) {
        let pg = Postgres::start(a.pg_bin.as_deref(), a.keys, a.value_size)?;
        for script in [PgbenchScript::Select, PgbenchScript::Upsert] {
            let r = pg.pgbench(script, a.clients, secs(a.warmup), secs(a.duration))?;
            println!("{}", r.line());
            results.push(r);
        }
        pg.stop()?;
    }
    if let Some(path) = &a.json {
        write_json(path, &results)?;
    }
    Ok(())
}

/// The load of the suites' cases (one installation, the secrets store).
fn suite_load(a: &SuiteArgs) -> LoadArgs {
    LoadArgs {
        concurrency: 32,
        value_size: a.value_size,
        keys: a.keys,
        installations: 1,
        store: "secrets".into(),
        duration: a.duration,
        warmup: a.warmup,
        rate: None,
        batch_size: 10,
        path: "/".into(),
        reuse_data: false,
    }
}

/// tresor's cases in a suite: GET, PUT and PATCH at 32 connections, GET and PUT at 1.
const TRESOR_CASES: [(Op, usize); 5] = [
    (Op::Get, 32),
    (Op::Put, 32),
    (Op::Patch, 32),
    (Op::Get, 1),
    (Op::Put, 1),
];

async fn suite(a: SuiteArgs) -> anyhow::Result<()> {
    let load = suite_load(&a);
    let bin = server_bin(a.server_bin.clone());
    let mut runs: Vec<suite::Run> = Vec::new();
    for i in 1..=a.runs.max(1) {
        eprintln!("run {i} of {}", a.runs.max(1));
        let mut run = suite::Run::new();
        let mut keep = |r: RunResult| {
            println!("{}", r.line());
            run.insert(r.name.clone(), r);
        };
        keep(
            nginx_once(&a.nginx_bin, &load)
                .await
                .context("nginx baseline")?,
        );
        let pg = Postgres::start(a.pg_bin.as_deref(), a.keys, a.value_size)
            .context("PostgreSQL baseline")?;
        for script in [PgbenchScript::Select, PgbenchScript::Upsert] {
            keep(pg.pgbench(script, 32, secs(a.warmup), secs(a.duration))?);
        }
        pg.stop()?;
        let server = Server::open(true, &bin, None, None, "", None, None).await?;
        let prepared = prepare(&server, &load.data(), true).await?;
        for (op, c) in TRESOR_CASES {
            let name = format!("tresor {} c={c}", op.name());
            keep(measure(&prepared, &load.load(op), load.pace(c), name).await?);
        }
        server.stop()?;
        runs.push(run);
    }
    report_suite(&a, &runs, &suite::EMBEDDED)
}

async fn postgres(a: SuiteArgs) -> anyhow::Result<()> {
    let load = suite_load(&a);
    let bin = server_bin(a.server_bin.clone());
    let mut runs: Vec<suite::Run> = Vec::new();
    for i in 1..=a.runs.max(1) {
        eprintln!("run {i} of {}", a.runs.max(1));
        let mut run = suite::Run::new();
        let mut keep = |r: RunResult| {
            println!("{}", r.line());
            run.insert(r.name.clone(), r);
        };
        let pg = Postgres::start(a.pg_bin.as_deref(), a.keys, a.value_size)
            .context("PostgreSQL baseline")?;
        for script in [PgbenchScript::Select, PgbenchScript::Upsert] {
            keep(pg.pgbench(script, 32, secs(a.warmup), secs(a.duration))?);
        }
        // The floor, on the baseline's table (the UPSERTs above only rewrote its values).
        let floor = Floor::start(&pg.url("postgres"), FLOOR_POOL).await?;
        let prepared = measure::Prepared {
            target: client::Target::parse(&floor.url).await?,
            tokens: vec![http::HeaderValue::from_static("Bearer floor")],
            pid: Some(floor.pid()),
        };
        for op in [Op::Get, Op::Put] {
            let name = format!("floor {} c=32", op.name());
            keep(measure(&prepared, &load.load(op), load.pace(32), name).await?);
        }
        floor.stop()?;
        // tresor, on its own database in the same cluster.
        pg.create_database("tresor")?;
        let server =
            Server::open(true, &bin, None, Some(&pg.url("tresor")), "", None, None).await?;
        let prepared = prepare(&server, &load.data(), true).await?;
        for (op, c) in TRESOR_CASES {
            let name = format!("tresor-pg {} c={c}", op.name());
            keep(measure(&prepared, &load.load(op), load.pace(c), name).await?);
        }
        server.stop()?;
        pg.stop()?;
        runs.push(run);
    }
    report_suite(&a, &runs, &suite::POSTGRES)
}

/// The floor's pool: as many connections as tresor keeps by default
/// (`--database-max-connections`).
const FLOOR_POOL: usize = 16;

/// Prints a suite's tables and writes them as Markdown and JSON.
fn report_suite(a: &SuiteArgs, runs: &[suite::Run], which: &suite::Suite) -> anyhow::Result<()> {
    let md = suite::markdown(runs, which);
    println!("\n{md}");
    if let Some(path) = &a.markdown {
        std::fs::write(path, &md)?;
    }
    if let Some(path) = &a.json {
        write_json(
            path,
            &serde_json::json!({
                "runs": runs,
                "medians": suite::medians(runs, which.cases),
                "checks": (which.checks)(runs),
            }),
        )?;
    }
    Ok(())
}

async fn neighbours(a: NeighboursArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.rate_limit.is_finite() && a.rate_limit > 0.0,
        "--rate-limit must be positive"
    );
    let config = neighbours::Config {
        rate_limit: a.rate_limit,
        burst: a
            .burst
            .unwrap_or_else(|| a.rate_limit.ceil().clamp(1.0, f64::from(u32::MAX)) as u32)
            .max(1),
        installations: a.installations,
        keys: a.keys,
        value_size: a.value_size,
        quiet_rate_each: a.rate_limit * a.quiet_share,
        noisy_rate: a.rate_limit * a.noisy_factor,
        concurrency: a.concurrency,
        warmup_s: a.warmup,
        duration_s: a.duration,
        runs: a.runs.max(1),
        noisy_threads: a.noisy_threads.max(1),
        noisy_nice: a.noisy_nice,
    };
    let bin = server_bin(a.server_bin.clone());
    let report = neighbours::measure(config, &bin, a.data_parent.as_deref()).await?;
    let md = neighbours::markdown(&report);
    println!("\n{md}");
    if let Some(path) = &a.markdown {
        std::fs::write(path, &md)?;
    }
    if let Some(path) = &a.json {
        write_json(path, &report)?;
    }
    Ok(())
}
