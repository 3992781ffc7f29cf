//! `tcpls get`: fetch URLs over TCPLS, one stream per URL, in parallel;
//! plain HTTPS (through the session's TLS fallback) against ordinary servers.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::client::ClientOpts;
use crate::http;

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// URLs to fetch (https://host[:port]/path); several URLs to one host share a session.
    #[arg(required = true)]
    pub urls: Vec<String>,
    /// Write the body here (one URL only; default: standard output).
    #[arg(short = 'o', long, conflicts_with = "output_dir")]
    pub output: Option<PathBuf>,
    /// Save each body in this directory under its file name.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Print a JSON report (with SHA-256 of each body) instead of bodies.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// What one fetch produced.
#[derive(Debug, Serialize, Clone)]
pub struct Report {
    pub url: String,
    pub status: u16,
    pub bytes: u64,
    pub sha256: String,
    pub seconds: f64,
    /// From the start of the session's connection to the response's
    /// first bytes (its head), for this URL.
    pub first_byte_seconds: f64,
    /// `full` or `resumed` (from a ticket in the session cache).
    pub handshake: &'static str,
    /// The ClientHello rode in the SYN (TCP Fast Open).
    pub fast_open: bool,
    pub tcpls: bool,
    /// Why the client fell back to plain TLS after its TCPLS hello got a
    /// reset, an EOF or no answer (null: it did not).
    pub fallback: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_to: Option<PathBuf>,
}

/// Where a body goes.
#[derive(Debug, Clone)]
pub enum Sink {
    Stdout,
    File(PathBuf),
    Discard,
}

struct Target {
    url: url::Url,
    sink: Sink,
}

fn host_port(u: &url::Url) -> Result<(String, u16)> {
    if u.scheme() != "https" && u.scheme() != "tcpls" {
        bail!("{u}: only https:// (or tcpls://) URLs are supported");
    }
    let host = u.host_str().ok_or_else(|| anyhow!("{u}: no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok((host, u.port().unwrap_or(443)))
}

pub async fn run(args: GetArgs) -> Result<()> {
    let mut targets = Vec::new();
    for (i, raw) in args.urls.iter().enumerate() {
        let url = url::Url::parse(raw).with_context(|| format!("bad URL {raw:?}"))?;
        host_port(&url)?;
        let sink = if let Some(o) = &args.output {
            if args.urls.len() > 1 {
                bail!("-o takes one URL; use --output-dir for several");
            }
            Sink::File(o.clone())
        } else if let Some(dir) = &args.output_dir {
            let name = url
                .path_segments()
                .and_then(|mut s| s.next_back().map(str::to_string))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| format!("index-{i}"));
            Sink::File(dir.join(name))
        } else if args.json {
            Sink::Discard
        } else if args.urls.len() > 1 {
            bail!("several URLs: use --output-dir DIR, or --json to only hash the bodies");
        } else {
            Sink::Stdout
        };
        targets.push(Target { url, sink });
    }
    let cfg = args
        .client
        .tcpls_config_alpn(tcpls::TransportConfig::default(), &[b"http/1.1"])?;
    let bars = MultiProgress::new();
    if args.json {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    // One session per host:port, in parallel.
    let mut groups: Vec<((String, u16), Vec<Target>)> = Vec::new();
    for t in targets {
        let key = host_port(&t.url)?;
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(t),
            None => groups.push((key, vec![t])),
        }
    }
    let mut tasks = Vec::new();
    for ((host, port), targets) in groups {
        let (cfg, bars, opts) = (cfg.clone(), bars.clone(), args.client.clone());
        tasks.push(tokio::spawn(async move {
            fetch_group(&host, port, targets, cfg, &opts, bars).await
        }));
    }
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for t in tasks {
        for r in t.await? {
            match r {
                Ok(rep) => reports.push(rep),
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
    }
    args.client.save_session_cache(&cfg);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            let mode = match (&r.fallback, r.tcpls) {
                (Some(why), _) => format!("plain TLS, fell back: {why}"),
                (None, true) => "TCPLS".into(),
                (None, false) => "plain TLS".into(),
            };
            eprintln!(
                "{} {} {} bytes in {:.3}s ({mode}, {} handshake{}, first byte after {:.3}s), sha256 {}",
                r.status,
                r.url,
                r.bytes,
                r.seconds,
                r.handshake,
                if r.fast_open { ", TCP Fast Open" } else { "" },
                r.first_byte_seconds,
                r.sha256
            );
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} fetches failed:\n  {}",
            failures.len(),
            args.urls.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

async fn fetch_group(
    host: &str,
    port: u16,
    targets: Vec<Target>,
    cfg: std::sync::Arc<tcpls::ClientConfig>,
    opts: &ClientOpts,
    bars: MultiProgress,
) -> Vec<Result<Report>> {
    let addrs: Vec<std::net::SocketAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(a) => a.collect(),
        Err(_) => Vec::new(),
    };
    if addrs.is_empty() {
        return targets
            .iter()
            .map(|t| Err(anyhow!("{}: cannot resolve {host}", t.url)))
            .collect();
    }
    let connect_start = Instant::now();
    let first = match opts.open_session(&addrs, host, cfg.clone()).await {
        Ok(s) => {
            opts.join_later(&s);
            s
        }
        Err(e) => {
            let why = crate::client::describe(&e);
            return targets
                .iter()
                .map(|t| Err(anyhow!("{}: {why}", t.url)))
                .collect();
        }
    };
    // Further plain-TLS sessions go where the first one succeeded.
    let addr = first.peer_addr().unwrap_or(addrs[0]);
    let tcpls = first.is_tcpls();
    let mut tasks = Vec::new();
    for (i, t) in targets.into_iter().enumerate() {
        let (session, connect_start) = if tcpls || i == 0 {
            (Ok(first.clone()), connect_start)
        } else {
            // A plain TLS server gets one connection per URL.
            let start = Instant::now();
            (tcpls::connect(addr, host, cfg.clone()).await, start)
        };
        let bar = bars.add(ProgressBar::new(0));
        let host = host.to_string();
        tasks.push(tokio::spawn(async move {
            let session = session.map_err(|e| anyhow!("{}: {e}", t.url))?;
            // Not steered: the server's scheduler spreads each response
            // over every connection of the session.
            let stream = session.open_stream().await?;
            let is_tcpls = session.is_tcpls();
            let start = Instant::now();
            let path = &t.url[url::Position::BeforePath..url::Position::AfterQuery];
            let got = fetch(stream, &host, path, is_tcpls, &t.sink, &bar, None)
                .await
                .with_context(|| t.url.to_string())?;
            bar.finish_and_clear();
            Ok(Report {
                url: t.url.to_string(),
                status: got.status,
                bytes: got.bytes,
                sha256: got.sha256,
                seconds: start.elapsed().as_secs_f64(),
                first_byte_seconds: (got.head_at - connect_start).as_secs_f64(),
                handshake: session
                    .handshake_kind()
                    .map_or("none", tcpls::HandshakeKind::as_str),
                fast_open: session.used_fast_open(),
                tcpls: is_tcpls,
                fallback: session.fallback_reason(),
                saved_to: match &t.sink {
                    Sink::File(p) => Some(p.clone()),
                    _ => None,
                },
            })
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(
            t.await
                .unwrap_or_else(|e| Err(anyhow!("fetch task failed: {e}"))),
        );
    }
    out
}

/// What [`fetch`] got.
pub struct Fetched {
    pub status: u16,
    /// Body length.
    pub bytes: u64,
    /// The body's SHA-256, in hex.
    pub sha256: String,
    /// When the response's head had arrived.
    pub head_at: Instant,
}

/// Sends `GET path` on `stream` and streams the body to `sink`.
pub async fn fetch<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    path: &str,
    half_close: bool,
    sink: &Sink,
    bar: &ProgressBar,
    counter: Option<&std::sync::atomic::AtomicU64>,
) -> Result<Fetched> {
    let count = |n: usize| {
        if let Some(c) = counter {
            c.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tcpls\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    if half_close {
        // TCPLS streams half-close; a plain TLS close_notify would end
        // some servers' responses early.
        stream.shutdown().await?;
    } else {
        stream.flush().await?;
    }
    let (head, rest) = http::read_head(&mut stream)
        .await?
        .ok_or_else(|| anyhow!("server closed without a response"))?;
    let head_at = Instant::now();
    let status: u16 = head
        .start
        .get(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {:?}", head.start))?;
    let len = head.content_length()?;
    if let Some(l) = len {
        bar.set_length(l);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
                .expect("valid template"),
        );
    }
    bar.set_message(path.to_string());
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match sink {
        Sink::Stdout => Box::new(tokio::io::stdout()),
        Sink::File(p) => Box::new(
            tokio::fs::File::create(p)
                .await
                .with_context(|| format!("creating {}", p.display()))?,
        ),
        Sink::Discard => Box::new(tokio::io::sink()),
    };
    let mut hasher = Sha256::new();
    // Bytes of `n` that belong to the body (a server may send more).
    let body_part = |total: u64, n: usize| len.map_or(n, |l| (l - total).min(n as u64) as usize);
    let k = body_part(0, rest.len());
    count(k);
    hasher.update(&rest[..k]);
    out.write_all(&rest[..k]).await?;
    let mut total = k as u64;
    let mut buf = vec![0u8; 256 << 10];
    while len.is_none_or(|l| total < l) {
        let n = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await?;
        if n == 0 {
            if let Some(l) = len {
                bail!("body ended after {total} of {l} bytes");
            }
            break;
        }
        let k = body_part(total, n);
        count(k);
        hasher.update(&buf[..k]);
        out.write_all(&buf[..k]).await?;
        total += k as u64;
        bar.set_position(total);
    }
    out.flush().await?;
    if !(200..300).contains(&status) {
        bail!("HTTP {status} for {path}");
    }
    Ok(Fetched {
        status,
        bytes: total,
        sha256: hex::encode(hasher.finalize()),
        head_at,
    })
}
