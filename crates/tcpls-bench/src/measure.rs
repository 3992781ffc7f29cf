//! The measurements: every repetition runs each figure once, so a slow
//! moment of the machine hits all peers alike.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::runtime::Handle;

use crate::certs::Configs;
use crate::cpu::Span;
use crate::peers::{self, tcpls_peer::Setup, Stack};
use crate::{io, Args, Line, Peer};

/// One bulk transfer.
#[derive(Clone, Debug)]
pub struct Bulk {
    pub gbps: f64,
    pub cpu_s_per_gib: f64,
    pub switches_per_mib: f64,
    /// 8-session line: each server worker thread's CPU time over the
    /// transfer's wall time, busiest first (empty for other lines).
    pub server_busy: Vec<f64>,
}

/// Thread name of the 8-session line's server workers (their CPU time is
/// read per thread).
pub const MANY_SERVER_THREAD: &str = "server-many";

/// Where servers and clients run.
pub struct Runtimes {
    pub server: Handle,
    pub client: Handle,
    /// The 8-session line's server and client runtimes, and their number
    /// of workers each.
    pub many: Option<(Handle, Handle, usize)>,
}

/// One series of handshakes (or joins).
#[derive(Clone, Copy, Debug)]
pub struct Handshakes {
    pub per_sec: f64,
    pub cpu_ms_each: f64,
}

/// Everything measured, in the order of the arguments.
pub struct Results {
    pub bulk: Vec<(Line, Vec<Bulk>)>,
    pub handshakes: Vec<(&'static str, Vec<Handshakes>)>,
    /// Round-trip times in microseconds, all repetitions together.
    pub latency: Vec<(Peer, Vec<f64>)>,
}

impl Line {
    pub fn name(self) -> &'static str {
        match self {
            Line::Tcp => "tcp",
            Line::Openssl => "openssl",
            Line::Rustls => "rustls",
            Line::Quinn => "quinn",
            Line::Tcpls => "tcpls",
            Line::TcplsAcks => "tcpls-acks",
            Line::Tcpls16 => "tcpls-16-streams",
            Line::Tcpls2conn => "tcpls-2-conns",
            Line::Tcpls8sessions => "tcpls-8-sessions",
        }
    }

    /// The stack, and for TCPLS (streams, ACKs, connections per session).
    fn setup(self) -> (Stack, u32, bool, u32) {
        match self {
            Line::Tcp => (Stack::Tcp, 1, false, 1),
            Line::Openssl => (Stack::Openssl, 1, false, 1),
            Line::Rustls => (Stack::Rustls, 1, false, 1),
            Line::Quinn => (Stack::Quinn, 1, false, 1),
            Line::Tcpls => (Stack::Tcpls, 1, false, 1),
            Line::TcplsAcks => (Stack::Tcpls, 1, true, 1),
            Line::Tcpls16 => (Stack::Tcpls, 16, false, 1),
            Line::Tcpls2conn => (Stack::Tcpls, 1, false, 2),
            Line::Tcpls8sessions => (Stack::Tcpls, 1, false, 1),
        }
    }
}

impl Peer {
    pub fn stack(self) -> Stack {
        match self {
            Peer::Tcp => Stack::Tcp,
            Peer::Openssl => Stack::Openssl,
            Peer::Rustls => Stack::Rustls,
            Peer::Quinn => Stack::Quinn,
            Peer::Tcpls => Stack::Tcpls,
        }
    }
}

fn progress(args: &Args, len: u64, label: String) -> ProgressBar {
    let json_out = args.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    if args.quiet || json_out {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix:>28} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec}",
        )
        .expect("valid template"),
    );
    pb.set_prefix(label);
    pb
}

/// Runs every figure: servers on `rts.server`, clients on `rts.client`
/// (the 8-session line on `rts.many`).
pub async fn run(args: &Args, cfg: &Arc<Configs>, rts: &Runtimes) -> Result<Results> {
    let rt = &rts.server;
    // TCPLS configurations once per line; the handshake and latency
    // figures use the default configuration (ACKs on).
    let send_buffer = args.send_buffer.map(|b| b as usize);
    let mut lines = Vec::new();
    for &line in &args.lines {
        let (stack, streams, acks, conns) = line.setup();
        let setup = Setup::new(cfg, streams, acks, conns, send_buffer)?;
        lines.push((line, stack, Arc::new(setup)));
    }
    let default_tcpls = Arc::new(Setup::new(cfg, 1, true, 8, send_buffer)?);
    let resuming = Arc::new(Configs::resuming(cfg.suite)?);
    let resuming_tcpls = Arc::new(Setup::resuming(&resuming)?);
    let psk_ke = Arc::new(Configs::resuming_psk_ke(cfg.suite)?);
    let psk_ke_tcpls = Arc::new(Setup::resuming(&psk_ke)?);
    let mut res = Results {
        bulk: args.lines.iter().map(|&l| (l, Vec::new())).collect(),
        handshakes: Vec::new(),
        latency: if args.round_trips > 0 {
            args.latency_peers
                .iter()
                .map(|&p| (p, Vec::new()))
                .collect()
        } else {
            Vec::new()
        },
    };
    for rep in 1..=args.repeat {
        for (i, (line, stack, setup)) in lines.iter().enumerate() {
            let label = format!("{} ({rep}/{})", line.name(), args.repeat);
            let (sessions, on) = match (*line, &rts.many) {
                (Line::Tcpls8sessions, Some((server, client, workers))) => (
                    8,
                    Sides {
                        server,
                        client,
                        workers: *workers,
                    },
                ),
                _ => (
                    1,
                    Sides {
                        server: &rts.server,
                        client: &rts.client,
                        workers: 0,
                    },
                ),
            };
            let b = bulk(on, args, cfg, *stack, setup, sessions, label)
                .await
                .with_context(|| format!("bulk transfer over {}", line.name()))?;
            res.bulk[i].1.push(b);
        }
        if args.handshakes > 0 {
            let mut row = 0;
            for &peer in &args.handshake_peers {
                let h = handshakes(
                    rt,
                    args.handshakes,
                    cfg,
                    peer.stack(),
                    &default_tcpls,
                    false,
                )
                .await
                .with_context(|| format!("handshakes with {}", peer.stack().name()))?;
                push(&mut res.handshakes, &mut row, peer.stack().name(), h);
                if let Some(name) = peer.resumed_name() {
                    let stack = peer.stack();
                    let h =
                        handshakes(rt, args.handshakes, &resuming, stack, &resuming_tcpls, true)
                            .await
                            .with_context(|| format!("resumed handshakes with {}", stack.name()))?;
                    push(&mut res.handshakes, &mut row, name, h);
                }
                if let Some(name) = peer.psk_ke_name() {
                    let stack = peer.stack();
                    let h = handshakes(rt, args.handshakes, &psk_ke, stack, &psk_ke_tcpls, true)
                        .await
                        .with_context(|| format!("psk_ke resumptions with {}", stack.name()))?;
                    push(&mut res.handshakes, &mut row, name, h);
                }
                if peer == Peer::Tcpls {
                    let j = joins(rt, args.handshakes, cfg, &default_tcpls)
                        .await
                        .context("TCPLS joins")?;
                    push(&mut res.handshakes, &mut row, "tcpls-join", j);
                }
            }
        }
        {
            for (peer, times) in res.latency.iter_mut() {
                let t = latency(rt, args.round_trips, cfg, peer.stack(), &default_tcpls)
                    .await
                    .with_context(|| format!("round trips with {}", peer.stack().name()))?;
                times.extend(t);
            }
        }
    }
    Ok(res)
}

/// Appends `h` to the `row`th series (created on the first repetition).
fn push(
    v: &mut Vec<(&'static str, Vec<Handshakes>)>,
    row: &mut usize,
    name: &'static str,
    h: Handshakes,
) {
    if v.len() <= *row {
        v.push((name, Vec::new()));
    }
    v[*row].1.push(h);
    *row += 1;
}

/// Starts a server on the server runtime: its own threads, as a server
/// process would have, so the two sides' tasks never share a worker.
async fn start_server(
    rt: &Handle,
    stack: Stack,
    cfg: &Arc<Configs>,
    setup: &Arc<Setup>,
) -> Result<peers::Server> {
    let (cfg, setup) = (cfg.clone(), setup.clone());
    rt.spawn(async move { peers::server(stack, &cfg, &setup).await })
        .await?
}

/// The runtimes one bulk transfer runs on.
struct Sides<'a> {
    server: &'a Handle,
    client: &'a Handle,
    /// Server workers whose CPU time is read (named `MANY_SERVER_THREAD`);
    /// 0: none.
    workers: usize,
}

/// One bulk transfer of `args.bytes`, split over `sessions` concurrent
/// client sessions (connections) to one server.
async fn bulk(
    on: Sides<'_>,
    args: &Args,
    cfg: &Arc<Configs>,
    stack: Stack,
    setup: &Arc<Setup>,
    sessions: u64,
    label: String,
) -> Result<Bulk> {
    let server = start_server(on.server, stack, cfg, setup).await?;
    let pb = progress(args, args.bytes, label);
    let server_times = || match on.workers {
        0 => Vec::new(),
        _ => crate::cpu::thread_times(MANY_SERVER_THREAD),
    };
    let threads = server_times();
    let span = Span::start();
    let mut tasks = Vec::new();
    for i in 0..sessions {
        let part = args.bytes / sessions + u64::from(i < args.bytes % sessions);
        let (cfg, setup, pb, addr, verify) = (
            cfg.clone(),
            setup.clone(),
            pb.clone(),
            server.addr,
            args.verify,
        );
        tasks.push(
            on.client.spawn(async move {
                peers::bulk(stack, addr, &cfg, &setup, part, verify, &pb).await
            }),
        );
    }
    for t in tasks {
        t.await??;
    }
    let (wall, cpu, switches) = span.stop();
    let mut server_busy: Vec<f64> = server_times()
        .iter()
        .map(|(tid, t)| {
            let before = threads.iter().find(|(b, _)| b == tid).map_or(0.0, |b| b.1);
            (t - before) / wall
        })
        .collect();
    server_busy.sort_by(|a, b| b.total_cmp(a));
    // Only the workers (a blocking-pool thread would share their name).
    server_busy.truncate(on.workers);
    pb.finish_and_clear();
    let gib = args.bytes as f64 / (1u64 << 30) as f64;
    Ok(Bulk {
        gbps: args.bytes as f64 * 8.0 / wall / 1e9,
        cpu_s_per_gib: cpu / gib,
        switches_per_mib: switches as f64 / (gib * 1024.0),
        server_busy,
    })
}

/// `n` handshakes one after another, each until the server's first byte
/// arrives (so both sides finished). With `resumed` (and resuming
/// configurations) one untimed connection first fetches a ticket; each
/// timed one then resumes with the ticket the previous one got.
async fn handshakes(
    rt: &Handle,
    n: u32,
    cfg: &Arc<Configs>,
    stack: Stack,
    setup: &Arc<Setup>,
    resumed: bool,
) -> Result<Handshakes> {
    let server = start_server(rt, stack, cfg, setup).await?;
    if resumed {
        let c = peers::connect(stack, server.addr, cfg, setup).await?;
        io::hello(c).await?;
    }
    let count = || cfg.resumed.load(Ordering::Relaxed) + setup.resumed.load(Ordering::Relaxed);
    let before = count();
    let span = Span::start();
    for _ in 0..n {
        let c = peers::connect(stack, server.addr, cfg, setup).await?;
        io::hello(c).await?;
    }
    let (wall, cpu, _) = span.stop();
    if resumed && count() - before != n {
        anyhow::bail!(
            "{} resumed {} of {n} handshakes",
            stack.name(),
            count() - before
        );
    }
    Ok(Handshakes {
        per_sec: n as f64 / wall,
        cpu_ms_each: cpu * 1e3 / n as f64,
    })
}

/// `n` TCPLS joins to one session, one after another (see
/// `tcpls_peer::joins`); the rate counts join time only, the CPU everything.
async fn joins(rt: &Handle, n: u32, cfg: &Arc<Configs>, setup: &Arc<Setup>) -> Result<Handshakes> {
    let server = start_server(rt, Stack::Tcpls, cfg, setup).await?;
    let span = Span::start();
    let joining = peers::tcpls_peer::joins(server.addr, setup, n).await?;
    let (_, cpu, _) = span.stop();
    Ok(Handshakes {
        per_sec: n as f64 / joining.as_secs_f64(),
        cpu_ms_each: cpu * 1e3 / n as f64,
    })
}

/// Round-trip times (µs) of `n` one-byte requests on one connection.
async fn latency(
    rt: &Handle,
    n: u32,
    cfg: &Arc<Configs>,
    stack: Stack,
    setup: &Arc<Setup>,
) -> Result<Vec<f64>> {
    let server = start_server(rt, stack, cfg, setup).await?;
    let c = peers::connect(stack, server.addr, cfg, setup).await?;
    let times = io::echo(c, n).await?;
    Ok(times.iter().map(|t| t.as_secs_f64() * 1e6).collect())
}
