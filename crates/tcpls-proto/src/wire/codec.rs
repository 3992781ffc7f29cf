//! Byte readers and the `Codec` trait (in the style of rustls' `msgs::codec`).
//!
//! Two readers: [`Reader`] walks forward (TLS extensions) and [`RevReader`]
//! walks backward from the end of a buffer (TCPLS frames, which are parsed
//! from the end of a record so stream payload stays at the front). Both check
//! every length before touching a byte and never panic.

use crate::error::DecodeError;

/// A type with a forward wire encoding.
pub trait Codec: Sized {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes one value from `r`.
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// Encodes into a fresh vector.
    fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Decodes a value that must fill `bytes` exactly.
    fn from_slice(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = Self::read(&mut r)?;
        if !r.is_empty() {
            return Err(DecodeError::BadLength("trailing bytes"));
        }
        Ok(v)
    }
}

/// Forward reader over a byte slice.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    /// True when every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// Bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }
    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
}

/// Backward reader: each call consumes bytes from the end of the buffer.
#[derive(Debug)]
pub struct RevReader<'a> {
    buf: &'a [u8],
}

impl<'a> RevReader<'a> {
    /// Starts reading at the end of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    /// Bytes not yet consumed (the front of the buffer).
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
    /// Takes the last `n` unread bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(self.buf.len() - n);
        self.buf = head;
        Ok(tail)
    }
}

/// Fixed-width big-endian reads on top of `take`, shared by both readers
/// (for [`RevReader`] the value is the one that ends at the current
/// position).
pub trait Take<'a> {
    /// Takes the next `n` bytes in this reader's direction.
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError>;

    /// Reads a fixed-size array.
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    /// Reads a `u8`.
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    /// Reads a big-endian `u16`.
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    /// Reads a big-endian `u32`.
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    /// Reads a big-endian `u64`.
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
}

impl<'a> Take<'a> for Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        Reader::take(self, n, what)
    }
}

impl<'a> Take<'a> for RevReader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        RevReader::take(self, n, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_check_lengths() {
        let b = [1u8, 2, 3];
        let mut r = Reader::new(&b);
        assert_eq!(r.u16("x").unwrap(), 0x0102);
        assert!(r.u16("y").is_err());
        let mut r = RevReader::new(&b);
        assert_eq!(r.u8("t").unwrap(), 3);
        assert_eq!(r.u16("x").unwrap(), 0x0102);
        assert_eq!(r.u8("z"), Err(DecodeError::Truncated("z")));
    }
}
