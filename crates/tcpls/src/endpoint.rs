//! Opening sessions: [`connect`] for clients, [`Server`] for servers.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tcpls_proto::join::{probe_join, JoinProbe};
use tcpls_proto::{ClientConfig, ConnectionId, ServerConfig};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::driver;
use crate::error::Error;
use crate::handshake;
use crate::limits::{Limiter, ServerLimits, SessionSlot};
use crate::monitor;
use crate::session::Session;
use crate::shared::{Guard, Inner, Shared, TokenRegistry};
use crate::socket::{start_connect, tcp_connect, Preset};

/// Established sessions waiting for [`Server::accept`].
const ACCEPT_QUEUE: usize = 64;

/// How [`start`] sends what the session has to send at once.
#[derive(Clone, Copy, PartialEq)]
enum Flight {
    /// Written from the calling task: a ClientHello with early data, a
    /// server's first flight when it accepted early data (its handshake
    /// is not over: the client waits for it), sparing a task hop (a
    /// thread's wake-up when the caller runs outside the runtime) before
    /// they leave.
    Now,
    /// A client's Finished, a server's session tickets: they go with the
    /// application's first write (`transmit_inline`), which usually
    /// follows at once, so the peer gets both in one segment and one
    /// wake-up, and the sender makes one system call; or the writer task
    /// sends them when it first runs. On a server that task runs as soon
    /// as the accepting task yields: written before the session was
    /// queued, a ticket cost a resumed handshake a `sendto` (20-40 µs
    /// between sockets) before the request was read (2-3 % of a resumed
    /// handshake's time; docs/benchmarks.md).
    WithFirstWrite,
}

/// The first connection of a session: its socket, the bytes read past the
/// handshake, and what the caller knows of the socket already.
struct FirstConnection {
    tcp: TcpStream,
    input: BytesMut,
    /// The address connected to (client) or accepted from (server).
    peer_addr: SocketAddr,
    preset: Preset,
}

fn start(
    mut proto: tcpls_proto::Session,
    first_conn: FirstConnection,
    registry: Option<Arc<TokenRegistry>>,
    slot: Option<SessionSlot>,
    flight_goes: Flight,
) -> Session {
    let FirstConnection {
        tcp,
        mut input,
        peer_addr,
        preset,
    } = first_conn;
    if !input.is_empty() {
        let _ = proto.recv(ConnectionId::FIRST, &mut input, Instant::now());
    }
    if input.is_empty() {
        // The handshake's read buffer goes back now, while the next
        // handshake can reuse it: kept until the reader's idle release,
        // it cost 2-2.5 KiB of server memory per idle session (`tcpls
        // idle`, 10,000 sessions: 23.2-23.8 KiB each, 21.3 without).
        input = BytesMut::new();
    }
    // OpenSSL's state goes to the connection's task, which frees it.
    let retired = proto.take_retired_tls();
    let mut flight = tcpls_proto::session::TransmitBuf::default();
    if flight_goes == Flight::Now {
        let _ = proto.poll_transmit_buf(ConnectionId::FIRST, &mut flight, driver::WRITE_BATCH);
    }
    // What the socket does not take at once is left to the writer, first.
    let written = driver::write_now(&tcp, &flight);
    let first = flight[written..].to_vec();
    let shared = Arc::new_cyclic(|me| Shared {
        inner: Mutex::new(Inner {
            proto,
            readers: HashMap::new(),
            writers: HashMap::new(),
            flushers: Vec::new(),
            acceptors: Vec::new(),
            openers: Vec::new(),
            event_waiters: Vec::new(),
            state_waiters: Vec::new(),
            app_events: VecDeque::new(),
            connected: None,
            fallback: None,
            local_addr: None,
            peer_addr: Some(peer_addr),
            me: Some(me.clone()),
            registry,
            rejoining: false,
            lost_links: Vec::new(),
            spawn_rejoin: monitor::spawn_rejoin,
            armed_timeout: None,
            writing: Default::default(),
            leftover: Default::default(),
            inline_out: Default::default(),
            congestion_control: None,
            cc_programs: Vec::new(),
            wakes: Vec::new(),
        }),
        writers: Default::default(),
        rx: Default::default(),
        writer_done: Default::default(),
        read_held: Default::default(),
        notsent_lowat: std::sync::atomic::AtomicU32::new(u32::MAX),
        sockets: Default::default(),
        _slot: slot,
    });
    // Events of the input processed above (early data's streams).
    shared.lock().dispatch();
    let conn = driver::connection(
        shared.clone(),
        tcp,
        ConnectionId(0),
        input,
        first,
        preset,
        retired,
    );
    let health = monitor::health(Arc::downgrade(&shared));
    tokio::spawn(driver::Both::new(conn, health));
    crate::links::register(&shared);
    Session {
        guard: Arc::new(Guard(shared)),
    }
}

pub(crate) async fn established(session: &Session) -> Result<(), Error> {
    poll_fn(|cx| {
        let mut inner = session.shared().lock();
        if inner.connected.is_some() {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = inner.proto.error() {
            return Poll::Ready(Err(Error::Session(e.clone())));
        }
        crate::shared::wait_on(&mut inner.openers, cx.waker());
        Poll::Pending
    })
    .await
}

/// Opens a session to `addr`, verifying the certificate against
/// `server_name` (unless the config is insecure). Falls back to plain TLS
/// when the server does not speak TCPLS ([`Session::is_tcpls`] tells), and
/// when a middlebox resets or drops the TCPLS hello (see
/// [`ClientConfig::plain_fallback`]; [`Session::fallback_reason`] tells).
pub async fn connect(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> Result<Session, Error> {
    connect_from(addr, None, server_name, config).await
}

/// Opens a session that sends early data (TLS 1.3 0-RTT) when the
/// configuration's session cache holds a ticket of `server_name` that
/// allows it. It returns once TCP is connected, before the handshake:
/// streams opened and written now travel with the ClientHello (in the SYN
/// with TCP Fast Open), and the server may answer them in its first
/// flight. The ClientHello waits for the first write, or for
/// [`Session::established`].
///
/// An attacker can replay early data: write early only what is safe to
/// process twice (an idempotent request). [`Session::early_data`] says what
/// became of it (refused early data is sent again after the handshake,
/// transparently). Without such a ticket this is [`connect`] (which
/// returns after the handshake, and may retry with plain TLS).
pub async fn connect_early(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> Result<Session, Error> {
    if !config.has_early_ticket(server_name, Some(addr.port())) {
        return connect(addr, server_name, config).await;
    }
    let fast_open = config.transport.fast_open;
    let started = Instant::now();
    let tcp = tokio::time::timeout(
        config.transport.handshake_timeout,
        tcp_connect(addr, None, fast_open),
    )
    .await
    .map_err(|_| Error::Session(tcpls_proto::Error::HandshakeTimeout))??;
    let proto = tcpls_proto::Session::connect_early(
        config,
        server_name,
        Some(addr.port()),
        Instant::now(),
    )?;
    let first = FirstConnection {
        tcp,
        input: BytesMut::new(),
        peer_addr: addr,
        preset: Preset::default(),
    };
    let session = start(proto, first, None, None, Flight::Now);
    if fast_open {
        // As `handshake` does: remember a path that drops SYNs with data.
        let s = session.clone();
        let wait = s.shared().lock().proto.transport_config().handshake_timeout;
        tokio::spawn(async move {
            // Bounded: a session dropped before its first write never
            // starts its handshake.
            if let Ok(Ok(())) = tokio::time::timeout(wait, established(&s)).await {
                note_fast_open(&s, addr, started);
            }
        });
    }
    Ok(session)
}

/// Like [`connect`], from the local address `bind` (e.g. one interface).
pub async fn connect_from(
    addr: SocketAddr,
    bind: Option<SocketAddr>,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> Result<Session, Error> {
    let fallback = config.plain_fallback.filter(|_| config.enable_tcpls);
    let wait = fallback.unwrap_or(config.transport.handshake_timeout);
    let e = match handshake(addr, bind, server_name, config.clone(), wait).await {
        Ok(session) => return Ok(session),
        Err(Attempt::Connect(e)) => return Err(e),
        Err(Attempt::Handshake(e)) => e,
    };
    let reason = match (fallback, middlebox_reason(&e, wait)) {
        (Some(_), Some(reason)) => reason,
        _ => return Err(e),
    };
    tracing::warn!(%addr, %reason, "TCPLS hello failed; retrying once with plain TLS 1.3");
    let plain = Arc::new(config.without_tcpls());
    let timeout = config.transport.handshake_timeout;
    let session = handshake(addr, bind, server_name, plain, timeout)
        .await
        .map_err(|a| match a {
            Attempt::Connect(e) | Attempt::Handshake(e) => e,
        })?;
    session.shared().lock().fell_back(reason);
    Ok(session)
}

/// A handshake faster than this had no SYN sent again (the kernel's first
/// SYN timeout is 1 s).
const NO_SYN_RETRY: Duration = Duration::from_millis(200);

/// After a handshake with Fast Open asked (TCP connect at `started`):
/// remembers `addr` if its path dropped the SYN's data (see
/// `socket::note_fast_open_outcome`). A fast handshake is not asked about:
/// its TCP_INFO call waited for the socket's lock while the writer task
/// sent the client's Finished, 50 µs on the handshake's critical path.
fn note_fast_open(session: &Session, addr: SocketAddr, started: Instant) {
    if started.elapsed() < NO_SYN_RETRY {
        return;
    }
    for tcp in session.shared().sockets_of(Some(ConnectionId::FIRST)) {
        crate::socket::note_fast_open_outcome(&tcp, addr.ip());
    }
}

/// How one connection attempt failed.
enum Attempt {
    /// TCP did not connect: nothing to retry differently.
    Connect(Error),
    /// TCP connected, the TLS handshake failed.
    Handshake(Error),
}

/// One TCP connection and handshake, which must finish within `wait`.
async fn handshake(
    addr: SocketAddr,
    bind: Option<SocketAddr>,
    server_name: &str,
    config: Arc<ClientConfig>,
    wait: Duration,
) -> Result<Session, Attempt> {
    let timeout = config.transport.handshake_timeout;
    let fast_open = config.transport.fast_open;
    let started = Instant::now();
    // The ClientHello (its key shares) is built while the SYN travels.
    let (connecting, preset) = start_connect(addr, bind, fast_open, Some(&config.transport))
        .map_err(|e| Attempt::Connect(e.into()))?;
    let mut proto =
        tcpls_proto::Session::connect_to(config, server_name, Some(addr.port()), Instant::now())
            .map_err(|e| Attempt::Connect(e.into()))?;
    let tcp = tokio::time::timeout(timeout, connecting.finish())
        .await
        .map_err(|_| Attempt::Connect(Error::Session(tcpls_proto::Error::HandshakeTimeout)))?
        .map_err(|e| Attempt::Connect(e.into()))?;
    let mut input = BytesMut::new();
    match tokio::time::timeout(wait, handshake::drive(&mut proto, &tcp, &mut input)).await {
        Ok(Ok(())) => {
            let first = FirstConnection {
                tcp,
                input,
                peer_addr: addr,
                preset,
            };
            let session = start(proto, first, None, None, Flight::WithFirstWrite);
            if fast_open {
                note_fast_open(&session, addr, started);
            }
            Ok(session)
        }
        Ok(Err(e)) => Err(Attempt::Handshake(e)),
        Err(_) => Err(Attempt::Handshake(Error::Session(
            tcpls_proto::Error::HandshakeTimeout,
        ))),
    }
}

/// Why a failed TCPLS hello looks like a middlebox's doing (a reset, an
/// EOF or silence before the handshake finished), or `None` when the
/// server answered and refused (an alert, a bad certificate): falling back
/// would not help.
fn middlebox_reason(e: &Error, wait: Duration) -> Option<String> {
    use tcpls_proto::Error as E;
    match e {
        Error::Session(E::HandshakeTimeout) => Some(format!("no handshake within {wait:?}")),
        Error::Session(E::ConnectionLost(why)) => Some(format!("connection lost: {why}")),
        Error::Io(io) => Some(format!("connection failed: {io}")),
        _ => None,
    }
}

/// How [`connect_any`] races its addresses.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Delay before starting the next attempt while earlier ones are still
    /// pending (RFC 8305's "Connection Attempt Delay").
    pub attempt_delay: Duration,
    /// Give up when no attempt completed its handshake by then.
    pub timeout: Duration,
    /// After the first handshake completes, join the other addresses to the
    /// session as additional connections.
    pub keep_others: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            attempt_delay: Duration::from_millis(250),
            timeout: Duration::from_secs(10),
            keep_others: false,
        }
    }
}

/// Orders addresses as RFC 8305 section 4 suggests: families interleaved,
/// IPv6 first.
fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let (v6, v4): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs.iter().partition(|a| a.is_ipv6());
    let mut out = Vec::with_capacity(addrs.len());
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

/// Happy eyeballs: races TCP + TLS handshakes to several addresses of one
/// server (staggered by `attempt_delay`, the next attempt starting early
/// when one fails) and returns the first session established. The losing
/// attempts are dropped, or, with `keep_others`, their addresses are joined
/// to the winning session once it is up.
///
/// ```no_run
/// # async fn f(cfg: std::sync::Arc<tcpls::ClientConfig>) -> Result<(), tcpls::Error> {
/// let addrs = ["[2001:db8::1]:443".parse().unwrap(), "192.0.2.1:443".parse().unwrap()];
/// let session = tcpls::connect_any(&addrs, "example.com", cfg, tcpls::ConnectOptions::default()).await?;
/// # Ok(()) }
/// ```
pub async fn connect_any(
    addrs: &[SocketAddr],
    server_name: &str,
    config: Arc<ClientConfig>,
    opts: ConnectOptions,
) -> Result<Session, Error> {
    let order = interleave(addrs);
    if order.is_empty() {
        return Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no address to connect to",
        )));
    }
    let race = async {
        let mut attempts = JoinSet::new();
        let mut next = 0;
        let mut last_err = None;
        loop {
            if next < order.len() {
                let (addr, name, cfg) = (order[next], server_name.to_string(), config.clone());
                attempts.spawn(async move { (addr, connect(addr, &name, cfg).await) });
                next += 1;
            }
            let delay = tokio::time::sleep(opts.attempt_delay);
            tokio::select! {
                done = attempts.join_next(), if !attempts.is_empty() => match done {
                    Some(Ok((addr, Ok(session)))) => return Ok((addr, session)),
                    Some(Ok((addr, Err(e)))) => {
                        tracing::debug!(%addr, error = %e, "attempt failed");
                        last_err = Some(e);
                        if attempts.is_empty() && next == order.len() {
                            return Err(last_err.expect("an attempt failed"));
                        }
                    }
                    Some(Err(join)) => last_err = Some(Error::Io(std::io::Error::other(join))),
                    None => {}
                },
                _ = delay, if next < order.len() => {}
            }
            if attempts.is_empty() && next == order.len() {
                return Err(last_err
                    .unwrap_or_else(|| Error::Io(std::io::Error::other("all attempts failed"))));
            }
        }
    };
    let (winner, session) = tokio::time::timeout(opts.timeout, race)
        .await
        .map_err(|_| Error::Session(tcpls_proto::Error::HandshakeTimeout))??;
    if opts.keep_others && session.is_tcpls() {
        for addr in order.into_iter().filter(|a| *a != winner) {
            if let Err(e) = session.join(addr, None).await {
                tracing::debug!(%addr, error = %e, "could not join");
            }
        }
    }
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
    /// Listens on `addr` (port 0 picks a free port; see [`Self::local_addr`]),
    /// with the default [`ServerLimits`].
    pub async fn bind(addr: SocketAddr, config: Arc<ServerConfig>) -> Result<Server, Error> {
        Self::bind_with_limits(addr, config, ServerLimits::default()).await
    }

    /// Like [`Self::bind`], with the given limits on sessions and opening
    /// connections.
    pub async fn bind_with_limits(
        addr: SocketAddr,
        config: Arc<ServerConfig>,
        limits: ServerLimits,
    ) -> Result<Server, Error> {
        let listener = TcpListener::bind(addr).await?;
        Self::serve_listener(listener, config, limits)
    }

    /// A server on a listening socket made elsewhere: one inherited from
    /// systemd (socket activation) or a supervisor, or bound with options
    /// of the caller's choosing.
    ///
    /// ```no_run
    /// # async fn f(config: std::sync::Arc<tcpls::ServerConfig>) -> Result<(), tcpls::Error> {
    /// let listener = std::net::TcpListener::bind("[::]:4443")?;
    /// let server = tcpls::Server::from_listener(listener, config, tcpls::ServerLimits::default())?;
    /// # Ok(()) }
    /// ```
    pub fn from_listener(
        listener: std::net::TcpListener,
        config: Arc<ServerConfig>,
        limits: ServerLimits,
    ) -> Result<Server, Error> {
        listener.set_nonblocking(true)?;
        Self::serve_listener(TcpListener::from_std(listener)?, config, limits)
    }

    fn serve_listener(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        limits: ServerLimits,
    ) -> Result<Server, Error> {
        let local_addr = listener.local_addr()?;
        if config.transport.fast_open {
            crate::socket::enable_fast_open_listener(&listener);
        }
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let task = tokio::spawn(accept_loop(listener, config, tx, Limiter::new(limits)));
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

async fn accept_loop(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    tx: mpsc::Sender<Session>,
    limiter: Arc<Limiter>,
) {
    let registry = Arc::new(TokenRegistry::default());
    loop {
        // Never waits for a permit: over a limit the connection is closed at
        // once, so connections that hold their slots cannot stop accept
        // (and with it every rejoin of a live session).
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        let (opening, pending) = match limiter.open(peer.ip()) {
            Ok(x) => x,
            Err(why) => {
                limiter.refused(peer, why);
                continue; // dropping `tcp` closes it
            }
        };
        let (config, queue, registry, limiter) = (
            config.clone(),
            tx.clone(),
            registry.clone(),
            limiter.clone(),
        );
        tokio::spawn(async move {
            let _opening = opening;
            // While the ClientHello is on its way.
            let preset = Preset::apply((&tcp).into(), &config.transport);
            let first = limiter.limits().first_record_timeout;
            let (tcp, mut buf, probe) = match tokio::time::timeout(first, first_record(tcp)).await {
                Ok(Ok(Some(x))) => x,
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "connection failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "no first record in time");
                    return;
                }
            };
            drop(pending);
            if let JoinProbe::Join { token, len } = probe {
                // A join is attached at once: it needs no handshake permit.
                if let Err(e) = join(tcp, buf, token, len, &registry) {
                    tracing::debug!(%peer, error = %e, "join refused");
                }
                return;
            }
            let (handshake, slot) = match limiter.new_session(peer.ip()) {
                Ok(x) => x,
                Err(why) => return limiter.refused(peer, why),
            };
            let timeout = config.transport.handshake_timeout;
            let mut proto = match tcpls_proto::Session::accept(config, Instant::now()) {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "connection refused");
                    return;
                }
            };
            match tokio::time::timeout(timeout, handshake::drive(&mut proto, &tcp, &mut buf)).await
            {
                Ok(Ok(())) => {
                    drop(handshake);
                    drop(_opening);
                    let flight = match proto.early_data() {
                        tcpls_proto::EarlyData::Accepted => Flight::Now,
                        _ => Flight::WithFirstWrite,
                    };
                    let first = FirstConnection {
                        tcp,
                        input: buf,
                        peer_addr: peer,
                        preset,
                    };
                    let session = start(proto, first, Some(registry), Some(slot), flight);
                    let _ = queue.send(session).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "handshake failed"),
                Err(_) => tracing::debug!(%peer, "handshake timed out"),
            }
        });
    }
}

/// Reads a new connection's first record: the ClientHello that tells a
/// join (with its token) from a new session. `None`: closed before.
async fn first_record(
    mut tcp: TcpStream,
) -> Result<Option<(TcpStream, BytesMut, JoinProbe)>, Error> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        match probe_join(&buf) {
            JoinProbe::Incomplete => {
                if tcp.read_buf(&mut buf).await? == 0 {
                    return Ok(None);
                }
            }
            p => return Ok(Some((tcp, buf, p))),
        }
    }
}

/// Attaches a connection to the session its join token names.
fn join(
    tcp: TcpStream,
    mut buf: BytesMut,
    token: [u8; 32],
    len: usize,
    registry: &TokenRegistry,
) -> Result<(), Error> {
    let session = registry
        .map
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&token)
        .and_then(Weak::upgrade);
    let Some(shared) = session else {
        return Err(Error::Call(tcpls_proto::CallError::JoinRefused(
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
    Ok(())
}
