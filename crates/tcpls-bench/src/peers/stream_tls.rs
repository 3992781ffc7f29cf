//! Peers that are one TCP connection: plain TCP, OpenSSL TLS and rustls TLS.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use openssl::ssl::Ssl;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_openssl::SslStream;

use super::{Duplex, Stack};
use crate::certs::{Configs, SERVER_NAME};
use crate::io;

pub async fn server(stack: Stack, cfg: &Arc<Configs>) -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let cfg = cfg.clone();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let cfg = cfg.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_one(stack, tcp, &cfg).await {
                    tracing::debug!("{} server: {e:#}", stack.name());
                }
            });
        }
    });
    Ok((addr, task))
}

async fn serve_one(stack: Stack, tcp: TcpStream, cfg: &Configs) -> Result<()> {
    tcp.set_nodelay(true)?;
    match stack {
        Stack::Tcp => io::serve(tcp).await?,
        Stack::Openssl => {
            let ssl = Ssl::new(cfg.openssl_server.context())?;
            let mut s = SslStream::new(ssl, tcp)?;
            Pin::new(&mut s).accept().await?;
            io::serve(s).await?
        }
        Stack::Rustls => {
            let s = tokio_rustls::TlsAcceptor::from(cfg.rustls_server.clone())
                .accept(tcp)
                .await?;
            io::serve(s).await?
        }
        _ => unreachable!("not a single-connection stack"),
    }
    Ok(())
}

pub async fn connect(stack: Stack, addr: SocketAddr, cfg: &Configs) -> Result<Box<dyn Duplex>> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    Ok(match stack {
        Stack::Tcp => Box::new(tcp),
        Stack::Openssl => {
            let mut c = cfg.openssl_client.configure()?;
            c.set_verify_hostname(false);
            let mut ssl = c.into_ssl(SERVER_NAME)?;
            let ticket = cfg
                .openssl_ticket
                .as_ref()
                .and_then(|t| t.lock().unwrap().take());
            if let Some(t) = ticket {
                // SAFETY: the session came from this connector's context.
                unsafe { ssl.set_session(&t)? };
            }
            let mut s = SslStream::new(ssl, tcp)?;
            Pin::new(&mut s)
                .connect()
                .await
                .map_err(|e| anyhow!("OpenSSL handshake: {e}"))?;
            if s.ssl().session_reused() {
                cfg.resumed.fetch_add(1, Ordering::Relaxed);
            }
            Box::new(s)
        }
        Stack::Rustls => {
            let name = rustls::pki_types::ServerName::try_from(SERVER_NAME)?;
            let s = tokio_rustls::TlsConnector::from(cfg.rustls_client.clone())
                .connect(name, tcp)
                .await
                .context("rustls handshake")?;
            if s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                cfg.resumed.fetch_add(1, Ordering::Relaxed);
            }
            Box::new(s)
        }
        _ => unreachable!("not a single-connection stack"),
    })
}
