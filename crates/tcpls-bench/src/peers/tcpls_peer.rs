//! TCPLS through the `tcpls` runtime: one stream, several streams, record
//! ACKs on or off, several coupled connections, and join rate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tcpls::{Session, SessionEvent, TransportConfig};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::{Duplex, Owned};
use crate::certs::{Configs, SERVER_NAME};
use crate::io;

/// One TCPLS variant, its configurations built once.
pub struct Setup {
    /// Streams a bulk transfer is spread over.
    pub streams: u32,
    /// TCP connections per session (the first plus joins).
    pub connections: u32,
    client: Arc<tcpls::ClientConfig>,
    server: Arc<tcpls::ServerConfig>,
    /// Released once per connection the server attaches by join.
    joined: Arc<Semaphore>,
    /// Client sessions whose handshake resumed.
    pub resumed: std::sync::atomic::AtomicU32,
}

impl Setup {
    /// `acks`: record acknowledgements (and failover) on both sides;
    /// `send_buffer`: per-stream send buffer (default: the library's).
    pub fn new(
        cfg: &Configs,
        streams: u32,
        acks: bool,
        connections: u32,
        send_buffer: Option<usize>,
    ) -> Result<Self> {
        let default = TransportConfig::default();
        let transport = TransportConfig {
            failover: acks,
            max_connections: connections.max(2),
            send_buffer: send_buffer.unwrap_or(default.send_buffer),
            ..default
        };
        Ok(Self {
            streams: streams.max(1),
            connections: connections.max(1),
            client: Arc::new(cfg.tcpls_client(transport.clone(), None)?),
            server: Arc::new(cfg.tcpls_server(transport, 0)?),
            joined: Arc::new(Semaphore::new(0)),
            resumed: Default::default(),
        })
    }

    /// The default configuration with resumption: the server sends one
    /// ticket per handshake, the client keeps them.
    pub fn resuming(cfg: &Configs) -> Result<Self> {
        let transport = TransportConfig::default();
        let cache = Arc::new(tcpls::SessionCache::new(4));
        Ok(Self {
            streams: 1,
            connections: 1,
            client: Arc::new(cfg.tcpls_client(transport.clone(), Some(cache))?),
            server: Arc::new(cfg.tcpls_server(transport, 1)?),
            joined: Arc::new(Semaphore::new(0)),
            resumed: Default::default(),
        })
    }
}

pub async fn server(setup: &Setup) -> Result<(SocketAddr, JoinHandle<()>)> {
    let server = tcpls::Server::bind("127.0.0.1:0".parse()?, setup.server.clone()).await?;
    let addr = server.local_addr()?;
    let (joined, coupled) = (setup.joined.clone(), setup.connections > 1);
    let task = tokio::spawn(async move {
        while let Ok(session) = server.accept().await {
            if coupled {
                // The server sends: spread its data over all connections.
                let _ = session.set_scheduler(Some("round-robin"));
            }
            let joined = joined.clone();
            // One task per session, as the OpenSSL and rustls servers have
            // one per connection: it serves the streams and counts joins.
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        stream = session.accept_stream() => {
                            let Ok(stream) = stream else { break };
                            tokio::spawn(async move {
                                if let Err(e) = io::serve(stream).await {
                                    tracing::debug!("tcpls server: {e}");
                                }
                            });
                        }
                        event = session.next_event() => match event {
                            Some(SessionEvent::ConnectionAdded(_)) => joined.add_permits(1),
                            Some(SessionEvent::Closed(_)) | None => break,
                            _ => {}
                        },
                    }
                }
            });
        }
    });
    Ok((addr, task))
}

async fn session(addr: SocketAddr, setup: &Setup) -> Result<Session> {
    let s = tcpls::connect(addr, SERVER_NAME, setup.client.clone())
        .await
        .context("TCPLS handshake")?;
    if !s.is_tcpls() {
        bail!("the server fell back to plain TLS");
    }
    Ok(s)
}

pub async fn connect(addr: SocketAddr, setup: &Setup) -> Result<Box<dyn Duplex>> {
    let session = session(addr, setup).await?;
    if session.handshake_kind() == Some(tcpls::HandshakeKind::Resumed) {
        setup
            .resumed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let stream = session.open_stream().await?;
    Ok(Box::new(Owned {
        _owner: session,
        io: stream,
    }))
}

/// Waits until the session holds at least `n` join tokens (they follow the
/// handshake, and each used one is replaced once its join is accepted).
async fn tokens(s: &Session, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.available_tokens() < n {
        if Instant::now() > deadline {
            bail!("the server issued no join token within 5 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// `BULK n` spread over `setup.streams` streams (and `setup.connections`
/// connections), read with the zero-copy `read_chunk`.
pub async fn bulk(
    addr: SocketAddr,
    setup: &Setup,
    n: u64,
    verify: bool,
    progress: &indicatif::ProgressBar,
) -> Result<()> {
    let s = session(addr, setup).await?;
    if setup.connections > 1 {
        tokens(&s, setup.connections as usize - 1).await?;
        for _ in 1..setup.connections {
            s.join(addr, None).await?;
            setup.joined.acquire().await?.forget();
        }
    }
    let k = setup.streams as u64;
    let mut tasks = Vec::new();
    for i in 0..k {
        let part = n / k + u64::from(i < n % k);
        let mut stream = s.open_stream().await?;
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            stream.write_all(&io::request(io::BULK, part)).await?;
            let (_send, mut recv) = stream.split();
            let mut got = 0u64;
            while let Some(chunk) = recv.read_chunk(io::WRITE_SIZE).await? {
                if verify {
                    io::check_pattern(got, &chunk)?;
                }
                got += chunk.len() as u64;
                progress.inc(chunk.len() as u64);
            }
            io::expect_len(got, part)
        }));
    }
    for t in tasks {
        t.await??;
    }
    s.close(0, "done");
    Ok(())
}

/// `n` joins to one session, one after the other: each from TCP connect
/// until the server attached the connection. Returns their total time.
pub async fn joins(addr: SocketAddr, setup: &Setup, n: u32) -> Result<Duration> {
    let s = session(addr, setup).await?;
    let mut total = Duration::ZERO;
    for _ in 0..n {
        tokens(&s, 1).await?;
        let t = Instant::now();
        let id = s.join(addr, None).await?;
        setup.joined.acquire().await?.forget();
        total += t.elapsed();
        s.close_connection(id)?;
    }
    s.close(0, "done");
    Ok(total)
}
