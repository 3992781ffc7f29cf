//! The client's cache of TLS 1.3 session tickets.
//!
//! A server that issues tickets (see [`ServerConfigBuilder::tickets`]) lets
//! a client resume: the next session to the same server name skips the
//! certificate exchange and its signatures. Each ticket is used once
//! (RFC 8446 §C.4: reusing one lets an observer link the sessions), so a
//! server sends several and the cache keeps a few per server.
//!
//! ```
//! use std::sync::Arc;
//! use tcpls_proto::{ClientConfig, SessionCache};
//! let cache = Arc::new(SessionCache::new(64));
//! let cfg = ClientConfig::builder().session_cache(Some(cache.clone())).build().unwrap();
//! assert!(cache.is_empty());
//! ```
//!
//! [`ServerConfigBuilder::tickets`]: crate::config::ServerConfigBuilder::tickets

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::ssl::SslSession;

/// Tickets kept per server: a server sends two per handshake by default,
/// and a client that opens sessions in parallel takes one each.
const PER_SERVER: usize = 4;

/// Where tickets are kept: an in-memory cache bounded by server count,
/// shared by every session of a [`ClientConfig`](crate::ClientConfig).
/// [`Self::export`] and [`Self::import`] let an application keep it on disk
/// (the CLI does, `tcpls get --session-cache`).
pub struct SessionCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("tickets", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// A ticket and whether its server spoke TCPLS (only then may early data,
/// which carries TCPLS frames, be sent with it).
pub(crate) struct Ticket {
    pub session: SslSession,
    pub tcpls: bool,
}

/// A ticket as [`SessionCache::export`] gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedTicket {
    /// The cache key (server name and how the session was made).
    pub key: String,
    /// The OpenSSL session, DER: it holds the resumption secret.
    pub der: Vec<u8>,
    /// The server spoke TCPLS (early data may be sent with the ticket).
    pub tcpls: bool,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, VecDeque<Ticket>>,
    /// Least recently stored first.
    order: VecDeque<String>,
}

impl SessionCache {
    /// A cache of tickets for at most `servers` server names (the least
    /// recently given a ticket is forgotten first).
    pub fn new(servers: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: servers.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a ticket for `key` that has not expired; it is not given out
    /// again.
    pub(crate) fn take(&self, key: &str) -> Option<Ticket> {
        let mut inner = self.lock();
        let q = inner.map.get_mut(key)?;
        let now = unix_now();
        let mut found = None;
        // Newest first: the freshest ticket has the most lifetime left.
        while let Some(t) = q.pop_back() {
            if !expired(&t.session, now) {
                found = Some(t);
                break;
            }
        }
        if q.is_empty() {
            inner.map.remove(key);
            inner.order.retain(|k| k != key);
        }
        found
    }

    /// Stores a ticket the server `key` issued.
    pub(crate) fn insert(&self, key: &str, ticket: Ticket) {
        let mut inner = self.lock();
        inner.order.retain(|k| k != key);
        inner.order.push_back(key.to_string());
        let q = inner.map.entry(key.to_string()).or_default();
        if q.len() == PER_SERVER {
            q.pop_front();
        }
        q.push_back(ticket);
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.map.remove(&old);
            }
        }
    }

    /// Whether the newest unexpired ticket for `key` allows early data to
    /// a TCPLS server (what [`Self::take`] would give).
    pub(crate) fn has_early_ticket(&self, key: &str) -> bool {
        let inner = self.lock();
        let now = unix_now();
        inner
            .map
            .get(key)
            .and_then(|q| q.iter().rev().find(|t| !expired(&t.session, now)))
            .is_some_and(|t| t.tcpls && t.session.max_early_data() > 0)
    }

    /// Tickets held, over all servers.
    pub fn len(&self) -> usize {
        self.lock().map.values().map(VecDeque::len).sum()
    }

    /// True if no ticket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The unexpired tickets, least recently stored server first. The DER
    /// holds the resumption secret: store it where only its owner can
    /// read it.
    pub fn export(&self) -> Vec<ExportedTicket> {
        let inner = self.lock();
        let now = unix_now();
        let mut out = Vec::new();
        for key in &inner.order {
            for t in inner.map.get(key).into_iter().flatten() {
                if let (false, Ok(der)) = (expired(&t.session, now), t.session.to_der()) {
                    out.push(ExportedTicket {
                        key: key.clone(),
                        der,
                        tcpls: t.tcpls,
                    });
                }
            }
        }
        out
    }

    /// Adds tickets from [`Self::export`]; entries that do not decode or
    /// have expired are skipped. Returns how many were kept.
    pub fn import(&self, entries: impl IntoIterator<Item = ExportedTicket>) -> usize {
        let now = unix_now();
        let mut kept = 0;
        for e in entries {
            match SslSession::from_der(&e.der) {
                Ok(session) if !expired(&session, now) => {
                    self.insert(
                        &e.key,
                        Ticket {
                            session,
                            tcpls: e.tcpls,
                        },
                    );
                    kept += 1;
                }
                _ => {}
            }
        }
        kept
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A ticket past the lifetime its server gave it (OpenSSL keeps the
/// session's creation time and that lifetime).
fn expired(s: &SslSession, now: i64) -> bool {
    // `time()` is a `c_long` or a `u64` depending on the OpenSSL version.
    #[allow(clippy::unnecessary_cast)]
    let time = s.time() as i64;
    time.saturating_add(s.timeout()) <= now
}

/// The cache key of a session to `server_name` (and `port`):
/// - with or without the `tcpls` extension: a ticket is only offered by
///   the OpenSSL context that received it (see `tls_ffi::set_session`);
/// - verified or not: a resumed handshake does not check the certificate
///   again, so a ticket from an unverified session must not let a
///   verifying client skip the check.
pub(crate) fn cache_key(
    server_name: &str,
    port: Option<u16>,
    tcpls: bool,
    verified: bool,
) -> String {
    // The port too when known: two services on one host are two servers
    // (their tickets do not resume on each other, and a plain TLS one must
    // never get a TCPLS server's early data).
    let mut key = match port {
        Some(p) => format!("{server_name}:{p}"),
        None => server_name.to_string(),
    };
    if !tcpls {
        key.push_str(" (plain TLS)");
    }
    if !verified {
        key.push_str(" (unverified)");
    }
    key
}
