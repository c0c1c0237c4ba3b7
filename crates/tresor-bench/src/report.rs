//! Results: one [`RunResult`] per measured window, printed as a line for people and written as
//! JSON for comparisons; medians over repeated runs.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::runner::Measured;

/// One measured window, with the settings that produced it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// What was measured, e.g. `tresor get c=32` or `nginx static c=32`.
    pub name: String,
    pub op: String,
    /// `closed` or `open`.
    pub mode: String,
    pub concurrency: usize,
    /// Open loop: the requested rate (req/s).
    pub rate: Option<f64>,
    pub value_size: usize,
    pub keys: usize,
    pub installations: usize,
    /// Operations per request (batches), else 1.
    pub ops_per_request: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Successful requests in the window.
    pub requests: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// CPU seconds of the server (and its child processes) in the window.
    pub server_cpu_s: Option<f64>,
    /// Peak resident set of the server (`VmHWM`, summed over its processes), MiB.
    pub server_peak_rss_mib: Option<f64>,
    /// CPU seconds of this generator in the window.
    pub generator_cpu_s: f64,
    /// CPU seconds of every other process on the machine in the window (all processors busy,
    /// less the server and the generator): what else competed for the cores.
    #[serde(default)]
    pub other_cpu_s: Option<f64>,
    /// The load averages (1, 5, 15 min) when the window started.
    pub loadavg: String,
}

/// Settings that describe a run, apart from what it measured.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub op: String,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub value_size: usize,
    pub keys: usize,
    pub installations: usize,
    pub ops_per_request: usize,
    pub warmup_s: f64,
}

/// Process readings around the window.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    pub server_cpu_s: Option<f64>,
    pub server_peak_rss_mib: Option<f64>,
    pub generator_cpu_s: f64,
    pub other_cpu_s: Option<f64>,
    pub loadavg: String,
}

impl RunResult {
    pub fn new(s: &Settings, m: &Measured, r: Readings) -> RunResult {
        let ms = |q: f64| m.latency.value_at_quantile(q) as f64 / 1e6;
        let window = m.window.as_secs_f64();
        RunResult {
            name: s.name.clone(),
            op: s.op.clone(),
            mode: if s.rate.is_some() { "open" } else { "closed" }.into(),
            concurrency: s.concurrency,
            rate: s.rate,
            value_size: s.value_size,
            keys: s.keys,
            installations: s.installations,
            ops_per_request: s.ops_per_request,
            warmup_s: s.warmup_s,
            duration_s: window,
            requests: m.ok,
            errors: m.errors,
            error_kinds: m.error_kinds.clone(),
            rps: if window > 0.0 {
                m.ok as f64 / window
            } else {
                0.0
            },
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: m.latency.max() as f64 / 1e6,
            mean_ms: m.latency.mean() / 1e6,
            server_cpu_s: r.server_cpu_s,
            server_peak_rss_mib: r.server_peak_rss_mib,
            generator_cpu_s: r.generator_cpu_s,
            other_cpu_s: r.other_cpu_s,
            loadavg: r.loadavg,
        }
    }

    /// One line for people.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{:<26} {:>9.0} req/s  p50 {:>7.3}  p90 {:>7.3}  p99 {:>7.3}  p99.9 {:>7.3} ms  errors {}",
            self.name, self.rps, self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.errors
        );
        if self.ops_per_request > 1 {
            s += &format!("  ({:.0} ops/s)", self.rps * self.ops_per_request as f64);
        }
        if let Some(cpu) = self.server_cpu_s {
            s += &format!("  server cpu {cpu:.2} s");
            if self.requests > 0 {
                s += &format!(" ({:.0} µs/req)", cpu * 1e6 / self.requests as f64);
            }
        }
        if let Some(rss) = self.server_peak_rss_mib {
            s += &format!("  peak rss {rss:.1} MiB");
        }
        s += &format!("  gen cpu {:.2} s", self.generator_cpu_s);
        if let Some(other) = self.other_cpu_s {
            s += &format!("  others cpu {other:.2} s");
        }
        s += &format!("  load {}", self.loadavg);
        for (kind, n) in &self.error_kinds {
            s += &format!("\n    {n} × {kind}");
        }
        s
    }
}

/// The median of `values` (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The median of each figure over runs of the same case.
pub fn median_of(runs: &[RunResult]) -> Option<RunResult> {
    let first = runs.first()?;
    let m = |f: fn(&RunResult) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let mo = |f: fn(&RunResult) -> Option<f64>| {
        let v: Vec<f64> = runs.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| median(&v))
    };
    let mut out = first.clone();
    out.name = format!("{} (median of {})", first.name, runs.len());
    out.requests = m(|r| r.requests as f64) as u64;
    out.errors = runs.iter().map(|r| r.errors).sum();
    out.error_kinds = BTreeMap::new();
    for r in runs {
        for (k, v) in &r.error_kinds {
            *out.error_kinds.entry(k.clone()).or_default() += v;
        }
    }
    out.rps = m(|r| r.rps);
    out.p50_ms = m(|r| r.p50_ms);
    out.p90_ms = m(|r| r.p90_ms);
    out.p99_ms = m(|r| r.p99_ms);
    out.p999_ms = m(|r| r.p999_ms);
    out.max_ms = m(|r| r.max_ms);
    out.mean_ms = m(|r| r.mean_ms);
    out.server_cpu_s = mo(|r| r.server_cpu_s);
    out.server_peak_rss_mib = mo(|r| r.server_peak_rss_mib);
    out.generator_cpu_s = m(|r| r.generator_cpu_s);
    out.other_cpu_s = mo(|r| r.other_cpu_s);
    out.loadavg = runs
        .iter()
        .map(|r| r.loadavg.split(' ').next().unwrap_or("").to_string())
        .collect::<Vec<_>>()
        .join("/");
    Some(out)
}

/// Writes `value` as pretty JSON.
pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
