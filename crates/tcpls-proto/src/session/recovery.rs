//! Failover: record acknowledgements, what was sent and is not yet
//! acknowledged, replay of it after a connection fails, keepalive probes,
//! and what a connection's failure does to the session. Every way a
//! connection can fail (reset, unexpected FIN, unacknowledged probe, the
//! peer's CONNECTION_RESET) ends in [`Session::connection_failed`] or
//! [`Session::connection_reset_by_peer`] here.

use std::collections::VecDeque;
use std::time::Instant;

use super::connection::{Connection, Connections, Sent};
use super::record_builder::RecordBuilder;
use super::timers::{keepalive_interval, ConnTimer, SessionTimer};
use super::{Event, Session, State};
use crate::config::TransportConfig;
use crate::error::{Error, ErrorCode};
use crate::ids::{ConnectionId, Side};
use crate::wire::frame::{Frame, ACK_FRAME_LEN, STREAM_HEADER_LEN};

/// Connections remembered as failed (their CONNECTION_RESET is re-sent
/// after every later failure, in case the first one was lost too).
const FAILED_REMEMBERED: usize = 64;

/// The session's failover state.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    /// Both sides acknowledge records and replay after failures.
    pub enabled: bool,
    /// Sent data of failed (or stalled) connections, to send again first,
    /// with the connection and record that carried it: an ACK that still
    /// comes for that record (a rejoining client's final ACK, a stalled
    /// connection's late one) takes it off the queue.
    pub replay: VecDeque<(ConnectionId, u64, Sent)>,
    /// Connections that failed recently.
    pub failed_conns: VecDeque<(ConnectionId, Option<u64>)>,
    /// Connections failed over because a record arrived corrupted.
    pub corrupt_connections: u32,
    /// Connections found stalled (`Session::stall_connection`).
    pub stalls: u64,
}

/// Shortest wait for a probe's ACK, whatever the RTT: timer and
/// scheduling jitter, and the peer's own processing.
const MIN_PROBE_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a PING probe on `c` may wait for its ACK before the connection
/// fails: two RTTs (the peer answers a PING at once) and some slack when
/// the RTT is known, at least 100 ms, at most `probe_timeout` (and
/// `probe_timeout` without an RTT). A late ACK queued behind data does not
/// fail the connection anyway: records arriving on it count as an answer.
fn probe_wait(c: &Connection, cfg: &TransportConfig) -> std::time::Duration {
    c.estimate.rtt.map_or(cfg.probe_timeout, |rtt| {
        (rtt * 2 + PROBE_SLACK).clamp(MIN_PROBE_WAIT, cfg.probe_timeout.max(MIN_PROBE_WAIT))
    })
}

/// Slack on top of a probe's two RTTs: the peer's own processing and
/// timer jitter.
const PROBE_SLACK: std::time::Duration = std::time::Duration::from_millis(10);

/// Slack on top of 1.5 RTT and the ACK delay before a connection whose
/// records go unacknowledged counts as stalled: timer and scheduling
/// jitter.
const STALL_SLACK: std::time::Duration = std::time::Duration::from_millis(10);

/// How long `c`'s oldest unacknowledged record may wait for its ACK: the
/// record's round trip (1.5 smoothed RTTs, for queueing), the peer's ACK
/// delay (ours: the peer does not announce its own) and some slack.
fn stall_limit(c: &Connection, ack_delay: std::time::Duration) -> Option<std::time::Duration> {
    let rtt = c.estimate.rtt?;
    Some(rtt + rtt / 2 + ack_delay + STALL_SLACK)
}

/// Past one smoothed RTT and the ACK delay, an unacknowledged record is
/// overdue by this much before the runtime is asked whether TCP went
/// silent too (`Session::silence_checks`).
const SILENCE_SLACK: std::time::Duration = std::time::Duration::from_millis(20);

/// While TCP still acknowledges (a loss being repaired, a queue), the
/// question is asked again this often, until the stall limit.
pub(crate) const SILENCE_RECHECK: std::time::Duration = std::time::Duration::from_millis(10);

/// How long after a probe went out, unanswered, the connection may live
/// on while TCP shows the peer's kernel acknowledging it: the peer's
/// application is slow (starved of CPU, say), not the path, and failing
/// the connection would only cost a rejoin. A middlebox that acknowledges
/// segments it never forwards is caught after this.
pub(crate) const SLOW_PEER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// Arms `c`'s silence check while it has records outstanding: when the
/// oldest one is overdue (its ACK is expected about one RTT and the ACK
/// delay after it was sent), or sooner when the peer, heard from since
/// records have been outstanding, went quiet for the ACK delay and some (a
/// busy path brings the peer's ACK records every ACK delay). Disarmed
/// when nothing is outstanding.
pub(crate) fn arm_silence(c: &mut Connection, ack_delay: std::time::Duration) {
    let Some(&(_, sent)) = c.sent_at.front().filter(|_| !c.stalled) else {
        c.busy_since = None;
        c.timers.stop(ConnTimer::Silence);
        return;
    };
    let busy_since = *c.busy_since.get_or_insert(sent);
    let overdue = c
        .estimate
        .rtt
        .map(|rtt| sent + rtt + ack_delay + SILENCE_SLACK);
    let quiet = c
        .last_recv
        .filter(|l| *l >= busy_since)
        .map(|l| l + ack_delay + SILENCE_SLACK);
    match overdue.into_iter().chain(quiet).min() {
        Some(at) => c.timers.set(ConnTimer::Silence, at),
        None => c.timers.stop(ConnTimer::Silence),
    }
}

impl Recovery {
    /// Records what record `seq` of `c` carried: it is kept until
    /// acknowledged. The only place sent records are recorded.
    pub fn record_sent(&self, c: &mut Connection, seq: u64, sent: &mut Vec<Sent>, now: Instant) {
        if !self.enabled {
            sent.clear();
            return;
        }
        if !sent.is_empty() {
            c.sent_at.push_back((seq, now));
        }
        for item in sent.drain(..) {
            // Replayed bytes count toward the session's bound on
            // unacknowledged data like new ones (ACKs subtract them).
            if let Sent::Stream { data, .. } = &item {
                c.unacked_bytes += data.len() as u64;
            }
            c.unacked.push_back((seq, item));
        }
    }

    /// Moves what `c` (connection `conn`) sent and nobody acknowledged to
    /// the replay queue.
    pub fn requeue_unacked(&mut self, conn: ConnectionId, c: &mut Connection) {
        c.unacked_bytes = 0;
        c.timers.stop(ConnTimer::Stall);
        c.timers.stop(ConnTimer::Silence);
        c.sent_at.clear();
        c.busy_since = None;
        c.silence_check = false;
        self.replay
            .extend(c.unacked.drain(..).map(|(seq, sent)| (conn, seq, sent)));
    }

    /// The peer acknowledged `conn`'s records up to `seq`: what of them
    /// waits for replay need not go again.
    fn acked_replay(&mut self, conn: ConnectionId, seq: u64) {
        if !self.replay.is_empty() {
            self.replay.retain(|(c, s, _)| *c != conn || *s > seq);
        }
    }

    /// True while some sent stream data waits for acknowledgement: on any
    /// connection but `besides` (whose records reach the peer before
    /// anything sent on it later), or for replay.
    pub fn has_unacked(&self, conns: &Connections, besides: Option<ConnectionId>) -> bool {
        conns
            .iter()
            .any(|(id, c)| Some(*id) != besides && !c.unacked.is_empty())
            || !self.replay.is_empty()
    }

    /// Bytes sent on every connection and not yet acknowledged.
    pub fn unacked_total(conns: &Connections) -> u64 {
        conns.values().map(|c| c.unacked_bytes).sum()
    }
}

/// An ack-eliciting record of `len` bytes arrived on `c`: an ACK is due
/// after enough of them, or after the ACK delay.
pub(crate) fn schedule_ack(c: &mut Connection, len: usize, cfg: &TransportConfig, now: Instant) {
    c.ack_records += 1;
    c.ack_bytes += len;
    if c.ack_records >= cfg.ack_every_records || c.ack_bytes >= cfg.ack_every_bytes {
        c.ack_due = true;
    } else if c.timers.get(ConnTimer::Ack).is_none() {
        c.timers.set(ConnTimer::Ack, now + cfg.ack_delay);
    }
}

/// Appends an ACK (up to the last record received) for every connection
/// `wanted` selects, while `ctl` stays within `limit` bytes, and clears
/// their pending-acknowledgement state.
/// An ACK that must travel on its own connection (`ack_here`) goes only
/// in a record of `on`.
pub(crate) fn encode_acks(
    conns: &mut Connections,
    on: ConnectionId,
    ctl: &mut Vec<u8>,
    limit: usize,
    wanted: impl Fn(&Connection) -> bool,
) {
    let on_rtt = conns.get(&on).and_then(|c| c.estimate.rtt);
    for (id, c) in conns.iter_mut() {
        if ctl.len() + ACK_FRAME_LEN > limit {
            break;
        }
        // A connection's ACK does not wait on a much slower one: the
        // sender would take the delay for a stall (and its scheduler would
        // see the path as slow). It goes on its own connection, or another
        // known to be about as fast, unless its own cannot send.
        let as_fast = matches!((on_rtt, c.estimate.rtt),
            (Some(o), Some(r)) if o <= r + r / 2 + std::time::Duration::from_millis(2));
        if *id != on && !as_fast && c.can_send() {
            continue;
        }
        // Elsewhere it is a copy: the connection still sends its own, so
        // a dead path carrying the copies cannot leave a live one without
        // ACKs (its sender would take it for stalled too).
        let own = *id == on || !c.can_send();
        if !wanted(c) || c.recv_seq == 0 || (c.ack_here && !own) {
            continue;
        }
        if own {
            c.ack_here = false;
            c.ack_due = false;
            c.timers.stop(ConnTimer::Ack);
            c.ack_records = 0;
            c.ack_bytes = 0;
        } else if c.ack_copied >= c.recv_seq {
            continue;
        }
        c.ack_copied = c.recv_seq;
        Frame::Ack {
            conn: *id,
            seq: c.recv_seq - 1,
        }
        .encode(ctl);
    }
}

impl Session {
    /// True while some sent stream data waits for acknowledgement.
    pub fn has_unacked(&self) -> bool {
        self.recovery.has_unacked(&self.paths.conns, None)
    }

    /// True when failover is on (both sides acknowledge records).
    pub fn failover(&self) -> bool {
        self.recovery.enabled
    }

    /// The peer acknowledged records up to `seq` on `conn`; the ACK came
    /// on `arrival`.
    pub(crate) fn on_ack(
        &mut self,
        conn: ConnectionId,
        seq: u64,
        arrival: ConnectionId,
    ) -> Result<(), Error> {
        self.recovery.acked_replay(conn, seq);
        let Some(c) = self.paths.conns.get_mut(&conn) else {
            return Ok(()); // a connection already gone
        };
        if seq >= c.send_seq {
            return Err(Error::Protocol("ACK for a record never sent"));
        }
        if c.probe.is_some_and(|p| p <= seq) {
            c.probe = None;
            c.timers.stop(ConnTimer::Probe);
        }
        // An acknowledgement proves the path works, wherever it came.
        c.touch(
            self.now,
            keepalive_interval(&self.cfg, self.side, self.recovery.enabled),
        );
        let before = c.unacked.len();
        while c.unacked.front().is_some_and(|(s, _)| *s <= seq) {
            if let Some((_, Sent::Stream { data, .. })) = c.unacked.pop_front() {
                c.unacked_bytes = c.unacked_bytes.saturating_sub(data.len() as u64);
            }
        }
        while c.sent_at.front().is_some_and(|(s, _)| *s <= seq) {
            c.sent_at.pop_front();
        }
        if c.unacked.is_empty() {
            c.timers.stop(ConnTimer::Stall);
        } else if c.unacked.len() < before {
            // Progress: the stall clock starts again.
            if let Some(limit) = stall_limit(c, self.cfg.ack_delay) {
                c.timers.set(ConnTimer::Stall, self.now + limit);
            }
        }
        if c.unacked.len() < before {
            c.silence_check = false;
            arm_silence(c, self.cfg.ack_delay);
        }
        // Only an ACK of the probe (or of a later record) shows the path
        // works now: ACKs of records sent before the stall still arrive
        // (on another connection) after a blackhole.
        let recovered = c.stalled && seq >= c.stall_seq;
        if recovered {
            c.stalled = false;
        }
        c.acked_up_to = c.acked_up_to.max(seq + 1);
        if c.unproven && arrival == conn && c.challenge.is_some_and(|s| s <= seq) {
            // The client received our challenge on this very socket: the
            // connection may carry data now.
            c.unproven = false;
            tracing::debug!(%conn, "joined connection proven");
            self.adopt_primary_if_orphaned(conn);
            self.streams.requeue_all();
        }
        if recovered {
            tracing::debug!(side = ?self.side, %conn, "stalled connection acknowledged again");
            // New streams (and control frames, until RTTs are known) go on
            // the primary: give the role back when the stall moved it to a
            // slower connection.
            let rtt = |id| self.paths.conns.get(&id).and_then(|c| c.estimate.rtt);
            let faster = match (rtt(conn), rtt(self.paths.primary)) {
                (Some(a), Some(b)) => a < b,
                (Some(_), None) => true,
                _ => false,
            };
            if faster {
                self.paths.primary = conn;
            }
            self.streams.requeue_all();
        }
        Ok(())
    }

    /// ACKs due on any connection, and the keepalive PING of `conn` (sent
    /// in its record `seq`), into the control frames of a record.
    pub(crate) fn write_recovery_frames(
        &mut self,
        conn: ConnectionId,
        seq: u64,
        ctl: &mut Vec<u8>,
    ) {
        // ACKs for any connection travel on whichever sends first.
        encode_acks(
            &mut self.paths.conns,
            conn,
            ctl,
            super::pending::CONTROL_LIMIT,
            |c| c.ack_due,
        );
        if let Some(c) = self.paths.conns.get_mut(&conn) {
            if c.challenge_due() {
                c.challenge = Some(seq);
                Frame::Ping.encode(ctl);
            }
            if c.ping_due {
                c.ping_due = false;
                c.probe = Some(seq);
                let wait = probe_wait(c, &self.cfg);
                c.timers.set(ConnTimer::Probe, self.now + wait);
                c.probe_sent = Some(self.now);
                Frame::Ping.encode(ctl);
            }
        }
    }

    /// Data of failed connections goes first, on whatever connection.
    pub(crate) fn write_replay(&mut self, rb: &mut RecordBuilder<'_>) {
        while let Some((from, from_seq, sent)) = self.recovery.replay.pop_front() {
            let room = rb.room();
            if room < STREAM_HEADER_LEN + 16 {
                self.recovery.replay.push_front((from, from_seq, sent));
                break;
            }
            match sent {
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
                        let rest = Sent::Stream {
                            id,
                            offset: offset + k as u64,
                            data,
                            fin,
                        };
                        self.recovery.replay.push_front((from, from_seq, rest));
                    }
                    rb.put_stream(id, offset, head, fin && last);
                }
                Sent::Reset {
                    id,
                    code,
                    final_size,
                } => rb.put_reset(id, code, final_size),
            }
        }
    }

    /// True if losing `conn` leaves the session alive: another connection
    /// is active, or failover lets the client join a new one.
    pub(crate) fn can_fail_over(&self, conn: ConnectionId) -> bool {
        // Without acknowledgements nothing sent on the lost connection can
        // be replayed: losing it unexpectedly must end the session.
        matches!(self.state, State::Tcpls(_))
            && self.recovery.enabled
            && (self.paths.other_connections(conn) || self.paths.max_connections > 1)
    }

    /// Handles the TCP connection's end of stream (the peer's FIN).
    pub fn handle_eof(&mut self, conn: ConnectionId, now: Instant) {
        self.now = now;
        if self.paths.is_pending(conn) {
            self.abandon_join(conn);
            return;
        }
        let Some(c) = self.paths.conns.get(&conn) else {
            return;
        };
        // During a graceful close connections still fail over, so the data
        // being flushed is not stuck behind a dead one.
        if self.close.error.is_some() && !self.close.graceful {
            return;
        }
        if c.state == super::ConnectionState::Draining && self.paths.other_connections(conn) {
            // A retired connection ended: expected.
            self.drop_connection(conn);
            return;
        }
        if self.can_fail_over(conn) {
            // An unexpected FIN is a failure like a reset.
            self.connection_failed(conn, "unexpected FIN");
            return;
        }
        match &mut self.state {
            // Records the application has not read yet arrived before the
            // end: they are delivered first (a peer that closes after a
            // complete HTTP response has delivered it); `recv_fallback`
            // ends the session once they are.
            State::Fallback(fb) if !fb.eof && fb.has_whole_record() => fb.tcp_eof = true,
            State::Fallback(fb) if fb.eof => {
                // close_notify came first: a clean end of the TLS stream.
                self.fail(Error::PeerClosed {
                    code: ErrorCode::NO_ERROR,
                    reason: "TLS connection closed".into(),
                });
            }
            // The TCP connection ended, not the TLS negotiation: a client
            // may retry without TCPLS (a middlebox that closes on unknown
            // extensions), which it would not after a handshake error.
            State::Handshake(_) => self.fail(Error::ConnectionLost(
                "connection closed during handshake".into(),
            )),
            _ => self.fail(Error::Protocol("TCP connection closed without CLOSE")),
        }
    }

    /// Handles a failed TCP connection (reset, I/O error).
    pub fn handle_connection_error(&mut self, conn: ConnectionId, reason: String, now: Instant) {
        self.now = now;
        if self.paths.is_pending(conn) {
            self.abandon_join(conn);
            return;
        }
        if !self.paths.conns.contains_key(&conn)
            || (self.close.error.is_some() && !self.close.graceful)
        {
            return;
        }
        if self.can_fail_over(conn) {
            self.connection_failed(conn, &reason);
            return;
        }
        // Nothing can be sent on a broken connection.
        self.fail_silently(Error::ConnectionLost(reason));
        self.raw_out.clear();
    }

    /// A connection died: forget it, replay what it did not deliver, tell
    /// the peer, and wait for a new one if it was the last.
    pub(crate) fn connection_failed(&mut self, conn: ConnectionId, reason: &str) {
        tracing::debug!(side = ?self.side, %conn, reason, "connection failed");
        // The last record that arrived on it, acknowledged with the reset.
        let final_ack = self
            .paths
            .conns
            .get(&conn)
            .and_then(|c| c.recv_seq.checked_sub(1))
            .filter(|_| self.recovery.enabled);
        self.retire_connection(conn, false);
        self.requeue_unacked(conn);
        self.paths.conns.remove(&conn);
        self.events.push_back(Event::ConnectionFailed(conn));
        if self.side == Side::Server {
            self.replenish_tokens();
        }
        // Tell the peer (now, or on the connection that replaces this one)
        // so it replays what it sent on `conn` without waiting to notice;
        // `reannounce` below queues the CONNECTION_RESET.
        if self.recovery.failed_conns.len() >= FAILED_REMEMBERED {
            self.recovery.failed_conns.pop_front();
        }
        self.recovery.failed_conns.push_back((conn, final_ack));
        if !self.paths.any_can_send() {
            self.timers
                .set(SessionTimer::Rejoin, self.now + self.cfg.rejoin_grace);
            self.events.push_back(Event::Disconnected);
        }
        // Credit and stream announcements may have died with it.
        self.reannounce();
    }

    /// How long `conn`'s oldest unacknowledged record may wait for its ACK
    /// before the connection counts as stalled (`None`: no RTT yet).
    pub(crate) fn stall_limit(&self, conn: ConnectionId) -> Option<std::time::Duration> {
        stall_limit(self.paths.conns.get(&conn)?, self.cfg.ack_delay)
    }

    /// `conn`'s records went unacknowledged for well over its RTT (a
    /// blackhole, or a path far slower than it was): with another
    /// connection to carry data, send what it carried again there, stop
    /// giving it stream data, and probe it with a PING whose ACK brings it
    /// back. This acts within about 1.5 RTT, long before TCP's user timeout
    /// (which still fails the connection if the path is dead).
    pub(crate) fn stall_connection(&mut self, conn: ConnectionId) {
        if !self.recovery.enabled {
            return;
        }
        let others = self.paths.other_carries_data(conn);
        let Some(c) = self.paths.conns.get_mut(&conn) else {
            return;
        };
        if !others || c.stalled || c.unacked.is_empty() {
            return;
        }
        // Records still arrive on it: the path works and its ACKs are only
        // late (queued behind the data coming our way). Look again later.
        let limit = stall_limit(c, self.cfg.ack_delay);
        if let (Some(limit), Some(last)) = (limit, c.last_recv) {
            if self.now < last + limit {
                c.timers.set(ConnTimer::Stall, last + limit);
                return;
            }
        }
        self.stall_now(conn, "no ACK for 1.5 RTT");
    }

    /// Takes `conn` out of the schedule and sends what it carried again
    /// elsewhere (see [`Self::stall_connection`]); the caller checked that
    /// another connection carries data.
    fn stall_now(&mut self, conn: ConnectionId, why: &'static str) {
        let Some(c) = self.paths.conns.get_mut(&conn) else {
            return;
        };
        tracing::debug!(side = ?self.side, %conn, why, "connection stalled: its data goes again elsewhere");
        c.stalled = true;
        c.stall_seq = c.send_seq;
        c.ping_due = true;
        self.recovery.requeue_unacked(conn, c);
        self.recovery.stalls += 1;
        if self.paths.primary == conn {
            if let Some((id, _)) = self.paths.conns.iter().find(|(_, c)| c.carries_data()) {
                self.paths.primary = *id;
            }
        }
        self.streams.requeue_all();
        // Credit and stream announcements may be stuck on it.
        self.reannounce();
    }

    /// `conn`'s oldest record is overdue (`ConnTimer::Silence`): with
    /// another connection to carry data, the runtime is asked whether TCP
    /// went silent too ([`Self::silence_checks`]).
    pub(crate) fn silence_due(&mut self, conn: ConnectionId) {
        if !self.recovery.enabled || !self.paths.other_carries_data(conn) {
            return;
        }
        if let Some(c) = self.paths.conns.get_mut(&conn) {
            c.silence_check = !c.stalled && !c.unacked.is_empty();
        }
    }

    /// Connections whose oldest record is overdue, or whose PING probe
    /// went unanswered: the runtime answers each with
    /// [`Self::tcp_silence`], from the kernel's view of the connection. A
    /// sans-IO user that never answers gets the plain limits (1.5 RTT
    /// without an ACK for a stall; the probe's wait and 10 ms to fail).
    pub fn silence_checks(&self) -> Vec<ConnectionId> {
        self.paths
            .conns
            .iter()
            .filter(|(_, c)| c.silence_check)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Answers [`Self::silence_checks`] for `conn`: `silent` when TCP has
    /// had data outstanding with no ACK and nothing received for a while
    /// (a blackhole): the connection is stalled now, about 1.5 RTT sooner
    /// than from the record ACKs alone. Otherwise (TCP repairs a loss, or
    /// the ACKs wait in a queue) it is asked again shortly, until the
    /// stall limit.
    ///
    /// For an unanswered probe, `silent` fails the connection; otherwise
    /// the peer's kernel has the PING and its application is slow: the
    /// probe may wait up to a second before the connection fails anyway.
    pub fn tcp_silence(&mut self, conn: ConnectionId, silent: bool) {
        let others = self.paths.other_carries_data(conn);
        let Some(c) = self.paths.conns.get_mut(&conn) else {
            return;
        };
        if !std::mem::take(&mut c.silence_check) {
            return;
        }
        if std::mem::take(&mut c.probe_check) {
            // A probe went unanswered (`ConnTimer::Probe`).
            if silent {
                self.connection_failed(conn, "probe not acknowledged, TCP silent too");
            } else if c.probe.is_some() {
                tracing::trace!(side = ?self.side, %conn, "probe late, TCP still acknowledging");
                c.timers.set(ConnTimer::Probe, self.now + SILENCE_RECHECK);
            }
            return;
        }
        if c.stalled || c.unacked.is_empty() {
            return;
        }
        if silent && others {
            self.stall_now(conn, "TCP silent too");
        } else if c
            .timers
            .get(ConnTimer::Stall)
            .is_some_and(|t| t > self.now + SILENCE_RECHECK)
        {
            c.timers.set(ConnTimer::Silence, self.now + SILENCE_RECHECK);
        }
    }

    /// Connections found stalled so far (see [`Self::stall_connection`]).
    pub fn stalls(&self) -> u64 {
        self.recovery.stalls
    }

    /// The peer stopped sending on `conn` (retired or failed): stop using
    /// it too; what we sent on it and was not acknowledged goes again
    /// elsewhere.
    pub(crate) fn connection_reset_by_peer(&mut self, conn: ConnectionId) {
        if self.paths.is_pending(conn) {
            self.abandon_join(conn);
            return;
        }
        if self.paths.other_connections(conn) {
            // Act once: a peer repeating the frame (replays carry it again)
            // must not make us re-announce everything each time.
            let first = match self.paths.conns.get_mut(&conn) {
                Some(c) => !std::mem::replace(&mut c.peer_reset, true),
                None => false,
            };
            self.retire_connection(conn, false);
            self.requeue_unacked(conn);
            if first {
                // Frames we sent on it may be lost as well.
                self.reannounce();
            }
        }
    }

    pub(crate) fn requeue_unacked(&mut self, conn: ConnectionId) {
        if let Some(c) = self.paths.conns.get_mut(&conn) {
            self.recovery.requeue_unacked(conn, c);
        }
    }

    /// Sends again the state a lost record may have carried: credit limits,
    /// stream limit, stream-to-connection mapping, connection resets,
    /// addresses and tokens.
    pub(crate) fn reannounce(&mut self) {
        if !matches!(self.state, State::Tcpls(_)) {
            return;
        }
        let p = &mut self.pending;
        p.max_data = true;
        p.max_streams = true;
        for (id, s) in self.streams.map.iter_mut() {
            p.max_stream_data(*id, s);
            // Only steering is re-sent: a STREAM_CHANGE pins the stream at
            // the peer, and streams nobody steered stay spread over every
            // connection by its scheduler.
            if s.pinned {
                p.change_stream(*id, s);
            }
        }
        for (c, final_ack) in &self.recovery.failed_conns {
            p.reset_connection(*c, *final_ack);
        }
        // Option requests whose answer may have been lost with it.
        self.options.resend();
        for &addr in &self.paths.local_addresses {
            if !p.address_updates.contains(&(addr, true)) {
                p.address_updates.push_back((addr, true));
            }
        }
        if self.side == Side::Server {
            p.new_tokens = self
                .paths
                .tokens
                .outstanding
                .iter()
                .map(|(s, t)| (*s, *t))
                .collect();
            // With the resets and the rest, at once.
            p.tokens_due = !p.new_tokens.is_empty();
        }
    }
}
