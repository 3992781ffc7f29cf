//! The benchmark driver end to end, small: every peer moves and verifies
//! its bytes, and the report (JSON and PNG) has every figure. Checks
//! correctness only; no figure is compared with another.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the driver with `args`, killed after `limit`; returns stdout.
fn run(args: &[&str], limit: Duration) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tcpls-bench"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tcpls-bench");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("tcpls-bench {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "tcpls-bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn every_peer_transfers_verified_bytes_and_reports_every_figure() {
    let out = run(
        &[
            "--bytes",
            "4M",
            "--repeat",
            "1",
            "--handshakes",
            "3",
            "--round-trips",
            "10",
            "--verify",
            "--session-workers",
            "2",
            "--json",
            "-",
        ],
        Duration::from_secs(240),
    );
    let r: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    let lines: Vec<&str> = r["bulk"]
        .as_array()
        .expect("bulk rows")
        .iter()
        .map(|b| {
            assert!(b["gbps"].as_f64().unwrap() > 0.0, "{b}");
            assert!(b["cpu_s_per_gib"].as_f64().unwrap() > 0.0, "{b}");
            assert!(b["vs_rustls"].as_f64().is_some(), "{b}");
            b["line"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        lines,
        [
            "tcp",
            "openssl",
            "rustls",
            "quinn",
            "tcpls",
            "tcpls-acks",
            "tcpls-16-streams",
            "tcpls-2-conns",
            "tcpls-8-sessions"
        ]
    );
    let hs: Vec<&str> = r["handshakes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            assert!(h["per_sec"].as_f64().unwrap() > 0.0, "{h}");
            h["peer"].as_str().unwrap()
        })
        .collect();
    // Each resumed figure checked that every timed handshake resumed.
    assert_eq!(
        hs,
        [
            "openssl",
            "openssl-resumed",
            "openssl-psk-ke",
            "rustls",
            "rustls-resumed",
            "quinn",
            "tcpls",
            "tcpls-resumed",
            "tcpls-psk-ke",
            "tcpls-join"
        ]
    );
    let lat = r["latency"].as_array().unwrap();
    assert_eq!(lat.len(), 5);
    for l in lat {
        assert_eq!(l["samples"], 10, "{l}");
        assert!(l["median_us"].as_f64().unwrap() > 0.0, "{l}");
    }
    // The 8 sessions ran on their own two-worker runtimes, and each server
    // worker's share of the time was read.
    let many = &r["bulk"][8];
    assert_eq!(many["server_busy"].as_array().unwrap().len(), 2, "{many}");
    assert!(r["bulk"][4].get("server_busy").is_none());
    assert_eq!(r["goals"].as_array().unwrap().len(), 9);
    assert_eq!(r["cipher"], "TLS_AES_128_GCM_SHA256");
}

#[test]
fn other_suites_and_the_chart() {
    let font = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
    if !Path::new(font).exists() {
        eprintln!("SKIP: no {font} (scripts/setup.sh installs fonts-dejavu-core)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("bench.png");
    for suite in ["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"] {
        let out = run(
            &[
                "--bytes",
                "2M",
                "--repeat",
                "1",
                "--handshakes",
                "0",
                "--round-trips",
                "0",
                "--lines",
                "openssl,rustls,quinn,tcpls",
                "--cipher",
                suite,
                "--verify",
                "-q",
                "--png",
                png.to_str().unwrap(),
            ],
            Duration::from_secs(120),
        );
        assert!(out.contains(suite), "{out}");
        assert!(out.contains("tcpls / rustls goodput"), "{out}");
        let head = std::fs::read(&png).unwrap();
        assert_eq!(&head[..8], b"\x89PNG\r\n\x1a\n");
    }
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    for args in [
        &["--bytes", "1.5G"][..],
        &["--cipher", "RC4"],
        &["--repeat", "0"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tcpls-bench"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert!(!err.is_empty());
    }
}
