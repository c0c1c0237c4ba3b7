//! `tresor-bench suite` and `tresor-bench postgres`: the figures of the performance issue in
//! one command each. Each run measures the baselines and tresor back to back, so every ratio
//! compares figures of the same run; the report gives the median over runs of each figure and
//! of each ratio, next to the targets.
//!
//! - [`EMBEDDED`]: nginx static file, pgbench SELECT and UPSERT, then a freshly spawned tresor
//!   on the embedded store: GET, PUT and PATCH at 32 connections, GET and PUT at 1.
//! - [`POSTGRES`]: on one throwaway PostgreSQL cluster, pgbench SELECT and UPSERT, the minimal
//!   axum + tokio-postgres service running the same statements ([`crate::floor`]), then a
//!   freshly spawned tresor over the same cluster, with the same cases as the embedded suite.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::report::{RunResult, median, median_of};

/// A target of the issue, checked against the median figures, or a ratio the issue asks to
/// state without a target (`relation` "–", `met` `None`).
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub measured: f64,
    pub target: f64,
    /// `>=`, `<=`, or `–` for a figure only stated.
    pub relation: &'static str,
    pub met: Option<bool>,
}

/// Which cases a suite's table shows, in order, and the checks on them.
pub struct Suite {
    pub cases: &'static [&'static str],
    pub checks: fn(&[Run]) -> Vec<Check>,
}

/// The embedded store against nginx and pgbench.
pub const EMBEDDED: Suite = Suite {
    cases: &CASES,
    checks,
};

/// tresor over PostgreSQL against the floor service and pgbench.
pub const POSTGRES: Suite = Suite {
    cases: &PG_CASES,
    checks: pg_checks,
};

/// Cases of one run, by name.
pub type Run = BTreeMap<String, RunResult>;

pub const NGINX: &str = "nginx static c=32";
pub const PG_SELECT: &str = "pgbench select c=32";
pub const PG_UPSERT: &str = "pgbench upsert c=32";
pub const GET32: &str = "tresor get c=32";
pub const PUT32: &str = "tresor put c=32";
pub const PATCH32: &str = "tresor patch c=32";
pub const GET1: &str = "tresor get c=1";
pub const PUT1: &str = "tresor put c=1";

/// The order of the table.
pub const CASES: [&str; 8] = [
    NGINX, PG_SELECT, PG_UPSERT, GET32, PUT32, PATCH32, GET1, PUT1,
];

pub const FLOOR_GET: &str = "floor get c=32";
pub const FLOOR_PUT: &str = "floor put c=32";
pub const PG_GET32: &str = "tresor-pg get c=32";
pub const PG_PUT32: &str = "tresor-pg put c=32";
pub const PG_PATCH32: &str = "tresor-pg patch c=32";
pub const PG_GET1: &str = "tresor-pg get c=1";
pub const PG_PUT1: &str = "tresor-pg put c=1";

/// The order of the PostgreSQL table.
pub const PG_CASES: [&str; 9] = [
    PG_SELECT, PG_UPSERT, FLOOR_GET, FLOOR_PUT, PG_GET32, PG_PUT32, PG_PATCH32, PG_GET1, PG_PUT1,
];

/// The median over runs of `num.rps / den.rps`, each ratio taken within one run.
pub fn ratio(runs: &[Run], num: &str, den: &str) -> f64 {
    let per_run: Vec<f64> = runs
        .iter()
        .filter_map(|r| Some(r.get(num)?.rps / r.get(den)?.rps))
        .collect();
    median(&per_run)
}

/// The median result of each of `cases` over the runs.
pub fn medians(runs: &[Run], cases: &[&str]) -> BTreeMap<String, RunResult> {
    cases
        .iter()
        .filter_map(|case| {
            let all: Vec<RunResult> = runs.iter().filter_map(|r| r.get(*case).cloned()).collect();
            Some((case.to_string(), median_of(&all)?))
        })
        .collect()
}

/// Collects checks, leaving out figures that were not measured.
#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn push(&mut self, what: &str, measured: f64, relation: &'static str, target: f64) {
        if measured.is_finite() {
            let met = match relation {
                ">=" => Some(measured >= target),
                "<=" => Some(measured <= target),
                _ => None,
            };
            self.0.push(Check {
                what: what.into(),
                measured,
                target,
                relation,
                met,
            });
        }
    }

    /// A ratio the issue asks to state, without a target.
    fn state(&mut self, what: &str, measured: f64) {
        self.push(what, measured, "–", f64::NAN);
    }
}

/// The targets that the embedded suite checks (the 1M-record case needs its own
/// setup; PostgreSQL is [`pg_checks`]).
pub fn checks(runs: &[Run]) -> Vec<Check> {
    let m = medians(runs, &CASES);
    let mut out = Checks::default();
    let p = |case: &str, f: fn(&RunResult) -> f64| m.get(case).map(f).unwrap_or(f64::NAN);
    let mut push = |what: &str, measured: f64, relation: &'static str, target: f64| {
        out.push(what, measured, relation, target)
    };
    push(
        "GET c=32 / nginx req/s",
        ratio(runs, GET32, NGINX),
        ">=",
        0.8,
    );
    push("GET c=32 p99 (ms)", p(GET32, |r| r.p99_ms), "<=", 5.0);
    push("GET c=1 p50 (ms)", p(GET1, |r| r.p50_ms), "<=", 0.1);
    push(
        "PUT c=32 / pgbench UPSERT req/s",
        ratio(runs, PUT32, PG_UPSERT),
        ">=",
        1.5,
    );
    push("PUT c=32 p99 (ms)", p(PUT32, |r| r.p99_ms), "<=", 10.0);
    push(
        "PATCH c=32 / pgbench UPSERT req/s",
        ratio(runs, PATCH32, PG_UPSERT),
        ">=",
        1.5,
    );
    push("PATCH c=32 p99 (ms)", p(PATCH32, |r| r.p99_ms), "<=", 10.0);
    push("PUT c=1 p50 (ms)", p(PUT1, |r| r.p50_ms), "<=", 0.35);
    push("PUT c=1 p99 (ms)", p(PUT1, |r| r.p99_ms), "<=", 1.0);
    out.0
}

/// The PostgreSQL targets: at least 0.8× the floor service, and the gaps to pgbench stated.
pub fn pg_checks(runs: &[Run]) -> Vec<Check> {
    let mut out = Checks::default();
    for (what, num, den) in [
        ("GET c=32 / floor GET req/s", PG_GET32, FLOOR_GET),
        ("PUT c=32 / floor PUT req/s", PG_PUT32, FLOOR_PUT),
        ("PATCH c=32 / floor PUT req/s", PG_PATCH32, FLOOR_PUT),
    ] {
        out.push(what, ratio(runs, num, den), ">=", 0.8);
    }
    for (what, num, den) in [
        ("GET c=32 / pgbench SELECT req/s", PG_GET32, PG_SELECT),
        ("PUT c=32 / pgbench UPSERT req/s", PG_PUT32, PG_UPSERT),
        ("floor GET / pgbench SELECT req/s", FLOOR_GET, PG_SELECT),
        ("floor PUT / pgbench UPSERT req/s", FLOOR_PUT, PG_UPSERT),
    ] {
        out.state(what, ratio(runs, num, den));
    }
    out.0
}

/// The report as Markdown: figures per case (medians, and each run's req/s), then the targets.
pub fn markdown(runs: &[Run], suite: &Suite) -> String {
    let m = medians(runs, suite.cases);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| case | req/s (median) | req/s per run | p50 ms | p90 ms | p99 ms | p99.9 ms | server CPU µs/req | server peak RSS MiB | errors |"
    );
    let _ = writeln!(s, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for &case in suite.cases {
        let Some(r) = m.get(case) else { continue };
        let per_run: Vec<String> = runs
            .iter()
            .filter_map(|run| run.get(case).map(|x| format!("{:.0}", x.rps)))
            .collect();
        let cpu = r
            .server_cpu_s
            .filter(|_| r.requests > 0)
            .map(|c| format!("{:.0}", c * 1e6 / (r.rps * r.duration_s)))
            .unwrap_or_else(|| "–".into());
        let rss = r
            .server_peak_rss_mib
            .map(|x| format!("{x:.0}"))
            .unwrap_or_else(|| "–".into());
        let _ = writeln!(
            s,
            "| {case} | {:.0} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {cpu} | {rss} | {} |",
            r.rps,
            per_run.join(" / "),
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.p999_ms,
            r.errors
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| target | measured | target | met | measured / target |"
    );
    let _ = writeln!(s, "|---|---:|---:|:---:|---:|");
    for c in (suite.checks)(runs) {
        let _ = match c.met {
            Some(met) => writeln!(
                s,
                "| {} | {:.3} | {} {} | {} | {:.2}× |",
                c.what,
                c.measured,
                c.relation,
                c.target,
                if met { "yes" } else { "**no**" },
                c.measured / c.target
            ),
            None => writeln!(s, "| {} | {:.3} | (stated) | – | – |", c.what, c.measured),
        };
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "CPU seconds used by other processes during each case's window (of the 2 cores × window \
         available), run by run, in the order of the table:"
    );
    for (i, run) in runs.iter().enumerate() {
        let others: Vec<String> = suite
            .cases
            .iter()
            .filter_map(|c| run.get(*c))
            .map(|r| match r.other_cpu_s {
                Some(o) => format!("{o:.1}"),
                None => "?".into(),
            })
            .collect();
        let _ = writeln!(s, "- run {}: {}", i + 1, others.join(", "));
    }
    s
}
