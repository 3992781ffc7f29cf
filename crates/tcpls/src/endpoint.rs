//! Opening sessions: [`connect`] for clients, [`Server`] for servers.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::Instant;

use bytes::BytesMut;
use tcpls_proto::wire::join::{probe_join, JoinProbe};
use tcpls_proto::{ClientConfig, ServerConfig};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use crate::driver;
use crate::error::Error;
use crate::session::{Guard, Inner, Session, Shared, TokenRegistry};

/// Handshakes a server runs at once; further connections wait in the
/// kernel's accept queue.
const MAX_CONCURRENT_HANDSHAKES: usize = 256;
/// Established sessions waiting for [`Server::accept`].
const ACCEPT_QUEUE: usize = 64;

fn start(
    proto: tcpls_proto::Session,
    tcp: TcpStream,
    input: BytesMut,
    registry: Option<Arc<TokenRegistry>>,
) -> Session {
    let local_addr = tcp.local_addr().ok();
    let peer_addr = tcp.peer_addr().ok();
    let shared = Arc::new_cyclic(|me| Shared {
        inner: Mutex::new(Inner {
            proto,
            readers: HashMap::new(),
            writers: HashMap::new(),
            flushers: Vec::new(),
            acceptors: Vec::new(),
            openers: Vec::new(),
            event_waiters: Vec::new(),
            app_events: VecDeque::new(),
            connected: None,
            local_addr,
            peer_addr,
            me: registry.as_ref().map(|_| me.clone()),
            registry,
        }),
        writers: Default::default(),
        rx: Default::default(),
    });
    driver::spawn(shared.clone(), tcp, 0, input, Vec::new());
    Session {
        guard: Arc::new(Guard(shared)),
    }
}

/// Opens a TCP connection to `remote`, from `bind` when given.
pub(crate) async fn tcp_connect(
    remote: SocketAddr,
    bind: Option<SocketAddr>,
) -> std::io::Result<TcpStream> {
    let Some(local) = bind else {
        return TcpStream::connect(remote).await;
    };
    let socket = if remote.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(local)?;
    socket.connect(remote).await
}

async fn established(session: &Session) -> Result<(), Error> {
    poll_fn(|cx| {
        let mut inner = session.shared().lock();
        if inner.connected.is_some() {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = inner.proto.error() {
            return Poll::Ready(Err(Error::Session(e.clone())));
        }
        inner.openers.push(cx.waker().clone());
        Poll::Pending
    })
    .await
}

/// Opens a session to `addr`, verifying the certificate against
/// `server_name` (unless the config is insecure). Falls back to plain TLS
/// when the server does not speak TCPLS ([`Session::is_tcpls`] tells).
pub async fn connect(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> Result<Session, Error> {
    let timeout = config.transport.handshake_timeout;
    let tcp = tokio::time::timeout(timeout, tcp_connect(addr, None))
        .await
        .map_err(|_| Error::Session(tcpls_proto::Error::HandshakeTimeout))??;
    let proto = tcpls_proto::Session::connect(config, server_name, Instant::now())?;
    let session = start(proto, tcp, BytesMut::new(), None);
    established(&session).await?;
    Ok(session)
}

/// A listening TCPLS server. Accepts TCPLS clients and plain TLS 1.3
/// clients (as single-stream sessions).
pub struct Server {
    incoming: tokio::sync::Mutex<mpsc::Receiver<Session>>,
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl Server {
    /// Listens on `addr` (port 0 picks a free port; see [`Self::local_addr`]).
    pub async fn bind(addr: SocketAddr, config: Arc<ServerConfig>) -> Result<Server, Error> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let task = tokio::spawn(accept_loop(listener, config, tx));
        Ok(Server {
            incoming: tokio::sync::Mutex::new(rx),
            local_addr,
            task,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    /// Waits for the next session whose handshake completed. Failed
    /// handshakes are logged (`tracing`, debug level) and skipped.
    pub async fn accept(&self) -> Result<Session, Error> {
        self.incoming.lock().await.recv().await.ok_or_else(|| {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "listener stopped",
            ))
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, config: Arc<ServerConfig>, tx: mpsc::Sender<Session>) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    let registry = Arc::new(TokenRegistry::default());
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (config, queue, registry) = (config.clone(), tx.clone(), registry.clone());
        tokio::spawn(async move {
            let timeout = config.transport.handshake_timeout;
            match tokio::time::timeout(timeout, incoming(tcp, config, registry)).await {
                Ok(Ok(Some(session))) => {
                    drop(permit);
                    let _ = queue.send(session).await;
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection refused"),
                Err(_) => tracing::debug!(%peer, "handshake timed out"),
            }
        });
        if tx.is_closed() {
            return;
        }
    }
}

/// Handles a new TCP connection: a join of an existing session (routed by
/// its token) or a new session. Returns the new session once established.
async fn incoming(
    mut tcp: TcpStream,
    config: Arc<ServerConfig>,
    registry: Arc<TokenRegistry>,
) -> Result<Option<Session>, Error> {
    let mut buf = BytesMut::with_capacity(4096);
    let probe = loop {
        match probe_join(&buf) {
            JoinProbe::Incomplete => {
                if tcp.read_buf(&mut buf).await? == 0 {
                    return Ok(None);
                }
            }
            p => break p,
        }
    };
    if let JoinProbe::Join { token, len } = probe {
        let session = registry
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&token)
            .and_then(Weak::upgrade);
        let Some(shared) = session else {
            return Err(Error::Session(tcpls_proto::Error::JoinRefused(
                "unknown token",
            )));
        };
        let conn = {
            let mut inner = shared.lock();
            let r = inner.proto.accept_join(&token);
            inner.dispatch();
            r?
        };
        let _ = buf.split_to(len);
        driver::spawn(shared, tcp, conn, buf, Vec::new());
        return Ok(None);
    }
    let proto = tcpls_proto::Session::accept(config, Instant::now())?;
    let session = start(proto, tcp, buf, Some(registry));
    established(&session).await?;
    Ok(Some(session))
}
