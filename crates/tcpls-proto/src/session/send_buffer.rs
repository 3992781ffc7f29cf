//! A stream's outgoing bytes between the application's write and the
//! record that carries them.
//!
//! A queue of fixed-size blocks rather than one growing `BytesMut`: bytes
//! never move once written. With one contiguous buffer, every append that
//! reached its end shifted (or, with slices kept for acknowledgement,
//! reallocated and copied) everything still queued, up to a megabyte: a
//! second copy of most bytes on the hot path.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

/// Block size: large enough that few records straddle two blocks (about 1
/// in 16; such a record's bytes are copied rather than sealed straight
/// from the block: 3 % more instructions per GiB with 64 KiB blocks). A
/// barely used stream still holds little: memory is only touched where
/// bytes are written.
const BLOCK: usize = 256 << 10;

/// Most blocks a session keeps for reuse (4 MiB).
pub(crate) const POOL_MAX: usize = 16;

/// Blocks whose bytes all went into records, kept for reuse by any stream
/// of the session. With acknowledgements a block is still referenced by
/// the slices kept for replay; it becomes reusable once they are
/// acknowledged. Reusing blocks keeps the sender's memory warm in cache and
/// spares the allocator (a fresh block costs page faults and cold copies).
#[derive(Debug, Default)]
pub(crate) struct BlockPool {
    blocks: VecDeque<BytesMut>,
}

impl BlockPool {
    /// A block to fill: a retired one nothing points into any more, or a new
    /// one. Only the oldest few are tried: acknowledgements free them in
    /// order.
    fn take(&mut self) -> BytesMut {
        let reusable = self
            .blocks
            .iter_mut()
            .take(4)
            .position(|b| b.try_reclaim(BLOCK));
        match reusable {
            Some(i) => self.blocks.remove(i).expect("index from position"),
            None => BytesMut::with_capacity(BLOCK),
        }
    }

    fn put(&mut self, mut block: BytesMut) {
        if self.blocks.len() < POOL_MAX {
            block.clear();
            self.blocks.push_back(block);
        }
    }

    /// Gives the memory back (an idle session).
    pub fn release(&mut self) {
        self.blocks = VecDeque::new();
    }

    /// Memory held (capacity of the pooled blocks).
    pub fn bytes(&self) -> usize {
        self.blocks.len() * BLOCK
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.blocks.len()
    }
}

/// Chunks smaller than this are copied into blocks by `push_shared`: many
/// tiny chunks would cost a queue entry each and small records.
const SHARED_MIN: usize = 4 << 10;

/// A piece of the queue: one of our blocks, or bytes the application
/// handed over (`Session::write_chunk`), queued without a copy.
#[derive(Debug)]
enum Chunk {
    Block(BytesMut),
    Shared(Bytes),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Block(b) => b,
            Chunk::Shared(b) => b,
        }
    }
}

/// Queued bytes, oldest first.
#[derive(Debug, Default)]
pub(crate) struct SendBuffer {
    chunks: VecDeque<Chunk>,
    len: usize,
}

impl SendBuffer {
    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops everything queued (and the memory).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Appends a copy of `data`.
    pub fn push(&mut self, mut data: &[u8], pool: &mut BlockPool) {
        while !data.is_empty() {
            let room = match self.chunks.back() {
                Some(Chunk::Block(b)) => b.capacity() - b.len(),
                _ => 0,
            };
            if room == 0 {
                self.chunks.push_back(Chunk::Block(pool.take()));
            }
            let Some(Chunk::Block(b)) = self.chunks.back_mut() else {
                unreachable!("a block with room was just ensured");
            };
            let k = data.len().min(b.capacity() - b.len());
            b.extend_from_slice(&data[..k]);
            data = &data[k..];
            self.len += k;
        }
    }

    /// Appends `data` without copying it (small chunks are copied).
    pub fn push_shared(&mut self, data: Bytes, pool: &mut BlockPool) {
        if data.len() < SHARED_MIN {
            self.push(&data, pool);
        } else {
            // An emptied block can only be last; it must not end up in
            // front of bytes (`front()` would be empty with bytes queued).
            if let Some(Chunk::Block(b)) = self.chunks.back() {
                if b.is_empty() {
                    if let Some(Chunk::Block(b)) = self.chunks.pop_back() {
                        pool.put(b);
                    }
                }
            }
            self.len += data.len();
            self.chunks.push_back(Chunk::Shared(data));
        }
    }

    /// How many of the first `max` queued bytes fit in `room` bytes when
    /// each contiguous piece of them takes `header` more bytes.
    pub fn fit(&self, max: usize, mut room: usize, header: usize) -> usize {
        let mut n = 0;
        for c in &self.chunks {
            if n == max || room <= header {
                break;
            }
            let k = c.bytes().len().min(max - n).min(room - header);
            n += k;
            room -= k + header;
        }
        n
    }

    /// The oldest queued bytes that are contiguous in memory.
    pub fn front(&self) -> &[u8] {
        self.chunks.front().map_or(&[], Chunk::bytes)
    }

    /// Drops the first `n` bytes; `n` is at most `front().len()`.
    pub fn advance(&mut self, n: usize, pool: &mut BlockPool) {
        let n = n.min(self.front().len());
        match self.chunks.front_mut() {
            Some(Chunk::Block(b)) => b.advance(n),
            Some(Chunk::Shared(b)) => b.advance(n),
            None => return,
        }
        self.len -= n;
        self.pop_spent(pool);
    }

    /// Removes up to `n` bytes from the front without copying; fewer when
    /// the first chunk ends sooner (call again for the rest).
    pub fn split_front(&mut self, n: usize, pool: &mut BlockPool) -> Bytes {
        let k = n.min(self.front().len());
        let data = match self.chunks.front_mut() {
            Some(Chunk::Block(b)) => b.split_to(k).freeze(),
            Some(Chunk::Shared(b)) => b.split_to(k),
            None => return Bytes::new(),
        };
        self.len -= k;
        self.pop_spent(pool);
        data
    }

    /// Drops the first chunk once it is read: a shared one at once, a
    /// block (to the pool) when it can take no more bytes.
    fn pop_spent(&mut self, pool: &mut BlockPool) {
        let last = self.chunks.len() == 1;
        match self.chunks.front() {
            Some(Chunk::Shared(b)) if b.is_empty() => {
                self.chunks.pop_front();
            }
            Some(Chunk::Block(b)) if b.is_empty() && (b.capacity() == 0 || !last) => {
                if let Some(Chunk::Block(b)) = self.chunks.pop_front() {
                    pool.put(b);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 253) as u8).collect()
    }

    #[test]
    fn slices_out_in_order_across_blocks() {
        let data = pattern(3 * BLOCK + 123);
        let (mut q, mut pool) = (SendBuffer::default(), BlockPool::default());
        for chunk in data.chunks(10_000) {
            q.push(chunk, &mut pool);
        }
        assert_eq!(q.len(), data.len());
        let mut out = Vec::new();
        while !q.is_empty() {
            out.extend_from_slice(&q.split_front(16_000, &mut pool));
        }
        assert_eq!(out, data);
        // The three full blocks went to the pool, and are reused.
        assert_eq!(pool.len(), 3);
        // The last block's free room first, then two pooled blocks.
        q.push(&data[..2 * BLOCK], &mut pool);
        assert_eq!(pool.len(), 1);
        pool.release();
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn slices_never_span_blocks_and_keep_their_bytes() {
        let data = pattern(2 * BLOCK + 5);
        let (mut q, mut pool) = (SendBuffer::default(), BlockPool::default());
        q.push(&data, &mut pool);
        let mut slices = Vec::new();
        while !q.is_empty() {
            let s = q.split_front(16_000, &mut pool);
            assert!(!s.is_empty() && s.len() <= 16_000);
            slices.push(s);
            // Appending after slicing must not disturb handed-out bytes.
            if slices.len() == 3 {
                q.push(&data[..100], &mut pool);
            }
        }
        // Retired blocks are not reused while slices point into them...
        q.push(&pattern(3 * BLOCK), &mut pool);
        let joined: Vec<u8> = slices.iter().flat_map(|s| s.iter().copied()).collect();
        let mut want = data.clone();
        want.extend_from_slice(&data[..100]);
        assert_eq!(joined, want);
        // ...and are once the slices are gone (acknowledged).
        let retired = pool.len();
        assert!(retired > 0);
        drop(slices);
        q.push(&pattern(BLOCK), &mut pool);
        assert_eq!(pool.len(), retired - 1);
    }

    #[test]
    fn front_and_advance_track_len() {
        let (mut q, mut pool) = (SendBuffer::default(), BlockPool::default());
        q.push(&pattern(BLOCK + 10), &mut pool);
        assert_eq!(q.front().len(), BLOCK);
        q.advance(BLOCK, &mut pool);
        assert_eq!(q.front().len(), 10);
        assert_eq!(q.len(), 10);
        q.advance(10, &mut pool);
        assert!(q.is_empty());
        q.clear();
        assert_eq!(q.front(), &[] as &[u8]);
    }

    #[test]
    fn fit_leaves_room_for_a_header_per_piece() {
        let (mut q, mut pool) = (SendBuffer::default(), BlockPool::default());
        q.push(&pattern(1000), &mut pool);
        q.push_shared(Bytes::from(pattern(5000)), &mut pool);
        q.push(&pattern(20_000), &mut pool);
        // Three pieces: 1000 + 5000 + the rest, 15 header bytes each.
        assert_eq!(q.fit(16_000, 16_000, 15), 16_000 - 3 * 15);
        assert_eq!(q.fit(3000, 16_000, 15), 3000);
        assert_eq!(q.fit(16_000, 1010, 15), 995);
        assert_eq!(q.fit(16_000, 1015, 15), 1000);
        assert_eq!(q.fit(16_000, 10, 15), 0);
    }

    #[test]
    fn shared_chunks_interleave_with_copies_in_order() {
        let (mut q, mut pool) = (SendBuffer::default(), BlockPool::default());
        let big = Bytes::from(pattern(100_000));
        q.push(&pattern(10), &mut pool);
        q.push_shared(big.clone(), &mut pool);
        q.push_shared(Bytes::from_static(b"tiny"), &mut pool); // copied
        q.push(&pattern(7), &mut pool);
        assert_eq!(q.len(), 10 + 100_000 + 4 + 7);
        // The shared chunk comes out as slices of the caller's own memory.
        assert_eq!(q.split_front(1000, &mut pool).len(), 10);
        let s = q.split_front(16_000, &mut pool);
        assert_eq!(s.as_ptr(), big.as_ptr());
        let mut out = s.to_vec();
        while !q.is_empty() {
            let k = q.front().len().min(5000);
            out.extend_from_slice(&q.front()[..k]);
            q.advance(k, &mut pool);
        }
        let mut want = big.to_vec();
        want.extend_from_slice(b"tiny");
        want.extend_from_slice(&pattern(7));
        assert_eq!(out, want);
        // A block emptied by reading, then a shared chunk: the front is
        // the shared chunk's bytes, never an empty block.
        q.push(&pattern(100), &mut pool);
        q.advance(100, &mut pool);
        q.push_shared(big.clone(), &mut pool);
        assert_eq!(q.front().len(), big.len());
    }
}
