//! The TCP connections of a session, and the one-time tokens that let new
//! connections join it.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use subtle::ConstantTimeEq;

use super::scheduler::PathEstimate;
use super::timers::{ConnTimer, TimerTable};
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
    /// When each record still in `unacked` was sent (oldest first).
    pub sent_at: VecDeque<(u64, Instant)>,
    /// Since when records have been outstanding without a break.
    pub busy_since: Option<Instant>,
    /// The oldest record is overdue: the runtime should say whether TCP
    /// too went silent on this connection (`Session::tcp_silence`).
    pub silence_check: bool,
    /// That question is about an unanswered probe: TCP silent too fails
    /// the connection; TCP still acknowledging gives the peer longer.
    pub probe_check: bool,
    /// Ack-eliciting records and bytes received since our last ACK.
    pub ack_records: u32,
    pub ack_bytes: usize,
    /// An ACK for this connection is due now (a delayed one waits for
    /// [`ConnTimer::Ack`]).
    pub ack_due: bool,
    /// A PING must go out on this connection.
    pub ping_due: bool,
    /// Sequence number of the record carrying the outstanding keepalive
    /// PING (its deadline is [`ConnTimer::Probe`]).
    pub probe: Option<u64>,
    /// When that PING went out.
    pub probe_sent: Option<Instant>,
    /// Join authentication, delayed ACK, probe and keepalive deadlines.
    pub timers: TimerTable<ConnTimer>,
    /// Stream bytes sent on this connection, and of them unacknowledged
    /// (for schedulers).
    pub sent_bytes: u64,
    pub unacked_bytes: u64,
    /// RTT, congestion window, rate and loss the runtime reported
    /// (TCP_INFO).
    pub estimate: PathEstimate,
    /// The peer said (CONNECTION_RESET) it lost this connection.
    pub peer_reset: bool,
    /// No ACK for this connection's records for well over its RTT: what it
    /// carried was sent again elsewhere and it takes no stream data until
    /// an ACK shows the path works again (`recovery.rs`).
    pub stalled: bool,
    /// The first record sent after the stall (its probe): an ACK from
    /// there on ends it.
    pub stall_seq: u64,
    /// Records below this sequence number were acknowledged.
    pub acked_up_to: u64,
    /// When the last record arrived on it (a path that delivers to us is
    /// not stalled, whatever its ACKs do).
    pub last_recv: Option<Instant>,
    /// Server, a joined connection: the client has not yet shown that it
    /// receives on this TCP connection, so no stream data goes on it. (A
    /// join's first flight can be copied by an on-path observer and sent
    /// from its own socket; only the real client can answer the challenge
    /// sent back on it.)
    pub unproven: bool,
    /// Server: the record the PING challenge went out in (none yet: it is
    /// due); an ACK covering it, arriving on this same connection, is the
    /// proof.
    pub challenge: Option<u64>,
    /// Client: the ACK for this connection must travel on it (it answers
    /// the server's challenge).
    pub ack_here: bool,
    /// `recv_seq` as of the last ACK of this connection sent as a copy on
    /// another one (`recovery::encode_acks`).
    pub ack_copied: u64,
    /// Key generation this side seals with on this connection
    /// (`session/keys.rs`)...
    pub send_gen: u32,
    /// ...and must announce a newer one (KEY_UPDATE) in its next record.
    pub key_update_due: bool,
    /// Key generation the peer's records on it use; `None` until its
    /// first record (a join's) tells.
    pub recv_gen: Option<u32>,
    /// The peer's record (its sequence number plus one) that switched
    /// `recv_gen` last: a second KEY_UPDATE in one record is refused.
    pub recv_switched_in: Option<u64>,
}

impl Connection {
    pub fn new(state: ConnectionState) -> Self {
        Self {
            state,
            send_seq: 0,
            recv_seq: 0,
            token: None,
            unacked: VecDeque::new(),
            sent_at: VecDeque::new(),
            busy_since: None,
            silence_check: false,
            probe_check: false,
            ack_records: 0,
            ack_bytes: 0,
            ack_due: false,
            ping_due: false,
            probe: None,
            probe_sent: None,
            timers: TimerTable::default(),
            sent_bytes: 0,
            unacked_bytes: 0,
            estimate: PathEstimate::default(),
            peer_reset: false,
            stalled: false,
            stall_seq: 0,
            acked_up_to: 0,
            last_recv: None,
            unproven: false,
            challenge: None,
            ack_here: false,
            ack_copied: 0,
            send_gen: 0,
            key_update_due: false,
            recv_gen: Some(0),
            recv_switched_in: None,
        }
    }

    /// Records may be built for it.
    pub fn can_send(&self) -> bool {
        self.state == ConnectionState::Active
    }

    /// Server: the PING challenge of a joined connection must go out.
    pub fn challenge_due(&self) -> bool {
        self.unproven && self.challenge.is_none()
    }

    /// Stream data may go on it (records can be built, and for a join the
    /// client proved it receives on it).
    pub fn carries_data(&self) -> bool {
        self.can_send() && !self.unproven && !self.stalled
    }

    /// Something arrived at `now` that proves the path works: the keepalive
    /// interval starts again (unless a PING is due or waits for its ACK).
    pub fn touch(&mut self, now: Instant, keepalive: Option<std::time::Duration>) {
        if let Some(k) = keepalive.filter(|_| self.probe.is_none() && !self.ping_due) {
            self.timers.set(ConnTimer::Keepalive, now + k);
        }
    }
}

/// Tokens of a session: on the server, issued and not yet used (at most
/// `max_connections - 1` outstanding); on the client, received and unused.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    /// seq -> token.
    pub outstanding: BTreeMap<u32, [u8; TOKEN_LEN]>,
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
