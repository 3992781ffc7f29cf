//! The bodies of the fuzz targets, as plain functions (one per target, each
//! taking the input bytes and panicking on a broken invariant).
//!
//! `fuzz/fuzz_targets/<name>.rs` wraps each in libFuzzer's `fuzz_target!`
//! for coverage-guided runs (`fuzz/ci.sh`, and the campaigns recorded in
//! `docs/security.md`). This crate has no libFuzzer dependency, so it is a
//! normal workspace member: `cargo test --workspace` builds it with the rest
//! and its test (`tests/fuzz_smoke.rs`) replays every committed seed and
//! regression input and runs each target briefly on random mutations of
//! them, without the cost of a cargo-fuzz build in CI.
//!
//! It turns on `tcpls-proto`'s `testing` feature (fixed-key session pairs,
//! public wire codecs); that feature adds entry points only.

mod extensions;
mod frames;
mod join_probe;
mod record_header;
mod session_multi;
mod session_recv;

pub use extensions::extensions;
pub use frames::frames;
pub use join_probe::join_probe;
pub use record_header::record_header;
pub use session_multi::session_multi;
pub use session_recv::session_recv;

/// One fuzz target: its name (the directory under `fuzz/seeds/`, the binary
/// in `fuzz/`), its body, and the longest input worth giving it (what
/// `fuzz/ci.sh` passes as `-max_len`).
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    pub max_len: usize,
}

/// Every target, in the order `fuzz/ci.sh` runs them.
pub const TARGETS: [Target; 6] = [
    Target {
        name: "frames",
        run: frames,
        max_len: 4096,
    },
    Target {
        name: "extensions",
        run: extensions,
        max_len: 512,
    },
    Target {
        name: "record_header",
        run: record_header,
        max_len: 16,
    },
    Target {
        name: "join_probe",
        run: join_probe,
        max_len: 4096,
    },
    Target {
        name: "session_recv",
        run: session_recv,
        max_len: 20000,
    },
    Target {
        name: "session_multi",
        run: session_multi,
        max_len: 4096,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().copied().find(|t| t.name == name)
}
