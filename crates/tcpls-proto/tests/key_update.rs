//! Key updates: with a tiny `key_update_records`, both directions move
//! through many key generations while data flows on three connections,
//! records arrive in random pieces, a connection dies in the middle and a
//! new one joins; every byte arrives, in order, exactly once.

mod common;

use common::*;
use rand::Rng;
use tcpls_proto::{ConnectionId, ReadOutcome, Session, Side, StreamId, TransportConfig};

fn config() -> TransportConfig {
    TransportConfig {
        key_update_records: 5,
        ..Default::default()
    }
}

fn net(seed: u64) -> Net {
    let mut p = Net::new(client_config(config()), server_config(config()), seed);
    p.drive();
    p.burst = 32 << 10;
    p.exchange = Exchange::Simultaneous;
    p.set_policy_all(Policy::Trickle);
    p
}

/// Reads what is there; true at the end of the stream.
fn read_into(s: &mut Session, id: StreamId, into: &mut Vec<u8>) -> bool {
    loop {
        match s.read(id, usize::MAX) {
            Ok(ReadOutcome::Data(d)) => into.extend_from_slice(&d),
            Ok(ReadOutcome::Fin) => return true,
            Ok(ReadOutcome::Blocked) => return false,
            other => panic!("read: {other:?}"),
        }
    }
}

struct Flow {
    /// The side that writes it.
    writer: Side,
    id: StreamId,
    data: Vec<u8>,
    written: usize,
    got: Vec<u8>,
    done: bool,
}

fn run(seed: u64, kill_at: Option<usize>) {
    let mut p = net(seed);
    let mut conns = vec![ConnectionId::FIRST, p.join_now(), p.join_now()];
    for _ in 0..20 {
        p.step();
    }
    // One upload and one download per connection, each steered to it.
    const LEN: usize = 400_000;
    let mut up = Vec::new();
    let mut down = Vec::new();
    for conn in &conns {
        let id = p.c.open_stream().unwrap();
        p.c.set_stream_connection(id, *conn).unwrap();
        let data: Vec<u8> = (0..LEN).map(|k| pattern(id.0, k as u64)).collect();
        up.push(Flow {
            writer: Side::Client,
            id,
            data,
            written: 0,
            got: Vec::new(),
            done: false,
        });
    }
    let mut steps = 0;
    let mut killed = false;
    loop {
        steps += 1;
        assert!(steps < 200_000, "stalled");
        for f in up.iter_mut().chain(down.iter_mut()) {
            let side = if f.writer == Side::Client {
                &mut p.c
            } else {
                &mut p.s
            };
            if f.written < f.data.len() {
                let n = p.rng.gen_range(1..40_000).min(f.data.len() - f.written);
                f.written += side.write(f.id, &f.data[f.written..f.written + n]).unwrap();
                if f.written == f.data.len() {
                    side.finish(f.id).unwrap();
                }
            }
        }
        p.step();
        while let Some(id) = p.s.accept_stream() {
            // The server answers each upload with a download on it.
            let data: Vec<u8> = (0..LEN).map(|k| pattern(id.0 ^ 0x5555, k as u64)).collect();
            down.push(Flow {
                writer: Side::Server,
                id,
                data,
                written: 0,
                got: Vec::new(),
                done: false,
            });
        }
        for f in up.iter_mut() {
            if !f.done && down.iter().any(|d| d.id == f.id) {
                f.done = read_into(&mut p.s, f.id, &mut f.got);
            }
        }
        for f in down.iter_mut() {
            if !f.done {
                f.done = read_into(&mut p.c, f.id, &mut f.got);
            }
        }
        assert!(p.c.error().is_none(), "client: {:?}", p.c.error());
        assert!(p.s.error().is_none(), "server: {:?}", p.s.error());
        let moved: usize = up.iter().chain(down.iter()).map(|f| f.got.len()).sum();
        if kill_at.is_some_and(|at| !killed && moved > at) {
            // A connection dies mid-update (updates come every 5
            // records), and a new one joins under newer generations.
            killed = true;
            let victim = conns.remove(1);
            p.kill(victim);
            p.reset(victim, Side::Client);
            p.reset(victim, Side::Server);
            conns.push(p.join_now());
        }
        if down.len() == up.len() && up.iter().chain(down.iter()).all(|f| f.done) {
            break;
        }
    }
    for f in up.iter().chain(down.iter()) {
        assert!(f.got == f.data, "stream {:?} arrived intact", f.id);
    }
    // 6 x 400 KB in ~16 KiB records, a new key every 5 records.
    for s in [&p.c, &p.s] {
        let (send, recv) = s.key_generations().unwrap();
        assert!(send >= 5 && recv >= 5, "{:?}: {send} {recv}", s.side());
    }
    assert_eq!(kill_at.is_some(), killed);
}

#[test]
fn many_key_updates_on_three_connections() {
    for seed in 0..4 {
        run(seed, None);
    }
}

#[test]
fn failover_and_join_in_the_middle_of_key_updates() {
    for seed in 0..4 {
        run(100 + seed, Some(600_000 + seed as usize * 100_000));
    }
}

/// Plain TLS (fallback) on both ends: each side sends a TLS 1.3 KeyUpdate
/// every 5 records; OpenSSL on the other side follows, so the data (each
/// record now under a new key) arrives intact both ways.
#[test]
fn plain_tls_fallback_sends_key_updates() {
    let plain = plain_client_config(config());
    let mut p = Net::new(plain, server_config(config()), 9);
    p.drive();
    assert!(!p.s.is_tcpls());
    let a = p.c.open_stream().unwrap();
    let data: Vec<u8> = (0..300_000).map(|k| pattern(7, k)).collect();
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let mut sid = None;
    let (mut wc, mut ws) = (0, 0);
    for _ in 0..10_000 {
        if wc < data.len() {
            wc +=
                p.c.write(a, &data[wc..(wc + 20_000).min(data.len())])
                    .unwrap();
        }
        p.drive();
        if sid.is_none() {
            sid = p.s.accept_stream();
        }
        if let Some(s) = sid {
            read_into(&mut p.s, s, &mut up);
            if ws < data.len() {
                ws +=
                    p.s.write(s, &data[ws..(ws + 20_000).min(data.len())])
                        .unwrap();
            }
        }
        read_into(&mut p.c, a, &mut down);
        if up.len() == data.len() && down.len() == data.len() {
            break;
        }
    }
    assert!(up == data && down == data, "both directions intact");
    let (c_updates, _) = p.c.key_generations().unwrap();
    let (s_updates, _) = p.s.key_generations().unwrap();
    assert!(c_updates >= 3 && s_updates >= 3, "{c_updates} {s_updates}");
}
