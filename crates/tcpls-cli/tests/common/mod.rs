//! Helpers shared by the end-to-end tests of the `tcpls` binary.
#![allow(dead_code)]

use std::process::Output;

mod run;
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
