//! Reassembly of one stream's bytes by offset (after quinn's `assembler.rs`).
//!
//! Data may arrive out of order and more than once (several connections,
//! replays after failover). Large pieces are kept as `Bytes` slices of the
//! decrypted records, so in-order data is handed out without copying; small
//! ones are copied, and in-order small ones are packed into one buffer, so a
//! peer sending tiny frames costs bytes, not an allocation each.
//!
//! What a piece really costs is counted by [`Assembler::held`]: its bytes
//! plus [`PIECE_OVERHEAD`] for its allocation and map entry. A slice of a
//! record can also keep the whole read buffer it came from alive; only the
//! runtime knows those buffers, so it asks for [`Assembler::compact`] when
//! they pin too much (see `Session::compact_recv_buffers`).

use std::collections::{BTreeMap, VecDeque};

use bytes::{Buf, Bytes, BytesMut};

/// What one stored piece costs beyond its bytes: the map or queue slot,
/// the `Bytes` handle and the allocator's header of a copied piece.
pub const PIECE_OVERHEAD: usize = 128;

/// Pieces below this size are copied rather than sliced: a slice keeps its
/// whole read buffer (up to 256 KiB) alive.
pub const SMALL_PIECE: usize = 4096;

/// Size of the buffers small in-order pieces are packed into.
const PACK_BLOCK: usize = 16 << 10;

/// A stored piece: `owned` if it is our own copy (its allocation is about
/// its length), not a slice of a record the runtime's read buffer holds.
#[derive(Debug)]
struct Piece {
    data: Bytes,
    owned: bool,
}

/// Reorders chunks by offset and yields them in order.
#[derive(Debug, Default)]
pub struct Assembler {
    /// First offset not yet in `ready`/`pack` (everything before it arrived).
    next: u64,
    /// Contiguous pieces waiting for the application, in order; `pack`
    /// follows them.
    ready: VecDeque<Piece>,
    /// Small in-order pieces packed together, after `ready`.
    pack: BytesMut,
    /// Out-of-order pieces keyed by offset, non-overlapping.
    pending: BTreeMap<u64, Piece>,
    /// Bytes held in `ready`, `pack` and `pending`.
    buffered: usize,
    /// Bytes of those that are slices of records (not owned).
    shared: usize,
    /// Offset of the next byte the application will read.
    read: u64,
    /// Capacity of the last pack block: blocks grow from small to
    /// `PACK_BLOCK`, so a stream with a few bytes does not hold 16 KiB.
    pack_block: usize,
}

impl Assembler {
    /// Adds `data` found at `offset`. Duplicate and overlapping bytes are
    /// dropped (the first copy wins). Small pieces are copied.
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
            self.push_in_order(data, false);
            self.drain_pending();
            return;
        }
        // Out of order: trim against the piece before and the pieces after.
        if let Some((&po, pd)) = self.pending.range(..=offset).next_back() {
            let pend = po + pd.data.len() as u64;
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
            let send = so + sd.data.len() as u64;
            if send <= end {
                let removed = self.pending.remove(&so).expect("present");
                self.forget(&removed);
            } else {
                data.truncate((so - offset) as usize);
                break;
            }
        }
        if data.is_empty() {
            return;
        }
        let piece = self.own(data, false);
        self.buffered += piece.data.len();
        self.pending.insert(offset, piece);
    }

    /// As `insert` at the end of the in-order data, for bytes the caller
    /// does not keep (they are always copied).
    pub fn push_copy(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if data.len() < SMALL_PIECE {
            self.pack_small(data);
        } else {
            self.push_in_order(Bytes::copy_from_slice(data), true);
        }
    }

    /// A piece to store: small slices are copied so they pin nothing.
    fn own(&mut self, data: Bytes, owned: bool) -> Piece {
        if owned || data.len() < SMALL_PIECE {
            let data = if owned {
                data
            } else {
                Bytes::copy_from_slice(&data)
            };
            return Piece { data, owned: true };
        }
        self.shared += data.len();
        Piece { data, owned: false }
    }

    fn forget(&mut self, p: &Piece) {
        self.buffered -= p.data.len();
        if !p.owned {
            self.shared -= p.data.len();
        }
    }

    fn push_in_order(&mut self, data: Bytes, owned: bool) {
        // Small pieces are packed, also those that waited out of order
        // (frames are parsed from a record's end, so a record of tiny
        // frames arrives backwards).
        if data.len() < SMALL_PIECE {
            self.pack_small(&data);
            return;
        }
        self.flush_pack();
        self.next += data.len() as u64;
        let piece = self.own(data, owned);
        self.buffered += piece.data.len();
        self.ready.push_back(piece);
    }

    /// Appends small in-order bytes to the pack buffer.
    fn pack_small(&mut self, data: &[u8]) {
        if self.pack.capacity() - self.pack.len() < data.len() {
            self.flush_pack();
            self.pack_block = (self.pack_block * 2).clamp(256, PACK_BLOCK);
            self.pack = BytesMut::with_capacity(self.pack_block.max(data.len()));
        }
        self.pack.extend_from_slice(data);
        self.next += data.len() as u64;
        self.buffered += data.len();
    }

    /// Moves the packed bytes to the end of `ready` (same allocation; the
    /// rest of the block stays for the next small pieces).
    fn flush_pack(&mut self) {
        if !self.pack.is_empty() {
            let data = self.pack.split().freeze();
            self.ready.push_back(Piece { data, owned: true });
        }
    }

    fn drain_pending(&mut self) {
        while let Some(entry) = self.pending.first_entry() {
            let o = *entry.key();
            if o > self.next {
                break;
            }
            let mut p = entry.remove();
            self.forget(&p);
            let end = o + p.data.len() as u64;
            if end <= self.next {
                continue;
            }
            p.data.advance((self.next - o) as usize);
            self.push_in_order(p.data, p.owned);
        }
    }

    /// Takes up to `max` in-order bytes, without copying.
    pub fn read(&mut self, max: usize) -> Option<Bytes> {
        if self.ready.is_empty() {
            self.flush_pack();
        }
        let front = self.ready.front_mut()?;
        let (chunk, owned) = if front.data.len() <= max {
            let p = self.ready.pop_front().expect("front exists");
            (p.data, p.owned)
        } else {
            (front.data.split_to(max), front.owned)
        };
        self.buffered -= chunk.len();
        if !owned {
            self.shared -= chunk.len();
        }
        self.read += chunk.len() as u64;
        if self.buffered == 0 && self.pack.capacity() > 0 {
            // Nothing left: do not keep a pack block per idle stream.
            self.pack = BytesMut::new();
            self.pack_block = 0;
        }
        Some(chunk)
    }

    /// In-order bytes available to read now.
    pub fn readable(&self) -> bool {
        !self.ready.is_empty() || !self.pack.is_empty()
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

    /// Memory the stored pieces cost: their bytes, [`PIECE_OVERHEAD`] per
    /// piece, and the unused rest of the pack block.
    pub fn held(&self) -> usize {
        let pieces = self.ready.len() + self.pending.len() + usize::from(!self.pack.is_empty());
        self.buffered + pieces * PIECE_OVERHEAD + (self.pack.capacity() - self.pack.len())
    }

    /// Bytes held as slices of records (see [`Assembler::compact`]).
    pub fn shared(&self) -> usize {
        self.shared
    }

    /// Copies every piece that is a slice of a record into memory of our
    /// own, merging the in-order ones, so the read buffers they kept alive
    /// can be freed. Costs a copy of the held bytes; the runtime calls it
    /// only when retained read buffers exceed their budget.
    pub fn compact(&mut self) {
        if self.shared == 0 {
            return;
        }
        if self.ready.iter().any(|p| !p.owned) {
            let len: usize = self.ready.iter().map(|p| p.data.len()).sum();
            let mut merged = BytesMut::with_capacity(len);
            for p in self.ready.drain(..) {
                merged.extend_from_slice(&p.data);
            }
            self.ready.push_back(Piece {
                data: merged.freeze(),
                owned: true,
            });
        }
        for p in self.pending.values_mut().filter(|p| !p.owned) {
            p.data = Bytes::copy_from_slice(&p.data);
            p.owned = true;
        }
        self.shared = 0;
    }

    /// Drops everything (stream reset).
    pub fn clear(&mut self) {
        self.ready.clear();
        self.pending.clear();
        self.pack = BytesMut::new();
        self.pack_block = 0;
        self.buffered = 0;
        self.shared = 0;
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

    #[test]
    fn tiny_in_order_pieces_are_packed() {
        let mut a = Assembler::default();
        for i in 0..10_000u64 {
            a.insert(i, Bytes::copy_from_slice(&[i as u8]));
        }
        // 10,000 one-byte pieces cost their bytes, not 10,000 allocations.
        assert!(a.held() < 10_000 + 2 * PACK_BLOCK, "{}", a.held());
        let got = drain(&mut a);
        assert_eq!(got.len(), 10_000);
        assert!(got.iter().enumerate().all(|(i, b)| *b == i as u8));
        assert_eq!(a.held(), 0);
    }

    #[test]
    fn gaps_are_charged_per_piece_and_compaction_copies_slices() {
        let mut a = Assembler::default();
        for i in 1..100u64 {
            a.insert(i * 2, Bytes::from_static(b"x"));
        }
        assert_eq!(a.held(), 99 * (1 + PIECE_OVERHEAD));
        let big = Bytes::from(vec![7u8; 3 * SMALL_PIECE]);
        a.insert(1000, big.clone());
        assert_eq!(a.shared(), big.len());
        a.compact();
        assert_eq!(a.shared(), 0);
        // Fills the gaps, overlapping the first 1,000 bytes of `big`.
        a.insert(0, Bytes::from(vec![1u8; 2000]));
        assert_eq!(a.contiguous_end(), 1000 + big.len() as u64);
        let got = drain(&mut a);
        assert_eq!(got.len(), 1000 + big.len());
        assert!(got[..2000].iter().all(|b| *b == 1) && got[2000..].iter().all(|b| *b == 7));
    }

    #[test]
    fn push_copy_appends_in_order() {
        let mut a = Assembler::default();
        a.push_copy(b"ab");
        a.push_copy(&[3u8; SMALL_PIECE]);
        a.push_copy(b"c");
        assert_eq!(a.shared(), 0);
        let got = drain(&mut a);
        assert_eq!(&got[..2], b"ab");
        assert_eq!(got.len(), 3 + SMALL_PIECE);
        assert_eq!(got[got.len() - 1], b'c');
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
                if rng & 1 == 0 {
                    a.compact();
                    prop_assert_eq!(a.shared(), 0);
                }
                rng >>= 1;
                out.extend(drain(&mut a));
            }
            prop_assert_eq!(&out[..], &data[..]);
            prop_assert_eq!(a.buffered(), 0);
        }
    }
}
