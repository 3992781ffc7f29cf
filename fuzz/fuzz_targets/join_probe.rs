//! libFuzzer wrapper of `tcpls_fuzz::join_probe` (crates/tcpls-fuzz/src/join_probe.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpls_fuzz::join_probe(data));
