//! `tcpls get`: fetch URLs over TCPLS, one stream per URL, in parallel;
//! plain HTTPS (through the session's TLS fallback) against ordinary
//! servers. curl's conventions where they apply: `-L`, `--fail`,
//! `--connect-timeout`, `--resolve` and its exit codes (see `exit.rs`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::client::ClientOpts;
use crate::exit::{self, coded};
use crate::http;

/// Redirects followed at most, as curl's default `--max-redirs`.
const MAX_REDIRECTS: usize = 50;

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
    /// Print a JSON report (with SHA-256 of each body) instead of bodies;
    /// failed fetches are in it too, with their error and exit code.
    #[arg(long)]
    pub json: bool,
    /// Follow redirects (3xx with a Location), up to 50, to other hosts
    /// too (curl's -L).
    #[arg(short = 'L', long)]
    pub location: bool,
    /// An HTTP error (status 400 or more) fails the fetch: no body is
    /// written and the exit code is 22 (curl's --fail). Without it the
    /// body of an error is written and the fetch counts as done.
    #[arg(short = 'f', long)]
    pub fail: bool,
    /// Give up on a server that does not complete the TCP and TLS
    /// handshakes within this time, e.g. 5s (exit code 28).
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration)]
    pub connect_timeout: Option<Duration>,
    /// Connect to ADDR for HOST:PORT instead of resolving HOST (repeatable;
    /// curl's --resolve). The certificate is still checked for HOST.
    #[arg(long, value_name = "HOST:PORT:ADDR", value_parser = parse_resolve)]
    pub resolve: Vec<(String, u16, IpAddr)>,
    /// Do not send requests as early data (TLS 1.3 0-RTT). By default,
    /// with a ticket from the server that allows it and one connection,
    /// the request travels with the ClientHello (GET is safe to replay).
    #[arg(long)]
    pub no_early_data: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

fn parse_resolve(s: &str) -> Result<(String, u16, IpAddr), String> {
    let bad = || format!("{s:?}: expected HOST:PORT:ADDR, e.g. example.com:443:127.0.0.1");
    let (host, rest) = s.split_once(':').ok_or_else(bad)?;
    let (port, addr) = rest.split_once(':').ok_or_else(bad)?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    Ok((
        host.to_ascii_lowercase(),
        port.parse().map_err(|_| bad())?,
        addr.parse().map_err(|_| bad())?,
    ))
}

/// What one fetch produced (or why it failed).
#[derive(Debug, Serialize, Clone, Default)]
pub struct Report {
    pub url: String,
    /// The final response's status (after redirects with `-L`).
    pub status: Option<u16>,
    pub bytes: u64,
    pub sha256: Option<String>,
    pub seconds: f64,
    /// From the start of the session's connection to the response's
    /// first bytes (its head), for this URL.
    pub first_byte_seconds: Option<f64>,
    /// `full` or `resumed` (from a ticket in the session cache).
    pub handshake: Option<&'static str>,
    /// The ClientHello rode in the SYN (TCP Fast Open).
    pub fast_open: bool,
    /// The request went as early data: `none`, `accepted` or `rejected`
    /// (then sent again after the handshake).
    pub early_data: Option<&'static str>,
    pub tcpls: bool,
    /// Why the client fell back to plain TLS after its TCPLS hello got a
    /// reset, an EOF or no answer (null: it did not).
    pub fallback: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_to: Option<PathBuf>,
    /// URLs redirected to, in order (`-L`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redirects: Vec<String>,
    /// Why the fetch failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The fetch's exit code (curl's), when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u8>,
}

impl Report {
    fn failed(url: &url::Url, e: &anyhow::Error) -> Self {
        Self {
            url: url.to_string(),
            error: Some(crate::client::describe(e)),
            exit_code: Some(exit::code_of(e)),
            ..Default::default()
        }
    }
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

/// What every fetch of one run follows.
#[derive(Clone)]
struct Policy {
    location: bool,
    fail: bool,
    connect_timeout: Option<Duration>,
    resolve: Vec<(String, u16, IpAddr)>,
    early_data: bool,
    opts: ClientOpts,
    cfg: Arc<tcpls::ClientConfig>,
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
    let policy = Policy {
        location: args.location,
        fail: args.fail,
        connect_timeout: args.connect_timeout,
        resolve: args.resolve.clone(),
        early_data: !args.no_early_data,
        opts: args.client.clone(),
        cfg: cfg.clone(),
    };
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
        let (policy, bars) = (policy.clone(), bars.clone());
        tasks.push(tokio::spawn(async move {
            fetch_group(&host, port, targets, &policy, bars).await
        }));
    }
    let mut reports = Vec::new();
    for t in tasks {
        reports.extend(t.await?);
    }
    args.client.save_session_cache(&cfg);
    let failures: Vec<&Report> = reports.iter().filter(|r| r.error.is_some()).collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in reports.iter().filter(|r| r.error.is_none()) {
            let mode = match (&r.fallback, r.tcpls) {
                (Some(why), _) => format!("plain TLS, fell back: {why}"),
                (None, true) => "TCPLS".into(),
                (None, false) => "plain TLS".into(),
            };
            eprintln!(
                "{} {} {} bytes in {:.3}s ({mode}, {} handshake{}, first byte after {:.3}s), sha256 {}",
                r.status.unwrap_or(0),
                r.url,
                r.bytes,
                r.seconds,
                r.handshake.unwrap_or("no"),
                if r.fast_open { ", TCP Fast Open" } else { "" },
                r.first_byte_seconds.unwrap_or(0.0),
                r.sha256.as_deref().unwrap_or("")
            );
        }
    }
    if let Some(first) = failures.first() {
        let lines: Vec<String> = failures
            .iter()
            .map(|r| format!("{}: {}", r.url, r.error.as_deref().unwrap_or("")))
            .collect();
        return Err(coded(
            first.exit_code.unwrap_or(1),
            format!(
                "{} of {} fetches failed:\n  {}",
                failures.len(),
                args.urls.len(),
                lines.join("\n  ")
            ),
        ));
    }
    Ok(())
}

/// Opens a session to `host:port` (its `--resolve` address, else DNS)
/// within `--connect-timeout`; failures carry curl's exit codes.
async fn connect(host: &str, port: u16, p: &Policy) -> Result<tcpls::Session> {
    let forced = p
        .resolve
        .iter()
        .find(|(h, pt, _)| h.eq_ignore_ascii_case(host) && *pt == port)
        .map(|(_, _, ip)| SocketAddr::new(*ip, port));
    let addrs: Vec<SocketAddr> = match forced {
        Some(a) => vec![a],
        None => tokio::net::lookup_host((host, port))
            .await
            .map(Iterator::collect)
            .unwrap_or_default(),
    };
    if addrs.is_empty() {
        return Err(coded(exit::RESOLVE, format!("cannot resolve {host}")));
    }
    // Early data: one connection, no local address chosen, and no
    // transport option to send once the handshake is done (waiting for it
    // would send the ClientHello before the request).
    let early = p.early_data
        && p.opts.connections == 1
        && p.opts.binds.is_empty()
        && !p.opts.options.sends_requests();
    let open = async {
        if early {
            tcpls::connect_early(addrs[0], host, p.cfg.clone())
                .await
                .with_context(|| format!("connecting to {}", addrs[0]))
        } else {
            p.opts.open_session(&addrs, host, p.cfg.clone()).await
        }
    };
    let session = match p.connect_timeout {
        Some(t) => tokio::time::timeout(t, open).await.map_err(|_| {
            coded(
                exit::TIMEOUT,
                format!("no session with {host}:{port} within {t:?}"),
            )
        })?,
        None => open.await,
    };
    session.map_err(|e| coded(exit::connect_code(&e), crate::client::describe(&e)))
}

async fn fetch_group(
    host: &str,
    port: u16,
    targets: Vec<Target>,
    p: &Policy,
    bars: MultiProgress,
) -> Vec<Report> {
    let connect_start = Instant::now();
    let first = match connect(host, port, p).await {
        Ok(s) => {
            p.opts.join_later(&s);
            s
        }
        Err(e) => return targets.iter().map(|t| Report::failed(&t.url, &e)).collect(),
    };
    let mut tasks = Vec::new();
    for (i, t) in targets.into_iter().enumerate() {
        let bar = bars.add(ProgressBar::new(0));
        let (p, host, first) = (p.clone(), host.to_string(), first.clone());
        tasks.push(tokio::spawn(async move {
            // A plain TLS server gets one connection per URL. (The first
            // URL goes at once: with early data, its request leaves with
            // the ClientHello; the others wait for the handshake.)
            let fresh = i > 0 && {
                let _ = first.established().await;
                !first.is_tcpls()
            };
            let r = fetch_url(&t, &host, port, first, fresh, connect_start, &p, &bar).await;
            bar.finish_and_clear();
            r.unwrap_or_else(|e| Report::failed(&t.url, &e))
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap_or_else(|e| Report {
            error: Some(format!("fetch task failed: {e}")),
            exit_code: Some(1),
            ..Default::default()
        }));
    }
    out
}

/// Fetches one URL on `session` (a new one if `fresh`), following
/// redirects with `-L`.
#[allow(clippy::too_many_arguments)]
async fn fetch_url(
    t: &Target,
    host: &str,
    port: u16,
    session: tcpls::Session,
    fresh: bool,
    connect_start: Instant,
    p: &Policy,
    bar: &ProgressBar,
) -> Result<Report> {
    let (mut session, mut connect_start) = if fresh {
        let start = Instant::now();
        (connect(host, port, p).await?, start)
    } else {
        (session, connect_start)
    };
    let mut url = t.url.clone();
    let mut origin = (host.to_string(), port);
    let mut redirects = Vec::new();
    let start = Instant::now();
    loop {
        // Not steered: the server's scheduler spreads each response over
        // every connection of the session.
        let stream = session.open_stream().await?;
        // An early session's server spoke TCPLS when it gave the ticket.
        let half_close = session.is_tcpls() || session.early_data() == tcpls::EarlyData::Pending;
        let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let (follow, fail) = (p.location, p.fail);
        let sink = |status: u16| {
            if (follow && is_redirect(status)) || (fail && status >= 400) {
                Sink::Discard
            } else {
                t.sink.clone()
            }
        };
        let got = fetch(stream, &origin.0, path, half_close, &sink, bar, None).await?;
        if let (true, true, Some(loc)) = (p.location, is_redirect(got.status), &got.location) {
            if redirects.len() == MAX_REDIRECTS {
                bail!("more than {MAX_REDIRECTS} redirects");
            }
            let next = url
                .join(loc)
                .with_context(|| format!("bad Location {loc:?}"))?;
            let next_origin = host_port(&next)?;
            if next_origin != origin {
                connect_start = Instant::now();
                session = connect(&next_origin.0, next_origin.1, p).await?;
                origin = next_origin;
            }
            redirects.push(next.to_string());
            url = next;
            continue;
        }
        if p.fail && got.status >= 400 {
            return Err(coded(exit::HTTP, format!("HTTP {}", got.status)));
        }
        return Ok(Report {
            url: t.url.to_string(),
            status: Some(got.status),
            bytes: got.bytes,
            sha256: Some(got.sha256),
            seconds: start.elapsed().as_secs_f64(),
            first_byte_seconds: Some((got.head_at - connect_start).as_secs_f64()),
            handshake: Some(
                session
                    .handshake_kind()
                    .map_or("none", tcpls::HandshakeKind::as_str),
            ),
            fast_open: session.used_fast_open(),
            early_data: Some(session.early_data().as_str()),
            tcpls: session.is_tcpls(),
            fallback: session.fallback_reason(),
            saved_to: match &t.sink {
                Sink::File(p) => Some(p.clone()),
                _ => None,
            },
            redirects,
            error: None,
            exit_code: None,
        });
    }
}

/// Statuses that redirect with a Location (not 304 Not Modified).
fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
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
    /// The Location header, if any.
    pub location: Option<String>,
}

/// How a response body ends.
enum Framing {
    Length(u64),
    Chunked(http::Chunked),
    /// Until the server closes.
    Close,
}

/// Sends `GET path` on `stream` and streams the body to the sink that
/// `sink` chooses for the response's status. Bodies delimited by
/// Content-Length, chunked, or by the end of the stream.
pub async fn fetch<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    path: &str,
    half_close: bool,
    sink: &(dyn Fn(u16) -> Sink + Sync),
    bar: &ProgressBar,
    counter: Option<&std::sync::atomic::AtomicU64>,
) -> Result<Fetched> {
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
    let mut framing = if http::is_chunked(&head) {
        Framing::Chunked(http::Chunked::default())
    } else {
        match head.content_length()? {
            Some(l) => Framing::Length(l),
            None => Framing::Close,
        }
    };
    if let Framing::Length(l) = framing {
        bar.set_length(l);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
                .expect("valid template"),
        );
    }
    bar.set_message(path.to_string());
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match sink(status) {
        Sink::Stdout => Box::new(tokio::io::stdout()),
        Sink::File(p) => Box::new(
            tokio::fs::File::create(&p)
                .await
                .with_context(|| format!("creating {}", p.display()))?,
        ),
        Sink::Discard => Box::new(tokio::io::sink()),
    };
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut decoded = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut input: &[u8] = &rest;
    loop {
        // The body's bytes in `input`, then whether it is complete.
        let (body, done): (&[u8], bool) = match &mut framing {
            Framing::Length(l) => {
                let k = (*l - total).min(input.len() as u64) as usize;
                (&input[..k], total + k as u64 == *l)
            }
            Framing::Chunked(d) => {
                decoded.clear();
                d.feed(input, &mut decoded)?;
                (&decoded[..], d.is_done())
            }
            Framing::Close => (input, false),
        };
        if let Some(c) = counter {
            c.fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        hasher.update(body);
        out.write_all(body).await?;
        total += body.len() as u64;
        bar.set_position(total);
        if done {
            break;
        }
        // The end of the connection ends a body read to the close; one
        // with a length or chunks is truncated (curl's 18), whether the
        // TLS peer sent close_notify or just closed TCP.
        let truncated = |cause: String| {
            let what = match framing {
                Framing::Length(l) => format!("body ended after {total} of {l} bytes"),
                _ => format!("chunked body ended before its last chunk ({total} bytes)"),
            };
            coded(exit::PARTIAL, format!("{what}{cause}"))
        };
        let n_read = match tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
            Ok(n) => n,
            Err(e) if !matches!(framing, Framing::Close) => {
                return Err(truncated(format!(": {e}")));
            }
            Err(e) => return Err(e.into()),
        };
        if n_read == 0 {
            match framing {
                Framing::Close => break,
                _ => return Err(truncated(String::new())),
            }
        }
        input = &buf[..n_read];
    }
    out.flush().await?;
    Ok(Fetched {
        status,
        bytes: total,
        sha256: hex::encode(hasher.finalize()),
        head_at,
        location: head.header("location").map(str::to_string),
    })
}
