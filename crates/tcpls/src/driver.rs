//! The tasks that move bytes between TCP sockets and the protocol core.
//!
//! One task per connection, like quinn's connection driver, in two halves
//! polled together: the reader feeds whole records to `Session::recv`
//! (reading in large chunks), the writer drains `Session::poll_transmit`
//! for its connection in batches and fires timers. Both hold the session
//! lock only while calling the state machine. One task rather than two:
//! a wake-up between them (the reader found something to send) costs no
//! thread hop, and opening a session spawns once, not three times (the
//! first connection's task also runs the session's health monitor).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use tcpls_proto::session::{ConnectionState, TransmitBuf};
use tcpls_proto::ConnectionId;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::shared::{Shared, Writing};
use crate::socket::Preset;
use tcpls_proto::MAX_RECORD;

/// Bytes asked of the kernel per read: several maximal records at once.
const READ_CHUNK: usize = 256 << 10;
/// A connection's first read buffer (and its first after an idle
/// release): room for a maximal record and more. A request, a response
/// and the session's close fit, and a 32 KiB allocation stays in the
/// allocator's arena, where a 256 KiB one was freed back to the kernel
/// (`madvise`, a TLB flush on every CPU running the process) at the end
/// of each short session. The next buffer is a full `READ_CHUNK`.
const FIRST_READ: usize = 32 << 10;
/// Bytes of records built before one write to the socket.
pub(crate) const WRITE_BATCH: usize = 256 << 10;

/// Starts the task of connection `conn`. `input` holds bytes already read
/// from the socket; `first` bytes to write before anything else.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    tcp: TcpStream,
    conn: ConnectionId,
    input: BytesMut,
    first: Vec<u8>,
) {
    tokio::spawn(connection(
        shared,
        tcp,
        conn,
        input,
        first,
        Preset::default(),
        None,
    ));
}

/// Registers connection `conn`'s socket with the session and returns the
/// future that drives it: its reader and writer halves, polled together
/// by one task (see the module's doc). The socket gets the session's
/// options, but for those its `preset` already has.
pub(crate) fn connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    conn: ConnectionId,
    input: BytesMut,
    first: Vec<u8>,
    preset: Preset,
    retired: Option<tcpls_proto::RetiredTls>,
) -> impl Future<Output = ()> + Send + 'static {
    if !preset.nodelay {
        let _ = tcp.set_nodelay(true);
    }
    // One socket shared by both halves (tokio's TcpStream reads and writes
    // through `&self`), and by the session for TCP_INFO: no duplicate
    // descriptor, so a session costs one file descriptor per connection.
    let tcp = Arc::new(tcp);
    shared
        .sockets
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(conn, tcp.clone());
    // After the insert: a session-wide option set meanwhile sees this
    // socket, or this sees the option.
    shared.apply_session_options(conn, &tcp, preset.user_timeout);
    let coupled = shared.lock().proto.scheduler_name().is_some();
    shared.update_notsent_lowat(coupled);
    if !first.is_empty() {
        // These bytes lead: no inline transmit may overtake them.
        shared.lock().writing.insert(conn, Writing::Task);
    }
    let notify = Arc::new(Notify::new());
    shared
        .writers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(conn, notify.clone());
    let done = Arc::new(Notify::new());
    let read = reader(shared.clone(), tcp.clone(), conn, input, done.clone());
    let write = writer(shared, tcp, conn, notify, first, done, retired);
    Both::new(read, write)
}

/// Two futures polled to completion by one task, each dropped as soon as
/// it is done. Not `tokio::join!` in an `async` block: such a block keeps
/// its futures twice (as captures, and moved into the join), 2.5 KB per
/// connection instead of 1.2 KB, and idle sessions cost 3.9 KiB more of
/// server memory each (`tcpls idle`).
pub(crate) struct Both<A, B>(Option<Pin<Box<A>>>, Option<Pin<Box<B>>>);

impl<A, B> Both<A, B> {
    pub(crate) fn new(a: A, b: B) -> Self {
        Self(Some(Box::pin(a)), Some(Box::pin(b)))
    }
}

impl<A: Future<Output = ()>, B: Future<Output = ()>> Future for Both<A, B> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this
            .0
            .as_mut()
            .is_some_and(|f| f.as_mut().poll(cx).is_ready())
        {
            this.0 = None;
        }
        if this
            .1
            .as_mut()
            .is_some_and(|f| f.as_mut().poll(cx).is_ready())
        {
            this.1 = None;
        }
        if this.0.is_none() && this.1.is_none() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

async fn reader(
    shared: Arc<Shared>,
    rd: Arc<TcpStream>,
    conn: ConnectionId,
    input: BytesMut,
    done: Arc<Notify>,
) {
    let mut bufs = ReadBuffers::new(input);
    if !bufs.buf.is_empty() {
        let mut inner = shared.lock();
        let _ = inner.proto.recv(conn, &mut bufs.buf, Instant::now());
        inner.dispatch();
        drop(inner);
        shared.wake_writers();
    }
    // Plain TLS: the peer's FIN came while `buf` still held records the
    // application had not read; they are decrypted as it reads, and the
    // session learns of the end once they are.
    let mut peer_eof = false;
    // `handle_eof` was called (once is enough: the session ends by itself
    // once the records left are read).
    let mut eof_told = false;
    loop {
        let wants_input = {
            let inner = shared.lock();
            if inner.proto.is_drained() || inner.proto.connection_state(conn).is_none() {
                break;
            }
            inner.proto.wants_input() && !peer_eof
        };
        // `rx` fires when a plain TLS reader consumed data: bytes already in
        // `buf` may then be processable even if the peer sends nothing more,
        // and while the session wants no input only that can make progress.
        // (`read_some` is cancel-safe.)
        let r = tokio::select! {
            r = read_some(&rd, &mut bufs), if wants_input => r,
            _ = shared.rx.notified() => {
                let mut inner = shared.lock();
                let _ = inner.proto.recv(conn, &mut bufs.buf, Instant::now());
                if peer_eof && !eof_told && bufs.buf.is_empty() {
                    inner.proto.handle_eof(conn, Instant::now());
                    eof_told = true;
                }
                inner.dispatch();
                let ended = inner.proto.error().is_some();
                drop(inner);
                shared.wake_writers();
                if ended {
                    break;
                }
                continue;
            }
            _ = done.notified() => break,
        };
        let mut inner = shared.lock();
        let end = match r {
            Ok(0) if !bufs.buf.is_empty() && !inner.proto.is_tcpls() => {
                peer_eof = true;
                false
            }
            Ok(0) => {
                inner.proto.handle_eof(conn, Instant::now());
                eof_told = true;
                // A plain TLS session may still be delivering records
                // that arrived before the end (see `peer_eof`).
                let ended = inner.proto.error().is_some() || inner.proto.is_tcpls();
                peer_eof = !ended;
                ended
            }
            Ok(_) => {
                let r = inner.proto.recv(conn, &mut bufs.buf, Instant::now());
                if bufs.report(&shared.read_held, inner.proto.recv_memory_limit()) {
                    // Sparse slices pin too many buffers: copy them out.
                    inner.proto.compact_recv_buffers();
                    bufs.sweep();
                    bufs.report(&shared.read_held, usize::MAX);
                }
                match r {
                    Err(tcpls_proto::CallError::JoinRefused(why)) => {
                        tracing::info!(%conn, why, "join refused");
                        true
                    }
                    _ => false,
                }
            }
            Err(e) => {
                inner
                    .proto
                    .handle_connection_error(conn, e.to_string(), Instant::now());
                true
            }
        };
        inner.dispatch();
        // Wake the writers only when the input produced something to send
        // (credit updates, CLOSE): a wake-up per read costs a context switch.
        // ...or when a timer (ACK delay) is now due earlier than the one
        // the writers sleep on.
        let wake = end
            || inner.timer_moved()
            || inner.proto.has_transmit()
            || inner.proto.error().is_some();
        drop(inner);
        if wake {
            shared.wake_writers();
        }
        if end {
            break;
        }
    }
    // Data still held as slices of this connection's buffers would no
    // longer be counted: copy it out before forgetting them.
    if !bufs.retained.is_empty() {
        shared.lock().proto.compact_recv_buffers();
    }
    bufs.retained.clear();
    bufs.report(&shared.read_held, usize::MAX);
    shared
        .sockets
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&conn);
    done.notify_one();
}

/// How long a connection must be quiet before its buffers are released.
const IDLE_RELEASE: std::time::Duration = std::time::Duration::from_secs(1);

/// Unused read buffers a connection keeps for reuse: once every slice of
/// stream data handed out of a retired buffer is dropped, the buffer is
/// reused as it is, instead of allocating fresh pages the kernel must zero
/// and fault in (with 16 streams that was about 10 % of the CPU time of a
/// transfer).
const SPARE_BUFFERS: usize = 4;

/// The reader's buffers: `buf` is what `Session::recv` consumes.
///
/// Received stream data stays in the session as slices of these buffers
/// (decrypted in place, handed out without copying), and one slice keeps
/// its whole buffer alive. `retained` counts those buffers: a peer that
/// spreads a little retained data over many buffers cannot make the
/// session hold more than `Session::recv_memory_limit`, because past it
/// the reader asks the session to copy that data out
/// (`Session::compact_recv_buffers`).
struct ReadBuffers {
    buf: BytesMut,
    /// Size of `buf`'s allocation (what `try_reclaim` can get back).
    buf_alloc: usize,
    /// Retired buffers that slices may still point into, with their
    /// allocation sizes.
    retained: Vec<(BytesMut, usize)>,
    /// Retired buffers nothing points into any more, ready for reuse.
    spare: Vec<BytesMut>,
    /// What this connection last added to `Shared::read_held`.
    reported: usize,
}

impl ReadBuffers {
    fn new(buf: BytesMut) -> Self {
        Self {
            buf_alloc: buf.capacity(),
            buf,
            retained: Vec::new(),
            spare: Vec::new(),
            reported: 0,
        }
    }

    /// Makes room for at least one maximal record in `buf`.
    fn make_room(&mut self) {
        let buf = &mut self.buf;
        let reuse = (self.buf_alloc / 2).max(MAX_RECORD);
        if buf.capacity() - buf.len() >= MAX_RECORD || buf.try_reclaim(reuse) {
            return;
        }
        self.sweep();
        let (size, mut fresh) = match self.buf_alloc {
            0 => (FIRST_READ, BytesMut::with_capacity(FIRST_READ)),
            _ => (
                READ_CHUNK,
                self.spare
                    .pop()
                    .unwrap_or_else(|| BytesMut::with_capacity(READ_CHUNK)),
            ),
        };
        // Move the partial record over; the old buffer waits for its slices.
        fresh.extend_from_slice(&self.buf);
        let mut old = std::mem::replace(&mut self.buf, fresh);
        let old_alloc = std::mem::replace(&mut self.buf_alloc, size);
        old.clear();
        if old_alloc > 0 {
            self.retained.push((old, old_alloc));
        }
    }

    /// Moves the retained buffers nothing points into any more to `spare`
    /// (or frees them). `try_reclaim` of the whole allocation succeeds only
    /// once no slice of it is left.
    fn sweep(&mut self) {
        let mut i = 0;
        while i < self.retained.len() {
            let (b, alloc) = &mut self.retained[i];
            if b.try_reclaim(*alloc) {
                let (b, alloc) = self.retained.swap_remove(i);
                // Smaller ones (a connection's first bytes) are not reused.
                if alloc >= READ_CHUNK && self.spare.len() < SPARE_BUFFERS {
                    self.spare.push(b);
                }
            } else {
                i += 1;
            }
        }
    }

    /// Bytes of retired buffers that slices still keep alive.
    fn retained_bytes(&self) -> usize {
        self.retained.iter().map(|(_, alloc)| alloc).sum()
    }

    /// Publishes this connection's retained bytes in the session total;
    /// true if the total is over `limit`.
    fn report(&mut self, total: &AtomicUsize, limit: usize) -> bool {
        let now = self.retained_bytes();
        if now != self.reported {
            if now > self.reported {
                total.fetch_add(now - self.reported, Ordering::Relaxed);
            } else {
                total.fetch_sub(self.reported - now, Ordering::Relaxed);
            }
            self.reported = now;
        }
        total.load(Ordering::Relaxed) > limit
    }

    /// Gives the memory back (idle connection). Retained buffers are only
    /// tracked: the slices into them free them.
    fn release(&mut self) {
        self.sweep();
        self.spare = Vec::new();
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
            self.buf_alloc = 0;
        }
    }
}

/// Reads what the socket has, in chunks of up to `READ_CHUNK` (the first
/// buffer is `FIRST_READ`). After a second without input the buffers are
/// released, so idle sessions hold no read buffer while busy ones keep
/// reusing theirs.
async fn read_some(rd: &TcpStream, bufs: &mut ReadBuffers) -> std::io::Result<usize> {
    loop {
        bufs.make_room();
        match rd.try_read_buf(&mut bufs.buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if tokio::time::timeout(IDLE_RELEASE, rd.readable())
                    .await
                    .is_err()
                {
                    bufs.release();
                    rd.readable().await?;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Writes what the socket takes of `data` now, without waiting; the bytes
/// written (none on an error, which the writer task then meets).
pub(crate) fn write_now(tcp: &TcpStream, data: &[u8]) -> usize {
    let mut sent = 0;
    while sent < data.len() {
        match tcp.try_write(&data[sent..]) {
            Ok(n) if n > 0 => sent += n,
            _ => break,
        }
    }
    sent
}

pub(crate) async fn write_all(tcp: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        tcp.writable().await?;
        match tcp.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Transmits from the calling task (the application's, right after a small
/// write) when the session has a single connection and nobody is writing
/// to its socket: the records go out without the hop to the writer task and
/// back, two task wake-ups per write, as on a plain TLS stream. Whatever the
/// socket does not take at once, and anything beyond one batch, is left to
/// the writer task. False when the writer task must do it all.
pub(crate) fn transmit_inline(shared: &Shared) -> bool {
    let (conn, tcp, mut out) = {
        let mut inner = shared.lock();
        let Some(conn) = inner.proto.sole_connection() else {
            return false;
        };
        if inner.writing.contains_key(&conn) {
            return false;
        }
        let tcp = shared
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&conn)
            .cloned();
        let Some(tcp) = tcp else { return false };
        let mut out = std::mem::take(&mut inner.inline_out);
        out.clear();
        let _ = inner.proto.poll_transmit_buf(conn, &mut out, WRITE_BATCH);
        inner.wake_flushers();
        inner.dispatch();
        if out.is_empty() {
            inner.inline_out = out;
            return true;
        }
        inner.writing.insert(conn, Writing::Inline);
        (conn, tcp, out)
    };
    let mut sent = 0;
    let mut error = None;
    while sent < out.len() {
        match tcp.try_write(&out[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let mut inner = shared.lock();
    let mut wake = inner.writing.remove(&conn) == Some(Writing::InlineWriterWaiting);
    if let Some(e) = error {
        inner
            .proto
            .handle_connection_error(conn, e.to_string(), Instant::now());
        inner.dispatch();
        wake = true;
    } else if sent < out.len() {
        // The socket is full: the writer task sends the rest, first.
        inner.leftover.insert(conn, out[sent..].to_vec());
        inner.writing.insert(conn, Writing::Task);
        wake = true;
    }
    // More than one batch, or a timer due before the one the writer
    // sleeps on: the writer task carries on.
    wake |= inner.timer_moved() || inner.proto.has_transmit();
    out.clear();
    inner.inline_out = out;
    drop(inner);
    if wake {
        shared.wake_writers();
    }
    true
}

async fn writer(
    shared: Arc<Shared>,
    wr: Arc<TcpStream>,
    conn: ConnectionId,
    notify: Arc<Notify>,
    first: Vec<u8>,
    done: Arc<Notify>,
    retired: Option<tcpls_proto::RetiredTls>,
) {
    // Freed when the task first runs, not in the `recv` that ended the
    // handshake (the server's answer waited for it).
    drop(retired);
    // Kept across batches: records are sealed straight into its memory.
    let mut out = TransmitBuf::from(first);
    loop {
        if !out.is_empty() {
            if let Err(e) = write_all(&wr, &out).await {
                let mut inner = shared.lock();
                inner
                    .proto
                    .handle_connection_error(conn, e.to_string(), Instant::now());
                inner.dispatch();
                break;
            }
            out.clear();
        }
        let (deadline, finished, inline_cap) = {
            let mut inner = shared.lock();
            let mut inline_active = false;
            match inner.writing.get(&conn) {
                Some(Writing::Inline | Writing::InlineWriterWaiting) => {
                    // An application task is writing records of this
                    // connection; it wakes us when done.
                    inner.writing.insert(conn, Writing::InlineWriterWaiting);
                    inline_active = true;
                }
                _ => {
                    inner.writing.remove(&conn);
                    match inner.leftover.remove(&conn) {
                        // What an inline transmit could not write goes first.
                        Some(rest) => out.extend_from_slice(&rest),
                        None => {
                            let _ = inner.proto.poll_transmit_buf(conn, &mut out, WRITE_BATCH);
                        }
                    }
                    if !out.is_empty() {
                        inner.writing.insert(conn, Writing::Task);
                    }
                }
            }
            inner.wake_flushers();
            inner.dispatch();
            let state = inner.proto.connection_state(conn);
            let retired = !matches!(
                state,
                Some(ConnectionState::Active | ConnectionState::PendingAuth)
            );
            let deadline = inner.proto.poll_timeout();
            inner.armed_timeout = deadline;
            let inline_cap = inner.inline_out.capacity();
            // Never the FIN while an inline transmit still writes records.
            let finished = (inner.proto.is_drained() || retired) && !inline_active;
            (deadline, finished, inline_cap)
        };
        if !out.is_empty() {
            continue;
        }
        if finished {
            // Session over, or this connection retired: our FIN follows the
            // last record; the reader still reads the peer's until its FIN.
            let _ = socket2::SockRef::from(&*wr).shutdown(std::net::Shutdown::Write);
            break;
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        // After a quiet second, an idle connection gives its output buffer back.
        let idle = async {
            if out.capacity() > 64 << 10 || inline_cap > 64 << 10 {
                tokio::time::sleep(IDLE_RELEASE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = idle => {
                out = TransmitBuf::new();
                let mut inner = shared.lock();
                inner.inline_out = TransmitBuf::new();
                inner.proto.release_buffers();
            }
            _ = notify.notified() => {}
            _ = sleep => {
                let mut inner = shared.lock();
                inner.proto.handle_timeout(Instant::now());
                shared.answer_silence_checks(&mut inner);
                inner.dispatch();
            }
            _ = done.notified() => break,
        }
    }
    shared
        .writers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&conn);
    shared.writer_done.notify_waiters();
    // The session is over, or this connection was removed (failed, or a
    // refused join): the reader has nothing left to read for.
    let gone = {
        let inner = shared.lock();
        inner.proto.is_drained() || inner.proto.connection_state(conn).is_none()
    };
    if gone {
        done.notify_one();
    }
}
