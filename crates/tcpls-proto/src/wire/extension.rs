//! The TLS extensions TCPLS adds to the handshake.
//!
//! `tcpls` (ClientHello and EncryptedExtensions):
//! `version u16 || params` where params is a list of `id u16 || len u16 || value`
//! entries with big-endian integer values. Unknown parameter ids are ignored,
//! so later versions can add parameters without breaking older peers.
//!
//! `tcpls_join` (ClientHello of a joining connection): the 32-byte token.

use crate::error::DecodeError;
use crate::wire::codec::{Codec, Reader, Take};
use crate::wire::frame::TOKEN_LEN;

/// Extension code point of `tcpls` (private-use range).
pub const TCPLS_EXTENSION_TYPE: u16 = 0xff54;
/// Extension code point of `tcpls_join` (private-use range).
pub const TCPLS_JOIN_EXTENSION_TYPE: u16 = 0xff55;
/// The protocol version this implementation speaks.
pub const TCPLS_VERSION: u16 = 1;

const P_INITIAL_MAX_DATA: u16 = 1;
const P_INITIAL_MAX_STREAM_DATA: u16 = 2;
const P_MAX_STREAMS: u16 = 3;
const P_USER_TIMEOUT_MS: u16 = 4;
const P_MAX_CONNECTIONS: u16 = 5;
const P_FAILOVER: u16 = 6;

/// Limits each side announces in its `tcpls` extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportParams {
    /// Bytes the peer may send on all streams before a MAX_DATA.
    pub initial_max_data: u64,
    /// Bytes the peer may send on each stream before a MAX_STREAM_DATA.
    pub initial_max_stream_data: u64,
    /// Streams the peer may open before a MAX_STREAMS.
    pub max_streams: u32,
    /// TCP User Timeout this side asks for, in milliseconds (0: none).
    pub user_timeout_ms: u32,
    /// TCP connections this side accepts per session.
    pub max_connections: u32,
    /// This side acknowledges records and replays unacknowledged data
    /// after a connection failure (both sides must).
    pub failover: bool,
}

impl Default for TransportParams {
    fn default() -> Self {
        Self {
            initial_max_data: 16 << 20,
            initial_max_stream_data: 4 << 20,
            max_streams: 256,
            user_timeout_ms: 0,
            max_connections: 1,
            failover: false,
        }
    }
}

fn put_param(out: &mut Vec<u8>, id: u16, value: &[u8]) {
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
}

impl Codec for TransportParams {
    fn encode(&self, out: &mut Vec<u8>) {
        put_param(
            out,
            P_INITIAL_MAX_DATA,
            &self.initial_max_data.to_be_bytes(),
        );
        put_param(
            out,
            P_INITIAL_MAX_STREAM_DATA,
            &self.initial_max_stream_data.to_be_bytes(),
        );
        put_param(out, P_MAX_STREAMS, &self.max_streams.to_be_bytes());
        put_param(out, P_USER_TIMEOUT_MS, &self.user_timeout_ms.to_be_bytes());
        put_param(out, P_MAX_CONNECTIONS, &self.max_connections.to_be_bytes());
        put_param(out, P_FAILOVER, &[self.failover as u8]);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        // A parameter the peer leaves out means "nothing granted", never our default.
        let mut p = TransportParams {
            initial_max_data: 0,
            initial_max_stream_data: 0,
            max_streams: 0,
            user_timeout_ms: 0,
            max_connections: 1,
            failover: false,
        };
        let mut seen = 0u32;
        while !r.is_empty() {
            let id = r.u16("parameter id")?;
            let len = r.u16("parameter length")? as usize;
            let mut v = Reader::new(r.take(len, "parameter value")?);
            if id < 32 {
                if seen & (1 << id) != 0 {
                    return Err(DecodeError::Invalid("duplicate transport parameter"));
                }
                seen |= 1 << id;
            }
            match id {
                P_INITIAL_MAX_DATA => p.initial_max_data = v.u64("initial_max_data")?,
                P_INITIAL_MAX_STREAM_DATA => {
                    p.initial_max_stream_data = v.u64("initial_max_stream_data")?
                }
                P_MAX_STREAMS => p.max_streams = v.u32("max_streams")?,
                P_USER_TIMEOUT_MS => p.user_timeout_ms = v.u32("user_timeout")?,
                P_MAX_CONNECTIONS => p.max_connections = v.u32("max_connections")?,
                P_FAILOVER => p.failover = v.u8("failover")? != 0,
                _ => continue,
            }
            if !v.is_empty() {
                return Err(DecodeError::BadLength("transport parameter"));
            }
        }
        Ok(p)
    }
}

/// Body of the `tcpls` extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcplsExtension {
    /// Protocol version.
    pub version: u16,
    /// The sender's limits.
    pub params: TransportParams,
}

impl Codec for TcplsExtension {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.version.to_be_bytes());
        self.params.encode(out);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u16("tcpls version")?;
        let params = TransportParams::read(r)?;
        Ok(Self { version, params })
    }
}

/// Body of the `tcpls_join` extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinExtension {
    /// One-time token the server issued with NEW_TOKEN.
    pub token: [u8; TOKEN_LEN],
}

impl Codec for JoinExtension {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.token);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            token: r.array("join token")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn tcpls_extension_round_trips(v in any::<u16>(), a in any::<u64>(), b in any::<u64>(),
                                       c in any::<u32>(), d in any::<u32>(), e in any::<u32>()) {
            let ext = TcplsExtension { version: v, params: TransportParams {
                initial_max_data: a, initial_max_stream_data: b, max_streams: c,
                user_timeout_ms: d, max_connections: e, failover: a % 2 == 0 } };
            prop_assert_eq!(TcplsExtension::from_slice(&ext.to_vec()).unwrap(), ext);
        }

        #[test]
        fn extension_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = TcplsExtension::from_slice(&bytes);
            let _ = JoinExtension::from_slice(&bytes);
        }
    }

    #[test]
    fn unknown_params_are_skipped_and_duplicates_refused() {
        let mut b = TCPLS_VERSION.to_be_bytes().to_vec();
        put_param(&mut b, 999, b"xyz");
        put_param(&mut b, P_MAX_STREAMS, &7u32.to_be_bytes());
        let e = TcplsExtension::from_slice(&b).unwrap();
        assert_eq!(e.params.max_streams, 7);
        assert_eq!(e.params.initial_max_data, 0);
        put_param(&mut b, P_MAX_STREAMS, &8u32.to_be_bytes());
        assert!(TcplsExtension::from_slice(&b).is_err());
        let j = JoinExtension { token: [9; 32] };
        assert_eq!(JoinExtension::from_slice(&j.to_vec()).unwrap(), j);
        assert!(JoinExtension::from_slice(&[1, 2]).is_err());
    }
}
