//! AEAD backends side by side: ring and aws-lc-rs sealing and opening one
//! maximal TLS 1.3 record (16 KiB + content type) in place, for the three
//! TLS 1.3 suites. Both crates have the same `aead` API, so one macro
//! measures both the same way. `cargo bench -p tcpls-proto --bench aead`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;

const RECORD: usize = 16 * 1024 + 1;
const HEADER: [u8; 5] = [23, 3, 3, 0x40, 0x11];

macro_rules! backend {
    ($c:expr, $lib:ident) => {{
        use $lib::aead::{
            Aad, Algorithm, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM,
            CHACHA20_POLY1305,
        };
        let suites: [(&str, &'static Algorithm); 3] = [
            ("TLS_AES_128_GCM_SHA256", &AES_128_GCM),
            ("TLS_AES_256_GCM_SHA384", &AES_256_GCM),
            ("TLS_CHACHA20_POLY1305_SHA256", &CHACHA20_POLY1305),
        ];
        let nonce = |seq: u64| {
            let mut n = [0x5a; 12];
            for (b, x) in n[4..].iter_mut().zip(seq.to_be_bytes()) {
                *b ^= x;
            }
            Nonce::assume_unique_for_key(n)
        };
        let mut g = $c.benchmark_group(stringify!($lib));
        g.throughput(Throughput::Bytes(RECORD as u64));
        for (suite, alg) in suites {
            let key = LessSafeKey::new(UnboundKey::new(alg, &[7u8; 32][..alg.key_len()]).unwrap());
            let mut buf = vec![0x42u8; RECORD];
            let mut seq = 0u64;
            g.bench_function(format!("{suite}/seal"), |b| {
                b.iter(|| {
                    seq += 1;
                    let tag = key
                        .seal_in_place_separate_tag(nonce(seq), Aad::from(HEADER), &mut buf)
                        .unwrap();
                    black_box(tag.as_ref()[0]);
                })
            });
            let mut sealed = vec![0x42u8; RECORD];
            let tag = key
                .seal_in_place_separate_tag(nonce(0), Aad::from(HEADER), &mut sealed)
                .unwrap();
            sealed.extend_from_slice(tag.as_ref());
            g.bench_function(format!("{suite}/open"), |b| {
                b.iter_batched_ref(
                    || sealed.clone(),
                    |rec| {
                        let plain = key.open_in_place(nonce(0), Aad::from(HEADER), rec).unwrap();
                        black_box(plain.len());
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        g.finish();
    }};
}

fn aead(c: &mut Criterion) {
    backend!(c, ring);
    backend!(c, aws_lc_rs);
}

criterion_group!(benches, aead);
criterion_main!(benches);
