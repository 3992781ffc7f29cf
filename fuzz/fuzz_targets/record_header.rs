//! libFuzzer wrapper of `tcpls_fuzz::record_header` (crates/tcpls-fuzz/src/record_header.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpls_fuzz::record_header(data));
