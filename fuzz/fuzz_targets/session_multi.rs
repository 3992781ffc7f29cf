//! libFuzzer wrapper of `tcpls_fuzz::session_multi` (crates/tcpls-fuzz/src/session_multi.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpls_fuzz::session_multi(data));
