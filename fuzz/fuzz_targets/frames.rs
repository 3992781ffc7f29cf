//! libFuzzer wrapper of `tcpls_fuzz::frames` (crates/tcpls-fuzz/src/frames.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpls_fuzz::frames(data));
