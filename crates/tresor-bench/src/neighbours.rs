//! `tresor-bench neighbours`: does one installation far past its rate limit slow the others?
//!
//! The tool spawns `tresor serve --rate-limit-per-installation R --rate-limit-burst B`, preloads
//! the keys over N installations, and then, `runs` times, measures the *quiet* installations
//! (1 … N−1: GETs, open loop, each at a share of R well within its limit, so none of their
//! requests may be refused) in three phases back to back:
//!
//! - **alone**: only the quiet installations send;
//! - **at its limit**: the same, while installation 0 sends GETs at exactly R (open loop, its
//!   own connections): what the limit lets it do, all answered;
//! - **over its limit**: the same, while installation 0 sends at `noisy_factor` × R, so most
//!   of its requests are answered 429.
//!
//! The check is the median over runs of the per-run ratio of the quiet p99 over the limit to
//! the quiet p99 at the limit (target ≤ 1.10), and no error at all among the quiet requests. The
//! reference is the neighbour at its limit, not a silent one: the limit's promise is that
//! sending *past* it costs the others nothing to speak of, while the R requests a second it
//! grants are served like anyone's and load the machine as much (the ratio to the silent
//! phase is reported as well). Odd runs take the phases in that order, even runs in the
//! reverse, so that a drift within a run (the store's checkpoints, the machine) does not
//! favour one phase. Since the quiet load is the same in every phase, the server's extra CPU
//! over the limit is what the refused requests cost; less the difference in answered requests
//! at the quiet requests' CPU each, it gives an estimate of the server's CPU per 429.
//!
//! The noisy client is a process of its own (this executable's hidden `noisy-client`
//! command), as a noisy tenant is another machine: sharing the measuring generator's runtime,
//! its tasks would queue before the quiet requests' wake-ups in the generator itself and be
//! charged to the server's tail. The quiet load and the client start at the same wall-clock
//! instant. The client's own CPU is reported apart from the generator's, and is taken out of
//! the "other processes" figure. `--noisy-nice` can lower its priority; the report says which
//! was used.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use http::HeaderValue;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::client::Target;
use crate::measure::{Load, Prepared, Server, measure_workload, prepare, secs};
use crate::report::{RunResult, median, median_of};
use crate::runner::Pace;
use crate::server::SpawnedServer;
use crate::suite::Check;
use crate::workload::{DataSet, Op, Workload};

/// The noisy installation.
pub const NOISY: usize = 0;
/// The target: quiet p99 with the noisy neighbour at most this times the quiet p99 alone.
pub const P99_TARGET: f64 = 1.10;

/// The scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The server's `--rate-limit-per-installation` (req/s).
    pub rate_limit: f64,
    /// The server's `--rate-limit-burst`.
    pub burst: u32,
    /// Installations; installation 0 is the noisy one, the others are quiet.
    pub installations: usize,
    pub keys: usize,
    pub value_size: usize,
    /// Each quiet installation's rate (req/s).
    pub quiet_rate_each: f64,
    /// The noisy installation's rate (req/s).
    pub noisy_rate: f64,
    /// Connections of the quiet load, and of the noisy load (each).
    pub concurrency: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub runs: usize,
    /// Worker threads of the noisy client's runtime.
    pub noisy_threads: usize,
    /// The noisy client's nice value (0: the same priority as the server and the generator).
    pub noisy_nice: i32,
}

impl Config {
    fn quiet(&self) -> Vec<usize> {
        (0..self.installations).filter(|&i| i != NOISY).collect()
    }

    fn quiet_pace(&self) -> Pace {
        self.pace(self.quiet_rate_each * (self.installations - 1) as f64)
    }

    fn pace(&self, rate: f64) -> Pace {
        Pace {
            concurrency: self.concurrency.max(1),
            warmup: secs(self.warmup_s),
            duration: secs(self.duration_s),
            rate: Some(rate),
        }
    }
}

/// What the noisy installation sent and got in the measured window.
#[derive(Debug, Clone, Serialize)]
pub struct Noisy {
    pub sent: u64,
    pub answered_429: u64,
    pub answered_2xx: u64,
    /// Anything else: other statuses and transport errors.
    pub other: u64,
    pub result: RunResult,
}

impl Noisy {
    fn new(result: RunResult) -> Noisy {
        let answered_429 = result.error_kinds.get("status 429").copied().unwrap_or(0);
        Noisy {
            sent: result.requests + result.errors,
            answered_429,
            answered_2xx: result.requests,
            other: result.errors - answered_429,
            result,
        }
    }
}

/// One phase: the quiet installations' figures, and the noisy one's when it sent.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub quiet: RunResult,
    pub noisy: Option<Noisy>,
}

/// One run: the three phases and what they compare to.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Whether this run took the phases in reverse order (over, at, alone).
    pub reversed: bool,
    pub alone: Phase,
    pub at_limit: Phase,
    pub over_limit: Phase,
    /// Quiet p99 with the neighbour over its limit / with it at its limit: the check.
    pub p99_ratio: f64,
    /// Quiet p99 with the neighbour over its limit / alone.
    pub p99_ratio_to_alone: f64,
    /// Quiet p99 with the neighbour at its limit / alone: what the granted rate costs.
    pub at_limit_p99_ratio_to_alone: f64,
    /// Server CPU µs per quiet request, alone.
    pub server_cpu_us_per_quiet_request: Option<f64>,
    /// Extra server CPU seconds over the limit, compared with at the limit.
    pub server_extra_cpu_s: Option<f64>,
    /// That extra CPU, less the difference in answered requests at the quiet requests' CPU
    /// each, per extra 429, in µs.
    pub server_cpu_us_per_429: Option<f64>,
    /// Extra generator CPU seconds over the limit, compared with at the limit (the quiet
    /// load's generator).
    pub generator_extra_cpu_s: f64,
    /// CPU seconds of the noisy client process in the window, at and over the limit.
    pub noisy_client_cpu_s: (f64, f64),
}

/// A phase with the noisy neighbour: the quiet figures (with the noisy client's CPU taken out
/// of the other processes') and the neighbour's.
fn with_neighbour(mut quiet: RunResult, noisy: RunResult) -> Phase {
    // The noisy client is a process of this benchmark, not another process competing.
    let client = noisy.generator_cpu_s;
    quiet.other_cpu_s = quiet.other_cpu_s.map(|o| (o - client).max(0.0));
    Phase {
        quiet,
        noisy: Some(Noisy::new(noisy)),
    }
}

impl Run {
    fn new(reversed: bool, alone: RunResult, at_limit: Phase, over_limit: Phase) -> Run {
        let per_quiet = alone
            .server_cpu_s
            .filter(|_| alone.requests > 0)
            .map(|c| c / alone.requests as f64);
        let (at, over) = (&at_limit.quiet, &over_limit.quiet);
        let noisy_of = |p: &Phase| {
            p.noisy
                .as_ref()
                .map(|n| (n.answered_2xx, n.answered_429, n.result.generator_cpu_s))
                .unwrap_or_default()
        };
        let (at_2xx, at_429, at_client) = noisy_of(&at_limit);
        let (over_2xx, over_429, over_client) = noisy_of(&over_limit);
        let extra = over.server_cpu_s.zip(at.server_cpu_s).map(|(b, a)| b - a);
        let extra_429 = over_429.saturating_sub(at_429);
        let per_429 = extra
            .zip(per_quiet)
            .filter(|_| extra_429 > 0)
            .map(|(extra, per_quiet)| {
                // The answered requests (quiet and noisy) differ a little between the phases.
                let answered = (over.requests + over_2xx) as f64 - (at.requests + at_2xx) as f64;
                (extra - answered * per_quiet) * 1e6 / extra_429 as f64
            });
        Run {
            reversed,
            p99_ratio: over.p99_ms / at.p99_ms,
            p99_ratio_to_alone: over.p99_ms / alone.p99_ms,
            at_limit_p99_ratio_to_alone: at.p99_ms / alone.p99_ms,
            server_cpu_us_per_quiet_request: per_quiet.map(|c| c * 1e6),
            server_extra_cpu_s: extra,
            server_cpu_us_per_429: per_429,
            generator_extra_cpu_s: over.generator_cpu_s - at.generator_cpu_s,
            noisy_client_cpu_s: (at_client, over_client),
            alone: Phase {
                quiet: alone,
                noisy: None,
            },
            at_limit,
            over_limit,
        }
    }
}

/// Every run, the medians and the checks.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub config: Config,
    pub runs: Vec<Run>,
    /// Median over runs of each quiet figure in each phase.
    pub median_alone: Option<RunResult>,
    pub median_at_limit: Option<RunResult>,
    pub median_over_limit: Option<RunResult>,
    /// Median over runs of the check's ratio (over / at the limit).
    pub median_p99_ratio: f64,
    /// Median over runs of the ratio over the limit / alone.
    pub median_p99_ratio_to_alone: f64,
    /// Median over runs of the ratio at the limit / alone.
    pub median_at_limit_p99_ratio_to_alone: f64,
    pub median_server_cpu_us_per_429: Option<f64>,
    pub checks: Vec<Check>,
}

/// Spawns the server with its limit, preloads, and measures `config.runs` runs.
pub async fn measure(
    config: Config,
    bin: &Path,
    data_parent: Option<&Path>,
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        config.installations >= 2,
        "at least two installations: one noisy, one quiet"
    );
    anyhow::ensure!(
        config.keys >= config.installations,
        "at least one key per installation"
    );
    let extra = [
        "--rate-limit-per-installation".to_string(),
        config.rate_limit.to_string(),
        "--rate-limit-burst".to_string(),
        config.burst.to_string(),
    ];
    let spawned = SpawnedServer::start(bin, data_parent, None, &extra).await?;
    eprintln!(
        "spawned {} (pid {}) at {} with {}",
        bin.display(),
        spawned.pid(),
        spawned.url,
        extra.join(" ")
    );
    let server = Server::Spawned(spawned);
    let load = Load {
        op: Op::Get,
        data: DataSet {
            store: "secrets".into(),
            keys: config.keys,
            installations: config.installations,
            value_size: config.value_size,
            reuse: false,
        },
        batch_size: 1,
        path: "/".into(),
    };
    let prepared = prepare(&server, &load.data, true).await?;
    let mut runs = Vec::new();
    for i in 1..=config.runs.max(1) {
        // Odd runs: alone, at, over; even runs: over, at, alone.
        let reversed = i % 2 == 0;
        eprintln!("run {i} of {}", config.runs.max(1));
        runs.push(one_run(&config, &prepared, &load, reversed).await?);
    }
    server.stop()?;
    Ok(report(config, runs))
}

async fn one_run(
    config: &Config,
    p: &Prepared,
    load: &Load,
    reversed: bool,
) -> anyhow::Result<Run> {
    let mut phases = [PhaseKind::Alone, PhaseKind::AtLimit, PhaseKind::OverLimit];
    if reversed {
        phases.reverse();
    }
    let (mut alone, mut at_limit, mut over_limit) = (None, None, None);
    for kind in phases {
        match kind {
            PhaseKind::Alone => {
                let quiet = quiet_phase(config, p, load, "alone").await?;
                println!("{}", quiet.line());
                alone = Some(quiet);
            }
            PhaseKind::AtLimit => {
                at_limit = Some(neighbour_phase(config, p, load, config.rate_limit, "at").await?);
            }
            PhaseKind::OverLimit => {
                over_limit =
                    Some(neighbour_phase(config, p, load, config.noisy_rate, "over").await?);
            }
        }
    }
    let (Some(alone), Some(at_limit), Some(over_limit)) = (alone, at_limit, over_limit) else {
        anyhow::bail!("a phase of the run did not take place");
    };
    let run = Run::new(reversed, alone, at_limit, over_limit);
    println!(
        "quiet p99 over the limit / at it {:.3} (/ alone {:.3}; at the limit / alone {:.3}); \
         server CPU per 429 {} µs",
        run.p99_ratio,
        run.p99_ratio_to_alone,
        run.at_limit_p99_ratio_to_alone,
        run.server_cpu_us_per_429
            .map(|c| format!("{c:.0}"))
            .unwrap_or_else(|| "?".into())
    );
    Ok(run)
}

#[derive(Clone, Copy)]
enum PhaseKind {
    Alone,
    AtLimit,
    OverLimit,
}

/// The quiet installations' load for one phase.
async fn quiet_phase(
    config: &Config,
    p: &Prepared,
    load: &Load,
    phase: &str,
) -> anyhow::Result<RunResult> {
    let workload = Workload::new(
        load.op,
        load.data.clone(),
        load.batch_size,
        p.tokens.clone(),
        &load.path,
    )?
    .only_installations(config.quiet())?;
    let name = format!(
        "quiet {} × {:.0} req/s {phase}",
        config.installations - 1,
        config.quiet_rate_each
    );
    measure_workload(p, load, Arc::new(workload), config.quiet_pace(), name).await
}

/// The quiet load while the noisy client sends at `rate`, both starting together.
async fn neighbour_phase(
    config: &Config,
    p: &Prepared,
    load: &Load,
    rate: f64,
    which: &str,
) -> anyhow::Result<Phase> {
    let start = unix_ms() + START_DELAY_MS;
    let client = NoisyClient::spawn(config, p, load, start, rate).await?;
    sleep_until_unix_ms(start).await;
    let quiet = quiet_phase(config, p, load, &format!("{which} limit")).await?;
    let noisy = client.finish().await?;
    println!("{}", quiet.line());
    println!("{}", noisy.line());
    Ok(with_neighbour(quiet, noisy))
}

/// How long after it is spawned the noisy client and the quiet load start: time for the
/// client to start, read its instructions and connect.
const START_DELAY_MS: u64 = 500;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn sleep_until_unix_ms(at: u64) {
    let now = unix_ms();
    if at > now {
        tokio::time::sleep(Duration::from_millis(at - now)).await;
    }
}

/// What the noisy client process is told, on its standard input: the tokens are the
/// throwaway server's, but still never on a command line.
#[derive(Serialize, Deserialize)]
struct NoisySpec {
    url: String,
    /// One `Authorization` value per installation (only the noisy one's is used).
    authorizations: Vec<String>,
    data: DataSet,
    rate: f64,
    concurrency: usize,
    warmup_s: f64,
    duration_s: f64,
    /// Wall-clock start, milliseconds since the Unix epoch.
    start_unix_ms: u64,
}

/// The noisy client process while it runs.
struct NoisyClient {
    child: tokio::process::Child,
}

impl NoisyClient {
    /// Starts this executable's `noisy-client` command: the noisy installation's GETs at
    /// `rate`, on `config.concurrency` connections, from `start`.
    async fn spawn(
        config: &Config,
        p: &Prepared,
        load: &Load,
        start: u64,
        rate: f64,
    ) -> anyhow::Result<NoisyClient> {
        let authorizations = p
            .tokens
            .iter()
            .map(|t| t.to_str().map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()
            .context("a token is not visible ASCII")?;
        let spec = NoisySpec {
            url: format!("http://{}", p.target.addr),
            authorizations,
            data: load.data.clone(),
            rate,
            concurrency: config.concurrency,
            warmup_s: config.warmup_s,
            duration_s: config.duration_s,
            start_unix_ms: start,
        };
        let exe = std::env::current_exe().context("finding this executable")?;
        let threads = config.noisy_threads.max(1).to_string();
        let mut cmd = if config.noisy_nice != 0 {
            let mut c = tokio::process::Command::new("nice");
            c.arg("-n").arg(config.noisy_nice.to_string()).arg(&exe);
            c
        } else {
            tokio::process::Command::new(&exe)
        };
        cmd.args(["--threads", &threads, "noisy-client"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} noisy-client", exe.display()))?;
        let mut stdin = child.stdin.take().context("the noisy client's stdin")?;
        stdin.write_all(&serde_json::to_vec(&spec)?).await?;
        // Closing it ends the client's read.
        drop(stdin);
        Ok(NoisyClient { child })
    }

    /// Waits for the client's result.
    async fn finish(self) -> anyhow::Result<RunResult> {
        let out = self.child.wait_with_output().await?;
        anyhow::ensure!(
            out.status.success(),
            "the noisy client failed ({})",
            out.status
        );
        serde_json::from_slice(&out.stdout).context("the noisy client's result")
    }
}

/// The hidden `noisy-client` command: reads a [`NoisySpec`] on standard input, sends the
/// noisy installation's load from its start instant, and writes its [`RunResult`] (its own
/// CPU as the generator's) as JSON on standard output.
pub async fn noisy_client() -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let spec: NoisySpec = serde_json::from_str(&input).context("the noisy client's spec")?;
    let tokens = spec
        .authorizations
        .iter()
        .map(|a| {
            let mut v = HeaderValue::from_str(a)?;
            v.set_sensitive(true);
            Ok(v)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let p = Prepared {
        target: Target::parse(&spec.url).await?,
        tokens,
        pid: None,
    };
    let load = Load {
        op: Op::Get,
        data: spec.data,
        batch_size: 1,
        path: "/".into(),
    };
    let workload = Workload::new(load.op, load.data.clone(), 1, p.tokens.clone(), "/")?
        .only_installations(vec![NOISY])?;
    let pace = Pace {
        concurrency: spec.concurrency.max(1),
        warmup: secs(spec.warmup_s),
        duration: secs(spec.duration_s),
        rate: Some(spec.rate),
    };
    sleep_until_unix_ms(spec.start_unix_ms).await;
    let result = measure_workload(
        &p,
        &load,
        Arc::new(workload),
        pace,
        format!("noisy {:.0} req/s", spec.rate),
    )
    .await?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

fn report(config: Config, runs: Vec<Run>) -> Report {
    let quiet_of = |phase: fn(&Run) -> &Phase| -> Vec<RunResult> {
        runs.iter().map(|r| phase(r).quiet.clone()).collect()
    };
    let median_by = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let ratio = median_by(|r| r.p99_ratio);
    let per_429: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.server_cpu_us_per_429)
        .collect();
    let quiet_errors: u64 = runs
        .iter()
        .map(|r| r.alone.quiet.errors + r.at_limit.quiet.errors + r.over_limit.quiet.errors)
        .sum();
    let answered_429 = |phase: fn(&Run) -> &Phase| -> u64 {
        runs.iter()
            .filter_map(|r| phase(r).noisy.as_ref())
            .map(|n| n.answered_429)
            .sum()
    };
    let checks = vec![
        Check {
            what: "quiet p99 with the neighbour over its limit / at its limit (median of per-run \
                   ratios)"
                .into(),
            measured: ratio,
            target: P99_TARGET,
            relation: "<=",
            met: Some(ratio <= P99_TARGET),
        },
        Check {
            what: "quiet requests not answered 2xx (all runs, all phases)".into(),
            measured: quiet_errors as f64,
            target: 0.0,
            relation: "<=",
            met: Some(quiet_errors == 0),
        },
        Check {
            what: "noisy requests answered 429 over its limit (all runs)".into(),
            measured: answered_429(|r| &r.over_limit) as f64,
            target: 0.0,
            relation: "–",
            met: None,
        },
        Check {
            what: "noisy requests answered 429 at its limit (all runs)".into(),
            measured: answered_429(|r| &r.at_limit) as f64,
            target: 0.0,
            relation: "–",
            met: None,
        },
    ];
    Report {
        config,
        median_alone: median_of(&quiet_of(|r| &r.alone)),
        median_at_limit: median_of(&quiet_of(|r| &r.at_limit)),
        median_over_limit: median_of(&quiet_of(|r| &r.over_limit)),
        median_p99_ratio: ratio,
        median_p99_ratio_to_alone: median_by(|r| r.p99_ratio_to_alone),
        median_at_limit_p99_ratio_to_alone: median_by(|r| r.at_limit_p99_ratio_to_alone),
        median_server_cpu_us_per_429: (!per_429.is_empty()).then(|| median(&per_429)),
        runs,
        checks,
    }
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

/// A row of the phases' table: its name, the median quiet figures, and the phase of a run.
type PhaseRow<'a> = (&'a str, Option<&'a RunResult>, fn(&Run) -> &Phase);

/// The report's tables, in Markdown.
pub fn markdown(r: &Report) -> String {
    let c = &r.config;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Limit {} req/s per installation (burst {}); {} installations, {} keys of {} B; quiet: \
         installations 1–{} at {} req/s each ({} req/s in all, open loop, {} connections); \
         noisy: installation 0 at {} req/s (its limit) and at {} req/s (open loop, {} \
         connections, its own process with {} thread(s){}); {} s measured after {} s of warm-up \
         per phase; {} run(s), odd runs alone → at → over the limit, even runs the reverse.",
        c.rate_limit,
        c.burst,
        c.installations,
        c.keys,
        c.value_size,
        c.installations - 1,
        c.quiet_rate_each,
        c.quiet_rate_each * (c.installations - 1) as f64,
        c.concurrency,
        c.rate_limit,
        c.noisy_rate,
        c.concurrency,
        c.noisy_threads,
        if c.noisy_nice == 0 {
            String::new()
        } else {
            format!(" at nice {}", c.noisy_nice)
        },
        c.duration_s,
        c.warmup_s,
        r.runs.len()
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| phase (median of runs) | quiet req/s | p50 ms | p99 ms | p99 ms per run | p99.9 ms | quiet errors | server CPU s | generator CPU s | noisy sent | noisy 429 | noisy 2xx | noisy client CPU s |"
    );
    let _ = writeln!(
        s,
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let phases: [PhaseRow; 3] = [
        ("alone", r.median_alone.as_ref(), |run| &run.alone),
        (
            "neighbour at its limit",
            r.median_at_limit.as_ref(),
            |run| &run.at_limit,
        ),
        (
            "neighbour over its limit",
            r.median_over_limit.as_ref(),
            |run| &run.over_limit,
        ),
    ];
    for (name, m, phase) in phases {
        let Some(m) = m else { continue };
        let per_run = r
            .runs
            .iter()
            .map(|run| format!("{:.3}", phase(run).quiet.p99_ms))
            .collect::<Vec<_>>()
            .join(" / ");
        let noisy: Vec<&Noisy> = r
            .runs
            .iter()
            .filter_map(|run| phase(run).noisy.as_ref())
            .collect();
        let noisy_median = |f: fn(&Noisy) -> f64, digits: usize| {
            if noisy.is_empty() {
                "–".to_string()
            } else {
                let v: Vec<f64> = noisy.iter().map(|n| f(n)).collect();
                format!("{:.digits$}", median(&v))
            }
        };
        let _ = writeln!(
            s,
            "| {name} | {:.0} | {:.3} | {:.3} | {} | {:.3} | {} | {} | {:.2} | {} | {} | {} | {} |",
            m.rps,
            m.p50_ms,
            m.p99_ms,
            per_run,
            m.p999_ms,
            m.errors,
            opt(m.server_cpu_s, 2),
            m.generator_cpu_s,
            noisy_median(|n| n.sent as f64, 0),
            noisy_median(|n| n.answered_429 as f64, 0),
            noisy_median(|n| n.answered_2xx as f64, 0),
            noisy_median(|n| n.result.generator_cpu_s, 2),
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| run | order | quiet p99 ms alone / at / over the limit | over / at (the check) | over / alone | at / alone | server CPU µs per quiet request | extra server CPU s over the limit | server CPU µs per 429 | others' CPU s alone / at / over | load (1 min) |"
    );
    let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|");
    for (i, run) in r.runs.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} / {:.3} / {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} / {} / {} | {} |",
            i + 1,
            if run.reversed {
                "over → alone"
            } else {
                "alone → over"
            },
            run.alone.quiet.p99_ms,
            run.at_limit.quiet.p99_ms,
            run.over_limit.quiet.p99_ms,
            run.p99_ratio,
            run.p99_ratio_to_alone,
            run.at_limit_p99_ratio_to_alone,
            opt(run.server_cpu_us_per_quiet_request, 0),
            opt(run.server_extra_cpu_s, 2),
            opt(run.server_cpu_us_per_429, 1),
            opt(run.alone.quiet.other_cpu_s, 1),
            opt(run.at_limit.quiet.other_cpu_s, 1),
            opt(run.over_limit.quiet.other_cpu_s, 1),
            run.alone.quiet.loadavg.split(' ').next().unwrap_or(""),
        );
    }
    let _ = writeln!(
        s,
        "| median | | | {:.3} | {:.3} | {:.3} | | | {} | | |",
        r.median_p99_ratio,
        r.median_p99_ratio_to_alone,
        r.median_at_limit_p99_ratio_to_alone,
        opt(r.median_server_cpu_us_per_429, 1),
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "| check | measured | target | met | measured / target |");
    let _ = writeln!(s, "|---|---:|---:|:---:|---:|");
    for c in &r.checks {
        let _ = match c.met {
            Some(met) if c.target != 0.0 => writeln!(
                s,
                "| {} | {:.3} | {} {} | {} | {:.2}× |",
                c.what,
                c.measured,
                c.relation,
                c.target,
                if met { "yes" } else { "**no**" },
                c.measured / c.target
            ),
            Some(met) => writeln!(
                s,
                "| {} | {} | {} {} | {} | – |",
                c.what,
                c.measured,
                c.relation,
                c.target,
                if met { "yes" } else { "**no**" },
            ),
            None => writeln!(s, "| {} | {} | (stated) | – | – |", c.what, c.measured),
        };
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Readings, Settings};
    use crate::runner::Measured;

    fn result(ok: u64, errors_429: u64, p99_ns: u64, cpu: f64) -> RunResult {
        let mut m = Measured::new(std::time::Duration::from_secs(10));
        for _ in 0..ok {
            m.latency.record(p99_ns).unwrap();
        }
        m.ok = ok;
        m.errors = errors_429;
        if errors_429 > 0 {
            m.error_kinds.insert("status 429".into(), errors_429);
        }
        let settings = Settings {
            name: "x".into(),
            op: "get".into(),
            concurrency: 1,
            rate: Some(1.0),
            value_size: 1,
            keys: 1,
            installations: 1,
            ops_per_request: 1,
            warmup_s: 0.0,
        };
        let readings = Readings {
            server_cpu_s: Some(cpu),
            ..Readings::default()
        };
        RunResult::new(&settings, &m, readings)
    }

    #[test]
    fn cpu_per_429_subtracts_the_answered_requests() {
        // Alone: 1000 quiet requests for 0.1 s (100 µs each). At the limit: the same quiet
        // requests and 100 noisy 2xx, 0.11 s. Over it: 100 noisy 2xx as well and 900 429s
        // for another 0.09 s: 100 µs each.
        let alone = result(1000, 0, 1_000_000, 0.1);
        let at = with_neighbour(
            result(1000, 0, 1_000_000, 0.11),
            result(100, 0, 1_000_000, 0.0),
        );
        let over = with_neighbour(
            result(1000, 0, 1_050_000, 0.2),
            result(100, 900, 1_000_000, 0.0),
        );
        let noisy = over.noisy.as_ref().unwrap();
        assert_eq!(noisy.sent, 1000);
        assert_eq!(noisy.answered_429, 900);
        assert_eq!(noisy.other, 0);
        let run = Run::new(false, alone, at, over);
        let per_429 = run.server_cpu_us_per_429.unwrap();
        assert!((per_429 - 100.0).abs() < 1e-6, "{per_429}");
        // The check compares over the limit with at it, not with alone.
        assert!((run.p99_ratio - 1.05).abs() < 0.01, "{}", run.p99_ratio);
        assert!((run.p99_ratio_to_alone - 1.05).abs() < 0.01);
    }

    #[test]
    fn the_check_is_the_median_of_the_per_run_ratios() {
        let run = |at_p99: u64, over_p99: u64| {
            let at = with_neighbour(result(1000, 0, at_p99, 0.1), result(100, 0, 1_000_000, 0.0));
            let over = with_neighbour(
                result(1000, 0, over_p99, 0.2),
                result(100, 900, 1_000_000, 0.0),
            );
            Run::new(false, result(1000, 0, 1_000_000, 0.1), at, over)
        };
        let runs = vec![
            run(1_000_000, 1_500_000),
            run(1_000_000, 1_050_000),
            run(1_000_000, 1_000_000),
        ];
        let r = report(config(), runs);
        assert!(
            (r.median_p99_ratio - 1.05).abs() < 0.01,
            "{}",
            r.median_p99_ratio
        );
        assert_eq!(r.checks[0].met, Some(true));
        assert_eq!(r.checks[2].measured, 2700.0);
        assert!(markdown(&r).contains("| neighbour over its limit |"));
    }

    fn config() -> Config {
        Config {
            rate_limit: 200.0,
            burst: 200,
            installations: 10,
            keys: 100,
            value_size: 16,
            quiet_rate_each: 100.0,
            noisy_rate: 2000.0,
            concurrency: 4,
            warmup_s: 0.0,
            duration_s: 1.0,
            runs: 3,
            noisy_threads: 1,
            noisy_nice: 0,
        }
    }
}
