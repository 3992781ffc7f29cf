//! What a [`crate::Server`] lets clients hold: sessions in total and per
//! source address, and connections still in their opening phase (before
//! their first record, and during a new session's TLS handshake).
//!
//! Over a limit a connection is closed at once: the accept loop never
//! stops taking connections from the kernel's queue, so idle or slow
//! connections cannot make it stop serving everyone else (slowloris).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Limits of a [`crate::Server`] (see `docs/security.md`, "Resource
/// limits"). `None` lifts a limit.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// Sessions at once (established or handshaking), all clients together.
    pub max_sessions: Option<usize>,
    /// Sessions at once from one source IP address.
    pub max_sessions_per_ip: Option<usize>,
    /// New-session TLS handshakes in progress at once. Joins of existing
    /// sessions do not take one: a flood of handshakes cannot keep a live
    /// session from rejoining.
    pub max_handshakes: usize,
    /// Connections that have not sent their first record yet (the
    /// ClientHello that tells a join from a new session), all clients
    /// together.
    pub max_pending: usize,
    /// Beyond `max_pending`, connections still admitted from addresses
    /// that have a live session (most likely joins and rejoins): a flood
    /// from addresses without sessions cannot keep live sessions from
    /// adding or replacing connections. Bounded per address by
    /// `max_handshakes_per_ip` like the rest.
    pub max_pending_joins: usize,
    /// Connections in their opening phase (waiting for the first record,
    /// or in a new session's handshake) from one source IP address.
    pub max_handshakes_per_ip: usize,
    /// A connection whose first record (ClientHello) is not complete within
    /// this time is closed. Short, because a connection holds its slot in
    /// `max_pending` meanwhile.
    pub first_record_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_sessions: Some(10_000),
            max_sessions_per_ip: Some(64),
            max_handshakes: 256,
            max_pending: 1024,
            max_pending_joins: 256,
            max_handshakes_per_ip: 32,
            first_record_timeout: Duration::from_secs(3),
        }
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Pending,
    HandshakesPerIp,
    Handshakes,
    Sessions,
    SessionsPerIp,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Pending => "too many connections waiting for their first record",
            Refusal::HandshakesPerIp => "too many opening connections from this address",
            Refusal::Handshakes => "too many handshakes in progress",
            Refusal::Sessions => "session limit reached",
            Refusal::SessionsPerIp => "session limit of this address reached",
        })
    }
}

#[derive(Default)]
struct Counts {
    pending: usize,
    /// Pending connections admitted beyond `max_pending` (joins' budget).
    pending_joins: usize,
    handshakes: usize,
    sessions: usize,
    opening_by_ip: HashMap<IpAddr, usize>,
    sessions_by_ip: HashMap<IpAddr, usize>,
    /// Refusals since the last warning, and when it was logged.
    refused: u64,
    warned: Option<Instant>,
}

/// Decrements a per-address count, forgetting addresses at zero (the maps
/// hold only addresses with something open).
fn release(map: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = map.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            map.remove(&ip);
        }
    }
}

/// The server's counters behind one lock (taken a few times per
/// connection, never across an await).
pub(crate) struct Limiter {
    limits: ServerLimits,
    counts: Mutex<Counts>,
}

impl Limiter {
    pub fn new(limits: ServerLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            counts: Mutex::new(Counts::default()),
        })
    }

    pub fn limits(&self) -> &ServerLimits {
        &self.limits
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Logs a refusal: each at debug level, and a warning at most every 10
    /// seconds with how many there were (a flood must not flood the log).
    pub fn refused(&self, peer: std::net::SocketAddr, why: Refusal) {
        tracing::debug!(%peer, reason = %why, "connection refused");
        let mut c = self.counts();
        c.refused += 1;
        let now = Instant::now();
        if c.warned
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            tracing::warn!(
                refused = c.refused,
                last_reason = %why,
                "server limits reached: connections refused"
            );
            c.refused = 0;
            c.warned = Some(now);
        }
    }

    /// A new TCP connection: counts it as opening (its address) and as
    /// pending (no first record yet).
    pub fn open(self: &Arc<Self>, ip: IpAddr) -> Result<(Opening, Pending), Refusal> {
        let mut c = self.counts();
        // Over the shared pool, an address with a live session still gets
        // in, from the joins' own budget.
        let join_budget = c.pending >= self.limits.max_pending;
        if join_budget
            && !(c.sessions_by_ip.contains_key(&ip)
                && c.pending_joins < self.limits.max_pending_joins)
        {
            return Err(Refusal::Pending);
        }
        let n = c.opening_by_ip.get(&ip).copied().unwrap_or(0);
        if n >= self.limits.max_handshakes_per_ip {
            return Err(Refusal::HandshakesPerIp);
        }
        c.opening_by_ip.insert(ip, n + 1);
        if join_budget {
            c.pending_joins += 1;
        } else {
            c.pending += 1;
        }
        Ok((
            Opening {
                limiter: self.clone(),
                ip,
            },
            Pending {
                limiter: self.clone(),
                join_budget,
            },
        ))
    }

    /// A new session's handshake starts: takes a handshake permit and a
    /// session slot (kept until the session's state is gone).
    pub fn new_session(self: &Arc<Self>, ip: IpAddr) -> Result<(Handshake, SessionSlot), Refusal> {
        let mut c = self.counts();
        if c.handshakes >= self.limits.max_handshakes {
            return Err(Refusal::Handshakes);
        }
        if self.limits.max_sessions.is_some_and(|m| c.sessions >= m) {
            return Err(Refusal::Sessions);
        }
        let n = c.sessions_by_ip.get(&ip).copied().unwrap_or(0);
        if self.limits.max_sessions_per_ip.is_some_and(|m| n >= m) {
            return Err(Refusal::SessionsPerIp);
        }
        c.handshakes += 1;
        c.sessions += 1;
        c.sessions_by_ip.insert(ip, n + 1);
        Ok((
            Handshake {
                limiter: self.clone(),
            },
            SessionSlot {
                limiter: self.clone(),
                ip,
            },
        ))
    }

    /// Sessions counted now (for tests).
    #[cfg(test)]
    pub fn sessions(&self) -> usize {
        self.counts().sessions
    }
}

/// A connection in its opening phase, counted against its address.
pub(crate) struct Opening {
    limiter: Arc<Limiter>,
    ip: IpAddr,
}

impl Drop for Opening {
    fn drop(&mut self) {
        release(&mut self.limiter.counts().opening_by_ip, self.ip);
    }
}

/// A connection that has not sent its first record yet.
pub(crate) struct Pending {
    limiter: Arc<Limiter>,
    /// Counted in the joins' budget rather than the shared pool.
    join_budget: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut c = self.limiter.counts();
        if self.join_budget {
            c.pending_joins -= 1;
        } else {
            c.pending -= 1;
        }
    }
}

/// A new session's handshake in progress.
pub(crate) struct Handshake {
    limiter: Arc<Limiter>,
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.limiter.counts().handshakes -= 1;
    }
}

/// A session counted against the limits; released when the session's
/// state is dropped (it is kept in the session's shared state).
pub(crate) struct SessionSlot {
    limiter: Arc<Limiter>,
    ip: IpAddr,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut c = self.limiter.counts();
        c.sessions -= 1;
        release(&mut c.sessions_by_ip, self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn counts_are_released_by_their_guards() {
        let l = Limiter::new(ServerLimits {
            max_sessions: Some(2),
            max_sessions_per_ip: Some(1),
            max_handshakes: 8,
            max_pending: 2,
            max_pending_joins: 1,
            max_handshakes_per_ip: 1,
            first_record_timeout: Duration::from_secs(1),
        });
        let (a_open, a_pending) = l.open(ip("10.0.0.1")).unwrap();
        assert_eq!(l.open(ip("10.0.0.1")).err(), Some(Refusal::HandshakesPerIp));
        let (_b_open, _b_pending) = l.open(ip("10.0.0.2")).unwrap();
        assert_eq!(l.open(ip("10.0.0.3")).err(), Some(Refusal::Pending));
        drop(a_pending);
        let (_hs, slot) = l.new_session(ip("10.0.0.1")).unwrap();
        assert_eq!(
            l.new_session(ip("10.0.0.1")).err(),
            Some(Refusal::SessionsPerIp)
        );
        let _other = l.new_session(ip("10.0.0.2")).unwrap();
        assert_eq!(l.new_session(ip("10.0.0.4")).err(), Some(Refusal::Sessions));
        drop(a_open);
        drop(slot);
        assert_eq!(l.sessions(), 1);
        assert!(l.new_session(ip("10.0.0.1")).is_ok());
        assert!(l.counts().opening_by_ip.len() == 1, "10.0.0.1 forgotten");
    }

    /// With the shared pool full (of addresses without sessions), an
    /// address with a live session still opens connections, from the
    /// joins' budget; others are refused.
    #[test]
    fn joins_have_a_budget_of_their_own() {
        let l = Limiter::new(ServerLimits {
            max_pending: 2,
            max_pending_joins: 1,
            max_handshakes_per_ip: 4,
            ..ServerLimits::default()
        });
        let (_hs, _slot) = l.new_session(ip("10.0.0.9")).unwrap();
        let _flood: Vec<_> = ["10.0.0.1", "10.0.0.2"]
            .iter()
            .map(|a| l.open(ip(a)).unwrap())
            .collect();
        assert_eq!(l.open(ip("10.0.0.3")).err(), Some(Refusal::Pending));
        let join = l
            .open(ip("10.0.0.9"))
            .expect("a live session's address gets in");
        assert_eq!(
            l.open(ip("10.0.0.9")).err(),
            Some(Refusal::Pending),
            "budget used"
        );
        drop(join);
        assert!(l.open(ip("10.0.0.9")).is_ok(), "released");
    }
}
