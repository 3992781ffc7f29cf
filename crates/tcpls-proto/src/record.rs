//! Record protection: the TLS 1.3 key schedule's last step (RFC 8446 7.3) and
//! AEAD seal/open in place with per-connection nonces.
//!
//! The nonce of a record is `iv XOR (connection_id as 4 bytes || seq as 8
//! bytes)`. For connection 0 that is exactly TLS 1.3's per-record nonce, so a
//! session's first connection carries standard TLS 1.3 records.

// aws-lc-rs rather than ring: same API, and twice ring's AES-GCM speed on
// 16 KiB records here (benches/aead.rs, docs/benchmarks.md).
use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use aws_lc_rs::hkdf;
use zeroize::Zeroizing;

use crate::error::Error;
use crate::ids::ConnectionId;
use crate::wire::record::{ContentType, RecordHeader, HEADER_LEN, MAX_PLAINTEXT, TAG_LEN};

/// The TLS 1.3 AEAD cipher suites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CipherSuite {
    /// TLS_AES_128_GCM_SHA256
    Aes128GcmSha256,
    /// TLS_AES_256_GCM_SHA384
    Aes256GcmSha384,
    /// TLS_CHACHA20_POLY1305_SHA256
    Chacha20Poly1305Sha256,
}

impl CipherSuite {
    /// All suites, in OpenSSL's default preference order.
    pub const ALL: [CipherSuite; 3] = [
        CipherSuite::Aes256GcmSha384,
        CipherSuite::Chacha20Poly1305Sha256,
        CipherSuite::Aes128GcmSha256,
    ];

    /// The IANA / OpenSSL name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Aes128GcmSha256 => "TLS_AES_128_GCM_SHA256",
            Self::Aes256GcmSha384 => "TLS_AES_256_GCM_SHA384",
            Self::Chacha20Poly1305Sha256 => "TLS_CHACHA20_POLY1305_SHA256",
        }
    }

    /// Looks a suite up by its IANA / OpenSSL name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    fn aead(self) -> &'static aead::Algorithm {
        match self {
            Self::Aes128GcmSha256 => &aead::AES_128_GCM,
            Self::Aes256GcmSha384 => &aead::AES_256_GCM,
            Self::Chacha20Poly1305Sha256 => &aead::CHACHA20_POLY1305,
        }
    }

    fn hkdf(self) -> hkdf::Algorithm {
        match self {
            Self::Aes256GcmSha384 => hkdf::HKDF_SHA384,
            _ => hkdf::HKDF_SHA256,
        }
    }

    /// Records one key may protect before its confidentiality bound is at
    /// risk (RFC 8446 5.5 for AES-GCM; ChaCha20's bound is far above u64).
    pub fn record_limit(self) -> u64 {
        match self {
            Self::Chacha20Poly1305Sha256 => u64::MAX - 1,
            _ => 1 << 24,
        }
    }
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label(secret, label, "", len) from RFC 8446 7.1.
pub fn hkdf_expand_label(
    suite: CipherSuite,
    secret: &[u8],
    label: &[u8],
    out: &mut [u8],
) -> Result<(), Error> {
    let prk = hkdf::Prk::new_less_safe(suite.hkdf(), secret);
    let out_len = (out.len() as u16).to_be_bytes();
    let label_len = [6 + label.len() as u8];
    let info: [&[u8]; 5] = [&out_len, &label_len, b"tls13 ", label, &[0]];
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| Error::Internal("HKDF expand failed".into()))
}

/// One direction's record protection key.
pub struct RecordKey {
    suite: CipherSuite,
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
}

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordKey")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl Drop for RecordKey {
    fn drop(&mut self) {
        // aws-lc cleanses the AEAD context when it is freed; the IV is ours.
        zeroize::Zeroize::zeroize(&mut self.iv);
    }
}

impl RecordKey {
    /// Derives key and iv from a traffic secret.
    pub fn new(suite: CipherSuite, traffic_secret: &[u8]) -> Result<Self, Error> {
        let alg = suite.aead();
        let mut key = Zeroizing::new(vec![0u8; alg.key_len()]);
        hkdf_expand_label(suite, traffic_secret, b"key", &mut key)?;
        let mut iv = [0u8; NONCE_LEN];
        hkdf_expand_label(suite, traffic_secret, b"iv", &mut iv)?;
        let key = UnboundKey::new(alg, &key).map_err(|_| Error::Internal("AEAD key".into()))?;
        Ok(Self {
            suite,
            key: LessSafeKey::new(key),
            iv,
        })
    }

    /// The suite this key belongs to.
    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    fn nonce(&self, conn: ConnectionId, seq: u64) -> Nonce {
        let mut n = self.iv;
        for (b, x) in n[..4].iter_mut().zip(conn.0.to_be_bytes()) {
            *b ^= x;
        }
        for (b, x) in n[4..].iter_mut().zip(seq.to_be_bytes()) {
            *b ^= x;
        }
        Nonce::assume_unique_for_key(n)
    }

    /// Seals the record that starts at `out[start]`.
    ///
    /// `out[start..start + HEADER_LEN]` is space for the header and everything
    /// after it is the plaintext content; this appends the inner content type,
    /// encrypts in place, appends the tag and writes the header.
    pub fn seal(
        &self,
        conn: ConnectionId,
        seq: u64,
        content_type: ContentType,
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), Error> {
        out.push(content_type.into());
        out.resize(out.len() + TAG_LEN, 0);
        self.seal_in_place(conn, seq, &mut out[start..])
    }

    /// Seals `record`, laid out as header room (`HEADER_LEN`), plaintext
    /// ending with the inner content type, tag room (`TAG_LEN`): encrypts
    /// in place and writes header and tag.
    pub fn seal_in_place(
        &self,
        conn: ConnectionId,
        seq: u64,
        record: &mut [u8],
    ) -> Result<(), Error> {
        let (header, fragment) = Self::split_record(record)?;
        let (plain, tag_out) = fragment.split_at_mut(fragment.len() - TAG_LEN);
        let tag = self
            .key
            .seal_in_place_separate_tag(self.nonce(conn, seq), Aad::from(header), plain)
            .map_err(|_| Error::Internal("AEAD seal failed".into()))?;
        tag_out.copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// Seals `record` whose plaintext begins with `lead`, encrypting `lead`
    /// straight from where it lies.
    ///
    /// `record` is laid out as for [`Self::seal_in_place`], except that its
    /// first `lead.len()` plaintext bytes are only room for `lead`'s
    /// ciphertext (their content is ignored). The result is byte for byte
    /// what `seal_in_place` gives for the same plaintext, but the bulk of
    /// a record is read once, instead of being copied into the record and
    /// then encrypted there. `trailer` is scratch space for the plaintext
    /// after `lead` (a few frame headers).
    pub fn seal_with_lead(
        &self,
        conn: ConnectionId,
        seq: u64,
        lead: &[u8],
        record: &mut [u8],
        trailer: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let (header, fragment) = Self::split_record(record)?;
        if fragment.len() < lead.len() + 1 + TAG_LEN {
            return Err(Error::Internal("record shorter than its lead".into()));
        }
        let (lead_out, rest) = fragment.split_at_mut(lead.len());
        trailer.clear();
        trailer.extend_from_slice(&rest[..rest.len() - TAG_LEN]);
        self.key
            .seal_out_of_place_scatter(
                self.nonce(conn, seq),
                Aad::from(header),
                lead,
                lead_out,
                trailer,
                rest,
            )
            .map_err(|_| Error::Internal("AEAD seal failed".into()))
    }

    /// Writes the header of `record` (whole length known) and splits it off.
    fn split_record(record: &mut [u8]) -> Result<([u8; HEADER_LEN], &mut [u8]), Error> {
        let frag_len = record.len().saturating_sub(HEADER_LEN);
        if frag_len < 1 + TAG_LEN || frag_len - TAG_LEN - 1 > MAX_PLAINTEXT {
            return Err(Error::Internal("record length out of range".into()));
        }
        let header = RecordHeader::application_data(frag_len);
        let (h, fragment) = record.split_at_mut(HEADER_LEN);
        h.copy_from_slice(&header);
        Ok((header, fragment))
    }

    /// Opens a whole record (`header || fragment`) in place. Returns the inner
    /// content type and the plaintext length; the plaintext is then
    /// `record[HEADER_LEN..HEADER_LEN + len]`.
    pub fn open(
        &self,
        conn: ConnectionId,
        seq: u64,
        record: &mut [u8],
    ) -> Result<(ContentType, usize), Error> {
        if record.len() < HEADER_LEN + TAG_LEN + 1 {
            return Err(Error::BadRecord("record shorter than its tag"));
        }
        let (header, frag) = record.split_at_mut(HEADER_LEN);
        let aad = Aad::from(<[u8; HEADER_LEN]>::try_from(&*header).expect("5-byte header"));
        let plain = self
            .key
            .open_in_place(self.nonce(conn, seq), aad, frag)
            .map_err(|_| Error::BadRecord("decryption failed"))?;
        // Strip padding: the content type is the last non-zero byte.
        let end = plain
            .iter()
            .rposition(|&b| b != 0)
            .ok_or(Error::BadRecord("record without content type"))?;
        if end > MAX_PLAINTEXT {
            return Err(Error::BadRecord("plaintext too long"));
        }
        Ok((ContentType::from(plain[end]), end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8448 section 3 ("Simple 1-RTT Handshake"): server application
    // traffic secret and the key/iv derived from it.
    #[test]
    fn rfc8448_key_schedule() {
        let secret = hex("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643");
        let mut key = [0u8; 16];
        hkdf_expand_label(CipherSuite::Aes128GcmSha256, &secret, b"key", &mut key).unwrap();
        assert_eq!(key.to_vec(), hex("9f02283b6c9c07efc26bb9f2ac92e356"));
        let mut iv = [0u8; 12];
        hkdf_expand_label(CipherSuite::Aes128GcmSha256, &secret, b"iv", &mut iv).unwrap();
        assert_eq!(iv.to_vec(), hex("cf782b88dd83549aadf1e984"));
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn seal_with_lead_equals_seal_in_place() {
        for suite in CipherSuite::ALL {
            let k = RecordKey::new(suite, &[9u8; 48][..32]).unwrap();
            let lead: Vec<u8> = (0..5000).map(|i| (i % 251) as u8).collect();
            for trailer_len in [0usize, 1, 15, 16, 17, 300] {
                let trailer = vec![0x5c; trailer_len];
                let mut a = vec![0xEE; 2];
                a.extend_from_slice(&[0; HEADER_LEN]);
                a.extend_from_slice(&lead);
                a.extend_from_slice(&trailer);
                k.seal(ConnectionId(3), 77, ContentType::ApplicationData, &mut a, 2)
                    .unwrap();
                let mut b = vec![0xEE; 2];
                b.extend_from_slice(&[0; HEADER_LEN]);
                b.extend_from_slice(&[0xAB; 5000]); // room, content ignored
                b.extend_from_slice(&trailer);
                b.push(ContentType::ApplicationData.into());
                b.extend_from_slice(&[0xCD; TAG_LEN]);
                let mut scratch = Vec::new();
                k.seal_with_lead(ConnectionId(3), 77, &lead, &mut b[2..], &mut scratch)
                    .unwrap();
                assert_eq!(a, b, "{suite:?}, trailer {trailer_len}");
            }
        }
    }

    #[test]
    fn seal_open_round_trip_all_suites() {
        for suite in CipherSuite::ALL {
            let secret_len = if suite == CipherSuite::Aes256GcmSha384 {
                48
            } else {
                32
            };
            let k = RecordKey::new(suite, &[7u8; 48][..secret_len]).unwrap();
            let mut out = vec![0xAA; 3];
            out.extend_from_slice(&[0; HEADER_LEN]);
            out.extend_from_slice(b"hello frames");
            k.seal(
                ConnectionId(5),
                9,
                ContentType::ApplicationData,
                &mut out,
                3,
            )
            .unwrap();
            let mut wrong_conn = out[3..].to_vec();
            let mut wrong_seq = out[3..].to_vec();
            let rec = &mut out[3..];
            let (ct, len) = k.open(ConnectionId(5), 9, rec).unwrap();
            assert_eq!(ct, ContentType::ApplicationData);
            assert_eq!(&rec[HEADER_LEN..HEADER_LEN + len], b"hello frames");
            // Another connection id or sequence number: authentication fails.
            assert!(k.open(ConnectionId(5), 10, &mut wrong_seq).is_err());
            let mut copy = std::mem::take(&mut wrong_conn);
            assert!(k.open(ConnectionId(6), 9, &mut copy).is_err());
        }
    }
}
