//! Deterministic two-peer tests: no sockets, simulated clock.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::*;
use rand::Rng;
use tcpls_proto::session::Event;
use tcpls_proto::wire::frame::{encode_stream_header, Frame};
use tcpls_proto::{
    CallError, ConnectionId, Error, ErrorCode, ReadOutcome, StreamId, TransportConfig,
};

fn drain_events(s: &mut tcpls_proto::Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// 100 MiB over 64 concurrent streams, random write and read sizes, records
/// split at random points on the wire; every byte is checked.
#[test]
fn transfer_100mib_over_64_streams() {
    const STREAMS: usize = 64;
    const TOTAL: u64 = 100 << 20;
    let per = TOTAL / STREAMS as u64;
    let mut p = Net::established();
    p.set_policy_all(Policy::Chunked { max: 40_000 });
    let ids: Vec<StreamId> = (0..STREAMS).map(|_| p.c.open_stream().unwrap()).collect();
    let mut written = vec![0u64; STREAMS];
    // Ordered, so the readers draw from the RNG in the same order every run.
    let mut received: BTreeMap<StreamId, u64> = BTreeMap::new();
    let mut finished = 0;
    let mut buf = vec![0u8; 64 << 10];
    let mut rounds = 0u64;
    while finished < STREAMS {
        rounds += 1;
        assert!(rounds < 2_000_000, "transfer stalled");
        // Writers: a few random streams write a random amount.
        for _ in 0..8 {
            let i = p.rng.gen_range(0..STREAMS);
            if written[i] == per {
                continue;
            }
            let n = p
                .rng
                .gen_range(1..=buf.len())
                .min((per - written[i]) as usize);
            for (k, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern(ids[i].0, written[i] + k as u64);
            }
            let w = p.c.write(ids[i], &buf[..n]).unwrap();
            written[i] += w as u64;
            if written[i] == per {
                p.c.finish(ids[i]).unwrap();
            }
        }
        p.step();
        // Readers: the server reads random amounts from random streams.
        while let Some(id) = p.s.accept_stream() {
            received.insert(id, 0);
        }
        let open: Vec<StreamId> = received.keys().copied().collect();
        for id in open {
            if p.rng.gen_bool(0.3) {
                continue;
            }
            loop {
                let max = p.rng.gen_range(1..100_000);
                match p.s.read(id, max).unwrap() {
                    ReadOutcome::Data(d) => {
                        let off = received.get_mut(&id).unwrap();
                        for (k, b) in d.iter().enumerate() {
                            assert_eq!(
                                *b,
                                pattern(id.0, *off + k as u64),
                                "stream {id:?} offset {}",
                                *off + k as u64
                            );
                        }
                        *off += d.len() as u64;
                    }
                    ReadOutcome::Fin => {
                        assert_eq!(received[&id], per);
                        received.remove(&id);
                        finished += 1;
                        break;
                    }
                    ReadOutcome::Reset(c) => panic!("unexpected reset {c}"),
                    ReadOutcome::Blocked => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
    assert!(p.carried_total().0 as u64 > TOTAL);
    assert_eq!(
        p.s.stream_count(),
        64,
        "server keeps streams until it finishes its side"
    );
}

#[test]
fn both_sides_open_streams_and_half_close() {
    let mut p = Net::established();
    let a = p.c.open_stream().unwrap();
    let b = p.s.open_stream().unwrap();
    assert_eq!(a, StreamId(0));
    assert_eq!(b, StreamId(1));
    p.c.write(a, b"ping").unwrap();
    p.c.finish(a).unwrap();
    p.s.write(b, b"pong").unwrap();
    p.drive();
    assert_eq!(p.s.accept_stream(), Some(a));
    assert_eq!(p.c.accept_stream(), Some(b));
    assert_eq!(p.s.read(a, 100).unwrap(), ReadOutcome::Data("ping".into()));
    assert_eq!(p.s.read(a, 100).unwrap(), ReadOutcome::Fin);
    // Half-closed: the server can still answer on the client's stream.
    p.s.write(a, b"reply").unwrap();
    p.s.finish(a).unwrap();
    p.drive();
    assert_eq!(p.c.read(a, 100).unwrap(), ReadOutcome::Data("reply".into()));
    assert_eq!(p.c.read(a, 100).unwrap(), ReadOutcome::Fin);
    assert_eq!(p.c.read(b, 100).unwrap(), ReadOutcome::Data("pong".into()));
    assert_eq!(p.c.read(b, 100).unwrap(), ReadOutcome::Blocked);
    // Fully closed streams free their state.
    assert_eq!(p.c.stream_count(), 1);
}

#[test]
fn streams_interleave_fairly() {
    let mut p = Net::established();
    let a = p.c.open_stream().unwrap();
    let b = p.c.open_stream().unwrap();
    let data = vec![7u8; 1 << 20];
    p.c.write(a, &data).unwrap();
    p.c.write(b, &data).unwrap();
    // One step carries 256 KiB, a stream's turn: after three, both streams
    // must have had a share.
    for _ in 0..3 {
        p.step();
    }
    let mut got = HashMap::new();
    while let Some(id) = p.s.accept_stream() {
        let mut n = 0;
        while let ReadOutcome::Data(d) = p.s.read(id, usize::MAX).unwrap() {
            n += d.len();
        }
        got.insert(id, n);
    }
    let (na, nb) = (got[&a], got[&b]);
    assert!(na > 0 && nb > 0, "both streams progressed: {na} {nb}");
    // Streams take turns of 256 KiB (16 records each).
    assert!(
        na.abs_diff(nb) <= (256 + 16) << 10,
        "turns alternate: {na} vs {nb}"
    );
}

#[test]
fn reset_stream_reaches_reader() {
    let mut p = Net::established();
    let a = p.c.open_stream().unwrap();
    p.c.write(a, b"partial").unwrap();
    p.drive();
    p.c.reset(a, 42).unwrap();
    p.drive();
    assert_eq!(p.s.accept_stream(), Some(a));
    // Data that arrived before the reset is dropped with it.
    assert_eq!(p.s.read(a, 100).unwrap(), ReadOutcome::Reset(42));
    assert!(p.c.write(a, b"more").is_err());
}

#[test]
fn close_carries_code_and_reason() {
    let mut p = Net::established();
    p.c.close(ErrorCode::app(7), "bye now");
    p.drive();
    assert!(p.c.is_drained());
    match p.s.error() {
        Some(Error::PeerClosed { code, reason }) => {
            assert_eq!(*code, ErrorCode::app(7));
            assert_eq!(reason, "bye now");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(drain_events(&mut p.s)
        .iter()
        .any(|e| matches!(e, Event::Closed(Error::PeerClosed { .. }))));
}

/// A reader that stops reading makes the writer wait, and no buffer on
/// either side grows past its configured limit.
#[test]
fn flow_control_blocks_writer_and_bounds_memory() {
    let t = TransportConfig {
        stream_window: 64 << 10,
        session_window: 256 << 10,
        send_buffer: 32 << 10,
        ..Default::default()
    };
    let mut p = Net::new(client_config(t.clone()), server_config(t), 3);
    p.drive();
    let a = p.c.open_stream().unwrap();
    let chunk = vec![1u8; 8 << 10];
    let mut total = 0usize;
    let mut blocked = false;
    for _ in 0..1000 {
        let n = p.c.write(a, &chunk).unwrap();
        total += n;
        if n == 0 {
            p.drive();
            if p.c.write(a, &chunk).unwrap() == 0 {
                blocked = true;
                break;
            }
        }
    }
    assert!(blocked, "writer must block when the reader does not read");
    // The writer got at most the receive window plus its own send buffer out.
    assert!(
        total <= (64 << 10) + (32 << 10) + chunk.len(),
        "total {total}"
    );
    assert!(p.c.unsent(a) <= 32 << 10);
    // Reading reopens the window.
    let id = p.s.accept_stream().unwrap();
    let mut read = 0;
    while let ReadOutcome::Data(d) = p.s.read(id, usize::MAX).unwrap() {
        read += d.len();
    }
    assert!(read <= 64 << 10);
    p.drive();
    assert!(drain_events(&mut p.c)
        .iter()
        .any(|e| matches!(e, Event::StreamWritable(s) if *s == a)));
    assert!(p.c.write(a, &chunk).unwrap() > 0);
}

fn expect_close(p: &mut Net, code: ErrorCode) {
    p.drive();
    match p.s.error() {
        Some(e) => assert_eq!(e.code(), code, "server error {e}"),
        None => panic!("server still open"),
    }
    // The misbehaving client learns why through the CLOSE frame.
    match p.c.error() {
        Some(Error::PeerClosed { code: c, .. }) => assert_eq!(*c, code),
        other => panic!("client saw {other:?}"),
    }
}

/// Established, without failover: a record that does not decrypt then ends
/// the session (with failover it fails its connection over instead, see
/// tests/hardening.rs).
fn established_without_failover() -> Net {
    let t = TransportConfig {
        failover: false,
        ..Default::default()
    };
    let mut p = Net::new(client_config(t.clone()), server_config(t), 1);
    p.drive();
    p
}

#[test]
fn unknown_frame_closes_with_frame_encoding() {
    let mut p = Net::established();
    p.c.send_raw_record_for_testing(&[0x5a]).unwrap();
    expect_close(&mut p, ErrorCode::FRAME_ENCODING);
}

#[test]
fn frame_beyond_record_closes_with_frame_encoding() {
    let mut p = Net::established();
    let mut rec = vec![1, 2, 3];
    encode_stream_header(StreamId(0), 0, 1000, false, &mut rec);
    p.c.send_raw_record_for_testing(&rec).unwrap();
    expect_close(&mut p, ErrorCode::FRAME_ENCODING);
}

#[test]
fn flow_control_violation_closes_session() {
    let mut p = Net::established();
    let window = TransportConfig::default().stream_window;
    let mut rec = vec![0u8; 10];
    encode_stream_header(StreamId(0), window, 10, false, &mut rec);
    p.c.send_raw_record_for_testing(&rec).unwrap();
    expect_close(&mut p, ErrorCode::FLOW_CONTROL);
}

#[test]
fn stream_limit_violation_closes_session() {
    let mut p = Net::established();
    let limit = TransportConfig::default().max_streams;
    let mut rec = Vec::new();
    Frame::Stream {
        id: StreamId::new(tcpls_proto::Side::Client, limit),
        offset: 0,
        fin: false,
        data: b"x",
    }
    .encode(&mut rec);
    p.c.send_raw_record_for_testing(&rec).unwrap();
    expect_close(&mut p, ErrorCode::STREAM_LIMIT);
}

#[test]
fn stream_of_wrong_initiator_closes_session() {
    let mut p = Net::established();
    let mut rec = Vec::new();
    // Stream 1 would be the server's first stream; the server never opened it.
    Frame::MaxStreamData {
        id: StreamId(1),
        max: 5,
    }
    .encode(&mut rec);
    p.c.send_raw_record_for_testing(&rec).unwrap();
    expect_close(&mut p, ErrorCode::PROTOCOL_VIOLATION);
}

#[test]
fn corrupted_record_closes_with_bad_record() {
    let mut p = established_without_failover();
    let a = p.c.open_stream().unwrap();
    p.c.write(a, b"hello").unwrap();
    let mut wire = Vec::new();
    p.c.poll_transmit(ConnectionId(0), &mut wire, usize::MAX)
        .unwrap();
    let last = wire.len() - 3;
    wire[last] ^= 0x40;
    let mut inbuf = bytes::BytesMut::from(&wire[..]);
    assert!(matches!(
        p.s.recv(ConnectionId(0), &mut inbuf, p.now),
        Err(CallError::Closed(Error::BadRecord(_)))
    ));
    expect_close(&mut p, ErrorCode::BAD_RECORD);
}

#[test]
fn oversized_record_header_is_refused() {
    let mut p = established_without_failover();
    let mut inbuf = bytes::BytesMut::from(&[23u8, 3, 3, 0x50, 0x00][..]);
    assert!(p.s.recv(ConnectionId(0), &mut inbuf, p.now).is_err());
    expect_close(&mut p, ErrorCode::BAD_RECORD);
}

#[test]
fn truncated_record_then_eof_is_an_error() {
    // Without failover, the end of the only connection ends the session.
    let t = TransportConfig {
        failover: false,
        ..Default::default()
    };
    let mut p = Net::new(client_config(t.clone()), server_config(t), 2);
    p.drive();
    let mut inbuf = bytes::BytesMut::from(&[23u8, 3, 3, 0x00, 0x40, 1, 2][..]);
    p.s.recv(ConnectionId(0), &mut inbuf, p.now).unwrap();
    assert_eq!(inbuf.len(), 7, "partial record kept for the next read");
    p.s.handle_eof(ConnectionId(0), p.now);
    assert_eq!(p.s.error().unwrap().code(), ErrorCode::PROTOCOL_VIOLATION);
}

#[test]
fn losing_the_only_connection_waits_for_a_rejoin_then_fails() {
    let mut p = Net::established();
    p.s.handle_eof(ConnectionId(0), p.now);
    assert!(p.s.error().is_none(), "failover: the session waits");
    assert!(drain_events(&mut p.s)
        .iter()
        .any(|e| matches!(e, Event::Disconnected)));
    let deadline = p.s.poll_timeout().expect("rejoin deadline");
    assert!(deadline >= p.now + TransportConfig::default().rejoin_grace);
    p.s.handle_timeout(deadline);
    assert!(matches!(p.s.error(), Some(Error::ConnectionLost(_))));
}

#[test]
fn handshake_garbage_fails_and_silence_times_out() {
    let mut p = Net::default_pair();
    let mut inbuf = bytes::BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
    assert!(matches!(
        p.s.recv(ConnectionId(0), &mut inbuf, p.now),
        Err(CallError::Closed(Error::Handshake(_)))
    ));
    // A client whose server never answers gives up at the handshake timeout.
    let mut q = Net::default_pair();
    let deadline = q.c.poll_timeout().expect("handshake deadline");
    q.c.handle_timeout(deadline + Duration::from_millis(1));
    assert!(matches!(q.c.error(), Some(Error::HandshakeTimeout)));
}

#[test]
fn fallback_tcpls_client_plain_server() {
    let s = std::sync::Arc::new(
        tcpls_proto::ServerConfig::builder()
            .self_signed(&["localhost"])
            .unwrap()
            .enable_tcpls(false)
            .build()
            .unwrap(),
    );
    let mut p = Net::new(client_config(TransportConfig::default()), s, 4);
    p.drive();
    assert!(!p.c.is_tcpls() && !p.s.is_tcpls());
    let a = p.c.open_stream().unwrap();
    assert!(p.c.open_stream().is_err(), "plain TLS carries one stream");
    p.c.write(a, b"over plain tls").unwrap();
    p.c.finish(a).unwrap();
    p.drive();
    let sid = p.s.accept_stream().unwrap();
    assert_eq!(sid, a);
    assert_eq!(
        p.s.read(sid, 100).unwrap(),
        ReadOutcome::Data("over plain tls".into())
    );
    assert_eq!(p.s.read(sid, 100).unwrap(), ReadOutcome::Fin);
    p.s.write(sid, b"answer").unwrap();
    p.s.finish(sid).unwrap();
    p.drive();
    assert_eq!(
        p.c.read(a, 100).unwrap(),
        ReadOutcome::Data("answer".into())
    );
    assert_eq!(p.c.read(a, 100).unwrap(), ReadOutcome::Fin);
}

#[test]
fn fallback_plain_client_tcpls_server() {
    let c = plain_client_config(TransportConfig::default());
    let mut p = Net::new(c, server_config(TransportConfig::default()), 5);
    p.drive();
    assert!(!p.s.is_tcpls());
    let a = p.c.open_stream().unwrap();
    let big = vec![9u8; 300_000];
    let mut off = 0;
    while off < big.len() {
        off += p.c.write(a, &big[off..]).unwrap();
        p.drive();
        if let Some(id) = p.s.accept_stream() {
            assert_eq!(id, a);
        }
        while let ReadOutcome::Data(_) = p.s.read(a, usize::MAX).unwrap() {}
    }
    p.c.close(ErrorCode::NO_ERROR, "done");
    p.drive();
    assert!(p.c.is_drained());
}

/// Regression: data for a reset stream must not be credited twice, or a
/// peer could grow the session window by resending it.
#[test]
fn duplicate_data_on_reset_stream_does_not_inflate_session_window() {
    let t = TransportConfig {
        session_window: 8 << 10,
        stream_window: 8 << 10,
        ..Default::default()
    };
    let mut p = Net::new(client_config(t.clone()), server_config(t), 9);
    p.drive();
    let chunk = vec![0u8; 4096];
    let frame = |id: u32, offset: u64| {
        let mut rec = Vec::new();
        Frame::Stream {
            id: StreamId(id),
            offset,
            fin: false,
            data: &chunk,
        }
        .encode(&mut rec);
        rec
    };
    p.c.send_raw_record_for_testing(&frame(0, 0)).unwrap();
    let mut rec = Vec::new();
    Frame::ResetStream {
        id: StreamId(0),
        code: 1,
        final_size: 4096,
    }
    .encode(&mut rec);
    p.c.send_raw_record_for_testing(&rec).unwrap();
    p.c.send_raw_record_for_testing(&frame(0, 0)).unwrap();
    p.c.send_raw_record_for_testing(&frame(0, 0)).unwrap();
    // 4 KiB were credited back by the reset; 8 KiB more on other streams
    // (unread) is within the window, 12 KiB is not.
    p.c.send_raw_record_for_testing(&frame(2, 0)).unwrap();
    p.c.send_raw_record_for_testing(&frame(4, 0)).unwrap();
    p.c.send_raw_record_for_testing(&frame(6, 0)).unwrap();
    expect_close(&mut p, ErrorCode::FLOW_CONTROL);
}

/// Regression: once a session failed, further input is ignored (no events
/// after `Closed`).
#[test]
fn input_after_failure_is_ignored() {
    let mut p = Net::established();
    p.c.send_raw_record_for_testing(&[0x5a]).unwrap();
    let a = p.c.open_stream().unwrap();
    p.c.write(a, b"late").unwrap();
    let mut wire = Vec::new();
    p.c.poll_transmit(ConnectionId(0), &mut wire, usize::MAX)
        .unwrap();
    let mut inbuf = bytes::BytesMut::from(&wire[..]);
    assert!(p.s.recv(ConnectionId(0), &mut inbuf, p.now).is_err());
    let events = drain_events(&mut p.s);
    let closed_at = events
        .iter()
        .position(|e| matches!(e, Event::Closed(_)))
        .expect("closed");
    assert_eq!(
        closed_at,
        events.len() - 1,
        "no events after Closed: {events:?}"
    );
    assert_eq!(p.s.accept_stream(), None);
}

#[test]
fn a_reader_that_never_reads_bounds_the_senders_memory() {
    // Eight bulk streams into a receiver that reads nothing: flow control
    // stops the sender, whose memory stays within its configured limits
    // however much the application tries to write.
    let mut p = Net::established();
    let cfg = TransportConfig::default();
    let ids: Vec<_> = (0..8).map(|_| p.c.open_stream().unwrap()).collect();
    let chunk = vec![1u8; 256 << 10];
    let mut written = 0u64;
    let mut peak = 0;
    for _ in 0..200 {
        for &id in &ids {
            written += p.c.write(id, &chunk).unwrap() as u64;
        }
        p.step();
        peak = peak.max(p.c.send_buffered());
    }
    let bound = 8 * cfg.send_buffer as u64 + 2 * cfg.session_window + (4 << 20);
    assert!(peak <= bound, "sender held {peak} bytes, bound {bound}");
    // It did fill the receiver's window, and then stopped.
    assert!(written >= cfg.session_window, "{written}");
    assert!(written <= cfg.session_window + 8 * cfg.send_buffer as u64);
    assert!(p.s.peak_buffered() <= cfg.session_window);
}

#[test]
fn unread_streams_stay_within_the_session_send_budget() {
    // A client opens nothing and reads nothing; the server answers on every
    // stream the client allows, as fast as it can. What the server queues is
    // bounded by the session's send budget, not by streams x send_buffer
    // (256 x 512 KiB by default).
    let mut p = Net::established();
    let cfg = TransportConfig::default();
    let ids: Vec<_> = (0..cfg.max_streams)
        .map(|_| p.s.open_stream().unwrap())
        .collect();
    let chunk = vec![7u8; 256 << 10];
    let mut written = vec![0u64; ids.len()];
    let mut peak = 0;
    for _ in 0..40 {
        for (i, &id) in ids.iter().enumerate() {
            written[i] += p.s.write(id, &chunk).unwrap() as u64;
        }
        p.step();
        let queued: usize = ids.iter().map(|&id| p.s.unsent(id)).sum();
        assert!(
            queued <= cfg.session_send_buffer,
            "server queued {queued} bytes, budget {}",
            cfg.session_send_buffer
        );
        peak = peak.max(p.s.send_buffered());
    }
    let bound = cfg.session_send_buffer as u64 + 2 * cfg.session_window + (4 << 20);
    assert!(peak <= bound, "server held {peak} bytes, bound {bound}");

    // The client starts reading: writers blocked on the budget are woken
    // (StreamWritable) and every stream completes its next 256 KiB. A
    // lost wake-up stalls.
    let target: Vec<u64> = written.iter().map(|w| w + (256 << 10)).collect();
    let index: HashMap<StreamId, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let mut open: HashMap<StreamId, u64> = HashMap::new();
    let mut ready: Vec<usize> = (0..ids.len()).collect();
    let mut finished = 0;
    for round in 0.. {
        assert!(round < 100_000, "stalled with {finished} streams done");
        for i in std::mem::take(&mut ready) {
            while written[i] < target[i] {
                let n = chunk.len().min((target[i] - written[i]) as usize);
                let w = p.s.write(ids[i], &chunk[..n]).unwrap();
                if w == 0 {
                    break;
                }
                written[i] += w as u64;
            }
            if written[i] == target[i] {
                p.s.finish(ids[i]).unwrap();
            }
        }
        p.step();
        for e in drain_events(&mut p.s) {
            if let Event::StreamWritable(id) = e {
                let i = index[&id];
                if written[i] < target[i] {
                    ready.push(i);
                }
            }
        }
        while let Some(id) = p.c.accept_stream() {
            open.insert(id, 0);
        }
        let streams: Vec<StreamId> = open.keys().copied().collect();
        for id in streams {
            loop {
                match p.c.read(id, usize::MAX).unwrap() {
                    ReadOutcome::Data(d) => *open.get_mut(&id).unwrap() += d.len() as u64,
                    ReadOutcome::Fin => {
                        assert_eq!(open.remove(&id), Some(target[index[&id]]));
                        finished += 1;
                        break;
                    }
                    ReadOutcome::Blocked => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        if finished == ids.len() {
            break;
        }
    }
}

/// Writes `len` bytes of pattern on a new client stream (as much as the
/// send buffer takes) and steps until the server session fails or has
/// read the stream to its end; what it read must be a prefix of what was
/// written.
fn transfer_until_done_or_failed(p: &mut Net, len: usize) -> (usize, usize) {
    let a = p.c.open_stream().unwrap();
    let data: Vec<u8> = (0..len).map(|i| pattern(a.0, i as u64)).collect();
    let written = p.c.write(a, &data).unwrap();
    p.c.finish(a).unwrap();
    let mut got = Vec::new();
    for _ in 0..10_000 {
        p.step();
        if p.s.error().is_some() {
            break;
        }
        while p.s.accept_stream().is_some() {}
        match p.s.read(a, usize::MAX) {
            Ok(ReadOutcome::Data(d)) => got.extend_from_slice(&d),
            Ok(ReadOutcome::Fin) => break,
            Ok(ReadOutcome::Blocked) | Err(_) => {}
            Ok(ReadOutcome::Reset(c)) => panic!("reset {c}"),
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(got[..] == data[..got.len()], "read bytes out of place");
    (written, got.len())
}

/// A connection that loses records (TCP never does: a broken middlebox, or
/// an attacker) is caught: the first record after the gap does not decrypt
/// under its sequence number, and the session closes with BAD_RECORD.
#[test]
fn a_gap_in_a_connections_records_closes_with_bad_record() {
    let mut p = established_without_failover();
    p.burst = 16 << 10;
    p.set_policy(
        ConnectionId(0),
        Dir::ToServer,
        Policy::Drop(Loss::EveryNth(3)),
    );
    let (written, read) = transfer_until_done_or_failed(&mut p, 200_000);
    assert_eq!(written, 200_000);
    assert!(read < written, "the gap stopped the stream");
    assert!(p.dropped(ConnectionId(0)).0 > 0);
    expect_close(&mut p, ErrorCode::BAD_RECORD);
}

/// Flights lost at random points (seeded): the reader never gets a wrong
/// byte, and a loss followed by more records always ends the session with
/// BAD_RECORD.
#[test]
fn random_loss_is_detected_and_never_corrupts() {
    let mut failed = 0;
    for seed in 0..20 {
        let mut p = established_without_failover();
        p.burst = 16 << 10;
        p.set_policy(
            ConnectionId(0),
            Dir::ToServer,
            Policy::Drop(Loss::Fraction { p: 0.1, seed }),
        );
        let (written, read) = transfer_until_done_or_failed(&mut p, 300_000);
        if read < written {
            assert!(
                p.dropped(ConnectionId(0)).0 > 0,
                "seed {seed}: stalled without loss"
            );
            expect_close(&mut p, ErrorCode::BAD_RECORD);
            failed += 1;
        } else {
            assert!(p.s.error().is_none(), "seed {seed}: {:?}", p.s.error());
        }
    }
    assert!(failed >= 10, "only {failed} of 20 runs lost a record");
}

#[test]
fn a_misuse_is_a_call_error_and_the_session_goes_on() {
    let mut p = Net::established();
    let bogus = StreamId(1000);
    assert!(matches!(p.c.write(bogus, b"x"), Err(CallError::Usage(_))));
    assert!(matches!(p.c.read(bogus, 10), Err(CallError::Usage(_))));
    let mut empty = bytes::BytesMut::new();
    assert!(matches!(
        p.c.recv(ConnectionId(77), &mut empty, p.now),
        Err(CallError::Usage(_))
    ));
    let id = p.c.open_stream().unwrap();
    p.c.finish(id).unwrap();
    assert!(matches!(p.c.write(id, b"late"), Err(CallError::Usage(_))));
    assert!(p.c.error().is_none() && p.s.error().is_none());
    // The session still carries data.
    let id = p.c.open_stream().unwrap();
    p.c.write(id, b"ok").unwrap();
    p.c.finish(id).unwrap();
    p.drive();
    let finished_empty = p.s.accept_stream().unwrap();
    assert!(matches!(p.s.read(finished_empty, 10), Ok(ReadOutcome::Fin)));
    let sid = p.s.accept_stream().unwrap();
    let mut got = Vec::new();
    while let Ok(ReadOutcome::Data(d)) = p.s.read(sid, usize::MAX) {
        got.extend_from_slice(&d);
    }
    assert_eq!(got, b"ok");
    // Once the session ended, every call says why.
    p.c.close(ErrorCode::app(7), "bye");
    match p.c.write(id, b"x") {
        Err(CallError::Closed(Error::LocallyClosed { code, .. })) => {
            assert_eq!(code, ErrorCode::app(7))
        }
        other => panic!("expected the close reason, got {other:?}"),
    }
}

/// A connection's first records are small (one TCP segment each), so a
/// fresh connection's first flight is readable at once; then records grow
/// to the full 16 KiB.
#[test]
fn a_connection_starts_with_small_records() {
    let mut p = Net::established();
    let id = p.c.open_stream().unwrap();
    assert_eq!(p.c.write(id, &[9; 300_000]).unwrap(), 300_000);
    let mut wire = Vec::new();
    p.c.poll_transmit(ConnectionId(0), &mut wire, 1 << 20)
        .unwrap();
    let mut lens = Vec::new();
    let mut at = 0;
    while at + 5 <= wire.len() {
        let len = u16::from_be_bytes([wire[at + 3], wire[at + 4]]) as usize;
        lens.push(len);
        at += 5 + len;
    }
    assert!(lens.len() > 30, "{lens:?}");
    // Record length: plaintext, content type byte and the 16-byte tag.
    assert!(
        lens[..20].iter().all(|l| *l <= 1400 + 17),
        "small first records: {lens:?}"
    );
    assert!(
        lens.iter().any(|l| *l > 16_000),
        "full records later: {lens:?}"
    );
}

fn option_events(s: &mut tcpls_proto::Session) -> Vec<Event> {
    drain_events(s)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::PeerOption { .. } | Event::PeerOptionAnswered { .. }
            )
        })
        .collect()
}

/// TRANSPORT_OPTION end to end in the core: the server asks for a
/// congestion controller and a user timeout; the client's runtime gets
/// them (the user timeout clamped to local bounds), answers, and the
/// server learns each answer. A controller outside the client's allowed
/// list is refused by the core itself, and the session goes on.
#[test]
fn transport_options_are_requested_applied_and_answered() {
    use tcpls_proto::session::options::{OptionStatus, PeerOption};
    let mut p = Net::established();
    drain_events(&mut p.c);
    drain_events(&mut p.s);
    let bbr =
        p.s.set_peer_option(None, PeerOption::CongestionControl("bbr".into()))
            .unwrap();
    let ut =
        p.s.set_peer_option(
            Some(ConnectionId(0)),
            PeerOption::UserTimeout(Duration::from_secs(3600)),
        )
        .unwrap();
    let vegas =
        p.s.set_peer_option(None, PeerOption::CongestionControl("vegas".into()))
            .unwrap();
    p.drive();
    let asked = option_events(&mut p.c);
    assert_eq!(asked.len(), 2, "vegas never reaches the runtime: {asked:?}");
    for e in asked {
        let Event::PeerOption {
            request,
            conn,
            option,
        } = e
        else {
            unreachable!()
        };
        match &option {
            PeerOption::CongestionControl(n) => assert_eq!(n, "bbr"),
            PeerOption::UserTimeout(d) => {
                assert_eq!(
                    *d,
                    Duration::from_secs(30),
                    "clamped to max_peer_user_timeout"
                );
                assert_eq!(conn, Some(ConnectionId(0)));
            }
            other => panic!("{other:?}"),
        }
        p.c.answer_peer_option(request, conn, &option, Ok(()));
    }
    assert_eq!(
        p.c.user_timeout_of(ConnectionId(0)),
        Some(Duration::from_secs(30)),
        "the applied user timeout is the connection's failure threshold"
    );
    p.drive();
    let mut answers: Vec<(u32, bool)> = option_events(&mut p.s)
        .into_iter()
        .map(|e| match e {
            Event::PeerOptionAnswered { request, answer, .. } => {
                if request == vegas {
                    assert!(
                        matches!(&answer, Err((OptionStatus::NotAllowed, why)) if why.contains("vegas")),
                        "{answer:?}"
                    );
                }
                (request, answer.is_ok())
            }
            _ => unreachable!(),
        })
        .collect();
    answers.sort();
    assert_eq!(answers, vec![(bbr, true), (ut, true), (vegas, false)]);
    // The session goes on.
    let id = p.c.open_stream().unwrap();
    p.c.write(id, b"still here").unwrap();
    p.drive();
    assert_eq!(p.s.accept_stream(), Some(id));
}

/// A congestion controller program (TRANSPORT_OPTION 3 and its
/// TRANSPORT_OPTION_DATA): refused by default at its announcement, taken
/// when its SHA-256 is allowed, handed to the runtime whole and intact
/// (40 KB: several records, out of one frame's reach), refused when over
/// the size limit or not in the allowlist; the session goes on each time.
#[test]
fn congestion_controller_programs_follow_local_policy() {
    use tcpls_proto::session::options::{CcProgramPolicy, OptionStatus, PeerOption};
    let program: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let option = PeerOption::congestion_program("tcpls_test", program.clone());
    let PeerOption::CongestionProgram { digest, .. } = option.clone() else {
        unreachable!()
    };
    let answer_of = |p: &mut Net, request: u32| {
        p.drive();
        option_events(&mut p.s)
            .into_iter()
            .find_map(|e| match e {
                Event::PeerOptionAnswered {
                    request: r, answer, ..
                } if r == request => Some(answer),
                _ => None,
            })
            .expect("answered")
    };
    let pair = |policy: CcProgramPolicy, max: usize| {
        let t = TransportConfig {
            peer_cc_programs: policy,
            max_cc_program: max,
            ..Default::default()
        };
        let mut p = Net::new(
            client_config(t),
            server_config(TransportConfig::default()),
            1,
        );
        p.drive();
        drain_events(&mut p.c);
        drain_events(&mut p.s);
        p
    };

    // Default policy: refused on the announcement.
    let mut p = pair(CcProgramPolicy::default(), 1 << 20);
    let r = p.s.set_peer_option(None, option.clone()).unwrap();
    let answer = answer_of(&mut p, r);
    assert!(
        matches!(&answer, Err((OptionStatus::NotAllowed, why)) if why.contains("not accepted")),
        "{answer:?}"
    );
    assert!(
        option_events(&mut p.c).is_empty(),
        "never reaches the runtime"
    );

    // Allowed by digest: the runtime gets the bytes.
    let mut p = pair(CcProgramPolicy::Digests(vec![digest]), 1 << 20);
    let r = p.s.set_peer_option(None, option.clone()).unwrap();
    p.drive();
    let asked = option_events(&mut p.c);
    let [Event::PeerOption {
        request,
        conn: None,
        option: got,
    }] = &asked[..]
    else {
        panic!("{asked:?}")
    };
    assert_eq!(got, &option, "the program arrives whole and intact");
    p.c.answer_peer_option(
        *request,
        None,
        got,
        Err((OptionStatus::Failed, "verifier".into())),
    );
    let answer = answer_of(&mut p, r);
    assert!(matches!(&answer, Err((OptionStatus::Failed, why)) if why == "verifier"));

    // Another digest, or too large: refused.
    let other = PeerOption::congestion_program("tcpls_test", vec![1u8; 10]);
    let r = p.s.set_peer_option(None, other).unwrap();
    let answer = answer_of(&mut p, r);
    assert!(
        matches!(&answer, Err((OptionStatus::NotAllowed, why)) if why.contains("SHA-256")),
        "{answer:?}"
    );
    let mut p = pair(CcProgramPolicy::Any, 1000);
    let r = p.s.set_peer_option(None, option).unwrap();
    let answer = answer_of(&mut p, r);
    assert!(
        matches!(&answer, Err((OptionStatus::NotAllowed, why)) if why.contains("over the limit")),
        "{answer:?}"
    );
    // The session goes on.
    let id = p.c.open_stream().unwrap();
    p.c.write(id, b"still here").unwrap();
    p.drive();
    assert_eq!(p.s.accept_stream(), Some(id));
    assert!(p.c.error().is_none() && p.s.error().is_none());
}

/// Malformed or unknown options are answered with a typed status, never
/// an error of the session; a hostile peer's flood of requests is bounded.
#[test]
fn bad_and_excess_transport_options_are_refused() {
    use tcpls_proto::session::options::PeerOption;
    let mut p = Net::established();
    assert!(p
        .s
        .set_peer_option(None, PeerOption::CongestionControl("no spaces".into()))
        .is_err());
    assert!(p
        .s
        .set_peer_option(
            Some(ConnectionId(9)),
            PeerOption::UserTimeout(Duration::from_secs(1))
        )
        .is_err());
    let mut sent = 0;
    while p
        .s
        .set_peer_option(None, PeerOption::UserTimeout(Duration::from_secs(1)))
        .is_ok()
    {
        sent += 1;
        assert!(sent <= 16, "requests are bounded");
    }
    p.drive();
    // The client's runtime does not answer: the core holds at most 16.
    assert_eq!(option_events(&mut p.c).len(), 16);
    assert!(p.c.error().is_none() && p.s.error().is_none());
}

/// Plain TLS: the TCP connection ends (the runtime calls `handle_eof`)
/// while whole records the application has not read yet wait to be
/// decrypted (beyond the window), the close_notify among them. They are
/// delivered first and the stream ends cleanly; before, the end failed
/// the session at once ("TCP connection closed without CLOSE") and the
/// rest of the response was lost.
#[test]
fn a_plain_tls_end_behind_unread_records_delivers_them_first() {
    use bytes::BytesMut;
    use std::sync::Arc;
    let t = TransportConfig {
        stream_window: 64 << 10,
        ..Default::default()
    };
    let c = Arc::new(
        tcpls_proto::ClientConfig::builder()
            .insecure()
            .enable_tcpls(false)
            .transport(t.clone())
            .build()
            .unwrap(),
    );
    let s = Arc::new(
        tcpls_proto::ServerConfig::builder()
            .self_signed(&["localhost"])
            .unwrap()
            .enable_tcpls(false)
            .transport(t)
            .build()
            .unwrap(),
    );
    let mut p = Net::new(c, s, 1);
    p.drive();
    assert!(!p.c.is_tcpls());
    let id = p.c.open_stream().unwrap();
    p.c.write(id, b"go").unwrap();
    p.drive();
    let sid = p.s.accept_stream().unwrap();
    let body: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    // Everything the server sends, close_notify included, in one buffer.
    let mut wire = Vec::new();
    let mut sent = 0;
    while sent < body.len() {
        sent += p.s.write(sid, &body[sent..]).unwrap();
        p.s.poll_transmit(ConnectionId(0), &mut wire, 1 << 30)
            .unwrap();
    }
    p.s.finish(sid).unwrap();
    p.s.poll_transmit(ConnectionId(0), &mut wire, 1 << 30)
        .unwrap();
    let mut input = BytesMut::from(&wire[..]);
    let now = p.now;
    p.c.recv(ConnectionId(0), &mut input, now).unwrap();
    assert!(!input.is_empty(), "the window held the rest back");
    // The runtime keeps what it read; the TCP connection ends now.
    p.c.handle_eof(ConnectionId(0), now);
    let mut got = Vec::new();
    let end = loop {
        match p.c.read(id, usize::MAX) {
            Ok(ReadOutcome::Data(d)) => got.extend_from_slice(&d),
            Ok(ReadOutcome::Blocked) => {
                // The application read: the runtime feeds more.
                let _ = p.c.recv(ConnectionId(0), &mut input, now);
            }
            other => break other,
        }
    };
    assert_eq!(got.len(), body.len(), "every byte before the end: {end:?}");
    assert!(got == body);
    assert!(matches!(end, Ok(ReadOutcome::Fin)), "a clean end: {end:?}");
}

/// Stream credit comes back in batches (a MAX_STREAMS once an eighth of
/// the limit came back), yet a peer that keeps opening and closing streams
/// never runs out, and one with `max_streams` open is held back until some
/// end.
#[test]
fn stream_credit_is_granted_in_batches_and_never_runs_out() {
    let t = TransportConfig {
        max_streams: 16,
        ..Default::default()
    };
    let mut p = Net::new(client_config(t.clone()), server_config(t), 1);
    p.drive();
    let exchange = |p: &mut Net, ids: &[StreamId]| {
        for &id in ids {
            p.c.write(id, b"ask").unwrap();
            p.c.finish(id).unwrap();
        }
        p.drive();
        for &id in ids {
            assert_eq!(p.s.accept_stream(), Some(id));
            assert_eq!(p.s.read(id, 10).unwrap(), ReadOutcome::Data("ask".into()));
            assert_eq!(p.s.read(id, 10).unwrap(), ReadOutcome::Fin);
            p.s.write(id, b"answer").unwrap();
            p.s.finish(id).unwrap();
        }
        p.drive();
        for &id in ids {
            assert_eq!(
                p.c.read(id, 10).unwrap(),
                ReadOutcome::Data("answer".into())
            );
            assert_eq!(p.c.read(id, 10).unwrap(), ReadOutcome::Fin);
        }
        p.drive();
    };
    let open_all = |p: &mut Net| -> Vec<StreamId> {
        std::iter::from_fn(|| p.c.open_stream().ok())
            .take(100)
            .collect()
    };
    // One at a time, five times the limit.
    for _ in 0..80 {
        let id = p.c.open_stream().expect("credit came back");
        exchange(&mut p, &[id]);
    }
    // As many at once as allowed: never more than the limit, at most an
    // eighth of it held back; again once they all ended.
    for _ in 0..3 {
        let ids = open_all(&mut p);
        assert!(
            (14..=16).contains(&ids.len()),
            "{} streams at once",
            ids.len()
        );
        exchange(&mut p, &ids);
    }
    assert!(p.c.error().is_none() && p.s.error().is_none());
}
