//! The buffer records are built and sealed in before they go to a socket.

use std::ops::{Deref, DerefMut};

/// Bytes to write to one connection's socket, filled by
/// [`super::Session::poll_transmit_buf`].
///
/// A `Vec<u8>` whose memory stays initialised between uses: `len` bytes are
/// content, the rest of `buf` is old content kept only as room. Most of a
/// record is encrypted straight from the stream's send buffer into that
/// room (`RecordKey::seal_with_lead`), and the AEAD API writes only into
/// initialised slices, so a plain `Vec` would have to be zeroed first:
/// one more pass over every byte. Reused across calls (one per connection
/// writer), it zeroes its memory once, when it grows.
///
/// ```
/// use tcpls_proto::session::TransmitBuf;
/// let mut out = TransmitBuf::default();
/// out.extend_from_slice(b"record bytes");
/// assert_eq!(&out[..], b"record bytes");
/// out.clear(); // the memory stays for the next batch
/// assert!(out.is_empty() && out.capacity() >= 12);
/// ```
#[derive(Clone, Debug, Default)]
pub struct TransmitBuf {
    buf: Vec<u8>,
    len: usize,
}

impl TransmitBuf {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of content.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is no content.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Memory held, content or room.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Drops the content and keeps the memory.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Drops content beyond `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Appends a copy of `data`.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.grow(data.len()).copy_from_slice(data);
    }

    /// Appends one byte.
    pub fn push(&mut self, b: u8) {
        self.grow(1)[0] = b;
    }

    /// Appends `n` bytes of unspecified (old) content and returns them, to
    /// be overwritten.
    pub(crate) fn grow(&mut self, n: usize) -> &mut [u8] {
        let start = self.len;
        let end = start + n;
        if end > self.buf.len() {
            // Doubling, as a Vec would: zeroed once, reused afterwards.
            let cap = end.max(2 * self.buf.len());
            self.buf.resize(cap, 0);
        }
        self.len = end;
        &mut self.buf[start..end]
    }

    /// The content as a `Vec` (its length is the content's).
    pub fn into_vec(mut self) -> Vec<u8> {
        self.buf.truncate(self.len);
        self.buf
    }
}

impl From<Vec<u8>> for TransmitBuf {
    /// Takes `v`'s bytes as content.
    fn from(v: Vec<u8>) -> Self {
        Self {
            len: v.len(),
            buf: v,
        }
    }
}

impl Deref for TransmitBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl DerefMut for TransmitBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_what_was_appended_and_memory_is_reused() {
        let mut t = TransmitBuf::new();
        t.extend_from_slice(&[1; 100]);
        t.push(2);
        assert_eq!(t.len(), 101);
        assert_eq!(t[100], 2);
        let cap = t.capacity();
        t.truncate(50);
        assert_eq!(&t[..], &[1; 50]);
        t.clear();
        // Room comes back with its old bytes, to be overwritten.
        assert_eq!(t.grow(10), &[1; 10]);
        assert_eq!(t.capacity(), cap);
        t.truncate(0);
        t.extend_from_slice(b"abc");
        assert_eq!(t.clone().into_vec(), b"abc");
        let v = TransmitBuf::from(vec![7, 8]);
        assert_eq!(&v[..], &[7, 8]);
    }
}
