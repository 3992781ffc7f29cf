//! Reassembly of one stream's bytes by offset (after quinn's `assembler.rs`).
//!
//! Data may arrive out of order and more than once (several connections,
//! replays after failover). Chunks are kept as `Bytes` slices of the decrypted
//! records, so in-order data is handed out without copying. Memory is bounded
//! by the caller: it only inserts data that fits the stream's flow-control
//! window.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Buf, Bytes};

/// Reorders chunks by offset and yields them in order.
#[derive(Debug, Default)]
pub struct Assembler {
    /// First offset not yet in `ready` (everything before it arrived).
    next: u64,
    /// Contiguous chunks waiting for the application, in order.
    ready: VecDeque<Bytes>,
    /// Out-of-order chunks keyed by offset, non-overlapping.
    pending: BTreeMap<u64, Bytes>,
    /// Bytes held in `ready` and `pending`.
    buffered: usize,
    /// Offset of the next byte the application will read.
    read: u64,
}

impl Assembler {
    /// Adds `data` found at `offset`. Duplicate and overlapping bytes are
    /// dropped (the first copy wins).
    pub fn insert(&mut self, mut offset: u64, mut data: Bytes) {
        let end = offset + data.len() as u64;
        if end <= self.next || data.is_empty() {
            return;
        }
        if offset < self.next {
            data.advance((self.next - offset) as usize);
            offset = self.next;
        }
        if offset == self.next {
            self.push_ready(data);
            self.drain_pending();
            return;
        }
        // Out of order: trim against the chunk before and the chunks after.
        if let Some((&po, pd)) = self.pending.range(..=offset).next_back() {
            let pend = po + pd.len() as u64;
            if pend >= end {
                return;
            }
            if pend > offset {
                data.advance((pend - offset) as usize);
                offset = pend;
            }
        }
        while let Some((&so, sd)) = self.pending.range(offset..).next() {
            if so >= end {
                break;
            }
            let send = so + sd.len() as u64;
            if send <= end {
                let removed = self.pending.remove(&so).expect("present");
                self.buffered -= removed.len();
            } else {
                data.truncate((so - offset) as usize);
                break;
            }
        }
        if data.is_empty() {
            return;
        }
        self.buffered += data.len();
        self.pending.insert(offset, data);
    }

    fn push_ready(&mut self, data: Bytes) {
        self.next += data.len() as u64;
        self.buffered += data.len();
        self.ready.push_back(data);
    }

    fn drain_pending(&mut self) {
        while let Some(entry) = self.pending.first_entry() {
            let o = *entry.key();
            if o > self.next {
                break;
            }
            let mut d = entry.remove();
            self.buffered -= d.len();
            let end = o + d.len() as u64;
            if end <= self.next {
                continue;
            }
            d.advance((self.next - o) as usize);
            self.push_ready(d);
        }
    }

    /// Takes up to `max` in-order bytes, without copying.
    pub fn read(&mut self, max: usize) -> Option<Bytes> {
        let front = self.ready.front_mut()?;
        let chunk = if front.len() <= max {
            self.ready.pop_front().expect("front exists")
        } else {
            front.split_to(max)
        };
        self.buffered -= chunk.len();
        self.read += chunk.len() as u64;
        Some(chunk)
    }

    /// In-order bytes available to read now.
    pub fn readable(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Offset up to which all bytes have arrived.
    pub fn contiguous_end(&self) -> u64 {
        self.next
    }

    /// Offset of the next byte the application reads.
    pub fn read_offset(&self) -> u64 {
        self.read
    }

    /// Bytes currently held.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Drops everything (stream reset).
    pub fn clear(&mut self) {
        self.ready.clear();
        self.pending.clear();
        self.buffered = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drain(a: &mut Assembler) -> Vec<u8> {
        let mut v = Vec::new();
        while let Some(c) = a.read(7) {
            v.extend_from_slice(&c);
        }
        v
    }

    #[test]
    fn in_order_and_duplicates() {
        let mut a = Assembler::default();
        a.insert(0, Bytes::from_static(b"hello"));
        a.insert(3, Bytes::from_static(b"lo world"));
        a.insert(0, Bytes::from_static(b"he"));
        assert_eq!(drain(&mut a), b"hello world");
        assert_eq!(a.buffered(), 0);
    }

    proptest! {
        /// Any arrival order of overlapping, duplicated pieces yields the original bytes.
        #[test]
        fn any_order_reassembles(len in 1usize..2000, cuts in proptest::collection::vec((0usize..2000, 1usize..300), 1..60), seed in any::<u64>()) {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let data = Bytes::from(data);
            let mut pieces: Vec<(usize, usize)> = cuts.into_iter().map(|(s, l)| (s % len, l)).collect();
            // Make sure every byte is covered at least once.
            let mut off = 0;
            while off < len { pieces.push((off, 97)); off += 97; }
            let mut rng = seed;
            for i in (1..pieces.len()).rev() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                pieces.swap(i, (rng >> 33) as usize % (i + 1));
            }
            let mut a = Assembler::default();
            let mut out = Vec::new();
            for (s, l) in pieces {
                let e = (s + l).min(len);
                a.insert(s as u64, data.slice(s..e));
                out.extend(drain(&mut a));
            }
            prop_assert_eq!(&out[..], &data[..]);
            prop_assert_eq!(a.buffered(), 0);
        }
    }
}
