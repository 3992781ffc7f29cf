//! `SSLKEYLOGFILE`: the TLS secrets of every handshake are appended to the
//! file it names, in the NSS key log format Wireshark reads. (A test binary
//! of its own: the variable is read once per process.)

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

#[test]
fn sslkeylogfile_gets_the_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.log");
    // Before any handshake of this process, and no other test runs here.
    std::env::set_var("SSLKEYLOGFILE", &path);
    let p = Net::established();
    assert!(p.c.is_tcpls());
    let text = std::fs::read_to_string(&path).unwrap();
    for label in [
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
        "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_TRAFFIC_SECRET_0",
        "SERVER_TRAFFIC_SECRET_0",
    ] {
        // Both ends log each secret.
        assert_eq!(
            text.matches(&format!("{label} ")).count(),
            2,
            "{label}: {text}"
        );
    }
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}
