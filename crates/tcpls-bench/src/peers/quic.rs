//! quinn with its default transport configuration: one bidirectional
//! stream per connection, as in quinn's own bulk benchmark.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::task::JoinHandle;

use super::{Duplex, Owned};
use crate::certs::{Configs, SERVER_NAME};
use crate::io;

pub fn server(cfg: &Arc<Configs>) -> Result<(SocketAddr, JoinHandle<()>)> {
    let ep = quinn::Endpoint::server(cfg.quinn_server.clone(), "127.0.0.1:0".parse()?)?;
    let addr = ep.local_addr()?;
    let task = tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((send, recv)) = conn.accept_bi().await {
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        if let Err(e) = io::serve(tokio::io::join(recv, send)).await {
                            tracing::debug!("quinn server: {e}");
                        }
                        // Dropping the last handle closes the connection at
                        // once: wait for the client to close it instead.
                        conn.closed().await;
                    });
                }
            });
        }
    });
    Ok((addr, task))
}

async fn open(addr: SocketAddr, cfg: &Configs) -> Result<(quinn::Endpoint, quinn::Connection)> {
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    ep.set_default_client_config(cfg.quinn_client.clone());
    let conn = ep
        .connect(addr, SERVER_NAME)?
        .await
        .context("QUIC handshake")?;
    Ok((ep, conn))
}

pub async fn connect(addr: SocketAddr, cfg: &Configs) -> Result<Box<dyn Duplex>> {
    let (ep, conn) = open(addr, cfg).await?;
    let (send, recv) = conn.open_bi().await?;
    // Dropping the connection (its last handle) closes it.
    Ok(Box::new(Owned {
        _owner: (ep, conn),
        io: tokio::io::join(recv, send),
    }))
}

/// `BULK n`, read with quinn's zero-copy `read_chunk`.
pub async fn bulk(
    addr: SocketAddr,
    cfg: &Configs,
    n: u64,
    verify: bool,
    progress: &indicatif::ProgressBar,
) -> Result<()> {
    let (_ep, conn) = open(addr, cfg).await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&io::request(io::BULK, n)).await?;
    let mut got = 0u64;
    while let Some(chunk) = recv.read_chunk(io::WRITE_SIZE, true).await? {
        if verify {
            io::check_pattern(got, &chunk.bytes)?;
        }
        got += chunk.bytes.len() as u64;
        progress.inc(chunk.bytes.len() as u64);
    }
    send.finish()?;
    conn.close(0u32.into(), b"done");
    io::expect_len(got, n)?;
    Ok(())
}
