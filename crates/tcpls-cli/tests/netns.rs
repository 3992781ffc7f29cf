//! Two disjoint paths between two network namespaces (testbed/netns.sh):
//! joins and migration across real interfaces. Needs root; skips otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{json, run_bounded, BIN};
use sha2::Digest;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testbed/netns.sh")
}

/// Creates the namespaces and removes them when dropped, pass or fail.
struct Testbed {
    prefix: String,
    server: Option<Child>,
    /// The server's log (connection and session events), printed when a
    /// test fails.
    server_log: Option<PathBuf>,
}

impl Testbed {
    fn up(name: &str, paths: usize, rates: &[&str]) -> Option<Testbed> {
        Self::up_with(name, paths, rates, &[])
    }

    /// Like `up`, with `testbed/netns.sh`'s environment (e.g. `DELAY1`).
    fn up_with(name: &str, paths: usize, rates: &[&str], env: &[(&str, &str)]) -> Option<Testbed> {
        if unsafe_uid() != 0 {
            eprintln!("SKIP: network-namespace tests need root");
            return None;
        }
        let prefix = format!("{name}{}", std::process::id() % 1000);
        let mut cmd = Command::new(script());
        cmd.args(["up", &prefix])
            .args(rates)
            .env("PATHS", paths.to_string())
            .envs(env.iter().copied());
        let out = cmd.output().expect("run testbed/netns.sh");
        if !out.status.success() {
            eprintln!(
                "SKIP: cannot create network namespaces: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let _ = Command::new(script()).args(["down", &prefix]).output();
            return None;
        }
        Some(Testbed {
            prefix,
            server: None,
            server_log: None,
        })
    }

    /// Installs a middlebox rule (`testbed/fault.sh PREFIX PATH FAULT`,
    /// an iptables string match); false, with a SKIP line, when this
    /// kernel's iptables cannot.
    fn middlebox(&self, path: &str, fault: &str) -> bool {
        let out = Command::new(testbed_script("fault.sh"))
            .args([&self.prefix, path, fault])
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "SKIP: cannot install the middlebox rule (iptables string match): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out.status.success()
    }

    fn ns(&self, side: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}-{side}", self.prefix)]);
        c
    }

    fn serve(&mut self, root: &Path) {
        self.serve_with(root, &[]);
    }

    fn serve_with(&mut self, root: &Path, extra: &[&str]) {
        let mut args = vec![
            "--listen",
            "0.0.0.0:4443",
            "--advertise",
            "10.71.2.2:4443",
            "--advertise",
            "10.71.3.2:4443",
        ];
        args.extend_from_slice(extra);
        self.serve_on(root, &args);
    }

    /// Starts `tcpls serve --perf --root ROOT ARGS` (ARGS name the listen
    /// and advertised addresses) and waits until it accepts on path 1.
    fn serve_on(&mut self, root: &Path, args: &[&str]) {
        let log_path = std::env::temp_dir().join(format!("tcpls-netns-{}.log", self.prefix));
        let log = std::fs::File::create(&log_path).expect("server log file");
        self.server_log = Some(log_path);
        let child = self
            .ns("srv")
            .env("RUST_LOG", "tcpls=debug,tcpls_proto=debug")
            .args([BIN, "serve", "--perf", "--root"])
            .arg(root)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let ok = self
                .ns("cli")
                .args(["bash", "-c", "exec 3<>/dev/tcp/10.71.1.2/4443"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("server did not come up in the namespace");
    }

    /// Runs `tcpls perf` in the client namespace toward the server's path-1
    /// address: `bytes`, one connection per path (bound to the path's
    /// client address), every byte verified, then `extra`; returns its JSON.
    fn perf(
        &self,
        bytes: &str,
        paths: usize,
        extra: &[&str],
        limit: Duration,
    ) -> serde_json::Value {
        self.perf_with_log(bytes, paths, extra, limit).0
    }

    /// [`Self::perf`], also returning the client's log (stderr).
    fn perf_with_log(
        &self,
        bytes: &str,
        paths: usize,
        extra: &[&str],
        limit: Duration,
    ) -> (serde_json::Value, String) {
        let mut args: Vec<String> = [
            "perf",
            "10.71.1.2:4443",
            "-k",
            "--bytes",
            bytes,
            "--repeat",
            "1",
        ]
        .map(String::from)
        .to_vec();
        args.extend(["--connections".into(), paths.to_string()]);
        for i in 1..=paths {
            args.extend(["--bind".into(), format!("10.71.{i}.1:0")]);
        }
        args.extend(["--verify", "--json"].map(String::from));
        args.extend(extra.iter().map(|a| a.to_string()));
        // Connection failures and session events go to stderr, which a
        // failed or timed-out run prints.
        let mut cmd = self.ns("cli");
        cmd.env("RUST_LOG", "tcpls=debug,tcpls_proto=debug")
            .arg(BIN)
            .args(&args);
        let out = run_bounded(&mut cmd, b"", limit);
        (
            json(&out),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        if let Some(log) = self.server_log.take() {
            if std::thread::panicking() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("--- server log, last 200 lines ---");
                for l in &lines[lines.len().saturating_sub(200)..] {
                    eprintln!("{l}");
                }
            }
            let _ = std::fs::remove_file(log);
        }
        let _ = Command::new(script()).args(["down", &self.prefix]).output();
    }
}

fn testbed_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testbed")
        .join(name)
}

/// Injects `fault` (testbed/fault.sh) on path 1 after 1.5 s, from a
/// thread; join it to learn whether the injection worked.
fn fault_on_path_1_later(tb: &Testbed, fault: &str) -> std::thread::JoinHandle<()> {
    faults_on_path_1(tb, &[(1500, fault)])
}

/// Runs `testbed/fault.sh PREFIX 1 FAULT` for each (milliseconds to wait
/// first, FAULT) in turn, from a thread; join it to learn whether every
/// step worked.
fn faults_on_path_1(tb: &Testbed, steps: &[(u64, &str)]) -> std::thread::JoinHandle<()> {
    let prefix = tb.prefix.clone();
    let steps: Vec<(u64, String)> = steps.iter().map(|(ms, f)| (*ms, f.to_string())).collect();
    std::thread::spawn(move || {
        for (wait, fault) in steps {
            std::thread::sleep(Duration::from_millis(wait));
            let out = Command::new(testbed_script("fault.sh"))
                .args([&prefix, "1", &fault])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    })
}

/// A 100 MiB download on one stream over paths 1 and 2 (a connection on
/// each, aggregated by default); `fault` hits path 1 after 1.5 s. The transfer
/// must complete with every byte verified. Recovery times are measured by
/// `testbed/failover-bench.sh`, not asserted here.
fn survive(name: &str, fault: &str) {
    let Some(mut tb) = Testbed::up(name, 2, &["200mbit", "200mbit"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    tb.serve(dir.path());
    let injector = fault_on_path_1_later(&tb, fault);
    let timeline = dir.path().join("timeline.json");
    let v = tb.perf(
        "100M",
        2,
        &["--timeline", timeline.to_str().unwrap()],
        Duration::from_secs(60),
    );
    injector.join().unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["bytes"], 100 << 20);
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(&timeline).unwrap()).unwrap();
    eprintln!("{name}: longest stall {} ms", t["max_stall_ms"]);
}

/// Path 1 of two with a 60 ms RTT is blackholed during a download: the
/// server's core asks whether TCP went silent on that connection, the
/// runtime's TCP_INFO says so, and the connection stalls at once ("TCP
/// silent too" in the server's log) rather than after 1.5 RTT without
/// ACKs (on zero-delay paths that comes first). Every byte is verified;
/// the timing is measured by `testbed/failover-bench.sh`, not here.
#[test]
fn a_blackhole_on_a_60ms_path_is_confirmed_by_tcp() {
    let Some(mut tb) = Testbed::up_with(
        "sl",
        2,
        &["200mbit", "200mbit"],
        &[("DELAY1", "30ms"), ("DELAY2", "30ms")],
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    tb.serve(dir.path());
    let injector = fault_on_path_1_later(&tb, "blackhole");
    let v = tb.perf("100M", 2, &[], Duration::from_secs(90));
    injector.join().unwrap();
    assert_eq!(v["verified"], true);
    let log = std::fs::read_to_string(tb.server_log.as_ref().unwrap()).unwrap();
    assert!(
        log.contains("TCP silent too"),
        "no stall confirmed by TCP in the server log:\n{log}"
    );
}

#[test]
fn failover_survives_rst_injection() {
    survive("r", "rst");
}

#[test]
fn failover_survives_blackhole() {
    survive("b", "blackhole");
}

#[test]
fn failover_survives_link_down() {
    survive("d", "down");
}

/// The client's path-1 interface goes down 1.5 s into a download and
/// comes back 1.5 s later. The kernel says so over rtnetlink: the client
/// fails that connection over at once (its log says the local link was
/// lost, not that acknowledgements stopped), and joins again from the
/// path-1 address when the link is back; that new connection carries
/// data, and every byte is verified.
#[test]
fn a_local_link_down_fails_over_at_once_and_joins_again_when_back() {
    let Some(mut tb) = Testbed::up("lk", 2, &["100mbit", "100mbit"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    tb.serve(dir.path());
    let flap = faults_on_path_1(&tb, &[(1500, "down"), (1500, "restore")]);
    let timeline = dir.path().join("timeline.json");
    let (v, log) = tb.perf_with_log(
        "120M",
        2,
        &["--timeline", timeline.to_str().unwrap()],
        Duration::from_secs(90),
    );
    flap.join().unwrap();
    assert_eq!(v["verified"], true);
    assert!(
        log.contains("local link lost"),
        "the link-down notification failed the connection over:\n{log}"
    );
    let conns = v["connections"].as_array().unwrap();
    assert!(
        conns.iter().any(|c| {
            c["local"]
                .as_str()
                .is_some_and(|a| a.starts_with("10.71.1.1:"))
                && c["bytes_received"].as_u64().unwrap() > 1 << 20
        }),
        "a connection joined again over path 1 and carried data: {conns:?}"
    );
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(&timeline).unwrap()).unwrap();
    eprintln!(
        "link down and up: longest stall {} ms, events {}",
        t["max_stall_ms"], t["events"]
    );
}

/// Three paths, all but one blackholed, the working one rotating every
/// second for 10 s, during a transfer that needs most of it. Connections
/// die one after the other; the client rejoins over whichever path works.
#[test]
fn failover_survives_rotating_outages_over_three_paths() {
    let Some(mut tb) = Testbed::up("o", 3, &["200mbit", "200mbit", "200mbit"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    tb.serve(dir.path());
    let mut rotate = Command::new(testbed_script("rotate.sh"))
        .args([&tb.prefix, "3", "1", "10"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let timeline = dir.path().join("timeline.json");
    let v = tb.perf(
        "120M",
        3,
        &[
            "--keepalive",
            "100ms",
            "--timeline",
            timeline.to_str().unwrap(),
        ],
        Duration::from_secs(90),
    );
    let _ = rotate.kill();
    let _ = rotate.wait();
    // rotate.sh restores on exit; a kill skips its trap, so restore here.
    for p in ["1", "2", "3"] {
        let _ = Command::new(testbed_script("fault.sh"))
            .args([&tb.prefix, p, "restore"])
            .output();
    }
    assert_eq!(v["verified"], true);
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(&timeline).unwrap()).unwrap();
    eprintln!("rotating outages: longest stall {} ms", t["max_stall_ms"]);
}

/// One stream over two 100 Mbit/s paths, the server spreading it with the
/// lowest-RTT scheduler, the second path joined one second into the
/// transfer: both paths carry a large share and every byte is verified.
/// (Goodput ratios are for testbed/aggregation-bench.sh, not asserted.)
#[test]
fn coupled_stream_uses_a_path_added_mid_transfer() {
    let Some(mut tb) = Testbed::up("a", 2, &["100mbit", "100mbit"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    tb.serve_with(dir.path(), &["--scheduler", "lowest-rtt"]);
    let v = tb.perf("60M", 2, &["--join-after", "1s"], Duration::from_secs(60));
    assert_paths_carried(&v, 2, 10 << 20, "both paths carried the stream");
    let window = tcpls::TransportConfig::default().session_window;
    assert!(v["peak_reassembly_bytes"].as_u64().unwrap() <= window);
}

fn unsafe_uid() -> u32 {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u32::MAX)
}

/// A session joins a second connection over the second path (toward the
/// server's advertised address, from the second interface) and streams are
/// steered over both.
#[test]
fn join_and_steer_across_two_paths() {
    let Some(mut tb) = Testbed::up("j", 2, &[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    tb.serve(dir.path());
    let v = tb.perf(
        "64M",
        2,
        &["--streams", "2", "--scheduler", "none"],
        Duration::from_secs(60),
    );
    assert_paths_carried(&v, 2, 16 << 20, "both paths carried data");
}

/// A 200 MiB transfer moved between the two (rate-limited) paths twice;
/// every byte checked, both paths carry data. The longest zero-goodput run
/// (10 ms samples) is printed, not asserted.
#[test]
fn migration_between_paths_never_stalls() {
    let Some(mut tb) = Testbed::up("m", 2, &["400mbit", "400mbit"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    tb.serve(dir.path());
    let timeline = dir.path().join("timeline.json");
    let v = tb.perf(
        "200M",
        2,
        &[
            "--migrate-every",
            "1200ms",
            "--migrations",
            "2",
            "--timeline",
            timeline.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(v["verified"], true);
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(&timeline).unwrap()).unwrap();
    let events = t["events"].as_array().unwrap();
    let migrations = events
        .iter()
        .filter(|e| e[1].as_str().is_some_and(|w| w.starts_with("migrate")))
        .count();
    assert_eq!(migrations, 2, "two migrations happened: {events:?}");
    // A timing, so reported rather than asserted (testbed/failover-bench.sh
    // and docs/benchmarks.md track it).
    eprintln!("migrations: longest stall {} ms", t["max_stall_ms"]);
    for c in v["connections"].as_array().unwrap() {
        assert!(
            c["bytes_received"].as_u64().unwrap() > 10 << 20,
            "both paths carried data"
        );
    }
}

/// Key updates on every side every 100 records while three streams
/// download over three paths, with (`fault`) path 1 reset 1.5 s in, in
/// the middle of the updates: every byte arrives, verified, and both sides
/// went through many key generations.
fn key_updates(name: &str, fault: Option<&str>) {
    let Some(mut tb) = Testbed::up(name, 3, &["300mbit", "300mbit", "300mbit"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    tb.serve_with(dir.path(), &["--key-update-records", "100"]);
    let injector = fault.map(|fault| fault_on_path_1_later(&tb, fault));
    let v = tb.perf(
        "300M",
        3,
        &["--streams", "3", "--key-update-records", "100"],
        Duration::from_secs(120),
    );
    if let Some(i) = injector {
        i.join().unwrap();
    }
    assert_eq!(v["verified"], true);
    assert_eq!(v["bytes"], 300 << 20);
    // 300 MiB is about 19,000 records from the server: ~190 generations.
    let server_gen = v["key_generations"][1].as_u64().unwrap();
    eprintln!(
        "{name}: key generations {}, {} Gbit/s",
        v["key_generations"], v["tcpls"]["runs_gbps"]
    );
    assert!(server_gen >= 100, "server key generation {server_gen}");
}

#[test]
fn key_updates_over_three_connections() {
    key_updates("k", None);
}

#[test]
fn key_updates_survive_a_reset_mid_update() {
    key_updates("u", Some("rst"));
}

/// Aggregation is the default: one stream downloaded from a default
/// `tcpls serve` with `perf --connections 2` over two 100 Mbit/s paths
/// goes over both, each path carrying at least a quarter. (The goodput
/// against MPTCP is testbed/aggregation-bench.sh's job.)
#[test]
fn one_stream_is_aggregated_over_two_paths_by_default() {
    let Some(mut tb) = Testbed::up("g", 2, &["100mbit", "100mbit"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    tb.serve(dir.path());
    let v = tb.perf("48M", 2, &[], Duration::from_secs(60));
    assert_paths_carried(&v, 2, 12 << 20, "each path carried at least a quarter");
}

/// A middlebox drops (or resets) ClientHellos carrying the TCPLS
/// extension: `tcpls get` retries once with plain TLS 1.3, says why in its
/// JSON, and the file arrives intact; with `--no-fallback` it fails.
fn hello_blocked(name: &str, fault: &str) {
    let Some(mut tb) = Testbed::up(name, 1, &[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path().join("file.bin"), &body).unwrap();
    tb.serve(dir.path());
    if !tb.middlebox("1", fault) {
        return;
    }
    let get = |extra: &[&str]| {
        let mut cmd = tb.ns("cli");
        cmd.args([
            BIN,
            "get",
            "https://10.71.1.2:4443/file.bin",
            "-k",
            "--json",
        ])
        .args(["--fallback-after", "1s"])
        .args(extra);
        run_bounded(&mut cmd, b"", Duration::from_secs(40))
    };
    let v = json(&get(&[]));
    let r = &v[0];
    assert_eq!(r["tcpls"], false, "{r}");
    assert!(r["fallback"].is_string(), "the fallback is reported: {r}");
    assert_eq!(r["sha256"], hex::encode(sha2::Sha256::digest(&body)));
    let refused = get(&["--no-fallback"]);
    assert!(
        !refused.status.success(),
        "--no-fallback gives up: {}",
        String::from_utf8_lossy(&refused.stdout)
    );
}

#[test]
fn dropped_tcpls_hello_falls_back_to_plain_tls() {
    hello_blocked("hd", "hello-drop");
}

#[test]
fn reset_tcpls_hello_falls_back_to_plain_tls() {
    hello_blocked("hr", "hello-reset");
}

/// IPv6 and a mixed session: path 1 over IPv4 and path 2 over IPv6 (the
/// server listens on both families and advertises its path-2 IPv6
/// address), then both paths over IPv6 only. One aggregated stream each
/// time; every byte verified, both paths carry a share.
#[test]
fn ipv6_and_mixed_v4_v6_paths() {
    let Some(mut tb) = Testbed::up("v", 2, &["100mbit", "100mbit"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    tb.serve_on(
        dir.path(),
        &["--listen", "[::]:4443", "--advertise", "[fd71:2::2]:4443"],
    );
    for (server, bind1) in [
        ("10.71.1.2:4443", "10.71.1.1:0"),
        ("[fd71:1::2]:4443", "[fd71:1::1]:0"),
    ] {
        let mut cmd = tb.ns("cli");
        cmd.args([BIN, "perf", server, "-k", "--bytes", "32M", "--repeat", "1"])
            .args([
                "--connections",
                "2",
                "--bind",
                bind1,
                "--bind",
                "[fd71:2::1]:0",
            ])
            .args(["--verify", "--json"]);
        let v = json(&run_bounded(&mut cmd, b"", Duration::from_secs(60)));
        assert_paths_carried(&v, 2, 8 << 20, server);
    }
}

/// A middlebox on path 2 swallows join hellos: the join toward the
/// server's path-2 address gets no confirmation, is given up after 3 s,
/// and the client joins toward the original address instead (from its
/// path-2 address). The second connection then really carries data (a
/// join the server never saw would carry none).
#[test]
fn a_swallowed_join_is_given_up_and_retried_elsewhere() {
    let Some(mut tb) = Testbed::up("sj", 2, &["100mbit", "100mbit"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    tb.serve(dir.path());
    if !tb.middlebox("2", "join-drop") {
        return;
    }
    let v = tb.perf("32M", 2, &[], Duration::from_secs(60));
    assert_paths_carried(&v, 2, 1 << 20, "each connection carried data");
}

/// `perf --verify --json` output `v`: verified, `paths` connections, and
/// each received more than `min` bytes.
fn assert_paths_carried(v: &serde_json::Value, paths: usize, min: u64, what: &str) {
    assert_eq!(v["verified"], true, "{what}");
    let conns = v["connections"].as_array().unwrap();
    assert_eq!(conns.len(), paths, "{what}: {conns:?}");
    for c in conns {
        assert!(
            c["bytes_received"].as_u64().unwrap() > min,
            "{what}: each connection carried more than {min} bytes: {conns:?}"
        );
    }
}

/// An unmodified application through `tcpls tunnel`: curl, in the client
/// namespace, downloads a file over HTTPS from `tcpls serve` (a plain TLS
/// server to curl) behind a tunnel server, through a tunnel client with a
/// connection on each path. Path 1 is blackholed 1 s into the download and
/// restored 1.5 s later; the SHA-256 of what curl saved matches.
#[test]
fn curl_through_a_tunnel_survives_a_blackholed_path() {
    let Some(tb) = Testbed::up("tu", 2, &["100mbit", "100mbit"]) else {
        return;
    };
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIP: curl is not installed (scripts/setup.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..60_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(dir.path().join("file.bin"), &body).unwrap();
    let spawn = |side: &str, args: &[&str]| {
        let child = tb
            .ns(side)
            .arg(BIN)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        common::Reaper(child)
    };
    let root = dir.path().to_str().unwrap();
    let _site = spawn(
        "srv",
        &["serve", "--listen", "127.0.0.1:4444", "--root", root],
    );
    let _server = spawn(
        "srv",
        &[
            "tunnel",
            "server",
            "--listen",
            "0.0.0.0:4443",
            "--advertise",
            "10.71.2.2:4443",
            "--to",
            "127.0.0.1:4444",
        ],
    );
    let listening = |side: &str, addr: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let probe = format!("exec 3<>/dev/tcp/{addr}");
            let ok = tb
                .ns(side)
                .args(["bash", "-c", &probe])
                .stderr(Stdio::null())
                .status();
            if ok.is_ok_and(|s| s.success()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("nothing listening on {addr} in {side}");
    };
    listening("srv", "127.0.0.1/4444");
    listening("cli", "10.71.1.2/4443");
    let _client = spawn(
        "cli",
        &[
            "tunnel",
            "client",
            "--listen",
            "127.0.0.1:8443",
            "--connect",
            "10.71.1.2:4443",
            "-k",
            "--connections",
            "2",
            "--bind",
            "10.71.1.1:0",
            "--bind",
            "10.71.2.1:0",
        ],
    );
    listening("cli", "127.0.0.1/8443");
    let flap = faults_on_path_1(&tb, &[(1000, "blackhole"), (1500, "restore")]);
    let saved = dir.path().join("saved.bin");
    let mut curl = tb.ns("cli");
    curl.args(["curl", "-sSk", "--max-time", "60", "-o"])
        .arg(&saved)
        .arg("https://127.0.0.1:8443/file.bin");
    let out = run_bounded(&mut curl, b"", Duration::from_secs(70));
    flap.join().unwrap();
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = std::fs::read(&saved).unwrap();
    assert_eq!(got.len(), body.len());
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&got)),
        hex::encode(sha2::Sha256::digest(&body))
    );
}

/// Two `tcpls serve` behind one virtual address (testbed/lb.sh: DNAT with
/// iptables `statistic`, kube-proxy style), each advertising its own
/// address in the handshake's record: 20 clients at once, two connections
/// each. Every join goes to the advertised address of the backend that
/// holds its session (through the virtual address half of them would
/// reach the other backend, which knows nothing of their tokens), every
/// download verifies, and both backends serve sessions.
#[test]
fn twenty_clients_behind_a_load_balancer() {
    if unsafe_uid() != 0 {
        eprintln!("SKIP: network-namespace tests need root");
        return;
    }
    struct Lb(String);
    impl Drop for Lb {
        fn drop(&mut self) {
            let _ = Command::new(testbed_script("lb.sh"))
                .args(["down", &self.0])
                .output();
        }
    }
    let prefix = format!("lb{}", std::process::id() % 1000);
    let out = Command::new(testbed_script("lb.sh"))
        .args(["up", &prefix])
        .output()
        .unwrap();
    let _lb = Lb(prefix.clone());
    if !out.status.success() {
        eprintln!(
            "SKIP: cannot build the load-balancer testbed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let ns = |name: &str| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{prefix}-{name}")]);
        c
    };
    let _backends: Vec<common::Reaper> = (1..=2)
        .map(|b| {
            let child = ns(&format!("b{b}"))
                .args([BIN, "serve", "--perf", "--listen", "0.0.0.0:4443"])
                .args(["--advertise", &format!("10.73.{b}.2:4443")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            common::Reaper(child)
        })
        .collect();
    for b in 1..=2 {
        let deadline = Instant::now() + Duration::from_secs(20);
        let probe = format!("exec 3<>/dev/tcp/10.73.{b}.2/4443");
        while !ns("cli")
            .args(["bash", "-c", &probe])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(Instant::now() < deadline, "backend {b} did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let mut cmd = ns("cli");
            cmd.args([BIN, "perf", "10.73.0.100:4443", "-k", "--bytes", "2M"])
                .args(["--repeat", "1", "--connections", "2", "--verify", "--json"]);
            std::thread::spawn(move || json(&run_bounded(&mut cmd, b"", Duration::from_secs(90))))
        })
        .collect();
    let mut backends = std::collections::BTreeSet::new();
    for c in clients {
        let v = c.join().unwrap();
        assert_eq!(v["verified"], true, "{v}");
        let conns = v["connections"].as_array().unwrap();
        // The joined connection (id 1), unless it failed over: the join
        // was confirmed (perf fails otherwise), so it reached the backend
        // holding the session, but on a loaded 2-core machine the path
        // monitor may fail either connection over afterwards, and the
        // failed one is gone from the final figures.
        let Some(joined) = conns.iter().find(|c| c["conn"] == 1) else {
            let events = v["events"].to_string();
            assert!(
                events.contains("connection 1 added") && events.contains("connection 1 failed"),
                "the join neither stayed nor failed over: {v}"
            );
            continue;
        };
        let joined = joined["peer"].as_str().unwrap().to_string();
        assert!(
            joined == "10.73.1.2:4443" || joined == "10.73.2.2:4443",
            "the join went to a backend's own address: {conns:?}"
        );
        backends.insert(joined);
    }
    assert_eq!(
        backends.len(),
        2,
        "both backends served sessions: {backends:?}"
    );
}

/// TCP Fast Open: the second session's ClientHello rides in the SYN (the
/// first one got the cookie). Then a middlebox drops SYNs that carry data:
/// the kernel resends a bare SYN, the session completes, and the client
/// remembers (in its session cache file) to reach that address without
/// Fast Open, so the next run sends no SYN with data at all.
#[test]
fn tcp_fast_open_carries_the_hello_and_survives_a_syn_data_drop() {
    let Some(mut tb) = Testbed::up("tfo", 1, &[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(dir.path().join("file.bin"), &body).unwrap();
    tb.serve(dir.path());
    let cache = dir.path().join("sessions.json");
    let get = || {
        let mut cmd = tb.ns("cli");
        cmd.args([
            BIN,
            "get",
            "https://10.71.1.2:4443/file.bin",
            "-k",
            "--json",
        ])
        .arg("--session-cache")
        .arg(&cache);
        let v = json(&run_bounded(&mut cmd, b"", Duration::from_secs(30)));
        assert_eq!(
            v[0]["sha256"],
            hex::encode(sha2::Sha256::digest(&body)),
            "{v}"
        );
        v[0].clone()
    };
    let first = get();
    assert_eq!(first["fast_open"], false, "no cookie yet: {first}");
    assert_eq!(first["handshake"], "full");
    let second = get();
    assert_eq!(second["fast_open"], true, "{second}");
    assert_eq!(second["handshake"], "resumed");

    // A middlebox on the server's side drops SYNs with a payload.
    let rule = [
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "4443",
        "--tcp-flags",
        "SYN,ACK",
        "SYN",
        "-m",
        "length",
        "--length",
        "100:65535",
        "-j",
        "DROP",
    ];
    let ok = tb
        .ns("srv")
        .args(["iptables", "-A"])
        .args(rule)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIP: cannot install the iptables length rule");
        return;
    }
    let dropped = || -> u64 {
        let out = tb
            .ns("srv")
            .args(["iptables", "-L", "INPUT", "-v", "-n", "-x"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let line = text.lines().find(|l| l.contains("DROP")).unwrap_or("");
        line.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no DROP counter in {text}"))
    };
    let third = get();
    assert_eq!(third["fast_open"], false, "{third}");
    assert_eq!(dropped(), 1, "the SYN with data was dropped once");
    let saved = std::fs::read_to_string(&cache).unwrap();
    assert!(saved.contains("10.71.1.2"), "remembered: {saved}");
    let fourth = get();
    assert_eq!(fourth["fast_open"], false, "{fourth}");
    assert_eq!(dropped(), 1, "no SYN with data was sent again");
}
