//! `tcpls idle`: opens many idle sessions against a server and reports the
//! server's memory per session (from /proc/PID/status), for the
//! memory-at-scale benchmark.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::client::ClientOpts;

#[derive(clap::Args, Debug)]
pub struct IdleArgs {
    /// Address of a `tcpls serve`.
    pub addr: SocketAddr,
    /// Sessions to open and hold.
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// Process id of the server, to read its resident memory.
    #[arg(long)]
    pub server_pid: u32,
    /// Name to verify the certificate against.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Serialize)]
struct Report {
    sessions: usize,
    server_rss_before: u64,
    server_rss_after: u64,
    server_bytes_per_session: u64,
    seconds_to_open: f64,
}

/// Resident set size of a process, in bytes.
pub fn rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS line")?;
    Ok(kb * 1024)
}

pub async fn run(args: IdleArgs) -> Result<()> {
    crate::raise_fd_limit();
    let cfg = args
        .client
        .tcpls_config(tcpls::TransportConfig::default())?;
    let before = rss(args.server_pid)?;
    let start = Instant::now();
    let mut sessions = Vec::with_capacity(args.sessions);
    // In batches, so the server's accept queue and handshake limit keep up.
    for chunk in (0..args.sessions).collect::<Vec<_>>().chunks(200) {
        let mut tasks = Vec::new();
        for _ in chunk {
            let (cfg, name, addr) = (cfg.clone(), args.server_name.clone(), args.addr);
            let opts = args.client.clone();
            // With --connections, --bind and --join-after like `perf`.
            tasks.push(tokio::spawn(async move {
                let s = opts.open_session(&[addr], &name, cfg).await?;
                opts.join_later(&s);
                anyhow::Ok(s)
            }));
        }
        for t in tasks {
            sessions.push(t.await?.context(
                "opening a session (a `tcpls serve` needs --max-sessions, \
                 --max-sessions-per-ip and --max-handshakes-per-ip of 0 for this)",
            )?);
        }
    }
    let opened = start.elapsed().as_secs_f64();
    if sessions.iter().any(|s| !s.is_tcpls()) {
        bail!("the server answered as plain TLS");
    }
    // Let the server settle (handshake state freed, buffers released).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss(args.server_pid)?;
    let report = Report {
        sessions: sessions.len(),
        server_rss_before: before,
        server_rss_after: after,
        server_bytes_per_session: after.saturating_sub(before) / sessions.len().max(1) as u64,
        seconds_to_open: opened,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} idle sessions opened in {:.1} s; server RSS {} -> {} ({} per session)",
            report.sessions,
            opened,
            crate::units::human(before),
            crate::units::human(after),
            crate::units::human(report.server_bytes_per_session)
        );
    }
    drop(sessions);
    Ok(())
}
