//! `tcpls tunnel client`: each accepted local TCP connection becomes one
//! stream of a TCPLS session to the tunnel server, shared by all of them
//! and opened again when it ended.
//!
//! The first session opens at start. One opened again for a local
//! connection resumes the last one when a ticket allows (TLS 1.3 0-RTT):
//! the stream's header (its destination) travels as early data with the
//! ClientHello, in the SYN with TCP Fast Open, so the tunnel adds no round
//! trip to the one the destination's own TCP handshake costs (seed 003's
//! single-ended proxy). The header is safe to replay, and the server's
//! single-use tickets refuse replays anyway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tcpls::{ClientConfig, TransportConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::header::{Destination, Status};
use super::{relay, socks5};
use crate::client::ClientOpts;

#[derive(clap::Args, Debug)]
pub struct TunnelClientArgs {
    /// Local address to accept connections on; each becomes one stream of
    /// the session.
    #[arg(long, default_value = "127.0.0.1:1080")]
    pub listen: SocketAddr,
    /// The tunnel server, HOST:PORT.
    #[arg(long)]
    pub connect: String,
    /// Name to verify the server's certificate against (default: the host
    /// of --connect).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Take SOCKS5 CONNECT requests on --listen (e.g. `curl
    /// --socks5-hostname`, a browser's proxy setting): each names its
    /// destination, which the tunnel server connects to if its --allow
    /// permits. Without it every connection goes to the server's --to.
    #[arg(long)]
    pub socks5: bool,
    /// How this side spreads what the local applications send over the
    /// connections: earliest-arrival (the default), round-robin,
    /// lowest-rtt, weighted:W0,W1,... or none. What comes back follows the
    /// tunnel server's --scheduler.
    #[arg(long, value_parser = crate::client::parse_scheduler)]
    pub scheduler: Option<String>,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// The session all local connections share, and how to open it again.
struct Tunnel {
    addrs: Vec<SocketAddr>,
    name: String,
    cfg: Arc<ClientConfig>,
    opts: ClientOpts,
    socks5: bool,
    scheduler: Option<String>,
    session: tokio::sync::Mutex<Option<tcpls::Session>>,
}

impl Tunnel {
    /// The live session, or a new one (resumed with early data when it
    /// replaces an earlier one and a ticket allows: see the module's
    /// comment).
    async fn session(&self) -> Result<tcpls::Session> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref().filter(|s| s.close_reason().is_none()) {
            return Ok(s.clone());
        }
        if slot.is_some() && self.opts.binds.is_empty() {
            let s = tcpls::connect_early(self.addrs[0], &self.name, self.cfg.clone())
                .await
                .with_context(|| format!("connecting to {}", self.addrs[0]))?;
            if s.early_data() == tcpls::EarlyData::Pending {
                // The ticket's server spoke TCPLS. The ClientHello leaves
                // with the first stream's header; the rest once it is done.
                let (opts, later, addr) = (self.opts.clone(), s.clone(), self.addrs[0]);
                tokio::spawn(async move {
                    if later.established().await.is_ok() {
                        if let Err(e) = opts.complete_session(&later, addr).await {
                            tracing::warn!(error = %format!("{e:#}"), "completing the tunnel session");
                        }
                        opts.join_later(&later);
                    }
                });
                return self.adopt(&mut slot, s);
            }
            // No ticket: a full handshake is done.
            self.opts.complete_session(&s, self.addrs[0]).await?;
            return self.adopt(&mut slot, s);
        }
        let s = self
            .opts
            .open_session(&self.addrs, &self.name, self.cfg.clone())
            .await?;
        self.adopt(&mut slot, s)
    }

    /// Checks and keeps a new session.
    fn adopt(
        &self,
        slot: &mut Option<tcpls::Session>,
        s: tcpls::Session,
    ) -> Result<tcpls::Session> {
        let early = s.early_data() == tcpls::EarlyData::Pending;
        if !early && !s.is_tcpls() {
            bail!(
                "{} answered with plain TLS{}: a tunnel needs a TCPLS server (`tcpls tunnel server`)",
                self.name,
                s.fallback_reason()
                    .map(|r| format!(" (fell back: {r})"))
                    .unwrap_or_default()
            );
        }
        if let Some(name) = &self.scheduler {
            s.set_scheduler(crate::client::scheduler_choice(name))?;
        }
        if !early {
            self.opts.join_later(&s);
        }
        tracing::info!(peer = ?s.peer_addr(), connections = s.connections().len(), early, "tunnel session open");
        *slot = Some(s.clone());
        Ok(s)
    }
}

pub async fn run(args: TunnelClientArgs) -> Result<()> {
    let host = crate::units::host_of(&args.connect)
        .with_context(|| format!("{:?}: expected HOST:PORT", args.connect))?
        .to_string();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&args.connect)
        .await
        .with_context(|| format!("resolving {}", args.connect))?
        .collect();
    if addrs.is_empty() {
        bail!("{} has no address", args.connect);
    }
    let cfg = args.client.tcpls_config(TransportConfig::default())?;
    let tunnel = Arc::new(Tunnel {
        addrs,
        name: args.server_name.clone().unwrap_or(host),
        cfg,
        opts: args.client.clone(),
        socks5: args.socks5,
        scheduler: args.scheduler.clone(),
        session: Default::default(),
    });
    // Open the session now: configuration and certificate problems show at
    // once, not at the first local connection.
    tunnel.session().await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    eprintln!(
        "tcpls: tunnel client on {}{} -> {} over TCPLS",
        listener.local_addr()?,
        if args.socks5 { " (SOCKS5)" } else { "" },
        args.connect
    );
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Typically EMFILE: back off instead of giving up.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let t = tunnel.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(&t, tcp, peer).await {
                tracing::warn!(%peer, error = %format!("{e:#}"), "tunnel connection failed");
            }
        });
    }
}

/// Carries one local connection through the tunnel.
async fn handle(t: &Tunnel, mut tcp: TcpStream, peer: SocketAddr) -> Result<()> {
    let dest = if t.socks5 {
        socks5::accept(&mut tcp).await?
    } else {
        Destination::Default
    };
    let opened = async {
        let session = t.session().await?;
        let stream = session.open_stream().await?;
        let (mut send, mut recv) = stream.split();
        send.write_all(&dest.encode()?).await?;
        let mut status = [0u8; 1];
        recv.read_exact(&mut status)
            .await
            .context("the tunnel server closed the stream")?;
        anyhow::Ok((send, recv, Status::from_u8(status[0])))
    }
    .await;
    let (send, recv, status) = match opened {
        Ok(o) => o,
        Err(e) => {
            if t.socks5 {
                let _ = socks5::reply(&mut tcp, Status::GeneralFailure).await;
            }
            relay::refuse(tcp);
            return Err(e);
        }
    };
    if t.socks5 {
        socks5::reply(&mut tcp, status).await?;
    }
    if status != Status::Connected {
        relay::refuse(tcp);
        bail!("{dest}: {}", status.describe());
    }
    let start = Instant::now();
    let moved = relay::relay(tcp, send, recv).await;
    tracing::info!(
        %peer,
        %dest,
        up = moved.up,
        down = moved.down,
        reset = moved.reset,
        ms = start.elapsed().as_millis() as u64,
        "tunnel connection done"
    );
    Ok(())
}
