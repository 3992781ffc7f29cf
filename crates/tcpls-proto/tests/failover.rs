//! Failover, deterministically: connections die at random points (bytes in
//! flight lost), the survivors or a rejoined connection carry on, and every
//! byte arrives exactly once, in order. 1000 seeded runs.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tcpls_proto::session::ConnectionState;
use tcpls_proto::wire::join::{probe_join, JoinProbe};
use tcpls_proto::{ConnectionId, ReadOutcome, Session, StreamId};

struct Link {
    to_s: VecDeque<u8>,
    to_c: VecDeque<u8>,
    s_in: BytesMut,
    c_in: BytesMut,
}

impl Link {
    fn new() -> Self {
        Self {
            to_s: VecDeque::new(),
            to_c: VecDeque::new(),
            s_in: BytesMut::new(),
            c_in: BytesMut::new(),
        }
    }
}

struct Sim {
    p: Pair,
    links: BTreeMap<ConnectionId, Link>,
    rng: StdRng,
}

impl Sim {
    fn join(&mut self) -> Option<ConnectionId> {
        let (id, bytes) = self.p.c.join().ok()?;
        let JoinProbe::Join { token, len } = probe_join(&bytes) else {
            panic!("not a join");
        };
        let sid = self.p.s.accept_join(&token).expect("token accepted");
        assert_eq!(sid, id);
        let mut link = Link::new();
        link.to_s.extend(&bytes[len..]);
        self.links.insert(id, link);
        Some(id)
    }

    /// Kills a connection: what is in flight is lost; each side notices
    /// (or only the client, and the server learns from CONNECTION_RESET).
    fn kill(&mut self, id: ConnectionId, both: bool) {
        self.links.remove(&id);
        let now = self.p.now;
        self.p.c.handle_connection_error(id, "killed".into(), now);
        if both {
            self.p.s.handle_connection_error(id, "killed".into(), now);
        }
    }

    fn step(&mut self) {
        self.p.now += Duration::from_millis(1);
        self.p.timers();
        let now = self.p.now;
        let ids: Vec<ConnectionId> = self.links.keys().copied().collect();
        for id in ids {
            let link = self.links.get_mut(&id).unwrap();
            let mut wire = Vec::new();
            if self.p.c.connection_state(id) == Some(ConnectionState::Active) {
                let _ = self.p.c.poll_transmit(id, &mut wire, 32 << 10);
            }
            link.to_s.extend(&wire);
            wire.clear();
            if self.p.s.connection_state(id) == Some(ConnectionState::Active) {
                let _ = self.p.s.poll_transmit(id, &mut wire, 32 << 10);
            }
            link.to_c.extend(&wire);
            // Deliver a random part of what is in flight.
            let n = self.rng.gen_range(0..=link.to_s.len());
            link.s_in.extend(link.to_s.drain(..n));
            if self.p.s.connection_state(id).is_some() {
                let _ = self.p.s.recv(id, &mut link.s_in, now);
            }
            let n = self.rng.gen_range(0..=link.to_c.len());
            link.c_in.extend(link.to_c.drain(..n));
            if self.p.c.connection_state(id).is_some() {
                let _ = self.p.c.recv(id, &mut link.c_in, now);
            }
        }
    }
}

fn payload(seed: u64, stream: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| pattern(stream ^ seed as u32, i as u64))
        .collect()
}

fn read_stream(s: &mut Session, id: StreamId, into: &mut Vec<u8>) -> bool {
    loop {
        match s.read(id, usize::MAX) {
            Ok(ReadOutcome::Data(d)) => into.extend_from_slice(&d),
            Ok(ReadOutcome::Fin) => return true,
            Ok(ReadOutcome::Blocked) | Err(_) => return false,
            Ok(ReadOutcome::Reset(c)) => panic!("reset {c}"),
        }
    }
}

/// Returns (connections killed during the transfer, steps it took).
fn run(seed: u64) -> (u32, u32) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut p = Pair::established();
    p.drive();
    let mut sim = Sim {
        p,
        links: [(0, Link::new())].into(),
        rng: StdRng::seed_from_u64(seed ^ 0xfeed),
    };
    for _ in 0..rng.gen_range(0..3) {
        sim.join();
    }
    const STREAMS: usize = 3;
    let len = rng.gen_range(50_000..200_000);
    // Both directions: the client sends on its streams, the server answers
    // on streams of its own.
    let c_ids: Vec<StreamId> = (0..STREAMS)
        .map(|_| sim.p.c.open_stream().unwrap())
        .collect();
    let s_ids: Vec<StreamId> = (0..STREAMS)
        .map(|_| sim.p.s.open_stream().unwrap())
        .collect();
    let c_data: Vec<Vec<u8>> = c_ids.iter().map(|id| payload(seed, id.0, len)).collect();
    // The server queues its data without copying (`write_chunk`), in
    // chunks of every size: replays then resend slices of those chunks.
    let s_data: Vec<bytes::Bytes> = s_ids
        .iter()
        .map(|id| payload(seed, id.0, len).into())
        .collect();
    let mut c_off = [0; STREAMS];
    let mut s_off = [0; STREAMS];
    let mut got_s: BTreeMap<StreamId, (Vec<u8>, bool)> = BTreeMap::new();
    let mut got_c: BTreeMap<StreamId, (Vec<u8>, bool)> = BTreeMap::new();
    let kills: Vec<u32> = (0..rng.gen_range(1..4))
        .map(|_| rng.gen_range(1..25))
        .collect();
    let mut killed = 0;
    for step in 0..20_000u32 {
        for i in 0..STREAMS {
            if c_off[i] < len {
                c_off[i] += sim.p.c.write(c_ids[i], &c_data[i][c_off[i]..]).unwrap();
                if c_off[i] == len {
                    sim.p.c.finish(c_ids[i]).unwrap();
                }
            }
            if s_off[i] < len {
                let k = (step as usize * 7919 + i * 1000) % 40_000 + 1;
                let chunk = s_data[i].slice(s_off[i]..(s_off[i] + k).min(len));
                s_off[i] += sim.p.s.write_chunk(s_ids[i], chunk).unwrap();
                if s_off[i] == len {
                    sim.p.s.finish(s_ids[i]).unwrap();
                }
            }
        }
        if kills.contains(&step) {
            let live: Vec<ConnectionId> = sim.links.keys().copied().collect();
            if let Some(&victim) = live.get(rng.gen_range(0..live.len().max(1))) {
                sim.kill(victim, rng.gen_bool(0.7));
                killed += 1;
            }
        }
        if !sim
            .p
            .c
            .connections()
            .iter()
            .any(|(_, st)| *st == ConnectionState::Active)
        {
            sim.join().expect("client can rejoin");
        }
        sim.step();
        while sim.p.s.accept_stream().is_some() {}
        while sim.p.c.accept_stream().is_some() {}
        for id in &c_ids {
            let e = got_s.entry(*id).or_default();
            if !e.1 {
                e.1 = read_stream(&mut sim.p.s, *id, &mut e.0);
            }
        }
        for id in &s_ids {
            let e = got_c.entry(*id).or_default();
            if !e.1 {
                e.1 = read_stream(&mut sim.p.c, *id, &mut e.0);
            }
        }
        if got_s.values().all(|e| e.1) && got_c.values().all(|e| e.1) {
            for (i, id) in c_ids.iter().enumerate() {
                assert!(
                    got_s[id].0 == c_data[i],
                    "seed {seed}: client stream {id:?} corrupted"
                );
            }
            for (i, id) in s_ids.iter().enumerate() {
                assert!(
                    got_c[id].0 == s_data[i],
                    "seed {seed}: server stream {id:?} corrupted"
                );
            }
            assert!(sim.p.c.error().is_none() && sim.p.s.error().is_none());
            return (killed, step);
        }
        assert!(
            sim.p.c.error().is_none() && sim.p.s.error().is_none(),
            "seed {seed}: session failed: {:?} / {:?}",
            sim.p.c.error(),
            sim.p.s.error()
        );
    }
    let progress: Vec<usize> = got_s
        .values()
        .chain(got_c.values())
        .map(|e| e.0.len())
        .collect();
    panic!("seed {seed}: transfer did not finish (received {progress:?} of {len} each)");
}

#[test]
fn every_byte_exactly_once_across_1000_seeded_failures() {
    let mut kills_mid_transfer = 0;
    for seed in 0..1000 {
        let (killed, _steps) = run(seed);
        kills_mid_transfer += killed;
    }
    // The runs must really have lost connections in the middle of transfers.
    assert!(
        kills_mid_transfer > 1000,
        "only {kills_mid_transfer} kills happened"
    );
}

/// Coupled sending in memory: one stream spread over two links of
/// different speeds (3:1) by each scheduler, with connections dropped in
/// some runs; the data arrives exactly once and in order, both links carry
/// their share, and reassembly stays within the window.
#[test]
fn coupled_stream_over_unequal_links() {
    use tcpls_proto::session::scheduler::from_name;
    for (seed, sched) in ["round-robin", "lowest-rtt", "weighted:3,1"]
        .into_iter()
        .cycle()
        .take(30)
        .enumerate()
    {
        let mut p = Pair::established();
        p.drive();
        let mut sim = Sim {
            p,
            links: [(0, Link::new())].into(),
            rng: StdRng::seed_from_u64(seed as u64),
        };
        let extra = sim.join().unwrap();
        // Deliver the join at once, so both links carry records from the start.
        let link = sim.links.get_mut(&extra).unwrap();
        link.s_in.extend(link.to_s.drain(..));
        let now = sim.p.now;
        sim.p.s.recv(extra, &mut link.s_in, now).unwrap();
        sim.p.s.set_scheduler(from_name(sched));
        let len = 2_000_000;
        let data = payload(seed as u64, 1, len);
        // The client asks; the server sends one stream over both links.
        let req = sim.p.c.open_stream().unwrap();
        sim.p.c.write(req, b"go").unwrap();
        let mut sid = None;
        let mut off = 0;
        let mut got = Vec::new();
        let kill_at = if seed % 3 == 0 { Some(40) } else { None };
        for step in 0..50_000u32 {
            if sid.is_none() {
                sid = sim.p.s.accept_stream();
            }
            if let Some(s) = sid {
                if off < len {
                    off += sim.p.s.write(s, &data[off..]).unwrap();
                    if off == len {
                        sim.p.s.finish(s).unwrap();
                    }
                }
            }
            if Some(step) == kill_at {
                sim.kill(extra, true);
            }
            // Link 0 is three times as fast: it moves every step, link 1
            // every third step (what is not moved waits in its queue).
            sim.p.now += Duration::from_millis(1);
            sim.p.timers();
            let now = sim.p.now;
            let ids: Vec<ConnectionId> = sim.links.keys().copied().collect();
            for id in ids {
                if id != 0 && step % 3 != 0 {
                    continue;
                }
                let link = sim.links.get_mut(&id).unwrap();
                let mut wire = Vec::new();
                if sim.p.c.connection_state(id) == Some(ConnectionState::Active) {
                    let _ = sim.p.c.poll_transmit(id, &mut wire, 16 << 10);
                }
                link.s_in.extend_from_slice(&wire);
                let _ = sim.p.s.recv(id, &mut link.s_in, now);
                wire.clear();
                if sim.p.s.connection_state(id) == Some(ConnectionState::Active) {
                    let _ = sim.p.s.poll_transmit(id, &mut wire, 16 << 10);
                }
                link.c_in.extend_from_slice(&wire);
                let _ = sim.p.c.recv(id, &mut link.c_in, now);
            }
            if read_stream(&mut sim.p.c, req, &mut got) {
                break;
            }
        }
        assert!(
            got == data,
            "{sched} seed {seed}: {} of {len} bytes, corrupted or incomplete",
            got.len()
        );
        let per = sim.p.s.bytes_sent_per_connection();
        if kill_at.is_none() {
            assert!(
                per.len() == 2 && per.iter().all(|(_, b)| *b > 100_000),
                "{sched}: both links used: {per:?}"
            );
        }
        let window = tcpls_proto::TransportConfig::default().session_window;
        assert!(sim.p.c.peak_buffered() <= window);
    }
}

/// Builds a session pair with a second, joined connection, both active.
fn two_connections(seed: u64) -> (Sim, ConnectionId) {
    let mut p = Pair::established();
    p.drive();
    let mut sim = Sim {
        p,
        links: [(0, Link::new())].into(),
        rng: StdRng::seed_from_u64(seed),
    };
    let joined = sim.join().expect("a join token");
    for _ in 0..1000 {
        if sim.p.s.connection_state(joined) == Some(ConnectionState::Active)
            && sim.p.c.connection_state(joined) == Some(ConnectionState::Active)
            && !sim.p.c.has_unacked()
            && !sim.p.s.has_unacked()
        {
            return (sim, joined);
        }
        sim.step();
    }
    panic!("join did not complete");
}

/// An address advertised just before the connection carrying it dies
/// (NEW_ADDRESS lost in flight) still reaches the peer: a failure announces
/// the advertised addresses again, as it does credits and tokens.
#[test]
fn advertised_address_survives_the_loss_of_its_connection() {
    let (mut sim, joined) = two_connections(7);
    let addr: std::net::SocketAddr = "10.9.9.9:443".parse().unwrap();
    sim.p.s.advertise_address(addr).unwrap();
    let mut lost = Vec::new();
    sim.p.s.poll_transmit(0, &mut lost, 1 << 20).unwrap();
    assert!(!lost.is_empty(), "the NEW_ADDRESS went out on connection 0");
    sim.kill(0, true);
    for _ in 0..500 {
        sim.step();
    }
    assert_eq!(
        sim.p.c.connection_state(joined),
        Some(ConnectionState::Active)
    );
    assert_eq!(sim.p.c.peer_addresses(), &[addr]);
}

/// An ACK lost with its connection is made up for: the failure makes both
/// sides announce credits again (records that elicit ACKs), and the next
/// ACK is cumulative. Otherwise the peer would keep the acknowledged data
/// (and replay it on a later failure).
#[test]
fn acks_lost_with_a_connection_are_sent_again() {
    let (mut sim, joined) = two_connections(11);
    let id = sim.p.c.open_stream().unwrap();
    assert_eq!(sim.p.c.write(id, &[7; 5000]).unwrap(), 5000);
    // The data goes over connection 0 and arrives whole.
    let mut wire = Vec::new();
    sim.p.c.poll_transmit(0, &mut wire, 1 << 20).unwrap();
    let mut input = BytesMut::from(&wire[..]);
    let now = sim.p.now;
    sim.p.s.recv(0, &mut input, now).unwrap();
    assert!(sim.p.c.has_unacked());
    // The server's ACK leaves on the joined connection, which then dies.
    sim.p.now += Duration::from_millis(100);
    sim.p.timers();
    let mut lost = Vec::new();
    sim.p.s.poll_transmit(joined, &mut lost, 1 << 20).unwrap();
    assert!(
        !lost.is_empty(),
        "the ACK went out on the joined connection"
    );
    sim.kill(joined, true);
    for _ in 0..200 {
        sim.step();
    }
    assert!(!sim.p.c.has_unacked(), "the ACK was never sent again");
}
