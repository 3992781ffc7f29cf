//! The record layer as TCPLS uses it (nonce per connection and sequence,
//! header, inner content type; records built by copying the payload in, or
//! sealed from the send buffer) and the frame codec, to track regressions:
//! `cargo bench -p tcpls-proto --bench record`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;

use tcpls_proto::record::RecordKey;
use tcpls_proto::wire::frame::{encode_stream_header, stream_header, STREAM_HEADER_LEN};
use tcpls_proto::wire::record::{HEADER_LEN, MAX_PLAINTEXT, TAG_LEN};
use tcpls_proto::wire::{ContentType, Frame, FrameIter};
use tcpls_proto::{CipherSuite, ConnectionId, StreamId};

/// One maximal STREAM frame's payload.
const PAYLOAD: usize = MAX_PLAINTEXT - STREAM_HEADER_LEN;

fn record(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Bytes(PAYLOAD as u64));
    for suite in CipherSuite::ALL {
        let secret = [9u8; 48];
        let len = if suite == CipherSuite::Aes256GcmSha384 {
            48
        } else {
            32
        };
        let key = RecordKey::new(suite, &secret[..len]).unwrap();
        let mut out = Vec::with_capacity(HEADER_LEN + MAX_PLAINTEXT + 32);
        let data = vec![0x42u8; PAYLOAD];
        let mut seq = 0;
        g.bench_function(format!("{}/build+seal", suite.name()), |b| {
            b.iter(|| {
                out.clear();
                out.extend_from_slice(&[0; HEADER_LEN]);
                out.extend_from_slice(&data);
                encode_stream_header(
                    StreamId(4),
                    seq * PAYLOAD as u64,
                    PAYLOAD as u16,
                    false,
                    &mut out,
                );
                key.seal(
                    ConnectionId(1),
                    seq,
                    ContentType::ApplicationData,
                    &mut out,
                    0,
                )
                .unwrap();
                seq += 1;
                black_box(out.len());
            })
        });
        // How the session builds bulk records: the payload is encrypted
        // from where it lies (the stream's send buffer) into a reused
        // buffer, the frame header and content type follow.
        let mut rec = vec![0u8; HEADER_LEN + MAX_PLAINTEXT + 1 + TAG_LEN];
        let mut trailer = Vec::new();
        g.bench_function(format!("{}/seal from send buffer", suite.name()), |b| {
            b.iter(|| {
                let end = HEADER_LEN + PAYLOAD;
                let header =
                    stream_header(StreamId(4), seq * PAYLOAD as u64, PAYLOAD as u16, false);
                rec[end..end + STREAM_HEADER_LEN].copy_from_slice(&header);
                rec[end + STREAM_HEADER_LEN] = ContentType::ApplicationData.into();
                key.seal_with_lead(ConnectionId(1), seq, &data, &mut rec, &mut trailer)
                    .unwrap();
                seq += 1;
                black_box(rec[0]);
            })
        });
        out.clear();
        out.extend_from_slice(&[0; HEADER_LEN]);
        out.extend_from_slice(&data);
        encode_stream_header(StreamId(4), 0, PAYLOAD as u16, false, &mut out);
        key.seal(
            ConnectionId(1),
            0,
            ContentType::ApplicationData,
            &mut out,
            0,
        )
        .unwrap();
        g.bench_function(format!("{}/open+parse", suite.name()), |b| {
            b.iter_batched_ref(
                || out.clone(),
                |rec| {
                    let (_, len) = key.open(ConnectionId(1), 0, rec).unwrap();
                    let plain = &rec[HEADER_LEN..HEADER_LEN + len];
                    for f in FrameIter::new(plain) {
                        black_box(f.unwrap());
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frames");
    // A control-heavy record: ACKs and credit updates, encoded and parsed.
    let control: Vec<Frame> = (0..64)
        .flat_map(|i| {
            [
                Frame::Ack {
                    conn: ConnectionId(i),
                    seq: 1000 + i as u64,
                },
                Frame::MaxStreamData {
                    id: StreamId(i * 4),
                    max: 1 << 30,
                },
                Frame::MaxData(1 << 34),
            ]
        })
        .collect();
    let mut buf = Vec::with_capacity(MAX_PLAINTEXT);
    g.throughput(Throughput::Elements(control.len() as u64));
    g.bench_function("encode 192 control frames", |b| {
        b.iter(|| {
            buf.clear();
            for f in &control {
                f.encode(&mut buf);
            }
            black_box(buf.len());
        })
    });
    g.bench_function("parse 192 control frames", |b| {
        b.iter(|| {
            for f in FrameIter::new(&buf) {
                black_box(f.unwrap());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, record, frames);
criterion_main!(benches);
