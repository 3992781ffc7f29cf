//! The TCPLS session state machine (sans-IO).
//!
//! A [`Session`] takes bytes and time in ([`Session::recv`],
//! [`Session::handle_eof`], [`Session::handle_timeout`]) and gives bytes,
//! events and deadlines out ([`Session::poll_transmit`],
//! [`Session::poll_event`], [`Session::poll_timeout`]). It never touches a
//! socket or reads a clock, so every behaviour can be tested with two
//! in-memory peers.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//! use bytes::BytesMut;
//! use tcpls_proto::{ClientConfig, ServerConfig, Session, ReadOutcome};
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
//!     c.poll_transmit(0, &mut wire, usize::MAX)?;
//!     s.recv(0, &mut BytesMut::from(&wire[..]), now)?;
//!     wire.clear();
//!     s.poll_transmit(0, &mut wire, usize::MAX)?;
//!     c.recv(0, &mut BytesMut::from(&wire[..]), now)?;
//! }
//! assert!(c.is_tcpls() && s.is_tcpls());
//! let id = c.open_stream()?;
//! c.write(id, b"hi")?;
//! wire.clear();
//! c.poll_transmit(0, &mut wire, usize::MAX)?;
//! s.recv(0, &mut BytesMut::from(&wire[..]), now)?;
//! let sid = s.accept_stream().unwrap();
//! assert!(matches!(s.read(sid, 100)?, ReadOutcome::Data(d) if &d[..] == b"hi"));
//! # Ok::<(), tcpls_proto::Error>(())
//! ```

pub mod assembler;
mod connection;
mod fallback;
pub mod flow;
pub mod scheduler;
mod send_buffer;
use send_buffer::{BlockPool, SendBuffer};
mod stream;
mod transmit_buf;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::config::{ClientConfig, ServerConfig, TransportConfig};
use crate::error::{Error, ErrorCode};
use crate::handshake::{Handshake, Outcome};
use crate::ids::{ConnectionId, Side, StreamId};
use crate::record::{CipherSuite, RecordKey};
use crate::wire::frame::{
    stream_header, Frame, FrameIter, ACK_FRAME_LEN, STREAM_HEADER_LEN, TOKEN_LEN,
};
use crate::wire::join::encode_join_hello;
use crate::wire::record::{ContentType, RecordHeader, HEADER_LEN, MAX_PLAINTEXT, TAG_LEN};
use crate::wire::TransportParams;
pub use connection::ConnectionState;
use connection::{Connection, Connections, Sent, Tokens};
use fallback::{Fallback, FallbackRead};
use flow::{RecvCredit, SendCredit};
use scheduler::{PathInfo, Scheduler};
use stream::Stream;
pub use transmit_buf::TransmitBuf;

/// Something the application may want to react to.
#[derive(Clone, Debug)]
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
}

/// Longest a graceful close waits for its data to be sent and
/// acknowledged before closing anyway.
const GRACEFUL_CLOSE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// STREAM payloads below this size are copied rather than sliced.
const SMALL_FRAME: usize = 4096;

/// Most peer addresses kept (NEW_ADDRESS beyond it closes the session).
const MAX_PEER_ADDRESSES: usize = 16;

/// Largest NEW_ADDRESS / REMOVE_ADDRESS frame (IPv6).
const ADDRESS_FRAME_MAX: usize = 20;

/// Result of [`Session::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
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

enum State {
    Handshake(Box<Handshake>),
    Tcpls(Box<Keys>),
    Fallback(Box<Fallback>),
    /// Nothing more will be sent or received.
    Done,
}

struct Keys {
    send: RecordKey,
    recv: RecordKey,
}

/// Puts stream bytes into the record being built in `out` (content from
/// `body`). The first piece is not copied: `out` gets room for it and the
/// seal encrypts it straight from the send buffer (`lead`), reading the
/// bulk of the bytes once instead of copying them and encrypting the
/// copy. A second piece in the same record (bytes straddling two send
/// blocks, or another stream) is copied, and the first then too, so the
/// plaintext after the lead stays a few header bytes.
fn put_data(out: &mut TransmitBuf, body: usize, lead: &mut Option<Bytes>, data: Bytes) {
    if data.is_empty() {
        return;
    }
    if out.len() == body && lead.is_none() {
        out.grow(data.len());
        *lead = Some(data);
    } else {
        if let Some(l) = lead.take() {
            out[body..body + l.len()].copy_from_slice(&l);
        }
        out.extend_from_slice(&data);
    }
}

/// Appends `frame` to `out` (encoded in `tmp` first: frames encode into
/// a `Vec`).
fn put_frame(out: &mut TransmitBuf, frame: Frame<'_>, tmp: &mut Vec<u8>) {
    tmp.clear();
    frame.encode(tmp);
    out.extend_from_slice(tmp);
}

/// Appends an ACK (up to the last record received) for every connection
/// `wanted` selects, while `ctl` stays within `limit` bytes, and clears
/// their pending-acknowledgement state.
fn encode_acks(
    conns: &mut Connections,
    ctl: &mut Vec<u8>,
    limit: usize,
    wanted: impl Fn(&Connection) -> bool,
) {
    for (id, c) in conns.iter_mut() {
        if ctl.len() + ACK_FRAME_LEN > limit {
            break;
        }
        if wanted(c) && c.recv_seq > 0 {
            c.ack_due = false;
            c.ack_deadline = None;
            c.ack_records = 0;
            c.ack_bytes = 0;
            Frame::Ack {
                conn: *id,
                seq: c.recv_seq - 1,
            }
            .encode(ctl);
        }
    }
}

/// Bytes a stream may send in consecutive records before the next stream
/// with data gets its turn (round-robin in bursts rather than per record).
const STREAM_BURST: usize = 256 << 10;

/// A TCPLS session (or a plain TLS session after fallback).
pub struct Session {
    side: Side,
    cfg: TransportConfig,
    state: State,
    conns: Connections,
    /// Connection for new streams, control frames and the handshake.
    primary: ConnectionId,
    /// Connections allowed in this session (both sides' minimum).
    max_connections: u32,
    tokens: Tokens,
    /// Streams whose connection changed: STREAM_CHANGE frames to send.
    stream_changes: VecDeque<StreamId>,
    /// Connections this side stopped using: CONNECTION_RESET frames to send.
    conn_resets: VecDeque<ConnectionId>,
    /// Address advertisements to send (address, true = NEW, false = REMOVE).
    address_updates: VecDeque<(SocketAddr, bool)>,
    /// Addresses of this side advertised and not withdrawn: announced again
    /// after a connection failure, which may have lost their NEW_ADDRESS.
    local_addresses: Vec<SocketAddr>,
    /// Addresses the peer advertised.
    peer_addresses: Vec<SocketAddr>,
    /// Both sides acknowledge records and replay after failures.
    acks: bool,
    /// Sent data of failed connections, to send again first.
    replay: VecDeque<Sent>,
    /// With failover and no connection left: when the session gives up.
    rejoin_deadline: Option<Instant>,
    /// Connections that failed recently (CONNECTION_RESET is re-sent for
    /// them after every failure, in case the first one was lost too).
    failed_conns: VecDeque<ConnectionId>,
    /// Latest time the caller gave us.
    now: Instant,
    /// Coupled sending: when set, every stream's data may go on any
    /// connection this scheduler allows (instead of the stream's own).
    scheduler: Option<Box<dyn Scheduler>>,
    paths_scratch: Vec<PathInfo>,
    /// Highest number of received-but-unread bytes held at once (the
    /// reassembly memory the flow-control window allowed).
    peak_buffered: u64,
    peer_params: Option<TransportParams>,
    suite: Option<CipherSuite>,
    streams: HashMap<StreamId, Stream>,
    /// Streams with something to send, in round-robin order.
    send_queue: VecDeque<StreamId>,
    /// Bytes the stream at the front of `send_queue` sent in its turn.
    burst: usize,
    /// Send blocks for reuse by every stream.
    block_pool: BlockPool,
    /// Streams with a MAX_STREAM_DATA to send.
    max_stream_data_queue: VecDeque<StreamId>,
    accept_queue: VecDeque<StreamId>,
    next_local: u32,
    local_limit: u32,
    next_peer: u32,
    peer_limit: u32,
    max_streams_pending: bool,
    send_credit: SendCredit,
    recv_credit: RecvCredit,
    max_data_pending: bool,
    events: VecDeque<Event>,
    /// Raw bytes to send before any record (handshake flight).
    raw_out: Vec<u8>,
    /// Why the session ended, once it has.
    error: Option<Error>,
    /// A CLOSE frame (code, reason) still to send.
    close_frame: Option<(u32, Vec<u8>)>,
    /// Send the CLOSE only after stream data already queued.
    graceful_close: bool,
    graceful_deadline: Option<Instant>,
    handshake_deadline: Option<Instant>,
    idle_deadline: Option<Instant>,
    scratch: Vec<u8>,
    /// A record's plaintext after its lead bytes, while it is sealed.
    trailer_scratch: Vec<u8>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("side", &self.side)
            .field("tcpls", &self.is_tcpls())
            .field("streams", &self.streams.len())
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// True if a handshake record holds only whole NewSessionTicket messages.
fn only_session_tickets(mut msgs: &[u8]) -> bool {
    while !msgs.is_empty() {
        if msgs.len() < 4 || msgs[0] != 4 {
            return false;
        }
        let len = u32::from_be_bytes([0, msgs[1], msgs[2], msgs[3]]) as usize;
        let Some(rest) = msgs.get(4 + len..) else {
            return false;
        };
        msgs = rest;
    }
    true
}

impl Session {
    /// Starts a client session; the ClientHello is ready in
    /// [`Self::poll_transmit`].
    pub fn connect(
        config: Arc<ClientConfig>,
        server_name: &str,
        now: Instant,
    ) -> Result<Self, Error> {
        let mut hs = Handshake::client(&config, server_name)?;
        hs.drive()?;
        Ok(Self::new(Side::Client, config.transport.clone(), hs, now))
    }

    /// Starts a server session waiting for a ClientHello.
    pub fn accept(config: Arc<ServerConfig>, now: Instant) -> Result<Self, Error> {
        let hs = Handshake::server(&config)?;
        Ok(Self::new(Side::Server, config.transport.clone(), hs, now))
    }

    fn new(side: Side, cfg: TransportConfig, hs: Handshake, now: Instant) -> Self {
        Self {
            side,
            state: State::Handshake(Box::new(hs)),
            conns: [(0, Connection::new(ConnectionState::Active))].into(),
            primary: 0,
            max_connections: 1,
            tokens: Tokens::default(),
            stream_changes: VecDeque::new(),
            conn_resets: VecDeque::new(),
            address_updates: VecDeque::new(),
            local_addresses: Vec::new(),
            peer_addresses: Vec::new(),
            acks: false,
            replay: VecDeque::new(),
            rejoin_deadline: None,
            failed_conns: VecDeque::new(),
            now,
            scheduler: None,
            paths_scratch: Vec::new(),
            peak_buffered: 0,
            peer_params: None,
            suite: None,
            streams: HashMap::new(),
            send_queue: VecDeque::new(),
            burst: 0,
            block_pool: BlockPool::default(),
            max_stream_data_queue: VecDeque::new(),
            accept_queue: VecDeque::new(),
            next_local: 0,
            local_limit: 0,
            next_peer: 0,
            peer_limit: cfg.max_streams,
            max_streams_pending: false,
            send_credit: SendCredit::new(0),
            recv_credit: RecvCredit::new(cfg.session_window),
            max_data_pending: false,
            events: VecDeque::new(),
            raw_out: Vec::new(),
            error: None,
            close_frame: None,
            graceful_close: false,
            graceful_deadline: None,
            handshake_deadline: Some(now + cfg.handshake_timeout),
            idle_deadline: cfg.idle_timeout.map(|d| now + d),
            scratch: Vec::new(),
            trailer_scratch: Vec::new(),
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

    /// The peer's transport parameters (TCPLS only).
    pub fn peer_params(&self) -> Option<&TransportParams> {
        self.peer_params.as_ref()
    }

    /// The TCP User Timeout to apply to this session's sockets: the larger
    /// of the two sides' requests (either one if only one asked).
    pub fn user_timeout(&self) -> Option<std::time::Duration> {
        let ours = self.cfg.user_timeout.filter(|d| !d.is_zero());
        let theirs = self
            .peer_params
            .map(|p| p.user_timeout_ms)
            .filter(|ms| *ms > 0)
            .map(|ms| std::time::Duration::from_millis(ms as u64));
        match (ours, theirs) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// True while some sent stream data waits for acknowledgement.
    pub fn has_unacked(&self) -> bool {
        self.conns.values().any(|c| !c.unacked.is_empty()) || !self.replay.is_empty()
    }

    /// True when failover is on (both sides acknowledge records).
    pub fn failover(&self) -> bool {
        self.acks
    }

    /// The negotiated TLS 1.3 cipher suite, once the handshake is done.
    pub fn cipher_suite(&self) -> Option<CipherSuite> {
        self.suite
    }

    /// Why the session ended, if it has.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// True once the session ended and everything it still had to say
    /// (CLOSE frame, alert, close_notify) was handed to `poll_transmit`.
    pub fn is_drained(&self) -> bool {
        self.error.is_some() && matches!(self.state, State::Done) && self.raw_out.is_empty()
    }

    /// Whether the session can take more input now. False in plain TLS mode
    /// while the application has not read what is buffered: the caller should
    /// stop reading the socket until the application reads.
    pub fn wants_input(&self) -> bool {
        match &self.state {
            State::Fallback(_) => self
                .streams
                .get(&StreamId(0))
                .is_none_or(|s| (s.recv.asm.buffered() as u64) < self.cfg.stream_window),
            State::Done => false,
            _ => true,
        }
    }

    /// Takes the next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Earliest time at which [`Self::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.error.is_some() {
            return self.graceful_deadline.filter(|_| self.graceful_close);
        }
        let mut t = [
            self.handshake_deadline,
            self.idle_deadline,
            self.rejoin_deadline,
        ]
        .into_iter()
        .flatten()
        .min();
        let mut at = |d: Option<Instant>| {
            if let Some(d) = d {
                t = Some(t.map_or(d, |x| x.min(d)));
            }
        };
        for c in self.conns.values() {
            if c.state == ConnectionState::PendingAuth {
                at(c.last_recv.map(|l| l + self.cfg.handshake_timeout));
            }
            if !c.can_send() {
                continue;
            }
            at(c.ack_deadline);
            at(c.probe.map(|(_, sent)| sent + self.cfg.probe_timeout));
            if c.probe.is_none() && !c.ping_due {
                at(self.cfg.keepalive.zip(c.last_recv).map(|(k, l)| l + k));
            }
        }
        t
    }

    /// Fires expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.error.is_some() {
            if self.graceful_close && self.graceful_deadline.is_some_and(|d| now >= d) {
                // Waited long enough: close now.
                self.graceful_close = false;
                if !self.conns.values().any(|c| c.can_send()) {
                    self.state = State::Done;
                }
            }
            return;
        }
        let expired: Vec<ConnectionId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.state == ConnectionState::PendingAuth
                    && c.last_recv
                        .is_some_and(|l| now >= l + self.cfg.handshake_timeout)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.abandon_join(id);
        }
        if self.handshake_deadline.is_some_and(|d| now >= d) {
            self.fail(Error::HandshakeTimeout);
            return;
        } else if self.idle_deadline.is_some_and(|d| now >= d) {
            self.fail(Error::IdleTimeout);
            return;
        } else if self.rejoin_deadline.is_some_and(|d| now >= d) {
            self.fail(Error::ConnectionLost(
                "no connection rejoined in time".into(),
            ));
            // No connection to send a CLOSE on.
            self.close_frame = None;
            self.state = State::Done;
            return;
        }
        let mut failed = Vec::new();
        for (id, c) in self.conns.iter_mut().filter(|(_, c)| c.can_send()) {
            if c.ack_deadline.is_some_and(|d| now >= d) {
                c.ack_deadline = None;
                c.ack_due = true;
            }
            match c.probe {
                Some((_, sent)) if now >= sent + self.cfg.probe_timeout => failed.push(*id),
                None => {
                    if let (Some(k), Some(l)) = (self.cfg.keepalive, c.last_recv) {
                        if now >= l + k && !c.ping_due {
                            c.ping_due = true;
                        }
                    }
                }
                _ => {}
            }
        }
        for id in failed {
            self.connection_failed(id, "keepalive probe not acknowledged");
        }
    }

    // ---------------------------------------------------------------- input

    /// Processes bytes that arrived on connection `conn`. Whole records are
    /// split off the front of `buf` and decrypted in place; a partial record
    /// stays in `buf` for the next call. An error means the session ended
    /// (a CLOSE frame is then waiting in `poll_transmit`).
    pub fn recv(
        &mut self,
        conn: ConnectionId,
        buf: &mut BytesMut,
        now: Instant,
    ) -> Result<(), Error> {
        let Some(c) = self.conns.get(&conn) else {
            return Err(Error::Usage("unknown connection id"));
        };
        if c.state == ConnectionState::PendingAuth {
            return self.recv_join(conn, buf);
        }
        if c.state == ConnectionState::Closed || (self.error.is_some() && !self.graceful_close) {
            // After a failure or an immediate close, input is ignored.
            buf.clear();
            return Ok(());
        }
        if let Some(d) = self.cfg.idle_timeout {
            self.idle_deadline = Some(now + d);
        }
        self.now = now;
        let r = self.recv_inner(conn, buf);
        if let Err(e) = &r {
            self.fail(e.clone());
        }
        r
    }

    fn recv_inner(&mut self, conn: ConnectionId, buf: &mut BytesMut) -> Result<(), Error> {
        match &mut self.state {
            State::Handshake(hs) => {
                hs.feed(buf);
                buf.clear();
                let done = hs.drive();
                hs.take_output(&mut self.raw_out);
                if done? {
                    self.on_handshake_done(buf)?;
                }
                Ok(())
            }
            State::Tcpls(_) => self.recv_records(conn, buf),
            State::Fallback(_) => self.recv_fallback(buf),
            State::Done => {
                buf.clear();
                Ok(())
            }
        }
    }

    /// Handles the TCP connection's end of stream (the peer's FIN).
    pub fn handle_eof(&mut self, conn: ConnectionId, now: Instant) {
        self.now = now;
        if self.is_pending(conn) {
            self.abandon_join(conn);
            return;
        }
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        // During a graceful close connections still fail over, so the data
        // being flushed is not stuck behind a dead one.
        if self.error.is_some() && !self.graceful_close {
            return;
        }
        if c.state == ConnectionState::Draining && self.other_connections(conn) {
            // A retired connection ended: expected.
            self.drop_connection(conn);
            return;
        }
        if self.can_fail_over(conn) {
            // An unexpected FIN is a failure like a reset.
            self.connection_failed(conn, "unexpected FIN");
            return;
        }
        match &self.state {
            State::Fallback(fb) if fb.eof => {
                // close_notify came first: a clean end of the TLS stream.
                self.fail(Error::PeerClosed {
                    code: ErrorCode::NO_ERROR,
                    reason: "TLS connection closed".into(),
                });
            }
            State::Handshake(_) => self.fail(Error::Handshake(
                "connection closed during handshake".into(),
            )),
            _ => self.fail(Error::Protocol("TCP connection closed without CLOSE")),
        }
    }

    /// Handles a failed TCP connection (reset, I/O error).
    pub fn handle_connection_error(&mut self, conn: ConnectionId, reason: String, now: Instant) {
        self.now = now;
        if self.is_pending(conn) {
            self.abandon_join(conn);
            return;
        }
        if !self.conns.contains_key(&conn) || (self.error.is_some() && !self.graceful_close) {
            return;
        }
        if self.can_fail_over(conn) {
            self.connection_failed(conn, &reason);
            return;
        }
        {
            self.fail(Error::ConnectionLost(reason));
            // Nothing can be sent on a broken connection.
            self.close_frame = None;
            self.state = State::Done;
            self.raw_out.clear();
        }
    }

    fn on_handshake_done(&mut self, buf: &mut BytesMut) -> Result<(), Error> {
        let State::Handshake(hs) = std::mem::replace(&mut self.state, State::Done) else {
            unreachable!("called in handshake state");
        };
        self.handshake_deadline = None;
        match hs.finish()? {
            Outcome::Tcpls {
                peer,
                send,
                recv,
                leftover,
            } => {
                tracing::debug!(side = ?self.side, suite = ?send.suite(), "TCPLS session established");
                self.peer_params = Some(peer.params);
                self.suite = Some(send.suite());
                self.acks = self.cfg.failover && peer.params.failover;
                self.send_credit = SendCredit::new(peer.params.initial_max_data);
                self.local_limit = peer.params.max_streams;
                self.state = State::Tcpls(Box::new(Keys { send, recv }));
                self.events.push_back(Event::Connected { tcpls: true });
                buf.extend_from_slice(&leftover);
                self.max_connections = self
                    .cfg
                    .max_connections
                    .min(peer.params.max_connections)
                    .max(1);
                if self.side == Side::Server {
                    self.tokens.next_seq = 1;
                    self.replenish_tokens();
                }
                self.recv_records(0, buf)
            }
            Outcome::Fallback(ssl) => {
                tracing::debug!(side = ?self.side, "peer is plain TLS: fallback");
                self.suite = ssl
                    .ssl()
                    .current_cipher()
                    .and_then(|c| c.standard_name())
                    .and_then(CipherSuite::from_name);
                self.state = State::Fallback(Box::new(Fallback::new(ssl)));
                self.send_credit = SendCredit::new(u64::MAX);
                // The TLS byte stream is stream 0, opened by the client.
                let mut s = Stream::new(u64::MAX, self.cfg.stream_window, 0);
                s.recv.credit = RecvCredit::new(u64::MAX);
                self.streams.insert(StreamId(0), s);
                self.events.push_back(Event::Connected { tcpls: false });
                match self.side {
                    Side::Client => self.local_limit = 1,
                    Side::Server => {
                        self.next_peer = 1;
                        self.accept_queue.push_back(StreamId(0));
                        self.events.push_back(Event::StreamOpened(StreamId(0)));
                    }
                }
                self.recv_fallback(buf)
            }
        }
    }

    fn recv_fallback(&mut self, buf: &mut BytesMut) -> Result<(), Error> {
        let State::Fallback(fb) = &mut self.state else {
            return Ok(());
        };
        let Some(s) = self.streams.get_mut(&StreamId(0)) else {
            buf.clear();
            return Ok(());
        };
        let mut readable = false;
        loop {
            if s.recv.asm.buffered() as u64 >= self.cfg.stream_window {
                break;
            }
            fb.feed(buf);
            match fb.read()? {
                FallbackRead::Data(d) => {
                    let off = s.recv.asm.contiguous_end();
                    s.recv.asm.insert(off, d);
                    readable = true;
                }
                FallbackRead::Eof => {
                    if s.recv.final_size.is_none() {
                        s.recv.final_size = Some(s.recv.asm.contiguous_end());
                        readable = true;
                    }
                    buf.clear();
                    break;
                }
                FallbackRead::Blocked => break,
            }
        }
        // Key updates and alerts may make OpenSSL write.
        if fb.has_output() {
            fb.take_output(&mut self.raw_out);
        }
        if readable {
            self.events.push_back(Event::StreamReadable(StreamId(0)));
        }
        Ok(())
    }

    fn recv_records(&mut self, conn: ConnectionId, buf: &mut BytesMut) -> Result<(), Error> {
        loop {
            let State::Tcpls(keys) = &self.state else {
                buf.clear();
                return Ok(());
            };
            let hdr = match RecordHeader::parse(buf) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(()),
                Err(_) => return Err(Error::BadRecord("malformed record header")),
            };
            if hdr.content_type != ContentType::ApplicationData {
                return Err(Error::BadRecord("unexpected outer content type"));
            }
            if buf.len() < HEADER_LEN + hdr.len {
                // Wait for the rest. The caller keeps room for it: growing
                // `buf` here would copy the partial record to a new
                // allocation whenever earlier records are still referenced.
                return Ok(());
            }
            let Some(c) = self.conns.get_mut(&conn) else {
                return Ok(());
            };
            if c.recv_seq >= keys.recv.suite().record_limit() {
                return Err(Error::KeyLimit);
            }
            let mut rec = buf.split_to(HEADER_LEN + hdr.len);
            let (ct, len) = keys.recv.open(conn, c.recv_seq, &mut rec)?;
            c.recv_seq += 1;
            c.last_recv = Some(self.now);
            let plain = rec.freeze().slice(HEADER_LEN..HEADER_LEN + len);
            match ct {
                ContentType::ApplicationData => {
                    if self.on_frames(&plain)? && self.acks {
                        self.schedule_ack(conn, len);
                    }
                }
                ContentType::Alert => {
                    if plain.len() == 2 && plain[1] == 0 {
                        return Err(Error::PeerClosed {
                            code: ErrorCode::NO_ERROR,
                            reason: "close_notify".into(),
                        });
                    }
                    return Err(Error::Alert(plain.get(1).copied().unwrap_or(0)));
                }
                // NewSessionTicket (type 4) from a server that sends tickets: no resumption, skip.
                ContentType::Handshake if only_session_tickets(&plain) => {}
                _ => return Err(Error::BadRecord("unexpected inner content type")),
            }
        }
    }

    /// Processes a record's frames; true if the record asks for an ACK
    /// (anything but ACK and PADDING).
    fn on_frames(&mut self, plain: &Bytes) -> Result<bool, Error> {
        let mut eliciting = false;
        for frame in FrameIter::new(plain) {
            let frame = frame?;
            eliciting |= !matches!(frame, Frame::Ack { .. } | Frame::Padding);
            match frame {
                Frame::Padding | Frame::Ping => {}
                Frame::Stream {
                    id,
                    offset,
                    fin,
                    data,
                } => self.on_stream_frame(id, offset, fin, plain.slice_ref(data))?,
                Frame::MaxData(max) => {
                    if self.send_credit.raise(max) {
                        self.requeue_all();
                    }
                }
                Frame::MaxStreamData { id, max } => {
                    self.check_local_exists(id)?;
                    if let Some(s) = self.streams.get_mut(&id) {
                        if s.send.credit.raise(max) {
                            Self::enqueue(&mut self.send_queue, id, s);
                        }
                    }
                }
                Frame::MaxStreams(max) => {
                    if max > self.local_limit {
                        self.local_limit = max;
                        self.events.push_back(Event::StreamsAvailable);
                    }
                }
                Frame::ResetStream {
                    id,
                    code,
                    final_size,
                } => self.on_reset_stream(id, code, final_size)?,
                Frame::Close { code, reason } => {
                    return Err(Error::PeerClosed {
                        code: ErrorCode(code),
                        reason: String::from_utf8_lossy(reason).into_owned(),
                    });
                }
                Frame::NewToken { seq, token } => {
                    if self.side == Side::Server {
                        return Err(Error::Protocol("NEW_TOKEN sent by a client"));
                    }
                    if seq == 0 {
                        return Err(Error::Protocol("NEW_TOKEN for connection 0"));
                    }
                    // Tokens are re-sent after failures: a known or already
                    // used sequence number is a duplicate, not an error.
                    let known = self.conns.contains_key(&seq)
                        || self.tokens.outstanding.contains_key(&seq)
                        || seq <= self.tokens.used_up_to;
                    if !known {
                        // Bounded: the server may not have more outstanding than allowed.
                        if self.tokens.outstanding.len() >= self.max_connections as usize {
                            return Err(Error::Protocol("too many tokens"));
                        }
                        self.tokens.outstanding.insert(seq, token);
                        self.events.push_back(Event::TokensAvailable);
                    }
                }
                Frame::StreamChange { id, conn } => {
                    // A change toward a connection that is not (or no longer)
                    // active here is stale, e.g. it crossed a failure: ignore.
                    if !self.conns.get(&conn).is_some_and(|c| c.can_send()) {
                        continue;
                    }
                    if self.ensure_stream(id)? {
                        if let Some(s) = self.streams.get_mut(&id) {
                            s.conn = conn;
                        }
                    }
                }
                Frame::ConnectionReset { conn } if self.is_pending(conn) => {
                    self.abandon_join(conn);
                }
                Frame::ConnectionReset { conn } => {
                    // The peer stopped sending on `conn` (retired or failed):
                    // stop using it too; what we sent on it and was not
                    // acknowledged goes again elsewhere.
                    if self.other_connections(conn) {
                        let known = self.conns.contains_key(&conn);
                        self.retire_connection(conn, false);
                        self.requeue_unacked(conn);
                        if known {
                            // Frames we sent on it may be lost as well.
                            self.reannounce();
                        }
                    }
                }
                Frame::Ack { conn, seq } => self.on_ack(conn, seq)?,
                Frame::NewAddress(addr) => {
                    if !self.peer_addresses.contains(&addr) {
                        if self.peer_addresses.len() >= MAX_PEER_ADDRESSES {
                            return Err(Error::Protocol("too many advertised addresses"));
                        }
                        self.peer_addresses.push(addr);
                        self.events
                            .push_back(Event::PeerAddress { addr, added: true });
                    }
                }
                Frame::RemoveAddress(addr) => {
                    if let Some(i) = self.peer_addresses.iter().position(|a| *a == addr) {
                        self.peer_addresses.remove(i);
                        self.events
                            .push_back(Event::PeerAddress { addr, added: false });
                    }
                }
                // Transport options: valid on the wire, not acted on yet.
                Frame::TransportOption { .. } => {}
            }
        }
        Ok(eliciting)
    }

    fn schedule_ack(&mut self, conn: ConnectionId, len: usize) {
        let (every, bytes, delay, now) = (
            self.cfg.ack_every_records,
            self.cfg.ack_every_bytes,
            self.cfg.ack_delay,
            self.now,
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            c.ack_records += 1;
            c.ack_bytes += len;
            if c.ack_records >= every || c.ack_bytes >= bytes {
                c.ack_due = true;
            } else if c.ack_deadline.is_none() {
                c.ack_deadline = Some(now + delay);
            }
        }
    }

    fn on_ack(&mut self, conn: ConnectionId, seq: u64) -> Result<(), Error> {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Ok(()); // a connection already gone
        };
        if seq >= c.send_seq {
            return Err(Error::Protocol("ACK for a record never sent"));
        }
        if c.probe.is_some_and(|(p, _)| p <= seq) {
            c.probe = None;
        }
        // An acknowledgement proves the path works, wherever it came.
        c.last_recv = Some(self.now);
        while c.unacked.front().is_some_and(|(s, _)| *s <= seq) {
            if let Some((_, Sent::Stream { data, .. })) = c.unacked.pop_front() {
                c.unacked_bytes = c.unacked_bytes.saturating_sub(data.len() as u64);
            }
        }
        Ok(())
    }

    /// True if losing `conn` leaves the session alive: another connection
    /// is active, or failover lets the client join a new one.
    fn can_fail_over(&self, conn: ConnectionId) -> bool {
        // Without acknowledgements nothing sent on the lost connection can
        // be replayed: losing it unexpectedly must end the session.
        matches!(self.state, State::Tcpls(_))
            && self.acks
            && (self.other_connections(conn) || self.max_connections > 1)
    }

    /// A join that never attached (its first record did not decrypt, or
    /// its connection ended or timed out first): forget it and its token,
    /// and issue a replacement. The session is otherwise untouched.
    fn abandon_join(&mut self, conn: ConnectionId) {
        if let Some(c) = self.conns.remove(&conn) {
            if let Some(token) = c.token {
                self.tokens.outstanding.remove(&conn);
                self.events.push_back(Event::TokenRetired(token));
            }
            if self.side == Side::Server && self.error.is_none() {
                self.replenish_tokens();
            }
        }
    }

    fn is_pending(&self, conn: ConnectionId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.state == ConnectionState::PendingAuth)
    }

    /// A connection died: forget it, replay what it did not deliver, tell
    /// the peer, and wait for a new one if it was the last.
    fn connection_failed(&mut self, conn: ConnectionId, reason: &str) {
        tracing::debug!(side = ?self.side, conn, reason, "connection failed");
        self.retire_connection(conn, false);
        self.requeue_unacked(conn);
        self.conns.remove(&conn);
        self.events.push_back(Event::ConnectionFailed(conn));
        if self.side == Side::Server {
            self.replenish_tokens();
        }
        // Tell the peer (now, or on the connection that replaces this one)
        // so it replays what it sent on `conn` without waiting to notice;
        // `reannounce` below queues the CONNECTION_RESET.
        if self.failed_conns.len() >= 64 {
            self.failed_conns.pop_front();
        }
        self.failed_conns.push_back(conn);
        if !self.conns.values().any(|c| c.can_send()) {
            self.rejoin_deadline = Some(self.now + self.cfg.rejoin_grace);
            self.events.push_back(Event::Disconnected);
        }
        // Credit and stream announcements may have died with it.
        self.reannounce();
    }

    /// Remembers a replayed item as sent in record `seq` of `conn`.
    fn record_sent(&mut self, conn: ConnectionId, seq: u64, sent: Sent) {
        if !self.acks {
            return;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            // Replayed bytes count toward the session's bound on
            // unacknowledged data like new ones (ACKs subtract them).
            if let Sent::Stream { data, .. } = &sent {
                c.unacked_bytes += data.len() as u64;
            }
            c.unacked.push_back((seq, sent));
        }
    }

    /// After a rejoin: the new connection becomes primary and carries every
    /// stream.
    fn adopt_primary(&mut self, conn: ConnectionId) {
        self.primary = conn;
        for s in self.streams.values_mut() {
            s.conn = conn;
        }
        self.requeue_all();
    }

    fn requeue_unacked(&mut self, conn: ConnectionId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.unacked_bytes = 0;
        self.replay
            .extend(c.unacked.drain(..).map(|(_, sent)| sent));
    }

    /// Sends again the state a lost record may have carried: credit limits,
    /// stream limit, stream-to-connection mapping.
    fn reannounce(&mut self) {
        if !matches!(self.state, State::Tcpls(_)) {
            return;
        }
        self.max_data_pending = true;
        self.max_streams_pending = true;
        for (id, s) in self.streams.iter_mut() {
            if !s.max_data_pending {
                s.max_data_pending = true;
                self.max_stream_data_queue.push_back(*id);
            }
            if !s.change_pending {
                s.change_pending = true;
                self.stream_changes.push_back(*id);
            }
        }
        for c in &self.failed_conns {
            if !self.conn_resets.contains(c) {
                self.conn_resets.push_back(*c);
            }
        }
        for &addr in &self.local_addresses {
            if !self.address_updates.contains(&(addr, true)) {
                self.address_updates.push_back((addr, true));
            }
        }
        if self.side == Side::Server {
            self.tokens.to_send = self
                .tokens
                .outstanding
                .iter()
                .map(|(s, t)| (*s, *t))
                .collect();
        }
    }

    fn check_local_exists(&self, id: StreamId) -> Result<(), Error> {
        if id.initiator() == self.side && id.index() >= self.next_local {
            return Err(Error::Protocol("frame for a stream never opened"));
        }
        Ok(())
    }

    /// Checks a stream id from a peer's frame, opening peer streams on first
    /// sight. `false`: the stream is already closed (a late frame).
    fn ensure_stream(&mut self, id: StreamId) -> Result<bool, Error> {
        if id.initiator() == self.side {
            self.check_local_exists(id)?;
        } else {
            if id.index() >= self.peer_limit {
                return Err(Error::StreamLimit);
            }
            let (send_credit, window, primary) = (
                self.peer_params.map_or(0, |p| p.initial_max_stream_data),
                self.cfg.stream_window,
                self.primary,
            );
            while self.next_peer <= id.index() {
                let sid = StreamId::new(self.side.peer(), self.next_peer);
                self.streams
                    .insert(sid, Stream::new(send_credit, window, primary));
                self.accept_queue.push_back(sid);
                self.events.push_back(Event::StreamOpened(sid));
                self.next_peer += 1;
            }
        }
        Ok(self.streams.contains_key(&id))
    }

    fn on_stream_frame(
        &mut self,
        id: StreamId,
        offset: u64,
        fin: bool,
        data: Bytes,
    ) -> Result<(), Error> {
        if !self.ensure_stream(id)? {
            return Ok(());
        }
        let s = self.streams.get_mut(&id).expect("ensured");
        let end = offset + data.len() as u64;
        if let Some(fs) = s.recv.final_size {
            if end > fs || (fin && end != fs) {
                return Err(Error::Protocol("stream data beyond its final size"));
            }
        } else if fin {
            if end < s.recv.credit.received() {
                return Err(Error::Protocol("FIN below data already received"));
            }
            s.recv.final_size = Some(end);
        }
        let grown = s.recv.credit.on_receive(end, "stream window exceeded")?;
        self.recv_credit.on_grow(grown, "session window exceeded")?;
        self.peak_buffered = self.peak_buffered.max(self.recv_credit.outstanding());
        if s.recv.reset.is_some() || s.recv.done {
            // Reset or abandoned by the application: count it, drop it.
            // Only bytes beyond what was already counted (a reset credited
            // everything up to its final size).
            self.consume_session_credit(grown);
            return Ok(());
        }
        // A slice keeps its whole read chunk (up to 256 KiB) alive until it
        // is read: small pieces are copied, so a peer sending tiny frames
        // cannot pin a chunk per byte of window.
        let data = if data.len() < SMALL_FRAME {
            Bytes::copy_from_slice(&data)
        } else {
            data
        };
        s.recv.asm.insert(offset, data);
        if s.recv.asm.readable() || s.recv.at_fin() {
            self.events.push_back(Event::StreamReadable(id));
        }
        Ok(())
    }

    fn on_reset_stream(&mut self, id: StreamId, code: u32, final_size: u64) -> Result<(), Error> {
        if !self.ensure_stream(id)? {
            return Ok(());
        }
        let s = self.streams.get_mut(&id).expect("ensured");
        if s.recv.final_size.is_some_and(|f| f != final_size)
            || final_size < s.recv.credit.received()
        {
            return Err(Error::Protocol("RESET_STREAM final size mismatch"));
        }
        let grown = s
            .recv
            .credit
            .on_receive(final_size, "stream window exceeded")?;
        self.recv_credit.on_grow(grown, "session window exceeded")?;
        if s.recv.reset.is_none() && !s.recv.done {
            s.recv.final_size = Some(final_size);
            s.recv.reset = Some(code);
            // Bytes never delivered still count as consumed for the session.
            let dropped = final_size - s.recv.asm.read_offset();
            s.recv.asm.clear();
            self.consume_session_credit(dropped);
            self.events.push_back(Event::StreamReadable(id));
        }
        Ok(())
    }

    fn consume_session_credit(&mut self, n: u64) {
        if self.recv_credit.on_consume(n).is_some() {
            self.max_data_pending = true;
        }
    }

    // -------------------------------------------------------------- streams

    /// Opens a stream. Fails when the peer's stream limit is reached (wait
    /// for [`Event::StreamsAvailable`]) or, on a plain TLS session, after the
    /// first stream.
    pub fn open_stream(&mut self) -> Result<StreamId, Error> {
        self.check_open()?;
        if self.is_handshaking() {
            return Err(Error::Usage("handshake not complete"));
        }
        if self.next_local >= self.local_limit {
            return Err(if matches!(self.state, State::Fallback(_)) {
                Error::Usage("plain TLS peer: only one stream")
            } else {
                Error::Usage("peer's stream limit reached")
            });
        }
        let id = StreamId::new(self.side, self.next_local);
        self.next_local += 1;
        if !self.streams.contains_key(&id) {
            let credit = self.peer_params.map_or(0, |p| p.initial_max_stream_data);
            self.streams.insert(
                id,
                Stream::new(credit, self.cfg.stream_window, self.primary),
            );
        }
        Ok(id)
    }

    /// True when [`Self::open_stream`] would succeed now.
    pub fn can_open_stream(&self) -> bool {
        self.error.is_none() && !self.is_handshaking() && self.next_local < self.local_limit
    }

    /// Takes the next stream the peer opened.
    pub fn accept_stream(&mut self) -> Option<StreamId> {
        self.accept_queue.pop_front()
    }

    fn check_open(&self) -> Result<(), Error> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn stream_mut<'a>(
        streams: &'a mut HashMap<StreamId, Stream>,
        error: &Option<Error>,
        id: StreamId,
    ) -> Result<&'a mut Stream, Error> {
        if let Some(e) = error {
            return Err(e.clone());
        }
        streams
            .get_mut(&id)
            .ok_or(Error::Usage("unknown or closed stream"))
    }

    fn enqueue(queue: &mut VecDeque<StreamId>, id: StreamId, s: &mut Stream) {
        if !s.in_send_queue {
            s.in_send_queue = true;
            queue.push_back(id);
        }
    }

    fn requeue_all(&mut self) {
        for (id, s) in self.streams.iter_mut() {
            if !s.send.unsent.is_empty() {
                Self::enqueue(&mut self.send_queue, *id, s);
            }
        }
    }

    /// Frees memory kept only for speed: the pool of send blocks (up to
    /// 4 MiB after a bulk transfer). The runtime calls this when the session
    /// has been quiet for a while.
    pub fn release_buffers(&mut self) {
        self.block_pool.release();
    }

    /// Queues bytes on a stream. Returns how many were taken; 0 means the
    /// send buffer is full (wait for [`Event::StreamWritable`]).
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, Error> {
        self.queue_send(id, data.len(), |q, pool, n| q.push(&data[..n], pool))
    }

    /// Queues a prefix of `data` on a stream without copying it (as much
    /// as the send buffer has room for), and returns its length; 0 when
    /// the buffer is full. The bytes are encrypted straight from `data`'s
    /// memory when their record is sealed, and with acknowledgements kept
    /// (as slices) until acknowledged. Chunks under 4 KiB are copied.
    ///
    /// ```
    /// # use tcpls_proto::{Session, StreamId};
    /// # fn send(s: &mut Session, id: StreamId, mut body: bytes::Bytes) -> Result<(), tcpls_proto::Error> {
    /// let n = s.write_chunk(id, body.clone())?;
    /// let rest = body.split_off(n); // queue `rest` once there is room
    /// # Ok(()) }
    /// ```
    pub fn write_chunk(&mut self, id: StreamId, data: Bytes) -> Result<usize, Error> {
        self.queue_send(id, data.len(), |q, pool, n| {
            q.push_shared(data.slice(..n), pool)
        })
    }

    /// Queues up to `len` bytes on a stream's send buffer with `put` (given
    /// how many fit); returns how many.
    fn queue_send(
        &mut self,
        id: StreamId,
        len: usize,
        put: impl FnOnce(&mut SendBuffer, &mut BlockPool, usize),
    ) -> Result<usize, Error> {
        let limit = self.cfg.send_buffer;
        let s = Self::stream_mut(&mut self.streams, &self.error, id)?;
        if s.send.fin_queued || s.send.reset.is_some() {
            return Err(Error::Usage("stream already finished or reset"));
        }
        let n = len.min(limit.saturating_sub(s.send.unsent.len()));
        if n == 0 {
            if len > 0 {
                s.send.blocked = true;
            }
            return Ok(0);
        }
        put(&mut s.send.unsent, &mut self.block_pool, n);
        Self::enqueue(&mut self.send_queue, id, s);
        Ok(n)
    }

    /// Ends the sending direction of a stream once queued data is sent.
    pub fn finish(&mut self, id: StreamId) -> Result<(), Error> {
        let s = Self::stream_mut(&mut self.streams, &self.error, id)?;
        if s.send.reset.is_some() {
            return Err(Error::Usage("stream was reset"));
        }
        s.send.fin_queued = true;
        Self::enqueue(&mut self.send_queue, id, s);
        Ok(())
    }

    /// Abandons the sending direction: queued data is dropped and the peer
    /// gets RESET_STREAM with `code`.
    pub fn reset(&mut self, id: StreamId, code: u32) -> Result<(), Error> {
        let fallback = matches!(self.state, State::Fallback(_));
        let s = Self::stream_mut(&mut self.streams, &self.error, id)?;
        if s.send.is_done() {
            return Ok(());
        }
        s.send.unsent.clear();
        Self::wake_writer(&mut self.events, self.cfg.send_buffer, id, s);
        if fallback {
            // Plain TLS has no stream reset: the closest is ending the session.
            self.close(ErrorCode::app(code), "stream reset");
            return Ok(());
        }
        s.send.reset = Some(code);
        Self::enqueue(&mut self.send_queue, id, s);
        Ok(())
    }

    /// Stops reading a stream: buffered and future data is discarded (and
    /// credited back to the peer) so an unread stream cannot stall others.
    pub fn stop_reading(&mut self, id: StreamId) -> Result<(), Error> {
        let s = Self::stream_mut(&mut self.streams, &self.error, id)?;
        if s.recv.done {
            return Ok(());
        }
        s.recv.done = true;
        // Everything received so far, gaps included, was counted against
        // the session window: give all of it back.
        let dropped = s.recv.credit.received() - s.recv.asm.read_offset();
        s.recv.asm.clear();
        self.consume_session_credit(dropped);
        self.maybe_remove(id);
        Ok(())
    }

    /// True once everything written on the stream, and its FIN or reset,
    /// has been put into records (or the stream is gone).
    pub fn is_send_done(&self, id: StreamId) -> bool {
        self.streams.get(&id).is_none_or(|s| s.send.is_done())
    }

    /// Bytes queued on the stream and not yet sent.
    pub fn unsent(&self, id: StreamId) -> usize {
        self.streams.get(&id).map_or(0, |s| s.send.unsent.len())
    }

    /// Reads up to `max` in-order bytes of a stream without copying them.
    pub fn read(&mut self, id: StreamId, max: usize) -> Result<ReadOutcome, Error> {
        let fallback = matches!(self.state, State::Fallback(_));
        let Some(s) = self.streams.get_mut(&id) else {
            self.check_open()?;
            return Err(Error::Usage("unknown or closed stream"));
        };
        if let Some(code) = s.recv.reset {
            s.recv.done = true;
            self.maybe_remove(id);
            return Ok(ReadOutcome::Reset(code));
        }
        if let Some(chunk) = s.recv.asm.read(max) {
            let n = chunk.len() as u64;
            if !fallback {
                if s.recv.credit.on_consume(n).is_some() && !s.max_data_pending {
                    s.max_data_pending = true;
                    self.max_stream_data_queue.push_back(id);
                }
                self.consume_session_credit(n);
            }
            return Ok(ReadOutcome::Data(chunk));
        }
        if s.recv.at_fin() {
            s.recv.done = true;
            self.maybe_remove(id);
            return Ok(ReadOutcome::Fin);
        }
        self.check_open()?;
        Ok(ReadOutcome::Blocked)
    }

    fn maybe_remove(&mut self, id: StreamId) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        if !s.is_closed() || s.in_send_queue {
            return;
        }
        self.streams.remove(&id);
        if id.initiator() != self.side && matches!(self.state, State::Tcpls(_)) {
            self.peer_limit += 1;
            self.max_streams_pending = true;
        }
    }

    /// Number of streams holding state.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    // ---------------------------------------------------------- connections

    /// True if a connection other than `conn` carries (or can carry) records.
    fn other_connections(&self, conn: ConnectionId) -> bool {
        self.conns
            .iter()
            .any(|(id, c)| *id != conn && c.state == ConnectionState::Active)
    }

    /// Forgets a connection that ended, moving its streams to another one.
    fn drop_connection(&mut self, conn: ConnectionId) {
        self.retire_connection(conn, false);
        self.requeue_unacked(conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnectionState::Closed;
        }
        self.conns.remove(&conn);
        self.events.push_back(Event::ConnectionClosed(conn));
        if self.side == Side::Server && self.error.is_none() {
            self.replenish_tokens();
        }
    }

    /// Stops sending on `conn`: its streams move to the primary (or any
    /// active) connection. `tell_peer` queues a CONNECTION_RESET.
    fn retire_connection(&mut self, conn: ConnectionId, tell_peer: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.state == ConnectionState::Active {
            c.state = ConnectionState::Draining;
        }
        if self.primary == conn {
            if let Some((id, _)) = self.conns.iter().find(|(_, c)| c.can_send()) {
                self.primary = *id;
            }
        }
        let primary = self.primary;
        for s in self.streams.values_mut() {
            if s.conn == conn {
                s.conn = primary;
            }
        }
        if tell_peer && !self.conn_resets.contains(&conn) {
            self.conn_resets.push_back(conn);
        }
    }

    fn replenish_tokens(&mut self) {
        let in_use = self
            .conns
            .values()
            .filter(|c| c.state != ConnectionState::Closed)
            .count();
        while in_use + self.tokens.outstanding.len() < self.max_connections as usize {
            let mut token = [0u8; TOKEN_LEN];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut token);
            let seq = self.tokens.next_seq;
            let Some(next) = seq.checked_add(1) else {
                return; // connection ids exhausted: no more joins
            };
            self.tokens.next_seq = next;
            self.tokens.outstanding.insert(seq, token);
            self.tokens.to_send.push_back((seq, token));
            self.events.push_back(Event::TokenIssued(token));
        }
    }

    /// Client: takes an unused token and returns the new connection's id
    /// and the bytes to send first on a fresh TCP connection (the join
    /// ClientHello and a first record that proves the session keys). The
    /// connection carries records from then on.
    pub fn join(&mut self) -> Result<(ConnectionId, Vec<u8>), Error> {
        self.check_open()?;
        if self.side != Side::Client || !matches!(self.state, State::Tcpls(_)) {
            return Err(Error::Usage("only an established TCPLS client can join"));
        }
        let (seq, token) = self.tokens.outstanding.pop_first().ok_or(Error::Usage(
            "no join token available (max connections reached?)",
        ))?;
        self.tokens.used_up_to = self.tokens.used_up_to.max(seq);
        let mut random = [0u8; 64];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut random);
        let mut out = encode_join_hello(&token, &random);
        self.conns
            .insert(seq, Connection::new(ConnectionState::Active));
        self.rejoin_deadline = None;
        if !self.conns.get(&self.primary).is_some_and(|c| c.can_send()) {
            self.adopt_primary(seq);
        }
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        Frame::Ping.encode(&mut out);
        let mut out = TransmitBuf::from(out);
        self.seal_record(seq, &mut out, start, None)?;
        self.events.push_back(Event::ConnectionAdded(seq));
        Ok((seq, out.into_vec()))
    }

    /// Server: a new TCP connection presented `token` in a join
    /// ClientHello. Returns the connection id to feed its records to; the
    /// connection is attached once its first record decrypts under that
    /// id. A token that is unknown here is refused without effect.
    pub fn accept_join(&mut self, token: &[u8; TOKEN_LEN]) -> Result<ConnectionId, Error> {
        self.check_open()?;
        if self.side != Side::Server || !matches!(self.state, State::Tcpls(_)) {
            return Err(Error::Usage("not an established TCPLS server session"));
        }
        let seq = self
            .tokens
            .find(token)
            .ok_or(Error::JoinRefused("unknown or used token"))?;
        if self.conns.contains_key(&seq) {
            return Err(Error::JoinRefused(
                "a join with this token is already in progress",
            ));
        }
        let mut c = Connection::new(ConnectionState::PendingAuth);
        c.token = Some(*token);
        c.last_recv = Some(self.now);
        self.conns.insert(seq, c);
        Ok(seq)
    }

    /// The first records of a joining connection: attach it if the first
    /// record decrypts, else drop the connection and leave the session as
    /// it was.
    fn recv_join(&mut self, conn: ConnectionId, buf: &mut BytesMut) -> Result<(), Error> {
        if self.error.is_some() {
            self.abandon_join(conn);
            return Err(Error::JoinRefused("session closed"));
        }
        let State::Tcpls(keys) = &self.state else {
            return Err(Error::JoinRefused("session not established"));
        };
        let hdr = match RecordHeader::parse(buf) {
            Ok(Some(h)) if h.content_type == ContentType::ApplicationData => h,
            Ok(None) => return Ok(()),
            _ => {
                self.abandon_join(conn);
                return Err(Error::JoinRefused("first record is not application data"));
            }
        };
        if buf.len() < HEADER_LEN + hdr.len {
            return Ok(());
        }
        let mut first = buf[..HEADER_LEN + hdr.len].to_vec();
        if keys.recv.open(conn, 0, &mut first).is_err() {
            // The token is spent either way: a failed attempt must not
            // leave it replayable, and the client gets a fresh one.
            self.abandon_join(conn);
            return Err(Error::JoinRefused("first record does not decrypt"));
        }
        let c = self.conns.get_mut(&conn).expect("pending connection");
        c.state = ConnectionState::Active;
        c.last_recv = Some(self.now);
        self.rejoin_deadline = None;
        if let Some(token) = c.token.take() {
            self.tokens.outstanding.remove(&conn);
            self.events.push_back(Event::TokenRetired(token));
        }
        self.events.push_back(Event::ConnectionAdded(conn));
        self.replenish_tokens();
        if !self.conns.get(&self.primary).is_some_and(|c| c.can_send()) {
            self.adopt_primary(conn);
        }
        let r = self.recv_records(conn, buf);
        if let Err(e) = &r {
            self.fail(e.clone());
        }
        r
    }

    /// Moves every stream, and new streams, to `conn` (application-driven
    /// migration). Records already sent on other connections still arrive
    /// and are reordered by stream offset; the peer is told with
    /// STREAM_CHANGE so its data follows.
    pub fn migrate(&mut self, conn: ConnectionId) -> Result<(), Error> {
        self.check_open()?;
        if !self.conns.get(&conn).is_some_and(|c| c.can_send()) {
            return Err(Error::Usage("no such active connection"));
        }
        self.primary = conn;
        let ids: Vec<StreamId> = self.streams.keys().copied().collect();
        for id in ids {
            self.set_stream_connection(id, conn)?;
        }
        Ok(())
    }

    /// Sends a stream's data on `conn` from now on (stream steering), and
    /// asks the peer to do the same (STREAM_CHANGE).
    pub fn set_stream_connection(&mut self, id: StreamId, conn: ConnectionId) -> Result<(), Error> {
        self.check_open()?;
        if !self.conns.get(&conn).is_some_and(|c| c.can_send()) {
            return Err(Error::Usage("no such active connection"));
        }
        let s = Self::stream_mut(&mut self.streams, &self.error, id)?;
        s.conn = conn;
        if !s.change_pending {
            s.change_pending = true;
            self.stream_changes.push_back(id);
        }
        Ok(())
    }

    /// The connection a stream's data is sent on.
    pub fn stream_connection(&self, id: StreamId) -> Option<ConnectionId> {
        self.streams.get(&id).map(|s| s.conn)
    }

    /// Stops sending on `conn` and tells the peer (CONNECTION_RESET); the
    /// caller closes the TCP connection once [`Self::poll_transmit`] gives
    /// nothing more for it. Its streams move to the primary connection.
    pub fn close_connection(&mut self, conn: ConnectionId) -> Result<(), Error> {
        self.check_open()?;
        if !self.other_connections(conn) {
            return Err(Error::Usage(
                "cannot retire the last connection; close the session",
            ));
        }
        self.retire_connection(conn, true);
        Ok(())
    }

    /// Turns coupled sending on (with a scheduler) or off (`None`: each
    /// stream stays on its own connection, see [`Self::set_stream_connection`]).
    pub fn set_scheduler(&mut self, scheduler: Option<Box<dyn Scheduler>>) {
        self.scheduler = scheduler;
        self.requeue_all();
    }

    /// The coupled-sending scheduler's name, if one is set.
    pub fn scheduler_name(&self) -> Option<String> {
        self.scheduler.as_ref().map(|s| s.name())
    }

    /// Reports a connection's RTT and congestion window (from TCP_INFO) to
    /// the scheduler.
    pub fn set_path_info(
        &mut self,
        conn: ConnectionId,
        rtt: Option<std::time::Duration>,
        cwnd_bytes: Option<u64>,
    ) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.rtt = rtt;
            c.cwnd_bytes = cwnd_bytes;
        }
    }

    /// Stream bytes sent on each connection so far.
    pub fn bytes_sent_per_connection(&self) -> Vec<(ConnectionId, u64)> {
        self.conns
            .iter()
            .map(|(id, c)| (*id, c.sent_bytes))
            .collect()
    }

    /// The most received-but-unread stream bytes held at once: the
    /// reassembly memory, never more than the session window.
    pub fn peak_buffered(&self) -> u64 {
        self.peak_buffered
    }

    /// Bytes the sending side holds now: queued on streams, sent and kept
    /// for acknowledgement, and the pool of reusable send blocks. Bounded by
    /// `send_buffer` per stream, twice `session_window`, and 4 MiB.
    pub fn send_buffered(&self) -> u64 {
        let queued: usize = self.streams.values().map(|s| s.send.unsent.len()).sum();
        let unacked: u64 = self.conns.values().map(|c| c.unacked_bytes).sum();
        queued as u64 + unacked + self.block_pool.bytes() as u64
    }

    /// The session's connections and their states.
    pub fn connections(&self) -> Vec<(ConnectionId, ConnectionState)> {
        self.conns.iter().map(|(id, c)| (*id, c.state)).collect()
    }

    /// State of one connection (`None`: unknown or forgotten).
    pub fn connection_state(&self, conn: ConnectionId) -> Option<ConnectionState> {
        self.conns.get(&conn).map(|c| c.state)
    }

    /// The session's only connection, when it has exactly one and it can
    /// send (TCPLS mode): then everything to transmit goes there.
    pub fn sole_connection(&self) -> Option<ConnectionId> {
        if !matches!(self.state, State::Tcpls(_)) || self.conns.len() != 1 {
            return None;
        }
        self.conns
            .iter()
            .next()
            .filter(|(_, c)| c.can_send())
            .map(|(id, _)| *id)
    }

    /// The connection new streams and control frames use.
    pub fn primary_connection(&self) -> ConnectionId {
        self.primary
    }

    /// Join tokens the client holds.
    pub fn available_tokens(&self) -> usize {
        if self.side == Side::Client {
            self.tokens.outstanding.len()
        } else {
            0
        }
    }

    /// Advertises an address of this side to the peer (NEW_ADDRESS).
    /// At most 16 at a time, as many as a peer accepts.
    pub fn advertise_address(&mut self, addr: SocketAddr) -> Result<(), Error> {
        self.check_open()?;
        if !self.local_addresses.contains(&addr) {
            if self.local_addresses.len() >= MAX_PEER_ADDRESSES {
                return Err(Error::Usage("too many advertised addresses (16)"));
            }
            self.local_addresses.push(addr);
        }
        self.address_updates.push_back((addr, true));
        Ok(())
    }

    /// Withdraws an advertised address (REMOVE_ADDRESS).
    pub fn withdraw_address(&mut self, addr: SocketAddr) -> Result<(), Error> {
        self.check_open()?;
        self.local_addresses.retain(|a| *a != addr);
        self.address_updates.push_back((addr, false));
        Ok(())
    }

    /// Addresses the peer advertised and has not withdrawn.
    pub fn peer_addresses(&self) -> &[SocketAddr] {
        &self.peer_addresses
    }

    // ---------------------------------------------------------------- close

    /// Closes the session: the peer gets a CLOSE frame with `code` and
    /// `reason` (plain TLS: close_notify after queued data).
    pub fn close(&mut self, code: ErrorCode, reason: &str) {
        if self.error.is_some() {
            return;
        }
        self.error = Some(Error::LocallyClosed {
            code,
            reason: reason.to_string(),
        });
        self.close_frame = Some((code.0, reason.as_bytes().to_vec()));
        self.retire_all_tokens();
        self.events
            .push_back(Event::Closed(self.error.clone().expect("just set")));
    }

    /// Like [`Self::close`], but stream data already queued (and allowed by
    /// flow control) is sent before the CLOSE frame.
    pub fn close_gracefully(&mut self, code: ErrorCode, reason: &str) {
        if self.error.is_none() {
            self.close(code, reason);
            self.graceful_close = true;
            self.graceful_deadline = Some(self.now + GRACEFUL_CLOSE_LIMIT);
        }
    }

    fn retire_all_tokens(&mut self) {
        if self.side == Side::Server {
            for (_, t) in std::mem::take(&mut self.tokens.outstanding) {
                self.events.push_back(Event::TokenRetired(t));
            }
        }
    }

    fn stream_data_sendable(&self) -> bool {
        let avail = self.send_credit.available();
        self.send_queue.iter().any(|id| {
            self.streams
                .get(id)
                .is_some_and(|s| s.send.wants_send(avail))
        })
    }

    fn fail(&mut self, e: Error) {
        if self.error.is_some() {
            if matches!(e, Error::PeerClosed { .. }) {
                // Closing already, and the peer is gone: nothing more to send.
                self.close_frame = None;
                self.state = State::Done;
            }
            return;
        }
        // A CLOSE from the peer (or our own close) is an end, not a failure.
        let what = match &e {
            Error::PeerClosed { .. } | Error::LocallyClosed { .. } => "session ended",
            _ => "session failed",
        };
        tracing::debug!(side = ?self.side, error = %e, "{what}");
        self.graceful_close = false;
        let code = e.code();
        match &e {
            Error::PeerClosed { .. } => self.state = State::Done,
            _ => {
                self.close_frame = Some((code.0, e.to_string().into_bytes()));
            }
        }
        if let State::Handshake(hs) = &mut self.state {
            hs.take_output(&mut self.raw_out); // the alert, if any
            self.state = State::Done;
        }
        self.retire_all_tokens();
        self.events.push_back(Event::Closed(e.clone()));
        self.error = Some(e);
    }

    // --------------------------------------------------------------- output

    /// Appends bytes to send on connection `conn` to `out`, at most about
    /// `max` bytes (whole records). Returns the number of bytes appended.
    pub fn poll_transmit(
        &mut self,
        conn: ConnectionId,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<usize, Error> {
        let mut buf = TransmitBuf::from(std::mem::take(out));
        let r = self.poll_transmit_buf(conn, &mut buf, max);
        *out = buf.into_vec();
        r
    }

    /// [`Self::poll_transmit`] into a [`TransmitBuf`], which a writer keeps
    /// from one call to the next: records are then encrypted straight into
    /// its memory, with no zeroing first.
    pub fn poll_transmit_buf(
        &mut self,
        conn: ConnectionId,
        out: &mut TransmitBuf,
        max: usize,
    ) -> Result<usize, Error> {
        let Some(c) = self.conns.get(&conn) else {
            return Err(Error::Usage("unknown connection id"));
        };
        if !c.can_send() {
            return Ok(0);
        }
        let start = out.len();
        if conn == self.primary {
            out.extend_from_slice(&self.raw_out);
            self.raw_out.clear();
        }
        match &mut self.state {
            State::Handshake(hs) => {
                let flight = &mut self.trailer_scratch;
                flight.clear();
                hs.take_output(flight);
                out.extend_from_slice(flight);
            }
            State::Fallback(_) => self.transmit_fallback(out, start + max),
            State::Tcpls(_) => {
                while out.len() - start < max {
                    match self.build_record(conn, out) {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(e) => {
                            // Nothing more can be sealed (key limit, AEAD
                            // failure): end without a CLOSE.
                            self.fail(e);
                            self.state = State::Done;
                            break;
                        }
                    }
                }
            }
            State::Done => {}
        }
        Ok(out.len() - start)
    }

    /// True if `poll_transmit` would produce bytes now.
    pub fn has_transmit(&self) -> bool {
        if !self.raw_out.is_empty() {
            return true;
        }
        match &self.state {
            State::Handshake(hs) => hs.has_output(),
            State::Done => false,
            State::Fallback(fb) => {
                fb.has_output() || self.close_frame.is_some() || !self.send_queue.is_empty()
            }
            State::Tcpls(_) => {
                self.close_frame.is_some()
                    || !self.replay.is_empty()
                    || self.conns.values().any(|c| c.ack_due || c.ping_due)
                    || !self.tokens.to_send.is_empty()
                    || !self.stream_changes.is_empty()
                    || !self.conn_resets.is_empty()
                    || !self.address_updates.is_empty()
                    || self.max_data_pending
                    || self.max_streams_pending
                    || !self.max_stream_data_queue.is_empty()
                    || self.send_queue.iter().any(|id| {
                        self.streams
                            .get(id)
                            .is_some_and(|s| s.send.wants_send(self.send_credit.available()))
                    })
            }
        }
    }

    fn transmit_fallback(&mut self, out: &mut TransmitBuf, limit: usize) {
        let State::Fallback(fb) = &mut self.state else {
            return;
        };
        let mut err = None;
        while let Some(&id) = self.send_queue.front() {
            let Some(s) = self.streams.get_mut(&id) else {
                self.send_queue.pop_front();
                continue;
            };
            if out.len() >= limit {
                break;
            }
            if !s.send.unsent.is_empty() {
                let front = s.send.unsent.front();
                let n = front.len().min(MAX_PLAINTEXT);
                match fb.write(&front[..n]) {
                    Ok(w) => {
                        s.send.unsent.advance(w, &mut self.block_pool);
                        s.send.offset += w as u64;
                    }
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
                fb.take_output_buf(out);
                continue;
            }
            self.send_queue.pop_front();
            s.in_send_queue = false;
            if s.send.fin_queued && !s.send.fin_sent {
                s.send.fin_sent = true;
                fb.shutdown();
            }
        }
        if self.close_frame.is_some() && self.send_queue.is_empty() {
            self.close_frame = None;
            fb.shutdown();
        }
        fb.take_output_buf(out);
        self.wake_writers();
        if let Some(e) = err {
            self.fail(e);
        }
        if self.error.is_some() && self.close_frame.is_none() {
            self.state = State::Done;
        }
    }

    fn wake_writers(&mut self) {
        for (id, s) in self.streams.iter_mut() {
            Self::wake_writer(&mut self.events, self.cfg.send_buffer, *id, s);
        }
    }

    /// Tells a blocked writer its stream takes data again. Only at half
    /// empty: it then refills a large part at once, instead of one record's
    /// worth per wake-up.
    fn wake_writer(events: &mut VecDeque<Event>, limit: usize, id: StreamId, s: &mut Stream) {
        if s.send.blocked && s.send.unsent.len() <= limit / 2 {
            s.send.blocked = false;
            events.push_back(Event::StreamWritable(id));
        }
    }

    /// Builds and seals one record; false when there was nothing to send.
    fn build_record(&mut self, conn: ConnectionId, out: &mut TransmitBuf) -> Result<bool, Error> {
        let State::Tcpls(keys) = &self.state else {
            return Ok(false);
        };
        let Some(c) = self.conns.get(&conn) else {
            return Ok(false);
        };
        if c.send_seq >= keys.send.suite().record_limit() {
            return Err(Error::KeyLimit);
        }
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        let body = out.len();

        // A graceful CLOSE waits until everything is out and, with
        // acknowledgements, acknowledged: the peer drops whatever arrives
        // after it, on any connection.
        let flush_first = self.graceful_close
            && (self.stream_data_sendable()
                || !self.replay.is_empty()
                || self.conns.values().any(|c| !c.unacked.is_empty()));
        if let Some((code, reason)) = self.close_frame.take_if(|_| !flush_first) {
            let close = Frame::Close {
                code,
                reason: &reason,
            };
            put_frame(out, close, &mut self.trailer_scratch);
            self.seal_record(conn, out, start, None)?;
            self.state = State::Done;
            return Ok(true);
        }
        if self.error.is_some() && !flush_first {
            out.truncate(start);
            self.state = State::Done;
            return Ok(false);
        }

        // Control frames go to a scratch buffer so stream data can lead the
        // record (the receiver then hands it out from offset 0).
        let mut ctl = std::mem::take(&mut self.scratch);
        ctl.clear();
        // ACKs for any connection travel on whichever sends first.
        encode_acks(&mut self.conns, &mut ctl, MAX_PLAINTEXT / 4, |c| c.ack_due);
        let seq = self.conns.get(&conn).map_or(0, |c| c.send_seq);
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.ping_due {
                c.ping_due = false;
                c.probe = Some((seq, self.now));
                Frame::Ping.encode(&mut ctl);
            }
        }
        if self.max_data_pending {
            self.max_data_pending = false;
            Frame::MaxData(self.recv_credit.advertised()).encode(&mut ctl);
        }
        if self.max_streams_pending {
            self.max_streams_pending = false;
            Frame::MaxStreams(self.peer_limit).encode(&mut ctl);
        }
        while ctl.len() < MAX_PLAINTEXT / 4 {
            if let Some((seq, token)) = self.tokens.to_send.pop_front() {
                Frame::NewToken { seq, token }.encode(&mut ctl);
            } else if let Some(c) = self.conn_resets.pop_front() {
                Frame::ConnectionReset { conn: c }.encode(&mut ctl);
            } else {
                break;
            }
        }
        // The receiver applies a record's frames from its end: address
        // updates go in reverse, so that they take effect in the order they
        // were made (an address advertised, withdrawn, advertised again).
        let fit = (MAX_PLAINTEXT / 4).saturating_sub(ctl.len()) / ADDRESS_FRAME_MAX;
        let n = self.address_updates.len().min(fit);
        for &(addr, add) in self.address_updates.range(..n).rev() {
            if add {
                Frame::NewAddress(addr).encode(&mut ctl);
            } else {
                Frame::RemoveAddress(addr).encode(&mut ctl);
            }
        }
        self.address_updates.drain(..n);
        // A STREAM_CHANGE travels on the connection it names, so it can
        // never arrive before that connection is attached at the peer.
        for _ in 0..self.stream_changes.len() {
            if ctl.len() >= MAX_PLAINTEXT / 4 {
                break;
            }
            let Some(id) = self.stream_changes.pop_front() else {
                break;
            };
            match self.streams.get_mut(&id) {
                Some(s) if s.conn == conn => {
                    s.change_pending = false;
                    Frame::StreamChange { id, conn }.encode(&mut ctl);
                }
                Some(_) => self.stream_changes.push_back(id),
                None => {}
            }
        }
        while ctl.len() + 13 <= MAX_PLAINTEXT / 4 {
            let Some(id) = self.max_stream_data_queue.pop_front() else {
                break;
            };
            if let Some(s) = self.streams.get_mut(&id) {
                s.max_data_pending = false;
                Frame::MaxStreamData {
                    id,
                    max: s.recv.credit.advertised(),
                }
                .encode(&mut ctl);
                self.maybe_remove(id);
            }
        }

        // Stream bytes that start the record stay where they are until the
        // seal encrypts them from there (see `put_data`).
        let mut lead: Option<Bytes> = None;
        // Data of failed connections goes first, on whatever connection.
        let acks = self.acks;
        while let Some(sent) = self.replay.pop_front() {
            let room = MAX_PLAINTEXT - (out.len() - body) - ctl.len();
            if room < STREAM_HEADER_LEN + 16 {
                self.replay.push_front(sent);
                break;
            }
            let sent = match sent {
                Sent::Stream {
                    id,
                    offset,
                    mut data,
                    fin,
                } => {
                    let k = data.len().min(room - STREAM_HEADER_LEN);
                    let head = data.split_to(k);
                    let last = data.is_empty();
                    if !last {
                        self.replay.push_front(Sent::Stream {
                            id,
                            offset: offset + k as u64,
                            data,
                            fin,
                        });
                    }
                    put_data(out, body, &mut lead, head.clone());
                    out.extend_from_slice(&stream_header(id, offset, k as u16, fin && last));
                    Sent::Stream {
                        id,
                        offset,
                        data: head,
                        fin: fin && last,
                    }
                }
                Sent::Reset {
                    id,
                    code,
                    final_size,
                } => {
                    let reset = Frame::ResetStream {
                        id,
                        code,
                        final_size,
                    };
                    put_frame(out, reset, &mut self.trailer_scratch);
                    Sent::Reset {
                        id,
                        code,
                        final_size,
                    }
                }
            };
            self.record_sent(conn, seq, sent);
        }

        // Coupled sending: the scheduler decides whether this connection
        // takes stream data in this record.
        let coupled = self.scheduler.is_some();
        let allowed = match self.scheduler.as_mut() {
            None => true,
            Some(sched) => {
                // Reused across records: no allocation per record.
                let paths = &mut self.paths_scratch;
                paths.clear();
                paths.extend(
                    self.conns
                        .iter()
                        .filter(|(_, c)| c.can_send())
                        .map(|(id, c)| PathInfo {
                            conn: *id,
                            sent_bytes: c.sent_bytes,
                            unacked_bytes: c.unacked_bytes,
                            rtt: c.rtt,
                            cwnd_bytes: c.cwnd_bytes,
                        }),
                );
                sched.allow(conn, paths)
            }
        };
        // A peer that never acknowledges cannot make us keep more than
        // twice our own session window of sent data.
        let unacked_total: u64 = self.conns.values().map(|c| c.unacked_bytes).sum();
        let room_for_new = !acks || unacked_total < 2 * self.cfg.session_window;
        // Head-of-line awareness: when a stream's credit runs low (the
        // receiver holds data waiting for a gap), only the fastest path
        // gets more of it; a slower one would only add later gaps.
        let slow_path = coupled && {
            let my_rtt = self.conns.get(&conn).and_then(|c| c.rtt);
            let fastest = self
                .conns
                .values()
                .filter(|c| c.can_send())
                .filter_map(|c| c.rtt)
                .min();
            matches!((my_rtt, fastest), (Some(m), Some(f)) if m > f + f / 2)
        };
        let low_credit = self
            .peer_params
            .map_or(0, |p| p.initial_max_stream_data / 4);
        let rotation = if allowed && room_for_new {
            self.send_queue.len()
        } else {
            0
        };
        let mut finished = Vec::new();
        for _ in 0..rotation {
            let room = MAX_PLAINTEXT - (out.len() - body) - ctl.len();
            if room < STREAM_HEADER_LEN + 16 {
                break;
            }
            let Some(id) = self.send_queue.pop_front() else {
                break;
            };
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            if s.conn != conn && !coupled {
                if self.conns.get(&s.conn).is_some_and(|c| c.can_send()) {
                    // Steered to another connection: leave it queued.
                    self.send_queue.push_back(id);
                    continue;
                }
                s.conn = conn;
            }
            s.in_send_queue = false;
            if let Some(code) = s.send.reset {
                if !s.send.reset_sent {
                    s.send.reset_sent = true;
                    let final_size = s.send.offset;
                    let reset = Frame::ResetStream {
                        id,
                        code,
                        final_size,
                    };
                    put_frame(out, reset, &mut self.trailer_scratch);
                    finished.push(id);
                    if acks {
                        if let Some(c) = self.conns.get_mut(&conn) {
                            c.unacked.push_back((
                                seq,
                                Sent::Reset {
                                    id,
                                    code,
                                    final_size,
                                },
                            ));
                        }
                    }
                }
                continue;
            }
            if slow_path && s.send.credit.available() < low_credit && !s.send.unsent.is_empty() {
                // Leave it queued for the fast path.
                Self::enqueue(&mut self.send_queue, id, s);
                continue;
            }
            let mut n = (s.send.unsent.len() as u64)
                .min(s.send.credit.available())
                .min(self.send_credit.available())
                .min((room - STREAM_HEADER_LEN) as u64) as usize;
            if acks {
                // Each contiguous piece (bytes straddling send blocks or
                // chunks) becomes its own STREAM frame, with its header.
                n = s.send.unsent.fit(n, room, STREAM_HEADER_LEN);
            }
            let fin = s.send.fin_queued && !s.send.fin_sent && n == s.send.unsent.len();
            if n == 0 && !fin {
                continue; // blocked on credit: MAX_* frames requeue it
            }
            if acks {
                // Keep the bytes (slices, not copies) until acknowledged.
                let mut offset = s.send.offset;
                let mut left = n;
                loop {
                    let data = s.send.unsent.split_front(left, &mut self.block_pool);
                    let k = data.len();
                    left -= k;
                    let last = left == 0;
                    put_data(out, body, &mut lead, data.clone());
                    out.extend_from_slice(&stream_header(id, offset, k as u16, fin && last));
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.unacked.push_back((
                            seq,
                            Sent::Stream {
                                id,
                                offset,
                                data,
                                fin: fin && last,
                            },
                        ));
                    }
                    offset += k as u64;
                    debug_assert!(k > 0 || last, "queued bytes but an empty front block");
                    if last || k == 0 {
                        break;
                    }
                }
            } else {
                let mut left = n;
                while left > 0 {
                    let data = s.send.unsent.split_front(left, &mut self.block_pool);
                    if data.is_empty() {
                        break;
                    }
                    left -= data.len();
                    put_data(out, body, &mut lead, data);
                }
                out.extend_from_slice(&stream_header(id, s.send.offset, n as u16, fin));
            }
            if let Some(c) = self.conns.get_mut(&conn) {
                c.sent_bytes += n as u64;
                if acks {
                    c.unacked_bytes += n as u64;
                }
            }
            s.send.offset += n as u64;
            s.send.credit.consume(n as u64);
            self.send_credit.consume(n as u64);
            if fin {
                s.send.fin_sent = true;
                finished.push(id);
            }
            Self::wake_writer(&mut self.events, self.cfg.send_buffer, id, s);
            if s.send.wants_send(self.send_credit.available()) {
                self.burst += n;
                if self.burst < STREAM_BURST {
                    // Keep the turn for a few records: the receiver then
                    // wakes one reader per burst, not one per record.
                    s.in_send_queue = true;
                    self.send_queue.push_front(id);
                } else {
                    self.burst = 0;
                    Self::enqueue(&mut self.send_queue, id, s);
                }
            } else {
                self.burst = 0;
            }
        }
        let empty = out.len() == body && ctl.is_empty();
        if !empty {
            // A record goes out anyway: acknowledge what arrived so far on
            // every connection, sparing the peer a record of its own later.
            let room = MAX_PLAINTEXT - (out.len() - body);
            encode_acks(&mut self.conns, &mut ctl, room, |c| c.ack_records > 0);
        }
        out.extend_from_slice(&ctl);
        self.scratch = ctl;
        for id in finished {
            self.maybe_remove(id);
        }
        if empty {
            out.truncate(start);
            return Ok(false);
        }
        self.seal_record(conn, out, start, lead.as_deref())?;
        Ok(true)
    }

    /// Seals `plaintext` as one record and queues it, bypassing the frame
    /// encoder. Only for tests that play a misbehaving peer.
    #[doc(hidden)]
    pub fn send_raw_record_for_testing(&mut self, plaintext: &[u8]) -> Result<(), Error> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(Error::Usage("record plaintext too long"));
        }
        let mut out = TransmitBuf::from(vec![0; HEADER_LEN]);
        out.extend_from_slice(plaintext);
        self.seal_record(self.primary, &mut out, 0, None)?;
        self.raw_out.extend_from_slice(&out);
        Ok(())
    }

    /// Seals the record at `out[start..]`; with `lead`, its content starts
    /// with those bytes and `out` holds only room for them.
    fn seal_record(
        &mut self,
        conn: ConnectionId,
        out: &mut TransmitBuf,
        start: usize,
        lead: Option<&[u8]>,
    ) -> Result<(), Error> {
        let State::Tcpls(keys) = &self.state else {
            return Err(Error::Internal("seal outside TCPLS mode".into()));
        };
        let c = self
            .conns
            .get_mut(&conn)
            .ok_or(Error::Usage("unknown connection id"))?;
        out.push(ContentType::ApplicationData.into());
        out.grow(TAG_LEN);
        let record = &mut out[start..];
        let sealed = match lead {
            Some(lead) => {
                keys.send
                    .seal_with_lead(conn, c.send_seq, lead, record, &mut self.trailer_scratch)
            }
            None => keys.send.seal_in_place(conn, c.send_seq, record),
        };
        if let Err(e) = sealed {
            out.truncate(start); // never let plaintext reach the wire
            return Err(e);
        }
        c.send_seq += 1;
        Ok(())
    }
}
