//! The TCP connections of a session, and the one-time tokens that let new
//! connections join it.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use subtle::ConstantTimeEq;

use crate::ids::{ConnectionId, StreamId};
use crate::wire::frame::TOKEN_LEN;

/// Lifecycle of one TCP connection inside a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Server side of a join: the token matched, but no record has
    /// decrypted under this connection id yet.
    PendingAuth,
    /// Carrying records.
    Active,
    /// This side stopped sending on it (migration or explicit close); the
    /// peer's remaining records are still read until its FIN.
    Draining,
    /// Gone (FIN seen after draining, reset, or failure).
    Closed,
}

/// Something sent in a record that must be replayed elsewhere if the
/// record is never acknowledged.
#[derive(Debug, Clone)]
pub(crate) enum Sent {
    Stream {
        id: StreamId,
        offset: u64,
        data: Bytes,
        fin: bool,
    },
    Reset {
        id: StreamId,
        code: u32,
        final_size: u64,
    },
}

/// One TCP connection: id (part of the nonce) and record sequence numbers.
#[derive(Debug)]
pub(crate) struct Connection {
    pub state: ConnectionState,
    pub send_seq: u64,
    pub recv_seq: u64,
    /// The token this connection joined with (server), retired on attach.
    pub token: Option<[u8; TOKEN_LEN]>,
    /// Sent and not yet acknowledged: (record sequence, what it carried).
    pub unacked: VecDeque<(u64, Sent)>,
    /// Ack-eliciting records and bytes received since our last ACK.
    pub ack_records: u32,
    pub ack_bytes: usize,
    /// An ACK for this connection is due (now, or at `ack_deadline`).
    pub ack_due: bool,
    pub ack_deadline: Option<Instant>,
    /// When a record last arrived.
    pub last_recv: Option<Instant>,
    /// A PING must go out on this connection.
    pub ping_due: bool,
    /// Sequence and send time of the outstanding keepalive PING.
    pub probe: Option<(u64, Instant)>,
    /// Stream bytes sent on this connection, and of them unacknowledged
    /// (for schedulers).
    pub sent_bytes: u64,
    pub unacked_bytes: u64,
    /// RTT and congestion window the runtime reported (TCP_INFO).
    pub rtt: Option<std::time::Duration>,
    pub cwnd_bytes: Option<u64>,
}

impl Connection {
    pub fn new(state: ConnectionState) -> Self {
        Self {
            state,
            send_seq: 0,
            recv_seq: 0,
            token: None,
            unacked: VecDeque::new(),
            ack_records: 0,
            ack_bytes: 0,
            ack_due: false,
            ack_deadline: None,
            last_recv: None,
            ping_due: false,
            probe: None,
            sent_bytes: 0,
            unacked_bytes: 0,
            rtt: None,
            cwnd_bytes: None,
        }
    }

    /// Records may be built for it.
    pub fn can_send(&self) -> bool {
        self.state == ConnectionState::Active
    }
}

/// Tokens of a session: on the server, issued and not yet used (at most
/// `max_connections - 1` outstanding); on the client, received and unused.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    /// seq -> token.
    pub outstanding: BTreeMap<u32, [u8; TOKEN_LEN]>,
    /// Server: tokens to announce in NEW_TOKEN frames.
    pub to_send: VecDeque<(u32, [u8; TOKEN_LEN])>,
    /// Server: next sequence number (connection id) to issue.
    pub next_seq: u32,
    /// Client: highest sequence number used to join (tokens are issued in
    /// order, so anything at or below it is a re-sent duplicate).
    pub used_up_to: u32,
}

impl Tokens {
    /// Finds the sequence number of `token`, comparing every candidate in
    /// constant time (the loop does not stop at a match).
    pub fn find(&self, token: &[u8; TOKEN_LEN]) -> Option<u32> {
        let mut found = None;
        for (seq, t) in &self.outstanding {
            if bool::from(t.ct_eq(token)) {
                found = Some(*seq);
            }
        }
        found
    }
}

/// Connection ids in a map ordered by id.
pub(crate) type Connections = BTreeMap<ConnectionId, Connection>;
