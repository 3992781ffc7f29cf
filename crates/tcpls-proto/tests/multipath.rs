//! Several connections per session, in memory: joins with one-time tokens,
//! migration with reordering, stream steering, refused joins.

mod common;

use bytes::BytesMut;
use common::*;
use tcpls_proto::session::ConnectionState;
use tcpls_proto::wire::join::{probe_join, JoinProbe};
use tcpls_proto::{CallError, ConnectionId, ReadOutcome, Session, Side, StreamId, TransportConfig};

/// Client and server with one link per connection, on a frozen clock (no
/// timers fire), 64 KiB per connection and step; a link can be held back to
/// reorder connections against each other.
fn net() -> Net {
    let mut n = Net::established();
    n.drive();
    n.tick = None;
    n.burst = 64 << 10;
    n
}

fn read_all(s: &mut Session, id: StreamId, into: &mut Vec<u8>) -> bool {
    loop {
        match s.read(id, usize::MAX).unwrap() {
            ReadOutcome::Data(d) => into.extend_from_slice(&d),
            ReadOutcome::Fin => return true,
            ReadOutcome::Blocked => return false,
            ReadOutcome::Reset(c) => panic!("reset {c}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn server_issues_tokens_and_join_steers_a_stream() {
    let mut n = net();
    let max = TransportConfig::default().max_connections as usize;
    assert_eq!(n.c.available_tokens(), max - 1);
    let id = n.join_now();
    n.drive();
    assert_eq!(n.s.connection_state(id), Some(ConnectionState::Active));
    // Tokens plus connections never exceed the connection limit.
    assert_eq!(n.c.available_tokens(), max - 2);

    let a = n.c.open_stream().unwrap();
    n.c.set_stream_connection(a, id).unwrap();
    let data = vec![42u8; 300_000];
    n.c.write(a, &data).unwrap();
    n.c.finish(a).unwrap();
    let before = n.carried(ConnectionId(0)).0;
    n.drive();
    assert!(
        n.carried(id).0 > data.len(),
        "stream data went over the joined connection"
    );
    assert!(
        n.carried(ConnectionId(0)).0 - before < 1000,
        "not over connection 0"
    );
    let sid = n.s.accept_stream().unwrap();
    // STREAM_CHANGE made the server answer on the same connection.
    assert_eq!(n.s.stream_connection(sid), Some(id));
    let mut got = Vec::new();
    assert!(read_all(&mut n.s, sid, &mut got));
    assert_eq!(got, data);
}

#[test]
fn migration_with_reordering_loses_and_duplicates_nothing() {
    let mut n = net();
    let id = n.join_now();
    n.drive();
    let a = n.c.open_stream().unwrap();
    let data: Vec<u8> = (0..4_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut written = 0;
    let mut got = Vec::new();
    let mut sid = None;
    let mut migrated = false;
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 100_000, "stalled");
        if written < data.len() {
            written += n.c.write(a, &data[written..]).unwrap();
            if written == data.len() {
                n.c.finish(a).unwrap();
            }
        }
        if !migrated && written > data.len() / 3 {
            // Hold what is in flight on connection 0, move to the new one:
            // later bytes arrive before earlier ones.
            n.hold(ConnectionId(0), Dir::ToServer);
            n.step();
            n.c.migrate(id).unwrap();
            migrated = true;
        }
        n.step();
        if migrated
            && written == data.len()
            && n.policy(ConnectionId(0), Dir::ToServer) == Policy::Hold
        {
            n.release(ConnectionId(0), Dir::ToServer);
        }
        if let Some(s) = n.s.accept_stream() {
            sid = Some(s);
        }
        if let Some(s) = sid {
            if read_all(&mut n.s, s, &mut got) {
                break;
            }
        }
    }
    assert_eq!(got.len(), data.len());
    assert!(got == data, "bytes differ");
    assert_eq!(n.c.primary_connection(), id);
    // Retire the old connection: the peer is told, then its FIN is benign.
    n.c.close_connection(ConnectionId(0)).unwrap();
    n.drive();
    assert_eq!(
        n.s.connection_state(ConnectionId(0)),
        Some(ConnectionState::Draining)
    );
    n.eof(ConnectionId(0), Side::Server);
    n.eof(ConnectionId(0), Side::Client);
    assert!(n.s.error().is_none() && n.c.error().is_none());
    assert_eq!(n.s.connection_state(ConnectionId(0)), None);
    // The closed connection's slot comes back as a new token (with the
    // next record, or after an ACK delay in one of its own: this test's
    // clock stands still otherwise).
    n.kill(ConnectionId(0));
    n.drive();
    n.advance(TransportConfig::default().ack_delay);
    n.drive();
    let max = TransportConfig::default().max_connections as usize;
    assert_eq!(n.c.available_tokens(), max - 1);
    // The session goes on over the remaining connection.
    let b = n.c.open_stream().unwrap();
    n.c.write(b, b"still here").unwrap();
    n.drive();
    let sb = n.s.accept_stream().unwrap();
    let mut tail = Vec::new();
    read_all(&mut n.s, sb, &mut tail);
    assert_eq!(tail, b"still here");
}

#[test]
fn bad_joins_are_refused_without_effect() {
    let mut n = net();
    // A random token.
    assert!(matches!(
        n.s.accept_join(&[7u8; 32]),
        Err(CallError::JoinRefused(_))
    ));
    // A valid token with a record not sealed under the session keys.
    let (id, bytes) = n.c.join().unwrap();
    let JoinProbe::Join { token, len } = probe_join(&bytes) else {
        panic!()
    };
    assert_eq!(n.s.accept_join(&token).unwrap(), id);
    let mut forged = bytes[len..].to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let mut buf = BytesMut::from(&forged[..]);
    assert!(matches!(
        n.s.recv(id, &mut buf, n.now),
        Err(CallError::JoinRefused(_))
    ));
    assert!(n.s.error().is_none());
    // The forged attempt spent the token: it cannot be replayed, even with
    // the real record, and the server issues a replacement.
    assert!(matches!(
        n.s.accept_join(&token),
        Err(CallError::JoinRefused(_))
    ));
    // The client joins again with a fresh token and the real record.
    n.drive();
    let (id, bytes) = n.c.join().unwrap();
    let JoinProbe::Join { token, len } = probe_join(&bytes) else {
        panic!()
    };
    assert_eq!(n.s.accept_join(&token).unwrap(), id);
    let mut real = BytesMut::from(&bytes[len..]);
    n.s.recv(id, &mut real, n.now).unwrap();
    assert_eq!(n.s.connection_state(id), Some(ConnectionState::Active));
    // Replay of the used token.
    assert!(matches!(
        n.s.accept_join(&token),
        Err(CallError::JoinRefused(_))
    ));
    // A token of another session.
    let mut other = net();
    let (_, obytes) = other.c.join().unwrap();
    let JoinProbe::Join { token: otoken, .. } = probe_join(&obytes) else {
        panic!()
    };
    assert!(matches!(
        n.s.accept_join(&otoken),
        Err(CallError::JoinRefused(_))
    ));
    // The session is unaffected by all of the above.
    assert!(n.s.error().is_none());
    let a = n.c.open_stream().unwrap();
    n.c.write(a, b"ok").unwrap();
    n.add_link(id);
    n.drive();
    assert!(n.s.accept_stream().is_some());
    // After the session closed, no token works.
    let (_, later) = n.c.join().unwrap();
    let JoinProbe::Join { token: ltoken, .. } = probe_join(&later) else {
        panic!()
    };
    n.s.close(tcpls_proto::ErrorCode::NO_ERROR, "bye");
    assert!(n.s.accept_join(&ltoken).is_err());
}

/// A side advertises at most as many addresses as a peer accepts (16): the
/// 17th is refused locally instead of ending the session at the peer. And
/// the peer applies address updates in the order they were made, also when
/// one record carries several (it parses records from their end).
#[test]
fn at_most_sixteen_addresses_are_advertised() {
    let mut p = Net::established();
    p.drive();
    let addr = |i: u8| std::net::SocketAddr::from(([10, 0, 0, i], 443));
    for i in 1..=16 {
        p.s.advertise_address(addr(i)).unwrap();
    }
    p.s.advertise_address(addr(3)).unwrap(); // again: still 16
    assert!(matches!(
        p.s.advertise_address(addr(17)),
        Err(CallError::Usage(_))
    ));
    p.s.withdraw_address(addr(1)).unwrap();
    p.s.advertise_address(addr(17)).unwrap();
    p.drive();
    let mut got = p.c.peer_addresses().to_vec();
    got.sort();
    let mut want: Vec<_> = (2..=17).map(addr).collect();
    want.sort();
    assert_eq!(got, want);
    assert!(
        p.c.error().is_none() && p.s.error().is_none(),
        "{:?} {:?}",
        p.c.error(),
        p.s.error()
    );
    // Updates in one record apply in the order they were made.
    p.s.withdraw_address(addr(5)).unwrap();
    p.s.advertise_address(addr(5)).unwrap();
    p.s.withdraw_address(addr(6)).unwrap();
    p.drive();
    assert!(p.c.peer_addresses().contains(&addr(5)));
    assert!(!p.c.peer_addresses().contains(&addr(6)));
}

/// The server answers a client request with `len` bytes on one stream it
/// does not steer; returns the stream bytes it sent per connection.
fn serve_one_stream(n: &mut Net, len: usize) -> Vec<(ConnectionId, u64)> {
    let req = n.c.open_stream().unwrap();
    n.c.write(req, b"go").unwrap();
    n.drive();
    let sid = n.s.accept_stream().unwrap();
    let data = vec![7u8; len];
    let (mut off, mut got) = (0, Vec::new());
    let before = n.s.bytes_sent_per_connection();
    for _ in 0..100_000 {
        if off < len {
            off += n.s.write(sid, &data[off..]).unwrap();
            if off == len {
                n.s.finish(sid).unwrap();
            }
        }
        n.step();
        if read_all(&mut n.c, req, &mut got) {
            break;
        }
    }
    assert_eq!(got, data, "the stream arrives whole");
    n.s.bytes_sent_per_connection()
        .into_iter()
        .map(|(id, b)| {
            let was = before.iter().find(|(i, _)| *i == id).map_or(0, |x| x.1);
            (id, b - was)
        })
        .collect()
}

fn sent_on(per: &[(ConnectionId, u64)], id: ConnectionId) -> u64 {
    per.iter().find(|(i, _)| *i == id).map_or(0, |x| x.1)
}

/// Aggregation is the default: a stream nobody steered goes over both
/// connections (each carries a fair share of equal links); with the
/// scheduler turned off it stays on the primary.
#[test]
fn an_unsteered_stream_is_spread_over_every_connection_by_default() {
    let mut n = net();
    assert_eq!(
        n.s.scheduler_name().as_deref(),
        Some(tcpls_proto::session::scheduler::DEFAULT)
    );
    let joined = n.join_now();
    n.drive();
    let len = 4 << 20;
    let per = serve_one_stream(&mut n, len);
    for id in [ConnectionId(0), joined] {
        assert!(
            sent_on(&per, id) >= len as u64 / 4,
            "connection {id} carries at least a quarter: {per:?}"
        );
    }

    n.s.set_scheduler(None);
    let per = serve_one_stream(&mut n, len);
    assert_eq!(sent_on(&per, joined), 0, "no scheduler: one connection");
}

/// Earliest arrival keeps a slow path out of a short transfer (its bytes
/// would arrive after the fast path had delivered everything) and brings
/// it in for a long one, where the fast path has more queued than it can
/// deliver in the slow path's extra one-way delay.
#[test]
fn a_slow_path_carries_only_what_the_fast_one_cannot_deliver_sooner() {
    use std::time::Duration;
    use tcpls_proto::session::scheduler::PathEstimate;
    let mut n = net();
    let slow = n.join_now();
    n.drive();
    let path = |ms, mbit: u64| PathEstimate {
        rtt: Some(Duration::from_millis(ms)),
        delivery_rate: Some(mbit * 1_000_000 / 8),
        ..PathEstimate::default()
    };
    n.s.set_path_info(ConnectionId(0), path(10, 60));
    n.s.set_path_info(slow, path(60, 30));
    // 100 kB: under the 187.5 kB the fast path delivers in 25 ms.
    let per = serve_one_stream(&mut n, 100_000);
    assert_eq!(sent_on(&per, slow), 0, "short: fast path only: {per:?}");
    let per = serve_one_stream(&mut n, 8 << 20);
    assert!(
        sent_on(&per, slow) > 0 && sent_on(&per, ConnectionId(0)) > sent_on(&per, slow),
        "long: both, mostly the fast one: {per:?}"
    );
}

/// After a connection fails, the state re-announced to the peer does not
/// pin the streams nobody steered: the response still goes over both
/// surviving connections.
#[test]
fn a_failover_does_not_pin_unsteered_streams() {
    let mut n = net();
    let a = n.join_now();
    let b = n.join_now();
    n.drive();
    let req = n.c.open_stream().unwrap();
    n.c.write(req, b"go").unwrap();
    n.drive();
    let sid = n.s.accept_stream().unwrap();
    n.kill(b);
    n.reset(b, Side::Client);
    n.reset(b, Side::Server);
    n.drive();
    let data = vec![9u8; 4 << 20];
    let before = n.s.bytes_sent_per_connection();
    let (mut off, mut got) = (0, Vec::new());
    for _ in 0..100_000 {
        if off < data.len() {
            off += n.s.write(sid, &data[off..]).unwrap();
            if off == data.len() {
                n.s.finish(sid).unwrap();
            }
        }
        n.step();
        if read_all(&mut n.c, req, &mut got) {
            break;
        }
    }
    assert_eq!(got, data);
    let after = n.s.bytes_sent_per_connection();
    for id in [ConnectionId(0), a] {
        let d = sent_on(&after, id) - sent_on(&before, id);
        assert!(
            d >= data.len() as u64 / 4,
            "{id} carried a share: {before:?} -> {after:?}"
        );
    }
}
