//! The join ClientHello: the first bytes of a TCP connection that joins an
//! existing session.
//!
//! To the network it is an ordinary TLS 1.3 ClientHello record (fresh
//! random and legacy session id, the three TLS 1.3 suites,
//! `supported_versions`) carrying the `tcpls_join` extension with a one-time
//! token. No ServerHello follows: the client's next record is already
//! protected with the session's keys under the new connection id, and the
//! server attaches the connection only if that record decrypts. The token is
//! random and single-use, so it links the connection to nothing an observer
//! has seen (the NEW_TOKEN frame that carried it was encrypted).

use crate::error::DecodeError;
use crate::wire::codec::{Reader, Take};
use crate::wire::extension::TCPLS_JOIN_EXTENSION_TYPE;
use crate::wire::frame::TOKEN_LEN;
use crate::wire::hello::{find_extension, HANDSHAKE};
use crate::wire::record::HEADER_LEN;

const CLIENT_HELLO: u8 = 1;
const SUPPORTED_VERSIONS: u16 = 43;

/// What the first bytes of a new TCP connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinProbe {
    /// Not enough bytes yet to tell.
    Incomplete,
    /// A join: the token and the length of the ClientHello record.
    Join {
        /// The token from `tcpls_join`.
        token: [u8; TOKEN_LEN],
        /// Bytes of the record to skip before the session's records.
        len: usize,
    },
    /// Anything else (an ordinary ClientHello, or garbage for the TLS
    /// stack to refuse).
    NotJoin,
}

/// Builds the join ClientHello record. `random` provides the 32-byte random
/// and the 32-byte legacy session id.
pub fn encode_join_hello(token: &[u8; TOKEN_LEN], random: &[u8; 64]) -> Vec<u8> {
    let mut body = Vec::with_capacity(160);
    body.extend_from_slice(&[0x03, 0x03]);
    body.extend_from_slice(&random[..32]);
    body.push(32);
    body.extend_from_slice(&random[32..]);
    body.extend_from_slice(&[0, 6, 0x13, 0x01, 0x13, 0x02, 0x13, 0x03]);
    body.extend_from_slice(&[1, 0]);
    let mut ext = Vec::with_capacity(48);
    ext.extend_from_slice(&SUPPORTED_VERSIONS.to_be_bytes());
    ext.extend_from_slice(&[0, 3, 2, 0x03, 0x04]);
    ext.extend_from_slice(&TCPLS_JOIN_EXTENSION_TYPE.to_be_bytes());
    ext.extend_from_slice(&(TOKEN_LEN as u16).to_be_bytes());
    ext.extend_from_slice(token);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);

    let mut rec = Vec::with_capacity(HEADER_LEN + 4 + body.len());
    let hs_len = body.len() + 4;
    rec.extend_from_slice(&[HANDSHAKE, 0x03, 0x01]);
    rec.extend_from_slice(&(hs_len as u16).to_be_bytes());
    rec.push(CLIENT_HELLO);
    rec.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    rec.extend_from_slice(&body);
    rec
}

/// Looks at the first bytes of a connection.
pub fn probe_join(buf: &[u8]) -> JoinProbe {
    if buf.len() < HEADER_LEN {
        return JoinProbe::Incomplete;
    }
    if buf[0] != HANDSHAKE {
        return JoinProbe::NotJoin;
    }
    let len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    if buf.len() < HEADER_LEN + len {
        return if len > (1 << 14) {
            JoinProbe::NotJoin
        } else {
            JoinProbe::Incomplete
        };
    }
    match parse_client_hello(&buf[HEADER_LEN..HEADER_LEN + len]) {
        Ok(Some(token)) => JoinProbe::Join {
            token,
            len: HEADER_LEN + len,
        },
        _ => JoinProbe::NotJoin,
    }
}

fn parse_client_hello(hs: &[u8]) -> Result<Option<[u8; TOKEN_LEN]>, DecodeError> {
    let mut r = Reader::new(hs);
    if r.u8("handshake type")? != CLIENT_HELLO {
        return Ok(None);
    }
    let len = u32::from_be_bytes([0, r.u8("len")?, r.u8("len")?, r.u8("len")?]) as usize;
    let mut r = Reader::new(r.take(len, "client hello")?);
    r.take(2 + 32, "version and random")?;
    let sid = r.u8("session id length")? as usize;
    r.take(sid, "session id")?;
    let suites = r.u16("cipher suites length")? as usize;
    r.take(suites, "cipher suites")?;
    let comp = r.u8("compression length")? as usize;
    r.take(comp, "compression")?;
    let ext_len = r.u16("extensions length")? as usize;
    let Some(body) = find_extension(r.take(ext_len, "extensions")?, TCPLS_JOIN_EXTENSION_TYPE)?
    else {
        return Ok(None);
    };
    let mut b = Reader::new(body);
    let token = b.array::<TOKEN_LEN>("join token")?;
    Ok(b.is_empty().then_some(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn join_hello_round_trips_and_is_recognised() {
        let token = [7u8; 32];
        let rec = encode_join_hello(&token, &[1u8; 64]);
        assert_eq!(
            probe_join(&rec),
            JoinProbe::Join {
                token,
                len: rec.len()
            }
        );
        assert_eq!(probe_join(&rec[..rec.len() - 1]), JoinProbe::Incomplete);
        assert_eq!(probe_join(&rec[..3]), JoinProbe::Incomplete);
        assert_eq!(probe_join(b"GET / HTTP/1.1\r\n"), JoinProbe::NotJoin);
    }

    proptest! {
        #[test]
        fn probing_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = probe_join(&bytes);
            let mut rec = vec![22, 3, 1, (bytes.len() >> 8) as u8, bytes.len() as u8];
            rec.extend_from_slice(&bytes);
            let _ = probe_join(&rec);
        }
    }
}
