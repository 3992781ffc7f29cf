//! The session's streams: the stream table, stream ids and limits, the
//! session-wide credits, the send rotation (which stream's bytes go into
//! the next record), and the stream API the application calls.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use super::assembler::Assembler;
use super::flow::{RecvCredit, SendCredit};
use super::paths::SendPolicy;
use super::pending::Pending;
use super::record_builder::RecordBuilder;
use super::send_buffer::{BlockPool, SendBuffer};
use super::stream::Stream;
use super::{Event, ReadOutcome, Session, State};
use crate::config::TransportConfig;
use crate::error::{CallError, Error, ErrorCode};
use crate::ids::{ConnectionId, StreamId};
use crate::wire::frame::STREAM_HEADER_LEN;

/// Bytes a stream may send in consecutive records before the next stream
/// with data gets its turn (round-robin in bursts rather than per record).
const STREAM_BURST: usize = 256 << 10;

/// Reassembly memory a session may hold beyond twice its window: room for
/// per-piece overhead with a tiny window.
const HELD_SLACK: usize = 1 << 20;

/// The session-wide send budget: unsent bytes queued on all streams.
#[derive(Debug, Default)]
pub(crate) struct SendBudget {
    /// Bytes queued, not yet put in records.
    pub queued: usize,
    /// A write found the budget full: every blocked writer is woken at
    /// once when the queue drains to half of it (one wake-up per stream
    /// per half budget, not one per record).
    pub blocked: bool,
}

impl SendBudget {
    /// `n` queued bytes left the send buffers (sent or dropped). True when
    /// the writers blocked on the budget should be woken now.
    #[must_use]
    pub fn dequeued(&mut self, n: usize, limit: usize) -> bool {
        self.queued -= n;
        if self.blocked && self.queued <= limit / 2 {
            self.blocked = false;
            return true;
        }
        false
    }
}

/// Every stream of a session and what they share.
#[derive(Debug)]
pub(crate) struct Streams {
    pub map: HashMap<StreamId, Stream>,
    /// Streams with something to send, in round-robin order.
    pub send_queue: VecDeque<StreamId>,
    /// Bytes the stream at the front of `send_queue` sent in its turn.
    burst: usize,
    /// Send blocks for reuse by every stream.
    pub block_pool: BlockPool,
    /// Unsent bytes of all streams, against `session_send_buffer`.
    pub budget: SendBudget,
    /// Peer streams not yet taken by the application.
    pub accept_queue: VecDeque<StreamId>,
    /// Index of the next stream this side opens, and the peer's limit.
    pub next_local: u32,
    pub local_limit: u32,
    /// Index of the next stream the peer opens, and our limit for it.
    pub next_peer: u32,
    pub peer_limit: u32,
    /// The limit the peer was last told (MAX_STREAMS, or the handshake's).
    pub peer_limit_sent: u32,
    pub send_credit: SendCredit,
    pub recv_credit: RecvCredit,
    /// Highest number of received-but-unread bytes held at once (the
    /// reassembly memory the flow-control window allowed).
    pub peak_buffered: u64,
    /// What every stream's reassembly holds ([`Assembler::held`]).
    pub recv_held: usize,
}

impl Streams {
    /// Stream bytes waiting to be sent that the peer's session credit
    /// allows, for the scheduler; unbounded while a writer is blocked on a
    /// full send buffer (a bulk sender has more than its buffer holds, and
    /// a slow path is worth using), except that credit still bounds it.
    pub fn waiting_to_send(&self) -> u64 {
        let credit = self.send_credit.available();
        let bulk = self.budget.blocked
            || self
                .send_queue
                .iter()
                .any(|id| self.map.get(id).is_some_and(|s| s.send.blocked));
        if bulk {
            credit
        } else {
            (self.budget.queued as u64).min(credit)
        }
    }

    /// True while some stream has not seen the end (FIN or reset) of what
    /// the peer sends on it: this side waits for data.
    pub fn awaiting_data(&self) -> bool {
        self.map
            .values()
            .any(|s| s.recv.final_size.is_none() && s.recv.reset.is_none())
    }

    pub fn new(cfg: &TransportConfig) -> Self {
        Self {
            map: HashMap::new(),
            send_queue: VecDeque::new(),
            burst: 0,
            block_pool: BlockPool::default(),
            budget: SendBudget::default(),
            accept_queue: VecDeque::new(),
            next_local: 0,
            local_limit: 0,
            next_peer: 0,
            peer_limit: cfg.max_streams,
            peer_limit_sent: cfg.max_streams,
            send_credit: SendCredit::new(0),
            recv_credit: RecvCredit::new(cfg.session_window),
            peak_buffered: 0,
            recv_held: 0,
        }
    }

    /// An open stream, or a usage error.
    pub fn get_mut(&mut self, id: StreamId) -> Result<&mut Stream, CallError> {
        Self::lookup(&mut self.map, id)
    }

    /// Runs `f` on a stream's reassembly, keeping `held` (the session's
    /// total of [`Assembler::held`]) current.
    pub fn with_asm<R>(
        held: &mut usize,
        asm: &mut Assembler,
        f: impl FnOnce(&mut Assembler) -> R,
    ) -> R {
        let before = asm.held();
        let r = f(asm);
        *held = *held - before + asm.held();
        r
    }

    /// [`Self::get_mut`] on the table alone, for callers that also use
    /// the send queue or the block pool while holding the stream.
    fn lookup(map: &mut HashMap<StreamId, Stream>, id: StreamId) -> Result<&mut Stream, CallError> {
        map.get_mut(&id)
            .ok_or(CallError::Usage("unknown or closed stream"))
    }

    /// Puts the stream on the send rotation unless it is on it.
    pub fn enqueue(queue: &mut VecDeque<StreamId>, id: StreamId, s: &mut Stream) {
        if !s.in_send_queue {
            s.in_send_queue = true;
            queue.push_back(id);
        }
    }

    /// Puts every stream with unsent bytes on the rotation (credit or a
    /// connection became available).
    pub fn requeue_all(&mut self) {
        for (id, s) in self.map.iter_mut() {
            if !s.send.unsent.is_empty() {
                Self::enqueue(&mut self.send_queue, *id, s);
            }
        }
    }

    /// True if some queued stream could put something in a record now.
    pub fn data_sendable(&self) -> bool {
        let avail = self.send_credit.available();
        self.send_queue
            .iter()
            .any(|id| self.map.get(id).is_some_and(|s| s.send.wants_send(avail)))
    }

    /// Session credit handed back to the peer (MAX_DATA when due).
    pub fn consume_session_credit(&mut self, n: u64, pending: &mut Pending) {
        if self.recv_credit.on_consume(n).is_some() {
            pending.max_data = true;
            pending.copy_max_data = true;
        }
    }

    /// Tells a blocked writer its stream takes data again. Only at half
    /// empty: it then refills a large part at once, instead of one record's
    /// worth per wake-up. While the session's send budget is exhausted
    /// nobody is: all are woken together once it drains to half.
    pub fn wake_writer(
        events: &mut VecDeque<Event>,
        limit: usize,
        budget_blocked: bool,
        id: StreamId,
        s: &mut Stream,
    ) {
        if s.send.blocked && !budget_blocked && s.send.unsent.len() <= limit / 2 {
            s.send.blocked = false;
            events.push_back(Event::StreamWritable(id));
        }
    }
}

impl Session {
    /// Opens a stream. Fails when the peer's stream limit is reached (wait
    /// for [`Event::StreamsAvailable`]) or, on a plain TLS session, after the
    /// first stream.
    pub fn open_stream(&mut self) -> Result<StreamId, CallError> {
        self.check_open()?;
        if self.is_handshaking() && !self.early_open() {
            return Err(CallError::Usage("handshake not complete"));
        }
        let st = &mut self.streams;
        if st.next_local >= st.local_limit {
            return Err(if matches!(self.state, State::Fallback(_)) {
                CallError::Usage("plain TLS peer: only one stream")
            } else {
                CallError::Usage("peer's stream limit reached")
            });
        }
        let id = StreamId::new(self.side, st.next_local);
        st.next_local += 1;
        let credit = self.peer_params.map_or(0, |p| p.initial_max_stream_data);
        st.map
            .entry(id)
            .or_insert_with(|| Stream::new(credit, self.cfg.stream_window, self.paths.primary));
        self.arm_silence_probe();
        Ok(id)
    }

    /// True when [`Self::open_stream`] would succeed now.
    pub fn can_open_stream(&self) -> bool {
        self.close.error.is_none()
            && (!self.is_handshaking() || self.early_open())
            && self.streams.next_local < self.streams.local_limit
    }

    /// Takes the next stream the peer opened.
    pub fn accept_stream(&mut self) -> Option<StreamId> {
        self.streams.accept_queue.pop_front()
    }

    /// Frees memory kept only for speed: the pool of send blocks (up to
    /// 4 MiB after a bulk transfer). The runtime calls this when the session
    /// has been quiet for a while.
    pub fn release_buffers(&mut self) {
        self.streams.block_pool.release();
    }

    /// Queues bytes on a stream. Returns how many were taken; 0 means the
    /// send buffer is full (wait for [`Event::StreamWritable`]).
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, CallError> {
        self.queue_send(id, data.len(), |q, pool, n| q.push(&data[..n], pool))
    }

    /// Queues a prefix of `data` on a stream without copying it (as much
    /// as the send buffer has room for), and returns its length; 0 when
    /// the buffer is full. The bytes are encrypted straight from `data`'s
    /// memory when their record is sealed, and with acknowledgements kept
    /// (as slices) until acknowledged. Chunks under 4 KiB are copied.
    ///
    /// ```
    /// # use tcpls_proto::{Session, StreamId};
    /// # fn send(s: &mut Session, id: StreamId, mut body: bytes::Bytes) -> Result<(), tcpls_proto::CallError> {
    /// let n = s.write_chunk(id, body.clone())?;
    /// let rest = body.split_off(n); // queue `rest` once there is room
    /// # Ok(()) }
    /// ```
    pub fn write_chunk(&mut self, id: StreamId, data: Bytes) -> Result<usize, CallError> {
        self.queue_send(id, data.len(), |q, pool, n| {
            q.push_shared(data.slice(..n), pool)
        })
    }

    /// Queues up to `len` bytes on a stream's send buffer with `put` (given
    /// how many fit in the stream's buffer and the session's budget);
    /// returns how many.
    fn queue_send(
        &mut self,
        id: StreamId,
        len: usize,
        put: impl FnOnce(&mut SendBuffer, &mut BlockPool, usize),
    ) -> Result<usize, CallError> {
        self.check_open()?;
        let limit = self.cfg.send_buffer;
        let budget = self
            .cfg
            .session_send_buffer
            .saturating_sub(self.streams.budget.queued);
        let st = &mut self.streams;
        let s = Streams::lookup(&mut st.map, id)?;
        if s.send.fin_queued || s.send.reset.is_some() {
            return Err(CallError::Usage("stream already finished or reset"));
        }
        let room = limit.saturating_sub(s.send.unsent.len());
        let n = len.min(room).min(budget);
        if n == 0 {
            if len > 0 {
                s.send.blocked = true;
                // The session's budget, not the stream's own buffer, is
                // what is full: this writer waits for the session to drain.
                if budget == 0 && room > 0 {
                    st.budget.blocked = true;
                }
            }
            return Ok(0);
        }
        put(&mut s.send.unsent, &mut st.block_pool, n);
        st.budget.queued += n;
        Streams::enqueue(&mut st.send_queue, id, s);
        Ok(n)
    }

    /// Ends the sending direction of a stream once queued data is sent.
    pub fn finish(&mut self, id: StreamId) -> Result<(), CallError> {
        self.check_open()?;
        let st = &mut self.streams;
        let s = Streams::lookup(&mut st.map, id)?;
        if s.send.reset.is_some() {
            return Err(CallError::Usage("stream was reset"));
        }
        s.send.fin_queued = true;
        Streams::enqueue(&mut st.send_queue, id, s);
        Ok(())
    }

    /// Abandons the sending direction: queued data is dropped and the peer
    /// gets RESET_STREAM with `code`.
    pub fn reset(&mut self, id: StreamId, code: u32) -> Result<(), CallError> {
        self.check_open()?;
        let fallback = self.is_fallback();
        let st = &mut self.streams;
        let s = Streams::lookup(&mut st.map, id)?;
        if s.send.is_done() {
            return Ok(());
        }
        let dropped = s.send.unsent.len();
        s.send.unsent.clear();
        // Its writer learns of the reset now, whatever the session budget.
        Streams::wake_writer(&mut self.events, self.cfg.send_buffer, false, id, s);
        if !fallback {
            s.send.reset = Some(code);
            Streams::enqueue(&mut st.send_queue, id, s);
        }
        if st.budget.dequeued(dropped, self.cfg.session_send_buffer) {
            self.wake_writers();
        }
        if fallback {
            // Plain TLS has no stream reset: the closest is ending the session.
            self.close(ErrorCode::app(code), "stream reset");
        }
        Ok(())
    }

    /// Stops reading a stream: buffered and future data is discarded (and
    /// credited back to the peer) so an unread stream cannot stall others.
    pub fn stop_reading(&mut self, id: StreamId) -> Result<(), CallError> {
        self.check_open()?;
        let st = &mut self.streams;
        let s = Streams::lookup(&mut st.map, id)?;
        if s.recv.done {
            return Ok(());
        }
        s.recv.done = true;
        // Everything received so far, gaps included, was counted against
        // the session window: give all of it back. (Plain TLS stream 0 has
        // no credit: `received` stays 0 there.)
        let dropped = s
            .recv
            .credit
            .received()
            .saturating_sub(s.recv.asm.read_offset());
        Streams::with_asm(&mut st.recv_held, &mut s.recv.asm, Assembler::clear);
        st.consume_session_credit(dropped, &mut self.pending);
        self.maybe_remove(id);
        Ok(())
    }

    /// True once everything written on the stream, and its FIN or reset,
    /// has been put into records (or the stream is gone).
    pub fn is_send_done(&self, id: StreamId) -> bool {
        self.streams.map.get(&id).is_none_or(|s| s.send.is_done())
    }

    /// Bytes queued on the stream and not yet sent.
    pub fn unsent(&self, id: StreamId) -> usize {
        self.streams.map.get(&id).map_or(0, |s| s.send.unsent.len())
    }

    /// Reads up to `max` in-order bytes of a stream without copying them.
    pub fn read(&mut self, id: StreamId, max: usize) -> Result<ReadOutcome, CallError> {
        // Also after a plain TLS session ended (state `Done`): its stream
        // has no TCPLS credit to give back.
        let fallback = !self.is_tcpls();
        let Some(s) = self.streams.map.get_mut(&id) else {
            self.check_open()?;
            return Err(CallError::Usage("unknown or closed stream"));
        };
        if let Some(code) = s.recv.reset {
            s.recv.done = true;
            self.maybe_remove(id);
            return Ok(ReadOutcome::Reset(code));
        }
        let chunk = Streams::with_asm(&mut self.streams.recv_held, &mut s.recv.asm, |a| {
            a.read(max)
        });
        if let Some(chunk) = chunk {
            if !fallback {
                let n = chunk.len() as u64;
                if s.recv.credit.on_consume(n).is_some() {
                    self.pending.max_stream_data(id, s);
                }
                self.streams.consume_session_credit(n, &mut self.pending);
            }
            return Ok(ReadOutcome::Data(chunk));
        }
        if s.recv.at_fin() {
            s.recv.done = true;
            self.maybe_remove(id);
            return Ok(ReadOutcome::Fin);
        }
        self.check_open()?;
        Ok(ReadOutcome::Blocked)
    }

    /// Number of streams holding state.
    pub fn stream_count(&self) -> usize {
        self.streams.map.len()
    }

    /// The most received-but-unread stream bytes held at once: the
    /// reassembly memory, never more than the session window.
    pub fn peak_buffered(&self) -> u64 {
        self.streams.peak_buffered
    }

    /// Memory the received-but-unread stream data holds: its bytes plus
    /// what each stored piece costs. A peer that fragments its data so
    /// this exceeds [`Session::recv_memory_limit`] is refused with a
    /// flow-control error.
    pub fn recv_held(&self) -> usize {
        self.streams.recv_held
    }

    /// What received data may cost a session: twice `session_window` plus
    /// 1 MiB. [`Session::recv_held`] stays below it, and a runtime keeps
    /// the read buffers that received data pins below it too (with
    /// [`Session::compact_recv_buffers`]).
    pub fn recv_memory_limit(&self) -> usize {
        (2 * self.cfg.session_window as usize).saturating_add(HELD_SLACK)
    }

    /// Copies received data that is held as slices of the caller's read
    /// buffers into memory of the session's own, so those buffers can be
    /// freed. The runtime calls it when the read buffers that received
    /// data keeps alive exceed its budget; it costs a copy of that data.
    pub fn compact_recv_buffers(&mut self) {
        let st = &mut self.streams;
        for s in st.map.values_mut().filter(|s| s.recv.asm.shared() > 0) {
            Streams::with_asm(&mut st.recv_held, &mut s.recv.asm, Assembler::compact);
        }
    }

    /// Bytes the sending side holds now: queued on streams, sent and kept
    /// for acknowledgement, and the pool of reusable send blocks. Bounded by
    /// `session_send_buffer` (and `send_buffer` per stream), twice
    /// `session_window`, and 4 MiB.
    pub fn send_buffered(&self) -> u64 {
        let st = &self.streams;
        let queued: usize = st.map.values().map(|s| s.send.unsent.len()).sum();
        debug_assert_eq!(queued, st.budget.queued, "send budget out of step");
        let unacked = super::recovery::Recovery::unacked_total(&self.paths.conns);
        queued as u64 + unacked + st.block_pool.bytes() as u64
    }

    /// Drops a stream's state once both directions are finished; a peer
    /// stream's slot then goes back to the peer (MAX_STREAMS).
    pub(crate) fn maybe_remove(&mut self, id: StreamId) {
        let st = &mut self.streams;
        let Some(s) = st.map.get(&id) else {
            return;
        };
        if !s.is_closed() || s.in_send_queue {
            return;
        }
        st.map.remove(&id);
        if id.initiator() != self.side && matches!(self.state, State::Tcpls(_)) {
            st.peer_limit += 1;
            self.maybe_grant_streams();
        }
    }

    /// Queues a MAX_STREAMS once an eighth of `max_streams` came back
    /// since the last one (as quinn does), not for every stream that ends:
    /// a short session (open, answer, close) would otherwise spend a record
    /// on it. The price: a peer may be held back at 7/8 of `max_streams`
    /// open streams until more end.
    fn maybe_grant_streams(&mut self) {
        let st = &self.streams;
        let batch = (self.cfg.max_streams / 8).max(1);
        if st.peer_limit - st.peer_limit_sent >= batch {
            self.pending.max_streams = true;
        }
    }

    /// Wakes every writer whose stream has room again.
    pub(crate) fn wake_writers(&mut self) {
        let st = &mut self.streams;
        for (id, s) in st.map.iter_mut() {
            Streams::wake_writer(
                &mut self.events,
                self.cfg.send_buffer,
                st.budget.blocked,
                *id,
                s,
            );
        }
    }

    // ------------------------------------------------------- stream frames

    fn check_local_exists(&self, id: StreamId) -> Result<(), Error> {
        if id.initiator() == self.side && id.index() >= self.streams.next_local {
            return Err(Error::Protocol("frame for a stream never opened"));
        }
        Ok(())
    }

    /// Checks a stream id from a peer's frame, opening peer streams on first
    /// sight. `false`: the stream is already closed (a late frame).
    pub(crate) fn ensure_stream(&mut self, id: StreamId) -> Result<bool, Error> {
        if id.initiator() == self.side {
            self.check_local_exists(id)?;
        } else {
            let st = &mut self.streams;
            if id.index() >= st.peer_limit {
                return Err(Error::StreamLimit);
            }
            let send_credit = self.peer_params.map_or(0, |p| p.initial_max_stream_data);
            while st.next_peer <= id.index() {
                let sid = StreamId::new(self.side.peer(), st.next_peer);
                let s = Stream::new(send_credit, self.cfg.stream_window, self.paths.primary);
                st.map.insert(sid, s);
                st.accept_queue.push_back(sid);
                self.events.push_back(Event::StreamOpened(sid));
                st.next_peer += 1;
            }
        }
        Ok(self.streams.map.contains_key(&id))
    }

    pub(crate) fn on_stream_frame(
        &mut self,
        id: StreamId,
        offset: u64,
        fin: bool,
        data: Bytes,
    ) -> Result<(), Error> {
        if !self.ensure_stream(id)? {
            return Ok(());
        }
        let st = &mut self.streams;
        let s = st.map.get_mut(&id).expect("ensured");
        let end = offset + data.len() as u64;
        if let Some(fs) = s.recv.final_size {
            if end > fs || (fin && end != fs) {
                return Err(Error::Protocol("stream data beyond its final size"));
            }
        } else if fin {
            if end < s.recv.credit.received() {
                return Err(Error::Protocol("FIN below data already received"));
            }
            s.recv.final_size = Some(end);
        }
        let grown = s.recv.credit.on_receive(end, "stream window exceeded")?;
        st.recv_credit.on_grow(grown, "session window exceeded")?;
        st.peak_buffered = st.peak_buffered.max(st.recv_credit.outstanding());
        if s.recv.reset.is_some() || s.recv.done {
            // Reset or abandoned by the application: count it, drop it.
            // Only bytes beyond what was already counted (a reset credited
            // everything up to its final size).
            st.consume_session_credit(grown, &mut self.pending);
            return Ok(());
        }
        // The window bounds the bytes; what holding them costs (a piece per
        // tiny frame) is bounded here, so a peer cannot make that huge.
        Streams::with_asm(&mut st.recv_held, &mut s.recv.asm, |a| {
            a.insert(offset, data)
        });
        let readable = s.recv.asm.readable() || s.recv.at_fin();
        if self.streams.recv_held > self.recv_memory_limit() {
            return Err(Error::FlowControl("received data too fragmented"));
        }
        // A run of tiny frames would queue an event each: one says it all.
        if readable && !matches!(self.events.back(), Some(Event::StreamReadable(x)) if *x == id) {
            self.events.push_back(Event::StreamReadable(id));
        }
        Ok(())
    }

    pub(crate) fn on_reset_stream(
        &mut self,
        id: StreamId,
        code: u32,
        final_size: u64,
    ) -> Result<(), Error> {
        if !self.ensure_stream(id)? {
            return Ok(());
        }
        let st = &mut self.streams;
        let s = st.map.get_mut(&id).expect("ensured");
        if s.recv.final_size.is_some_and(|f| f != final_size)
            || final_size < s.recv.credit.received()
        {
            return Err(Error::Protocol("RESET_STREAM final size mismatch"));
        }
        let grown = s
            .recv
            .credit
            .on_receive(final_size, "stream window exceeded")?;
        st.recv_credit.on_grow(grown, "session window exceeded")?;
        if s.recv.reset.is_none() && !s.recv.done {
            s.recv.final_size = Some(final_size);
            s.recv.reset = Some(code);
            // Bytes never delivered still count as consumed for the session.
            let dropped = final_size - s.recv.asm.read_offset();
            Streams::with_asm(&mut st.recv_held, &mut s.recv.asm, Assembler::clear);
            st.consume_session_credit(dropped, &mut self.pending);
            self.events.push_back(Event::StreamReadable(id));
        }
        Ok(())
    }

    /// MAX_DATA: the peer raised the session's send limit.
    pub(crate) fn on_max_data(&mut self, max: u64) {
        if self.streams.send_credit.raise(max) {
            self.streams.requeue_all();
        }
    }

    /// MAX_STREAM_DATA: the peer raised one stream's send limit.
    pub(crate) fn on_max_stream_data(&mut self, id: StreamId, max: u64) -> Result<(), Error> {
        self.check_local_exists(id)?;
        let st = &mut self.streams;
        if let Some(s) = st.map.get_mut(&id) {
            if s.send.credit.raise(max) {
                Streams::enqueue(&mut st.send_queue, id, s);
            }
        }
        Ok(())
    }

    /// MAX_STREAMS: the peer allows more streams.
    pub(crate) fn on_max_streams(&mut self, max: u32) {
        if max > self.streams.local_limit {
            self.streams.local_limit = max;
            self.events.push_back(Event::StreamsAvailable);
        }
    }

    // ------------------------------------------------------- send rotation

    /// Puts stream data (and RESET_STREAMs) of queued streams into the
    /// record for `conn`, each stream in turn, as far as credit, the send
    /// policy and the record's room allow.
    pub(crate) fn write_stream_frames(&mut self, conn: ConnectionId, rb: &mut RecordBuilder<'_>) {
        // Data replayed into this record counts as unacknowledged already.
        let policy = self.send_policy(conn, rb.tracked_bytes());
        if !policy.new_data {
            return;
        }
        for _ in 0..self.streams.send_queue.len() {
            if rb.room() < STREAM_HEADER_LEN + 16 {
                break;
            }
            let Some(id) = self.streams.send_queue.pop_front() else {
                break;
            };
            self.write_stream(conn, id, &policy, rb);
        }
    }

    /// One stream's turn in the rotation.
    fn write_stream(
        &mut self,
        conn: ConnectionId,
        id: StreamId,
        policy: &SendPolicy,
        rb: &mut RecordBuilder<'_>,
    ) {
        let acks = self.recovery.enabled;
        let st = &mut self.streams;
        let Some(s) = st.map.get_mut(&id) else {
            return;
        };
        if policy.coupled && !s.pinned {
            if !policy.scheduled {
                // The scheduler keeps this connection for pinned streams.
                st.send_queue.push_back(id);
                return;
            }
        } else if s.conn != conn {
            if self.paths.can_send_on(s.conn) {
                // Steered to another connection: leave it queued.
                st.send_queue.push_back(id);
                return;
            }
            s.conn = conn;
        }
        s.in_send_queue = false;
        if let Some(code) = s.send.reset {
            if !s.send.reset_sent {
                s.send.reset_sent = true;
                rb.put_reset(id, code, s.send.offset);
                rb.finished.push(id);
            }
            return;
        }
        if policy.slow_path
            && s.send.credit.available() < policy.low_credit
            && !s.send.unsent.is_empty()
        {
            // Leave it queued for the fast path.
            Streams::enqueue(&mut st.send_queue, id, s);
            return;
        }
        let room = rb.room();
        let mut n = (s.send.unsent.len() as u64)
            .min(s.send.credit.available())
            .min(st.send_credit.available())
            .min((room - STREAM_HEADER_LEN) as u64) as usize;
        if acks {
            // Each contiguous piece (bytes straddling send blocks or
            // chunks) becomes its own STREAM frame, with its header.
            n = s.send.unsent.fit(n, room, STREAM_HEADER_LEN);
        }
        let fin = s.send.fin_queued && !s.send.fin_sent && n == s.send.unsent.len();
        if n == 0 && !fin {
            return; // blocked on credit: MAX_* frames requeue it
        }
        put_stream_data(s, id, n, fin, acks, &mut st.block_pool, rb);
        let wake_all = st.budget.dequeued(n, self.cfg.session_send_buffer);
        if let Some(c) = self.paths.conns.get_mut(&conn) {
            c.sent_bytes += n as u64;
        }
        s.send.offset += n as u64;
        s.send.credit.consume(n as u64);
        st.send_credit.consume(n as u64);
        if fin {
            s.send.fin_sent = true;
            rb.finished.push(id);
        }
        Streams::wake_writer(
            &mut self.events,
            self.cfg.send_buffer,
            st.budget.blocked,
            id,
            s,
        );
        if s.send.wants_send(st.send_credit.available()) {
            st.burst += n;
            if st.burst < STREAM_BURST {
                // Keep the turn for a few records: the receiver then
                // wakes one reader per burst, not one per record.
                s.in_send_queue = true;
                st.send_queue.push_front(id);
            } else {
                st.burst = 0;
                Streams::enqueue(&mut st.send_queue, id, s);
            }
        } else {
            st.burst = 0;
        }
        if wake_all {
            self.wake_writers();
        }
    }
}

/// Moves `n` bytes of the stream's send buffer into the record. With
/// acknowledgements each contiguous piece is its own STREAM frame, kept
/// (as a slice, not a copy) until acknowledged; without, one frame.
fn put_stream_data(
    s: &mut Stream,
    id: StreamId,
    n: usize,
    fin: bool,
    acks: bool,
    pool: &mut BlockPool,
    rb: &mut RecordBuilder<'_>,
) {
    let mut left = n;
    if acks {
        let mut offset = s.send.offset;
        loop {
            let data = s.send.unsent.split_front(left, pool);
            let k = data.len();
            left -= k;
            let last = left == 0;
            rb.put_stream(id, offset, data, fin && last);
            offset += k as u64;
            debug_assert!(k > 0 || last, "queued bytes but an empty front block");
            if last || k == 0 {
                break;
            }
        }
    } else {
        while left > 0 {
            let data = s.send.unsent.split_front(left, pool);
            if data.is_empty() {
                break;
            }
            left -= data.len();
            rb.put_data(data);
        }
        rb.put_stream_header(id, s.send.offset, n, fin);
    }
}
