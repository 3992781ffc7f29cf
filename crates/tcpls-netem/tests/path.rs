//! testbed/path.sh with tcpls-netem on a namespace pair (testbed/netns.sh):
//! ping's RTT is the delays added, and `clear` leaves no process, rule or
//! qdisc. Needs root, iptables, NFQUEUE and ping; skips otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn testbed(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testbed")
        .join(script)
}

#[path = "../../tcpls-cli/tests/common/run.rs"]
mod run;

/// Runs a command to completion within `limit` (killed and failed past
/// it), its output drained while it runs.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    run::run_bounded(cmd, b"", limit)
}

/// Runs `cmd` (bounded) and returns its stdout; panics on failure.
fn ok(cmd: &mut Command) -> String {
    let out = run_bounded(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{cmd:?} failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn succeeds(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why this machine cannot run the test, if it cannot.
fn missing() -> Option<&'static str> {
    if !succeeds("sh", &["-c", "[ \"$(id -u)\" = 0 ]"]) {
        return Some("needs root");
    }
    if !succeeds("iptables", &["--version"]) || !succeeds("ip6tables", &["--version"]) {
        return Some("needs iptables and ip6tables");
    }
    if !Path::new("/proc/net/netfilter/nfnetlink_queue").exists() {
        return Some("needs NFQUEUE (nfnetlink_queue)");
    }
    if !succeeds("ping", &["-V"]) {
        return Some("needs ping");
    }
    None
}

/// The namespace pair (one path), removed when dropped, pass or fail;
/// `netns.sh down` stops the delay processes first.
struct Pair {
    prefix: String,
}

impl Pair {
    fn up() -> Option<Pair> {
        let prefix = format!("ne{}", std::process::id() % 100_000);
        let out = run_bounded(
            Command::new(testbed("netns.sh"))
                .args(["up", &prefix])
                .env("PATHS", "1"),
            Duration::from_secs(60),
        );
        let pair = Pair { prefix };
        if !out.status.success() {
            eprintln!(
                "SKIP: cannot create network namespaces: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(pair)
    }

    fn ns(&self, side: &str) -> String {
        format!("{}-{side}", self.prefix)
    }

    fn dev(&self, side: &str) -> String {
        format!("{}{}1", self.prefix, &side[..1])
    }

    /// `testbed/path.sh` on `side`'s device, with this build's tcpls-netem
    /// (and never netem, so that this tests the delay line even where the
    /// kernel has netem).
    fn path(&self, side: &str, args: &[&str]) {
        ok(Command::new(testbed("path.sh"))
            .arg(self.ns(side))
            .arg(self.dev(side))
            .args(args)
            .env("TCPLS_NETEM", env!("CARGO_BIN_EXE_tcpls-netem"))
            .env("PATH_EMU", "nfqueue"));
    }

    /// Median and minimum RTT of 20 pings from the client (the first, which
    /// waits for address resolution, left out).
    fn ping(&self, dst: &str) -> (f64, f64) {
        let out = ok(Command::new("ip").args([
            "netns",
            "exec",
            &self.ns("cli"),
            "ping",
            "-n",
            "-c",
            "21",
            "-i",
            "0.05",
            dst,
        ]));
        let mut rtts: Vec<f64> = out
            .lines()
            .filter_map(|l| l.split("time=").nth(1))
            .filter_map(|t| t.trim_end_matches(" ms").parse().ok())
            .skip(1)
            .collect();
        assert!(rtts.len() >= 18, "too few replies:\n{out}");
        rtts.sort_by(f64::total_cmp);
        (rtts[rtts.len() / 2], rtts[0])
    }

    /// What is left of path.sh's work: tagged rules, shaping qdiscs,
    /// tcpls-netem pidfiles and running processes.
    fn leftovers(&self, pids: &[u32]) -> Vec<String> {
        let mut left = Vec::new();
        for side in ["cli", "srv"] {
            let ns = self.ns(side);
            for cmd in ["iptables", "ip6tables"] {
                let rules =
                    ok(Command::new("ip").args(["netns", "exec", &ns, cmd, "-S", "-t", "mangle"]));
                left.extend(
                    rules
                        .lines()
                        .filter(|l| l.contains("tcpls-netem"))
                        .map(|l| format!("{ns} {cmd}: {l}")),
                );
            }
            let qdiscs = ok(Command::new("tc").args(["-n", &ns, "qdisc", "show"]));
            left.extend(
                qdiscs
                    .lines()
                    .filter(|l| l.contains("tbf") || l.contains("netem"))
                    .map(|l| format!("{ns} qdisc: {l}")),
            );
        }
        left.extend(
            self.pidfiles()
                .iter()
                .map(|p| format!("pidfile {}", p.display())),
        );
        for pid in pids {
            // A zombie is gone (its parent, init, reaps it in its own time).
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if state.split_whitespace().nth(2).is_some_and(|s| s != "Z") {
                left.push(format!("process {pid}"));
            }
        }
        left
    }

    fn pidfiles(&self) -> Vec<PathBuf> {
        let Ok(dir) = std::fs::read_dir("/run/tcpls-netem") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with(&format!("{}-", self.prefix)) && name.ends_with(".pid")
            })
            .collect()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = run_bounded(
            Command::new(testbed("netns.sh")).args(["down", &self.prefix]),
            Duration::from_secs(60),
        );
    }
}

fn assert_rtt(what: &str, (median, min): (f64, f64), expected: f64) {
    eprintln!("{what}: median {median:.3} ms, min {min:.3} ms, expected {expected} ms");
    assert!(
        (median - expected).abs() <= 2.0,
        "{what}: median RTT {median} ms, expected {expected} ± 2 ms"
    );
    // Never early: each direction holds every packet at least its delay.
    assert!(
        min >= expected - 0.05,
        "{what}: an RTT of {min} ms is below {expected} ms"
    );
}

#[test]
fn delay_shows_in_ping_and_clear_leaves_nothing() {
    if let Some(why) = missing() {
        eprintln!("SKIP: {why}");
        return;
    }
    let Some(pair) = Pair::up() else {
        return;
    };
    // 15 ms from the client (with a rate limit), 10 ms back: 25 ms RTT.
    pair.path("cli", &["100mbit", "15ms", "0"]);
    pair.path("srv", &["-", "10ms"]);
    assert_rtt("IPv4, both ways", pair.ping("10.71.1.2"), 25.0);
    assert_rtt("IPv6, both ways", pair.ping("fd71:1::2"), 25.0);

    // Re-running replaces: the server side now without delay.
    pair.path("srv", &["-", "-", "-"]);
    assert_rtt("IPv4, one way", pair.ping("10.71.1.2"), 15.0);

    let pids: Vec<u32> = pair
        .pidfiles()
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok()?.trim().parse().ok())
        .collect();
    assert_eq!(pids.len(), 2, "one process for ICMP, one for the rest");
    pair.path("cli", &["clear"]);
    pair.path("srv", &["clear"]);
    let left = pair.leftovers(&pids);
    assert!(left.is_empty(), "left after clear: {left:#?}");
    let (median, _) = pair.ping("10.71.1.2");
    assert!(median < 2.0, "RTT {median} ms after clear");
}
