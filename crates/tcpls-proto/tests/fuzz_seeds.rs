//! Seed inputs for the fuzz targets, recorded from a real session: a
//! fixed-key pair (`Session::established_pair_for_testing`) moves stream
//! data both ways, joins a connection and updates keys; the client's wire
//! bytes and their plaintexts (opened with the fixed client secret) become
//! seeds. Ignored: run it by hand to regenerate `fuzz/seeds/`:
//!
//! ```sh
//! cargo test -p tcpls-proto --test fuzz_seeds -- --ignored
//! # or into a corpus directory:
//! TCPLS_SEEDS_DIR=fuzz/corpus cargo test -p tcpls-proto --test fuzz_seeds -- --ignored
//! ```

use std::path::PathBuf;
use std::time::Instant;

use bytes::BytesMut;
use tcpls_proto::record::RecordKey;
use tcpls_proto::wire::codec::Codec;
use tcpls_proto::wire::record::HEADER_LEN;
use tcpls_proto::wire::{JoinExtension, TcplsExtension};
use tcpls_proto::{CipherSuite, ConnectionId, Session, Side, TransportConfig};

const SUITE: CipherSuite = CipherSuite::Aes128GcmSha256;

/// Splits wire bytes into whole records.
fn records(mut wire: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while wire.len() >= HEADER_LEN {
        let n = HEADER_LEN + u16::from_be_bytes([wire[3], wire[4]]) as usize;
        if wire.len() < n {
            break;
        }
        out.push(wire[..n].to_vec());
        wire = &wire[n..];
    }
    out
}

struct Recorder {
    dir: PathBuf,
    count: usize,
}

impl Recorder {
    fn put(&mut self, target: &str, name: &str, data: &[u8]) {
        let d = self.dir.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), data).unwrap();
        self.count += 1;
    }
}

#[test]
#[ignore = "writes fuzz seeds; run by hand"]
fn record_fuzz_seeds() {
    let dir = std::env::var_os("TCPLS_SEEDS_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds"),
        PathBuf::from,
    );
    let mut rec = Recorder { dir, count: 0 };
    let t = TransportConfig {
        key_update_records: 3,
        stream_window: 4096,
        session_window: 16384,
        ..TransportConfig::default()
    };
    let now = Instant::now();
    let (mut c, mut s) =
        Session::established_pair_for_testing(t.clone(), t.clone(), SUITE, now).unwrap();
    let c0 = ConnectionId::FIRST;

    // The client's records on connection 0, as the server receives them.
    let mut client_wire = Vec::new();
    let mut s_in = BytesMut::new();
    let mut c_in = BytesMut::new();
    let mut pump = |c: &mut Session, s: &mut Session, client_wire: &mut Vec<u8>| {
        for _ in 0..20 {
            let mut w = Vec::new();
            c.poll_transmit(c0, &mut w, usize::MAX).unwrap();
            client_wire.extend_from_slice(&w);
            s_in.extend_from_slice(&w);
            s.recv(c0, &mut s_in, now).unwrap();
            let mut w2 = Vec::new();
            s.poll_transmit(c0, &mut w2, usize::MAX).unwrap();
            c_in.extend_from_slice(&w2);
            c.recv(c0, &mut c_in, now).unwrap();
            if w.is_empty() && w2.is_empty() {
                break;
            }
            while let Some(id) = s.accept_stream() {
                while let Ok(tcpls_proto::ReadOutcome::Data(d)) = s.read(id, 1 << 16) {
                    let _ = s.write(id, &d);
                }
            }
        }
    };
    pump(&mut c, &mut s, &mut client_wire);
    for (i, len) in [10usize, 300, 3000].into_iter().enumerate() {
        let id = c.open_stream().unwrap();
        c.write(id, &vec![i as u8; len]).unwrap();
        if i == 1 {
            c.finish(id).unwrap();
        }
        if i == 2 {
            c.reset(id, 7).unwrap();
        }
        pump(&mut c, &mut s, &mut client_wire);
    }
    let (_, join) = c.join().unwrap();
    rec.put("join_probe", "join_hello", &join);
    rec.put("join_probe", "join_hello_and_record", &join);
    rec.put("join_probe", "join_hello_short", &join[..join.len() / 2]);
    rec.put(
        "join_probe",
        "plain_record",
        &client_wire[..client_wire.len().min(64)],
    );

    // Records: headers, wire bytes, plaintexts. Generation 0 only (the
    // first records, before the first key update), opened with the fixed
    // client secret.
    let key = RecordKey::new(
        SUITE,
        &Session::fixed_secret_for_testing(Side::Client, SUITE),
    )
    .unwrap();
    let recs = records(&client_wire);
    let mut plains = Vec::new();
    let mut end = 0;
    for (seq, r) in recs.iter().enumerate().take(12) {
        rec.put("record_header", &format!("rec{seq}"), &r[..HEADER_LEN]);
        // Records 0..=seq: they decrypt in order on the server.
        end += r.len();
        let mut m = vec![0u8, 0];
        m.extend_from_slice(&client_wire[..end]);
        rec.put("session_recv", &format!("wire{seq}"), &m);
        let mut buf = r.clone();
        if let Ok((_, len)) = key.open(c0, seq as u64, &mut buf) {
            let plain = buf[HEADER_LEN..HEADER_LEN + len].to_vec();
            rec.put("frames", &format!("plain{seq}"), &plain);
            let mut m = vec![1u8];
            m.extend_from_slice(&(plain.len() as u16).to_be_bytes());
            m.extend_from_slice(&plain);
            rec.put("session_recv", &format!("sealed{seq}"), &m);
            plains.push(plain);
        }
    }
    // The whole flight as one raw input.
    let mut m = vec![0u8, 37];
    m.extend_from_slice(&client_wire[..client_wire.len().min(6000)]);
    rec.put("session_recv", "flight", &m);

    let ext = TcplsExtension {
        version: 1,
        params: t.params(),
    };
    rec.put("extensions", "tcpls", &ext.to_vec());
    rec.put("extensions", "params", &t.params().to_vec());
    rec.put(
        "extensions",
        "params_default",
        &TransportConfig::default().params().to_vec(),
    );
    rec.put(
        "extensions",
        "join",
        &JoinExtension { token: [9; 32] }.to_vec(),
    );

    // session_multi programs (opcodes as in fuzz_targets/session_multi.rs):
    // 0 join, 1 transmit, 2 deliver, 4 corrupt, 5 raw, 6 sealed record,
    // 7 eof, 8 reset, 9 clock, 10 next timer, 11 write, 12 read,
    // 13 finish/reset/stop, 14/15 pump.
    let progs: Vec<(&str, Vec<u8>)> = vec![
        ("write_pump", vec![11, 0, 0, 0, 200, 0, 14, 3, 12, 1, 12, 0]),
        (
            "join_write_pump",
            vec![
                0, 14, 1, 11, 0, 0, 0, 0, 16, 14, 3, 11, 1, 0, 0, 0, 4, 14, 3,
            ],
        ),
        (
            "join_twice_reset_first",
            vec![
                0, 0, 14, 1, 11, 0, 0, 0, 0, 8, 8, 0, 0, 8, 0, 1, 14, 3, 12, 1,
            ],
        ),
        (
            "eof_and_timers",
            vec![0, 14, 1, 7, 1, 0, 7, 1, 1, 9, 0, 40, 10, 0, 10, 1, 14, 2],
        ),
        (
            "corrupt_join",
            vec![0, 11, 0, 0, 0, 0, 8, 1, 4, 1, 0, 20, 0, 14, 2, 9, 0, 200],
        ),
        (
            "stream_ops",
            vec![
                11, 0, 0, 0, 50, 0, 13, 0, 0, 1, 9, 14, 1, 11, 1, 0, 0, 10, 0, 13, 1, 0, 0, 0, 14,
                1,
            ],
        ),
        (
            "partial_delivery",
            vec![11, 0, 0, 0, 0, 8, 1, 3, 0, 0, 100, 0, 3, 0, 0, 255, 255],
        ),
    ];
    for (name, p) in progs {
        rec.put("session_multi", name, &p);
    }
    for (i, plain) in plains.iter().take(4).enumerate() {
        let mut p = vec![6];
        p.extend_from_slice(&(plain.len() as u16).to_le_bytes());
        p.extend_from_slice(plain);
        p.extend_from_slice(&[14, 1]);
        rec.put("session_multi", &format!("sealed{i}"), &p);
    }
    assert!(rec.count > 30, "{} seeds", rec.count);
}
