//! TLS 1.3 record framing (RFC 8446 section 5): a typed view over the 5-byte
//! header plus the limits the record layer enforces.

use crate::error::DecodeError;

/// Length of a TLS record header.
pub const HEADER_LEN: usize = 5;
/// Largest TLSInnerPlaintext content (2^14).
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// Largest TLSCiphertext fragment allowed by RFC 8446 (2^14 + 256).
pub const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
/// AEAD tag length for all TLS 1.3 suites.
pub const TAG_LEN: usize = 16;
/// A record of maximal size on the wire.
pub const MAX_RECORD: usize = HEADER_LEN + MAX_CIPHERTEXT;

/// Record content types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ContentType {
    ChangeCipherSpec,
    Alert,
    Handshake,
    ApplicationData,
    Unknown(u8),
}

impl From<u8> for ContentType {
    fn from(v: u8) -> Self {
        match v {
            20 => Self::ChangeCipherSpec,
            21 => Self::Alert,
            22 => Self::Handshake,
            23 => Self::ApplicationData,
            x => Self::Unknown(x),
        }
    }
}

impl From<ContentType> for u8 {
    fn from(c: ContentType) -> u8 {
        match c {
            ContentType::ChangeCipherSpec => 20,
            ContentType::Alert => 21,
            ContentType::Handshake => 22,
            ContentType::ApplicationData => 23,
            ContentType::Unknown(x) => x,
        }
    }
}

/// The whole records (header and fragment) at the front of `bytes`, in
/// order; a partial one at the end is left out. Lengths are not checked
/// against the limits: for output of our own TLS library.
pub fn split_records(mut bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let len = HEADER_LEN + u16::from_be_bytes([*bytes.get(3)?, *bytes.get(4)?]) as usize;
        let rec = bytes.get(..len)?;
        bytes = &bytes[len..];
        Some(rec)
    })
}

/// A parsed record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Outer content type.
    pub content_type: ContentType,
    /// Length of the fragment that follows.
    pub len: usize,
}

impl RecordHeader {
    /// Parses the header at the start of `buf`. `Ok(None)` means more bytes
    /// are needed; errors mean the stream cannot be TLS 1.3 records.
    pub fn parse(buf: &[u8]) -> Result<Option<Self>, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let content_type = ContentType::from(buf[0]);
        if buf[1] != 0x03 || !(0x01..=0x04).contains(&buf[2]) {
            return Err(DecodeError::Invalid("record version"));
        }
        let len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
        if len > MAX_CIPHERTEXT {
            return Err(DecodeError::BadLength("record"));
        }
        Ok(Some(Self { content_type, len }))
    }

    /// Writes an application_data header for a fragment of `len` bytes.
    pub fn application_data(len: usize) -> [u8; HEADER_LEN] {
        let l = (len as u16).to_be_bytes();
        [23, 0x03, 0x03, l[0], l[1]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_limits() {
        assert_eq!(RecordHeader::parse(&[23, 3, 3]).unwrap(), None);
        let h = RecordHeader::parse(&RecordHeader::application_data(100)).unwrap();
        assert_eq!(
            h,
            Some(RecordHeader {
                content_type: ContentType::ApplicationData,
                len: 100
            })
        );
        assert!(RecordHeader::parse(&[23, 3, 3, 0xff, 0xff]).is_err());
        assert!(RecordHeader::parse(&[23, 7, 3, 0, 1]).is_err());
    }
}
