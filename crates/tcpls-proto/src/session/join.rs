//! Joining connections to a session: the server issues one-time tokens
//! (NEW_TOKEN), the client opens a TCP connection with a join hello that
//! carries one and a first record sealed under the session keys, and the
//! server attaches the connection once that record decrypts.

use bytes::BytesMut;

use super::connection::{Connection, ConnectionState};
use super::timers::{keepalive_interval, ConnTimer, SessionTimer};
use super::transmit_buf::TransmitBuf;
use super::{Event, Session, State};
use crate::error::{CallError, Error};
use crate::ids::{ConnectionId, Side};
use crate::wire::frame::{Frame, TOKEN_LEN};
use crate::wire::join::encode_join_hello;
use crate::wire::record::{ContentType, RecordHeader, HEADER_LEN};

impl Session {
    /// Join tokens the client holds.
    pub fn available_tokens(&self) -> usize {
        if self.side == Side::Client {
            self.paths.tokens.outstanding.len()
        } else {
            0
        }
    }

    /// Client: whether the server confirmed joined connection `conn` (its
    /// first record on it, which carries the join challenge, arrived):
    /// `Some(false)` while waiting, `None` when the connection is gone.
    pub fn join_confirmed(&self, conn: ConnectionId) -> Option<bool> {
        self.paths.conns.get(&conn).map(|c| c.recv_seq > 0)
    }

    /// Client: takes an unused token and returns the new connection's id
    /// and the bytes to send first on a fresh TCP connection (the join
    /// ClientHello and a first record that proves the session keys). The
    /// connection carries records from then on.
    pub fn join(&mut self) -> Result<(ConnectionId, Vec<u8>), CallError> {
        self.check_open()?;
        if self.side != Side::Client || !matches!(self.state, State::Tcpls(_)) {
            return Err(CallError::Usage(
                "only an established TCPLS client can join",
            ));
        }
        let tokens = &mut self.paths.tokens;
        let (seq, token) = tokens.outstanding.pop_first().ok_or(CallError::Usage(
            "no join token available (max connections reached?)",
        ))?;
        tokens.used_up_to = tokens.used_up_to.max(seq);
        let conn = ConnectionId(seq);
        let mut random = [0u8; 64];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut random);
        let mut out = encode_join_hello(&token, &random);
        let c = self.new_joined_connection(ConnectionState::Active);
        self.paths.conns.insert(conn, c);
        self.timers.stop(SessionTimer::Rejoin);
        self.adopt_primary_if_orphaned(conn);
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        Frame::Ping.encode(&mut out);
        let mut out = TransmitBuf::from(out);
        if let Err(e) = self.seal_record(conn, &mut out, start, None) {
            // Nothing can be sealed: the session cannot go on.
            self.fail_silently(e.clone());
            return Err(CallError::Closed(e));
        }
        self.events.push_back(Event::ConnectionAdded(conn));
        Ok((conn, out.into_vec()))
    }

    /// Server: a new TCP connection presented `token` in a join
    /// ClientHello. Returns the connection id to feed its records to; the
    /// connection is attached once its first record decrypts under that
    /// id. A token that is unknown here is refused without effect.
    pub fn accept_join(&mut self, token: &[u8; TOKEN_LEN]) -> Result<ConnectionId, CallError> {
        self.check_open()?;
        if self.side != Side::Server || !matches!(self.state, State::Tcpls(_)) {
            return Err(CallError::Usage("not an established TCPLS server session"));
        }
        let conn = self
            .paths
            .tokens
            .find(token)
            .map(ConnectionId)
            .ok_or(CallError::JoinRefused("unknown or used token"))?;
        if self.paths.conns.contains_key(&conn) {
            return Err(CallError::JoinRefused(
                "a join with this token is already in progress",
            ));
        }
        let mut c = self.new_joined_connection(ConnectionState::PendingAuth);
        c.token = Some(*token);
        c.timers
            .set(ConnTimer::JoinAuth, self.now + self.cfg.handshake_timeout);
        self.paths.conns.insert(conn, c);
        Ok(conn)
    }

    /// The first records of a joining connection: attach it if the first
    /// record decrypts, else drop the connection and leave the session as
    /// it was.
    pub(crate) fn recv_join(
        &mut self,
        conn: ConnectionId,
        buf: &mut BytesMut,
    ) -> Result<(), CallError> {
        if self.close.error.is_some() {
            self.abandon_join(conn);
            return Err(CallError::JoinRefused("session closed"));
        }
        let State::Tcpls(keys) = &mut self.state else {
            return Err(CallError::JoinRefused("session not established"));
        };
        let hdr = match RecordHeader::parse(buf) {
            Ok(Some(h)) if h.content_type == ContentType::ApplicationData => h,
            Ok(None) => return Ok(()),
            _ => {
                self.abandon_join(conn);
                return Err(CallError::JoinRefused(
                    "first record is not application data",
                ));
            }
        };
        if buf.len() < HEADER_LEN + hdr.len {
            return Ok(());
        }
        let mut first = buf[..HEADER_LEN + hdr.len].to_vec();
        let Ok((gen, _, _)) = keys.recv.open_first(conn, 0, &mut first) else {
            // The token is spent either way: a failed attempt must not
            // leave it replayable, and the client gets a fresh one.
            self.abandon_join(conn);
            return Err(CallError::JoinRefused("first record does not decrypt"));
        };
        if let Some(c) = self.paths.conns.get_mut(&conn) {
            c.recv_gen = Some(gen);
        }
        self.attach_join(conn);
        if let Err(e) = self.recv_records(conn, buf) {
            self.fail(e.clone());
            return Err(CallError::Closed(e));
        }
        Ok(())
    }

    /// A join proved the keys: it carries records from now on.
    /// A joined connection seals with the current key generation; the
    /// peer's generation on it is found out from its first record.
    fn new_joined_connection(&self, state: ConnectionState) -> Connection {
        let mut c = Connection::new(state);
        if let State::Tcpls(keys) = &self.state {
            c.send_gen = keys.send.current.gen;
        }
        c.recv_gen = None;
        c
    }

    fn attach_join(&mut self, conn: ConnectionId) {
        let Some(c) = self.paths.conns.get_mut(&conn) else {
            return;
        };
        c.state = ConnectionState::Active;
        if let State::Tcpls(keys) = &self.state {
            // Nothing was sent on it yet: it starts at the current key.
            c.send_gen = keys.send.current.gen;
        }
        c.unproven = true;
        c.timers.stop(ConnTimer::JoinAuth);
        c.touch(
            self.now,
            keepalive_interval(&self.cfg, self.side, self.recovery.enabled),
        );
        self.timers.stop(SessionTimer::Rejoin);
        if let Some(token) = c.token.take() {
            self.paths.tokens.outstanding.remove(&conn.0);
            self.events.push_back(Event::TokenRetired(token));
        }
        self.events.push_back(Event::ConnectionAdded(conn));
        self.replenish_tokens();
        self.adopt_primary_if_orphaned(conn);
    }

    /// A join that never attached (its first record did not decrypt, or
    /// its connection ended or timed out first): forget it and its token,
    /// and issue a replacement. The session is otherwise untouched.
    pub(crate) fn abandon_join(&mut self, conn: ConnectionId) {
        if let Some(c) = self.paths.conns.remove(&conn) {
            if let Some(token) = c.token {
                self.paths.tokens.outstanding.remove(&conn.0);
                self.events.push_back(Event::TokenRetired(token));
            }
            if self.side == Side::Server && self.close.error.is_none() {
                self.replenish_tokens();
            }
        }
    }

    /// Server: issues tokens until every allowed connection is in use or
    /// has a token outstanding.
    pub(crate) fn replenish_tokens(&mut self) {
        let in_use = self
            .paths
            .conns
            .values()
            .filter(|c| c.state != ConnectionState::Closed)
            .count();
        let tokens = &mut self.paths.tokens;
        while in_use + tokens.outstanding.len() < self.paths.max_connections as usize {
            let mut token = [0u8; TOKEN_LEN];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut token);
            let seq = tokens.next_seq;
            let Some(next) = seq.checked_add(1) else {
                return; // connection ids exhausted: no more joins
            };
            tokens.next_seq = next;
            tokens.outstanding.insert(seq, token);
            self.pending.new_tokens.push_back((seq, token));
            self.events.push_back(Event::TokenIssued(token));
            if self.timers.get(SessionTimer::Tokens).is_none() {
                self.timers
                    .set(SessionTimer::Tokens, self.now + self.cfg.ack_delay);
            }
        }
    }

    /// Client: a NEW_TOKEN from the server.
    pub(crate) fn on_new_token(&mut self, seq: u32, token: [u8; TOKEN_LEN]) -> Result<(), Error> {
        if self.side == Side::Server {
            return Err(Error::Protocol("NEW_TOKEN sent by a client"));
        }
        if seq == 0 {
            return Err(Error::Protocol("NEW_TOKEN for connection 0"));
        }
        // Tokens are re-sent after failures: a known or already used
        // sequence number is a duplicate, not an error.
        let tokens = &mut self.paths.tokens;
        let known = self.paths.conns.contains_key(&ConnectionId(seq))
            || tokens.outstanding.contains_key(&seq)
            || seq <= tokens.used_up_to;
        if !known {
            // Bounded: the server may not have more outstanding than allowed.
            if tokens.outstanding.len() >= self.paths.max_connections as usize {
                return Err(Error::Protocol("too many tokens"));
            }
            tokens.outstanding.insert(seq, token);
            self.events.push_back(Event::TokensAvailable);
        }
        Ok(())
    }
}
