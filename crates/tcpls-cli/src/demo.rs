//! `tcpls demo`: what TCPLS is for, in a few seconds on loopback. A server
//! and a client whose session has two connections, from 127.0.0.1 and
//! 127.0.0.2; mid-transfer the first is reset as a failing path would be,
//! the transfer goes on over the other, and the client joins a new
//! connection from the lost address. Then: bytes per connection, the
//! longest stall, SHA-256 of every file, and a goodput-over-time chart.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{RngCore, SeedableRng};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tcpls::{ClientConfig, ConnectionId, Server, ServerConfig};
use tokio::sync::Notify;

use crate::get::{fetch, Sink};
use crate::units::{gbps, human, parse_bytes};

/// The client's two local addresses: two paths on one machine.
const PATH_ADDRS: [&str; 2] = ["127.0.0.1", "127.0.0.2"];

/// How long the lost path stays away before the client joins again.
const REJOIN_AFTER: Duration = Duration::from_millis(150);

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Total bytes to transfer (K, M, G suffixes).
    #[arg(long, default_value = "512M", value_parser = parse_bytes)]
    pub bytes: u64,
    /// Files fetched in parallel, one stream each.
    #[arg(long, default_value_t = 4)]
    pub streams: u32,
    /// Reset the connection from 127.0.0.1 when this fraction of the bytes
    /// has arrived (0: never, a plain two-connection transfer).
    #[arg(long, default_value_t = 0.4)]
    pub kill_at: f64,
    /// Where to write the goodput-over-time chart (default: tcpls-demo.png
    /// in the temporary directory).
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// No chart.
    #[arg(long, conflicts_with = "png")]
    pub no_png: bool,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct ConnectionReport {
    conn: u32,
    local: Option<String>,
    bytes_received: u64,
    reset: bool,
}

#[derive(Serialize)]
struct DemoReport {
    tcpls: bool,
    cipher: Option<String>,
    streams: u32,
    bytes: u64,
    seconds: f64,
    gbps: f64,
    sha256_verified: bool,
    connections: Vec<ConnectionReport>,
    /// When the first connection was reset, seconds into the transfer.
    reset_at_seconds: Option<f64>,
    /// Longest time without any byte delivered, in milliseconds (10 ms
    /// resolution).
    longest_stall_ms: u64,
    /// What happened, with milliseconds since the start.
    events: Vec<(u64, String)>,
    png: Option<PathBuf>,
}

/// Random files of `per` bytes in `root`; their SHA-256 in hex.
fn write_files(root: &std::path::Path, n: u32, per: u64) -> Result<Vec<String>> {
    let mut expected = Vec::new();
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut block = vec![0u8; 1 << 20];
    for i in 0..n {
        let mut hasher = Sha256::new();
        let mut file =
            std::io::BufWriter::new(std::fs::File::create(root.join(format!("file{i}.bin")))?);
        let mut left = per;
        while left > 0 {
            let k = left.min(block.len() as u64) as usize;
            rng.fill_bytes(&mut block[..k]);
            hasher.update(&block[..k]);
            std::io::Write::write_all(&mut file, &block[..k])?;
            left -= k as u64;
        }
        std::io::Write::flush(&mut file)?;
        expected.push(hex::encode(hasher.finalize()));
    }
    Ok(expected)
}

/// One connection's bytes received per sample, for the chart.
struct PerConnection {
    bytes: Vec<u64>,
    last: u64,
    local: Option<SocketAddr>,
}

fn local(i: usize) -> SocketAddr {
    SocketAddr::new(PATH_ADDRS[i].parse().expect("address"), 0)
}

pub async fn run(args: DemoArgs) -> Result<()> {
    if args.streams == 0 {
        bail!("--streams must be at least 1");
    }
    if !(0.0..1.0).contains(&args.kill_at) {
        bail!("--kill-at must be at least 0 and below 1");
    }
    let png = (!args.no_png).then(|| {
        args.png
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("tcpls-demo.png"))
    });
    if png.is_some() {
        crate::plot::load_font(std::path::Path::new(crate::plot::DEFAULT_FONT))
            .context("the chart needs a font (scripts/setup.sh installs it; or --no-png)")?;
    }
    let dir = tempfile::tempdir()?;
    let root = dir.path().canonicalize()?;
    let per = args.bytes / args.streams as u64;
    let expected = write_files(&root, args.streams, per)?;

    let server_cfg = Arc::new(
        ServerConfig::builder()
            .self_signed(&["localhost"])?
            .build()?,
    );
    // Verification stays on: the client trusts exactly the demo certificate.
    let client_cfg = Arc::new(
        ClientConfig::builder()
            .root_certificates_pem(&server_cfg.certificate_pem)?
            .session_cache(None)
            .build()?,
    );
    let server = Server::bind("127.0.0.1:0".parse()?, server_cfg).await?;
    let addr = server.local_addr()?;
    let site = crate::serve::Site {
        root: Some(root.clone()),
        perf_max: None,
        request_timeout: Duration::from_secs(10),
    };
    tokio::spawn(crate::serve::serve(server, site, None));
    let say = |what: String| {
        if !args.json {
            eprintln!("demo: {what}");
        }
    };
    say(format!(
        "server on {addr}; {} files of {}, one stream each, over two connections (from {} and {})",
        args.streams,
        human(per),
        PATH_ADDRS[0],
        PATH_ADDRS[1]
    ));

    let session = tcpls::connect_from(addr, Some(local(0)), "localhost", client_cfg).await?;
    if !session.is_tcpls() {
        bail!("the demo server did not speak TCPLS");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while session.available_tokens() == 0 {
        if Instant::now() > deadline {
            bail!("no join token from the server");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    session
        .join(addr, Some(local(1)))
        .await
        .with_context(|| format!("joining from {}", PATH_ADDRS[1]))?;

    let counter = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let sampler = tokio::spawn(crate::perf::sample(
        session.clone(),
        counter.clone(),
        done.clone(),
        Vec::new(),
        None,
        0,
    ));
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.bytes)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
            .expect("valid template"),
    );
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.streams {
        let stream = session.open_stream().await?;
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            fetch(
                stream,
                "localhost",
                &format!("/file{i}.bin"),
                true,
                &|_| Sink::Discard,
                &ProgressBar::hidden(),
                Some(&counter),
            )
            .await
        }));
    }

    // The fault, and the rejoin from the lost address.
    let killer = {
        let (session, counter, bar) = (session.clone(), counter.clone(), bar.clone());
        let at = (args.kill_at * args.bytes as f64) as u64;
        let enabled = args.kill_at > 0.0;
        tokio::spawn(async move {
            if !enabled {
                return Ok::<_, anyhow::Error>(None);
            }
            while counter.load(Ordering::Relaxed) < at {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let first = ConnectionId(0);
            let before = stats_of(&session, first);
            session.kill_connection(first)?;
            let reset_at = start.elapsed();
            note(&bar, format!(
                "demo: connection 0 (from {}) reset at {:.0} % of the bytes: the transfer goes on over connection 1",
                PATH_ADDRS[0],
                100.0 * counter.load(Ordering::Relaxed) as f64 / args.bytes as f64
            ));
            tokio::time::sleep(REJOIN_AFTER).await;
            match session.join(addr, Some(local(0))).await {
                Ok(id) => note(
                    &bar,
                    format!(
                        "demo: connection {id} joined from {} {} ms after the reset",
                        PATH_ADDRS[0],
                        (start.elapsed() - reset_at).as_millis()
                    ),
                ),
                // The transfer may already be over.
                Err(e) => note(&bar, format!("demo: no rejoin: {e}")),
            }
            Ok(Some((reset_at, before)))
        })
    };
    // Progress, and each connection's bytes every sample (for the chart).
    let stop = Arc::new(Notify::new());
    let ticker = {
        let (session, counter, bar, stop) =
            (session.clone(), counter.clone(), bar.clone(), stop.clone());
        tokio::spawn(async move {
            let mut per: BTreeMap<u32, PerConnection> = BTreeMap::new();
            let mut tick = tokio::time::interval(crate::perf::SAMPLE);
            for n in 0usize.. {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.notified() => break,
                }
                let stats = session.connection_stats();
                for c in &stats {
                    let e = per.entry(c.conn.0).or_insert_with(|| PerConnection {
                        bytes: vec![0; n],
                        last: 0,
                        local: c.local_addr,
                    });
                    e.bytes.push(c.bytes_received.saturating_sub(e.last));
                    e.last = c.bytes_received;
                }
                for e in per.values_mut() {
                    e.bytes.resize(n + 1, 0);
                }
                if n % 5 == 0 {
                    bar.set_position(counter.load(Ordering::Relaxed));
                    let now: Vec<String> = stats
                        .iter()
                        .map(|c| format!("conn {}: {}", c.conn, human(c.bytes_received)))
                        .collect();
                    bar.set_message(now.join(", "));
                }
            }
            per
        })
    };

    let mut ok = true;
    let mut total = 0;
    for (t, want) in tasks.into_iter().zip(&expected) {
        let got = t.await??;
        total += got.bytes;
        ok &= &got.sha256 == want;
    }
    let secs = start.elapsed().as_secs_f64();
    let killed = killer.await??;
    stop.notify_one();
    let per_connection = ticker.await?;
    bar.finish_and_clear();
    done.notify_one();
    let timeline = sampler.await?;

    let mut connections: Vec<ConnectionReport> = session
        .connection_stats()
        .into_iter()
        .map(|c| ConnectionReport {
            conn: c.conn.0,
            local: c.local_addr.map(|a| a.to_string()),
            bytes_received: c.bytes_received,
            reset: false,
        })
        .collect();
    if let Some((_, Some(before))) = &killed {
        connections.push(ConnectionReport {
            conn: before.conn.0,
            local: before.local_addr.map(|a| a.to_string()),
            bytes_received: before.bytes_received,
            reset: true,
        });
    }
    connections.sort_by_key(|c| c.conn);
    let reset_at = killed.as_ref().map(|(at, _)| at.as_secs_f64());
    if let Some(path) = &png {
        // The session's events (connections added, failed) mark the chart.
        let mut lines = vec![("all streams".to_string(), timeline.clone())];
        for (conn, p) in per_connection {
            let from = p.local.map_or("?".to_string(), |a| a.ip().to_string());
            lines.push((
                format!("connection {conn} (from {from})"),
                crate::perf::Timeline {
                    interval_ms: timeline.interval_ms,
                    bytes: p.bytes,
                    ..Default::default()
                },
            ));
        }
        crate::plot::timeline_chart(
            &lines,
            path,
            "tcpls demo: a connection reset mid-transfer, the other carries on",
            &[],
            2,
            crate::plot::Metric::Goodput,
        )?;
    }
    let report = DemoReport {
        tcpls: session.is_tcpls(),
        cipher: session.cipher_suite().map(|c| c.name().to_string()),
        streams: args.streams,
        bytes: total,
        seconds: secs,
        gbps: gbps(total, secs),
        sha256_verified: ok,
        connections,
        reset_at_seconds: reset_at,
        longest_stall_ms: timeline.max_stall_ms,
        events: timeline.events.clone(),
        png: png.clone(),
    };
    session.close(0, "demo done");
    // Let the CLOSE frame reach the server before the runtime stops.
    let _ = tokio::time::timeout(Duration::from_secs(1), session.drained()).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "demo: {} over {} TCPLS streams ({}) in {:.3} s = {:.2} Gbit/s; longest stall {} ms",
            human(total),
            args.streams,
            report.cipher.as_deref().unwrap_or("?"),
            secs,
            report.gbps,
            report.longest_stall_ms
        );
        for c in &report.connections {
            println!(
                "  connection {} from {:<16} received {:>10}{}",
                c.conn,
                c.local.as_deref().unwrap_or("?"),
                human(c.bytes_received),
                if c.reset {
                    "  (reset mid-transfer)"
                } else {
                    ""
                }
            );
        }
        println!(
            "  SHA-256 of every file: {}",
            if ok { "verified" } else { "MISMATCH" }
        );
        if let Some(p) = &report.png {
            println!("  goodput over time: {}", p.display());
        }
    }
    if !ok || !report.tcpls {
        bail!("demo failed: data mismatch or no TCPLS");
    }
    Ok(())
}

/// A line above the progress bar (or alone when the bar is not drawn).
fn note(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// The kernel's figures for connection `conn`, if it is there.
fn stats_of(session: &tcpls::Session, conn: ConnectionId) -> Option<tcpls::ConnectionStats> {
    session
        .connection_stats()
        .into_iter()
        .find(|c| c.conn == conn)
}
