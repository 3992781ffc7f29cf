//! `tcpls serve`: files over TCPLS (and plain TLS 1.3 through fallback),
//! plus the perf source/sink used by `tcpls perf`.
//!
//! Safe by default: no files unless `--root` is given (and never a dotfile
//! or anything under a dot-directory), no perf endpoint unless `--perf`,
//! idle sessions closed after `--idle-timeout`, and sessions capped in
//! total and per client address.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use tcpls::{Server, ServerConfig, ServerLimits, TransportConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::http;

/// Prefix of the perf endpoints: `GET /_perf/N` sends N bytes, `PUT /_perf`
/// with a Content-Length discards the body.
pub const PERF_PREFIX: &str = "/_perf";

/// `serve`'s default `--idle-timeout`.
const SERVE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub server: ServerOpts,
    /// Directory whose files are served (none without it). Files and
    /// directories whose name starts with '.' are never served.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Enable the perf endpoints used by `tcpls perf`: `GET /_perf/N`
    /// sends N bytes, `PUT /_perf` discards the body.
    #[arg(long)]
    pub perf: bool,
    /// Largest perf transfer one request may ask for (e.g. 16G, 100M).
    #[arg(long, default_value = "16G", value_parser = parse_bytes)]
    pub perf_max: u64,
    /// Longest a stream may take to send its request head (e.g. 10s,
    /// 500ms); a client that sends part of one and goes quiet is dropped.
    #[arg(long, default_value = "10s", value_parser = crate::units::parse_duration)]
    pub request_timeout: Duration,
}

/// Server-side options shared by `serve` and `tunnel server`: where to
/// listen, the certificate, the session limits, what each session gets.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerOpts {
    /// Address to listen on (unless systemd passes a listening socket:
    /// socket activation, LISTEN_FDS).
    #[arg(long, default_value = "127.0.0.1:4443")]
    pub listen: SocketAddr,
    /// Certificate chain (PEM). Without it a self-signed one is generated.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Ask clients for a certificate signed by a CA in this PEM file
    /// (mutual TLS); see --client-auth.
    #[arg(long, value_name = "PEM")]
    pub client_ca: Option<PathBuf>,
    /// With --client-ca: `require` refuses clients without a valid
    /// certificate, `request` serves them too.
    #[arg(long, value_name = "MODE", default_value = "require", value_parser = ["require", "request"], requires = "client_ca")]
    pub client_auth: String,
    /// Write the (generated) certificate here, for clients' --ca.
    #[arg(long)]
    pub cert_out: Option<PathBuf>,
    /// Close a session when nothing arrives from the client for this long
    /// (e.g. 60s, 500ms; 0: never). Default: 60s for `serve`, 12h for
    /// `tunnel server` (an idle ssh session is normal there; stunnel's
    /// default too).
    #[arg(long, value_parser = parse_optional_duration)]
    pub idle_timeout: Option<OptionalDuration>,
    /// Sessions at once, all clients together (0: no limit); more are
    /// refused (the connection is closed).
    #[arg(long, default_value_t = 10_000)]
    pub max_sessions: usize,
    /// Sessions at once from one client IP address (0: no limit).
    #[arg(long, default_value_t = 64)]
    pub max_sessions_per_ip: usize,
    /// Connections from one client IP address still opening at once
    /// (waiting for their first record or in a new session's handshake;
    /// 0: no limit). More are refused. `tcpls idle` needs more than this.
    #[arg(long, default_value_t = 32)]
    pub max_handshakes_per_ip: usize,
    /// Extra address of this server to advertise to clients (repeatable);
    /// clients may join connections toward it.
    #[arg(long = "advertise")]
    pub advertise: Vec<SocketAddr>,
    /// How each session spreads its outgoing data over its connections:
    /// earliest-arrival (the default: aggregates, keeping slow paths from
    /// holding up the client), round-robin, lowest-rtt, weighted:W0,W1,...
    /// or none (each stream on one connection unless the client steers it).
    #[arg(long, value_parser = crate::client::parse_scheduler)]
    pub scheduler: Option<String>,
    /// Move the server's sending key to a new generation every N records
    /// (default 8388608, half the AES-GCM limit); small values exercise
    /// key updates.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub key_update_records: Option<u64>,
    /// On SIGTERM or SIGINT, how long to wait for every session's CLOSE to
    /// go out before exiting (e.g. 5s).
    #[arg(long, default_value = "5s", value_parser = crate::units::parse_duration)]
    pub shutdown_timeout: Duration,
    /// Key exchange groups accepted, OpenSSL syntax, preferred first
    /// (default OpenSSL's, hybrid post-quantum X25519MLKEM768 first).
    #[arg(long, value_name = "LIST")]
    pub groups: Option<String>,
    /// Resume without a new key exchange when a client offers it (TLS 1.3
    /// psk_ke): resumed handshakes skip most of their CPU, but have no
    /// forward secrecy of their own (a stolen ticket key decrypts them).
    #[arg(long)]
    pub resume_without_key_exchange: bool,
    /// Early data (TLS 1.3 0-RTT) accepted per session from a resuming
    /// client, e.g. 16K (at most 16K; 0 refuses it). Early requests are
    /// answered before the client's Finished. Tickets are single use and
    /// their keys stay in this process, so a replayed ClientHello gets a
    /// full handshake and its early data is dropped; still, only what is
    /// safe to receive twice belongs there (a client may send it again in
    /// a new session after a failure). Default 16K: `serve` answers GET
    /// and HEAD early, `tunnel server` takes a stream's header (its
    /// destination) early.
    #[arg(long, value_name = "BYTES", value_parser = crate::units::parse_bytes)]
    pub max_early_data: Option<u64>,
    /// TLS session tickets sent after each full handshake, for clients to
    /// resume with (0: no resumption).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub tickets: usize,
    /// How long a ticket may be used (at most 7 days).
    #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = crate::units::parse_duration)]
    pub ticket_lifetime: Duration,
    /// How often the (random, in-memory) key sealing tickets is replaced;
    /// tickets of the previous key are still accepted.
    #[arg(long, value_name = "DURATION", default_value = "12h", value_parser = crate::units::parse_duration)]
    pub ticket_key_rotation: Duration,
    #[command(flatten)]
    pub options: crate::client::TransportOptionArgs,
}

impl ServerOpts {
    /// Checks what can be checked before serving anyone: a `--cc` the
    /// kernel does not have fails here, not on the first client.
    fn check(&self) -> Result<()> {
        if let Some(name) = &self.options.cc {
            let probe = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            probe
                .set_tcp_congestion(name.as_bytes())
                .with_context(|| format!("--cc {name}"))?;
        }
        Ok(())
    }

    /// Binds the server these options describe (writing `--cert-out`);
    /// sessions idle for `idle_default` are closed unless --idle-timeout
    /// says otherwise.
    pub async fn bind(
        &self,
        idle_default: Duration,
        alpn: &[&[u8]],
        early_default: u32,
    ) -> Result<Server> {
        self.check()?;
        let defaults = TransportConfig::default();
        let mut transport = TransportConfig {
            idle_timeout: self.idle_timeout.map_or(Some(idle_default), |t| t.0),
            key_update_records: self
                .key_update_records
                .unwrap_or(defaults.key_update_records),
            ..defaults
        };
        self.options.configure(&mut transport);
        self.options.program()?;
        // Sent with the first join tokens (a client behind a load
        // balancer must not join before it knows them).
        transport.advertised_addresses = self.advertise.clone();
        let builder = ServerConfig::builder()
            .transport(transport)
            .tickets(self.tickets)
            .ticket_lifetime(self.ticket_lifetime)
            .ticket_key_rotation(self.ticket_key_rotation)
            .max_early_data(
                self.max_early_data
                    .map_or(early_default, |b| b.min(u32::MAX as u64) as u32),
            );
        let builder = match &self.groups {
            Some(g) => builder.key_exchange_groups(g),
            None => builder,
        }
        .resume_without_key_exchange(self.resume_without_key_exchange)
        .alpn_protocols(alpn);
        let builder = match &self.client_ca {
            Some(ca) => {
                let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
                let mode = match self.client_auth.as_str() {
                    "request" => tcpls::ClientAuth::Request,
                    _ => tcpls::ClientAuth::Require,
                };
                builder
                    .client_auth(mode, &pem)
                    .with_context(|| format!("--client-ca {}", ca.display()))?
            }
            None => builder,
        };
        let builder = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => builder.pem_files(c, k)?,
            _ => builder.self_signed(&["localhost", "127.0.0.1", "::1"])?,
        };
        let config = Arc::new(builder.build()?);
        if let Some(out) = &self.cert_out {
            std::fs::write(out, &config.certificate_pem)
                .with_context(|| format!("writing {}", out.display()))?;
        }
        let limit = |n: usize| (n > 0).then_some(n);
        let limits = ServerLimits {
            max_sessions: limit(self.max_sessions),
            max_sessions_per_ip: limit(self.max_sessions_per_ip),
            max_handshakes_per_ip: limit(self.max_handshakes_per_ip).unwrap_or(usize::MAX),
            ..ServerLimits::default()
        };
        if let Some(listener) = crate::service::inherited_listener()? {
            // systemd socket activation: --listen is the socket unit's.
            eprintln!(
                "tcpls: using the inherited listener on {} (LISTEN_FDS)",
                listener.local_addr()?
            );
            return Ok(Server::from_listener(listener, config, limits)?);
        }
        Server::bind_with_limits(self.listen, config, limits)
            .await
            .with_context(|| format!("listening on {}", self.listen))
    }

    /// What every accepted TCPLS session gets: the scheduler choice and
    /// the transport option requests.
    pub fn configure(&self, session: &tcpls::Session) -> Result<()> {
        // The addresses went with the handshake (`advertised_addresses`).
        if let (true, Some(name)) = (session.is_tcpls(), &self.scheduler) {
            session.set_scheduler(crate::client::scheduler_choice(name))?;
        }
        self.options.apply(session)
    }

    /// Tells the operator about a generated certificate.
    pub fn note_self_signed(&self) {
        if self.cert.is_none() {
            eprintln!(
                "tcpls: self-signed certificate: clients need --insecure or --ca (see --cert-out)"
            );
        }
    }
}

/// A duration where 0 means "never" (clap needs a named type for it).
#[derive(Clone, Copy, Debug)]
pub struct OptionalDuration(pub Option<Duration>);

fn parse_optional_duration(s: &str) -> Result<OptionalDuration, String> {
    if s.trim() == "0" {
        return Ok(OptionalDuration(None));
    }
    crate::units::parse_duration(s).map(|d| OptionalDuration(Some(d)))
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    crate::units::parse_bytes(s).map_err(|e| e.to_string())
}

/// What `serve` answers: files under `root` (if any), the perf endpoints
/// (if `perf_max` is set, up to that many bytes a request), each stream's
/// request head within `request_timeout`.
#[derive(Clone, Debug)]
pub struct Site {
    /// Directory of the files served (canonical); `None`: no files.
    pub root: Option<PathBuf>,
    /// Largest perf transfer; `None`: no perf endpoints.
    pub perf_max: Option<u64>,
    /// Longest a stream may take to send its request head.
    pub request_timeout: Duration,
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let root = match &args.root {
        Some(r) => Some(
            r.canonicalize()
                .with_context(|| format!("serving root {}", r.display()))?,
        ),
        None => None,
    };
    // HTTP/1.1 over ALPN: browsers and curl offer h2 first.
    let server = args
        .server
        .bind(SERVE_IDLE_TIMEOUT, &[b"http/1.1"], 16 << 10)
        .await?;
    eprintln!(
        "tcpls: listening on {} (TCPLS, and plain TLS 1.3 by fallback), serving {}{}",
        server.local_addr()?,
        root.as_ref()
            .map_or("no files (see --root)".to_string(), |r| r
                .display()
                .to_string()),
        if args.perf { ", perf endpoints on" } else { "" }
    );
    args.server.note_self_signed();
    let site = Site {
        root,
        perf_max: args.perf.then_some(args.perf_max),
        request_timeout: args.request_timeout,
    };
    serve(server, site, Some(args.server)).await
}

/// Accepts sessions; each stream carries one request. `opts` gives each
/// session its advertised addresses, scheduler and options; with it,
/// SIGTERM or SIGINT stops the server gracefully (see `service`), and the
/// function returns.
pub async fn serve(server: Server, site: Site, opts: Option<ServerOpts>) -> Result<()> {
    let site = Arc::new(site);
    let drain = opts
        .as_ref()
        .map_or(Duration::from_secs(5), |o| o.shutdown_timeout);
    let mut sessions = crate::service::Sessions::new(drain);
    let mut signals = match &opts {
        Some(_) => Some(crate::service::StopSignals::new()?),
        None => None,
    };
    loop {
        let stop = async {
            match signals.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let session = tokio::select! {
            s = server.accept() => s?,
            sig = stop => {
                let n = crate::service::stop_server(server, sessions).await;
                eprintln!("tcpls: {sig}: stopped accepting, closed {n} session(s)");
                return Ok(());
            }
        };
        if let Some(opts) = &opts {
            // One session's trouble (it ended already, say) is not the
            // server's.
            if let Err(e) = opts.configure(&session) {
                tracing::warn!(peer = ?session.peer_addr(), error = %format!("{e:#}"), "configuring a session");
            }
        }
        let site = site.clone();
        let s = session.clone();
        sessions.spawn(session, async move {
            tracing::info!(peer = ?s.peer_addr(), tcpls = s.is_tcpls(), "session");
            log_option_events(&s);
            while let Ok(stream) = s.accept_stream().await {
                let site = site.clone();
                let peer = s.peer_addr();
                tokio::spawn(async move {
                    let id = stream.id();
                    let mut counted = crate::access_log::Counted::new(stream);
                    let start = std::time::Instant::now();
                    match handle(&mut counted, &site).await {
                        Ok(Some(request)) => counted.log(peer, &request, start.elapsed()),
                        Ok(None) => {}
                        Err(e) => tracing::debug!(stream = %id, error = %e, "request failed"),
                    }
                });
            }
        });
    }
}

/// Logs the session's transport option events (the answers to
/// `--peer-cc`, the client's requests) until it ends.
pub fn log_option_events(session: &tcpls::Session) {
    let session = session.clone();
    tokio::spawn(async move {
        while let Some(e) = session.next_event().await {
            if let Some(what) = crate::client::option_event(&e) {
                tracing::info!(peer = ?session.peer_addr(), "{what}");
            }
        }
    });
}

/// The bytes `GET /_perf/N` sends, repeated.
pub fn perf_block() -> &'static [u8] {
    static BLOCK: OnceLock<Vec<u8>> = OnceLock::new();
    BLOCK.get_or_init(|| {
        (0..256u32 << 10)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    })
}

/// Where `data`, found at `offset` of a perf transfer, first differs from
/// the perf pattern (`perf_block` repeated), if anywhere.
pub fn pattern_mismatch(offset: u64, data: &[u8]) -> Option<u64> {
    let block = perf_block();
    let mut at = (offset % block.len() as u64) as usize;
    let mut done = 0;
    while done < data.len() {
        let k = (data.len() - done).min(block.len() - at);
        if data[done..done + k] != block[at..at + k] {
            let i = (0..k)
                .find(|&i| data[done + i] != block[at + i])
                .unwrap_or(0);
            return Some(offset + (done + i) as u64);
        }
        done += k;
        at = 0;
    }
    None
}

/// Serves one request on `s` and finishes it; returns its method and
/// path (`None`: the stream ended before a request).
pub async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    site: &Site,
) -> Result<Option<(String, String)>> {
    let Some((head, body_start)) = http::read_head_within(&mut s, site.request_timeout).await?
    else {
        return Ok(None);
    };
    let (method, target) = match head.start.as_slice() {
        [m, t, ..] => (m.as_str(), t.as_str()),
        _ => {
            http::write_text_response(&mut s, 400, "Bad Request", "bad request line\n").await?;
            finish(s).await?;
            return Ok(Some(("-".into(), "-".into())));
        }
    };
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let request = (method.to_string(), path.to_string());
    let perf_max = site.perf_max.filter(|_| is_perf(path));
    match method {
        "GET" if perf_max.is_some() => {
            let n = path[PERF_PREFIX.len()..]
                .trim_start_matches('/')
                .parse::<u64>();
            match n {
                Ok(n) if perf_max.is_some_and(|m| n > m) => too_large(&mut s, perf_max).await?,
                Ok(n) => send_perf(&mut s, n).await?,
                Err(_) => {
                    http::write_text_response(&mut s, 400, "Bad Request", "GET /_perf/BYTES\n")
                        .await?
                }
            }
        }
        "PUT" if perf_max.is_some() && path == PERF_PREFIX => {
            let len = head.content_length()?.unwrap_or(0);
            if perf_max.is_some_and(|m| len > m) {
                too_large(&mut s, perf_max).await?;
                finish(s).await?;
                return Ok(Some(request));
            }
            // The body is compared with the perf pattern (cheap beside the
            // decryption), so `tcpls soak` can verify uploads too.
            let mut got = body_start.len() as u64;
            let mut differs = pattern_mismatch(0, &body_start);
            let mut buf = vec![0u8; 256 << 10];
            while got < len {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    anyhow::bail!("upload ended after {got} of {len} bytes");
                }
                if differs.is_none() {
                    differs = pattern_mismatch(got, &buf[..n]);
                }
                got += n as u64;
            }
            let pattern = match differs {
                None => "pattern ok".to_string(),
                Some(at) => format!("pattern differs at {at}"),
            };
            http::write_text_response(&mut s, 200, "OK", &format!("received {got}, {pattern}\n"))
                .await?;
        }
        "GET" | "HEAD" => {
            let range = head.header("range").map(str::to_string);
            serve_file(
                &mut s,
                site.root.as_deref(),
                path,
                method == "HEAD",
                range.as_deref(),
            )
            .await?
        }
        _ => {
            http::write_text_response(
                &mut s,
                405,
                "Method Not Allowed",
                "GET, HEAD or PUT /_perf\n",
            )
            .await?
        }
    }
    finish(s).await?;
    Ok(Some(request))
}

/// True for the perf endpoints' paths (`/_perf`, `/_perf/...`).
fn is_perf(path: &str) -> bool {
    path.strip_prefix(PERF_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

async fn too_large<S: AsyncWrite + Unpin>(s: &mut S, max: Option<u64>) -> Result<()> {
    let body = format!("perf transfers are limited to {} bytes\n", max.unwrap_or(0));
    http::write_text_response(s, 413, "Content Too Large", &body).await
}

async fn finish<S: AsyncWrite + Unpin>(mut s: S) -> Result<()> {
    s.shutdown().await?;
    Ok(())
}

async fn send_perf<S: AsyncWrite + Unpin>(s: &mut S, n: u64) -> Result<()> {
    http::write_response_head(s, 200, "OK", n).await?;
    let block = perf_block();
    let mut left = n;
    while left > 0 {
        let k = left.min(block.len() as u64) as usize;
        s.write_all(&block[..k]).await?;
        left -= k as u64;
    }
    Ok(())
}

fn percent_decode(p: &str) -> Option<String> {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// True for a path component that is hidden by convention (`.git`,
/// `.env`, `.ssh`...): such files often hold secrets and are never served.
fn is_hidden(c: Component<'_>) -> bool {
    c.as_os_str().as_encoded_bytes().first() == Some(&b'.')
}

/// Maps a request path into `root`, refusing anything that could leave it
/// and any dotfile or path through a dot-directory (also when a symlink
/// inside `root` leads to one).
pub fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(path)?;
    let rel = Path::new(decoded.trim_start_matches('/'));
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_)) || is_hidden(c))
    {
        return None;
    }
    let full = root.join(rel).canonicalize().ok()?;
    let inside = full.strip_prefix(root).ok()?;
    if inside.components().any(is_hidden) {
        return None;
    }
    Some(full)
}

/// Serves a file under `root`: its content type from its name, a
/// directory's `index.html`, one byte range (`Range`, 206) when asked.
async fn serve_file<S: AsyncWrite + Unpin>(
    s: &mut S,
    root: Option<&Path>,
    path: &str,
    head_only: bool,
    range: Option<&str>,
) -> Result<()> {
    let file = root.and_then(|r| resolve(r, path)).and_then(|p| {
        if p.is_dir() {
            Some(p.join("index.html")).filter(|i| i.is_file())
        } else {
            p.is_file().then_some(p)
        }
    });
    let Some(file) = file else {
        return http::write_text_response(s, 404, "Not Found", "not found\n").await;
    };
    let mut f = tokio::fs::File::open(&file).await?;
    let len = f.metadata().await?.len();
    let mime = mime_guess::from_path(&file).first_or_octet_stream();
    let kind = mime.essence_str();
    let kind = if kind.starts_with("text/") || kind == "application/javascript" {
        format!("{kind}; charset=utf-8")
    } else {
        kind.to_string()
    };
    let (status, reason, span, mut extra) = match http::byte_range(range, len) {
        None => (200, "OK", 0..len, Vec::new()),
        Some(Ok(r)) => {
            let cr = format!("Content-Range: bytes {}-{}/{len}", r.start, r.end - 1);
            (206, "Partial Content", r, vec![cr])
        }
        Some(Err(())) => {
            let extra = [format!("Content-Range: bytes */{len}")];
            http::write_head(s, 416, "Range Not Satisfiable", 0, "text/plain", &extra).await?;
            return Ok(());
        }
    };
    extra.push("Accept-Ranges: bytes".into());
    http::write_head(s, status, reason, span.end - span.start, &kind, &extra).await?;
    if !head_only {
        use tokio::io::AsyncSeekExt;
        f.seek(std::io::SeekFrom::Start(span.start)).await?;
        let mut left = span.end - span.start;
        let mut buf = vec![0u8; 256 << 10];
        while left > 0 {
            let want = (buf.len() as u64).min(left) as usize;
            let n = f.read(&mut buf[..want]).await?;
            if n == 0 {
                anyhow::bail!("{} shrank while being sent", file.display());
            }
            s.write_all(&buf[..n]).await?;
            left -= n as u64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("a b.txt"), "x").unwrap();
        assert!(resolve(&root, "/a%20b.txt").is_some());
        assert!(resolve(&root, "/../etc/passwd").is_none());
        assert!(resolve(&root, "/%2e%2e/etc/passwd").is_none());
        assert!(resolve(&root, "/missing").is_none());
        assert!(resolve(&root, "/%zz").is_none());
    }

    #[test]
    fn dotfiles_are_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join(".env"), "SECRET=1").unwrap();
        std::fs::create_dir(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/config"), "x").unwrap();
        std::fs::create_dir(root.join("pub")).unwrap();
        std::fs::write(root.join("pub/ok.txt"), "x").unwrap();
        std::os::unix::fs::symlink(root.join(".env"), root.join("pub/link")).unwrap();
        assert!(resolve(&root, "/pub/ok.txt").is_some());
        assert!(resolve(&root, "/.env").is_none());
        assert!(resolve(&root, "/%2eenv").is_none());
        assert!(resolve(&root, "/.git/config").is_none());
        assert!(
            resolve(&root, "/pub/link").is_none(),
            "symlink to a dotfile"
        );
    }

    /// Sends `request` to `handle` over an in-memory pipe; the status code.
    async fn status(site: &Site, request: &str) -> String {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let site = site.clone();
        let task = tokio::spawn(async move { handle(server, &site).await });
        client.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        task.await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&out);
        text.split(' ').nth(1).unwrap_or("").to_string()
    }

    #[tokio::test]
    async fn perf_is_opt_in_and_capped() {
        let off = Site {
            root: None,
            perf_max: None,
            request_timeout: Duration::from_secs(5),
        };
        assert_eq!(status(&off, "GET /_perf/10 HTTP/1.1\r\n\r\n").await, "404");
        let on = Site {
            perf_max: Some(1000),
            ..off.clone()
        };
        assert_eq!(status(&on, "GET /_perf/1000 HTTP/1.1\r\n\r\n").await, "200");
        assert_eq!(status(&on, "GET /_perf/1001 HTTP/1.1\r\n\r\n").await, "413");
        let put = "PUT /_perf HTTP/1.1\r\nContent-Length: 5000\r\n\r\n";
        assert_eq!(status(&on, put).await, "413");
        // Without --root nothing else is served.
        assert_eq!(status(&on, "GET /Cargo.toml HTTP/1.1\r\n\r\n").await, "404");
    }
}
