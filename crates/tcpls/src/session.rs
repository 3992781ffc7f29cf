//! The application's handle on a session.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tcpls_proto::{ConnectionId, ErrorCode};

use crate::error::Error;

/// How long [`Session::join`] waits for the server's first record on a
/// joined connection (a swallowed hello gets none; TCP retransmits a lost
/// one after about a second).
const JOIN_CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);
use crate::shared::{Guard, SessionEvent, Shared};
use crate::stream::Stream;

/// Starts a joined connection over `tcp` (a fresh TCP connection to the
/// server): the join hello goes first, then whatever the session sends on
/// it.
pub(crate) fn start_join(
    shared: &Arc<Shared>,
    tcp: tokio::net::TcpStream,
) -> Result<ConnectionId, Error> {
    let (id, first) = {
        let mut inner = shared.lock();
        let r = inner.proto.join();
        inner.dispatch();
        r?
    };
    // (`driver::spawn` gives the socket the session's options.)
    crate::driver::spawn(shared.clone(), tcp, id, bytes::BytesMut::new(), first);
    Ok(id)
}

/// [`Session::join`] on the shared state (also used when a local link
/// comes back).
pub(crate) async fn join_connection(
    shared: &Arc<Shared>,
    remote: SocketAddr,
    bind: Option<SocketAddr>,
) -> Result<ConnectionId, Error> {
    // The server's tokens follow its handshake, within an ACK delay when
    // no answer carries them sooner: a join right after connecting waits
    // for one (then fails as before, with no token).
    let token = poll_fn(|cx| {
        let mut inner = shared.lock();
        if inner.proto.available_tokens() > 0
            || inner.proto.side() == tcpls_proto::Side::Server
            || !inner.proto.is_tcpls()
            || inner.proto.error().is_some()
        {
            return Poll::Ready(());
        }
        crate::shared::wait_on(&mut inner.state_waiters, cx.waker());
        Poll::Pending
    });
    let _ = tokio::time::timeout(JOIN_CONFIRM_TIMEOUT, token).await;
    let fast_open = shared.lock().proto.transport_config().fast_open;
    let tcp = crate::socket::tcp_connect(remote, bind, fast_open).await?;
    let id = start_join(shared, tcp)?;
    // The server confirms a join with its first record on it (the join
    // challenge). A hello that a middlebox swallowed, or a join the
    // server dropped, gets none: give that connection up so the caller
    // can try another address.
    let confirmed = poll_fn(|cx| {
        let mut inner = shared.lock();
        match inner.proto.join_confirmed(id) {
            Some(true) => Poll::Ready(Ok(id)),
            None => Poll::Ready(Err(Error::Call(tcpls_proto::CallError::JoinRefused(
                "the joined connection failed before the server confirmed it",
            )))),
            Some(false) => {
                crate::shared::wait_on(&mut inner.state_waiters, cx.waker());
                Poll::Pending
            }
        }
    });
    match tokio::time::timeout(JOIN_CONFIRM_TIMEOUT, confirmed).await {
        Ok(r) => r,
        Err(_) => {
            let _ = shared.with_proto(|p| p.close_connection(id));
            Err(Error::Call(tcpls_proto::CallError::JoinRefused(
                "the server did not confirm the join",
            )))
        }
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

    /// Client: why this session runs over plain TLS after its TCPLS hello
    /// got a reset, an EOF or no answer (explicit fallback, see
    /// `ClientConfig::plain_fallback`); `None` when it did not fall back
    /// that way (it may still be plain TLS because the server does not
    /// speak TCPLS: see [`Self::is_tcpls`]).
    pub fn fallback_reason(&self) -> Option<String> {
        self.shared().lock().fallback.clone()
    }

    /// True while a transport option the peer asked for is not answered
    /// yet (e.g. a congestion controller program still arriving or
    /// loading): a measurement waits for it to settle.
    pub fn peer_options_pending(&self) -> bool {
        self.shared().lock().proto.peer_options_pending()
    }

    /// True when both sides acknowledge records (failover is on).
    pub fn failover(&self) -> bool {
        self.shared().lock().proto.failover()
    }

    /// The peer's transport parameters (TCPLS only; `None` in plain TLS).
    pub fn peer_params(&self) -> Option<tcpls_proto::TransportParams> {
        self.shared().lock().proto.peer_params().copied()
    }

    /// The ALPN protocol the server chose.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.shared().lock().proto.alpn().map(<[u8]>::to_vec)
    }

    /// The key exchange group the handshake used (e.g. `X25519MLKEM768`);
    /// `None` before the handshake ends and for a resumption without key
    /// exchange (`resume_without_key_exchange` on both sides).
    pub fn key_exchange(&self) -> Option<String> {
        self.shared()
            .lock()
            .proto
            .key_exchange()
            .map(str::to_string)
    }

    /// The peer's certificate chain as it sent it, leaf first (DER): the
    /// server's, or the client's under mutual TLS.
    pub fn peer_certificates_der(&self) -> Vec<Vec<u8>> {
        self.shared().lock().proto.peer_certificates_der().to_vec()
    }

    /// The server name the client asked for (SNI).
    pub fn server_name(&self) -> Option<String> {
        self.shared().lock().proto.server_name().map(str::to_string)
    }

    /// What became of early data (see [`crate::connect_early`]).
    pub fn early_data(&self) -> tcpls_proto::EarlyData {
        self.shared().lock().proto.early_data()
    }

    /// Waits until the handshake is done (at once if it is); a session
    /// from [`crate::connect_early`] sends its ClientHello now if it was
    /// waiting for a first write.
    pub async fn established(&self) -> Result<(), Error> {
        let _ = self.with_proto(|p| {
            p.start_handshake();
            Ok(())
        });
        crate::endpoint::established(self).await
    }

    /// Whether the TLS handshake was full or resumed from a ticket (`None`
    /// while it runs).
    pub fn handshake_kind(&self) -> Option<tcpls_proto::HandshakeKind> {
        self.shared().lock().proto.handshake_kind()
    }

    /// Whether the first connection's SYN carried data that the peer took
    /// (TCP Fast Open saved a round trip). False once that connection is
    /// gone.
    pub fn used_fast_open(&self) -> bool {
        self.shared()
            .sockets_of(Some(ConnectionId::FIRST))
            .first()
            .and_then(|tcp| crate::socket::tcp_info(ConnectionId::FIRST, &**tcp).ok())
            .is_some_and(|i| i.fast_open)
    }

    /// The negotiated TLS 1.3 cipher suite.
    pub fn cipher_suite(&self) -> Option<tcpls_proto::CipherSuite> {
        self.shared().lock().proto.cipher_suite()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.shared().lock().peer_addr
    }

    /// This side's address (of the first connection; of another one if
    /// that one closed before this was first asked).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        let shared = self.shared();
        if let Some(a) = shared.lock().local_addr {
            return Some(a);
        }
        // In connection order: the first one's, while it is there.
        let addr = shared
            .sockets_of(None)
            .iter()
            .find_map(|tcp| tcp.local_addr().ok());
        shared.lock().local_addr = addr;
        addr
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
                return Poll::Ready(inner.proto.open_stream().map_err(Error::from));
            }
            if inner.connected == Some(false) {
                // Plain TLS: the single stream is taken.
                return Poll::Ready(inner.proto.open_stream().map_err(Error::from));
            }
            crate::shared::wait_on(&mut inner.openers, cx.waker());
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
            crate::shared::wait_on(&mut inner.acceptors, cx.waker());
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
            crate::shared::wait_on(&mut inner.event_waiters, cx.waker());
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
    /// and joins with a one-time token; no new handshake. Returns once the
    /// server confirmed the join (its first record on the connection), or
    /// fails with `JoinRefused` after 3 s without one (the connection is
    /// given up; try another address). Right after the handshake it first
    /// waits (up to 3 s) for the server's join tokens. The scheduler
    /// spreads streams over it; [`Stream::set_connection`] steers one onto
    /// it.
    pub async fn join(
        &self,
        remote: SocketAddr,
        bind: Option<SocketAddr>,
    ) -> Result<ConnectionId, Error> {
        join_connection(self.shared(), remote, bind).await
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

    /// Resets connection `conn` at the TCP level, as a failing path or a
    /// middlebox would: the peer gets an RST, and both sides fail the
    /// connection over to the session's others (a client whose last
    /// connection it was rejoins). For demonstrations and failover tests.
    pub fn kill_connection(&self, conn: ConnectionId) -> Result<(), Error> {
        let sockets = self.shared().sockets_of(Some(conn));
        let tcp = sockets
            .first()
            .ok_or(Error::Call(tcpls_proto::CallError::Usage(
                "unknown connection id",
            )))?;
        crate::socket::reset(&**tcp)?;
        Ok(())
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

    /// Addresses the peer advertised that this side may connect to:
    /// loopback, link-local, unspecified and multicast ones are left out
    /// (a server could otherwise point a client's joins at services on the
    /// client's own host), except loopback when the session itself runs
    /// over loopback.
    pub fn peer_addresses(&self) -> Vec<SocketAddr> {
        self.shared().lock().joinable_addresses()
    }

    /// Asks the peer to apply a transport option on connection `conn`
    /// (`None`: all of the session's connections, later ones too), e.g.
    /// to send to us with another congestion controller. The option
    /// travels encrypted, so middleboxes cannot strip it. Returns the
    /// request's id; the answer arrives as
    /// [`SessionEvent::PeerOptionAnswered`].
    ///
    /// ```no_run
    /// # fn f(session: &tcpls::Session) -> Result<(), tcpls::Error> {
    /// use tcpls::PeerOption;
    /// session.set_peer_option(None, PeerOption::CongestionControl("bbr".into()))?;
    /// # Ok(()) }
    /// ```
    pub fn set_peer_option(
        &self,
        conn: Option<ConnectionId>,
        option: tcpls_proto::session::options::PeerOption,
    ) -> Result<u32, Error> {
        self.with_proto(|p| p.set_peer_option(conn, option))
    }

    /// Uses congestion controller `name` (`TCP_CONGESTION`, e.g. `bbr`) on
    /// every connection of this side, later ones too. The kernel refuses
    /// names it does not have, and (without CAP_NET_ADMIN) those outside
    /// `net.ipv4.tcp_allowed_congestion_control`.
    pub fn set_congestion_control(&self, name: &str) -> Result<(), Error> {
        self.choose_congestion_control(name, true).map(|_| ())
    }

    /// Like [`Self::set_congestion_control`], as a default: unless the
    /// peer already asked for a controller on all connections (a
    /// TRANSPORT_OPTION), which then stays. Returns whether it was set. A
    /// later request of the peer overrides it.
    pub fn default_congestion_control(&self, name: &str) -> Result<bool, Error> {
        self.choose_congestion_control(name, false)
    }

    /// Sets the session-wide congestion controller (unless one is set and
    /// not `replace`) on every socket. Under the session lock, like the
    /// peer's requests and `driver::spawn`'s use of it for a new socket:
    /// no connection misses it, and none gets two choices interleaved.
    fn choose_congestion_control(&self, name: &str, replace: bool) -> Result<bool, Error> {
        let mut inner = self.shared().lock();
        if inner.congestion_control.is_some() && !replace {
            return Ok(false);
        }
        for tcp in self.shared().sockets_of(None) {
            crate::options::set_congestion_control(&tcp, name)?;
        }
        inner.congestion_control = Some(name.to_string());
        Ok(true)
    }

    /// Kernel TCP statistics of each live connection.
    pub fn connection_stats(&self) -> Vec<crate::socket::ConnectionStats> {
        let sockets = self
            .shared()
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        sockets
            .iter()
            .filter_map(|(id, tcp)| {
                let mut s = crate::socket::tcp_info(*id, &**tcp).ok()?;
                s.local_addr = tcp.local_addr().ok();
                s.peer_addr = tcp.peer_addr().ok();
                s.congestion_control = crate::options::congestion_control(tcp);
                let sock = socket2::SockRef::from(&**tcp);
                s.user_timeout = sock.tcp_user_timeout().ok().flatten();
                s.nodelay = sock.nodelay().unwrap_or(false);
                Some(s)
            })
            .collect()
    }

    /// Chooses how the data of streams that are not steered is spread over
    /// the session's connections, one record at a time: the named
    /// scheduler (`earliest-arrival`, the default from
    /// [`TransportConfig::scheduler`](tcpls_proto::TransportConfig::scheduler),
    /// `round-robin`, `lowest-rtt`, `weighted:W0,W1,...`); `None` keeps
    /// each stream on its connection. With more than one connection the
    /// sockets get TCP_NOTSENT_LOWAT, so that each connection pulls
    /// records only when TCP can send them soon.
    pub fn set_scheduler(&self, name: Option<&str>) -> Result<(), Error> {
        let sched =
            match name {
                None => None,
                Some(n) => Some(tcpls_proto::session::scheduler::from_name(n).ok_or(
                    Error::Call(tcpls_proto::CallError::Usage("unknown scheduler")),
                )?),
            };
        let coupled = sched.is_some();
        self.with_proto(|p| {
            p.set_scheduler(sched);
            Ok(())
        })?;
        self.shared().update_notsent_lowat(coupled);
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

    /// Key generations in use: this side's sending key and the newest of
    /// the peer's (each key update adds one; `None` in plain TLS).
    pub fn key_generations(&self) -> Option<(u32, u32)> {
        self.shared().lock().proto.key_generations()
    }

    /// Join tokens available (client).
    pub fn available_tokens(&self) -> usize {
        self.shared().lock().proto.available_tokens()
    }

    pub(crate) fn with_proto<T>(
        &self,
        f: impl FnOnce(&mut tcpls_proto::Session) -> Result<T, tcpls_proto::CallError>,
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
            crate::shared::wait_on(&mut inner.event_waiters, cx.waker());
            Poll::Pending
        })
        .await
    }
}
