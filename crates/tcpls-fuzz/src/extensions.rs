//! TLS extension bodies: `tcpls` (0xff54) and `tcpls_join` (0xff55), plus the
//! transport parameter list on its own, decoded with the `Codec` trait.
//!
//! Any value that decodes must survive encode -> decode unchanged, and the
//! encoder's output is canonical (encoding what it decodes gives the same
//! bytes). The join extension is a bare 32-byte token, so there decoding is
//! the identity.

use tcpls_proto::wire::codec::Codec;
use tcpls_proto::wire::frame::TOKEN_LEN;
use tcpls_proto::wire::{JoinExtension, TcplsExtension, TransportParams};

fn round_trip<T: Codec + PartialEq + std::fmt::Debug>(v: &T) {
    let enc = v.to_vec();
    let back =
        T::from_slice(&enc).unwrap_or_else(|e| panic!("{v:?} encodes to undecodable bytes: {e}"));
    assert_eq!(&back, v, "decode(encode(v)) != v");
    assert_eq!(back.to_vec(), enc, "encoding is not canonical");
}

/// The target: see the module documentation.
pub fn extensions(data: &[u8]) {
    if let Ok(ext) = TcplsExtension::from_slice(data) {
        round_trip(&ext);
        // The extension is the version followed by the parameter list.
        let params = TransportParams::from_slice(&data[2..]).expect("params decode alone");
        assert_eq!(params, ext.params);
    }
    if let Ok(params) = TransportParams::from_slice(data) {
        round_trip(&params);
    }
    match JoinExtension::from_slice(data) {
        Ok(join) => {
            assert_eq!(data.len(), TOKEN_LEN);
            assert_eq!(join.to_vec(), data);
            round_trip(&join);
        }
        Err(_) => assert_ne!(data.len(), TOKEN_LEN),
    }
}
