//! libFuzzer wrapper of `tcpls_fuzz::session_recv` (crates/tcpls-fuzz/src/session_recv.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpls_fuzz::session_recv(data));
