//! `tcpls perf`: goodput against `tcpls serve`, optionally beside a plain
//! TLS 1.3/TCP baseline measured in the same run (interleaved repetitions).

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::client::ClientOpts;
use crate::http;
use crate::serve::PERF_PREFIX;
use crate::units::{gbps, parse_bytes};

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// Plain TLS 1.3 over TCP through OpenSSL (tokio-openssl).
    Tls,
}

#[derive(clap::Args, Debug)]
pub struct PerfArgs {
    /// Address of a `tcpls serve`.
    pub addr: SocketAddr,
    /// Name to verify the certificate against.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Bytes to transfer per run (K, M, G suffixes).
    #[arg(long, default_value = "1G", value_parser = parse_bytes)]
    pub bytes: u64,
    /// Streams to spread the bytes over (plain TLS baseline: connections).
    #[arg(long, default_value_t = 1)]
    pub streams: u32,
    /// Send to the server instead of receiving from it.
    #[arg(long)]
    pub upload: bool,
    /// Also measure this baseline and print TCPLS/baseline ratios.
    #[arg(long)]
    pub baseline: Option<Baseline>,
    /// Runs of each kind, interleaved; figures are medians.
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientOpts,
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
    pub tcpls: Series,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Series>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_tcpls_to_tls: Option<f64>,
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
    }
    Ok(())
}

pub async fn measure(args: &PerfArgs) -> Result<PerfReport> {
    let cfg = args
        .client
        .tcpls_config(tcpls::TransportConfig::default())?;
    let mut t_runs = Vec::new();
    let mut b_runs = Vec::new();
    let mut cipher = None;
    for _ in 0..args.repeat {
        let session = tcpls::connect(args.addr, &args.server_name, cfg.clone()).await?;
        if !session.is_tcpls() {
            bail!("{} is not a TCPLS server (plain TLS fallback)", args.addr);
        }
        cipher = session.cipher_suite().map(|c| c.name().to_string());
        let mut streams = Vec::new();
        for _ in 0..args.streams {
            streams.push(session.open_stream().await?);
        }
        t_runs.push(timed(args, streams, "TCPLS", true).await?);
        session.close(0, "perf done");

        if args.baseline == Some(Baseline::Tls) {
            let mut conns = Vec::new();
            for _ in 0..args.streams {
                conns.push(
                    args.client
                        .tls_connect(args.addr, &args.server_name)
                        .await?,
                );
            }
            // TLS has no half-close that servers expect: the request stays open.
            b_runs.push(timed(args, conns, "TLS", false).await?);
        }
    }
    let tcpls = Series {
        gbps_median: median(&t_runs),
        runs_gbps: t_runs,
    };
    let tls = (!b_runs.is_empty()).then(|| Series {
        gbps_median: median(&b_runs),
        runs_gbps: b_runs,
    });
    Ok(PerfReport {
        bytes: args.bytes,
        streams: args.streams,
        direction: if args.upload { "upload" } else { "download" },
        cipher,
        ratio_tcpls_to_tls: tls.as_ref().map(|t| tcpls.gbps_median / t.gbps_median),
        tcpls,
        tls,
    })
}

/// Runs one perf transfer per stream in parallel (the bytes split evenly)
/// and returns the goodput in Gbit/s.
async fn timed<S>(args: &PerfArgs, streams: Vec<S>, label: &str, half_close: bool) -> Result<f64>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let pb = bar(args.bytes, label, args.json);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (s, n) in streams.into_iter().zip(split(args.bytes, args.streams)) {
        let (upload, pb) = (args.upload, pb.clone());
        tasks.push(tokio::spawn(async move {
            transfer(s, n, upload, half_close, &pb).await
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
    pb: &ProgressBar,
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
        bail!("perf request refused: {:?}", head.start);
    }
    if !upload {
        let len = head
            .content_length()?
            .ok_or_else(|| anyhow!("no Content-Length"))?;
        let mut got = rest.len() as u64;
        while got < len {
            let k = s.read(&mut buf).await?;
            if k == 0 {
                bail!("transfer ended after {got} of {len} bytes");
            }
            got += k as u64;
            pb.inc(k as u64);
        }
    }
    Ok(())
}
