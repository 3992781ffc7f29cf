//! Timers: one table for the session and one per connection. A deadline is
//! stored when the state that sets it changes (a record arrives, a PING goes
//! out, the last connection fails), so [`Session::poll_timeout`] is a lookup
//! and [`Session::handle_timeout`] dispatches on the timers that fired.

use std::time::{Duration, Instant};

use super::connection::ConnectionState;
use super::{Session, State};
use crate::config::TransportConfig;
use crate::error::Error;
use crate::ids::{ConnectionId, Side};

/// A kind of timer: a fixed set of slots in a [`TimerTable`].
pub(crate) trait Timer: Copy + 'static {
    /// The timer's slot.
    fn index(self) -> usize;
}

/// Session-wide timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SessionTimer {
    /// The TLS handshake must finish by then.
    Handshake,
    /// Nothing received for the idle timeout: the session ends.
    Idle,
    /// No connection left: the client must join a new one by then.
    Rejoin,
    /// A graceful close stops waiting for its data to be acknowledged.
    GracefulClose,
    /// Server: join tokens that found no record to ride along with go in
    /// one of their own (see `Pending::tokens_due`).
    Tokens,
}

impl Timer for SessionTimer {
    fn index(self) -> usize {
        self as usize
    }
}

/// Timers of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnTimer {
    /// Server: a joining connection must prove the session keys by then.
    JoinAuth,
    /// A delayed ACK is due.
    Ack,
    /// The keepalive PING must be acknowledged by then.
    Probe,
    /// Nothing received for the keepalive interval: send a PING.
    Keepalive,
    /// The oldest unacknowledged record must be acknowledged by then, or
    /// the connection counts as stalled (`recovery.rs`).
    Stall,
    /// The oldest unacknowledged record is overdue: ask the runtime whether
    /// TCP went silent too (an earlier stall, `recovery.rs`).
    Silence,
}

impl Timer for ConnTimer {
    fn index(self) -> usize {
        self as usize
    }
}

/// Deadlines of one kind of timer, one slot each.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TimerTable<T> {
    at: [Option<Instant>; 6],
    _kind: std::marker::PhantomData<T>,
}

impl<T> Default for TimerTable<T> {
    fn default() -> Self {
        Self {
            at: [None; 6],
            _kind: std::marker::PhantomData,
        }
    }
}

impl<T: Timer> TimerTable<T> {
    /// Arms `timer` (or moves it) to fire at `at`.
    pub fn set(&mut self, timer: T, at: Instant) {
        self.at[timer.index()] = Some(at);
    }

    /// Disarms `timer`.
    pub fn stop(&mut self, timer: T) {
        self.at[timer.index()] = None;
    }

    /// When `timer` fires, if armed.
    pub fn get(&self, timer: T) -> Option<Instant> {
        self.at[timer.index()]
    }

    /// The earliest armed timer among `which`.
    pub fn next_of(&self, which: &[T]) -> Option<Instant> {
        which.iter().filter_map(|t| self.get(*t)).min()
    }

    /// True if `timer` is armed and due at `now`; it is then disarmed.
    pub fn take_expired(&mut self, timer: T, now: Instant) -> bool {
        let slot = &mut self.at[timer.index()];
        if slot.is_some_and(|d| now >= d) {
            *slot = None;
            return true;
        }
        false
    }
}

/// Which of a connection's timers count in its state: a joining connection
/// only has its authentication deadline, an active one the others.
fn live_conn_timers(state: ConnectionState) -> &'static [ConnTimer] {
    match state {
        ConnectionState::PendingAuth => &[ConnTimer::JoinAuth],
        ConnectionState::Active => &[
            ConnTimer::Ack,
            ConnTimer::Probe,
            ConnTimer::Keepalive,
            ConnTimer::Stall,
            ConnTimer::Silence,
        ],
        ConnectionState::Draining | ConnectionState::Closed => &[],
    }
}

/// How long a connection may receive nothing before its keepalive timer
/// fires: `keepalive` when configured; else, for a client with failover,
/// `silence_probe`. Whether a silence-probe timer then sends a PING (only
/// while a stream waits for data on a lone connection) is decided when it
/// fires, so that arming it, on every record received, costs no look at
/// the streams.
pub(crate) fn keepalive_interval(
    cfg: &TransportConfig,
    side: Side,
    failover: bool,
) -> Option<Duration> {
    cfg.keepalive.or_else(|| {
        cfg.silence_probe
            .filter(|_| side == Side::Client && failover)
    })
}

/// Session timers that count before the session ended.
const OPEN_TIMERS: [SessionTimer; 3] = [
    SessionTimer::Handshake,
    SessionTimer::Idle,
    SessionTimer::Rejoin,
];

impl Session {
    /// Earliest time at which [`Self::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.close.error.is_some() {
            return self
                .timers
                .get(SessionTimer::GracefulClose)
                .filter(|_| self.close.graceful);
        }
        let conns = self
            .paths
            .conns
            .values()
            .filter_map(|c| c.timers.next_of(live_conn_timers(c.state)));
        self.timers
            .next_of(&OPEN_TIMERS)
            .into_iter()
            // (Tokens wait for a connection to carry them.)
            .chain(
                self.timers
                    .get(SessionTimer::Tokens)
                    .filter(|_| self.paths.any_can_send()),
            )
            .chain(conns)
            .min()
    }

    /// Fires expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.close.error.is_some() {
            if self.close.graceful && self.timers.take_expired(SessionTimer::GracefulClose, now) {
                self.on_timer(SessionTimer::GracefulClose);
            }
            return;
        }
        // Joins that never proved the keys go first: they do not touch the
        // session, whatever else fired.
        let mut fired = Vec::new();
        for (id, c) in self.paths.conns.iter_mut() {
            for &t in live_conn_timers(c.state) {
                if c.timers.take_expired(t, now) {
                    fired.push((*id, t));
                }
            }
        }
        for &(id, _) in fired.iter().filter(|(_, t)| *t == ConnTimer::JoinAuth) {
            self.on_conn_timer(id, ConnTimer::JoinAuth);
        }
        for t in OPEN_TIMERS {
            if self.timers.take_expired(t, now) {
                // Each of these ends the session: nothing else matters.
                self.on_timer(t);
                return;
            }
        }
        if self.timers.take_expired(SessionTimer::Tokens, now) {
            self.on_timer(SessionTimer::Tokens);
        }
        for (id, t) in fired.into_iter().filter(|(_, t)| *t != ConnTimer::JoinAuth) {
            self.on_conn_timer(id, t);
        }
    }

    /// A client stream now waits for data: arm the silence probe on every
    /// active connection not already timing one (the timer is otherwise
    /// armed only when something arrives).
    pub(crate) fn arm_silence_probe(&mut self) {
        let Some(k) = keepalive_interval(&self.cfg, self.side, self.recovery.enabled) else {
            return;
        };
        let now = self.now;
        for c in self.paths.conns.values_mut() {
            if c.state == ConnectionState::Active && c.timers.get(ConnTimer::Keepalive).is_none() {
                c.touch(now, Some(k));
            }
        }
    }

    fn on_timer(&mut self, timer: SessionTimer) {
        match timer {
            SessionTimer::Handshake => self.fail(Error::HandshakeTimeout),
            SessionTimer::Idle => self.fail(Error::IdleTimeout),
            SessionTimer::Rejoin => {
                // No connection to send a CLOSE on.
                self.fail_silently(Error::ConnectionLost(
                    "no connection rejoined in time".into(),
                ));
            }
            SessionTimer::Tokens => self.pending.tokens_due = true,
            SessionTimer::GracefulClose => {
                // Waited long enough: close now.
                self.close.graceful = false;
                if !self.paths.any_can_send() {
                    self.state = State::Done;
                }
            }
        }
    }

    fn on_conn_timer(&mut self, id: ConnectionId, timer: ConnTimer) {
        let keepalive = keepalive_interval(&self.cfg, self.side, self.recovery.enabled);
        // A keepalive always probes; the silence probe only while a stream
        // waits for data on a lone connection: with several, a quiet one is
        // normal (the peer's scheduler may leave a slow path idle) and the
        // sender's stall detection covers a dead one.
        let probe_due = timer == ConnTimer::Keepalive
            && keepalive.is_some()
            && (self.cfg.keepalive.is_some()
                || (self.paths.conns.len() == 1 && self.streams.awaiting_data()));
        let Some(c) = self.paths.conns.get_mut(&id) else {
            return;
        };
        match timer {
            ConnTimer::JoinAuth => self.abandon_join(id),
            ConnTimer::Ack => c.ack_due = true,
            ConnTimer::Probe => {
                // Records that arrived on it since the PING went out show
                // the path works: the ACK is only queued behind data (a
                // slow-starting connection on a long path).
                if c.probe_sent
                    .is_some_and(|sent| c.last_recv.is_some_and(|r| r >= sent))
                {
                    c.probe = None;
                    c.touch(self.now, keepalive);
                } else if !c.probe_check
                    && c.probe_sent
                        .is_some_and(|sent| self.now < sent + super::recovery::SLOW_PEER_PATIENCE)
                {
                    // Ask the runtime whether TCP went silent too
                    // (`Session::tcp_silence`); unanswered, it fails at the
                    // next expiry.
                    c.probe_check = true;
                    c.silence_check = true;
                    c.timers.set(
                        ConnTimer::Probe,
                        self.now + super::recovery::SILENCE_RECHECK,
                    );
                } else {
                    self.connection_failed(id, "keepalive probe not acknowledged");
                }
            }
            ConnTimer::Keepalive => {
                if probe_due && c.probe.is_none() {
                    c.ping_due = true;
                }
            }
            ConnTimer::Stall => self.stall_connection(id),
            ConnTimer::Silence => self.silence_due(id),
        }
    }
}
