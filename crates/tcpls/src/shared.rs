//! The state a session's handles and tasks share: the protocol core behind
//! one lock, the wakers and notifiers it drives, and the server's token
//! registry.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Waker;

use tcpls_proto::session::options::{OptionStatus, PeerOption};
use tcpls_proto::{ConnectionId, ErrorCode, Event, StreamId};
use tokio::sync::Notify;

/// Events the application can observe with [`crate::Session::next_event`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The peer opened a stream (also delivered by [`crate::Session::accept_stream`]).
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
    /// Client: the TCPLS hello got a reset, an EOF or no answer, and the
    /// session runs over plain TLS 1.3 instead (the first event of such a
    /// session; see `ClientConfig::plain_fallback`).
    FellBack {
        /// What happened to the TCPLS hello.
        reason: String,
    },
    /// The peer asked this side to apply a transport option (on one
    /// connection, or all): `applied` says whether it was, or why not.
    PeerOption {
        /// The connection, or `None` for all of them.
        conn: Option<ConnectionId>,
        /// What the peer asked for.
        option: PeerOption,
        /// Applied, or why not.
        applied: Result<(), String>,
    },
    /// The peer answered [`crate::Session::set_peer_option`] request
    /// `request`.
    PeerOptionAnswered {
        /// The request's id.
        request: u32,
        /// The connection it named, or `None` for all.
        conn: Option<ConnectionId>,
        /// What was asked.
        option: PeerOption,
        /// Applied by the peer, or why not.
        answer: Result<(), String>,
    },
}

/// How long TCP must have heard nothing (no ACK, no data) on a connection
/// with data outstanding for it to count as silent (or half the path's
/// minimum RTT, if longer): a busy path brings ACKs every few
/// milliseconds, and the peer acknowledges records within its ACK delay
/// (5 ms by default).
const TCP_SILENCE: std::time::Duration = std::time::Duration::from_millis(30);

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
    /// Tasks waiting for a protocol state that has no event of its own (a
    /// join's confirmation): woken whenever input was processed.
    pub state_waiters: Vec<Waker>,
    pub app_events: VecDeque<SessionEvent>,
    pub connected: Option<bool>,
    /// Client: why this session fell back to plain TLS after its TCPLS
    /// hello failed (explicit fallback).
    pub fallback: Option<String>,
    /// Read from the socket when first asked for (`Session::local_addr`):
    /// a system call fewer on the handshake's critical path.
    pub local_addr: Option<SocketAddr>,
    /// The first connection's peer, as connected to or accepted.
    pub peer_addr: Option<SocketAddr>,
    /// Server side: the token registry and a weak handle on this session
    /// to register (set once the session is built).
    pub registry: Option<Arc<TokenRegistry>>,
    pub me: Option<Weak<Shared>>,
    /// Client: a rejoin task is running.
    pub rejoining: bool,
    /// Client: local addresses whose link went down while a connection
    /// used them, with where that connection went: joined again when the
    /// link is back (`links`).
    pub lost_links: Vec<(IpAddr, SocketAddr)>,
    /// Client: starts the rejoin task on the runtime when the last
    /// connection failed (`monitor::spawn_rejoin`; a hook, so this module
    /// does not depend on the tasks that drive connections).
    pub spawn_rejoin: fn(&tokio::runtime::Handle, Weak<Shared>),
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
    /// The congestion controller for every connection of the session,
    /// later ones too (this side's `Session::set_congestion_control`, or
    /// the peer's request for all connections).
    pub congestion_control: Option<String>,
    /// The peer's congestion controller programs this session uses
    /// (registered while some session holds them).
    pub cc_programs: Vec<Arc<crate::bpf_cc::Controller>>,
    /// Tasks to wake once the lock is released (see [`Locked`]).
    pub wakes: Vec<Waker>,
}

/// An option as events report it: without a program's bytes, which the
/// application has no use for and an event queue should not hold.
fn without_program(option: PeerOption) -> PeerOption {
    match option {
        PeerOption::CongestionProgram { name, digest, .. } => PeerOption::CongestionProgram {
            name,
            digest,
            program: Default::default(),
        },
        other => other,
    }
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

/// True for addresses that name this host or its link rather than a
/// remote server: a peer may not steer joins there.
fn host_scoped(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unicast_link_local(),
    }
}

/// Of the peer's advertised addresses, those a join may go to, given the
/// address of the session's first connection (see `Session::peer_addresses`).
pub(crate) fn joinable(peer: Option<SocketAddr>, advertised: &[SocketAddr]) -> Vec<SocketAddr> {
    let local_session = peer.is_some_and(|p| p.ip().to_canonical().is_loopback());
    advertised
        .iter()
        .copied()
        .filter(|a| {
            let ip = a.ip().to_canonical();
            let never = ip.is_unspecified() || ip.is_multicast() || a.port() == 0;
            let allowed = !host_scoped(ip) || (local_session && ip.is_loopback());
            if never || !allowed {
                tracing::debug!(addr = %a, "ignoring an advertised address out of the session's scope");
            }
            !never && allowed
        })
        .collect()
}

impl Inner {
    /// The TCP_USER_TIMEOUT for the kernel. With failover, the path monitor
    /// (`monitor::health`) detects a dead connection at the session's user
    /// timeout from TCP_INFO, and the kernel's timer is only a backstop: at
    /// 250 ms it also aborted healthy connections whose reader was slow
    /// (Linux applies it to zero-window probing, so a receive window full
    /// for 250 ms ended the connection: thousands a minute in `tcpls soak`
    /// with 1,000 sessions on two cores).
    pub fn kernel_user_timeout(&self) -> Option<std::time::Duration> {
        let t = self.proto.user_timeout()?;
        Some(crate::options::kernel_user_timeout(
            t,
            self.proto.failover(),
        ))
    }

    /// [`Self::kernel_user_timeout`] of connection `conn` (the peer may
    /// have asked for another one with a TRANSPORT_OPTION).
    pub fn kernel_user_timeout_of(&self, conn: ConnectionId) -> Option<std::time::Duration> {
        let t = self.proto.user_timeout_of(conn)?;
        Some(crate::options::kernel_user_timeout(
            t,
            self.proto.failover(),
        ))
    }

    /// The peer's advertised addresses a join may go to.
    pub fn joinable_addresses(&self) -> Vec<SocketAddr> {
        joinable(self.peer_addr, self.proto.peer_addresses())
    }

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
        self.wakes.append(&mut self.state_waiters);
        // A handshake that ended after `endpoint::start` took the rest (a
        // server that accepted early data): its OpenSSL state goes now,
        // not with the session.
        drop(self.proto.take_retired_tls());
        while let Some(ev) = self.proto.poll_event() {
            match ev {
                Event::Connected { tcpls } => {
                    self.connected = Some(tcpls);
                    if let Some(me) = self.me.as_ref().and_then(Weak::upgrade) {
                        me.apply_user_timeout(self.kernel_user_timeout());
                    }
                    self.wakes.append(&mut self.openers);
                }
                Event::StreamOpened(id) => {
                    self.wakes.append(&mut self.acceptors);
                    self.push_app_event(SessionEvent::StreamOpened(id));
                }
                Event::StreamReadable(id) => {
                    if let Some(w) = self.readers.remove(&id) {
                        self.wakes.push(w);
                    }
                }
                Event::StreamWritable(id) => {
                    if let Some(w) = self.writers.remove(&id) {
                        self.wakes.push(w);
                    }
                }
                Event::StreamsAvailable => self.wakes.append(&mut self.openers),
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
                Event::Disconnected
                    if self.proto.side() == tcpls_proto::Side::Client && !self.rejoining =>
                {
                    let rt = tokio::runtime::Handle::try_current();
                    if let (Some(me), Ok(rt)) = (self.me.clone(), rt) {
                        self.rejoining = true;
                        (self.spawn_rejoin)(&rt, me);
                    }
                }
                Event::PeerOption {
                    request,
                    conn,
                    option: option @ PeerOption::CongestionProgram { .. },
                } => self.load_peer_program(request, conn, option),
                Event::PeerOption {
                    request,
                    conn,
                    option,
                } => {
                    let answer = self.apply_peer_option(conn, &option);
                    self.answer_peer(request, conn, option, answer);
                }
                Event::PeerOptionRefused {
                    conn,
                    option,
                    reason,
                } => {
                    tracing::info!(?conn, ?option, %reason, "peer's transport option refused");
                    if let Some(option) = option {
                        self.push_app_event(SessionEvent::PeerOption {
                            conn,
                            option,
                            applied: Err(reason),
                        });
                    }
                }
                Event::PeerOptionAnswered {
                    request,
                    conn,
                    option,
                    answer,
                } => {
                    tracing::info!(?conn, option = %option.describe(), ?answer, "transport option answered");
                    self.push_app_event(SessionEvent::PeerOptionAnswered {
                        request,
                        conn,
                        option: without_program(option),
                        answer: answer.map_err(|(status, why)| format!("{status:?}: {why}")),
                    });
                }
                Event::Closed(e) => {
                    // The peer's congestion controller programs go with the
                    // session (unregistered unless another session uses them).
                    self.cc_programs.clear();
                    self.wakes.extend(self.readers.drain().map(|(_, w)| w));
                    self.wakes.extend(self.writers.drain().map(|(_, w)| w));
                    self.wakes.append(&mut self.flushers);
                    self.wakes.append(&mut self.acceptors);
                    self.wakes.append(&mut self.openers);
                    self.push_app_event(SessionEvent::Closed(e));
                }
                // Tokens are used by `Session::join` when asked; a server's
                // Disconnected waits for the client; newer events concern
                // nobody here.
                _ => {}
            }
        }
    }

    /// Applies the peer's transport option to connection `conn`'s socket,
    /// or to every socket of the session (and then to later ones too).
    fn apply_peer_option(
        &mut self,
        conn: Option<ConnectionId>,
        option: &PeerOption,
    ) -> tcpls_proto::session::options::OptionAnswer {
        let Some(me) = self.me.as_ref().and_then(Weak::upgrade) else {
            return Err((OptionStatus::Failed, "session ending".into()));
        };
        let targets = me.sockets_of(conn);
        if let (Some(c), true) = (conn, targets.is_empty()) {
            return Err((
                OptionStatus::NoSuchConnection,
                format!("connection {c} has no socket here"),
            ));
        }
        crate::options::apply(&targets, option, self.proto.failover())?;
        // (Under the session lock, which `driver::spawn` takes to apply it
        // to a new socket after registering it: none is missed.)
        if let (None, PeerOption::CongestionControl(name)) = (conn, option) {
            self.congestion_control = Some(name.clone());
        }
        Ok(())
    }

    /// The peer's congestion controller program: loaded on a blocking
    /// thread (the verifier can take milliseconds), then set on the
    /// sockets and answered by [`Shared::finish_program`].
    fn load_peer_program(&mut self, request: u32, conn: Option<ConnectionId>, option: PeerOption) {
        let PeerOption::CongestionProgram {
            name,
            digest,
            program,
        } = &option
        else {
            return;
        };
        let (name, digest, program) = (name.clone(), *digest, program.clone());
        match (self.me.clone(), tokio::runtime::Handle::try_current()) {
            (Some(me), Ok(rt)) => {
                rt.spawn_blocking(move || {
                    let loaded = crate::bpf_cc::load(&name, &digest, &program);
                    // A session that ended meanwhile drops the controller.
                    if let Some(shared) = me.upgrade() {
                        shared.finish_program(request, conn, option, loaded);
                    }
                });
            }
            _ => {
                let why = (OptionStatus::Failed, "session ending".to_string());
                self.answer_peer(request, conn, option, Err(why));
            }
        }
    }

    /// Answers the peer's transport option request (applied, loaded, or
    /// why not) and tells the application.
    fn answer_peer(
        &mut self,
        request: u32,
        conn: Option<ConnectionId>,
        option: PeerOption,
        answer: tcpls_proto::session::options::OptionAnswer,
    ) {
        tracing::info!(?conn, option = %option.describe(), ?answer, "peer's transport option");
        let applied = answer.clone().map_err(|(_, why)| why);
        self.proto
            .answer_peer_option(request, conn, &option, answer);
        self.push_app_event(SessionEvent::PeerOption {
            conn,
            option: without_program(option),
            applied,
        });
    }

    /// Records that this session is the plain TLS retry of a failed TCPLS
    /// hello, and tells the application.
    pub fn fell_back(&mut self, reason: String) {
        self.app_events.push_front(SessionEvent::FellBack {
            reason: reason.clone(),
        });
        self.fallback = Some(reason);
        self.wakes.append(&mut self.event_waiters);
    }

    /// Wakes the tasks waiting for records to be transmitted.
    pub fn wake_flushers(&mut self) {
        self.wakes.append(&mut self.flushers);
    }

    pub fn push_app_event(&mut self, e: SessionEvent) {
        if self.app_events.len() >= MAX_APP_EVENTS {
            self.app_events.pop_front();
        }
        self.app_events.push_back(e);
        self.wakes.append(&mut self.event_waiters);
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
    /// Bytes of read buffers the connections retired while received data
    /// (slices of them) still kept them alive; see `driver::ReadBuffers`.
    pub read_held: AtomicUsize,
    /// The TCP_NOTSENT_LOWAT the sockets were given (`u32::MAX`: none, the
    /// system's default), so a session that never couples its connections
    /// makes no such call.
    pub notsent_lowat: AtomicU32,
    /// Server side: this session's place in the server's session limits,
    /// given back when the session's state is dropped.
    pub _slot: Option<crate::limits::SessionSlot>,
}

/// Server-wide map from join token to session, filled from the sessions'
/// `TokenIssued` / `TokenRetired` events. The session itself compares the
/// token again in constant time before accepting a join.
#[derive(Default)]
pub(crate) struct TokenRegistry {
    pub map: Mutex<HashMap<[u8; 32], Weak<Shared>>>,
}

impl Shared {
    /// Runs `f` on the protocol state, then turns its events into wake-ups
    /// and transmits whatever `f` queued: from this task when the session
    /// has one connection (`driver::transmit_inline`: a FIN, a CLOSE go out
    /// without a hop to the writer task), else through the writers.
    pub fn with_proto<T>(&self, f: impl FnOnce(&mut tcpls_proto::Session) -> T) -> T {
        self.run_proto(f, true)
    }

    /// [`Self::with_proto`] for `Drop` impls: the writer task sends what
    /// `f` queued, so dropping a handle costs the dropping task no system
    /// call (a client dropping its stream and session after a response
    /// waited for two sends, its FIN and CLOSE, before its next request).
    pub fn with_proto_deferred<T>(&self, f: impl FnOnce(&mut tcpls_proto::Session) -> T) -> T {
        self.run_proto(f, false)
    }

    /// Both of the above: `inline` sends from this task when it can.
    fn run_proto<T>(&self, f: impl FnOnce(&mut tcpls_proto::Session) -> T, inline: bool) -> T {
        let mut inner = self.lock();
        let r = f(&mut inner.proto);
        inner.dispatch();
        let inline = inline && inner.proto.has_transmit();
        drop(inner);
        if !inline || !crate::driver::transmit_inline(self) {
            self.wake_writers();
        }
        r
    }

    /// A peer's program, loaded or not (`bpf_cc::load`): set on the
    /// sockets it was asked for, kept while the session lasts, answered.
    pub fn finish_program(
        &self,
        request: u32,
        conn: Option<ConnectionId>,
        option: PeerOption,
        loaded: Result<Arc<crate::bpf_cc::Controller>, crate::bpf_cc::LoadError>,
    ) {
        let mut inner = self.lock();
        let answer = loaded.and_then(|controller| {
            if inner.proto.is_drained() || inner.proto.error().is_some() {
                // Closed while it loaded: nothing keeps it registered.
                return Err((OptionStatus::Failed, "the session ended".into()));
            }
            let targets = self.sockets_of(conn);
            let name = PeerOption::CongestionControl(controller.name.clone());
            crate::options::apply(&targets, &name, inner.proto.failover()).map_err(
                |(status, why)| {
                    (
                        status,
                        format!("{why} (does the program register this name?)"),
                    )
                },
            )?;
            if conn.is_none() {
                inner.congestion_control = Some(controller.name.clone());
            }
            inner.cc_programs.push(controller);
            Ok(())
        });
        inner.answer_peer(request, conn, option, answer);
        inner.dispatch();
        drop(inner);
        self.wake_writers();
    }

    /// Sets TCP_NOTSENT_LOWAT on every connection's socket when a
    /// scheduler spreads data over more than one (`coupled`), so that each
    /// connection pulls records only when TCP can send them soon and the
    /// scheduler's choice is made late; clears it otherwise (a lone
    /// connection keeps the kernel's deep buffer and fewer wake-ups).
    pub fn update_notsent_lowat(&self, coupled: bool) {
        let sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = if coupled && sockets.len() > 1 {
            crate::socket::NOTSENT_LOWAT
        } else {
            u32::MAX
        };
        if self.notsent_lowat.swap(bytes, Ordering::Relaxed) == u32::MAX && bytes == u32::MAX {
            return;
        }
        for fd in sockets.values() {
            crate::socket::set_notsent_lowat(&**fd, bytes);
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

    /// The socket of connection `conn`, or (`None`) of every connection.
    pub fn sockets_of(&self, conn: Option<ConnectionId>) -> Vec<Arc<tokio::net::TcpStream>> {
        let sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        match conn {
            Some(c) => sockets.get(&c).cloned().into_iter().collect(),
            None => sockets.values().cloned().collect(),
        }
    }

    /// Gives a new connection `conn` the session-wide socket options: the
    /// congestion controller and the user timeout (the session's, or what
    /// the peer asked for), unless the socket has that one already
    /// (`preset`).
    pub fn apply_session_options(
        &self,
        conn: ConnectionId,
        tcp: &tokio::net::TcpStream,
        preset: Option<std::time::Duration>,
    ) {
        let (cc, t) = {
            let inner = self.lock();
            // Before the handshake there is no session value yet (and no
            // failover floor): the `Connected` event applies it then.
            let t = inner
                .connected
                .and_then(|_| inner.kernel_user_timeout_of(conn));
            (inner.congestion_control.clone(), t)
        };
        if let Some(name) = cc {
            if let Err(e) = crate::options::set_congestion_control(tcp, &name) {
                tracing::warn!(%conn, %name, error = %e, "cannot set the congestion controller");
            }
        }
        if let Some(t) = t.filter(|t| Some(*t) != preset) {
            let _ = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(t));
        }
    }

    /// Answers the session's silence checks (`Session::silence_checks`)
    /// from the kernel: a connection whose TCP has had data outstanding,
    /// and received neither an ACK nor data, for `TCP_SILENCE` is silent
    /// (a blackhole); one whose TCP still hears from the peer is only slow
    /// (a loss being repaired, a queue).
    pub fn answer_silence_checks(&self, inner: &mut Inner) {
        let conns = inner.proto.silence_checks();
        if conns.is_empty() {
            return;
        }
        let sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        for conn in conns {
            let silent = sockets
                .get(&conn)
                .and_then(|tcp| crate::socket::tcp_info(conn, &**tcp).ok())
                .is_some_and(|i| {
                    // Half the path's own RTT at least: a sparse sender's
                    // last record may still be on its way.
                    let quiet = (TCP_SILENCE.as_millis() as u32).max(i.min_rtt_us / 2000);
                    i.unacked > 0 && i.last_ack_recv_ms >= quiet && i.last_data_recv_ms >= quiet
                });
            inner.proto.tcp_silence(conn, silent);
        }
    }

    /// Wakes every connection's writer.
    pub fn wake_writers(&self) {
        let w = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        w.values().for_each(|n| n.notify_one());
    }

    pub fn lock(&self) -> Locked<'_> {
        Locked(Some(self.inner.lock().unwrap_or_else(|p| p.into_inner())))
    }
}

thread_local! {
    /// The wake list's spare allocation, so releasing the lock with tasks
    /// to wake allocates nothing.
    static SPARE_WAKES: Cell<Vec<Waker>> = const { Cell::new(Vec::new()) };
}

/// The session lock, held. Tasks woken while it is held ([`Inner::wakes`])
/// are woken after it is released: a task woken on another thread ran at
/// once and found the lock still held, and slept on it (three futex calls
/// and a context switch, several times a handshake).
pub(crate) struct Locked<'a>(Option<MutexGuard<'a, Inner>>);

impl Deref for Locked<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        self.0.as_deref().expect("held until dropped")
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        self.0.as_deref_mut().expect("held until dropped")
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let Some(mut guard) = self.0.take() else {
            return;
        };
        if guard.wakes.is_empty() {
            return;
        }
        // (`try_with`: a lock released while the thread's locals are torn
        // down gets a fresh vector.)
        let mut wakes = SPARE_WAKES.try_with(Cell::take).unwrap_or_default();
        std::mem::swap(&mut wakes, &mut guard.wakes);
        drop(guard);
        wakes.drain(..).for_each(Waker::wake);
        let _ = SPARE_WAKES.try_with(|s| s.set(wakes));
    }
}

/// Adds `w` to `waiters` unless a waker of the same task is there already:
/// a task that polls again without having been woken (a `select!` loop
/// re-creating `accept_stream` and `next_event` on each event) would pile
/// up one copy per poll until the next wake-up, without bound.
pub(crate) fn wait_on(waiters: &mut Vec<Waker>, w: &Waker) {
    if !waiters.iter().any(|x| x.will_wake(w)) {
        waiters.push(w.clone());
    }
}

/// Closes the session when the last handle (session or stream) is dropped.
pub(crate) struct Guard(pub Arc<Shared>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0
            .with_proto_deferred(|p| p.close_gracefully(ErrorCode::NO_ERROR, "session dropped"));
    }
}

#[cfg(test)]
mod tests {
    use super::{joinable, wait_on};
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    struct Task;
    impl Wake for Task {
        fn wake(self: Arc<Self>) {}
    }

    #[test]
    fn a_task_waits_once_however_often_it_polls() {
        let (a, b) = (Waker::from(Arc::new(Task)), Waker::from(Arc::new(Task)));
        let mut waiters = Vec::new();
        for _ in 0..100 {
            wait_on(&mut waiters, &a);
            wait_on(&mut waiters, &a.clone());
        }
        wait_on(&mut waiters, &b);
        assert_eq!(waiters.len(), 2);
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn advertised_addresses_are_kept_in_scope() {
        let advertised = addrs(&[
            "127.0.0.1:80",
            "[::1]:80",
            "[::ffff:127.0.0.1]:80",
            "0.0.0.0:80",
            "224.0.0.1:80",
            "169.254.1.1:80",
            "[fe80::1]:80",
            "10.0.2.1:0",
            "10.0.2.1:4443",
            "[2001:db8::1]:4443",
        ]);
        let remote = joinable(Some("192.0.2.7:4443".parse().unwrap()), &advertised);
        assert_eq!(remote, addrs(&["10.0.2.1:4443", "[2001:db8::1]:4443"]));
        let local = joinable(Some("127.0.0.1:4443".parse().unwrap()), &advertised);
        assert_eq!(
            local,
            addrs(&[
                "127.0.0.1:80",
                "[::1]:80",
                "[::ffff:127.0.0.1]:80",
                "10.0.2.1:4443",
                "[2001:db8::1]:4443"
            ])
        );
    }
}
