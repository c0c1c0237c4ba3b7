//! What the kernel says about a process, from `/proc`: CPU seconds (`/proc/PID/stat`), peak
//! resident memory (`VmHWM` in `/proc/PID/status`), a process's descendants, and the load
//! average. Linux only; every reading is `None` where `/proc` has no answer.

use std::path::Path;

/// Clock ticks per second of `/proc/PID/stat` (`USER_HZ`): 100 on every architecture Linux
/// runs this tool on (x86-64, arm64).
const TICKS_PER_SECOND: f64 = 100.0;

/// The fields of `/proc/PID/stat` after the command name.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything, so split after the last `)`.
    let rest = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is a letter; map it to 0 so that indices stay the man page's minus 3.
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// The parent of `pid`.
fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid).and_then(|f| f.get(1).map(|&p| p as u32))
}

/// `pid` and all its descendants that are alive now.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut all: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                && let Some(pp) = parent(p)
            {
                all.push((p, pp));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(all.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

/// CPU seconds (user + system) used by `pid`, its live descendants, and the children it has
/// already waited for (PostgreSQL's backends end with their connections; their time is then in
/// the postmaster's `cutime`/`cstime`).
pub fn tree_cpu_seconds(pid: u32) -> Option<f64> {
    let root = stat_fields(pid)?;
    // utime, stime, cutime, cstime are fields 14–17, at indices 11–14 here.
    let mut ticks = root.get(11..15)?.iter().sum::<u64>();
    for p in process_tree(pid).into_iter().skip(1) {
        if let Some(f) = stat_fields(p) {
            ticks += f.get(11..13).map(|t| t.iter().sum::<u64>()).unwrap_or(0);
        }
    }
    Some(ticks as f64 / TICKS_PER_SECOND)
}

/// CPU seconds used by this process so far.
pub fn own_cpu_seconds() -> f64 {
    let f = stat_fields(std::process::id()).unwrap_or_default();
    f.get(11..13).map(|t| t.iter().sum::<u64>()).unwrap_or(0) as f64 / TICKS_PER_SECOND
}

/// CPU seconds of the child processes this process has waited for (pgbench runs).
pub fn own_children_cpu_seconds() -> f64 {
    let f = stat_fields(std::process::id()).unwrap_or_default();
    f.get(13..15).map(|t| t.iter().sum::<u64>()).unwrap_or(0) as f64 / TICKS_PER_SECOND
}

/// The peak resident set (`VmHWM`) of `pid` and its live descendants, in MiB.
pub fn tree_peak_rss_mib(pid: u32) -> Option<f64> {
    let kib: u64 = process_tree(pid)
        .into_iter()
        .filter_map(|p| status_kib(Path::new(&format!("/proc/{p}/status")), "VmHWM:"))
        .sum();
    (kib > 0).then(|| kib as f64 / 1024.0)
}

fn status_kib(path: &Path, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// CPU seconds all processors have been busy since boot (`/proc/stat`: user, nice, system,
/// irq, softirq, steal).
pub fn system_busy_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| f.get(i))
        .sum::<u64>();
    Some(busy as f64 / TICKS_PER_SECOND)
}

/// `/proc/loadavg`'s three load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(tree_cpu_seconds(me).is_some());
        assert!(tree_peak_rss_mib(me).unwrap() > 0.0);
        assert!(process_tree(me).contains(&me));
        assert_eq!(loadavg().split(' ').count(), 3);
        assert!(system_busy_seconds().unwrap() > 0.0);
    }
}
