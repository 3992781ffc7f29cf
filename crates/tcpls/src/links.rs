//! Local link and address changes, as the kernel announces them over
//! rtnetlink (what MPTCP's path manager reacts to): a connection whose
//! local address was removed, or whose interface went down, fails over at
//! once instead of after the stall or user timeout; a client joins again
//! from that address when it is back.
//!
//! One watcher task per process serves every session. The netlink messages
//! are only a trigger: the state is read afresh with `getifaddrs` each
//! time, so a lost message (socket overrun) loses nothing, and parsing
//! rtnetlink messages (the `netlink-packet-route` crate) is not needed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nix::net::if_::InterfaceFlags;
use nix::sys::socket::{self, AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType};
use tcpls_proto::session::ConnectionState;
use tcpls_proto::{ConnectionId, Side};
use tokio::io::unix::AsyncFd;

use crate::shared::Shared;

/// Lost local addresses a client remembers for joining again.
const MAX_LOST_LINKS: usize = 16;

/// Attempts to join again from an address that came back (its routes may
/// take a moment to follow the link), and the wait between them.
const JOIN_BACK_ATTEMPTS: u32 = 5;
const JOIN_BACK_RETRY: Duration = Duration::from_millis(100);

/// How often an idle watcher looks whether any session is left.
const IDLE_CHECK: Duration = Duration::from_secs(30);

struct Registry {
    sessions: Vec<(Weak<Shared>, tokio::runtime::Handle)>,
    /// A watcher task is running (reset by the task when it ends, also
    /// when its runtime shuts down).
    running: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    sessions: Vec::new(),
    running: false,
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Watches the local links for `shared` from now on (a no-op outside a
/// tokio runtime, or where rtnetlink cannot be opened).
pub(crate) fn register(shared: &Arc<Shared>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut reg = registry();
    // Forget ended sessions now and then, so the list stays bounded by the
    // live ones.
    if reg.sessions.len() >= 64 && reg.sessions.len().is_power_of_two() {
        reg.sessions.retain(|(s, _)| s.strong_count() > 0);
    }
    reg.sessions.push((Arc::downgrade(shared), rt.clone()));
    if !reg.running {
        match subscribe() {
            Ok(fd) => {
                reg.running = true;
                rt.spawn(watch(fd));
            }
            Err(e) => tracing::debug!(error = %e, "cannot watch local links (rtnetlink)"),
        }
    }
}

/// A non-blocking rtnetlink socket subscribed to link and address changes.
fn subscribe() -> std::io::Result<AsyncFd<OwnedFd>> {
    let fd = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    let groups = (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
    socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
    // SAFETY: `fd` is an open socket the AsyncFd owns until it is dropped.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)
}

/// Marks the watcher stopped when its task ends or is dropped.
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        registry().running = false;
    }
}

async fn watch(fd: AsyncFd<OwnedFd>) {
    let _running = Running;
    let mut known = Links::read().unwrap_or_default();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let ready = tokio::time::timeout(IDLE_CHECK, fd.readable()).await;
        let mut guard = match ready {
            Err(_) => {
                let mut reg = registry();
                reg.sessions.retain(|(s, _)| s.strong_count() > 0);
                if reg.sessions.is_empty() {
                    reg.running = false;
                    std::mem::forget(_running);
                    return;
                }
                continue;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "rtnetlink watcher ends");
                return;
            }
            Ok(Ok(g)) => g,
        };
        // Drain what is there; an overrun (ENOBUFS) is fine, the state is
        // read afresh below.
        loop {
            match socket::recv(fd.as_raw_fd(), &mut buf, socket::MsgFlags::empty()) {
                Ok(_) | Err(nix::errno::Errno::ENOBUFS) => continue,
                Err(nix::errno::Errno::EAGAIN) => {
                    guard.clear_ready();
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "rtnetlink watcher ends");
                    return;
                }
            }
        }
        drop(guard);
        let Ok(now) = Links::read() else { continue };
        let sessions: Vec<_> = {
            let mut reg = registry();
            reg.sessions.retain(|(s, _)| s.strong_count() > 0);
            reg.sessions.clone()
        };
        for (session, rt) in sessions {
            if let Some(shared) = session.upgrade() {
                react(&shared, &rt, &known, &now);
            }
        }
        known = now;
    }
}

/// The host's addresses, and whether each one's interface is up and
/// running (administratively up, with carrier).
#[derive(Default)]
pub(crate) struct Links {
    addrs: HashMap<IpAddr, bool>,
}

impl Links {
    pub(crate) fn read() -> nix::Result<Self> {
        let mut addrs = HashMap::new();
        for a in nix::ifaddrs::getifaddrs()? {
            let Some(sa) = a.address else { continue };
            let ip = if let Some(v4) = sa.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = sa.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            let up = a
                .flags
                .contains(InterfaceFlags::IFF_UP | InterfaceFlags::IFF_RUNNING);
            // An address on several interfaces is usable if one is up.
            *addrs.entry(ip).or_insert(false) |= up;
        }
        Ok(Self { addrs })
    }

    /// True when `ip` is assigned to an interface that is up and running.
    pub(crate) fn usable(&self, ip: IpAddr) -> bool {
        self.addrs.get(&ip.to_canonical()).copied().unwrap_or(false)
    }

    /// True when a connection from `ip` can no longer work: its interface
    /// is down, or the address was there before (`was`) and is gone now.
    /// Addresses the host never listed (a transparent proxy's, or AnyIP
    /// routes) are left alone.
    fn lost(&self, was: &Links, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match self.addrs.get(&ip) {
            Some(up) => !up,
            None => was.addrs.contains_key(&ip),
        }
    }
}

/// Fails the connections of `shared` whose local link is gone, and (a
/// client) joins again from lost addresses that are back.
fn react(shared: &Arc<Shared>, rt: &tokio::runtime::Handle, was: &Links, now: &Links) {
    let sockets: Vec<_> = {
        let s = shared.sockets.lock().unwrap_or_else(|p| p.into_inner());
        s.iter().map(|(id, tcp)| (*id, tcp.clone())).collect()
    };
    let lost: Vec<(ConnectionId, IpAddr, Option<SocketAddr>)> = sockets
        .iter()
        .filter_map(|(id, tcp)| {
            let ip = tcp.local_addr().ok()?.ip();
            now.lost(was, ip).then(|| (*id, ip, tcp.peer_addr().ok()))
        })
        .collect();
    let mut inner = shared.lock();
    if inner.proto.error().is_some() {
        inner.lost_links.clear();
        return;
    }
    let client = inner.proto.side() == Side::Client;
    for (conn, ip, peer) in &lost {
        let live = matches!(
            inner.proto.connection_state(*conn),
            Some(ConnectionState::Active | ConnectionState::PendingAuth)
        );
        if !live {
            continue;
        }
        tracing::info!(%conn, %ip, "local link lost: failing the connection over");
        inner.proto.handle_connection_error(
            *conn,
            format!("local address {ip} went away or its interface went down"),
            Instant::now(),
        );
        if let (true, Some(peer)) = (client, peer) {
            let entry = (ip.to_canonical(), *peer);
            if !inner.lost_links.contains(&entry) && inner.lost_links.len() < MAX_LOST_LINKS {
                inner.lost_links.push(entry);
            }
        }
    }
    inner.dispatch();
    let back: Vec<(IpAddr, SocketAddr)> = {
        let (back, still) = inner
            .lost_links
            .drain(..)
            .partition(|(ip, _)| now.usable(*ip));
        inner.lost_links = still;
        back
    };
    drop(inner);
    if !lost.is_empty() {
        shared.wake_writers();
    }
    for (ip, peer) in back {
        rt.spawn(join_back(Arc::downgrade(shared), ip, peer));
    }
}

/// Joins a connection from `ip`, whose link came back: to `peer` (where the
/// lost connection went), else to the server's other addresses of the same
/// family. Remembered again if nothing works, for the next change.
async fn join_back(me: Weak<Shared>, ip: IpAddr, peer: SocketAddr) {
    let bind = SocketAddr::new(ip, 0);
    for attempt in 0..JOIN_BACK_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(JOIN_BACK_RETRY).await;
        }
        let Some(shared) = me.upgrade() else { return };
        let targets: Vec<SocketAddr> = {
            let inner = shared.lock();
            if inner.proto.error().is_some() {
                return;
            }
            let mut t = vec![peer];
            t.extend(
                inner
                    .joinable_addresses()
                    .into_iter()
                    .filter(|a| a.is_ipv4() == ip.is_ipv4() && *a != peer),
            );
            t
        };
        for remote in targets {
            match crate::session::join_connection(&shared, remote, Some(bind)).await {
                Ok(conn) => {
                    tracing::info!(%conn, %ip, %remote, "local link back: joined again");
                    return;
                }
                Err(e) => {
                    tracing::debug!(%ip, %remote, error = %e, "joining from a returning link")
                }
            }
        }
    }
    if let Some(shared) = me.upgrade() {
        let mut inner = shared.lock();
        if inner.lost_links.len() < MAX_LOST_LINKS && !inner.lost_links.contains(&(ip, peer)) {
            inner.lost_links.push((ip, peer));
        }
    }
}

/// Local addresses of `family` (v4 or not) that are up and running, for
/// joining over another interface: no loopback, link-local or unspecified
/// ones.
pub(crate) fn usable_addresses(v4: bool) -> Vec<IpAddr> {
    let Ok(links) = Links::read() else {
        return Vec::new();
    };
    // (Map keys: each address once.)
    let mut out: Vec<IpAddr> = links
        .addrs
        .into_iter()
        .filter(|(ip, up)| {
            *up && ip.is_ipv4() == v4
                && !ip.is_loopback()
                && !ip.is_unspecified()
                && !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local())
                && !matches!(ip, IpAddr::V4(v4) if v4.is_link_local())
        })
        .map(|(ip, _)| ip)
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::Links;
    use std::collections::HashMap;
    use std::net::IpAddr;

    fn links(list: &[(&str, bool)]) -> Links {
        Links {
            addrs: list
                .iter()
                .map(|(a, up)| (a.parse::<IpAddr>().unwrap(), *up))
                .collect::<HashMap<_, _>>(),
        }
    }

    #[test]
    fn an_address_is_lost_when_removed_or_its_link_is_down() {
        let before = links(&[("10.0.0.1", true), ("10.0.1.1", true), ("fd00::1", true)]);
        let after = links(&[("10.0.0.1", false), ("fd00::1", true)]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(after.lost(&before, ip("10.0.0.1")), "interface down");
        assert!(after.lost(&before, ip("10.0.1.1")), "address removed");
        assert!(!after.lost(&before, ip("fd00::1")));
        // Never listed (AnyIP, transparent proxy): left alone.
        assert!(!after.lost(&before, ip("192.0.2.7")));
        // v4-mapped sockets of a dual-stack listener.
        assert!(after.lost(&before, ip("::ffff:10.0.1.1")));
        assert!(!after.usable(ip("10.0.0.1")));
        assert!(after.usable(ip("fd00::1")));
    }

    #[test]
    fn the_host_has_a_loopback_address() {
        let l = Links::read().expect("getifaddrs");
        assert!(l.usable("127.0.0.1".parse().unwrap()) || l.usable("::1".parse().unwrap()));
    }
}
