//! The report: medians, ratios to rustls, the goals, as a text table
//! and as JSON.

use std::fmt::Write;

use serde::Serialize;

use crate::measure::{Bulk, Handshakes, Results};
use crate::{Args, Line};

#[derive(Serialize)]
pub struct Report {
    pub machine: Machine,
    pub bytes: u64,
    pub repeat: u32,
    pub cipher: &'static str,
    pub workers: usize,
    pub bulk: Vec<BulkRow>,
    pub handshakes: Vec<HandshakeRow>,
    pub latency: Vec<LatencyRow>,
    pub goals: Vec<Goal>,
}

#[derive(Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
}

#[derive(Serialize)]
pub struct BulkRow {
    pub line: &'static str,
    /// Median goodput.
    pub gbps: f64,
    /// Median CPU seconds (both ends) per GiB moved.
    pub cpu_s_per_gib: f64,
    /// Goodput over rustls's, and CPU per GiB over rustls's.
    pub vs_rustls: Option<f64>,
    pub cpu_vs_rustls: Option<f64>,
    /// Median context switches of the process per MiB moved (wake-ups).
    pub switches_per_mib: f64,
    pub runs_gbps: Vec<f64>,
    pub runs_cpu_s_per_gib: Vec<f64>,
    /// 8-session line: each server worker's CPU time over wall time,
    /// busiest first (median over runs, position by position).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub server_busy: Vec<f64>,
}

#[derive(Serialize)]
pub struct HandshakeRow {
    pub peer: &'static str,
    pub per_sec: f64,
    pub cpu_ms_each: f64,
    pub vs_rustls: Option<f64>,
    pub runs_per_sec: Vec<f64>,
}

#[derive(Serialize)]
pub struct LatencyRow {
    pub peer: &'static str,
    pub median_us: f64,
    pub p99_us: f64,
    pub samples: usize,
}

/// One of the targets, checked on this run's repetitions: the
/// median of the ratios of each repetition's pair (the two lines ran within
/// seconds of each other), so that a slow phase of a shared machine
/// during one repetition counts once rather than skewing both medians.
#[derive(Serialize)]
pub struct Goal {
    pub what: &'static str,
    pub ratio: f64,
    pub target: f64,
    /// True when lower is better (CPU).
    pub at_most: bool,
    pub met: bool,
}

/// Median of a non-empty list.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel,
    }
}

impl Report {
    pub fn new(args: &Args, r: Results) -> Self {
        let row = |line: Line, runs: &[Bulk]| BulkRow {
            line: line.name(),
            gbps: median(&runs.iter().map(|b| b.gbps).collect::<Vec<_>>()),
            cpu_s_per_gib: median(&runs.iter().map(|b| b.cpu_s_per_gib).collect::<Vec<_>>()),
            vs_rustls: None,
            cpu_vs_rustls: None,
            switches_per_mib: median(&runs.iter().map(|b| b.switches_per_mib).collect::<Vec<_>>()),
            runs_gbps: runs.iter().map(|b| b.gbps).collect(),
            runs_cpu_s_per_gib: runs.iter().map(|b| b.cpu_s_per_gib).collect(),
            server_busy: (0..runs.iter().map(|b| b.server_busy.len()).min().unwrap_or(0))
                .map(|i| median(&runs.iter().map(|b| b.server_busy[i]).collect::<Vec<_>>()))
                .collect(),
        };
        let mut bulk: Vec<BulkRow> = r.bulk.iter().map(|(l, runs)| row(*l, runs)).collect();
        if let Some((g, c)) = bulk
            .iter()
            .find(|b| b.line == "rustls")
            .map(|b| (b.gbps, b.cpu_s_per_gib))
        {
            for b in &mut bulk {
                b.vs_rustls = Some(b.gbps / g);
                b.cpu_vs_rustls = Some(b.cpu_s_per_gib / c);
            }
        }
        let hs_row = |peer: &'static str, runs: &[Handshakes]| HandshakeRow {
            peer,
            per_sec: median(&runs.iter().map(|h| h.per_sec).collect::<Vec<_>>()),
            cpu_ms_each: median(&runs.iter().map(|h| h.cpu_ms_each).collect::<Vec<_>>()),
            vs_rustls: None,
            runs_per_sec: runs.iter().map(|h| h.per_sec).collect(),
        };
        let mut handshakes: Vec<HandshakeRow> = r
            .handshakes
            .iter()
            .map(|(p, runs)| hs_row(p, runs))
            .collect();
        if let Some(g) = handshakes
            .iter()
            .find(|h| h.peer == "rustls")
            .map(|h| h.per_sec)
        {
            for h in &mut handshakes {
                h.vs_rustls = Some(h.per_sec / g);
            }
        }
        let latency = r
            .latency
            .iter()
            .map(|(p, t)| LatencyRow {
                peer: p.stack().name(),
                median_us: median(t),
                p99_us: percentile(t, 0.99),
                samples: t.len(),
            })
            .collect();
        let goals = goals(&bulk);
        Report {
            machine: machine(),
            bytes: args.bytes,
            repeat: args.repeat,
            cipher: args.cipher.name(),
            workers: args.workers,
            bulk,
            handshakes,
            latency,
            goals,
        }
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(
            s,
            "{} x {} ({}), {} MiB per transfer, {}, median of {}",
            m.cores,
            m.cpu,
            m.kernel,
            self.bytes >> 20,
            self.cipher,
            self.repeat
        );
        let ratio = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}x"));
        if !self.bulk.is_empty() {
            let _ = writeln!(
                s,
                "\n{:<18} {:>8} {:>10} {:>10} {:>10} {:>9}   runs (Gbit/s)",
                "bulk", "Gbit/s", "CPU s/GiB", "vs rustls", "CPU vs", "csw/MiB"
            );
            for b in &self.bulk {
                let runs: Vec<String> = b.runs_gbps.iter().map(|g| format!("{g:.2}")).collect();
                let _ = writeln!(
                    s,
                    "{:<18} {:>8.2} {:>10.3} {:>10} {:>10} {:>9.1}   {}",
                    b.line,
                    b.gbps,
                    b.cpu_s_per_gib,
                    ratio(b.vs_rustls),
                    ratio(b.cpu_vs_rustls),
                    b.switches_per_mib,
                    runs.join(" ")
                );
            }
            for b in self.bulk.iter().filter(|b| !b.server_busy.is_empty()) {
                let busy: Vec<String> = b
                    .server_busy
                    .iter()
                    .map(|f| format!("{:.0} %", f * 100.0))
                    .collect();
                let _ = writeln!(
                    s,
                    "{}: {} worker threads per side; server workers busy {} of the time",
                    b.line,
                    b.server_busy.len(),
                    busy.join(", ")
                );
            }
        }
        if !self.handshakes.is_empty() {
            let _ = writeln!(
                s,
                "\n{:<18} {:>8} {:>10} {:>10}",
                "handshakes", "per s", "CPU ms", "vs rustls"
            );
            for h in &self.handshakes {
                let _ = writeln!(
                    s,
                    "{:<18} {:>8.0} {:>10.3} {:>10}",
                    h.peer,
                    h.per_sec,
                    h.cpu_ms_each,
                    ratio(h.vs_rustls)
                );
            }
        }
        if !self.latency.is_empty() {
            let _ = writeln!(
                s,
                "\n{:<18} {:>8} {:>10}",
                "1-byte RTT", "median µs", "p99 µs"
            );
            for l in &self.latency {
                let _ = writeln!(s, "{:<18} {:>8.1} {:>10.1}", l.peer, l.median_us, l.p99_us);
            }
        }
        if !self.goals.is_empty() {
            let _ = writeln!(s, "\ngoals (issue 9; median of per-repetition ratios)");
            for g in &self.goals {
                let _ = writeln!(
                    s,
                    "  {:<4} {:<40} {:.2} ({} {:.2})",
                    if g.met { "met" } else { "MISS" },
                    g.what,
                    g.ratio,
                    if g.at_most { "<=" } else { ">=" },
                    g.target
                );
            }
        }
        s
    }
}

/// The targets that this run's lines allow checking.
fn goals(bulk: &[BulkRow]) -> Vec<Goal> {
    let get = |name: &str| bulk.iter().find(|b| b.line == name);
    let mut out = Vec::new();
    let mut check = |what, a: Option<&BulkRow>, b: Option<&BulkRow>, target: f64, cpu: bool| {
        if let (Some(a), Some(b)) = (a, b) {
            let (x, y) = if cpu {
                (&a.runs_cpu_s_per_gib, &b.runs_cpu_s_per_gib)
            } else {
                (&a.runs_gbps, &b.runs_gbps)
            };
            let ratio = median(&x.iter().zip(y).map(|(x, y)| x / y).collect::<Vec<_>>());
            out.push(Goal {
                what,
                ratio,
                target,
                at_most: cpu,
                met: if cpu {
                    ratio <= target
                } else {
                    ratio >= target
                },
            });
        }
    };
    let tcpls = get("tcpls");
    check("tcpls / rustls goodput", tcpls, get("rustls"), 1.0, false);
    check(
        "tcpls / rustls CPU per GiB",
        tcpls,
        get("rustls"),
        1.0,
        true,
    );
    check("tcpls / openssl goodput", tcpls, get("openssl"), 1.3, false);
    check("tcpls / quinn goodput", tcpls, get("quinn"), 2.5, false);
    check(
        "tcpls 16 streams / 1 stream",
        get("tcpls-16-streams"),
        tcpls,
        0.95,
        false,
    );
    check("tcpls ACKs on / off", get("tcpls-acks"), tcpls, 0.95, false);
    check(
        "tcpls 2 coupled conns / 1",
        get("tcpls-2-conns"),
        tcpls,
        0.9,
        false,
    );
    check(
        "tcpls 8 sessions / 1 (aggregate)",
        get("tcpls-8-sessions"),
        tcpls,
        1.0,
        false,
    );
    // "The server uses every core": one worker per core, and the least
    // busy does at least half the work of the busiest.
    if let Some(b) = get("tcpls-8-sessions").filter(|b| b.server_busy.len() > 1) {
        let (max, min) = (b.server_busy[0], b.server_busy[b.server_busy.len() - 1]);
        let ratio = if max > 0.0 { min / max } else { 0.0 };
        out.push(Goal {
            what: "tcpls 8 sessions: least/most busy core",
            ratio,
            target: 0.5,
            at_most: false,
            met: ratio >= 0.5,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(line: &'static str, runs: &[f64]) -> BulkRow {
        BulkRow {
            line,
            gbps: median(runs),
            cpu_s_per_gib: 1.0,
            vs_rustls: None,
            cpu_vs_rustls: None,
            switches_per_mib: 0.0,
            runs_gbps: runs.to_vec(),
            runs_cpu_s_per_gib: vec![1.0; runs.len()],
            server_busy: Vec::new(),
        }
    }

    #[test]
    fn goals_pair_each_repetition() {
        // The machine slowed down between the two lines of repetition 2:
        // the ratio of medians (25 / 14) would overstate the gain.
        let bulk = [
            row("tcpls", &[25.0, 25.0, 13.0]),
            row("rustls", &[24.0, 14.0, 13.0]),
        ];
        let g = &goals(&bulk)[0];
        assert_eq!(g.what, "tcpls / rustls goodput");
        assert!((g.ratio - 25.0 / 24.0).abs() < 1e-9, "{}", g.ratio);
        assert!(g.met);
        assert_eq!(goals(&bulk)[1].ratio, 1.0); // CPU per GiB
    }
}
