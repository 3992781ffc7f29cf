//! `tcpls soak`: many sessions against a `tcpls serve --perf` for a long
//! time, each running random verified downloads and uploads on a few
//! streams at once and resetting some streams midway. Reports the bytes
//! moved, any byte lost or wrong (must be 0), the sessions that failed and
//! why, and the server's memory and open descriptors over time (with
//! `--server-pid`): the load-and-faults check of docs/security.md.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::ClientOpts;
use crate::http;
use crate::serve::{pattern_mismatch, PERF_PREFIX};

#[derive(clap::Args, Debug)]
pub struct SoakArgs {
    /// Address of a `tcpls serve --perf` (run it with the session limits
    /// lifted: --max-sessions 0 --max-sessions-per-ip 0
    /// --max-handshakes-per-ip 0).
    pub addr: SocketAddr,
    /// Sessions kept open at once (a failed one is replaced).
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,
    /// How long to run (e.g. 10m, 30s).
    #[arg(long, default_value = "60s", value_parser = crate::units::parse_duration)]
    pub duration: Duration,
    /// Streams each session runs at once.
    #[arg(long, default_value_t = 2)]
    pub streams: usize,
    /// Largest transfer of one stream (each draws 1 byte..this).
    #[arg(long, default_value = "1M", value_parser = parse_bytes)]
    pub max_transfer: u64,
    /// Share of streams reset midway, in percent.
    #[arg(long, default_value_t = 10)]
    pub reset_percent: u32,
    /// Process id of the server: its resident memory and open descriptors
    /// are sampled every second.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// A transfer that takes longer than this counts as stalled: its
    /// session is reported as failed and replaced.
    #[arg(long, default_value = "60s", value_parser = crate::units::parse_duration)]
    pub stall_timeout: Duration,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Name to verify the certificate against.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Draw the server's memory and descriptors over time into this PNG
    /// (needs --server-pid).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// TrueType font for the plot's labels.
    #[arg(long, default_value = crate::plot::DEFAULT_FONT)]
    pub font: PathBuf,
    #[command(flatten)]
    pub client: ClientOpts,
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    crate::units::parse_bytes(s).map_err(|e| e.to_string())
}

/// Counters shared by every session task.
#[derive(Default)]
struct Counters {
    downloaded: AtomicU64,
    uploaded: AtomicU64,
    transfers: AtomicU64,
    resets: AtomicU64,
    /// Bytes a completed transfer should have had and did not.
    lost: AtomicU64,
    /// Transfers whose bytes differed from the pattern (wrong, duplicated
    /// or reordered data).
    corrupt: AtomicU64,
    sessions_opened: AtomicU64,
    /// Why sessions failed, and how often.
    failures: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    fn failed(&self, why: String) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        *f.entry(why).or_default() += 1;
    }
}

/// One sample of the server process.
#[derive(Serialize, serde::Deserialize, Clone, Copy)]
pub struct Sample {
    pub seconds: f64,
    pub rss_bytes: u64,
    pub open_fds: u64,
    pub moved_bytes: u64,
}

#[derive(Serialize)]
pub struct SoakReport {
    pub seconds: f64,
    pub sessions: usize,
    pub sessions_opened: u64,
    pub sessions_failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub transfers: u64,
    pub resets: u64,
    pub downloaded_bytes: u64,
    pub uploaded_bytes: u64,
    pub lost_bytes: u64,
    pub corrupt_transfers: u64,
    pub server: Vec<Sample>,
}

pub async fn run(args: SoakArgs) -> Result<()> {
    crate::raise_fd_limit();
    if args.sessions == 0 || args.streams == 0 || args.max_transfer == 0 {
        bail!("--sessions, --streams and --max-transfer must be at least 1");
    }
    let cfg = args
        .client
        .tcpls_config(tcpls::TransportConfig::default())?;
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let deadline = start + args.duration;
    let args = Arc::new(args);
    let mut tasks = Vec::new();
    for i in 0..args.sessions {
        tasks.push(tokio::spawn(session_loop(
            args.clone(),
            cfg.clone(),
            counters.clone(),
            deadline,
            i as u64,
        )));
        // Open gradually (250 a second), within the server's handshake
        // limits, which refuse rather than queue.
        if i % 25 == 24 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let samples = sample_server(&args, &counters, start, deadline).await;
    for t in tasks {
        t.await?;
    }
    let failures = counters
        .failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let report = SoakReport {
        seconds: start.elapsed().as_secs_f64(),
        sessions: args.sessions,
        sessions_opened: counters.sessions_opened.load(Ordering::Relaxed),
        sessions_failed: failures.values().sum(),
        failures,
        transfers: counters.transfers.load(Ordering::Relaxed),
        resets: counters.resets.load(Ordering::Relaxed),
        downloaded_bytes: counters.downloaded.load(Ordering::Relaxed),
        uploaded_bytes: counters.uploaded.load(Ordering::Relaxed),
        lost_bytes: counters.lost.load(Ordering::Relaxed),
        corrupt_transfers: counters.corrupt.load(Ordering::Relaxed),
        server: samples,
    };
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &json).with_context(|| format!("writing {}", out.display()))?;
    }
    if let Some(png) = &args.plot {
        crate::plot::load_font(&args.font)?;
        let title = format!("tcpls soak: {} sessions", report.sessions);
        crate::plot::soak_chart(&report.server, png, &title)?;
    }
    if args.json {
        println!("{json}");
    } else {
        print_text(&report);
    }
    if report.lost_bytes > 0 || report.corrupt_transfers > 0 {
        bail!(
            "{} bytes lost, {} transfers with wrong data",
            report.lost_bytes,
            report.corrupt_transfers
        );
    }
    Ok(())
}

fn print_text(r: &SoakReport) {
    println!(
        "{} sessions for {:.0} s: {} transfers ({} reset midway), {} down, {} up",
        r.sessions,
        r.seconds,
        r.transfers,
        r.resets,
        crate::units::human(r.downloaded_bytes),
        crate::units::human(r.uploaded_bytes)
    );
    println!(
        "lost {} bytes, {} transfers with wrong data; {} sessions opened, {} failed",
        r.lost_bytes, r.corrupt_transfers, r.sessions_opened, r.sessions_failed
    );
    for (why, n) in &r.failures {
        println!("  {n} x {why}");
    }
    if let (Some(first), Some(last)) = (r.server.first(), r.server.last()) {
        let peak = r.server.iter().map(|s| s.rss_bytes).max().unwrap_or(0);
        println!(
            "server RSS {} -> {} (peak {}), open descriptors {} -> {}",
            crate::units::human(first.rss_bytes),
            crate::units::human(last.rss_bytes),
            crate::units::human(peak),
            first.open_fds,
            last.open_fds
        );
    }
}

/// Samples the server every second until `deadline`.
async fn sample_server(
    args: &SoakArgs,
    counters: &Counters,
    start: Instant,
    deadline: Instant,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() < deadline {
        tick.tick().await;
        let Some(pid) = args.server_pid else { continue };
        let (Ok(rss), Ok(fds)) = (crate::idle::rss(pid), open_fds(pid)) else {
            continue;
        };
        samples.push(Sample {
            seconds: start.elapsed().as_secs_f64(),
            rss_bytes: rss,
            open_fds: fds,
            moved_bytes: counters.downloaded.load(Ordering::Relaxed)
                + counters.uploaded.load(Ordering::Relaxed),
        });
    }
    samples
}

fn open_fds(pid: u32) -> Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

/// Keeps one session busy until `deadline`, replacing it when it fails.
async fn session_loop(
    args: Arc<SoakArgs>,
    cfg: Arc<tcpls::ClientConfig>,
    counters: Arc<Counters>,
    deadline: Instant,
    index: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed ^ index.wrapping_mul(0x9E37_79B9));
    while Instant::now() < deadline {
        let session = match args
            .client
            .open_session(&[args.addr], &args.server_name, cfg.clone())
            .await
        {
            Ok(s) => s,
            Err(e) => {
                counters.failed(format!("connect: {e:#}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        counters.sessions_opened.fetch_add(1, Ordering::Relaxed);
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..args.streams {
            let mut rng = rand::rngs::StdRng::seed_from_u64(rng.gen());
            let (session, counters) = (session.clone(), counters.clone());
            let (max, reset) = (args.max_transfer, args.reset_percent);
            let stall = args.stall_timeout;
            workers.spawn(async move {
                while Instant::now() < deadline {
                    // A transfer that makes no progress for this long is a
                    // stall: reported, not waited for forever.
                    let once = stream_once(&session, &mut rng, max, reset, &counters);
                    match tokio::time::timeout(stall, once).await {
                        Ok(r) => r?,
                        Err(_) => bail!("transfer stalled for {stall:?}"),
                    }
                }
                Ok::<(), anyhow::Error>(())
            });
        }
        let mut error = None;
        while let Some(r) = workers.join_next().await {
            if let Some(e) = r.map_err(anyhow::Error::from).and_then(|r| r).err() {
                error.get_or_insert(e);
            }
        }
        if let Some(e) = error {
            let why = session
                .close_reason()
                .map_or_else(|| format!("{e:#}"), |r| r.to_string());
            counters.failed(why);
            session.close(1, "soak: session failed");
            continue;
        }
        session.close(0, "soak done");
        let _ = tokio::time::timeout(Duration::from_secs(2), session.drained()).await;
        return;
    }
}

/// One transfer on a new stream: a download or an upload of a random size,
/// verified, or reset midway. An error means the session failed.
async fn stream_once(
    session: &tcpls::Session,
    rng: &mut impl Rng,
    max: u64,
    reset_percent: u32,
    counters: &Counters,
) -> Result<()> {
    let n = rng.gen_range(1..=max);
    let upload = rng.gen_bool(0.5);
    let reset_at = (rng.gen_range(0..100) < reset_percent).then(|| rng.gen_range(0..n));
    let mut s = session.open_stream().await?;
    counters.transfers.fetch_add(1, Ordering::Relaxed);
    if upload {
        let head =
            format!("PUT {PERF_PREFIX} HTTP/1.1\r\nHost: soak\r\nContent-Length: {n}\r\n\r\n");
        s.write_all(head.as_bytes()).await?;
        let block = crate::serve::perf_block();
        let mut sent = 0u64;
        while sent < n {
            let at = (sent % block.len() as u64) as usize;
            let k = ((n - sent) as usize).min(block.len() - at).min(64 << 10);
            if reset_at.is_some_and(|r| sent + k as u64 > r) {
                s.send_half().reset(1)?;
                counters.resets.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            s.write_all(&block[at..at + k]).await?;
            sent += k as u64;
        }
        s.shutdown().await?;
        let (head, body) = read_response(&mut s).await?;
        let mut body = body;
        s.read_to_end(&mut body).await?;
        let text = String::from_utf8_lossy(&body);
        if head != "200" || !text.contains(&format!("received {n}")) {
            counters.lost.fetch_add(n, Ordering::Relaxed);
        } else if !text.contains("pattern ok") {
            counters.corrupt.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.uploaded.fetch_add(n, Ordering::Relaxed);
        }
        return Ok(());
    }
    let req = format!("GET {PERF_PREFIX}/{n} HTTP/1.1\r\nHost: soak\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    s.shutdown().await?;
    let (status, first) = read_response(&mut s).await?;
    if status != "200" {
        bail!("download refused: {status} (the server needs --perf)");
    }
    let mut got = 0u64;
    let mut wrong = pattern_mismatch(0, &first).is_some();
    got += first.len() as u64;
    let mut buf = vec![0u8; 64 << 10];
    while got < n {
        if reset_at.is_some_and(|r| got >= r) {
            // Stop reading and abandon our side; the server's writes fail.
            s.send_half().reset(2)?;
            counters.resets.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let k = s.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        wrong |= pattern_mismatch(got, &buf[..k]).is_some();
        got += k as u64;
    }
    if got != n {
        counters.lost.fetch_add(n.abs_diff(got), Ordering::Relaxed);
    }
    if wrong {
        counters.corrupt.fetch_add(1, Ordering::Relaxed);
    } else {
        counters.downloaded.fetch_add(got.min(n), Ordering::Relaxed);
    }
    Ok(())
}

/// Reads a response head; returns its status code and the body bytes that
/// came with it.
async fn read_response(s: &mut tcpls::Stream) -> Result<(String, Vec<u8>)> {
    let (head, rest) = http::read_head(s)
        .await?
        .ok_or_else(|| anyhow!("no response"))?;
    let status = head.start.get(1).cloned().unwrap_or_default();
    Ok((status, rest.to_vec()))
}
