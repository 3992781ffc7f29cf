//! The first bytes of every new TCP connection a server accepts go through
//! `probe_join` before anything is authenticated, so it sees whatever an
//! attacker sends.
//!
//! Checks: no panic; a reported join's length is at least a record header
//! and never more than the input; the token decodes as a `tcpls_join`
//! extension body and round-trips; the same verdict comes back from the
//! reported record alone (what follows it does not matter), and a prefix
//! of the record is never a join; a join hello the encoder builds for the
//! token (with fuzzed random bytes) probes as that token and its length.

use tcpls_proto::join::{probe_join, JoinProbe};
use tcpls_proto::wire::codec::Codec;
use tcpls_proto::wire::join::encode_join_hello;
use tcpls_proto::wire::record::HEADER_LEN;
use tcpls_proto::wire::JoinExtension;

/// The target: see the module documentation.
pub fn join_probe(data: &[u8]) {
    let JoinProbe::Join { token, len } = probe_join(data) else {
        return;
    };
    assert!(
        (HEADER_LEN..=data.len()).contains(&len),
        "join length {len} for {} input bytes",
        data.len()
    );
    let ext = JoinExtension::from_slice(&token).expect("a token is a join extension body");
    assert_eq!(ext.token, token);
    assert_eq!(ext.to_vec(), token);
    assert_eq!(
        probe_join(&data[..len]),
        JoinProbe::Join { token, len },
        "the verdict depends on bytes after the record"
    );
    assert!(!matches!(
        probe_join(&data[..len - 1]),
        JoinProbe::Join { .. }
    ));
    let mut random = [0u8; 64];
    for (r, d) in random.iter_mut().zip(data.iter().rev()) {
        *r = *d;
    }
    let hello = encode_join_hello(&token, &random);
    assert_eq!(
        probe_join(&hello),
        JoinProbe::Join {
            token,
            len: hello.len()
        }
    );
}
