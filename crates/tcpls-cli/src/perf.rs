//! `tcpls perf`: goodput against `tcpls serve`, optionally beside a plain
//! TLS 1.3/TCP baseline measured in the same run (interleaved repetitions).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::client::ClientOpts;
use crate::http;
use crate::serve::PERF_PREFIX;
use crate::units::{gbps, parse_bytes};

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// Plain TLS 1.3 over TCP through OpenSSL (tokio-openssl).
    Tls,
    /// TCPLS without record acknowledgements and failover.
    NoAcks,
    /// TCPLS over a single connection (to compare with --connections N).
    Single,
}

#[derive(clap::Args, Debug)]
pub struct PerfArgs {
    /// A `tcpls serve`: HOST:PORT, an address or a name (the first
    /// address it resolves to).
    #[arg(value_parser = crate::units::parse_host_port)]
    pub addr: crate::units::HostPort,
    /// Name to verify the certificate against (default: the host of ADDR
    /// when it is a name, else localhost).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Bytes to transfer per run (K, M, G suffixes).
    #[arg(long, default_value = "1G", value_parser = parse_bytes)]
    pub bytes: u64,
    /// Streams to spread the bytes over (plain TLS baseline: connections).
    #[arg(long, default_value_t = 1)]
    pub streams: u32,
    /// Send to the server instead of receiving from it.
    #[arg(long)]
    pub upload: bool,
    /// Also measure this baseline and print TCPLS/baseline ratios
    /// (repeatable: --baseline tls --baseline no-acks).
    #[arg(long)]
    pub baseline: Vec<Baseline>,
    /// Runs of each kind, interleaved; figures are medians.
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Check every received byte against the server's perf pattern.
    #[arg(long)]
    pub verify: bool,
    /// Migrate all streams to the next connection this often during a
    /// TCPLS run (with --connections >= 2), e.g. 500ms.
    #[arg(long, value_parser = crate::units::parse_duration)]
    pub migrate_every: Option<Duration>,
    /// Most migrations per run (with --migrate-every).
    #[arg(long, default_value_t = u32::MAX)]
    pub migrations: u32,
    /// How this side spreads its outgoing data (uploads) over the
    /// connections: earliest-arrival (the default), round-robin,
    /// lowest-rtt, weighted:W0,W1,... or none (one connection per stream).
    /// Downloads follow the server's choice (`serve --scheduler`).
    #[arg(long, value_parser = crate::client::parse_scheduler)]
    pub scheduler: Option<String>,
    /// Write the last TCPLS run's goodput, sampled every 10 ms, and its
    /// migrations to this JSON file.
    #[arg(long)]
    pub timeline: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientOpts,
}

impl PerfArgs {
    /// The name the certificate is checked against.
    fn server_name(&self) -> String {
        self.server_name
            .clone()
            .unwrap_or_else(|| self.addr.name().unwrap_or("localhost").to_string())
    }
}

/// Kernel statistics of one connection (from TCP_INFO) at the end of a run.
#[derive(Debug, Serialize, Clone)]
pub struct ConnStats {
    pub conn: u32,
    pub rtt_us: u32,
    pub rttvar_us: u32,
    pub cwnd: u32,
    pub total_retrans: u32,
    pub delivery_rate_bps: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    /// Its congestion controller (TCP_CONGESTION).
    pub congestion_control: Option<String>,
    /// Its SYN carried data (the ClientHello or join hello) that the peer
    /// took: TCP Fast Open.
    pub fast_open: bool,
    /// Local and remote addresses (which path the connection takes).
    pub local: Option<String>,
    pub peer: Option<String>,
}

/// Goodput over time of one run.
#[derive(Debug, Serialize, serde::Deserialize, Clone, Default)]
pub struct Timeline {
    pub interval_ms: u64,
    /// Bytes delivered to the application in each interval.
    pub bytes: Vec<u64>,
    /// (milliseconds since start, what happened).
    pub events: Vec<(u64, String)>,
    /// Longest run of intervals without progress, after the first byte and
    /// before the last, in milliseconds.
    pub max_stall_ms: u64,
    /// The first connection's smoothed RTT (tcpi_rtt, microseconds) at the
    /// end of each interval (0: not known); a sender's queueing delay
    /// shows here (`tcpls plot --rtt`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rtt_us: Vec<u32>,
}

#[derive(Debug, Serialize, Clone)]
pub struct Series {
    pub gbps_median: f64,
    pub runs_gbps: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct PerfReport {
    pub bytes: u64,
    pub streams: u32,
    pub direction: &'static str,
    pub cipher: Option<String>,
    /// Each TCPLS run's handshake: `full`, or `resumed` from a ticket.
    pub handshakes: Vec<&'static str>,
    /// Each TCPLS run: whether its ClientHello rode in the SYN (TCP Fast
    /// Open).
    pub fast_open: Vec<bool>,
    pub tcpls: Series,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Series>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_tcpls_to_tls: Option<f64>,
    /// TCPLS with acknowledgements off (`--baseline no-acks`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_acks: Option<Series>,
    /// Goodput with acknowledgements over goodput without.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_acks_to_no_acks: Option<f64>,
    /// TCPLS over one connection (`--baseline single`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub single_connection: Option<Series>,
    /// Goodput with --connections N over goodput with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_single_connection: Option<f64>,
    /// Whether the measured TCPLS sessions acknowledged records.
    pub failover: bool,
    pub connections: Vec<ConnStats>,
    /// The most received-but-unread bytes the client held at once.
    pub peak_reassembly_bytes: u64,
    /// Key generations at the end of the last TCPLS run: the client's
    /// sending key and the newest of the server's (each key update, every
    /// `--key-update-records` records, adds one).
    pub key_generations: Option<[u32; 2]>,
    /// What happened to the last TCPLS run's session, with milliseconds
    /// since its start: connections added, failed or closed, migrations,
    /// transport options asked and answered.
    pub events: Vec<(u64, String)>,
    pub verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_stall_ms: Option<u64>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn bar(total: u64, label: &str, hidden: bool) -> ProgressBar {
    let b = ProgressBar::new(total);
    if hidden {
        b.set_draw_target(ProgressDrawTarget::hidden());
    }
    b.set_style(
        ProgressStyle::with_template("{prefix:>6} {bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("valid template"),
    );
    b.set_prefix(label.to_string());
    b
}

pub async fn run(args: PerfArgs) -> Result<()> {
    if args.streams == 0 || args.repeat == 0 {
        bail!("--streams and --repeat must be at least 1");
    }
    let report = measure(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} {} over {} stream(s){}",
            report.direction,
            crate::units::human(report.bytes),
            report.streams,
            report
                .cipher
                .as_ref()
                .map(|c| format!(", {c}"))
                .unwrap_or_default()
        );
        println!(
            "TCPLS      {:8.2} Gbit/s  (runs: {:.2?})",
            report.tcpls.gbps_median, report.tcpls.runs_gbps
        );
        if let (Some(t), Some(r)) = (&report.tls, report.ratio_tcpls_to_tls) {
            println!(
                "TLS/TCP    {:8.2} Gbit/s  (runs: {:.2?})",
                t.gbps_median, t.runs_gbps
            );
            println!("ratio TCPLS/TLS: {r:.3}");
        }
        if let (Some(n), Some(r)) = (&report.single_connection, report.ratio_to_single_connection) {
            println!(
                "1 conn     {:8.2} Gbit/s  (runs: {:.2?})",
                n.gbps_median, n.runs_gbps
            );
            println!("ratio N connections / 1: {r:.3}");
        }
        if let (Some(n), Some(r)) = (&report.no_acks, report.ratio_acks_to_no_acks) {
            println!(
                "no ACKs    {:8.2} Gbit/s  (runs: {:.2?})",
                n.gbps_median, n.runs_gbps
            );
            println!("ratio ACKs on/off: {r:.3}");
        }
        for c in &report.connections {
            println!(
                "connection {} ({} -> {}, {}): rtt {} us (var {}), cwnd {}, retransmits {}, acked {} B, received {} B",
                c.conn,
                c.local.as_deref().unwrap_or("?"),
                c.peer.as_deref().unwrap_or("?"),
                c.congestion_control.as_deref().unwrap_or("?"),
                c.rtt_us,
                c.rttvar_us,
                c.cwnd,
                c.total_retrans,
                c.bytes_acked,
                c.bytes_received
            );
        }
        for (ms, what) in &report.events {
            println!("at {ms} ms: {what}");
        }
        if let Some(ms) = report.max_stall_ms {
            println!("longest stall: {ms} ms");
        }
        println!(
            "peak reassembly memory: {}",
            crate::units::human(report.peak_reassembly_bytes)
        );
        if report.verified {
            println!("received data verified");
        }
    }
    Ok(())
}

pub async fn measure(args: &PerfArgs) -> Result<PerfReport> {
    let cfg = args
        .client
        .tcpls_config(tcpls::TransportConfig::default())?;
    let no_acks_cfg = args.client.tcpls_config(tcpls::TransportConfig {
        failover: false,
        ..Default::default()
    })?;
    let mut t_runs = Vec::new();
    let mut b_runs = Vec::new();
    let mut n_runs = Vec::new();
    let mut s_runs = Vec::new();
    let mut failover = false;
    let mut peak = 0;
    let mut key_generations = None;
    let mut cipher = None;
    let mut handshakes = Vec::new();
    let mut fast_open = Vec::new();
    let mut stats = Vec::new();
    let mut timeline = Timeline::default();
    let mut events = Vec::new();
    for _ in 0..args.repeat {
        let session = args
            .client
            .open_session(&[args.addr.addr], &args.server_name(), cfg.clone())
            .await?;
        if let Some(why) = session.fallback_reason() {
            bail!(
                "{}: the TCPLS hello failed ({why}) and the session fell back to plain TLS; \
                 perf needs TCPLS (use --baseline tls for plain TLS)",
                args.addr
            );
        }
        if !session.is_tcpls() {
            bail!("{} is not a TCPLS server (plain TLS fallback)", args.addr);
        }
        cipher = session.cipher_suite().map(|c| c.name().to_string());
        handshakes.push(
            session
                .handshake_kind()
                .map_or("none", tcpls::HandshakeKind::as_str),
        );
        fast_open.push(session.used_fast_open());
        failover = session.failover();
        if let Some(name) = &args.scheduler {
            session.set_scheduler(crate::client::scheduler_choice(name))?;
        }
        let conns: Vec<tcpls::ConnectionId> = session
            .connections()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        // Schedulers spread the streams' data over the connections; with
        // `--scheduler none` the streams are steered round-robin instead
        // (each stream on one connection, both directions).
        let steer = conns.len() > 1 && args.scheduler.as_deref() == Some("none");
        let mut streams = Vec::new();
        for i in 0..args.streams as usize {
            let s = session.open_stream().await?;
            if steer {
                s.set_connection(conns[i % conns.len()])?;
            }
            streams.push(s);
        }
        let progress = Arc::new(AtomicU64::new(0));
        let done = Arc::new(Notify::new());
        let sampler = tokio::spawn(sample(
            session.clone(),
            progress.clone(),
            done.clone(),
            conns,
            args.migrate_every,
            args.migrations,
        ));
        let joiner = args.client.join_after.map(|after| {
            let (session, client, addr) = (session.clone(), args.client.clone(), args.addr.addr);
            let start = Instant::now();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let r = client.join_more(&session, addr, 1).await;
                (start.elapsed(), r)
            })
        });
        t_runs.push(timed(args, streams, "TCPLS", true, &progress).await?);
        let joined_at = match joiner {
            Some(j) => {
                let (at, r) = j.await?;
                r?;
                Some(at)
            }
            None => None,
        };
        // A peer's transport option still arriving or loading (a BPF
        // congestion controller) would change the connections under the
        // next run and is missing from this one's report: let it settle.
        let settle = Instant::now();
        while session.peer_options_pending() && settle.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        done.notify_one();
        timeline = sampler.await?;
        if let Some(at) = joined_at {
            timeline
                .events
                .push((at.as_millis() as u64, "connection joined".into()));
        }
        stats = session
            .connection_stats()
            .into_iter()
            .map(|c| ConnStats {
                conn: c.conn.0,
                fast_open: c.fast_open,
                rtt_us: c.rtt_us,
                rttvar_us: c.rttvar_us,
                cwnd: c.cwnd,
                total_retrans: c.total_retrans,
                delivery_rate_bps: c.delivery_rate.saturating_mul(8),
                bytes_acked: c.bytes_acked,
                bytes_received: c.bytes_received,
                congestion_control: c.congestion_control,
                local: c.local_addr.map(|a| a.to_string()),
                peer: c.peer_addr.map(|a| a.to_string()),
            })
            .collect();
        peak = peak.max(session.peak_buffered());
        events = timeline.events.clone();
        key_generations = session.key_generations().map(|(s, r)| [s, r]);
        close(&session).await;

        if args.baseline.contains(&Baseline::Single) {
            let one = ClientOpts {
                connections: 1,
                join_after: None,
                ..args.client.clone()
            };
            s_runs.push(tcpls_baseline(args, &one, cfg.clone(), "1 conn").await?);
        }
        if args.baseline.contains(&Baseline::NoAcks) {
            n_runs.push(tcpls_baseline(args, &args.client, no_acks_cfg.clone(), "no-ack").await?);
        }

        if args.baseline.contains(&Baseline::Tls) {
            let mut conns = Vec::new();
            for _ in 0..args.streams {
                conns.push(
                    args.client
                        .tls_connect(args.addr.addr, &args.server_name())
                        .await?,
                );
            }
            // TLS has no half-close that servers expect: the request stays open.
            let counter = Arc::new(AtomicU64::new(0));
            b_runs.push(timed(args, conns, "TLS", false, &counter).await?);
        }
    }
    if let Some(path) = &args.timeline {
        std::fs::write(path, serde_json::to_vec_pretty(&timeline)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    args.client.save_session_cache(&cfg);
    let tcpls = Series {
        gbps_median: median(&t_runs),
        runs_gbps: t_runs,
    };
    let tls = (!b_runs.is_empty()).then(|| Series {
        gbps_median: median(&b_runs),
        runs_gbps: b_runs,
    });
    let single = (!s_runs.is_empty()).then(|| Series {
        gbps_median: median(&s_runs),
        runs_gbps: s_runs,
    });
    let no_acks = (!n_runs.is_empty()).then(|| Series {
        gbps_median: median(&n_runs),
        runs_gbps: n_runs,
    });
    Ok(PerfReport {
        bytes: args.bytes,
        streams: args.streams,
        direction: if args.upload { "upload" } else { "download" },
        cipher,
        handshakes,
        fast_open,
        ratio_tcpls_to_tls: tls.as_ref().map(|t| tcpls.gbps_median / t.gbps_median),
        ratio_acks_to_no_acks: no_acks.as_ref().map(|n| tcpls.gbps_median / n.gbps_median),
        ratio_to_single_connection: single.as_ref().map(|n| tcpls.gbps_median / n.gbps_median),
        single_connection: single,
        no_acks,
        failover,
        tcpls,
        tls,
        connections: stats,
        peak_reassembly_bytes: peak,
        key_generations,
        verified: args.verify && !args.upload,
        max_stall_ms: args.timeline.as_ref().map(|_| timeline.max_stall_ms),
        events,
    })
}

pub const SAMPLE: Duration = Duration::from_millis(10);

/// Samples delivered bytes every 10 ms and migrates the session on
/// schedule, until `done`; returns the timeline.
pub(crate) async fn sample(
    session: tcpls::Session,
    progress: Arc<AtomicU64>,
    done: Arc<Notify>,
    conns: Vec<tcpls::ConnectionId>,
    every: Option<Duration>,
    max_migrations: u32,
) -> Timeline {
    let start = Instant::now();
    let mut t = Timeline {
        interval_ms: SAMPLE.as_millis() as u64,
        ..Default::default()
    };
    let mut tick = tokio::time::interval(SAMPLE);
    let mut last = 0;
    let mut next_migration = every.map(|d| start + d);
    let mut migrations = 0;
    let mut target = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.notified() => break,
            Some(e) = session.next_event() => {
                if let Some(what) = connection_event(&e) {
                    t.events.push((start.elapsed().as_millis() as u64, what));
                }
                continue;
            }
        }
        let now = progress.load(Ordering::Relaxed);
        t.bytes.push(now - last);
        last = now;
        let rtt = session.connection_stats().first().map_or(0, |c| c.rtt_us);
        t.rtt_us.push(rtt);
        if let Some(at) = next_migration {
            if Instant::now() >= at && migrations < max_migrations && conns.len() > 1 {
                target = (target + 1) % conns.len();
                if session.migrate(conns[target]).is_ok() {
                    migrations += 1;
                    t.events.push((
                        start.elapsed().as_millis() as u64,
                        format!("migrate to connection {}", conns[target]),
                    ));
                }
                next_migration = every.map(|d| at + d);
            }
        }
    }
    t.bytes.push(progress.load(Ordering::Relaxed) - last);
    t.max_stall_ms = max_stall(&t.bytes) * t.interval_ms;
    t
}

/// What a timeline notes of a session event: connections coming and
/// going, transport options.
fn connection_event(e: &tcpls::SessionEvent) -> Option<String> {
    use tcpls::SessionEvent as E;
    if let Some(what) = crate::client::option_event(e) {
        return Some(what);
    }
    Some(match e {
        E::ConnectionAdded(c) => format!("connection {c} added"),
        E::ConnectionFailed(c) => format!("connection {c} failed"),
        E::ConnectionClosed(c) => format!("connection {c} closed"),
        E::FellBack { reason } => format!("fell back to plain TLS: {reason}"),
        _ => return None,
    })
}

/// Longest run of empty intervals between the first and the last non-empty one.
pub fn max_stall(bytes: &[u64]) -> u64 {
    let (Some(first), Some(last)) = (
        bytes.iter().position(|b| *b > 0),
        bytes.iter().rposition(|b| *b > 0),
    ) else {
        return 0;
    };
    let mut longest = 0;
    let mut run = 0;
    for b in &bytes[first..=last] {
        run = if *b == 0 { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

/// One TCPLS baseline run (another session setup, same transfer), in Gbit/s.
async fn tcpls_baseline(
    args: &PerfArgs,
    opts: &ClientOpts,
    cfg: Arc<tcpls::ClientConfig>,
    label: &str,
) -> Result<f64> {
    let s = opts
        .open_session(&[args.addr.addr], &args.server_name(), cfg)
        .await?;
    let mut streams = Vec::new();
    for _ in 0..args.streams {
        streams.push(s.open_stream().await?);
    }
    let counter = Arc::new(AtomicU64::new(0));
    let gbps = timed(args, streams, label, true, &counter).await?;
    close(&s).await;
    Ok(gbps)
}

/// Closes `s` and waits (up to a second) until the CLOSE frame is out, so
/// the server ends the session at once instead of seeing a bare FIN and
/// waiting for a rejoin.
async fn close(s: &tcpls::Session) {
    s.close(0, "perf done");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), s.drained()).await;
}

/// Runs one perf transfer per stream in parallel (the bytes split evenly)
/// and returns the goodput in Gbit/s.
async fn timed<S>(
    args: &PerfArgs,
    streams: Vec<S>,
    label: &str,
    half_close: bool,
    counter: &Arc<AtomicU64>,
) -> Result<f64>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let pb = bar(args.bytes, label, args.json);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (s, n) in streams.into_iter().zip(split(args.bytes, args.streams)) {
        let (upload, verify, pb, counter) = (args.upload, args.verify, pb.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            transfer(s, n, upload, half_close, verify, &pb, &counter).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    Ok(gbps(args.bytes, secs))
}

/// Splits `total` into `k` near-equal parts.
fn split(total: u64, k: u32) -> Vec<u64> {
    let k = k as u64;
    (0..k)
        .map(|i| total / k + u64::from(i < total % k))
        .collect()
}

/// One perf request on `s`: download or upload `n` bytes.
async fn transfer<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    n: u64,
    upload: bool,
    half_close: bool,
    verify: bool,
    pb: &ProgressBar,
    counter: &AtomicU64,
) -> Result<()> {
    let mut buf = vec![0u8; 256 << 10];
    if upload {
        let head =
            format!("PUT {PERF_PREFIX} HTTP/1.1\r\nHost: perf\r\nContent-Length: {n}\r\n\r\n");
        s.write_all(head.as_bytes()).await?;
        let mut left = n;
        while left > 0 {
            let k = left.min(buf.len() as u64) as usize;
            s.write_all(&buf[..k]).await?;
            left -= k as u64;
            pb.inc(k as u64);
            counter.fetch_add(k as u64, Ordering::Relaxed);
        }
    } else {
        let req = format!("GET {PERF_PREFIX}/{n} HTTP/1.1\r\nHost: perf\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
    }
    if half_close {
        s.shutdown().await?;
    } else {
        s.flush().await?;
    }
    let (head, rest) = http::read_head(&mut s)
        .await?
        .ok_or_else(|| anyhow!("no response"))?;
    if head.start.get(1).map(String::as_str) != Some("200") {
        bail!(
            "perf request refused: {:?} (the server needs --perf, and a --perf-max of at least the size asked for)",
            head.start
        );
    }
    if !upload {
        let len = head
            .content_length()?
            .ok_or_else(|| anyhow!("no Content-Length"))?;
        let check = |at: u64, data: &[u8]| -> Result<()> {
            match crate::serve::pattern_mismatch(at, data) {
                Some(off) => bail!("received data differs from the perf pattern at offset {off}"),
                None => Ok(()),
            }
        };
        if verify {
            check(0, &rest)?;
        }
        let mut got = rest.len() as u64;
        counter.fetch_add(got, Ordering::Relaxed);
        while got < len {
            let k = s.read(&mut buf).await?;
            if k == 0 {
                bail!("transfer ended after {got} of {len} bytes");
            }
            if verify {
                check(got, &buf[..k])?;
            }
            got += k as u64;
            pb.inc(k as u64);
            counter.fetch_add(k as u64, Ordering::Relaxed);
        }
    }
    Ok(())
}
