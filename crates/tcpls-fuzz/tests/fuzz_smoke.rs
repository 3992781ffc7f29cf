//! The fuzz targets under plain `cargo test`: every committed seed
//! (`fuzz/seeds/<target>/`) and regression input (`fuzz/regressions/<target>/`)
//! is replayed, then each target runs for a bounded time on random mutations
//! of them (byte flips, random and "interesting" bytes, inserts, deletes,
//! duplicated ranges, splices of two inputs, truncation).
//!
//! This is not libFuzzer: there is no coverage guidance and no sanitizer,
//! and the mutations are blind. It exists because a cargo-fuzz build from a
//! cold target directory takes over 12 minutes on CI's two cores (vendored
//! OpenSSL, aws-lc and ASan instrumentation of every crate), which the CI
//! time budget cannot carry, while this test reuses the workspace's test
//! build. It catches a target that panics on its seeds or on inputs near
//! them; the coverage-guided runs are `fuzz/ci.sh` (every target briefly)
//! and the campaigns in `docs/security.md`.
//!
//! Environment:
//! - `FUZZ_SECONDS` (default 10): mutation time per target; 0 replays only.
//! - `FUZZ_SEED`: the RNG seed (default: from the clock). Each target's
//!   seed is printed (`--nocapture`) and is part of any failure message;
//!   the same seed replays the same inputs in the same order.
//!
//! A failing input is printed in hex and written to
//! `target/tmp/fuzz-smoke/<target>-<seed>-<n>`; replay it with
//! `cargo fuzz run <target> <file>` in `fuzz/`, or copy it to
//! `fuzz/regressions/<target>/` so that this test replays it from then on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tcpls_fuzz::Target;

/// splitmix64: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Byte values that often sit on a boundary of a length or type field.
const INTERESTING: [u8; 10] = [0x00, 0x01, 0x02, 0x03, 0x10, 0x16, 0x17, 0x40, 0x7f, 0xff];

/// Applies one to eight random mutations to `data`, keeping it within
/// `max_len`. `pool` holds the other inputs, for splices.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>], max_len: usize) {
    for _ in 0..1 + rng.below(8) {
        let len = data.len();
        match rng.below(9) {
            // Flip one bit.
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            // One byte set to a random or an interesting value.
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.byte();
            }
            2 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            // A small integer added to a byte (lengths, counters).
            3 if len > 0 => {
                let i = rng.below(len);
                data[i] = data[i].wrapping_add((rng.below(33) as u8).wrapping_sub(16));
            }
            // Insert random bytes.
            4 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                data.splice(at..at, bytes);
            }
            // Delete a range.
            5 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                data.drain(at..at + n);
            }
            // Duplicate a range of the input elsewhere in it.
            6 if len > 0 => {
                let from = rng.below(len);
                let n = 1 + rng.below((len - from).min(256));
                let chunk = data[from..from + n].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, chunk);
            }
            // Splice: a range of another input, inserted or overwriting.
            7 if !pool.is_empty() => {
                let other = &pool[rng.below(pool.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let n = 1 + rng.below(other.len() - from);
                    let chunk = &other[from..from + n];
                    let at = rng.below(len + 1);
                    if rng.below(2) == 0 {
                        data.splice(at..at, chunk.iter().copied());
                    } else {
                        let end = (at + n).min(len);
                        data.splice(at..end, chunk.iter().copied());
                    }
                }
            }
            // Truncate.
            8 if len > 0 => data.truncate(rng.below(len)),
            _ => {}
        }
    }
    data.truncate(max_len);
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The committed inputs of `target`: seeds, then regression inputs, sorted
/// by path.
fn committed_inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for kind in ["seeds", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .map(|e| e.expect("read_dir entry").path())
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        for p in paths {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            out.push((p, data));
        }
    }
    out
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `t` on `data`; on a panic, saves the input and fails the test with
/// everything needed to reproduce it.
fn run_one(t: &Target, data: &[u8], what: &str, file_tag: &str) {
    if catch_unwind(AssertUnwindSafe(|| (t.run)(data))).is_ok() {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-smoke");
    let file = dir.join(format!("{}-{file_tag}", t.name));
    let saved = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, data))
        .map_or_else(
            |e| format!("not saved: {e}"),
            |()| file.display().to_string(),
        );
    panic!(
        "fuzz target {} panicked on {what} ({} bytes, saved to {saved}; the panic message is \
         above):\n{}",
        t.name,
        data.len(),
        hex(data)
    );
}

fn smoke(name: &str) {
    let t = tcpls_fuzz::target(name).expect("a known target");
    let inputs = committed_inputs(name);
    assert!(
        !inputs.is_empty(),
        "no committed seeds in fuzz/seeds/{name}/"
    );
    for (path, data) in &inputs {
        run_one(&t, data, &format!("{}", path.display()), "seed");
    }

    let seconds = env_u64("FUZZ_SECONDS").unwrap_or(10);
    let base_seed = env_u64("FUZZ_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    // One seed per target, so a target can be rerun on its own.
    let seed = base_seed
        ^ name
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31) ^ b as u64);
    let pool: Vec<Vec<u8>> = inputs.into_iter().map(|(_, d)| d).collect();
    let mut rng = Rng(seed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        let mut data = pool[rng.below(pool.len())].clone();
        mutate(&mut rng, &mut data, &pool, t.max_len);
        run_one(
            &t,
            &data,
            &format!(
                "mutated input {runs} of FUZZ_SEED={base_seed} (target seed {seed}; \
                 rerun: FUZZ_SEED={base_seed} cargo test -p tcpls-fuzz --test fuzz_smoke {name})"
            ),
            &format!("{base_seed}-{runs}"),
        );
        runs += 1;
    }
    println!(
        "{name}: {} committed inputs, {runs} mutated inputs in {seconds} s (FUZZ_SEED={base_seed})",
        pool.len()
    );
}

#[test]
fn frames() {
    smoke("frames");
}

#[test]
fn extensions() {
    smoke("extensions");
}

#[test]
fn record_header() {
    smoke("record_header");
}

#[test]
fn join_probe() {
    smoke("join_probe");
}

#[test]
fn session_recv() {
    smoke("session_recv");
}

#[test]
fn session_multi() {
    smoke("session_multi");
}

/// Every target has a test above and committed seeds.
#[test]
fn every_target_is_smoked() {
    let src = include_str!("fuzz_smoke.rs");
    for t in tcpls_fuzz::TARGETS {
        assert!(
            src.contains(&format!("fn {}() {{\n    smoke(\"{}\");", t.name, t.name)),
            "no smoke test for {}",
            t.name
        );
        assert!(fuzz_dir().join("seeds").join(t.name).is_dir());
    }
}
