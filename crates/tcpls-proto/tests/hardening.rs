//! Regression tests for what a hostile peer could do to a session (each
//! failed before its fix).

mod common;

use std::time::Duration;

use common::*;
use tcpls_proto::wire::frame::Frame;
use tcpls_proto::{ConnectionId, ReadOutcome, TransportConfig};

/// Plain TLS stream 0 has no flow-control credit; stopping to read it with
/// data already read used to underflow (a panic with overflow checks).
#[test]
fn fallback_stop_reading_after_partial_read() {
    let c = plain_client_config(TransportConfig::default());
    let mut p = Net::new(c, server_config(TransportConfig::default()), 1);
    p.drive();
    let a = p.c.open_stream().unwrap();
    p.c.write(a, b"first part").unwrap();
    p.drive();
    let sid = p.s.accept_stream().unwrap();
    assert!(matches!(p.s.read(sid, 5).unwrap(), ReadOutcome::Data(_)));
    p.s.stop_reading(sid).unwrap();
    // What comes after is dropped, and the session goes on.
    p.c.write(a, &[1u8; 100_000]).unwrap();
    p.drive();
    assert!(p.s.error().is_none() && p.c.error().is_none());
    assert_eq!(p.s.recv_held(), 0);
    p.s.write(sid, b"still here").unwrap();
    p.drive();
    assert_eq!(
        p.c.read(a, 100).unwrap(),
        ReadOutcome::Data("still here".into())
    );
}

/// A peer asking for a 49-day user timeout gets the local maximum.
#[test]
fn peer_user_timeout_is_clamped() {
    let greedy = TransportConfig {
        user_timeout: Some(Duration::from_millis(u32::MAX as u64)),
        ..Default::default()
    };
    let mut p = Net::new(
        client_config(greedy),
        server_config(TransportConfig::default()),
        2,
    );
    p.drive();
    let max = TransportConfig::default().max_peer_user_timeout;
    assert_eq!(p.s.user_timeout(), Some(max));
    // Our own request is ours to make.
    assert_eq!(
        p.c.user_timeout(),
        Some(Duration::from_millis(u32::MAX as u64))
    );
}

/// CONNECTION_RESET for a connection already known to be lost is a no-op:
/// it used to re-announce every limit, token and address each time.
#[test]
fn repeated_connection_reset_is_acted_on_once() {
    let mut p = Net::established();
    let extra = p.join_now();
    p.drive();
    let mut rec = Vec::new();
    Frame::ConnectionReset { conn: extra }.encode(&mut rec);
    let sent_after = |p: &mut Net| {
        let before = p.carried_total().1;
        p.c.send_raw_record_for_testing(&rec).unwrap();
        p.drive();
        p.carried_total().1 - before
    };
    let first = sent_after(&mut p);
    let second = sent_after(&mut p);
    let third = sent_after(&mut p);
    assert!(p.s.error().is_none());
    assert_eq!(second, third, "every repeat costs the same");
    assert!(
        second * 2 < first,
        "a repeat re-announced state: first {first} bytes, repeat {second}"
    );
    assert_ne!(extra, ConnectionId::FIRST);
}

/// Server writes `len` bytes on a fresh client stream after moving every
/// stream to `conn`; returns the stream.
fn server_sends_on(p: &mut Net, conn: ConnectionId, len: usize) -> tcpls_proto::StreamId {
    let id = p.c.open_stream().unwrap();
    p.c.write(id, b"request").unwrap();
    p.drive();
    let sid = p.s.accept_stream().unwrap();
    while let Ok(ReadOutcome::Data(_)) = p.s.read(sid, usize::MAX) {}
    p.s.migrate(conn).unwrap();
    let body = vec![0x42u8; len];
    let mut off = 0;
    while off < len {
        off += p.s.write(sid, &body[off..]).unwrap();
        p.drive();
    }
    sid
}

fn read_all(p: &mut Net, id: tcpls_proto::StreamId) -> usize {
    let mut n = 0;
    loop {
        match p.c.read(id, usize::MAX).unwrap() {
            ReadOutcome::Data(d) => n += d.len(),
            _ => return n,
        }
    }
}

/// A join's first flight replayed by an on-path observer from its own
/// socket gets the connection attached, but the server sends no stream
/// data on it until the client answers the challenge sent back on it:
/// here the server's records on it go nowhere (held), as they would to
/// the observer, and the data waits; once the real client sees them and
/// answers, the data flows.
#[test]
fn joined_connection_carries_data_only_after_its_challenge() {
    let mut p = Net::established();
    let extra = p.join().unwrap();
    p.set_policy(extra, Dir::ToClient, Policy::Hold);
    p.flush(extra, Dir::ToServer).unwrap();
    let len = 200_000;
    let sid = server_sends_on(&mut p, extra, len);
    p.drive();
    let (_, on_extra) = p.carried(extra);
    assert!(
        on_extra < 1000,
        "{on_extra} bytes went out on an unproven connection"
    );
    assert!(p.s.unsent(sid) > 0, "the data waits");
    // The records reach the real client: it answers on that connection.
    p.set_policy(extra, Dir::ToClient, Policy::Deliver);
    p.release(extra, Dir::ToClient);
    for _ in 0..50 {
        p.drive();
    }
    assert_eq!(read_all(&mut p, sid), len);
    assert!(
        p.carried(extra).1 > len,
        "the data went on the joined connection"
    );
}

/// Without failover (no ACKs otherwise), the client still answers.
#[test]
fn join_challenge_is_answered_without_failover() {
    let t = TransportConfig {
        failover: false,
        ..Default::default()
    };
    let mut p = Net::new(client_config(t.clone()), server_config(t), 7);
    p.drive();
    let extra = p.join_now();
    let len = 100_000;
    let sid = server_sends_on(&mut p, extra, len);
    for _ in 0..50 {
        p.drive();
    }
    assert_eq!(read_all(&mut p, sid), len);
    assert!(p.carried(extra).1 > len);
}

/// A record corrupted on the way (a middlebox, an attacker on one path)
/// fails that connection over like a reset; the session and its data go on.
#[test]
fn corrupt_record_fails_the_connection_over() {
    let mut p = Net::established();
    let extra = p.join_now();
    p.drive();
    let id = p.c.open_stream().unwrap();
    let total = 1 << 20;
    let data: Vec<u8> = (0..total).map(|i| pattern(0, i as u64)).collect();
    let mut off = 0;
    let mut got = Vec::new();
    let mut corrupted = false;
    while got.len() < total {
        if off < total {
            off +=
                p.c.write(id, &data[off..(off + 50_000).min(total)])
                    .unwrap();
        }
        if off > total / 3 && !corrupted {
            p.set_policy(ConnectionId::FIRST, Dir::ToServer, Policy::Hold);
            p.drive();
            assert!(p.corrupt(ConnectionId::FIRST, Dir::ToServer, 100));
            p.release(ConnectionId::FIRST, Dir::ToServer);
            corrupted = true;
        }
        p.drive();
        if let Some(s) = p.s.accept_stream() {
            assert_eq!(s, id);
        }
        while let Ok(ReadOutcome::Data(d)) = p.s.read(id, usize::MAX) {
            got.extend_from_slice(&d);
        }
        assert!(p.s.error().is_none(), "server: {:?}", p.s.error());
        assert!(p.c.error().is_none(), "client: {:?}", p.c.error());
        p.advance(Duration::from_millis(5));
    }
    assert!(corrupted);
    assert!(got == data, "the data arrived intact");
    let conns: Vec<_> = p.s.connections().iter().map(|(c, _)| *c).collect();
    assert_eq!(conns, vec![extra], "the corrupted connection is gone");
}

/// Plain TLS: the session stops taking the socket's bytes and stops
/// asking for them at the same point (what the reassembly holds reaches
/// the window), so a runtime never reads into a buffer nobody drains.
#[test]
fn fallback_wants_no_input_exactly_when_it_stops_taking_it() {
    let c = plain_client_config(TransportConfig::default());
    let t = TransportConfig {
        stream_window: 64 << 10,
        ..Default::default()
    };
    let mut p = Net::new(c, server_config(t), 3);
    p.drive();
    let a = p.c.open_stream().unwrap();
    for _ in 0..200 {
        p.c.write(a, &[7u8; 1000]).unwrap();
        p.drive();
        let held = p.s.recv_held() as u64;
        // Taking input and wanting it agree at every step.
        assert_eq!(p.s.wants_input(), held < 64 << 10, "held {held}");
    }
    assert!(!p.s.wants_input(), "the window filled up");
}

/// KEY_UPDATE must name the generation after the connection's, once per
/// record: anything else is a protocol violation.
#[test]
fn key_update_out_of_sequence_is_refused() {
    let frames = |gens: &[u32]| {
        let mut rec = Vec::new();
        for gen in gens {
            Frame::KeyUpdate { gen: *gen }.encode(&mut rec);
        }
        rec
    };
    // Parsed from the record's end: the last frame comes first.
    for gens in [&[5][..], &[0], &[2, 1]] {
        let mut p = Net::established();
        p.c.send_raw_record_for_testing(&frames(gens)).unwrap();
        p.drive();
        let e = p.s.error().expect("refused");
        assert_eq!(
            e.code(),
            tcpls_proto::ErrorCode::PROTOCOL_VIOLATION,
            "{gens:?}: {e}"
        );
    }
}

/// A peer flooding TRANSPORT_OPTION requests (hundreds per record, never
/// reading our answers) gets at most 16 of them handled: the runtime sees
/// at most 16 requests and at most 16 answers wait to be sent, whatever
/// arrives; a repeat of a pending request is not counted twice; the
/// session goes on.
#[test]
fn a_flood_of_transport_option_requests_is_bounded() {
    use tcpls_proto::session::Event;
    use tcpls_proto::wire::frame::TransportOptionId;
    let mut p = Net::established();
    while p.s.poll_event().is_some() {}
    // Requests the policy refuses at once (answers queued) and ones the
    // runtime must answer (events), several records of them, each id
    // sent twice.
    for round in 0..4u32 {
        let mut rec = Vec::new();
        for i in 0..300u32 {
            let request = round * 1000 + i / 2;
            let (option, value) = if i % 4 < 2 {
                (TransportOptionId::CONGESTION_CONTROL, &b"vegas"[..])
            } else {
                (TransportOptionId::USER_TIMEOUT, &[0u8, 0, 3, 232][..])
            };
            Frame::TransportOption {
                request,
                conn: None,
                option,
                value,
            }
            .encode(&mut rec);
        }
        p.c.send_raw_record_for_testing(&rec).unwrap();
    }
    // Deliver to the server without letting it send anything back.
    deliver_to_server(&mut p);
    let mut asked = 0;
    let mut refused = 0;
    while let Some(e) = p.s.poll_event() {
        match e {
            Event::PeerOption { .. } => asked += 1,
            Event::PeerOptionRefused { .. } => refused += 1,
            _ => {}
        }
    }
    assert!(
        asked + refused <= 16,
        "{asked} handed to the runtime, {refused} refused"
    );
    assert!(asked + refused > 0);
    assert!(p.s.error().is_none() && p.c.error().is_none());
}

/// A peer sending congestion controller program bytes
/// (TRANSPORT_OPTION_DATA) to a side that accepts any program: tiny
/// scattered pieces, pieces of many requests never announced, pieces past
/// the limit, then a whole program whose bytes do not match the announced
/// SHA-256. What is held stays within about twice the size limit, the bad
/// program is refused with a reason, and the session goes on.
#[test]
fn hostile_program_data_is_bounded_and_refused() {
    use tcpls_proto::session::options::CcProgramPolicy;
    use tcpls_proto::session::Event;
    use tcpls_proto::wire::frame::TransportOptionId;
    const MAX: usize = 16 << 10;
    let t = TransportConfig {
        peer_cc_programs: CcProgramPolicy::Any,
        max_cc_program: MAX,
        ..Default::default()
    };
    let mut p = Net::new(
        client_config(TransportConfig::default()),
        server_config(t),
        1,
    );
    p.drive();
    while p.s.poll_event().is_some() {}
    let deliver = |p: &mut Net, rec: &[u8]| {
        p.c.send_raw_record_for_testing(rec).unwrap();
        deliver_to_server(p);
    };
    let mut peak = 0;
    // One-byte pieces at every other offset of one request, then of many
    // requests, then far past the limit.
    for round in 0..40u32 {
        let mut rec = Vec::new();
        for i in 0..400u32 {
            let (request, offset) = match round % 3 {
                0 => (7, (round * 400 + i) * 2),
                1 => (100 + i, i),
                _ => (7, u32::MAX - 10 - i),
            };
            Frame::TransportOptionData {
                request,
                offset,
                data: &[0xaa],
            }
            .encode(&mut rec);
        }
        deliver(&mut p, &rec);
        peak = peak.max(p.s.peer_program_held());
    }
    assert!(peak <= 2 * MAX + 4096, "held {peak}");
    // A whole program whose bytes are not the announced ones.
    let mut value = 1000u32.to_be_bytes().to_vec();
    value.extend_from_slice(&[0x11; 32]);
    value.extend_from_slice(b"tcpls_x");
    let mut rec = Vec::new();
    Frame::TransportOption {
        request: 9,
        conn: None,
        option: TransportOptionId::CONGESTION_PROGRAM,
        value: &value,
    }
    .encode(&mut rec);
    Frame::TransportOptionData {
        request: 9,
        offset: 0,
        data: &[0x22; 1000],
    }
    .encode(&mut rec);
    deliver(&mut p, &rec);
    let refused: Vec<String> = std::iter::from_fn(|| p.s.poll_event())
        .filter_map(|e| match e {
            Event::PeerOptionRefused { reason, .. } => Some(reason),
            Event::PeerOption { option, .. } => panic!("handed to the runtime: {option:?}"),
            _ => None,
        })
        .collect();
    assert!(
        refused.iter().any(|r| r.contains("SHA-256 differs")),
        "{refused:?}"
    );
    assert_eq!(p.s.peer_program_held(), 0);
    assert!(p.s.error().is_none() && p.c.error().is_none());
}

/// Hands what the client has to send to the server, nothing back.
fn deliver_to_server(p: &mut Net) {
    let mut wire = Vec::new();
    p.c.poll_transmit(ConnectionId(0), &mut wire, 1 << 24)
        .unwrap();
    let mut input = bytes::BytesMut::from(&wire[..]);
    let now = p.now;
    p.s.recv(ConnectionId(0), &mut input, now).unwrap();
}
