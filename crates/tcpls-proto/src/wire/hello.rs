//! TLS hello messages as far as TCPLS looks into them: their extension
//! list, and whether a ServerHello carries a key share (OpenSSL does not
//! tell a psk_ke resumption from a psk_dhe_ke one).

use crate::error::DecodeError;
use crate::wire::codec::{Reader, Take};
use crate::wire::record::HEADER_LEN;

/// TLS record content type of handshake messages.
pub(crate) const HANDSHAKE: u8 = 22;
const SERVER_HELLO: u8 = 2;
const KEY_SHARE: u16 = 51;

/// The body of extension `ty` in an extension list (the bytes after its
/// two-byte length), if present.
pub(crate) fn find_extension(list: &[u8], ty: u16) -> Result<Option<&[u8]>, DecodeError> {
    let mut exts = Reader::new(list);
    while !exts.is_empty() {
        let t = exts.u16("extension type")?;
        let len = exts.u16("extension length")? as usize;
        let body = exts.take(len, "extension body")?;
        if t == ty {
            return Ok(Some(body));
        }
    }
    Ok(None)
}

/// Whether the TLS record at the start of `flight`, a ServerHello, carries
/// a key_share extension: `None` until the record is whole; `Some(true)`
/// when it is something else or malformed (a key exchange is then
/// assumed).
pub(crate) fn server_hello_key_share(flight: &[u8]) -> Option<bool> {
    let header = flight.get(..HEADER_LEN)?;
    let len = u16::from_be_bytes([header[3], header[4]]) as usize;
    let record = flight.get(HEADER_LEN..HEADER_LEN + len)?;
    let parse = || -> Result<bool, DecodeError> {
        let mut r = Reader::new(record);
        if header[0] != HANDSHAKE || r.u8("handshake type")? != SERVER_HELLO {
            return Ok(true);
        }
        r.take(3, "handshake length")?;
        r.take(2 + 32, "version and random")?;
        let sid = r.u8("session id length")? as usize;
        r.take(sid + 2 + 1, "session id, suite and compression")?;
        let ext_len = r.u16("extensions length")? as usize;
        Ok(find_extension(r.take(ext_len, "extensions")?, KEY_SHARE)?.is_some())
    };
    Some(parse().unwrap_or(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ServerHello record with these extensions (type, body).
    fn server_hello(exts: &[(u16, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (ty, body) in exts {
            list.extend_from_slice(&ty.to_be_bytes());
            list.extend_from_slice(&(body.len() as u16).to_be_bytes());
            list.extend_from_slice(body);
        }
        let mut msg = vec![0x03, 0x03];
        msg.extend_from_slice(&[7; 32]);
        msg.push(32);
        msg.extend_from_slice(&[9; 32]);
        msg.extend_from_slice(&[0x13, 0x01, 0]);
        msg.extend_from_slice(&(list.len() as u16).to_be_bytes());
        msg.extend_from_slice(&list);
        let mut hs = vec![SERVER_HELLO];
        hs.extend_from_slice(&(msg.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&msg);
        let mut rec = vec![HANDSHAKE, 0x03, 0x03];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn a_server_hello_with_or_without_a_key_share() {
        let with = server_hello(&[(43, &[3, 4]), (KEY_SHARE, &[0, 29, 0, 1, 5])]);
        let without = server_hello(&[(43, &[3, 4]), (41, &[0, 0])]);
        assert_eq!(server_hello_key_share(&with), Some(true));
        assert_eq!(server_hello_key_share(&without), Some(false));
        // Incomplete until the whole record is there; then followed by
        // the rest of the flight, which is not looked at.
        assert_eq!(server_hello_key_share(&without[..without.len() - 1]), None);
        let mut flight = without.clone();
        flight.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
        assert_eq!(server_hello_key_share(&flight), Some(false));
        // Anything else, or a malformed hello: a key exchange is assumed.
        let mut other = without.clone();
        other[5] = 1;
        assert_eq!(server_hello_key_share(&other), Some(true));
        let mut bad = without;
        let n = bad.len();
        bad[n - 4] = 0xff; // the last extension's length, past the end
        assert_eq!(server_hello_key_share(&bad), Some(true));
    }
}
