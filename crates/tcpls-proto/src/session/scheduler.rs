//! Schedulers for coupled sending: which connection carries the next record
//! of stream data when a session spreads its streams over all connections
//! (bandwidth aggregation, the default with more than one connection).
//!
//! The session asks the scheduler once per record, when connection `conn`
//! is ready to send (its writer polls it because TCP can take more). A
//! scheduler only says yes or no: a "no" leaves the data for another
//! connection. So a scheduler that says yes to every connection sends on
//! each as fast as its TCP takes data.
//!
//! The default, [`EarliestArrival`], also keeps slow paths from carrying
//! data the receiver would wait for (head-of-line blocking): a slower path
//! gets the next bytes only when the faster ones could not deliver
//! everything waiting to be sent before the slow path delivers them
//! (MPTCP's ECF scheduler, Lim et al., CoNEXT 2017).

use std::time::Duration;

use crate::ids::ConnectionId;

/// What the runtime measured of a connection (TCP_INFO), for schedulers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PathEstimate {
    /// Smoothed RTT.
    pub rtt: Option<Duration>,
    /// Congestion window in bytes.
    pub cwnd_bytes: Option<u64>,
    /// TCP's delivery rate estimate, bytes per second.
    pub delivery_rate: Option<u64>,
    /// Fraction of segments retransmitted.
    pub loss: f64,
}

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
    /// TCP's delivery rate estimate in bytes per second, when reported.
    pub delivery_rate: Option<u64>,
    /// Fraction of segments TCP retransmitted (0 when not reported).
    pub loss: f64,
}

impl PathInfo {
    /// Bytes per second the path delivers: TCP's delivery-rate estimate,
    /// else congestion window over RTT.
    pub fn rate(&self) -> Option<f64> {
        if let Some(r) = self.delivery_rate.filter(|r| *r > 0) {
            return Some(r as f64);
        }
        let rtt = self.rtt?.as_secs_f64();
        let w = self.cwnd_bytes?;
        (rtt > 0.0 && w > 0).then(|| w as f64 / rtt)
    }

    /// Expected time, in seconds, for a byte sent on the path now to reach
    /// the peer: half the RTT, plus one more RTT for the share that is
    /// lost and retransmitted.
    pub fn arrival(&self) -> Option<f64> {
        let rtt = self.rtt?.as_secs_f64();
        Some(rtt / 2.0 + self.loss.clamp(0.0, 1.0) * rtt)
    }
}

/// Decides, per record, whether a connection may carry stream data now.
pub trait Scheduler: Send + std::fmt::Debug {
    /// A short name for reports.
    fn name(&self) -> String;
    /// May `conn` carry the next record of stream data? `paths` lists
    /// every active connection, `conn` among them; `waiting` is the stream
    /// data queued to send that the peer's session credit allows.
    fn allow(&mut self, conn: ConnectionId, paths: &[PathInfo], waiting: u64) -> bool;
}

/// The default scheduler's name.
pub const DEFAULT: &str = "earliest-arrival";

/// Earliest arrival first (ECF-style), the default: a connection takes the
/// next record unless faster connections would deliver all data waiting
/// to be sent before this one delivers that record. Fast paths therefore
/// carry everything when they can, a slower path joins in once enough
/// data is queued to keep the fast ones busy until its bytes arrive, and
/// near the end of a transfer (or with a small window) the slow path
/// stays idle instead of holding the last bytes. "Faster" and "before"
/// come from each path's RTT, delivery rate and retransmission share, so
/// loss makes a path count as slower. Paths without figures yet (the
/// first tenth of a second) all send.
#[derive(Debug, Default)]
pub struct EarliestArrival;

impl Scheduler for EarliestArrival {
    fn name(&self) -> String {
        DEFAULT.into()
    }
    fn allow(&mut self, conn: ConnectionId, paths: &[PathInfo], waiting: u64) -> bool {
        let Some(me) = paths.iter().find(|p| p.conn == conn) else {
            return false;
        };
        let Some(mine) = me.arrival() else {
            return true;
        };
        // The paths whose bytes arrive sooner than ours, their combined
        // rate and the soonest arrival among them.
        let (mut rate, mut soonest) = (0.0, f64::MAX);
        for p in paths.iter().filter(|p| p.conn != conn) {
            if let (Some(a), Some(r)) = (p.arrival(), p.rate()) {
                if a < mine {
                    rate += r;
                    soonest = soonest.min(a);
                }
            }
        }
        rate == 0.0 || mine <= soonest + waiting as f64 / rate
    }
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
    fn allow(&mut self, conn: ConnectionId, paths: &[PathInfo], _waiting: u64) -> bool {
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
    fn allow(&mut self, conn: ConnectionId, paths: &[PathInfo], _waiting: u64) -> bool {
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
    fn allow(&mut self, conn: ConnectionId, paths: &[PathInfo], _waiting: u64) -> bool {
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

/// Builds a scheduler from its name: `earliest-arrival` (the default),
/// `round-robin`, `lowest-rtt`, or `weighted:W0,W1,...` (weights of the
/// connections in join order).
pub fn from_name(name: &str) -> Option<Box<dyn Scheduler>> {
    match name {
        DEFAULT | "ecf" | "default" => Some(Box::new(EarliestArrival)),
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
        assert!(s.allow(ConnectionId(0), &paths(&[0, 0]), 0));
        assert!(!s.allow(ConnectionId(0), &paths(&[4 << 20, 0]), 0));
        assert!(s.allow(ConnectionId(1), &paths(&[4 << 20, 0]), 0));
    }

    #[test]
    fn weighted_follows_weights() {
        let mut s = from_name("weighted:3,1").unwrap();
        // 3 MiB on 0 and 1 MiB on 1 is the target ratio: both may send.
        assert!(s.allow(ConnectionId(0), &paths(&[3 << 20, 1 << 20]), 0));
        assert!(s.allow(ConnectionId(1), &paths(&[3 << 20, 1 << 20]), 0));
        assert!(!s.allow(ConnectionId(1), &paths(&[3 << 20, 4 << 20]), 0));
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
        assert!(!s.allow(ConnectionId(1), &p, 0));
        assert!(s.allow(ConnectionId(0), &p, 0));
        p[0].unacked_bytes = 200_000;
        assert!(s.allow(ConnectionId(1), &p, 0));
    }

    /// Two paths as in the heterogeneous case: 60 Mbit/s at 10 ms
    /// and 30 Mbit/s at 60 ms.
    fn fast_and_slow() -> Vec<PathInfo> {
        let mut p = paths(&[0, 0]);
        p[0].rtt = Some(Duration::from_millis(10));
        p[0].delivery_rate = Some(60_000_000 / 8);
        p[1].rtt = Some(Duration::from_millis(60));
        p[1].delivery_rate = Some(30_000_000 / 8);
        p
    }

    #[test]
    fn earliest_arrival_uses_the_slow_path_only_for_what_the_fast_one_cannot_deliver_sooner() {
        let mut s = EarliestArrival;
        let p = fast_and_slow();
        // The fast path always sends.
        assert!(s.allow(ConnectionId(0), &p, 0));
        // The slow path's bytes arrive 25 ms after the fast path's: it
        // waits until the fast path has more than 25 ms of queued data
        // (7.5 MB/s x 25 ms = 187.5 kB).
        assert!(!s.allow(ConnectionId(1), &p, 0));
        assert!(!s.allow(ConnectionId(1), &p, 150_000));
        assert!(s.allow(ConnectionId(1), &p, 200_000));
    }

    #[test]
    fn earliest_arrival_counts_loss_and_falls_back_to_cwnd_over_rtt() {
        let mut s = EarliestArrival;
        let mut p = fast_and_slow();
        // Equal RTTs, but path 0 retransmits 10 %: path 1 is the fast one.
        p[1].rtt = p[0].rtt;
        p[0].loss = 0.1;
        assert!(s.allow(ConnectionId(1), &p, 0));
        assert!(!s.allow(ConnectionId(0), &p, 0));
        // No delivery rate: 75 kB window over 10 ms is 7.5 MB/s, and 1 ms
        // of that (the loss penalty) is 7.5 kB.
        p[1].delivery_rate = None;
        p[1].cwnd_bytes = Some(75_000);
        assert!(!s.allow(ConnectionId(0), &p, 7_000));
        assert!(s.allow(ConnectionId(0), &p, 8_000));
        // Paths without figures send.
        p[1].rtt = None;
        assert!(s.allow(ConnectionId(0), &p, 0));
        assert_eq!(from_name("default").unwrap().name(), DEFAULT);
    }
}
