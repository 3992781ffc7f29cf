//! The input path: bytes from a connection go to the handshake, to the
//! record layer (TCPLS: records decrypted in place, frames dispatched to
//! the sub-state they concern) or to OpenSSL (plain TLS fallback).

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::connection::ConnectionState;
use super::fallback::{Fallback, FallbackRead};
use super::flow::{RecvCredit, SendCredit};
use super::keys::{Generation, RecvKeys, SendKeys};
use super::recovery::schedule_ack;

/// Whether a received record asks for an ACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum AckWanted {
    /// Only ACK and PADDING frames.
    No,
    /// Within the ACK delay, or with the next few records.
    Soon,
    /// At once: it carries a PING.
    Now,
}
use super::stream::Stream;
use super::streams::Streams;
use super::timers::{keepalive_interval, SessionTimer};
use super::{Event, HandshakeKind, Keys, Session, State};
use crate::error::{CallError, Error, ErrorCode};
use crate::handshake::Outcome;
use crate::ids::{ConnectionId, Side, StreamId};
use crate::wire::frame::{Frame, FrameIter};
use crate::wire::record::{split_records, ContentType, RecordHeader, HEADER_LEN};
use crate::wire::TransportParams;

/// Records of the first connection looked at for tickets before giving
/// up on them.
const TICKET_RECORDS: u32 = 64;

/// Ticket records read per session.
const MAX_TICKETS_READ: u64 = 2;

/// Connections a session fails over because their records arrived
/// corrupted, before a further one ends the session instead.
const MAX_CORRUPT_CONNECTIONS: u32 = 8;

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

pub(super) fn kind(resumed: bool) -> HandshakeKind {
    if resumed {
        HandshakeKind::Resumed
    } else {
        HandshakeKind::Full
    }
}

impl Session {
    /// Processes bytes that arrived on connection `conn`. Whole records are
    /// split off the front of `buf` and decrypted in place; a partial record
    /// stays in `buf` for the next call. [`CallError::Closed`] means the
    /// session ended (a CLOSE frame is then waiting in `poll_transmit`);
    /// [`CallError::JoinRefused`], that the joining connection `conn` was
    /// refused and should be closed (the session goes on).
    pub fn recv(
        &mut self,
        conn: ConnectionId,
        buf: &mut BytesMut,
        now: Instant,
    ) -> Result<(), CallError> {
        let Some(c) = self.paths.conns.get(&conn) else {
            return Err(CallError::Usage("unknown connection id"));
        };
        if c.state == ConnectionState::PendingAuth {
            self.now = now;
            return self.recv_join(conn, buf);
        }
        if c.state == ConnectionState::Closed
            || (self.close.error.is_some() && !self.close.graceful)
        {
            // After a failure or an immediate close, input is ignored.
            buf.clear();
            return Ok(());
        }
        if let Some(d) = self.cfg.idle_timeout {
            self.timers.set(SessionTimer::Idle, now + d);
        }
        self.now = now;
        let r = match &mut self.state {
            State::Handshake(_) => self.recv_handshake(buf),
            State::Tcpls(_) if self.early.finishing.is_some() => self.recv_finishing(buf),
            State::Tcpls(_) => self.recv_records(conn, buf),
            State::Fallback(_) => self.recv_fallback(buf),
            State::Done => {
                buf.clear();
                Ok(())
            }
        };
        if let Err(e) = r {
            self.fail(e.clone());
            return Err(CallError::Closed(e));
        }
        Ok(())
    }

    fn recv_handshake(&mut self, buf: &mut BytesMut) -> Result<(), Error> {
        let State::Handshake(hs) = &mut self.state else {
            return Ok(());
        };
        hs.feed(buf);
        buf.clear();
        let done = hs.drive();
        let before = self.raw_out.len();
        hs.take_output(&mut self.raw_out);
        if done? {
            // A server's last handshake step writes only its tickets, each a
            // record under the application key (see `establish_tcpls`).
            let tickets = match self.side {
                Side::Server => split_records(&self.raw_out[before..]).count() as u64,
                Side::Client => 0,
            };
            self.on_handshake_done(buf, tickets)?;
        } else if self.side == Side::Server {
            self.maybe_start_early_server()?;
        }
        Ok(())
    }

    fn on_handshake_done(&mut self, buf: &mut BytesMut, tickets_sent: u64) -> Result<(), Error> {
        let State::Handshake(hs) = std::mem::replace(&mut self.state, State::Done) else {
            unreachable!("called in handshake state");
        };
        self.timers.stop(SessionTimer::Handshake);
        self.handshake_info = Some(Box::new(hs.info()));
        let mut hs = hs;
        // Server: early data read with the handshake (accepted, but the
        // whole handshake completed in one step).
        let early_units = hs.take_early();
        match hs.finish()? {
            Outcome::Tcpls {
                peer,
                send,
                recv,
                leftover,
                resumed,
                tickets,
                early_accepted,
                retired,
            } => {
                self.retired_tls = retired;
                self.establish_tcpls(peer.params, send, recv);
                self.handshake_kind = Some(kind(resumed));
                self.tickets = tickets;
                self.finish_early_client(early_accepted);
                if !early_units.is_empty() {
                    self.early.status = super::EarlyData::Accepted;
                    self.early.units.extend_from_slice(&early_units);
                    self.take_early_units()?;
                }
                // OpenSSL sealed the tickets with sequence numbers 0.. of
                // the first connection: ours follow.
                if let Some(c) = self.paths.conns.get_mut(&ConnectionId::FIRST) {
                    c.send_seq = tickets_sent;
                }
                buf.extend_from_slice(&leftover);
                self.recv_records(ConnectionId::FIRST, buf)
            }
            Outcome::Fallback(ssl) => {
                tracing::debug!(side = ?self.side, "peer is plain TLS: fallback");
                self.handshake_kind = Some(kind(ssl.ssl().session_reused()));
                self.suite = crate::handshake::suite_of(ssl.ssl());
                let update_after = self.cfg.key_update_records;
                self.state = State::Fallback(Box::new(Fallback::new(ssl, update_after)));
                self.open_fallback_stream();
                self.recv_fallback(buf)
            }
        }
    }

    /// Enters TCPLS mode with generation 0 of both keys and the peer's
    /// parameters: what a finished TCPLS handshake leaves (the test
    /// constructor of established pairs uses it too, so both stay alike).
    pub(super) fn establish_tcpls(
        &mut self,
        peer: TransportParams,
        send: Generation,
        recv: Generation,
    ) {
        let suite = send.key.suite();
        tracing::debug!(side = ?self.side, ?suite, "TCPLS session established");
        self.timers.stop(SessionTimer::Handshake);
        self.peer_params = Some(peer);
        self.suite = Some(suite);
        self.recovery.enabled = self.cfg.failover && peer.failover;
        self.streams.send_credit = SendCredit::new(peer.initial_max_data);
        self.streams.local_limit = peer.max_streams;
        self.state = State::Tcpls(Box::new(Keys {
            send: SendKeys::new(send, self.cfg.key_update_records),
            recv: RecvKeys::new(recv),
        }));
        self.events.push_back(Event::Connected { tcpls: true });
        self.paths.max_connections = self.cfg.max_connections.min(peer.max_connections).max(1);
        if self.side == Side::Server {
            self.paths.tokens.next_seq = 1;
            self.replenish_tokens();
            // In the tokens' record: see `advertised_addresses`.
            for addr in self.cfg.advertised_addresses.clone() {
                let _ = self.advertise_address(addr);
            }
        }
    }

    /// Plain TLS: the TLS byte stream is stream 0, opened by the client.
    fn open_fallback_stream(&mut self) {
        let st = &mut self.streams;
        st.send_credit = SendCredit::new(u64::MAX);
        let mut s = Stream::new(u64::MAX, self.cfg.stream_window, ConnectionId::FIRST);
        s.recv.credit = RecvCredit::new(u64::MAX);
        // Early data to a server that turned out plain TLS (refused): what
        // the client wrote on its first stream goes on the TLS stream; other
        // early streams have no place in plain TLS.
        if let Some(early) = st.map.remove(&StreamId(0)) {
            s.send.unsent = early.send.unsent;
            s.send.fin_queued = early.send.fin_queued;
        }
        for id in std::mem::take(&mut st.map).into_keys() {
            self.events.push_back(Event::StreamReadable(id));
        }
        if self.early.status == super::EarlyData::Pending {
            self.early.status = super::EarlyData::Rejected;
            self.early.sent.clear();
        }
        st.map.insert(StreamId(0), s);
        self.events.push_back(Event::Connected { tcpls: false });
        match self.side {
            Side::Client => st.local_limit = 1,
            Side::Server => {
                st.next_peer = 1;
                st.accept_queue.push_back(StreamId(0));
                self.events.push_back(Event::StreamOpened(StreamId(0)));
            }
        }
    }

    fn recv_fallback(&mut self, buf: &mut BytesMut) -> Result<(), Error> {
        let State::Fallback(fb) = &mut self.state else {
            return Ok(());
        };
        let Some(s) = self.streams.map.get_mut(&StreamId(0)) else {
            buf.clear();
            if fb.tcp_eof {
                // Nobody reads any more: the end deferred by `handle_eof`
                // is due now.
                self.fail(Error::Protocol("TCP connection closed without CLOSE"));
            }
            return Ok(());
        };
        let mut readable = false;
        loop {
            // The window bounds what is held, counted as memory (a record's
            // bytes are copied out and packed, so tiny records cost bytes).
            if !s.recv.has_room(self.cfg.stream_window) {
                break;
            }
            fb.feed(buf);
            match fb.read()? {
                // The application stopped reading: drop what comes.
                FallbackRead::Data(_) if s.recv.done => {}
                FallbackRead::Data(n) => {
                    let data = fb.data(n);
                    Streams::with_asm(&mut self.streams.recv_held, &mut s.recv.asm, |a| {
                        a.push_copy(data)
                    });
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
        // The TCP connection ended earlier (`handle_eof`): once nothing
        // whole is left to decrypt, the session ends as it would have then.
        if fb.tcp_eof && buf.is_empty() && (fb.eof || !fb.has_whole_record()) {
            let e = if fb.eof {
                Error::PeerClosed {
                    code: crate::error::ErrorCode::NO_ERROR,
                    reason: "TLS connection closed".into(),
                }
            } else {
                Error::Protocol("TCP connection closed without CLOSE")
            };
            self.fail(e);
        }
        Ok(())
    }

    /// Decrypts and processes every whole record at the front of `buf`.
    pub(crate) fn recv_records(
        &mut self,
        conn: ConnectionId,
        buf: &mut BytesMut,
    ) -> Result<(), Error> {
        loop {
            let State::Tcpls(keys) = &mut self.state else {
                buf.clear();
                return Ok(());
            };
            let hdr = match RecordHeader::parse(buf) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(()),
                Err(_) => {
                    return self.corrupt_record(
                        conn,
                        buf,
                        Error::BadRecord("malformed record header"),
                    )
                }
            };
            if hdr.content_type != ContentType::ApplicationData {
                return self.corrupt_record(
                    conn,
                    buf,
                    Error::BadRecord("unexpected outer content type"),
                );
            }
            if buf.len() < HEADER_LEN + hdr.len {
                // Wait for the rest. The caller keeps room for it: growing
                // `buf` here would copy the partial record to a new
                // allocation whenever earlier records are still referenced.
                return Ok(());
            }
            let Some(c) = self.paths.conns.get_mut(&conn) else {
                return Ok(());
            };
            let mut rec = buf.split_to(HEADER_LEN + hdr.len);
            let opened = match c.recv_gen {
                Some(gen) => keys.recv.open(gen, conn, c.recv_seq, &mut rec),
                // A join's first record: its key generation is found out.
                None => keys
                    .recv
                    .open_first(conn, c.recv_seq, &mut rec)
                    .map(|(gen, ct, len)| {
                        c.recv_gen = Some(gen);
                        (ct, len)
                    }),
            };
            let (ct, len) = match opened {
                Ok(r) => r,
                Err(Error::KeyLimit) => return Err(Error::KeyLimit),
                Err(e) => return self.corrupt_record(conn, buf, e),
            };
            c.recv_seq += 1;
            c.last_recv = Some(self.now);
            if !c.sent_at.is_empty() && !c.silence_check {
                super::recovery::arm_silence(c, self.cfg.ack_delay);
            }
            c.touch(
                self.now,
                keepalive_interval(&self.cfg, self.side, self.recovery.enabled),
            );
            if self.side == Side::Client && c.recv_seq == 1 && conn != ConnectionId::FIRST {
                // The server's first record on a join carries its challenge:
                // answer on this connection, failover or not.
                c.ack_here = true;
                c.ack_due = true;
            }
            let plain = rec.freeze().slice(HEADER_LEN..HEADER_LEN + len);
            if self.tickets.is_some() && conn == ConnectionId::FIRST {
                self.read_tickets(ct, &plain);
            }
            self.on_record(conn, ct, plain)?;
        }
    }

    /// Client: a record of tickets goes to OpenSSL, which stores them in
    /// the session cache. Reading ends after `MAX_TICKETS_READ` tickets, at
    /// the first other record after a ticket (tickets come together), or
    /// after `TICKET_RECORDS` records without one (0.5-RTT records may
    /// come first).
    fn read_tickets(&mut self, ct: ContentType, plain: &[u8]) {
        let (Some(reader), State::Tcpls(keys)) = (&mut self.tickets, &self.state) else {
            return;
        };
        reader.records += 1;
        let keep = if ct == ContentType::Handshake && only_session_tickets(plain) {
            // Two tickets are what a server sends (and more than a client
            // keeps using); an idle session would otherwise hold its
            // OpenSSL until its next record.
            keys.recv.key_of(0).is_some_and(|k| reader.read(plain, k))
                && reader.fed() < MAX_TICKETS_READ
        } else {
            reader.fed() == 0 && reader.records < TICKET_RECORDS
        };
        if !keep {
            self.tickets = None;
        }
    }

    /// A record on `conn` failed to parse or decrypt: the bytes were changed
    /// on the way (only the peer has the key, and what it seals is
    /// authenticated). With failover that fails this connection over like
    /// a reset, so a corrupting middlebox on one path does not end the
    /// session; after `MAX_CORRUPT_CONNECTIONS` of them the session ends.
    fn corrupt_record(
        &mut self,
        conn: ConnectionId,
        buf: &mut BytesMut,
        e: Error,
    ) -> Result<(), Error> {
        if !self.can_fail_over(conn) || self.recovery.corrupt_connections >= MAX_CORRUPT_CONNECTIONS
        {
            return Err(e);
        }
        self.recovery.corrupt_connections += 1;
        tracing::warn!(side = ?self.side, %conn, error = %e, "corrupt record: failing the connection over");
        buf.clear();
        self.connection_failed(conn, "corrupt record");
        Ok(())
    }

    /// KEY_UPDATE on `conn`: its records after this one use `gen`, which
    /// must be the generation after the one it uses now. This record is
    /// already open, so the switch takes effect at once.
    fn on_key_update(&mut self, conn: ConnectionId, gen: u32) -> Result<(), Error> {
        let State::Tcpls(keys) = &mut self.state else {
            return Ok(());
        };
        let Some(c) = self.paths.conns.get_mut(&conn) else {
            return Ok(());
        };
        let Some(from) = c.recv_gen.filter(|g| g.checked_add(1) == Some(gen)) else {
            return Err(Error::Protocol("KEY_UPDATE out of sequence"));
        };
        // `recv_seq` already counts this record.
        if c.recv_switched_in.replace(c.recv_seq) == Some(c.recv_seq) {
            return Err(Error::Protocol("KEY_UPDATE out of sequence"));
        }
        keys.recv.advance(from)?;
        c.recv_gen = Some(gen);
        keys.recv.prune(&self.paths.conns);
        tracing::debug!(side = ?self.side, %conn, gen, "peer's key updated on a connection");
        Ok(())
    }

    /// Handles one decrypted record of content type `ct`.
    fn on_record(
        &mut self,
        conn: ConnectionId,
        ct: ContentType,
        plain: Bytes,
    ) -> Result<(), Error> {
        match ct {
            ContentType::ApplicationData => {
                let ack = self.on_frames(&plain, conn)?;
                if ack != AckWanted::No && self.recovery.enabled {
                    if let Some(c) = self.paths.conns.get_mut(&conn) {
                        schedule_ack(c, plain.len(), &self.cfg, self.now);
                        // A probe (keepalive, silence or stall PING, a join
                        // challenge) is answered at once: the peer times
                        // its answer in RTTs, without our ACK delay.
                        c.ack_due |= ack == AckWanted::Now;
                    }
                }
                Ok(())
            }
            ContentType::Alert => {
                if plain.len() == 2 && plain[1] == 0 {
                    return Err(Error::PeerClosed {
                        code: ErrorCode::NO_ERROR,
                        reason: "close_notify".into(),
                    });
                }
                Err(Error::Alert(plain.get(1).copied().unwrap_or(0)))
            }
            // NewSessionTicket (type 4): read by `read_tickets`, or not wanted.
            ContentType::Handshake if only_session_tickets(&plain) => Ok(()),
            _ => Err(Error::BadRecord("unexpected inner content type")),
        }
    }

    /// Processes a record's frames; says whether the record asks for an
    /// ACK (anything but ACK and PADDING does; a PING at once).
    fn on_frames(&mut self, plain: &Bytes, arrival: ConnectionId) -> Result<AckWanted, Error> {
        let mut ack = AckWanted::No;
        for frame in FrameIter::new(plain) {
            let frame = frame?;
            let wants = match frame {
                Frame::Ack { .. } | Frame::Padding => AckWanted::No,
                Frame::Ping => AckWanted::Now,
                _ => AckWanted::Soon,
            };
            ack = ack.max(wants);
            self.on_frame(frame, plain, arrival)?;
        }
        Ok(ack)
    }

    /// Hands one frame to the sub-state it concerns.
    pub(super) fn on_frame(
        &mut self,
        frame: Frame<'_>,
        plain: &Bytes,
        arrival: ConnectionId,
    ) -> Result<(), Error> {
        match frame {
            Frame::Padding | Frame::Ping => Ok(()),
            Frame::Stream {
                id,
                offset,
                fin,
                data,
            } => self.on_stream_frame(id, offset, fin, plain.slice_ref(data)),
            Frame::MaxData(max) => {
                self.on_max_data(max);
                Ok(())
            }
            Frame::MaxStreamData { id, max } => self.on_max_stream_data(id, max),
            Frame::MaxStreams(max) => {
                self.on_max_streams(max);
                Ok(())
            }
            Frame::ResetStream {
                id,
                code,
                final_size,
            } => self.on_reset_stream(id, code, final_size),
            Frame::Close { code, reason } => Err(Error::PeerClosed {
                code: ErrorCode(code),
                reason: String::from_utf8_lossy(reason).into_owned(),
            }),
            Frame::NewToken { seq, token } => self.on_new_token(seq, token),
            Frame::StreamChange { id, conn } => self.on_stream_change(id, conn),
            Frame::ConnectionReset { conn } => {
                self.connection_reset_by_peer(conn);
                Ok(())
            }
            Frame::Ack { conn, seq } => self.on_ack(conn, seq, arrival),
            Frame::NewAddress(addr) => self.on_peer_address(addr, true),
            Frame::RemoveAddress(addr) => self.on_peer_address(addr, false),
            Frame::TransportOption {
                request,
                conn,
                option,
                value,
            } => {
                self.on_transport_option(request, conn, option, value);
                Ok(())
            }
            Frame::TransportOptionAck {
                request,
                status,
                reason,
            } => {
                self.on_transport_option_ack(request, status, reason);
                Ok(())
            }
            Frame::TransportOptionData {
                request,
                offset,
                data,
            } => {
                self.on_transport_option_data(request, offset, data);
                Ok(())
            }
            Frame::KeyUpdate { gen } => self.on_key_update(arrival, gen),
        }
    }
}
