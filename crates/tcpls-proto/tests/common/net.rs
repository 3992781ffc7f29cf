//! An in-memory network between a client and a server `Session`.
//!
//! The two sessions are joined by any number of links (TCP connections),
//! keyed by connection id. Each direction of a link has a [`Policy`]: what
//! happens to the bytes a session sends on it. A [`Net::step`] moves bytes
//! on every live link once; [`Net::drive`] steps until nothing moves. The
//! clock is simulated: each step advances it by [`Net::tick`] and fires the
//! timers that are due (`poll_timeout` / `handle_timeout`); `drive` jumps
//! to timers due soon. Everything random comes from seeded RNGs, so a run
//! is reproducible from its seed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tcpls_proto::wire::join::{probe_join, JoinProbe};
use tcpls_proto::{
    CallError, ClientConfig, ConnectionId, ServerConfig, Session, Side, TransportConfig,
};

use super::{client_config, server_config};

/// A direction of a link, named by the side that receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client to server.
    ToServer,
    /// Server to client.
    ToClient,
}

impl Dir {
    pub const BOTH: [Dir; 2] = [Dir::ToServer, Dir::ToClient];
}

/// What a direction of a link does with the bytes sent on it.
#[derive(Clone, Debug, PartialEq)]
pub enum Policy {
    /// Everything sent arrives in the same step, in one piece.
    Deliver,
    /// Everything sent arrives in the same step, handed to `recv` in pieces
    /// of 1..=`max` bytes (records split across reads). Sizes come from
    /// [`Net::rng`].
    Chunked { max: usize },
    /// Each step a random part (0..=all, from [`Net::rng`]) of what is in
    /// flight arrives; the rest waits for later steps (a varying delay).
    Trickle,
    /// Bytes queue up until [`Net::release`].
    Hold,
    /// Some flights (what one `poll_transmit` returned) are lost on the
    /// wire; the others arrive as with `Deliver`. The sender is not told.
    Drop(Loss),
}

/// Which flights a [`Policy::Drop`] link loses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Loss {
    /// Flights n, 2n, 3n, ... (counted from when the policy was set);
    /// `EveryNth(1)` is a blackhole.
    EveryNth(u64),
    /// Each flight with probability `p`, from an RNG of its own seeded with
    /// `seed` (so it does not shift [`Net::rng`]).
    Fraction { p: f64, seed: u64 },
}

/// How a step orders the two directions of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exchange {
    /// The client sends and the server receives, then the server sends and
    /// the client receives: the server can answer within the step.
    Sequential,
    /// Both send, then both receive: what arrives in a step is answered in
    /// the next one.
    Simultaneous,
}

/// One direction of a link.
struct Pipe {
    policy: Policy,
    /// For `Loss::Fraction`.
    loss_rng: Option<StdRng>,
    /// Flights sent since the policy was set.
    flights: u64,
    /// Sent, not arrived yet.
    in_flight: BytesMut,
    /// Arrived, not consumed by `recv` yet (a partial record).
    inbuf: BytesMut,
    carried: usize,
    dropped: usize,
}

impl Pipe {
    fn new(policy: Policy) -> Self {
        let mut p = Self {
            policy: Policy::Deliver,
            loss_rng: None,
            flights: 0,
            in_flight: BytesMut::new(),
            inbuf: BytesMut::new(),
            carried: 0,
            dropped: 0,
        };
        p.set_policy(policy);
        p
    }

    fn set_policy(&mut self, policy: Policy) {
        self.loss_rng = match policy {
            Policy::Drop(Loss::Fraction { seed, .. }) => Some(StdRng::seed_from_u64(seed)),
            _ => None,
        };
        self.flights = 0;
        self.policy = policy;
    }

    /// Takes a flight from the sender: true if it is lost on the wire.
    fn loses(&mut self) -> bool {
        self.flights += 1;
        match self.policy {
            Policy::Drop(Loss::EveryNth(n)) => self.flights.is_multiple_of(n.max(1)),
            Policy::Drop(Loss::Fraction { p, .. }) => {
                self.loss_rng.as_mut().expect("loss rng").gen_bool(p)
            }
            _ => false,
        }
    }
}

/// One connection between the two sessions.
pub struct Link {
    to_server: Pipe,
    to_client: Pipe,
    dead: bool,
    /// The link moves on one step in `period`.
    period: u32,
    phase: u32,
}

impl Link {
    fn new(policy: Policy) -> Self {
        Self {
            to_server: Pipe::new(policy.clone()),
            to_client: Pipe::new(policy),
            dead: false,
            period: 1,
            phase: 0,
        }
    }

    fn pipe(&mut self, dir: Dir) -> &mut Pipe {
        match dir {
            Dir::ToServer => &mut self.to_server,
            Dir::ToClient => &mut self.to_client,
        }
    }
}

/// Client and server sessions and the links between them.
pub struct Net {
    pub c: Session,
    pub s: Session,
    /// The simulated time, handed to the sessions.
    pub now: Instant,
    /// Randomness of `Chunked` and `Trickle` links; tests draw from it too.
    pub rng: StdRng,
    /// Clock advance per step. `None` freezes the clock: steps fire no
    /// timers and `drive` only waits for the links to go quiet.
    pub tick: Option<Duration>,
    /// Most bytes taken from a session per connection and step.
    pub burst: usize,
    pub exchange: Exchange,
    links: BTreeMap<ConnectionId, Link>,
    /// Policy of links added from now on.
    new_link_policy: Policy,
}

impl Net {
    /// A client connecting to a server over link 0 (handshake not run).
    pub fn new(c: Arc<ClientConfig>, s: Arc<ServerConfig>, seed: u64) -> Self {
        let now = Instant::now();
        Self {
            c: Session::connect(c, "localhost", now).unwrap(),
            s: Session::accept(s, now).unwrap(),
            now,
            rng: StdRng::seed_from_u64(seed),
            tick: Some(Duration::from_millis(1)),
            burst: 256 << 10,
            exchange: Exchange::Sequential,
            links: [(ConnectionId(0), Link::new(Policy::Deliver))].into(),
            new_link_policy: Policy::Deliver,
        }
    }

    /// Default configurations, seed 1, handshake not run.
    pub fn default_pair() -> Self {
        Self::new(
            client_config(TransportConfig::default()),
            server_config(TransportConfig::default()),
            1,
        )
    }

    /// Default configurations, handshake done, both sides speak TCPLS.
    pub fn established() -> Self {
        let mut p = Self::default_pair();
        p.drive();
        assert!(p.c.is_tcpls() && p.s.is_tcpls());
        p
    }

    pub fn session(&mut self, side: Side) -> &mut Session {
        match side {
            Side::Client => &mut self.c,
            Side::Server => &mut self.s,
        }
    }

    // ------------------------------------------------------------ links

    /// Ids of the links that are not dead.
    pub fn live_links(&self) -> Vec<ConnectionId> {
        self.links
            .iter()
            .filter(|(_, l)| !l.dead)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Adds an empty link for connection `id` (one the test set up by hand),
    /// replacing any link of that id.
    pub fn add_link(&mut self, id: ConnectionId) {
        self.links
            .insert(id, Link::new(self.new_link_policy.clone()));
    }

    fn link(&mut self, id: ConnectionId) -> &mut Link {
        self.links
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no link {id}"))
    }

    /// Kills link `id`: the bytes in flight on it are lost and it carries
    /// nothing any more (the sessions are no longer polled on it, as a
    /// runtime whose socket is gone). Neither session is told: signal them
    /// with [`Self::reset`] or [`Self::eof`].
    pub fn kill(&mut self, id: ConnectionId) {
        let link = self.link(id);
        link.dead = true;
        for dir in Dir::BOTH {
            let pipe = link.pipe(dir);
            pipe.in_flight.clear();
            pipe.inbuf.clear();
        }
    }

    /// `side` learns that connection `id` was reset.
    pub fn reset(&mut self, id: ConnectionId, side: Side) {
        let now = self.now;
        self.session(side)
            .handle_connection_error(id, "killed".into(), now);
    }

    /// `side` reads the end of stream (the peer's FIN) on connection `id`.
    pub fn eof(&mut self, id: ConnectionId, side: Side) {
        let now = self.now;
        self.session(side).handle_eof(id, now);
    }

    pub fn set_policy(&mut self, id: ConnectionId, dir: Dir, policy: Policy) {
        self.link(id).pipe(dir).set_policy(policy);
    }

    /// Sets the policy of both directions of every link, and of links
    /// added later.
    pub fn set_policy_all(&mut self, policy: Policy) {
        for link in self.links.values_mut() {
            for dir in Dir::BOTH {
                link.pipe(dir).set_policy(policy.clone());
            }
        }
        self.new_link_policy = policy;
    }

    pub fn policy(&mut self, id: ConnectionId, dir: Dir) -> Policy {
        self.link(id).pipe(dir).policy.clone()
    }

    /// Holds back what is sent on `id` towards `dir` until `release`.
    pub fn hold(&mut self, id: ConnectionId, dir: Dir) {
        self.set_policy(id, dir, Policy::Hold);
    }

    /// Delivers what was held on `id` towards `dir`, which delivers from now on.
    /// Flips the bits of byte `at` of what is in flight on `id` towards
    /// `dir` (a corrupting middlebox); false if fewer bytes are in flight.
    pub fn corrupt(&mut self, id: ConnectionId, dir: Dir, at: usize) -> bool {
        let pipe = self.link(id).pipe(dir);
        match pipe.in_flight.get_mut(at) {
            Some(b) => {
                *b ^= 0xff;
                true
            }
            None => false,
        }
    }

    pub fn release(&mut self, id: ConnectionId, dir: Dir) {
        self.set_policy(id, dir, Policy::Deliver);
        let _ = self.flush(id, dir);
    }

    /// Link `id` moves on the next step, then on one step in `period`
    /// (a slower link; what it is not polled for waits in the sessions).
    pub fn set_period(&mut self, id: ConnectionId, period: u32) {
        let link = self.link(id);
        link.period = period.max(1);
        link.phase = 0;
    }

    /// Bytes taken from the sessions on link `id`: (to server, to client).
    pub fn carried(&self, id: ConnectionId) -> (usize, usize) {
        self.links
            .get(&id)
            .map_or((0, 0), |l| (l.to_server.carried, l.to_client.carried))
    }

    /// Bytes carried over all links: (to server, to client).
    pub fn carried_total(&self) -> (usize, usize) {
        self.links.keys().fold((0, 0), |(a, b), id| {
            let (x, y) = self.carried(*id);
            (a + x, b + y)
        })
    }

    /// Bytes lost by a `Drop` policy on link `id`: (to server, to client).
    pub fn dropped(&self, id: ConnectionId) -> (usize, usize) {
        self.links
            .get(&id)
            .map_or((0, 0), |l| (l.to_server.dropped, l.to_client.dropped))
    }

    /// Bytes sent on link `id` that have not arrived: (to server, to client).
    pub fn in_flight(&self, id: ConnectionId) -> (usize, usize) {
        self.links.get(&id).map_or((0, 0), |l| {
            (l.to_server.in_flight.len(), l.to_client.in_flight.len())
        })
    }

    // ------------------------------------------------------------ joins

    /// The client joins a new connection with one of its tokens and the
    /// server accepts the token. The join bytes are in flight on the new
    /// link (which has the policy of new links). None if the client has no
    /// token.
    pub fn join(&mut self) -> Option<ConnectionId> {
        let (id, bytes) = self.c.join().ok()?;
        let JoinProbe::Join { token, len } = probe_join(&bytes) else {
            panic!("not a join hello");
        };
        let sid = self.s.accept_join(&token).expect("token accepted");
        assert_eq!(sid, id);
        self.add_link(id);
        self.link(id)
            .to_server
            .in_flight
            .extend_from_slice(&bytes[len..]);
        Some(id)
    }

    /// [`Self::join`], with the join record delivered at once; the server
    /// must accept it.
    pub fn join_now(&mut self) -> ConnectionId {
        let id = self.join().expect("a join token");
        self.flush(id, Dir::ToServer).unwrap();
        id
    }

    // ------------------------------------------------------------ moving bytes

    /// Delivers everything in flight on `id` towards `dir` now, whatever
    /// the policy, and returns what the receiver's `recv` returned.
    pub fn flush(&mut self, id: ConnectionId, dir: Dir) -> Result<(), CallError> {
        let now = self.now;
        let link = self.links.get_mut(&id).expect("link");
        let pipe = link.pipe(dir);
        let bytes = pipe.in_flight.split();
        pipe.inbuf.extend_from_slice(&bytes);
        let to = match dir {
            Dir::ToServer => &mut self.s,
            Dir::ToClient => &mut self.c,
        };
        to.recv(id, &mut pipe.inbuf, now)
    }

    /// Takes what the sender has for link `id` towards `dir` and puts it on
    /// the wire. Returns the number of bytes taken.
    fn send(&mut self, id: ConnectionId, dir: Dir) -> usize {
        let (from, link) = match dir {
            Dir::ToServer => (&mut self.c, self.links.get_mut(&id).unwrap()),
            Dir::ToClient => (&mut self.s, self.links.get_mut(&id).unwrap()),
        };
        let mut wire = Vec::new();
        let _ = from.poll_transmit(id, &mut wire, self.burst);
        let pipe = link.pipe(dir);
        pipe.carried += wire.len();
        if wire.is_empty() {
            return 0;
        }
        if pipe.loses() {
            pipe.dropped += wire.len();
        } else {
            pipe.in_flight.extend_from_slice(&wire);
        }
        wire.len()
    }

    /// Hands the receiver of `dir` on link `id` what arrives this step.
    fn arrive(&mut self, id: ConnectionId, dir: Dir) {
        let now = self.now;
        let link = self.links.get_mut(&id).unwrap();
        let to = match dir {
            Dir::ToServer => &mut self.s,
            Dir::ToClient => &mut self.c,
        };
        let pipe = link.pipe(dir);
        match pipe.policy {
            Policy::Hold => {}
            Policy::Deliver | Policy::Drop(_) => {
                if !pipe.in_flight.is_empty() {
                    let bytes = pipe.in_flight.split();
                    pipe.inbuf.extend_from_slice(&bytes);
                    let _ = to.recv(id, &mut pipe.inbuf, now);
                }
            }
            Policy::Chunked { max } => {
                while !pipe.in_flight.is_empty() {
                    let n = self.rng.gen_range(1..=pipe.in_flight.len().min(max));
                    let piece = pipe.in_flight.split_to(n);
                    pipe.inbuf.extend_from_slice(&piece);
                    let _ = to.recv(id, &mut pipe.inbuf, now);
                }
            }
            Policy::Trickle => {
                // Drawn even when nothing is in flight, so a run's random
                // sequence depends only on the steps taken.
                let n = self.rng.gen_range(0..=pipe.in_flight.len());
                if n > 0 {
                    let piece = pipe.in_flight.split_to(n);
                    pipe.inbuf.extend_from_slice(&piece);
                    let _ = to.recv(id, &mut pipe.inbuf, now);
                }
            }
        }
    }

    /// Fires the sessions' timers that are due.
    pub fn fire_timers(&mut self) {
        for s in [&mut self.c, &mut self.s] {
            if s.poll_timeout().is_some_and(|t| t <= self.now) {
                s.handle_timeout(self.now);
            }
        }
    }

    /// Advances the clock by `d` and fires the timers then due.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.fire_timers();
    }

    /// One step: the clock advances by `tick` (timers due fire), then every
    /// live link whose turn it is moves bytes both ways. True if a session
    /// sent anything or bytes still in flight will arrive later.
    pub fn step(&mut self) -> bool {
        if let Some(tick) = self.tick {
            self.advance(tick);
        }
        let mut moved = false;
        for id in self.live_links() {
            let link = self.links.get_mut(&id).unwrap();
            let turn = link.phase.is_multiple_of(link.period);
            link.phase = link.phase.wrapping_add(1);
            if !turn {
                continue;
            }
            let sent = match self.exchange {
                Exchange::Sequential => {
                    let a = self.send(id, Dir::ToServer);
                    self.arrive(id, Dir::ToServer);
                    let b = self.send(id, Dir::ToClient);
                    self.arrive(id, Dir::ToClient);
                    a + b
                }
                Exchange::Simultaneous => {
                    let a = self.send(id, Dir::ToServer);
                    let b = self.send(id, Dir::ToClient);
                    self.arrive(id, Dir::ToServer);
                    self.arrive(id, Dir::ToClient);
                    a + b
                }
            };
            let link = &self.links[&id];
            let pending = [&link.to_server, &link.to_client]
                .iter()
                .any(|p| p.policy != Policy::Hold && !p.in_flight.is_empty());
            moved |= sent > 0 || pending;
        }
        moved
    }

    /// Steps until nothing moves. With a running clock, jumps the clock to
    /// timers (ACK delays) due within 100 ms, and stops at later ones.
    pub fn drive(&mut self) {
        for _ in 0..1_000_000 {
            if self.tick.is_some() {
                self.fire_timers();
            }
            if self.step() {
                continue;
            }
            if self.tick.is_none() {
                return;
            }
            let next = [self.c.poll_timeout(), self.s.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= self.now + Duration::from_millis(100) => {
                    self.now = self.now.max(t);
                }
                _ => return,
            }
        }
        panic!("simulation did not settle");
    }

    /// Steps until the clock has advanced by `d` (needs a running clock).
    pub fn run_for(&mut self, d: Duration) {
        let tick = self.tick.expect("a running clock");
        let end = self.now + d;
        while self.now + tick <= end {
            self.step();
        }
    }
}
