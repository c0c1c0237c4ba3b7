//! `tresor-bench neighbours`: does one installation far past its rate limit slow the others?
//!
//! The tool spawns `tresor serve --rate-limit-per-installation R --rate-limit-burst B`, preloads
//! the keys over N installations, and then, `runs` times, measures the *quiet* installations
//! (1 … N−1: GETs, open loop, each at a share of R well within its limit, so none of their
//! requests may be refused) twice back to back:
//!
//! - **alone**: only the quiet installations send;
//! - **with noisy**: the same, while installation 0 sends GETs at `noisy_factor` × R (open loop,
//!   its own connections), so most of its requests are answered 429.
//!
//! The check is the median over runs of the per-run ratio of the quiet p99 with the noisy
//! neighbour to the quiet p99 alone (target ≤ 1.10), and no error at all among the quiet
//! requests. Since the quiet load is the same in both phases, the server's extra CPU in the
//! second phase is what the noisy installation cost; less its answered requests at the quiet
//! requests' CPU each, it gives an estimate of the server's CPU per 429.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

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

/// One run: both phases and what they compare to.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub alone: Phase,
    pub with_noisy: Phase,
    /// Quiet p99 with the noisy neighbour / quiet p99 alone.
    pub p99_ratio: f64,
    /// Server CPU µs per quiet request, alone.
    pub server_cpu_us_per_quiet_request: Option<f64>,
    /// Extra server CPU seconds with the noisy neighbour (its whole cost).
    pub server_extra_cpu_s: Option<f64>,
    /// That extra CPU, less the noisy 2xx at the quiet requests' CPU each, per 429, in µs.
    pub server_cpu_us_per_429: Option<f64>,
    /// Extra generator CPU seconds with the noisy neighbour.
    pub generator_extra_cpu_s: f64,
}

impl Run {
    fn new(alone: RunResult, quiet: RunResult, noisy: Noisy) -> Run {
        let per_quiet = alone
            .server_cpu_s
            .filter(|_| alone.requests > 0)
            .map(|c| c / alone.requests as f64);
        let extra = quiet
            .server_cpu_s
            .zip(alone.server_cpu_s)
            .map(|(b, a)| b - a);
        let per_429 =
            extra
                .zip(per_quiet)
                .filter(|_| noisy.answered_429 > 0)
                .map(|(extra, per_quiet)| {
                    // The quiet requests' counts differ a little between the phases.
                    let quiet_delta = quiet.requests as f64 - alone.requests as f64;
                    let answered = noisy.answered_2xx as f64 + quiet_delta;
                    (extra - answered * per_quiet) * 1e6 / noisy.answered_429 as f64
                });
        Run {
            p99_ratio: quiet.p99_ms / alone.p99_ms,
            server_cpu_us_per_quiet_request: per_quiet.map(|c| c * 1e6),
            server_extra_cpu_s: extra,
            server_cpu_us_per_429: per_429,
            generator_extra_cpu_s: quiet.generator_cpu_s - alone.generator_cpu_s,
            alone: Phase {
                quiet: alone,
                noisy: None,
            },
            with_noisy: Phase {
                quiet,
                noisy: Some(noisy),
            },
        }
    }
}

/// Every run, the medians and the checks.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub config: Config,
    pub runs: Vec<Run>,
    /// Median over runs of each quiet figure, alone and with the noisy neighbour.
    pub median_alone: Option<RunResult>,
    pub median_with_noisy: Option<RunResult>,
    pub median_p99_ratio: f64,
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
        eprintln!("run {i} of {}", config.runs.max(1));
        runs.push(one_run(&config, &prepared, &load).await?);
    }
    server.stop()?;
    Ok(report(config, runs))
}

async fn one_run(config: &Config, p: &Prepared, load: &Load) -> anyhow::Result<Run> {
    let workload = |only: Vec<usize>| -> anyhow::Result<Arc<Workload>> {
        let w = Workload::new(
            load.op,
            load.data.clone(),
            load.batch_size,
            p.tokens.clone(),
            &load.path,
        )?;
        Ok(Arc::new(w.only_installations(only)?))
    };
    let quiet_name = |phase: &str| {
        format!(
            "quiet {} × {:.0} req/s {phase}",
            config.installations - 1,
            config.quiet_rate_each
        )
    };
    let alone = measure_workload(
        p,
        load,
        workload(config.quiet())?,
        config.quiet_pace(),
        quiet_name("alone"),
    )
    .await?;
    println!("{}", alone.line());
    let (quiet, noisy) = tokio::join!(
        measure_workload(
            p,
            load,
            workload(config.quiet())?,
            config.quiet_pace(),
            quiet_name("with noisy"),
        ),
        measure_workload(
            p,
            load,
            workload(vec![NOISY])?,
            config.pace(config.noisy_rate),
            format!("noisy {:.0} req/s", config.noisy_rate),
        ),
    );
    let (quiet, noisy) = (quiet?, noisy?);
    println!("{}", quiet.line());
    println!("{}", noisy.line());
    let run = Run::new(alone, quiet, Noisy::new(noisy));
    println!(
        "quiet p99 ratio {:.3}; server CPU per 429 {} µs",
        run.p99_ratio,
        run.server_cpu_us_per_429
            .map(|c| format!("{c:.0}"))
            .unwrap_or_else(|| "?".into())
    );
    Ok(run)
}

fn report(config: Config, runs: Vec<Run>) -> Report {
    let alone: Vec<RunResult> = runs.iter().map(|r| r.alone.quiet.clone()).collect();
    let with: Vec<RunResult> = runs.iter().map(|r| r.with_noisy.quiet.clone()).collect();
    let ratio = median(&runs.iter().map(|r| r.p99_ratio).collect::<Vec<_>>());
    let per_429: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.server_cpu_us_per_429)
        .collect();
    let quiet_errors: u64 = runs
        .iter()
        .map(|r| r.alone.quiet.errors + r.with_noisy.quiet.errors)
        .sum();
    let answered_429: u64 = runs
        .iter()
        .filter_map(|r| r.with_noisy.noisy.as_ref())
        .map(|n| n.answered_429)
        .sum();
    let checks = vec![
        Check {
            what: "quiet p99 with the noisy neighbour / alone (median of per-run ratios)".into(),
            measured: ratio,
            target: P99_TARGET,
            relation: "<=",
            met: Some(ratio <= P99_TARGET),
        },
        Check {
            what: "quiet requests not answered 2xx (all runs, both phases)".into(),
            measured: quiet_errors as f64,
            target: 0.0,
            relation: "<=",
            met: Some(quiet_errors == 0),
        },
        Check {
            what: "noisy requests answered 429 (all runs)".into(),
            measured: answered_429 as f64,
            target: 0.0,
            relation: "–",
            met: None,
        },
    ];
    Report {
        config,
        median_alone: median_of(&alone),
        median_with_noisy: median_of(&with),
        median_p99_ratio: ratio,
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
         noisy: installation 0 at {} req/s (open loop, {} connections); {} s measured after {} s \
         of warm-up per phase; {} run(s).",
        c.rate_limit,
        c.burst,
        c.installations,
        c.keys,
        c.value_size,
        c.installations - 1,
        c.quiet_rate_each,
        c.quiet_rate_each * (c.installations - 1) as f64,
        c.concurrency,
        c.noisy_rate,
        c.concurrency,
        c.duration_s,
        c.warmup_s,
        r.runs.len()
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| phase (median of runs) | quiet req/s | quiet req/s per run | p50 ms | p99 ms | p99 ms per run | p99.9 ms | quiet errors | server CPU s | generator CPU s | noisy sent | noisy 429 | noisy 2xx |"
    );
    let _ = writeln!(
        s,
        "|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    let phases: [PhaseRow; 2] = [
        ("alone", r.median_alone.as_ref(), |run| &run.alone),
        ("with noisy", r.median_with_noisy.as_ref(), |run| {
            &run.with_noisy
        }),
    ];
    for (name, m, phase) in phases {
        let Some(m) = m else { continue };
        let per_run = |f: fn(&RunResult) -> String| {
            r.runs
                .iter()
                .map(|run| f(&phase(run).quiet))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let noisy: Vec<&Noisy> = r
            .runs
            .iter()
            .filter_map(|run| phase(run).noisy.as_ref())
            .collect();
        let noisy_median = |f: fn(&Noisy) -> u64| {
            if noisy.is_empty() {
                "–".to_string()
            } else {
                format!(
                    "{:.0}",
                    median(&noisy.iter().map(|n| f(n) as f64).collect::<Vec<_>>())
                )
            }
        };
        let _ = writeln!(
            s,
            "| {name} | {:.0} | {} | {:.3} | {:.3} | {} | {:.3} | {} | {} | {:.2} | {} | {} | {} |",
            m.rps,
            per_run(|q| format!("{:.0}", q.rps)),
            m.p50_ms,
            m.p99_ms,
            per_run(|q| format!("{:.3}", q.p99_ms)),
            m.p999_ms,
            m.errors,
            opt(m.server_cpu_s, 2),
            m.generator_cpu_s,
            noisy_median(|n| n.sent),
            noisy_median(|n| n.answered_429),
            noisy_median(|n| n.answered_2xx),
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| run | quiet p99 alone ms | quiet p99 with noisy ms | ratio | server CPU µs per quiet request | extra server CPU s with noisy | server CPU µs per 429 | extra generator CPU s | others' CPU s alone / with noisy | load (1 min) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for (i, run) in r.runs.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {:.2} | {} / {} | {} |",
            i + 1,
            run.alone.quiet.p99_ms,
            run.with_noisy.quiet.p99_ms,
            run.p99_ratio,
            opt(run.server_cpu_us_per_quiet_request, 0),
            opt(run.server_extra_cpu_s, 2),
            opt(run.server_cpu_us_per_429, 1),
            run.generator_extra_cpu_s,
            opt(run.alone.quiet.other_cpu_s, 1),
            opt(run.with_noisy.quiet.other_cpu_s, 1),
            run.alone.quiet.loadavg.split(' ').next().unwrap_or(""),
        );
    }
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
        // Alone: 1000 quiet requests for 0.1 s (100 µs each). With the noisy one: the same
        // quiet requests, 100 noisy 2xx (10 ms) and 900 429s for the other 0.09 s: 100 µs each.
        let alone = result(1000, 0, 1_000_000, 0.1);
        let quiet = result(1000, 0, 1_100_000, 0.2);
        let noisy = Noisy::new(result(100, 900, 1_000_000, 0.2));
        assert_eq!(noisy.sent, 1000);
        assert_eq!(noisy.answered_429, 900);
        assert_eq!(noisy.other, 0);
        let run = Run::new(alone, quiet, noisy);
        assert!((run.server_cpu_us_per_429.unwrap() - 100.0).abs() < 1e-6);
        assert!((run.p99_ratio - 1.1).abs() < 0.01, "{}", run.p99_ratio);
    }
}
