//! TLS record header parsing (`RecordHeader::parse`) on arbitrary bytes.

use tcpls_proto::wire::record::{ContentType, RecordHeader, HEADER_LEN, MAX_CIPHERTEXT};

/// The target: see the module documentation.
pub fn record_header(data: &[u8]) {
    match RecordHeader::parse(data) {
        Ok(None) => assert!(data.len() < HEADER_LEN, "a full header must be decided"),
        Ok(Some(h)) => {
            assert!(data.len() >= HEADER_LEN);
            assert!(h.len <= MAX_CIPHERTEXT, "accepted an oversized record");
            assert_eq!(h.len, u16::from_be_bytes([data[3], data[4]]) as usize);
            assert_eq!(u8::from(h.content_type), data[0]);
            assert_eq!(data[1], 0x03);
            if h.content_type == ContentType::ApplicationData {
                // What we write for this length parses to the same header.
                let ours = RecordHeader::application_data(h.len);
                assert_eq!(RecordHeader::parse(&ours), Ok(Some(h)));
            }
        }
        Err(_) => assert!(data.len() >= HEADER_LEN, "errors need a full header"),
    }
    if let Some(&b) = data.first() {
        assert_eq!(u8::from(ContentType::from(b)), b);
    }
}
