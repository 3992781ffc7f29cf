//! `Session::established_pair_for_testing`: a pair built from fixed keys,
//! without a handshake, behaves like one that shook hands (streams both
//! ways, joins, failover to a joined connection, key updates), for every
//! cipher suite.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::BytesMut;
use tcpls_proto::join::{probe_join, JoinProbe};
use tcpls_proto::{
    CipherSuite, ConnectionId, Event, ReadOutcome, Session, StreamId, TransportConfig,
};

/// Two sessions and the receive buffers of their connections.
struct Pair {
    c: Session,
    s: Session,
    now: Instant,
    /// Per connection: bytes for the server, bytes for the client.
    bufs: BTreeMap<ConnectionId, (BytesMut, BytesMut)>,
}

impl Pair {
    fn new(t: TransportConfig, suite: CipherSuite) -> Self {
        let now = Instant::now();
        let ack_delay = t.ack_delay;
        let (c, s) = Session::established_pair_for_testing(t.clone(), t, suite, now).unwrap();
        let mut p = Pair {
            c,
            s,
            now,
            bufs: [(ConnectionId::FIRST, Default::default())].into(),
        };
        // The server's join tokens wait an ACK delay for a record to ride
        // along with; this pair's clock stands still otherwise.
        p.now += ack_delay;
        p.s.handle_timeout(p.now);
        p.c.handle_timeout(p.now);
        p
    }

    /// Moves bytes on every connection until nothing moves.
    fn drive(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            let ids: Vec<_> = self.bufs.keys().copied().collect();
            for id in ids {
                let (to_s, to_c) = self.bufs.get_mut(&id).unwrap();
                let mut wire = Vec::new();
                if self.c.poll_transmit(id, &mut wire, usize::MAX).unwrap_or(0) > 0 {
                    moved = true;
                    to_s.extend_from_slice(&wire);
                    self.s.recv(id, to_s, self.now).unwrap();
                }
                wire.clear();
                if self.s.poll_transmit(id, &mut wire, usize::MAX).unwrap_or(0) > 0 {
                    moved = true;
                    to_c.extend_from_slice(&wire);
                    self.c.recv(id, to_c, self.now).unwrap();
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the pair never went quiet");
    }

    /// The client joins a connection; the server accepts it.
    fn join(&mut self) -> ConnectionId {
        let (id, bytes) = self.c.join().unwrap();
        let JoinProbe::Join { token, len } = probe_join(&bytes) else {
            panic!("not a join hello");
        };
        assert_eq!(self.s.accept_join(&token).unwrap(), id);
        let mut rest = BytesMut::from(&bytes[len..]);
        self.s.recv(id, &mut rest, self.now).unwrap();
        self.bufs.insert(id, Default::default());
        id
    }
}

/// Reads everything readable on `id` into `out`; true on FIN.
fn read_all(s: &mut Session, id: StreamId, out: &mut Vec<u8>) -> bool {
    loop {
        match s.read(id, 1 << 20).unwrap() {
            ReadOutcome::Data(d) => out.extend_from_slice(&d),
            ReadOutcome::Fin => return true,
            ReadOutcome::Blocked => return false,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn exchange(p: &mut Pair, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
    let id = p.c.open_stream().unwrap();
    let mut off = 0;
    let mut got = Vec::new();
    let mut fin = false;
    let mut sid = None;
    for _ in 0..1000 {
        if off < data.len() {
            off += p.c.write(id, &data[off..]).unwrap();
            if off == data.len() {
                p.c.finish(id).unwrap();
            }
        }
        p.drive();
        if sid.is_none() {
            sid = p.s.accept_stream();
        }
        if let Some(sid) = sid {
            fin = read_all(&mut p.s, sid, &mut got);
        }
        if fin {
            break;
        }
    }
    assert!(fin && got == data, "client to server");
    // And back on the same stream.
    let sid = sid.unwrap();
    let mut off = 0;
    let mut back = Vec::new();
    let mut fin = false;
    for _ in 0..1000 {
        if off < got.len() {
            off += p.s.write(sid, &got[off..]).unwrap();
            if off == got.len() {
                p.s.finish(sid).unwrap();
            }
        }
        p.drive();
        fin = read_all(&mut p.c, id, &mut back);
        if fin {
            break;
        }
    }
    assert!(fin && back == data, "server to client");
}

#[test]
fn fixed_key_pair_streams_and_joins() {
    for suite in CipherSuite::ALL {
        let mut p = Pair::new(TransportConfig::default(), suite);
        assert!(p.c.is_tcpls() && p.s.is_tcpls());
        assert_eq!(p.c.cipher_suite(), Some(suite));
        assert!(matches!(
            p.c.poll_event(),
            Some(Event::Connected { tcpls: true })
        ));
        p.drive();
        // The server issued its tokens as after a handshake: one per
        // further connection allowed (default 8 connections).
        assert_eq!(p.c.available_tokens(), 7);
        exchange(&mut p, 100_000);

        let c1 = p.join();
        let c2 = p.join();
        p.drive();
        let added: Vec<_> = std::iter::from_fn(|| p.s.poll_event())
            .filter_map(|e| match e {
                Event::ConnectionAdded(id) => Some(id),
                _ => None,
            })
            .collect();
        assert_eq!(added, [c1, c2]);
        exchange(&mut p, 50_000);

        // Connection 0 dies: the joined ones carry the session on.
        let now = p.now;
        p.c.handle_connection_error(ConnectionId::FIRST, "reset".into(), now);
        p.s.handle_connection_error(ConnectionId::FIRST, "reset".into(), now);
        p.bufs.remove(&ConnectionId::FIRST);
        exchange(&mut p, 30_000);
        assert!(p.c.error().is_none() && p.s.error().is_none());
    }
}

#[test]
fn fixed_key_pair_updates_keys() {
    let t = TransportConfig {
        key_update_records: 3,
        ..TransportConfig::default()
    };
    let mut p = Pair::new(t, CipherSuite::Aes128GcmSha256);
    p.drive();
    p.join();
    exchange(&mut p, 200_000);
    let (c_send, c_recv) = p.c.key_generations().unwrap();
    let (s_send, s_recv) = p.s.key_generations().unwrap();
    assert!(
        c_send >= 2 && s_send >= 2,
        "keys updated: {c_send} {s_send}"
    );
    assert_eq!((c_send, s_send), (s_recv, c_recv));
}

/// Regression (session_recv's first crash, input `00 01 01 00 0a 00`): a
/// corrupt record on the only connection, failover on, fails the
/// connection over instead of ending the session, which then waits for a
/// rejoin; the connection is forgotten, so a further `recv` on it is a
/// usage error, not a session failure. The old harness treated that usage
/// error as a bug.
#[test]
fn corrupt_record_on_sole_connection_fails_it_over() {
    let mut p = Pair::new(TransportConfig::default(), CipherSuite::Aes128GcmSha256);
    p.drive();
    let now = p.now;
    let mut garbage = BytesMut::from(&[1u8, 1, 0, 10, 0][..]);
    p.s.recv(ConnectionId::FIRST, &mut garbage, now).unwrap();
    assert!(p.s.error().is_none(), "the session goes on");
    assert_eq!(p.s.connection_state(ConnectionId::FIRST), None);
    let events: Vec<_> = std::iter::from_fn(|| p.s.poll_event()).collect();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::ConnectionFailed(ConnectionId::FIRST))));
    assert!(events.iter().any(|e| matches!(e, Event::Disconnected)));
    let mut more = BytesMut::from(&[23u8, 3, 3, 0, 0][..]);
    assert!(matches!(
        p.s.recv(ConnectionId::FIRST, &mut more, now),
        Err(tcpls_proto::CallError::Usage(_))
    ));
    assert!(p.s.error().is_none());
}
