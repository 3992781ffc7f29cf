//! The path monitor: keepalive and failure detection of each connection
//! from the kernel's TCP state, and the client's rejoin after its last
//! connection failed.

use std::net::SocketAddr;
use std::sync::Weak;

use tcpls_proto::ConnectionId;

use crate::shared::Shared;

/// Watches the kernel's view of each connection (TCP_INFO) and fails over a
/// connection whose sent segments have gone unacknowledged for the user
/// timeout. The kernel's own TCP_USER_TIMEOUT only fires at retransmission
/// timer events (about 450 ms for 250 ms here); polling every 50 ms cuts
/// that to the timeout plus at most 50 ms.
pub(crate) async fn health(me: Weak<Shared>) {
    // Every 50 ms while data is unacknowledged or the scheduler spreads
    // data over several connections (it needs fresh path figures);
    // otherwise every 500 ms (session timers only), so idle sessions cost
    // little.
    let mut busy = true;
    loop {
        let period = if busy { 50 } else { 500 };
        tokio::time::sleep(std::time::Duration::from_millis(period)).await;
        let Some(shared) = me.upgrade() else { return };
        {
            let inner = shared.lock();
            busy = inner.proto.has_unacked() || inner.proto.aggregating();
        }
        let failover = {
            let mut inner = shared.lock();
            if inner.proto.is_drained() {
                return;
            }
            // Session timers also fire here: with no connection left there
            // is no writer task to fire them (rejoin grace, idle timeout).
            let now = std::time::Instant::now();
            if inner.proto.poll_timeout().is_some_and(|t| t <= now) {
                inner.proto.handle_timeout(now);
                shared.answer_silence_checks(&mut inner);
                inner.dispatch();
                drop(inner);
                shared.wake_writers();
                inner = shared.lock();
            }
            inner.proto.failover()
        };
        let infos: Vec<crate::socket::ConnectionStats> = {
            let sockets = shared.sockets.lock().unwrap_or_else(|p| p.into_inner());
            sockets
                .iter()
                .filter_map(|(id, fd)| crate::socket::tcp_info(*id, &**fd).ok())
                .collect()
        };
        // Each connection's user timeout (the peer may have asked for one
        // per connection).
        let limits: Vec<Option<std::time::Duration>> = {
            // Schedulers choose paths by RTT, rate and loss.
            let mut inner = shared.lock();
            for i in &infos {
                inner.proto.set_path_info(i.conn, i.estimate());
            }
            infos
                .iter()
                .map(|i| inner.proto.user_timeout_of(i.conn).filter(|_| failover))
                .collect()
        };
        let dead: Vec<(ConnectionId, u32)> = {
            infos
                .into_iter()
                .zip(limits)
                // Unacknowledged data, no ACK for the user timeout, and at
                // least one retransmission timeout fired: a connection that
                // just sent after being idle has a stale last-ACK time but
                // no RTO yet. And nothing received for as long: a path
                // that still delivers the peer's data is alive, only
                // congested (a burst of replayed data overflowing its
                // bottleneck queue costs an RTO of 200 ms or more, which
                // killed the healthy connection right after a failover).
                .filter(|(i, limit)| {
                    limit.is_some_and(|limit| {
                        let ms = limit.as_millis();
                        i.unacked > 0
                            && i.rto_backoff > 0
                            && i.last_ack_recv_ms as u128 >= ms
                            && i.last_data_recv_ms as u128 >= ms
                    })
                })
                .map(|(i, _)| (i.conn, i.last_ack_recv_ms))
                .collect()
        };
        if dead.is_empty() {
            continue;
        }
        let mut inner = shared.lock();
        for (conn, ms) in dead {
            inner.proto.handle_connection_error(
                conn,
                format!("no TCP acknowledgement for {ms} ms"),
                std::time::Instant::now(),
            );
        }
        inner.dispatch();
        drop(inner);
        shared.wake_writers();
    }
}

/// Connection attempts in one round of [`rejoin`].
const MAX_REJOIN_ATTEMPTS: usize = 8;

/// Client side, after the last connection failed: joins a new connection
/// (to the original address or one the server advertised), retrying with
/// backoff until it works or the session ends.
async fn rejoin(me: Weak<Shared>) {
    let mut delay = std::time::Duration::from_millis(20);
    loop {
        let Some(shared) = me.upgrade() else { return };
        let targets: Vec<SocketAddr> = {
            let mut inner = shared.lock();
            let connected = inner
                .proto
                .connections()
                .iter()
                .any(|(_, st)| *st == tcpls_proto::session::ConnectionState::Active);
            if inner.proto.error().is_some() || connected {
                inner.rejoining = false;
                return;
            }
            // The server's other addresses first: the original one is
            // most likely on the path that just failed.
            let mut targets = inner.joinable_addresses();
            targets.extend(inner.peer_addr.filter(|a| !targets.contains(a)));
            targets
        };
        drop(shared);
        // Where the kernel routes first; then from the host's other
        // addresses (another interface: a path can be dead while its
        // interface and routes stay up).
        let mut attempts: Vec<(SocketAddr, Option<SocketAddr>)> =
            targets.iter().map(|t| (*t, None)).collect();
        for t in &targets {
            for ip in crate::links::usable_addresses(t.is_ipv4()) {
                if attempts.len() < MAX_REJOIN_ATTEMPTS {
                    attempts.push((*t, Some(SocketAddr::new(ip, 0))));
                }
            }
        }
        for (addr, bind) in attempts {
            // Without Fast Open: with a cookie, a Fast Open connect returns
            // before any packet went out, so a blackholed path looked
            // joinable and the rejoin sat on it until it failed again
            // (rotating outages: 620 ms -> 2.6 s of stall). The SYN-ACK is
            // what shows a path works.
            let attempt = tokio::time::timeout(
                delay.max(std::time::Duration::from_millis(200)),
                crate::socket::tcp_connect(addr, bind, false),
            )
            .await;
            let Ok(Ok(tcp)) = attempt else { continue };
            let Some(shared) = me.upgrade() else { return };
            let r = crate::session::start_join(&shared, tcp);
            shared.lock().rejoining = false;
            match r {
                Ok(id) => {
                    tracing::info!(conn = %id, %addr, ?bind, "rejoined after losing every connection")
                }
                Err(e) => tracing::warn!(error = %e, "cannot rejoin"),
            }
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_millis(500));
    }
}

/// Starts [`rejoin`] on `rt`: the hook sessions keep in
/// [`crate::shared::Inner::spawn_rejoin`].
pub(crate) fn spawn_rejoin(rt: &tokio::runtime::Handle, me: Weak<Shared>) {
    rt.spawn(rejoin(me));
}
