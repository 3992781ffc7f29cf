//! The stacks under comparison. Each has an in-process server that answers
//! the requests of [`crate::io`], and a client connection that is a plain
//! byte stream.

mod quic;
mod stream_tls;
pub mod tcpls_peer;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Result;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;

use crate::certs::Configs;

/// A client connection of any peer.
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// A byte stream that keeps what it depends on (a session, an endpoint)
/// alive as long as itself.
pub struct Owned<O, S> {
    pub _owner: O,
    pub io: S,
}

impl<O: Unpin, S: AsyncRead + Unpin> AsyncRead for Owned<O, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<O: Unpin, S: AsyncWrite + Unpin> AsyncWrite for Owned<O, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// TCP without TLS.
    Tcp,
    /// TLS 1.3 through tokio-openssl (vendored OpenSSL).
    Openssl,
    /// TLS 1.3 through tokio-rustls (aws-lc-rs).
    Rustls,
    /// QUIC through quinn, default configuration.
    Quinn,
    /// TCPLS, one stream per connection request.
    Tcpls,
}

impl Stack {
    pub fn name(self) -> &'static str {
        match self {
            Stack::Tcp => "tcp",
            Stack::Openssl => "openssl",
            Stack::Rustls => "rustls",
            Stack::Quinn => "quinn",
            Stack::Tcpls => "tcpls",
        }
    }
}

/// A running server; aborted when dropped.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts `stack`'s server on a loopback port. `tcpls` is the TCPLS
/// server's transport configuration and scheduler (ignored by the others).
pub async fn server(stack: Stack, cfg: &Arc<Configs>, tcpls: &tcpls_peer::Setup) -> Result<Server> {
    let (addr, task) = match stack {
        Stack::Tcp | Stack::Openssl | Stack::Rustls => stream_tls::server(stack, cfg).await?,
        Stack::Quinn => quic::server(cfg)?,
        Stack::Tcpls => tcpls_peer::server(tcpls).await?,
    };
    Ok(Server { addr, task })
}

/// Connects a client of `stack` to `addr` (handshake included).
pub async fn connect(
    stack: Stack,
    addr: SocketAddr,
    cfg: &Arc<Configs>,
    tcpls: &tcpls_peer::Setup,
) -> Result<Box<dyn Duplex>> {
    match stack {
        Stack::Tcp | Stack::Openssl | Stack::Rustls => stream_tls::connect(stack, addr, cfg).await,
        Stack::Quinn => quic::connect(addr, cfg).await,
        Stack::Tcpls => tcpls_peer::connect(addr, tcpls).await,
    }
}

/// Client side of one bulk transfer of `n` bytes from the server, with each
/// stack's fastest receive path (quinn and TCPLS hand out chunks without a
/// copy; the TLS stacks copy into the reader's buffer).
pub async fn bulk(
    stack: Stack,
    addr: SocketAddr,
    cfg: &Arc<Configs>,
    tcpls: &tcpls_peer::Setup,
    n: u64,
    verify: bool,
    progress: &indicatif::ProgressBar,
) -> Result<()> {
    match stack {
        Stack::Quinn => quic::bulk(addr, cfg, n, verify, progress).await,
        Stack::Tcpls => tcpls_peer::bulk(addr, tcpls, n, verify, progress).await,
        _ => {
            let c = connect(stack, addr, cfg, tcpls).await?;
            Ok(crate::io::bulk(c, n, verify, progress).await?)
        }
    }
}
