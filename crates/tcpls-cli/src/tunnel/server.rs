//! `tcpls tunnel server`: each stream of each accepted session is
//! connected to its destination (`--to`, or what a SOCKS5 stream names
//! and `--allow` permits) and relayed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::allow::{self, AllowList};
use super::header::{Destination, Status};
use super::relay;
use crate::serve::ServerOpts;

/// `tunnel server`'s default `--idle-timeout`: tunnelled connections may
/// rightly be quiet for long (an idle ssh), so like stunnel's default.
const TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

/// Early data a resuming tunnel client may send (its first stream's
/// header, and whatever follows it in the same write).
const TUNNEL_EARLY_DATA: u32 = 16 << 10;

/// How long a client may take to send a stream's destination header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug)]
pub struct TunnelServerArgs {
    #[command(flatten)]
    pub server: ServerOpts,
    /// Where streams go that name no destination (every connection of a
    /// `tunnel client` without --socks5), HOST:PORT, e.g. 127.0.0.1:22.
    #[arg(long)]
    pub to: Option<String>,
    /// A destination SOCKS5 streams may name (repeatable): HOST[:PORT],
    /// where HOST is an address, a network (10.0.0.0/8, [fd00::/8]), a
    /// name (example.com), a suffix (*.example.com) or *; PORT a number
    /// or * (default). `any` allows everything (labs only). Without it
    /// only --to is reachable.
    #[arg(long = "allow", value_parser = allow::parse_rule)]
    pub allow: Vec<String>,
    /// Longest wait for a destination to accept a connection (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = crate::units::parse_duration)]
    pub connect_timeout: Duration,
}

struct Targets {
    to: Option<String>,
    allow: AllowList,
    connect_timeout: Duration,
}

pub async fn run(args: TunnelServerArgs) -> Result<()> {
    let allow = AllowList::new(&args.allow).map_err(anyhow::Error::msg)?;
    if args.to.is_none() && allow.is_empty() {
        anyhow::bail!("nothing to connect streams to: give --to HOST:PORT, --allow RULE, or both");
    }
    // Early data by default, so a client's stream header (its
    // destination) rides with its ClientHello when it resumes. Replays are
    // refused: tickets are single use (the server's session cache) and
    // their keys never leave this process, so another instance cannot
    // take one either. `--max-early-data 0` turns it off.
    let server = args
        .server
        .bind(TUNNEL_IDLE_TIMEOUT, &[], TUNNEL_EARLY_DATA)
        .await?;
    eprintln!(
        "tcpls: tunnel server on {} -> {}{}",
        server.local_addr()?,
        args.to.as_deref().unwrap_or("(no --to)"),
        if allow.is_empty() {
            String::new()
        } else {
            format!(", SOCKS5 destinations: {}", args.allow.join(" "))
        }
    );
    args.server.note_self_signed();
    let targets = Arc::new(Targets {
        to: args.to,
        allow,
        connect_timeout: args.connect_timeout,
    });
    let mut sessions = crate::service::Sessions::new(args.server.shutdown_timeout);
    let mut signals = crate::service::StopSignals::new()?;
    loop {
        let session = tokio::select! {
            s = server.accept() => s?,
            sig = signals.recv() => {
                let n = crate::service::stop_server(server, sessions).await;
                eprintln!("tcpls: {sig}: stopped accepting, closed {n} session(s)");
                return Ok(());
            }
        };
        if let Err(e) = args.server.configure(&session) {
            tracing::warn!(peer = ?session.peer_addr(), error = %format!("{e:#}"), "configuring a session");
        }
        let targets = targets.clone();
        let s = session.clone();
        sessions.spawn(session, async move {
            let peer = s.peer_addr();
            // (Accepted early data means a resumed handshake, still under
            // way: the stream's header arrived with the ClientHello.)
            let early_data = s.early_data().as_str();
            tracing::info!(?peer, tcpls = s.is_tcpls(), early_data, "tunnel session");
            crate::serve::log_option_events(&s);
            while let Ok(stream) = s.accept_stream().await {
                let targets = targets.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(&targets, stream).await {
                        tracing::warn!(?peer, error = %format!("{e:#}"), "tunnel stream failed");
                    }
                });
            }
        });
    }
}

/// Connects one stream to its destination and relays it.
async fn handle(t: &Targets, stream: tcpls::Stream) -> Result<()> {
    let (mut send, mut recv) = stream.split();
    let dest = tokio::time::timeout(HEADER_TIMEOUT, Destination::read(&mut recv))
        .await
        .context("no destination header in time")?;
    let dest = match dest {
        Ok(d) => d,
        Err(e) => {
            let _ = send.write_all(&[Status::GeneralFailure as u8]).await;
            let _ = send.finish().await;
            return Err(e).context("bad destination header");
        }
    };
    let tcp = match connect(t, &dest).await {
        Ok(tcp) => tcp,
        Err(status) => {
            send.write_all(&[status as u8]).await?;
            send.finish().await?;
            anyhow::bail!("{dest}: {}", status.describe());
        }
    };
    send.write_all(&[Status::Connected as u8]).await?;
    let to = tcp.peer_addr().ok();
    let start = Instant::now();
    let moved = relay::relay(tcp, send, recv).await;
    tracing::info!(
        %dest,
        ?to,
        up = moved.up,
        down = moved.down,
        reset = moved.reset,
        ms = start.elapsed().as_millis() as u64,
        "tunnel stream done"
    );
    Ok(())
}

/// The addresses `dest` may be connected to, or why not.
async fn resolve(t: &Targets, dest: &Destination) -> Result<Vec<SocketAddr>, Status> {
    match dest {
        Destination::Default => {
            let to = t.to.as_deref().ok_or(Status::NotAllowed)?;
            lookup(to).await
        }
        Destination::Addr(a) if t.allow.permits_addr(a.ip(), a.port()) => Ok(vec![*a]),
        Destination::Addr(_) => Err(Status::NotAllowed),
        Destination::Name(name, port) => {
            let by_name = t.allow.permits_name(name, *port);
            if !by_name && t.allow.is_empty() {
                return Err(Status::NotAllowed);
            }
            let addrs = lookup(&format!("{name}:{port}")).await?;
            let addrs: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| by_name || t.allow.permits_addr(a.ip(), a.port()))
                .collect();
            if addrs.is_empty() {
                return Err(Status::NotAllowed);
            }
            Ok(addrs)
        }
    }
}

async fn lookup(host_port: &str) -> Result<Vec<SocketAddr>, Status> {
    match tokio::net::lookup_host(host_port).await {
        Ok(a) => Ok(a.collect()),
        Err(_) => Err(Status::HostUnreachable),
    }
}

async fn connect(t: &Targets, dest: &Destination) -> Result<TcpStream, Status> {
    let mut status = Status::HostUnreachable;
    for addr in resolve(t, dest).await? {
        match tokio::time::timeout(t.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => return Ok(tcp),
            Ok(Err(e)) => status = Status::from_io(&e),
            Err(_) => status = Status::TimedOut,
        }
    }
    Err(status)
}
