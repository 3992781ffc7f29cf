//! Helpers shared by the end-to-end tests of the `tcpls` binary.
// Each test crate uses some of these.
#![allow(dead_code, unused_imports)]

use std::process::Output;

mod procs;
mod run;
pub use procs::{free_port, try_wait_listening, wait_listening, Reaper};
pub use run::run_bounded;

pub const BIN: &str = env!("CARGO_BIN_EXE_tcpls");

/// The JSON a successful command printed.
pub fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}
