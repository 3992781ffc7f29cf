//! The TCPLS session state machine (sans-IO).
//!
//! A [`Session`] takes bytes and time in ([`Session::recv`],
//! [`Session::handle_eof`], [`Session::handle_timeout`]) and gives bytes,
//! events and deadlines out ([`Session::poll_transmit`],
//! [`Session::poll_event`], [`Session::poll_timeout`]). It never touches a
//! socket or reads a clock, so every behaviour can be tested with two
//! in-memory peers.
//!
//! The session is a composition of owned sub-states, each in its own file
//! with the part of the API that concerns it:
//!
//! | file | holds |
//! |---|---|
//! | `streams.rs` | the stream table, send rotation, flow-control credits, the stream API |
//! | `paths.rs` | connections, the primary, addresses, steering, migration, the coupled scheduler |
//! | `join.rs` | join tokens, joining (client) and accepting joins (server) |
//! | `recovery.rs` | ACKs, unacknowledged records, replay, keepalive probes: the home of failover |
//! | `pending.rs` | control frames waiting to be sent |
//! | `timers.rs` | the timer tables, `poll_timeout` and `handle_timeout` |
//! | `close.rs` | closing and failing the session |
//! | `recv.rs` | the input path: handshake, records, frames |
//! | `transmit.rs` | the output path: `poll_transmit`, building and sealing records |
//! | `record_builder.rs` | one record's plaintext while it is assembled |
//! | `early.rs` | early data (0-RTT), both sides |
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//! use bytes::BytesMut;
//! use tcpls_proto::{ClientConfig, ConnectionId, ServerConfig, Session, ReadOutcome};
//! const C0: ConnectionId = ConnectionId::FIRST;
//!
//! let server_cfg = Arc::new(ServerConfig::builder().self_signed(&["localhost"])?.build()?);
//! let client_cfg = Arc::new(ClientConfig::builder().insecure().build()?);
//! let now = Instant::now();
//! let mut c = Session::connect(client_cfg, "localhost", now)?;
//! let mut s = Session::accept(server_cfg, now)?;
//! // Shuttle bytes until both sides are established.
//! let mut wire = Vec::new();
//! for _ in 0..4 {
//!     wire.clear();
//!     c.poll_transmit(C0, &mut wire, usize::MAX)?;
//!     s.recv(C0, &mut BytesMut::from(&wire[..]), now)?;
//!     wire.clear();
//!     s.poll_transmit(C0, &mut wire, usize::MAX)?;
//!     c.recv(C0, &mut BytesMut::from(&wire[..]), now)?;
//! }
//! assert!(c.is_tcpls() && s.is_tcpls());
//! let id = c.open_stream()?;
//! c.write(id, b"hi")?;
//! wire.clear();
//! c.poll_transmit(C0, &mut wire, usize::MAX)?;
//! s.recv(C0, &mut BytesMut::from(&wire[..]), now)?;
//! let sid = s.accept_stream().unwrap();
//! assert!(matches!(s.read(sid, 100)?, ReadOutcome::Data(d) if &d[..] == b"hi"));
//! # Ok::<(), tcpls_proto::CallError>(())
//! ```

pub mod assembler;
mod close;
mod connection;
mod early;
mod fallback;
pub mod flow;
mod join;
pub(crate) mod keys;
pub mod options;
mod paths;
mod pending;
mod record_builder;
mod recovery;
mod recv;
pub mod scheduler;
mod send_buffer;
mod stream;
mod streams;
#[cfg(feature = "testing")]
mod testing;
mod timers;
mod transmit;
mod transmit_buf;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::config::{ClientConfig, ServerConfig, TransportConfig};
use crate::error::Error;
use crate::handshake::{Handshake, HandshakeInfo, TicketReader};
use crate::ids::{ConnectionId, Side, StreamId};
use crate::record::CipherSuite;
use crate::wire::frame::TOKEN_LEN;
use crate::wire::TransportParams;
use close::Closing;
pub use connection::ConnectionState;
pub use early::EarlyData;
use fallback::Fallback;
use keys::{RecvKeys, SendKeys};
use paths::Paths;
use pending::Pending;
use record_builder::Scratch;
use recovery::Recovery;
use streams::Streams;
use timers::{SessionTimer, TimerTable};
pub use transmit_buf::TransmitBuf;

/// Something the application may want to react to.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// The handshake finished; `tcpls` is false for a plain TLS peer.
    Connected {
        /// Whether the peer speaks TCPLS.
        tcpls: bool,
    },
    /// The peer opened a stream (see [`Session::accept_stream`]).
    StreamOpened(StreamId),
    /// Data, FIN or a reset can be read on the stream.
    StreamReadable(StreamId),
    /// The stream's send buffer has room again.
    StreamWritable(StreamId),
    /// The peer raised the stream limit: [`Session::open_stream`] may succeed.
    StreamsAvailable,
    /// The peer sent join tokens: [`Session::join`] can add a connection.
    TokensAvailable,
    /// Server: a token was issued; the endpoint must route joins carrying
    /// it to this session.
    TokenIssued([u8; TOKEN_LEN]),
    /// Server: a token was used or the session ended; forget it.
    TokenRetired([u8; TOKEN_LEN]),
    /// A connection joined the session and carries records.
    ConnectionAdded(ConnectionId),
    /// A connection left the session (FIN, reset, or retired).
    ConnectionClosed(ConnectionId),
    /// A connection failed (reset, timeout, unacknowledged probe); its
    /// unacknowledged data is replayed on the others.
    ConnectionFailed(ConnectionId),
    /// No connection is left, but the session waits (until the rejoin
    /// grace period ends) for the client to join a new one.
    Disconnected,
    /// The peer advertised (`added`) or withdrew an address.
    PeerAddress {
        /// The address.
        addr: SocketAddr,
        /// True for NEW_ADDRESS, false for REMOVE_ADDRESS.
        added: bool,
    },
    /// The session ended.
    Closed(Error),
    /// The peer asks that `option` be applied on connection `conn` (`None`:
    /// all of them, later ones too). Already checked against local policy
    /// (user timeout clamped, congestion controller allowed); the runtime
    /// applies it and answers with [`Session::answer_peer_option`].
    PeerOption {
        /// The request's id, for the answer.
        request: u32,
        /// The connection, or all.
        conn: Option<ConnectionId>,
        /// What to apply.
        option: options::PeerOption,
    },
    /// The core refused the peer's request by itself (local policy: a
    /// congestion controller not allowed; or a malformed or excess
    /// request, `option` `None`); the peer was told why.
    PeerOptionRefused {
        /// The connection it named, or all.
        conn: Option<ConnectionId>,
        /// What was asked, if it could be decoded.
        option: Option<options::PeerOption>,
        /// Why not.
        reason: String,
    },
    /// The peer answered our [`Session::set_peer_option`] request.
    PeerOptionAnswered {
        /// The request's id.
        request: u32,
        /// The connection it named, or all.
        conn: Option<ConnectionId>,
        /// What was asked.
        option: options::PeerOption,
        /// Applied, or why not.
        answer: options::OptionAnswer,
    },
}

/// Result of [`Session::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadOutcome {
    /// In-order bytes (a slice of the decrypted record, not a copy).
    Data(Bytes),
    /// The peer finished the stream and everything was read.
    Fin,
    /// The peer reset the stream with this application code.
    Reset(u32),
    /// Nothing to read yet.
    Blocked,
}

/// How the TLS handshake went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeKind {
    /// Certificates and signatures: no ticket, or the server refused it.
    Full,
    /// Resumed from a session ticket.
    Resumed,
}

impl HandshakeKind {
    /// `full` or `resumed`, as in JSON reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Resumed => "resumed",
        }
    }
}

/// Which record layer the session runs.
enum State {
    Handshake(Box<Handshake>),
    Tcpls(Box<Keys>),
    Fallback(Box<Fallback>),
    /// Nothing more will be sent or received.
    Done,
}

struct Keys {
    send: SendKeys,
    recv: RecvKeys,
}

/// A TCPLS session (or a plain TLS session after fallback).
pub struct Session {
    side: Side,
    cfg: TransportConfig,
    state: State,
    streams: Streams,
    paths: Paths,
    recovery: Recovery,
    pending: Pending,
    timers: TimerTable<SessionTimer>,
    close: Closing,
    events: VecDeque<Event>,
    /// Raw bytes to send before any record (handshake flight, alerts).
    raw_out: Vec<u8>,
    /// Latest time the caller gave us.
    now: Instant,
    peer_params: Option<TransportParams>,
    suite: Option<CipherSuite>,
    /// Buffers reused by every record built.
    scratch: Scratch,
    /// Transport option requests, both ways.
    options: options::Options,
    /// How the handshake went, once it is over.
    handshake_kind: Option<HandshakeKind>,
    /// Client: hands the server's tickets to OpenSSL (`recv.rs`
    /// `read_tickets` says until when).
    tickets: Option<TicketReader>,
    /// OpenSSL's state once the handshake is over, until the runtime takes
    /// it ([`Self::take_retired_tls`]).
    retired_tls: Option<crate::handshake::RetiredTls>,
    /// ALPN, the peer's certificates, the server name.
    handshake_info: Option<Box<HandshakeInfo>>,
    /// Early data (0-RTT), both sides.
    early: early::Early,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("side", &self.side)
            .field("tcpls", &self.is_tcpls())
            .field("streams", &self.streams.map.len())
            .field("error", &self.close.error)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Starts a client session; the ClientHello is ready in
    /// [`Self::poll_transmit`].
    pub fn connect(
        config: Arc<ClientConfig>,
        server_name: &str,
        now: Instant,
    ) -> Result<Self, Error> {
        Self::connect_to(config, server_name, None, now)
    }

    /// [`Self::connect`] to `server_name`'s service on `port`: its tickets
    /// are kept apart from other ports' (the runtime passes the port).
    pub fn connect_to(
        config: Arc<ClientConfig>,
        server_name: &str,
        port: Option<u16>,
        now: Instant,
    ) -> Result<Self, Error> {
        let mut hs = Handshake::client(&config, server_name, port, false)?;
        hs.drive()?;
        let state = State::Handshake(Box::new(hs));
        Ok(Self::new(
            Side::Client,
            config.transport.clone(),
            state,
            now,
        ))
    }

    /// Starts a server session waiting for a ClientHello.
    pub fn accept(config: Arc<ServerConfig>, now: Instant) -> Result<Self, Error> {
        let hs = Handshake::server(&config)?;
        let state = State::Handshake(Box::new(hs));
        Ok(Self::new(
            Side::Server,
            config.transport.clone(),
            state,
            now,
        ))
    }

    /// A session in `state`, normally a handshake about to start (tests
    /// also start one already established, see `testing.rs`).
    fn new(side: Side, cfg: TransportConfig, state: State, now: Instant) -> Self {
        let mut timers = TimerTable::default();
        timers.set(SessionTimer::Handshake, now + cfg.handshake_timeout);
        if let Some(d) = cfg.idle_timeout {
            timers.set(SessionTimer::Idle, now + d);
        }
        Self {
            side,
            state,
            streams: Streams::new(&cfg),
            paths: Paths::new(cfg.scheduler.as_deref().and_then(scheduler::from_name)),
            recovery: Recovery::default(),
            pending: Pending::default(),
            timers,
            close: Closing::default(),
            events: VecDeque::new(),
            raw_out: Vec::new(),
            now,
            peer_params: None,
            suite: None,
            scratch: Scratch::default(),
            options: Default::default(),
            handshake_kind: None,
            tickets: None,
            retired_tls: None,
            handshake_info: None,
            early: early::Early::default(),
            cfg,
        }
    }

    /// Which end this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// True while the TLS handshake runs.
    pub fn is_handshaking(&self) -> bool {
        matches!(self.state, State::Handshake(_))
    }

    /// True once both sides agreed on TCPLS.
    pub fn is_tcpls(&self) -> bool {
        matches!(self.state, State::Tcpls(_))
            || (matches!(self.state, State::Done) && self.peer_params.is_some())
    }

    fn is_fallback(&self) -> bool {
        matches!(self.state, State::Fallback(_))
    }

    /// The peer's transport parameters (TCPLS only).
    pub fn peer_params(&self) -> Option<&TransportParams> {
        self.peer_params.as_ref()
    }

    /// The TCP User Timeout to apply to this session's sockets: the larger
    /// of the two sides' requests (either one if only one asked), the
    /// peer's clamped to `max_peer_user_timeout`.
    pub fn user_timeout(&self) -> Option<std::time::Duration> {
        let ours = self.cfg.requested_user_timeout();
        let theirs = self
            .peer_params
            .map(|p| p.user_timeout_ms)
            .filter(|ms| *ms > 0)
            .map(|ms| {
                std::time::Duration::from_millis(ms as u64).min(self.cfg.max_peer_user_timeout)
            });
        match (ours, theirs) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Key generations in use: this side's sending key and the newest of
    /// the peer's. Both start at 0 and grow by one per key update (every
    /// `key_update_records` records). In plain TLS only this side's
    /// KeyUpdates are counted (OpenSSL answers the peer's by itself).
    pub fn key_generations(&self) -> Option<(u32, u32)> {
        match &self.state {
            State::Tcpls(keys) => Some((keys.send.current.gen, keys.recv.newest_gen())),
            State::Fallback(fb) => Some((fb.key_updates, 0)),
            _ => None,
        }
    }

    /// The limits and timers this session runs with.
    pub fn transport_config(&self) -> &TransportConfig {
        &self.cfg
    }

    /// The ALPN protocol the server chose, once the handshake is done.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.handshake_info.as_ref()?.alpn.as_deref()
    }

    /// The key exchange group the handshake used (e.g. `X25519MLKEM768`),
    /// once it is done; `None` for a resumption without key exchange (see
    /// `resume_without_key_exchange` on the configuration builders).
    pub fn key_exchange(&self) -> Option<&str> {
        self.handshake_info.as_ref()?.key_exchange.as_deref()
    }

    /// The peer's certificate chain as it sent it, leaf first (DER): the
    /// server's, or a client's under mutual TLS. Empty for a resumed
    /// handshake's server side when the ticket holds no client chain, and
    /// for a client that presented none.
    pub fn peer_certificates_der(&self) -> &[Vec<u8>] {
        self.handshake_info
            .as_ref()
            .map_or(&[][..], |i| &i.peer_certificates[..])
    }

    /// The peer's own certificate (DER), if it presented one.
    pub fn peer_certificate_der(&self) -> Option<&[u8]> {
        self.peer_certificates_der().first().map(Vec::as_slice)
    }

    /// The server name the client asked for (SNI): on a server, which
    /// name it was reached as; on a client, what it sent.
    pub fn server_name(&self) -> Option<&str> {
        self.handshake_info.as_ref()?.server_name.as_deref()
    }

    /// OpenSSL's state, once the handshake is over and nothing more needs
    /// it: dropping it frees it. The session would free it itself, with
    /// the session; taking it lets the caller free it where it costs the
    /// peer nothing (after the first response is sent), rather than in the
    /// `recv` call that finished the handshake.
    pub fn take_retired_tls(&mut self) -> Option<crate::RetiredTls> {
        self.retired_tls.take()
    }

    /// Whether the handshake was full or resumed, once it is done.
    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.handshake_kind
    }

    /// The negotiated TLS 1.3 cipher suite, once the handshake is done.
    pub fn cipher_suite(&self) -> Option<CipherSuite> {
        self.suite
    }

    /// Whether the session can take more input now. False in plain TLS mode
    /// while the application has not read what is buffered: the caller should
    /// stop reading the socket until the application reads.
    pub fn wants_input(&self) -> bool {
        match &self.state {
            State::Fallback(_) => self
                .streams
                .map
                .get(&StreamId(0))
                .is_none_or(|s| s.recv.has_room(self.cfg.stream_window)),
            State::Done => false,
            _ => true,
        }
    }

    /// Takes the next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}
