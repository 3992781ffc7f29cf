//! libFuzzer wrapper of `tcpls_fuzz::extensions` (crates/tcpls-fuzz/src/extensions.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpls_fuzz::extensions(data));
