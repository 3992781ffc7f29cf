//! TLS 1.3 early data (0-RTT) for TCPLS, both sides.
//!
//! The client's early data travels through OpenSSL (`SSL_write_early_data`:
//! sealed under the early traffic secret, so that OpenSSL's own
//! EndOfEarlyData keeps its sequence number) as *early units*: a 16-bit
//! length and a record's plaintext (TCPLS frames; only STREAM and PADDING).
//! The units copy the streams' first bytes without consuming them: if the
//! server accepts the early data they are marked sent and acknowledged at
//! the end of the handshake, if it refuses they simply go out again as
//! ordinary records. FIN never travels early.
//!
//! The server reads early data while its handshake runs. As soon as it
//! accepted early data and wrote its Finished, it runs TCPLS for sending
//! (its application key exists) while OpenSSL still reads the client's
//! EndOfEarlyData and Finished: its answers to early requests leave at
//! once (0.5-RTT). Its OpenSSL then writes the session tickets with
//! sequence numbers from 0, which the session's own records already used:
//! each ticket record is opened and sealed again at the session's next
//! sequence number. The client does the reverse for its OpenSSL (see
//! `handshake::TicketReader`).

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;

use super::keys::{Generation, RecvKeys};
use super::timers::SessionTimer;
use super::{Keys, Session, State};
use crate::error::Error;
use crate::handshake::{Handshake, Outcome};
use crate::ids::{ConnectionId, Side, StreamId};
use crate::wire::frame::{stream_header, Frame, FrameIter, STREAM_HEADER_LEN};
use crate::wire::record::{split_records, HEADER_LEN};

/// Streams a client may open before the handshake (the server's limit is
/// not known yet; TCPLS's default is 256).
pub(crate) const EARLY_STREAMS: u32 = 4;

/// What became of early data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EarlyData {
    /// None was sent: no ticket allowing it, or not asked for.
    NotAttempted,
    /// Sent (or about to be); the handshake has not told yet.
    Pending,
    /// The server took it: it was delivered once.
    Accepted,
    /// The server refused it: it was sent again after the handshake.
    Rejected,
}

impl EarlyData {
    /// `none`, `pending`, `accepted` or `rejected`, as in JSON reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAttempted => "none",
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
        }
    }
}

/// Early data state of a session.
pub(crate) struct Early {
    pub status: EarlyData,
    /// Client: the ClientHello waits for the application's first write
    /// (so that the request leaves with it, in the SYN with Fast Open).
    pub hold: bool,
    /// Client: bytes of each stream sent early (from offset 0).
    pub sent: BTreeMap<StreamId, u64>,
    /// Server: early bytes received, not yet a whole unit.
    pub units: Vec<u8>,
    /// Server: the handshake still reading the client's EndOfEarlyData
    /// and Finished while the session already sends.
    pub finishing: Option<Box<Handshake>>,
}

impl Default for Early {
    fn default() -> Self {
        Self {
            status: EarlyData::NotAttempted,
            hold: false,
            sent: BTreeMap::new(),
            units: Vec::new(),
            finishing: None,
        }
    }
}

impl Session {
    /// Starts a client session that sends early data (0-RTT) when the
    /// session cache holds a ticket of `server_name` that allows it: the
    /// application may open streams and write at once, and what it writes
    /// before the handshake ends (up to the ticket's limit) leaves with
    /// the ClientHello. The ClientHello waits for the first write (or
    /// [`Self::start_handshake`]) so that they travel together.
    ///
    /// Early data can be replayed by an attacker: send early only what is
    /// safe to process twice (an idempotent request). Without such a
    /// ticket this is [`Self::connect`]; [`Self::early_data`] tells.
    pub fn connect_early(
        config: std::sync::Arc<crate::config::ClientConfig>,
        server_name: &str,
        port: Option<u16>,
        now: Instant,
    ) -> Result<Self, Error> {
        let mut hs = Handshake::client(&config, server_name, port, config.early_data)?;
        let early = hs.early_budget() > 0;
        if !early {
            hs.drive()?;
        }
        let mut s = Self::new(
            Side::Client,
            config.transport.clone(),
            State::Handshake(Box::new(hs)),
            now,
        );
        if early {
            s.early.status = EarlyData::Pending;
            s.early.hold = true;
            s.streams.local_limit = EARLY_STREAMS;
        }
        Ok(s)
    }

    /// What became of early data (see [`Self::connect_early`]).
    pub fn early_data(&self) -> EarlyData {
        self.early.status
    }

    /// Client: sends the ClientHello now, with whatever early data is
    /// written (an early session otherwise waits for the first write).
    pub fn start_handshake(&mut self) {
        self.early.hold = false;
    }

    /// Client: whether `poll_transmit` has early data (or the held
    /// ClientHello) to send now.
    pub(crate) fn early_wants_transmit(&self) -> bool {
        if !self.early_open() {
            return false;
        }
        let State::Handshake(hs) = &self.state else {
            return false;
        };
        let new_bytes = self.streams.map.iter().any(|(id, s)| {
            s.send.unsent.front().len() as u64 > self.early.sent.get(id).copied().unwrap_or(0)
        });
        if !hs.started() {
            return !self.early.hold
                || new_bytes
                || self.streams.map.values().any(|s| s.send.fin_queued);
        }
        new_bytes && hs.early_budget() > 2 + STREAM_HEADER_LEN
    }

    /// True while a client may open streams and write before the
    /// handshake ends.
    pub(crate) fn early_open(&self) -> bool {
        self.side == Side::Client && self.early.status == EarlyData::Pending
    }

    /// Client: writes the streams' new bytes as early data, within the
    /// ticket's limit; the first call sends the ClientHello.
    pub(crate) fn write_early_units(&mut self) -> Result<(), Error> {
        if self.early.status != EarlyData::Pending || self.side != Side::Client {
            return Ok(());
        }
        let State::Handshake(hs) = &mut self.state else {
            return Ok(());
        };
        if self.early.hold {
            let writes = self
                .streams
                .map
                .values()
                .any(|s| !s.send.unsent.is_empty() || s.send.fin_queued);
            if !writes {
                return Ok(());
            }
            self.early.hold = false;
        }
        let mut wrote = false;
        let ids: Vec<StreamId> = self.streams.map.keys().copied().collect();
        for id in ids {
            let budget = hs.early_budget();
            if budget <= 2 + STREAM_HEADER_LEN {
                break;
            }
            let Some(s) = self.streams.map.get(&id) else {
                continue;
            };
            let done = self.early.sent.get(&id).copied().unwrap_or(0);
            // Only the send queue's first contiguous piece: early data is
            // a request's worth, not a transfer.
            let front = s.send.unsent.front();
            let Some(rest) = front.get(done as usize..).filter(|r| !r.is_empty()) else {
                continue;
            };
            let k = rest
                .len()
                .min(budget - 2 - STREAM_HEADER_LEN)
                .min(u16::MAX as usize - STREAM_HEADER_LEN);
            let mut unit = Vec::with_capacity(2 + k + STREAM_HEADER_LEN);
            unit.extend_from_slice(&((k + STREAM_HEADER_LEN) as u16).to_be_bytes());
            unit.extend_from_slice(&rest[..k]);
            unit.extend_from_slice(&stream_header(id, done, k as u16, false));
            hs.write_early(&unit)?;
            *self.early.sent.entry(id).or_insert(0) += k as u64;
            wrote = true;
        }
        if !wrote && !hs.started() {
            // Nothing to send early after all: an empty unit sends the
            // ClientHello.
            hs.write_early(&[0, 0])?;
        }
        Ok(())
    }

    /// Client, at the end of the handshake: accepted early bytes count as
    /// sent and acknowledged; refused ones are still queued and go out as
    /// records. Streams opened early get the server's real credit.
    pub(crate) fn finish_early_client(&mut self, accepted: Option<bool>) {
        if self.side != Side::Client || self.early.status != EarlyData::Pending {
            return;
        }
        let peer = self.peer_params.unwrap_or_default();
        for s in self.streams.map.values_mut() {
            s.send.credit = super::flow::SendCredit::new(peer.initial_max_stream_data);
        }
        let accepted = accepted == Some(true);
        self.early.status = if accepted {
            EarlyData::Accepted
        } else {
            EarlyData::Rejected
        };
        if !accepted {
            self.early.sent.clear();
            return;
        }
        let sent = std::mem::take(&mut self.early.sent);
        let st = &mut self.streams;
        for (id, n) in sent {
            let Some(s) = st.map.get_mut(&id) else {
                continue;
            };
            s.send.unsent.advance(n as usize, &mut st.block_pool);
            let _ = st.budget.dequeued(n as usize, self.cfg.session_send_buffer);
            s.send.offset += n;
            s.send.credit.consume(n);
            st.send_credit.consume(n);
        }
        tracing::debug!(side = ?self.side, "early data accepted");
    }

    /// Server, while its handshake runs: once early data is accepted and
    /// the server's Finished is written, the session starts sending with
    /// its application key (0.5-RTT); OpenSSL goes on reading the client's
    /// EndOfEarlyData and Finished (`recv_finishing`).
    pub(crate) fn maybe_start_early_server(&mut self) -> Result<(), Error> {
        let State::Handshake(hs) = &self.state else {
            return Ok(());
        };
        let (Some(secret), Some(peer), Some(suite)) =
            (hs.early_send_secret(), hs.peer_params(), hs.suite())
        else {
            return Ok(());
        };
        let State::Handshake(hs) = std::mem::replace(&mut self.state, State::Done) else {
            unreachable!("checked above");
        };
        let send = Generation::first(suite, secret.clone())?;
        // The client's key comes with its Finished; until then no record
        // of ours can arrive (input goes to the handshake), and this
        // stand-in is never used to open one.
        let stand_in = Generation::first(suite, secret)?;
        self.establish_tcpls(peer, send, stand_in);
        // The handshake is not over: keep it bounded.
        self.timers.set(
            SessionTimer::Handshake,
            self.now + self.cfg.handshake_timeout,
        );
        self.early.status = EarlyData::Accepted;
        self.early.finishing = Some(hs);
        tracing::debug!(side = ?self.side, "early data accepted: sending before the client's Finished");
        self.take_early_units()
    }

    /// Server: processes the whole early units received so far.
    pub(crate) fn take_early_units(&mut self) -> Result<(), Error> {
        let more = match (&mut self.early.finishing, &mut self.state) {
            (Some(hs), _) => hs.take_early(),
            (None, State::Handshake(hs)) => hs.take_early(),
            _ => Vec::new(),
        };
        self.early.units.extend_from_slice(&more);
        loop {
            let units = &self.early.units;
            if units.len() < 2 {
                break;
            }
            let n = u16::from_be_bytes([units[0], units[1]]) as usize;
            if units.len() < 2 + n {
                break;
            }
            let plain = Bytes::copy_from_slice(&units[2..2 + n]);
            self.early.units.drain(..2 + n);
            for frame in FrameIter::new(&plain) {
                match frame? {
                    f @ Frame::Stream { .. } => self.on_frame(f, &plain, ConnectionId::FIRST)?,
                    Frame::Padding => {}
                    _ => return Err(Error::Protocol("frame not allowed in early data")),
                }
            }
        }
        Ok(())
    }

    /// Server: input while the handshake finishes after early data.
    pub(crate) fn recv_finishing(&mut self, buf: &mut bytes::BytesMut) -> Result<(), Error> {
        let Some(hs) = &mut self.early.finishing else {
            return Ok(());
        };
        hs.feed(buf);
        buf.clear();
        let done = hs.drive();
        let mut out = Vec::new();
        hs.take_output(&mut out);
        self.take_early_units()?;
        if !done? {
            self.raw_out.extend_from_slice(&out);
            return Ok(());
        }
        let Some(hs) = self.early.finishing.take() else {
            return Ok(());
        };
        self.handshake_info = Some(Box::new(hs.info()));
        let Outcome::Tcpls {
            recv,
            leftover,
            resumed,
            retired,
            ..
        } = hs.finish()?
        else {
            return Err(Error::Internal("early data without TCPLS".into()));
        };
        self.timers.stop(SessionTimer::Handshake);
        self.handshake_kind = Some(super::recv::kind(resumed));
        self.retired_tls = retired;
        let State::Tcpls(keys) = &mut self.state else {
            return Ok(());
        };
        keys.recv = RecvKeys::new(recv);
        self.reseal_tickets(&out)?;
        buf.extend_from_slice(&leftover);
        self.recv_records(ConnectionId::FIRST, buf)
    }

    /// Server: the ticket records OpenSSL wrote (sequence numbers 0.. of
    /// the first connection, which the session's own records already used)
    /// sealed again at the session's next sequence numbers, ahead of any
    /// later record.
    fn reseal_tickets(&mut self, records: &[u8]) -> Result<(), Error> {
        let State::Tcpls(keys) = &mut self.state else {
            return Ok(());
        };
        let Keys { send, .. } = &mut **keys;
        let Some(c) = self.paths.conns.get_mut(&ConnectionId::FIRST) else {
            return Ok(());
        };
        for (openssl_seq, rec) in split_records(records).enumerate() {
            let key = send.seal_key(0)?;
            let mut rec = rec.to_vec();
            // Opened in place, the plaintext is sealed again where it lies.
            let (ct, plain_len) = key.open(ConnectionId::FIRST, openssl_seq as u64, &mut rec)?;
            rec.truncate(HEADER_LEN + plain_len);
            key.seal(ConnectionId::FIRST, c.send_seq, ct, &mut rec, 0)?;
            c.send_seq += 1;
            self.raw_out.extend_from_slice(&rec);
        }
        Ok(())
    }
}
