//! The session's TCP connections (paths): which one is primary, which
//! stream goes on which (steering, migration), retiring connections,
//! advertised addresses, and the send policy that decides whether a
//! connection takes new stream data (the coupled scheduler).

use std::net::SocketAddr;

use super::connection::{Connection, ConnectionState, Connections, Tokens};
use super::recovery::Recovery;
use super::scheduler::{PathEstimate, PathInfo, Scheduler};
use super::streams::Streams;
use super::{Event, Session, State};
use crate::error::{CallError, Error};
use crate::ids::{ConnectionId, Side, StreamId};

/// Most peer addresses kept (NEW_ADDRESS beyond it closes the session),
/// and so most addresses advertised.
const MAX_PEER_ADDRESSES: usize = 16;

/// The connections of a session and how data is spread over them.
#[derive(Debug)]
pub(crate) struct Paths {
    pub conns: Connections,
    /// Connection for new streams, control frames and the handshake.
    pub primary: ConnectionId,
    /// Connections allowed in this session (both sides' minimum).
    pub max_connections: u32,
    pub tokens: Tokens,
    /// Addresses of this side advertised and not withdrawn: announced again
    /// after a connection failure, which may have lost their NEW_ADDRESS.
    pub local_addresses: Vec<SocketAddr>,
    /// Addresses the peer advertised.
    pub peer_addresses: Vec<SocketAddr>,
    /// Coupled sending: when set, every stream's data may go on any
    /// connection this scheduler allows (instead of the stream's own).
    pub scheduler: Option<Box<dyn Scheduler>>,
    /// Reused across records: no allocation per record.
    paths_scratch: Vec<PathInfo>,
}

/// Whether a connection takes new stream data in the record being built.
pub(crate) struct SendPolicy {
    /// New stream data may go in this record at all.
    pub new_data: bool,
    /// A scheduler spreads streams that are not pinned over the
    /// connections (coupled sending)...
    pub coupled: bool,
    /// ...and lets this connection carry them now. (Streams pinned to this
    /// connection go on it whatever the scheduler says.)
    pub scheduled: bool,
    /// This connection is much slower than the fastest: streams short of
    /// credit wait for the fast one.
    pub slow_path: bool,
    /// Stream credit below which a stream counts as short.
    pub low_credit: u64,
}

impl Paths {
    pub fn new(scheduler: Option<Box<dyn Scheduler>>) -> Self {
        Self {
            conns: [(
                ConnectionId::FIRST,
                Connection::new(ConnectionState::Active),
            )]
            .into(),
            primary: ConnectionId::FIRST,
            max_connections: 1,
            tokens: Tokens::default(),
            local_addresses: Vec::new(),
            peer_addresses: Vec::new(),
            scheduler,
            paths_scratch: Vec::new(),
        }
    }

    /// True if some connection can carry records.
    pub fn any_can_send(&self) -> bool {
        self.conns.values().any(|c| c.can_send())
    }

    /// True if `conn` exists and can carry records.
    pub fn can_send_on(&self, conn: ConnectionId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.can_send())
    }

    /// True if a connection other than `conn` carries (or can carry) records.
    pub fn other_connections(&self, conn: ConnectionId) -> bool {
        self.conns
            .iter()
            .any(|(id, c)| *id != conn && c.state == ConnectionState::Active)
    }

    /// True if a connection other than `conn` takes stream data.
    pub fn other_carries_data(&self, conn: ConnectionId) -> bool {
        self.conns
            .iter()
            .any(|(id, c)| *id != conn && c.carries_data())
    }

    /// True if `conn` is a join waiting for its first record.
    pub fn is_pending(&self, conn: ConnectionId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.state == ConnectionState::PendingAuth)
    }

    /// Asks the scheduler (if any) whether `conn` takes stream data now;
    /// `extra` unacknowledged bytes on `conn` are not yet recorded; what
    /// waits to be sent comes from `streams`, asked only when there is a
    /// choice to make.
    fn scheduler_allows(&mut self, conn: ConnectionId, extra: u64, streams: &Streams) -> bool {
        let Some(sched) = self.scheduler.as_mut() else {
            return true;
        };
        // One connection: nothing to choose (and no per-record cost).
        if self.conns.len() == 1 {
            return true;
        }
        let paths = &mut self.paths_scratch;
        paths.clear();
        paths.extend(
            self.conns
                .iter()
                .filter(|(id, c)| c.carries_data() || **id == conn)
                .map(|(id, c)| PathInfo {
                    conn: *id,
                    sent_bytes: c.sent_bytes,
                    unacked_bytes: c.unacked_bytes + if *id == conn { extra } else { 0 },
                    rtt: c.estimate.rtt,
                    cwnd_bytes: c.estimate.cwnd_bytes,
                    delivery_rate: c.estimate.delivery_rate,
                    loss: c.estimate.loss,
                }),
        );
        sched.allow(conn, paths, streams.waiting_to_send())
    }

    /// The connection control frames (credit, tokens, addresses) go on:
    /// the one with the lowest RTT among those that can send, else
    /// `primary`.
    pub fn control_connection(&self, primary: ConnectionId) -> ConnectionId {
        if self.conns.len() == 1 {
            return primary;
        }
        self.conns
            .iter()
            .filter(|(_, c)| c.can_send())
            .filter_map(|(id, c)| c.estimate.rtt.map(|r| (r, *id)))
            .min()
            .map_or(primary, |(_, id)| id)
    }

    /// True if `conn`'s RTT is well above the fastest connection's.
    fn is_slow(&self, conn: ConnectionId) -> bool {
        let my_rtt = self.conns.get(&conn).and_then(|c| c.estimate.rtt);
        let fastest = self
            .conns
            .values()
            .filter(|c| c.can_send())
            .filter_map(|c| c.estimate.rtt)
            .min();
        matches!((my_rtt, fastest), (Some(m), Some(f)) if m > f + f / 2)
    }
}

impl Session {
    /// Decides what `conn` may carry of new stream data in one record
    /// that already holds `replayed` bytes of replayed data (recorded as
    /// unacknowledged once the record is sealed, counted here already).
    pub(crate) fn send_policy(&mut self, conn: ConnectionId, replayed: u64) -> SendPolicy {
        let coupled = self.paths.scheduler.is_some();
        let scheduled = self.paths.scheduler_allows(conn, replayed, &self.streams);
        // A peer that never acknowledges cannot make us keep more than
        // twice our own session window of sent data.
        let unacked = Recovery::unacked_total(&self.paths.conns) + replayed;
        let room_for_new = !self.recovery.enabled || unacked < 2 * self.cfg.session_window;
        let proven = self
            .paths
            .conns
            .get(&conn)
            .is_some_and(|c| c.carries_data());
        SendPolicy {
            new_data: room_for_new && proven,
            coupled,
            scheduled,
            // Head-of-line awareness: when a stream's credit runs low (the
            // receiver holds data waiting for a gap), only the fastest path
            // gets more of it; a slower one would only add later gaps.
            slow_path: coupled && self.paths.is_slow(conn),
            low_credit: self
                .peer_params
                .map_or(0, |p| p.initial_max_stream_data / 4),
        }
    }

    /// The new connection becomes primary and carries every stream (after
    /// a rejoin, when no other connection was left).
    pub(crate) fn adopt_primary_if_orphaned(&mut self, conn: ConnectionId) {
        let primary = self.paths.conns.get(&self.paths.primary);
        if primary.is_some_and(|c| c.carries_data()) {
            return;
        }
        // A joined connection not yet proven becomes primary only while
        // the current one cannot send at all; proving it calls this again.
        if primary.is_some_and(|c| c.can_send())
            && self.paths.conns.get(&conn).is_some_and(|c| c.unproven)
        {
            return;
        }
        self.paths.primary = conn;
        for s in self.streams.map.values_mut() {
            s.conn = conn;
        }
        self.streams.requeue_all();
    }

    /// Stops sending on `conn`: its streams move to the primary (or any
    /// active) connection. `tell_peer` queues a CONNECTION_RESET.
    pub(crate) fn retire_connection(&mut self, conn: ConnectionId, tell_peer: bool) {
        let Some(c) = self.paths.conns.get_mut(&conn) else {
            return;
        };
        if c.state == ConnectionState::Active {
            c.state = ConnectionState::Draining;
        }
        if self.paths.primary == conn {
            if let Some((id, _)) = self.paths.conns.iter().find(|(_, c)| c.can_send()) {
                self.paths.primary = *id;
            }
        }
        let primary = self.paths.primary;
        for s in self.streams.map.values_mut() {
            if s.conn == conn {
                // A stream steered here is free again: the connection it
                // was steered to is gone.
                s.conn = primary;
                s.pinned = false;
            }
        }
        if tell_peer {
            self.pending.reset_connection(conn, None);
        }
    }

    /// Forgets a connection that ended, moving its streams to another one.
    pub(crate) fn drop_connection(&mut self, conn: ConnectionId) {
        self.retire_connection(conn, false);
        self.requeue_unacked(conn);
        self.paths.conns.remove(&conn);
        self.events.push_back(Event::ConnectionClosed(conn));
        if self.side == Side::Server && self.close.error.is_none() {
            self.replenish_tokens();
        }
    }

    /// Moves every stream, and new streams, to `conn` (application-driven
    /// migration). Records already sent on other connections still arrive
    /// and are reordered by stream offset; the peer is told with
    /// STREAM_CHANGE so its data follows.
    pub fn migrate(&mut self, conn: ConnectionId) -> Result<(), CallError> {
        self.check_open()?;
        if !self.paths.can_send_on(conn) {
            return Err(CallError::Usage("no such active connection"));
        }
        self.paths.primary = conn;
        let ids: Vec<StreamId> = self.streams.map.keys().copied().collect();
        for id in ids {
            self.set_stream_connection(id, conn)?;
        }
        Ok(())
    }

    /// Sends a stream's data on `conn` from now on (stream steering), and
    /// asks the peer to do the same (STREAM_CHANGE). A steered stream is
    /// pinned: the scheduler no longer spreads it over other connections
    /// (until `conn` fails, when it moves and is free again).
    pub fn set_stream_connection(
        &mut self,
        id: StreamId,
        conn: ConnectionId,
    ) -> Result<(), CallError> {
        self.check_open()?;
        if !self.paths.can_send_on(conn) {
            return Err(CallError::Usage("no such active connection"));
        }
        let s = self.streams.get_mut(id)?;
        s.conn = conn;
        s.pinned = true;
        self.pending.change_stream(id, s);
        Ok(())
    }

    /// The connection a stream's data is sent on.
    pub fn stream_connection(&self, id: StreamId) -> Option<ConnectionId> {
        self.streams.map.get(&id).map(|s| s.conn)
    }

    /// A STREAM_CHANGE from the peer: its data of stream `id` now comes on
    /// `conn`, and ours follows.
    pub(crate) fn on_stream_change(
        &mut self,
        id: StreamId,
        conn: ConnectionId,
    ) -> Result<(), Error> {
        // A change toward a connection that is not (or no longer) active
        // here is stale, e.g. it crossed a failure: ignore.
        if !self.paths.can_send_on(conn) {
            return Ok(());
        }
        if self.ensure_stream(id)? {
            if let Some(s) = self.streams.map.get_mut(&id) {
                s.conn = conn;
                s.pinned = true;
            }
        }
        Ok(())
    }

    /// Stops sending on `conn` and tells the peer (CONNECTION_RESET); the
    /// caller closes the TCP connection once [`Self::poll_transmit`] gives
    /// nothing more for it. Its streams move to the primary connection.
    pub fn close_connection(&mut self, conn: ConnectionId) -> Result<(), CallError> {
        self.check_open()?;
        if !self.paths.other_connections(conn) {
            return Err(CallError::Usage(
                "cannot retire the last connection; close the session",
            ));
        }
        self.retire_connection(conn, true);
        Ok(())
    }

    /// Chooses how streams that are not steered are spread over the
    /// session's connections (default: [`TransportConfig::scheduler`],
    /// earliest arrival); `None` keeps each stream on its own connection
    /// (the primary's unless steered, see [`Self::set_stream_connection`]).
    ///
    /// [`TransportConfig::scheduler`]: crate::config::TransportConfig::scheduler
    pub fn set_scheduler(&mut self, scheduler: Option<Box<dyn Scheduler>>) {
        self.paths.scheduler = scheduler;
        self.streams.requeue_all();
    }

    /// True when a scheduler spreads data over more than one connection
    /// (so it wants fresh path figures, see [`Self::set_path_info`]).
    pub fn aggregating(&self) -> bool {
        self.paths.scheduler.is_some() && self.paths.conns.len() > 1
    }

    /// The coupled-sending scheduler's name, if one is set.
    pub fn scheduler_name(&self) -> Option<String> {
        self.paths.scheduler.as_ref().map(|s| s.name())
    }

    /// Reports what the runtime measured of a connection (TCP_INFO) to the
    /// scheduler.
    pub fn set_path_info(&mut self, conn: ConnectionId, estimate: PathEstimate) {
        if let Some(c) = self.paths.conns.get_mut(&conn) {
            c.estimate = estimate;
        }
    }

    /// Stream bytes sent on each connection so far.
    pub fn bytes_sent_per_connection(&self) -> Vec<(ConnectionId, u64)> {
        self.paths
            .conns
            .iter()
            .map(|(id, c)| (*id, c.sent_bytes))
            .collect()
    }

    /// The session's connections and their states.
    pub fn connections(&self) -> Vec<(ConnectionId, ConnectionState)> {
        self.paths
            .conns
            .iter()
            .map(|(id, c)| (*id, c.state))
            .collect()
    }

    /// State of one connection (`None`: unknown or forgotten).
    pub fn connection_state(&self, conn: ConnectionId) -> Option<ConnectionState> {
        self.paths.conns.get(&conn).map(|c| c.state)
    }

    /// The session's only connection, when it has exactly one and it can
    /// send (TCPLS mode): then everything to transmit goes there.
    pub fn sole_connection(&self) -> Option<ConnectionId> {
        if !matches!(self.state, State::Tcpls(_)) || self.paths.conns.len() != 1 {
            return None;
        }
        self.paths
            .conns
            .iter()
            .next()
            .filter(|(_, c)| c.can_send())
            .map(|(id, _)| *id)
    }

    /// The connection new streams and control frames use.
    pub fn primary_connection(&self) -> ConnectionId {
        self.paths.primary
    }

    /// Advertises an address of this side to the peer (NEW_ADDRESS).
    /// At most 16 at a time, as many as a peer accepts.
    pub fn advertise_address(&mut self, addr: SocketAddr) -> Result<(), CallError> {
        self.check_open()?;
        let local = &mut self.paths.local_addresses;
        if !local.contains(&addr) {
            if local.len() >= MAX_PEER_ADDRESSES {
                return Err(CallError::Usage("too many advertised addresses (16)"));
            }
            local.push(addr);
        }
        self.pending.address_updates.push_back((addr, true));
        Ok(())
    }

    /// Withdraws an advertised address (REMOVE_ADDRESS).
    pub fn withdraw_address(&mut self, addr: SocketAddr) -> Result<(), CallError> {
        self.check_open()?;
        self.paths.local_addresses.retain(|a| *a != addr);
        self.pending.address_updates.push_back((addr, false));
        Ok(())
    }

    /// Addresses the peer advertised and has not withdrawn.
    pub fn peer_addresses(&self) -> &[SocketAddr] {
        &self.paths.peer_addresses
    }

    /// The peer advertised (`added`) or withdrew an address.
    pub(crate) fn on_peer_address(&mut self, addr: SocketAddr, added: bool) -> Result<(), Error> {
        let known = &mut self.paths.peer_addresses;
        let at = known.iter().position(|a| *a == addr);
        match (added, at) {
            (true, None) => {
                if known.len() >= MAX_PEER_ADDRESSES {
                    return Err(Error::Protocol("too many advertised addresses"));
                }
                known.push(addr);
            }
            (false, Some(i)) => {
                known.remove(i);
            }
            _ => return Ok(()),
        }
        self.events.push_back(Event::PeerAddress { addr, added });
        Ok(())
    }
}
