//! Control frames waiting for a record: one struct, so a new kind of frame
//! is added here (a field, `is_empty`, `write_control_frames`) and in
//! [`Session::reannounce`](super::Session) if a lost record may have carried
//! it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use super::stream::Stream;
use crate::ids::{ConnectionId, StreamId};
use crate::wire::frame::{Frame, TOKEN_LEN};
use crate::wire::record::MAX_PLAINTEXT;

/// Most control bytes in one record (the rest is for stream data).
pub(crate) const CONTROL_LIMIT: usize = MAX_PLAINTEXT / 4;

/// Largest NEW_ADDRESS / REMOVE_ADDRESS frame (IPv6).
const ADDRESS_FRAME_MAX: usize = 20;

/// Most streams whose credit waits for a copy on another connection.
const MAX_CREDIT_COPIES: usize = 64;

/// A NEW_TOKEN frame: token, sequence number, type.
const NEW_TOKEN_FRAME: usize = TOKEN_LEN + 4 + 1;

/// Largest MAX_STREAM_DATA frame.
const MAX_STREAM_DATA_FRAME: usize = 13;

/// Control frames to send.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// MAX_DATA with the session's current receive limit.
    pub max_data: bool,
    /// MAX_STREAMS with the current limit of peer streams.
    pub max_streams: bool,
    /// Streams with a MAX_STREAM_DATA to send.
    pub max_stream_data: VecDeque<StreamId>,
    /// Credit (MAX_DATA, and MAX_STREAM_DATA of these streams) to copy
    /// into the next record of a connection other than the one control
    /// frames use: that one may be dead without this side knowing (a
    /// receiver does not see a blackhole in the sender's direction), and
    /// credit lost with it would hold the sender back until the failure
    /// is noticed.
    pub copy_max_data: bool,
    pub credit_copies: VecDeque<StreamId>,
    /// Server: NEW_TOKEN frames (sequence number, token). They ride along
    /// with the next record, and need one of their own only once
    /// `tokens_due` (an ACK delay after they were queued): a session's
    /// tokens then share the record of its first answer instead of costing
    /// the client a record (and a wake-up) of their own.
    pub new_tokens: VecDeque<(u32, [u8; TOKEN_LEN])>,
    /// The tokens waited long enough (`SessionTimer::Tokens`).
    pub tokens_due: bool,
    /// CONNECTION_RESET for connections this side stopped using, each
    /// with the last record received on it (its final ACK), if any.
    pub conn_resets: VecDeque<(ConnectionId, Option<u64>)>,
    /// Address advertisements (address, true = NEW, false = REMOVE).
    pub address_updates: VecDeque<(SocketAddr, bool)>,
    /// Streams whose connection changed: STREAM_CHANGE frames.
    pub stream_changes: VecDeque<StreamId>,
}

/// Values the control frames announce, read when they are written.
pub(crate) struct Limits {
    /// The session's receive limit (MAX_DATA).
    pub max_data: u64,
    /// Peer streams allowed (MAX_STREAMS).
    pub max_streams: u32,
}

impl Pending {
    /// True when no control frame waits to be sent now (tokens not yet
    /// due wait for a record that goes out anyway).
    pub fn is_empty(&self) -> bool {
        !self.max_data
            && !self.max_streams
            && self.max_stream_data.is_empty()
            && (self.new_tokens.is_empty() || !self.tokens_due)
            && self.conn_resets.is_empty()
            && self.address_updates.is_empty()
            && self.stream_changes.is_empty()
    }

    /// Queues a CONNECTION_RESET for `conn` unless one is queued, with
    /// `final_ack`, the last record received on it.
    pub fn reset_connection(&mut self, conn: ConnectionId, final_ack: Option<u64>) {
        if !self.conn_resets.iter().any(|(c, _)| *c == conn) {
            self.conn_resets.push_back((conn, final_ack));
        }
    }

    /// Queues a STREAM_CHANGE for stream `id` unless one is queued.
    pub fn change_stream(&mut self, id: StreamId, s: &mut Stream) {
        if !s.change_pending {
            s.change_pending = true;
            self.stream_changes.push_back(id);
        }
    }

    /// Queues a MAX_STREAM_DATA for stream `id` unless one is queued.
    pub fn max_stream_data(&mut self, id: StreamId, s: &mut Stream) {
        if !s.max_data_pending {
            s.max_data_pending = true;
            self.max_stream_data.push_back(id);
        }
        // Best effort, and bounded: with no other connection to carry
        // them (or an idle one), ids would pile up.
        if self.credit_copies.len() < MAX_CREDIT_COPIES && !self.credit_copies.contains(&id) {
            self.credit_copies.push_back(id);
        }
    }

    /// Encodes what fits of the pending frames into `ctl` for a record on
    /// `conn`. Returns the streams that got their MAX_STREAM_DATA (their
    /// state may now be dropped).
    pub fn write_control_frames(
        &mut self,
        ctl: &mut Vec<u8>,
        conn: ConnectionId,
        streams: &mut HashMap<StreamId, Stream>,
        limits: Limits,
    ) -> Vec<StreamId> {
        if std::mem::take(&mut self.max_data) {
            Frame::MaxData(limits.max_data).encode(ctl);
        }
        if std::mem::take(&mut self.max_streams) {
            Frame::MaxStreams(limits.max_streams).encode(ctl);
        }
        if self.tokens_due {
            self.write_tokens(ctl, CONTROL_LIMIT);
        }
        while ctl.len() < CONTROL_LIMIT {
            if let Some((c, final_ack)) = self.conn_resets.pop_front() {
                Frame::ConnectionReset { conn: c }.encode(ctl);
                // After the reset, so the peer (which reads frames from the
                // end) applies it first: what arrived on `c` is then not
                // sent again, only what was lost with it. A rejoining
                // client spares itself the replay of everything the
                // server had in flight.
                if let Some(seq) = final_ack {
                    Frame::Ack { conn: c, seq }.encode(ctl);
                }
            } else {
                break;
            }
        }
        self.write_address_updates(ctl);
        self.write_stream_changes(ctl, conn, streams);
        let mut credited = Vec::new();
        while ctl.len() + MAX_STREAM_DATA_FRAME <= CONTROL_LIMIT {
            let Some(id) = self.max_stream_data.pop_front() else {
                break;
            };
            if let Some(s) = streams.get_mut(&id) {
                s.max_data_pending = false;
                let max = s.recv.credit.advertised();
                Frame::MaxStreamData { id, max }.encode(ctl);
                credited.push(id);
            }
        }
        credited
    }

    /// Copies of the latest credit (see `copy_max_data`) into a record of
    /// another connection than the control frames', within
    /// `CONTROL_LIMIT`. Receivers take the highest limit seen.
    pub fn write_credit_copies(
        &mut self,
        ctl: &mut Vec<u8>,
        streams: &HashMap<StreamId, Stream>,
        max_data: u64,
    ) {
        if std::mem::take(&mut self.copy_max_data) {
            Frame::MaxData(max_data).encode(ctl);
        }
        while ctl.len() + MAX_STREAM_DATA_FRAME <= CONTROL_LIMIT {
            let Some(id) = self.credit_copies.pop_front() else {
                break;
            };
            if let Some(s) = streams.get(&id) {
                let max = s.recv.credit.advertised();
                Frame::MaxStreamData { id, max }.encode(ctl);
            }
        }
    }

    /// Encodes NEW_TOKEN frames into `ctl` while it stays within `limit`.
    pub fn write_tokens(&mut self, ctl: &mut Vec<u8>, limit: usize) {
        while ctl.len() + NEW_TOKEN_FRAME <= limit {
            let Some((seq, token)) = self.new_tokens.pop_front() else {
                break;
            };
            Frame::NewToken { seq, token }.encode(ctl);
        }
        if self.new_tokens.is_empty() {
            self.tokens_due = false;
        }
    }

    /// The receiver applies a record's frames from its end: address
    /// updates go in reverse, so that they take effect in the order they
    /// were made (an address advertised, withdrawn, advertised again).
    fn write_address_updates(&mut self, ctl: &mut Vec<u8>) {
        let fit = CONTROL_LIMIT.saturating_sub(ctl.len()) / ADDRESS_FRAME_MAX;
        let n = self.address_updates.len().min(fit);
        for &(addr, add) in self.address_updates.range(..n).rev() {
            if add {
                Frame::NewAddress(addr).encode(ctl);
            } else {
                Frame::RemoveAddress(addr).encode(ctl);
            }
        }
        self.address_updates.drain(..n);
    }

    /// STREAM_CHANGE frames of streams now sent on `conn`. A STREAM_CHANGE
    /// travels on the connection it names, so it can never arrive before
    /// that connection is attached at the peer.
    pub fn write_stream_changes(
        &mut self,
        ctl: &mut Vec<u8>,
        conn: ConnectionId,
        streams: &mut HashMap<StreamId, Stream>,
    ) {
        for _ in 0..self.stream_changes.len() {
            if ctl.len() >= CONTROL_LIMIT {
                break;
            }
            let Some(id) = self.stream_changes.pop_front() else {
                break;
            };
            match streams.get_mut(&id) {
                Some(s) if s.conn == conn => {
                    s.change_pending = false;
                    Frame::StreamChange { id, conn }.encode(ctl);
                }
                Some(_) => self.stream_changes.push_back(id),
                None => {}
            }
        }
    }
}
