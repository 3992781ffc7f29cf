//! Schedulers for coupled sending: which connection carries the next record
//! of stream data when a session spreads its streams over all connections
//! (bandwidth aggregation).
//!
//! The session asks the scheduler once per record, when connection `conn`
//! is ready to send (its writer polls it because TCP can take more). A
//! scheduler only says yes or no: a "no" leaves the data for another
//! connection. So a scheduler that says yes to every connection sends on
//! each as fast as its TCP takes data, which is what lowest-RTT-first
//! degenerates to when every path has room.

use std::time::Duration;

use crate::ids::ConnectionId;

/// What the session knows about one active connection.
#[derive(Clone, Debug, Default)]
pub struct PathInfo {
    /// The connection.
    pub conn: ConnectionId,
    /// Stream bytes sent on it so far.
    pub sent_bytes: u64,
    /// Stream bytes sent on it and not yet acknowledged (with failover on).
    pub unacked_bytes: u64,
    /// Smoothed RTT, when the runtime reported one (TCP_INFO).
    pub rtt: Option<Duration>,
    /// Congestion window in bytes, when reported.
    pub cwnd_bytes: Option<u64>,
}

/// Decides, per record, whether a connection may carry stream data now.
pub trait Scheduler: Send + std::fmt::Debug {
    /// A short name for reports.
    fn name(&self) -> String;
    /// May `conn` carry the next record of stream data? `paths` lists
    /// every active connection, `conn` among them.
    fn allow(&mut self, conn: ConnectionId, paths: &[PathInfo]) -> bool;
}

/// Slack, in bytes, before a connection counts as ahead of the others:
/// about what a connection keeps in flight and in its socket buffer, so
/// connections do not wait for each other record by record.
const SLACK: u64 = 1 << 20;

/// Equal bytes on every connection: a connection ahead of the least
/// loaded one by more than a few records waits.
#[derive(Debug, Default)]
pub struct RoundRobin;

impl Scheduler for RoundRobin {
    fn name(&self) -> String {
        "round-robin".into()
    }
    fn allow(&mut self, conn: ConnectionId, paths: &[PathInfo]) -> bool {
        let min = paths.iter().map(|p| p.sent_bytes).min().unwrap_or(0);
        paths
            .iter()
            .find(|p| p.conn == conn)
            .is_some_and(|p| p.sent_bytes <= min + SLACK)
    }
}

/// Bytes in proportion to weights given by connection order: the first
/// weight for the oldest active connection, and so on (connections beyond
/// the list count as weight 1). Order rather than ids, because joined
/// connections get their ids from tokens.
#[derive(Debug, Default)]
pub struct Weighted {
    /// Weights, oldest connection first.
    pub weights: Vec<u32>,
}

impl Weighted {
    fn weight(&self, index: usize) -> u64 {
        self.weights.get(index).map_or(1, |w| (*w).max(1) as u64)
    }
}

impl Scheduler for Weighted {
    fn name(&self) -> String {
        let w: Vec<String> = self.weights.iter().map(|w| w.to_string()).collect();
        format!("weighted:{}", w.join(","))
    }
    fn allow(&mut self, conn: ConnectionId, paths: &[PathInfo]) -> bool {
        // Compare sent/weight, scaled to avoid fractions; `paths` is in
        // connection-id order, which is join order.
        let norm = |i: usize, p: &PathInfo| p.sent_bytes * 1000 / self.weight(i);
        let min = paths
            .iter()
            .enumerate()
            .map(|(i, p)| norm(i, p))
            .min()
            .unwrap_or(0);
        paths
            .iter()
            .enumerate()
            .find(|(_, p)| p.conn == conn)
            .is_some_and(|(i, p)| norm(i, p) <= min + SLACK * 1000 / self.weight(i))
    }
}

/// Lowest RTT first: a connection sends unless a connection with a
/// clearly lower RTT still has room in its congestion window. With every
/// connection draining at its own pace this fills fast paths first and
/// uses slow ones for what the fast ones cannot take.
#[derive(Debug, Default)]
pub struct LowestRtt;

impl Scheduler for LowestRtt {
    fn name(&self) -> String {
        "lowest-rtt".into()
    }
    fn allow(&mut self, conn: ConnectionId, paths: &[PathInfo]) -> bool {
        let Some(me) = paths.iter().find(|p| p.conn == conn) else {
            return false;
        };
        let Some(my_rtt) = me.rtt else {
            return true;
        };
        !paths.iter().any(|p| {
            p.conn != conn
                && p.rtt.is_some_and(|r| r * 2 < my_rtt)
                && p.cwnd_bytes.is_some_and(|w| p.unacked_bytes < w)
        })
    }
}

/// Builds a scheduler from its name: `round-robin`, `lowest-rtt`, or
/// `weighted:W0,W1,...` (weights of the connections in join order).
pub fn from_name(name: &str) -> Option<Box<dyn Scheduler>> {
    match name {
        "round-robin" | "rr" => Some(Box::new(RoundRobin)),
        "lowest-rtt" | "lowrtt" => Some(Box::new(LowestRtt)),
        _ => {
            let w = name.strip_prefix("weighted:")?;
            let weights: Option<Vec<u32>> = w.split(',').map(|x| x.trim().parse().ok()).collect();
            Some(Box::new(Weighted { weights: weights? }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(sent: &[u64]) -> Vec<PathInfo> {
        sent.iter()
            .enumerate()
            .map(|(i, s)| PathInfo {
                conn: ConnectionId(i as u32),
                sent_bytes: *s,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn round_robin_balances_bytes() {
        let mut s = RoundRobin;
        assert!(s.allow(ConnectionId(0), &paths(&[0, 0])));
        assert!(!s.allow(ConnectionId(0), &paths(&[4 << 20, 0])));
        assert!(s.allow(ConnectionId(1), &paths(&[4 << 20, 0])));
    }

    #[test]
    fn weighted_follows_weights() {
        let mut s = from_name("weighted:3,1").unwrap();
        // 3 MiB on 0 and 1 MiB on 1 is the target ratio: both may send.
        assert!(s.allow(ConnectionId(0), &paths(&[3 << 20, 1 << 20])));
        assert!(s.allow(ConnectionId(1), &paths(&[3 << 20, 1 << 20])));
        assert!(!s.allow(ConnectionId(1), &paths(&[3 << 20, 4 << 20])));
        assert!(from_name("weighted:x").is_none());
    }

    #[test]
    fn lowest_rtt_prefers_the_fast_path_while_it_has_room() {
        let mut s = LowestRtt;
        let mut p = paths(&[0, 0]);
        p[0].rtt = Some(Duration::from_millis(5));
        p[1].rtt = Some(Duration::from_millis(50));
        p[0].cwnd_bytes = Some(100_000);
        p[0].unacked_bytes = 10_000;
        assert!(!s.allow(ConnectionId(1), &p));
        assert!(s.allow(ConnectionId(0), &p));
        p[0].unacked_bytes = 200_000;
        assert!(s.allow(ConnectionId(1), &p));
    }
}
