//! `tcpls serve`: files over TCPLS (and plain TLS 1.3 through fallback),
//! plus the perf source/sink used by `tcpls perf`.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use tcpls::{Server, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::http;

/// Prefix of the perf endpoints: `GET /_perf/N` sends N bytes, `PUT /_perf`
/// with a Content-Length discards the body.
pub const PERF_PREFIX: &str = "/_perf";

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4443")]
    pub listen: SocketAddr,
    /// Certificate chain (PEM). Without it a self-signed one is generated.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Write the (generated) certificate here, for clients' --ca.
    #[arg(long)]
    pub cert_out: Option<PathBuf>,
    /// Directory whose files are served.
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Extra address of this server to advertise to clients (repeatable);
    /// clients may join connections toward it.
    #[arg(long = "advertise")]
    pub advertise: Vec<SocketAddr>,
    /// Spread each session's outgoing data over all its connections with
    /// this scheduler: round-robin, lowest-rtt or weighted:W0,W1,...
    #[arg(long)]
    pub scheduler: Option<String>,
    /// Longest a stream may take to send its request head (e.g. 10s,
    /// 500ms); a client that sends part of one and goes quiet is dropped.
    #[arg(long, default_value = "10s", value_parser = crate::units::parse_duration)]
    pub request_timeout: Duration,
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let builder = ServerConfig::builder();
    let builder = match (&args.cert, &args.key) {
        (Some(c), Some(k)) => builder.pem_files(c, k)?,
        _ => builder.self_signed(&["localhost", "127.0.0.1", "::1"])?,
    };
    let config = Arc::new(builder.build()?);
    if let Some(out) = &args.cert_out {
        std::fs::write(out, &config.certificate_pem)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    let root = args
        .root
        .canonicalize()
        .with_context(|| format!("serving root {}", args.root.display()))?;
    let server = Server::bind(args.listen, config)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    eprintln!(
        "tcpls: listening on {} (TCPLS, and plain TLS 1.3 by fallback), serving {}",
        server.local_addr()?,
        root.display()
    );
    if args.cert.is_none() {
        eprintln!(
            "tcpls: self-signed certificate: clients need --insecure or --ca (see --cert-out)"
        );
    }
    if let Some(name) = &args.scheduler {
        if tcpls_proto::session::scheduler::from_name(name).is_none() {
            anyhow::bail!(
                "unknown scheduler {name:?} (round-robin, lowest-rtt, weighted:W0,W1,...)"
            );
        }
    }
    serve(
        server,
        root,
        args.advertise,
        args.scheduler,
        args.request_timeout,
    )
    .await
}

/// Accepts sessions forever; each stream carries one request.
pub async fn serve(
    server: Server,
    root: PathBuf,
    advertise: Vec<SocketAddr>,
    scheduler: Option<String>,
    request_timeout: Duration,
) -> Result<()> {
    let root = Arc::new(root);
    loop {
        let session = server.accept().await?;
        if session.is_tcpls() {
            for a in &advertise {
                session.advertise_address(*a)?;
            }
            if scheduler.is_some() {
                session.set_scheduler(scheduler.as_deref())?;
            }
        }
        let root = root.clone();
        tokio::spawn(async move {
            tracing::info!(peer = ?session.peer_addr(), tcpls = session.is_tcpls(), "session");
            while let Ok(stream) = session.accept_stream().await {
                let root = root.clone();
                tokio::spawn(async move {
                    let id = stream.id();
                    if let Err(e) = handle(stream, &root, request_timeout).await {
                        tracing::debug!(stream = %id, error = %e, "request failed");
                    }
                });
            }
        });
    }
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

/// Serves one request on `s` and finishes it.
pub async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    root: &Path,
    request_timeout: Duration,
) -> Result<()> {
    let Some((head, body_start)) = http::read_head_within(&mut s, request_timeout).await? else {
        return Ok(());
    };
    let (method, target) = match head.start.as_slice() {
        [m, t, ..] => (m.as_str(), t.as_str()),
        _ => {
            http::write_text_response(&mut s, 400, "Bad Request", "bad request line\n").await?;
            return finish(s).await;
        }
    };
    let path = target.split(['?', '#']).next().unwrap_or("/");
    tracing::info!(method, path, "request");
    match method {
        "GET" if path.starts_with(PERF_PREFIX) => {
            let n = path[PERF_PREFIX.len()..]
                .trim_start_matches('/')
                .parse::<u64>();
            match n {
                Ok(n) => send_perf(&mut s, n).await?,
                Err(_) => {
                    http::write_text_response(&mut s, 400, "Bad Request", "GET /_perf/BYTES\n")
                        .await?
                }
            }
        }
        "PUT" if path == PERF_PREFIX => {
            let len = head.content_length()?.unwrap_or(0);
            let mut got = body_start.len() as u64;
            let mut buf = vec![0u8; 256 << 10];
            while got < len {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    anyhow::bail!("upload ended after {got} of {len} bytes");
                }
                got += n as u64;
            }
            http::write_text_response(&mut s, 200, "OK", &format!("received {got}\n")).await?;
        }
        "GET" | "HEAD" => serve_file(&mut s, root, path, method == "HEAD").await?,
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
    finish(s).await
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

/// Maps a request path into `root`, refusing anything that could leave it.
pub fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(path)?;
    let rel = Path::new(decoded.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let full = root.join(rel).canonicalize().ok()?;
    full.starts_with(root).then_some(full)
}

async fn serve_file<S: AsyncWrite + Unpin>(
    s: &mut S,
    root: &Path,
    path: &str,
    head_only: bool,
) -> Result<()> {
    let Some(file) = resolve(root, path).filter(|p| p.is_file()) else {
        return http::write_text_response(s, 404, "Not Found", "not found\n").await;
    };
    let mut f = tokio::fs::File::open(&file).await?;
    let len = f.metadata().await?.len();
    http::write_response_head(s, 200, "OK", len).await?;
    if !head_only {
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = f.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).await?;
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
}
