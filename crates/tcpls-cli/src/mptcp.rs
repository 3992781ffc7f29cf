//! `tcpls mptcp serve|perf`: the same download over the kernel's MPTCP
//! (IPPROTO_MPTCP sockets, no TLS), for side-by-side failover and
//! aggregation comparisons on the testbed. The client asks for N bytes with
//! a line `N\n`; the server answers with N bytes of the perf pattern.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::perf::{max_stall, Timeline, SAMPLE};
use crate::units::{gbps, parse_bytes};

/// IPPROTO_MPTCP (Linux).
const IPPROTO_MPTCP: i32 = 262;

#[derive(clap::Subcommand, Debug)]
pub enum MptcpCmd {
    /// Serve perf downloads over MPTCP.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:5443")]
        listen: SocketAddr,
        /// Plain single-path TCP instead of MPTCP (a baseline).
        #[arg(long)]
        tcp: bool,
    },
    /// Download from `tcpls mptcp serve` and report goodput.
    Perf {
        /// Server address.
        addr: SocketAddr,
        /// Bytes to download.
        #[arg(long, default_value = "100M", value_parser = parse_bytes)]
        bytes: u64,
        /// Local address of the first subflow.
        #[arg(long)]
        bind: Option<SocketAddr>,
        /// Write goodput sampled every 10 ms to this JSON file.
        #[arg(long)]
        timeline: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Plain single-path TCP instead of MPTCP (a baseline).
        #[arg(long)]
        tcp: bool,
        /// Bound the receive window, like TCPLS's `perf --window` (e.g.
        /// 1M): SO_RCVBUF of this size. The kernel doubles it for its
        /// bookkeeping and advertises that times its measured payload
        /// ratio (one half to nine tenths), so the window is this size or
        /// up to about 1.8 times it: never smaller than TCPLS's.
        #[arg(long, value_parser = parse_bytes)]
        window: Option<u64>,
    },
}

fn mptcp_socket(addr: &SocketAddr, tcp: bool) -> Result<Socket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let proto = if tcp {
        Protocol::TCP
    } else {
        Protocol::from(IPPROTO_MPTCP)
    };
    Socket::new(domain, Type::STREAM, Some(proto))
        .context("creating an MPTCP socket (is net.mptcp.enabled=1?)")
}

pub async fn run(cmd: MptcpCmd) -> Result<()> {
    match cmd {
        MptcpCmd::Serve { listen, tcp } => serve(listen, tcp).await,
        MptcpCmd::Perf {
            addr,
            bytes,
            bind,
            timeline,
            json,
            tcp,
            window,
        } => perf(addr, bytes, bind, timeline, json, tcp, window).await,
    }
}

async fn serve(listen: SocketAddr, tcp: bool) -> Result<()> {
    let s = mptcp_socket(&listen, tcp)?;
    s.set_reuse_address(true)?;
    s.bind(&listen.into())?;
    s.listen(128)?;
    s.set_nonblocking(true)?;
    let listener = TcpListener::from_std(s.into())?;
    eprintln!("tcpls mptcp: listening on {listen}");
    loop {
        let (conn, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = answer(conn).await {
                tracing::debug!(error = %e, "mptcp request failed");
            }
        });
    }
}

async fn answer(conn: TcpStream) -> Result<()> {
    let (rd, mut wr) = conn.into_split();
    let mut line = String::new();
    BufReader::new(rd).read_line(&mut line).await?;
    let n: u64 = line
        .trim()
        .parse()
        .context("request must be a byte count")?;
    let block = crate::serve::perf_block();
    let mut left = n;
    while left > 0 {
        let k = left.min(block.len() as u64) as usize;
        wr.write_all(&block[..k]).await?;
        left -= k as u64;
    }
    wr.shutdown().await?;
    Ok(())
}

#[derive(Serialize)]
struct Report {
    bytes: u64,
    seconds: f64,
    gbps: f64,
    max_stall_ms: u64,
    completed: bool,
}

async fn perf(
    addr: SocketAddr,
    bytes: u64,
    bind: Option<SocketAddr>,
    timeline: Option<PathBuf>,
    json: bool,
    tcp: bool,
    window: Option<u64>,
) -> Result<()> {
    let s = mptcp_socket(&addr, tcp)?;
    if let Some(w) = window {
        // Before connecting, so the window scale fits it.
        s.set_recv_buffer_size(usize::try_from(w).context("--window")?)?;
    }
    if let Some(b) = bind {
        s.bind(&b.into())?;
    }
    s.connect(&addr.into())
        .with_context(|| format!("MPTCP connect to {addr}"))?;
    s.set_nonblocking(true)?;
    let mut conn = TcpStream::from_std(s.into())?;
    conn.write_all(format!("{bytes}\n").as_bytes()).await?;
    let progress = Arc::new(AtomicU64::new(0));
    let sampler = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut t = Timeline {
                interval_ms: SAMPLE.as_millis() as u64,
                ..Default::default()
            };
            let mut tick = tokio::time::interval(SAMPLE);
            let mut last = 0;
            loop {
                tick.tick().await;
                let now = progress.load(Ordering::Relaxed);
                t.bytes.push(now - last);
                last = now;
                if now >= bytes {
                    return t;
                }
            }
        })
    };
    let start = Instant::now();
    let block = crate::serve::perf_block();
    let mut buf = vec![0u8; 256 << 10];
    let mut got = 0u64;
    while got < bytes {
        let k = conn.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        let mut off = (got % block.len() as u64) as usize;
        let mut rest = &buf[..k];
        while !rest.is_empty() {
            let n = rest.len().min(block.len() - off);
            if rest[..n] != block[off..off + n] {
                bail!("MPTCP data differs from the pattern near offset {got}");
            }
            rest = &rest[n..];
            off = 0;
        }
        got += k as u64;
        progress.store(got, Ordering::Relaxed);
    }
    let secs = start.elapsed().as_secs_f64();
    progress.store(bytes, Ordering::Relaxed);
    let mut t = sampler.await?;
    t.max_stall_ms = max_stall(&t.bytes) * t.interval_ms;
    if let Some(p) = &timeline {
        std::fs::write(p, serde_json::to_vec_pretty(&t)?)?;
    }
    let report = Report {
        bytes: got,
        seconds: secs,
        gbps: gbps(got, secs),
        max_stall_ms: t.max_stall_ms,
        completed: got == bytes,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: {} of {} bytes in {:.2} s = {:.2} Gbit/s, longest stall {} ms",
            if tcp { "TCP" } else { "MPTCP" },
            report.bytes,
            bytes,
            secs,
            report.gbps,
            report.max_stall_ms
        );
    }
    if !report.completed {
        bail!("MPTCP transfer ended after {got} of {bytes} bytes");
    }
    Ok(())
}
