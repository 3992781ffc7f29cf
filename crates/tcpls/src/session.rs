//! The application's handle on a session.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Poll, Waker};

use tcpls_proto::{ConnectionId, ErrorCode, Event, StreamId};
use tokio::sync::Notify;

use crate::error::Error;
use crate::stream::Stream;

/// Events the application can observe with [`Session::next_event`].
#[derive(Clone, Debug)]
pub enum SessionEvent {
    /// The peer opened a stream (also delivered by [`Session::accept_stream`]).
    StreamOpened(StreamId),
    /// A stream finished in both directions and its state was freed.
    StreamClosed(StreamId),
    /// A TCP connection joined the session.
    ConnectionAdded(ConnectionId),
    /// A TCP connection left the session (the session goes on).
    ConnectionClosed(ConnectionId),
    /// A TCP connection failed; its unacknowledged data was replayed on
    /// the others (or on a rejoined one).
    ConnectionFailed(ConnectionId),
    /// The peer advertised (`added`) or withdrew an address.
    PeerAddress {
        /// The address.
        addr: SocketAddr,
        /// True when advertised, false when withdrawn.
        added: bool,
    },
    /// The session ended (by either side, or a failure).
    Closed(tcpls_proto::Error),
}

/// Most events kept for the application; older ones are dropped so a session
/// whose application never looks at events keeps bounded memory.
const MAX_APP_EVENTS: usize = 1024;

pub(crate) struct Inner {
    pub proto: tcpls_proto::Session,
    pub readers: HashMap<StreamId, Waker>,
    pub writers: HashMap<StreamId, Waker>,
    /// Waiters for "something was transmitted" (flush, shutdown).
    pub flushers: Vec<Waker>,
    pub acceptors: Vec<Waker>,
    pub openers: Vec<Waker>,
    pub event_waiters: Vec<Waker>,
    pub app_events: VecDeque<SessionEvent>,
    pub connected: Option<bool>,
    pub local_addr: Option<SocketAddr>,
    pub peer_addr: Option<SocketAddr>,
    /// Server side: the token registry and a weak handle on this session
    /// to register (set once the session is built).
    pub registry: Option<Arc<TokenRegistry>>,
    pub me: Option<Weak<Shared>>,
    /// Client: a rejoin task is running.
    pub rejoining: bool,
    /// The timer the writer tasks sleep on (to wake them when an earlier
    /// one is needed).
    pub armed_timeout: Option<std::time::Instant>,
    /// Who is writing records of a connection to its socket outside the
    /// lock: records must reach the socket in the order they were sealed,
    /// so nobody else transmits on that connection meanwhile.
    pub writing: BTreeMap<ConnectionId, Writing>,
    /// Bytes an inline transmit could not write (the socket was full): the
    /// writer task sends them before anything else.
    pub leftover: BTreeMap<ConnectionId, Vec<u8>>,
    /// Output buffer of inline transmits, kept between calls.
    pub inline_out: tcpls_proto::session::TransmitBuf,
}

/// See [`Inner::writing`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Writing {
    /// The connection's writer task.
    Task,
    /// An application task, right after its write (`driver::transmit_inline`).
    Inline,
    /// An inline transmit is running and the writer task woke meanwhile:
    /// it must be woken again when the inline transmit ends.
    InlineWriterWaiting,
}

/// Watches the kernel's view of each connection (TCP_INFO) and fails over a
/// connection whose sent segments have gone unacknowledged for the user
/// timeout. The kernel's own TCP_USER_TIMEOUT only fires at retransmission
/// timer events (about 450 ms for 250 ms here); polling every 50 ms cuts
/// that to the timeout plus at most 50 ms.
pub(crate) async fn health(me: Weak<Shared>) {
    // Every 50 ms while data is unacknowledged or a scheduler needs fresh
    // path figures; otherwise every 500 ms (session timers only), so idle
    // sessions cost little.
    let mut busy = true;
    loop {
        let period = if busy { 50 } else { 500 };
        tokio::time::sleep(std::time::Duration::from_millis(period)).await;
        let Some(shared) = me.upgrade() else { return };
        {
            let inner = shared.lock();
            busy = inner.proto.has_unacked() || inner.proto.scheduler_name().is_some();
        }
        let limit = {
            let mut inner = shared.lock();
            if inner.proto.is_drained() {
                return;
            }
            // Session timers also fire here: with no connection left there
            // is no writer task to fire them (rejoin grace, idle timeout).
            let now = std::time::Instant::now();
            if inner.proto.poll_timeout().is_some_and(|t| t <= now) {
                inner.proto.handle_timeout(now);
                inner.dispatch();
                drop(inner);
                shared.wake_writers();
                inner = shared.lock();
            }
            inner
                .proto
                .user_timeout()
                .filter(|_| inner.proto.failover())
        };
        let infos: Vec<crate::ConnectionStats> = {
            let sockets = shared.sockets.lock().unwrap_or_else(|p| p.into_inner());
            sockets
                .iter()
                .filter_map(|(id, fd)| crate::socket::tcp_info(*id, &**fd).ok())
                .collect()
        };
        {
            // Schedulers choose paths by RTT and congestion window.
            let mut inner = shared.lock();
            for i in &infos {
                inner.proto.set_path_info(
                    i.conn,
                    Some(std::time::Duration::from_micros(i.rtt_us as u64)),
                    Some(i.cwnd as u64 * i.mss as u64),
                );
            }
        }
        let dead: Vec<(ConnectionId, u32)> = {
            infos
                .into_iter()
                // Unacknowledged data, no ACK for the user timeout, and at
                // least one retransmission timeout fired: a connection that
                // just sent after being idle has a stale last-ACK time but
                // no RTO yet.
                .filter(|i| {
                    limit.is_some_and(|limit| {
                        i.unacked > 0
                            && i.rto_backoff > 0
                            && i.last_ack_recv_ms as u128 >= limit.as_millis()
                    })
                })
                .map(|i| (i.conn, i.last_ack_recv_ms))
                .collect()
        };
        if dead.is_empty() {
            continue;
        }
        let mut inner = shared.lock();
        for (conn, ms) in dead {
            inner.proto.handle_connection_error(
                conn,
                format!("no TCP acknowledgement for {ms} ms"),
                std::time::Instant::now(),
            );
        }
        inner.dispatch();
        drop(inner);
        shared.wake_writers();
    }
}

/// Client side, after the last connection failed: joins a new connection
/// (to the original address or one the server advertised), retrying with
/// backoff until it works or the session ends.
async fn rejoin(me: Weak<Shared>) {
    let mut delay = std::time::Duration::from_millis(20);
    loop {
        let Some(shared) = me.upgrade() else { return };
        let targets: Vec<SocketAddr> = {
            let mut inner = shared.lock();
            let connected = inner
                .proto
                .connections()
                .iter()
                .any(|(_, st)| *st == tcpls_proto::session::ConnectionState::Active);
            if inner.proto.error().is_some() || connected {
                inner.rejoining = false;
                return;
            }
            inner
                .peer_addr
                .into_iter()
                .chain(inner.proto.peer_addresses().iter().copied())
                .collect()
        };
        drop(shared);
        for addr in targets {
            let attempt = tokio::time::timeout(
                delay.max(std::time::Duration::from_millis(200)),
                crate::endpoint::tcp_connect(addr, None),
            )
            .await;
            let Ok(Ok(tcp)) = attempt else { continue };
            let Some(shared) = me.upgrade() else { return };
            let joined = {
                let mut inner = shared.lock();
                let r = inner.proto.join();
                inner.dispatch();
                r
            };
            match joined {
                Ok((id, first)) => {
                    tracing::info!(conn = id, %addr, "rejoined after losing every connection");
                    shared.apply_user_timeout_to(&tcp);
                    crate::driver::spawn(shared.clone(), tcp, id, bytes::BytesMut::new(), first);
                    shared.lock().rejoining = false;
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot rejoin");
                    shared.lock().rejoining = false;
                    return;
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_millis(500));
    }
}

impl Inner {
    /// True when the protocol's next timer is due before the one the writer
    /// tasks sleep on (so they must be woken to re-arm).
    pub fn timer_moved(&self) -> bool {
        match (self.proto.poll_timeout(), self.armed_timeout) {
            (Some(t), Some(armed)) => t < armed,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// Turns protocol events into wake-ups. Called after every interaction
    /// with the protocol state machine.
    pub fn dispatch(&mut self) {
        while let Some(ev) = self.proto.poll_event() {
            match ev {
                Event::Connected { tcpls } => {
                    self.connected = Some(tcpls);
                    if let Some(me) = self.me.as_ref().and_then(Weak::upgrade) {
                        me.apply_user_timeout(self.proto.user_timeout());
                    }
                    self.openers.drain(..).for_each(Waker::wake);
                }
                Event::StreamOpened(id) => {
                    self.acceptors.drain(..).for_each(Waker::wake);
                    self.push_app_event(SessionEvent::StreamOpened(id));
                }
                Event::StreamReadable(id) => {
                    if let Some(w) = self.readers.remove(&id) {
                        w.wake();
                    }
                }
                Event::StreamWritable(id) => {
                    if let Some(w) = self.writers.remove(&id) {
                        w.wake();
                    }
                }
                Event::StreamsAvailable => self.openers.drain(..).for_each(Waker::wake),
                Event::TokenIssued(t) => {
                    if let (Some(reg), Some(me)) = (&self.registry, &self.me) {
                        reg.map
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(t, me.clone());
                    }
                }
                Event::TokenRetired(t) => {
                    if let Some(reg) = &self.registry {
                        reg.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&t);
                    }
                }
                Event::ConnectionAdded(c) => self.push_app_event(SessionEvent::ConnectionAdded(c)),
                Event::ConnectionClosed(c) => {
                    self.push_app_event(SessionEvent::ConnectionClosed(c))
                }
                Event::PeerAddress { addr, added } => {
                    self.push_app_event(SessionEvent::PeerAddress { addr, added })
                }
                Event::ConnectionFailed(c) => {
                    self.push_app_event(SessionEvent::ConnectionFailed(c))
                }
                Event::Disconnected => {
                    if self.proto.side() == tcpls_proto::Side::Client && !self.rejoining {
                        let rt = tokio::runtime::Handle::try_current();
                        if let (Some(me), Ok(rt)) = (self.me.clone(), rt) {
                            self.rejoining = true;
                            rt.spawn(rejoin(me));
                        }
                    }
                }
                Event::TokensAvailable => {}
                Event::Closed(e) => {
                    self.readers.drain().for_each(|(_, w)| w.wake());
                    self.writers.drain().for_each(|(_, w)| w.wake());
                    self.flushers.drain(..).for_each(Waker::wake);
                    self.acceptors.drain(..).for_each(Waker::wake);
                    self.openers.drain(..).for_each(Waker::wake);
                    self.push_app_event(SessionEvent::Closed(e));
                }
            }
        }
    }

    pub fn push_app_event(&mut self, e: SessionEvent) {
        if self.app_events.len() >= MAX_APP_EVENTS {
            self.app_events.pop_front();
        }
        self.app_events.push_back(e);
        self.event_waiters.drain(..).for_each(Waker::wake);
    }
}

pub(crate) struct Shared {
    pub inner: Mutex<Inner>,
    /// One per connection: wakes its writer task (something may be ready to
    /// transmit). A separate lock, so waking never waits for `inner`.
    pub writers: Mutex<BTreeMap<ConnectionId, Arc<Notify>>>,
    /// Wakes the reader task: the application consumed buffered input.
    pub rx: Notify,
    /// A duplicate descriptor of each connection's socket (for TCP_INFO).
    pub sockets: Mutex<BTreeMap<ConnectionId, Arc<tokio::net::TcpStream>>>,
    /// Notified when a connection's writer task ends.
    pub writer_done: Notify,
}

/// Server-wide map from join token to session, filled from the sessions'
/// `TokenIssued` / `TokenRetired` events. The session itself compares the
/// token again in constant time before accepting a join.
#[derive(Default)]
pub(crate) struct TokenRegistry {
    pub map: Mutex<HashMap<[u8; 32], Weak<Shared>>>,
}

/// Unsent bytes a socket may hold before it stops reporting writable, with
/// coupled sending: enough to keep a fast path busy, small enough that
/// records are not queued deep inside a slow connection.
pub(crate) const NOTSENT_LOWAT: u32 = 128 << 10;

impl Shared {
    /// Runs `f` on the protocol state, then turns its events into wake-ups
    /// and lets the writers transmit whatever `f` queued.
    pub fn with_proto<T>(&self, f: impl FnOnce(&mut tcpls_proto::Session) -> T) -> T {
        let mut inner = self.lock();
        let r = f(&mut inner.proto);
        inner.dispatch();
        drop(inner);
        self.wake_writers();
        r
    }

    /// Sets (or clears) TCP_NOTSENT_LOWAT on every connection's socket.
    pub fn set_notsent_lowat(&self, bytes: Option<u32>) {
        let sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        for fd in sockets.values() {
            crate::socket::set_notsent_lowat(&**fd, bytes.unwrap_or(u32::MAX));
        }
    }

    /// Applies the TCP User Timeout to every connection's socket.
    pub fn apply_user_timeout(&self, t: Option<std::time::Duration>) {
        let Some(t) = t else { return };
        let sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        for fd in sockets.values() {
            let _ = socket2::SockRef::from(&**fd).set_tcp_user_timeout(Some(t));
        }
    }

    /// Applies the session's TCP User Timeout to a new socket.
    pub fn apply_user_timeout_to(&self, tcp: &tokio::net::TcpStream) {
        if let Some(t) = self.lock().proto.user_timeout() {
            let _ = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(t));
        }
    }

    /// Wakes every connection's writer.
    pub fn wake_writers(&self) {
        let w = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        w.values().for_each(|n| n.notify_one());
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Closes the session when the last handle (session or stream) is dropped.
pub(crate) struct Guard(pub Arc<Shared>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0
            .with_proto(|p| p.close_gracefully(ErrorCode::NO_ERROR, "session dropped"));
    }
}

/// A TCPLS session (or a plain TLS session after fallback, with one stream).
///
/// Cloning gives another handle on the same session. The session closes
/// (CLOSE frame with `NO_ERROR`, after data already queued) when every
/// handle and every stream is dropped, or on [`Session::close`].
#[derive(Clone)]
pub struct Session {
    pub(crate) guard: Arc<Guard>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer_addr())
            .field("tcpls", &self.is_tcpls())
            .finish()
    }
}

impl Session {
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.guard.0
    }

    /// True when the peer speaks TCPLS; false after fallback to plain TLS.
    pub fn is_tcpls(&self) -> bool {
        self.shared().lock().proto.is_tcpls()
    }

    /// True when both sides acknowledge records (failover is on).
    pub fn failover(&self) -> bool {
        self.shared().lock().proto.failover()
    }

    /// The negotiated TLS 1.3 cipher suite.
    pub fn cipher_suite(&self) -> Option<tcpls_proto::CipherSuite> {
        self.shared().lock().proto.cipher_suite()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.shared().lock().peer_addr
    }

    /// This side's address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared().lock().local_addr
    }

    /// Why the session ended, if it has.
    pub fn close_reason(&self) -> Option<tcpls_proto::Error> {
        self.shared().lock().proto.error().cloned()
    }

    /// Opens a stream, waiting while the peer's stream limit is reached.
    /// On a plain TLS session only the first call succeeds.
    pub async fn open_stream(&self) -> Result<Stream, Error> {
        let id = poll_fn(|cx| {
            let mut inner = self.shared().lock();
            if let Some(e) = inner.proto.error() {
                return Poll::Ready(Err(Error::Session(e.clone())));
            }
            if inner.proto.can_open_stream() {
                return Poll::Ready(inner.proto.open_stream().map_err(Error::Session));
            }
            if inner.connected == Some(false) {
                // Plain TLS: the single stream is taken.
                return Poll::Ready(inner.proto.open_stream().map_err(Error::Session));
            }
            inner.openers.push(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        Ok(Stream::new(self.guard.clone(), id))
    }

    /// Waits for the next stream the peer opens. Fails once the session ended.
    pub async fn accept_stream(&self) -> Result<Stream, Error> {
        let id = poll_fn(|cx| {
            let mut inner = self.shared().lock();
            if let Some(id) = inner.proto.accept_stream() {
                return Poll::Ready(Ok(id));
            }
            if let Some(e) = inner.proto.error() {
                return Poll::Ready(Err(Error::Session(e.clone())));
            }
            inner.acceptors.push(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        Ok(Stream::new(self.guard.clone(), id))
    }

    /// Waits for the next session event; `None` after `Closed` was taken.
    pub async fn next_event(&self) -> Option<SessionEvent> {
        poll_fn(|cx| {
            let mut inner = self.shared().lock();
            if let Some(e) = inner.app_events.pop_front() {
                return Poll::Ready(Some(e));
            }
            if inner.proto.error().is_some() {
                return Poll::Ready(None);
            }
            inner.event_waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Closes the session now: the peer gets a CLOSE frame with the
    /// application `code` and `reason`. Data not yet sent is dropped; call
    /// [`crate::SendStream::finish`] on streams first for a graceful end.
    pub fn close(&self, code: u32, reason: &str) {
        self.shared()
            .with_proto(|p| p.close(ErrorCode::app(code), reason));
    }

    /// Adds a TCP connection to the session (client side): connects to
    /// `remote` (from `bind` if given, e.g. another interface's address)
    /// and joins with a one-time token; no new handshake. New streams still
    /// use the primary connection until [`Self::migrate`] or
    /// [`Stream::set_connection`].
    pub async fn join(
        &self,
        remote: SocketAddr,
        bind: Option<SocketAddr>,
    ) -> Result<ConnectionId, Error> {
        let tcp = crate::endpoint::tcp_connect(remote, bind).await?;
        let (id, first) = {
            let mut inner = self.shared().lock();
            let r = inner.proto.join();
            inner.dispatch();
            r?
        };
        crate::driver::spawn(
            self.shared().clone(),
            tcp,
            id,
            bytes::BytesMut::new(),
            first,
        );
        Ok(id)
    }

    /// Moves all streams, and new ones, to connection `conn`.
    pub fn migrate(&self, conn: ConnectionId) -> Result<(), Error> {
        self.with_proto(|p| p.migrate(conn))
    }

    /// Stops sending on `conn` (its streams move to the primary connection)
    /// and closes it once drained.
    pub fn close_connection(&self, conn: ConnectionId) -> Result<(), Error> {
        self.with_proto(|p| p.close_connection(conn))
    }

    /// The session's connections and their states.
    pub fn connections(&self) -> Vec<(ConnectionId, tcpls_proto::session::ConnectionState)> {
        self.shared().lock().proto.connections()
    }

    /// Advertises an address of this side to the peer.
    pub fn advertise_address(&self, addr: SocketAddr) -> Result<(), Error> {
        self.with_proto(|p| p.advertise_address(addr))
    }

    /// Withdraws an address advertised earlier.
    pub fn withdraw_address(&self, addr: SocketAddr) -> Result<(), Error> {
        self.with_proto(|p| p.withdraw_address(addr))
    }

    /// Addresses the peer advertised.
    pub fn peer_addresses(&self) -> Vec<SocketAddr> {
        self.shared().lock().proto.peer_addresses().to_vec()
    }

    /// Kernel TCP statistics of each live connection.
    pub fn connection_stats(&self) -> Vec<crate::ConnectionStats> {
        let sockets = self
            .shared()
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        sockets
            .iter()
            .filter_map(|(id, fd)| crate::socket::tcp_info(*id, &**fd).ok())
            .collect()
    }

    /// Spreads every stream's data over all connections, one record at a
    /// time, as the named scheduler decides (`round-robin`, `lowest-rtt`,
    /// `weighted:W0,W1,...`); `None` keeps each stream on its connection.
    /// Also sets TCP_NOTSENT_LOWAT on the sockets so that each connection
    /// pulls records only when TCP can send them soon.
    pub fn set_scheduler(&self, name: Option<&str>) -> Result<(), Error> {
        let sched = match name {
            None => None,
            Some(n) => Some(tcpls_proto::session::scheduler::from_name(n).ok_or(
                Error::Session(tcpls_proto::Error::Usage("unknown scheduler")),
            )?),
        };
        let coupled = sched.is_some();
        self.with_proto(|p| {
            p.set_scheduler(sched);
            Ok(())
        })?;
        self.shared()
            .set_notsent_lowat(coupled.then_some(NOTSENT_LOWAT));
        Ok(())
    }

    /// The most received-but-unread bytes this side held at once
    /// (reassembly memory; bounded by the session window).
    pub fn peak_buffered(&self) -> u64 {
        self.shared().lock().proto.peak_buffered()
    }

    /// Stream bytes this side sent on each connection.
    pub fn bytes_sent_per_connection(&self) -> Vec<(ConnectionId, u64)> {
        self.shared().lock().proto.bytes_sent_per_connection()
    }

    /// Join tokens available (client).
    pub fn available_tokens(&self) -> usize {
        self.shared().lock().proto.available_tokens()
    }

    pub(crate) fn with_proto<T>(
        &self,
        f: impl FnOnce(&mut tcpls_proto::Session) -> Result<T, tcpls_proto::Error>,
    ) -> Result<T, Error> {
        Ok(self.shared().with_proto(f)?)
    }

    /// Waits until the session has ended and every connection has sent
    /// its last record and its FIN: after [`Self::close`], the point where
    /// the process may exit without the peer missing the CLOSE frame (like
    /// quinn's `Endpoint::wait_idle`). Bound it with a timeout: a peer that
    /// stopped reading can hold the last bytes back.
    ///
    /// ```no_run
    /// # async fn f(session: tcpls::Session) {
    /// session.close(0, "done");
    /// let _ = tokio::time::timeout(std::time::Duration::from_secs(1), session.drained()).await;
    /// # }
    /// ```
    pub async fn drained(&self) {
        let shared = self.shared();
        loop {
            // Registered before the check, so an end in between is seen.
            let done = shared.writer_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            let writers_left = !shared
                .writers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty();
            if !writers_left && shared.lock().proto.error().is_some() {
                return;
            }
            if writers_left {
                done.await;
            } else {
                // No connection, session not over (a client rejoining).
                self.closed().await;
            }
        }
    }

    /// Waits until the session has ended and returns why.
    pub async fn closed(&self) -> tcpls_proto::Error {
        poll_fn(|cx| {
            let mut inner = self.shared().lock();
            if let Some(e) = inner.proto.error() {
                return Poll::Ready(e.clone());
            }
            inner.event_waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}
