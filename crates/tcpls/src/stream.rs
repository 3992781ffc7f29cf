//! Streams: `AsyncRead`/`AsyncWrite` halves over a session's stream.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tcpls_proto::{ReadOutcome, StreamId};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{call_to_io, session_to_io, StreamReset};
use crate::shared::{Guard, SessionEvent};

/// A bidirectional stream. Use [`Stream::split`] to read and write from
/// different tasks.
#[derive(Debug)]
pub struct Stream {
    send: SendStream,
    recv: RecvStream,
}

/// The sending half of a stream.
pub struct SendStream {
    guard: Arc<Guard>,
    id: StreamId,
    finished: bool,
}

/// The receiving half of a stream.
pub struct RecvStream {
    guard: Arc<Guard>,
    id: StreamId,
    /// Part of a chunk that did not fit the caller's buffer.
    leftover: Bytes,
    eof: bool,
}

impl std::fmt::Debug for SendStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SendStream({:?})", self.id)
    }
}

impl std::fmt::Debug for RecvStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecvStream({:?})", self.id)
    }
}

impl Stream {
    pub(crate) fn new(guard: Arc<Guard>, id: StreamId) -> Self {
        Self {
            send: SendStream {
                guard: guard.clone(),
                id,
                finished: false,
            },
            recv: RecvStream {
                guard,
                id,
                leftover: Bytes::new(),
                eof: false,
            },
        }
    }

    /// The stream's identifier.
    pub fn id(&self) -> StreamId {
        self.send.id
    }

    /// Sends this stream's data on connection `conn` from now on, and asks
    /// the peer to do the same (stream steering).
    pub fn set_connection(&self, conn: tcpls_proto::ConnectionId) -> io::Result<()> {
        let id = self.id();
        self.send
            .guard
            .0
            .with_proto(|p| p.set_stream_connection(id, conn))
            .map_err(call_to_io)
    }

    /// The connection this stream's data is sent on.
    pub fn connection(&self) -> Option<tcpls_proto::ConnectionId> {
        self.send.guard.0.lock().proto.stream_connection(self.id())
    }

    /// Splits into independently usable halves.
    pub fn split(self) -> (SendStream, RecvStream) {
        (self.send, self.recv)
    }

    /// The sending half.
    pub fn send_half(&mut self) -> &mut SendStream {
        &mut self.send
    }

    /// The receiving half.
    pub fn recv_half(&mut self) -> &mut RecvStream {
        &mut self.recv
    }
}

impl SendStream {
    /// The stream's identifier.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Ends the stream once all written data is sent, and waits until the
    /// FIN has been handed to the connection.
    pub async fn finish(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_finish(cx)).await
    }

    /// Abandons the stream: unsent data is dropped and the peer's reads fail
    /// with `code`.
    pub fn reset(&mut self, code: u32) -> io::Result<()> {
        self.finished = true;
        let id = self.id;
        self.guard
            .0
            .with_proto(|p| p.reset(id, code))
            .map_err(call_to_io)
    }

    /// Writes all of `data` without copying it: the bytes are encrypted
    /// straight from `data`'s memory when their records are sealed (and,
    /// with acknowledgements, kept as slices until acknowledged). For data
    /// that is already in a `Bytes` (a file read into a buffer, a cached
    /// response) this spares the copy [`AsyncWriteExt::write_all`] makes
    /// into the stream's send buffer. Chunks under 4 KiB are copied.
    ///
    /// ```no_run
    /// # async fn f(stream: &mut tcpls::SendStream) -> std::io::Result<()> {
    /// let body = bytes::Bytes::from(std::fs::read("index.html")?);
    /// stream.write_chunk(body).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// [`AsyncWriteExt::write_all`]: tokio::io::AsyncWriteExt::write_all
    pub async fn write_chunk(&mut self, mut data: Bytes) -> io::Result<()> {
        while !data.is_empty() {
            let n = poll_fn(|cx| {
                self.poll_queue(cx, data.len(), |p, id| p.write_chunk(id, data.clone()))
            })
            .await?;
            data.advance(n);
        }
        Ok(())
    }

    /// Queues up to `len` bytes with `write` (given the session and the
    /// stream id), or waits for room; then gets them sent.
    fn poll_queue(
        &mut self,
        cx: &mut Context<'_>,
        len: usize,
        write: impl FnOnce(&mut tcpls_proto::Session, StreamId) -> Result<usize, tcpls_proto::CallError>,
    ) -> Poll<io::Result<usize>> {
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        let shared = &self.guard.0;
        let mut inner = shared.lock();
        match write(&mut inner.proto, self.id) {
            Ok(0) => {
                inner.writers.insert(self.id, cx.waker().clone());
                // Make sure the writer task drains what is queued.
                shared.wake_writers();
                Poll::Pending
            }
            Ok(n) => {
                drop(inner);
                // Small writes (requests, responses) go out from this task
                // at once; bulk data is left to the writer task, which
                // pipelines sealing and sending with the application's
                // writes.
                if n > INLINE_MAX || !crate::driver::transmit_inline(shared) {
                    shared.wake_writers();
                }
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(call_to_io(e))),
        }
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = &self.guard.0;
        let mut inner = shared.lock();
        if !self.finished {
            self.finished = true;
            if let Err(e) = inner.proto.finish(self.id) {
                return Poll::Ready(Err(call_to_io(e)));
            }
            shared.wake_writers();
        }
        if inner.proto.is_send_done(self.id) {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = inner.proto.error() {
            return Poll::Ready(Err(session_to_io(e.clone())));
        }
        crate::shared::wait_on(&mut inner.flushers, cx.waker());
        Poll::Pending
    }
}

/// Largest write sent from the application's task (one record's worth).
const INLINE_MAX: usize = 16 << 10;

impl AsyncWrite for SendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_queue(cx, buf.len(), |p, id| p.write(id, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = &self.guard.0;
        let mut inner = shared.lock();
        if inner.proto.unsent(self.id) == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = inner.proto.error() {
            return Poll::Ready(Err(session_to_io(e.clone())));
        }
        crate::shared::wait_on(&mut inner.flushers, cx.waker());
        shared.wake_writers();
        Poll::Pending
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_finish(cx)
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        if !self.finished {
            // Like quinn: dropping a send half finishes it gracefully.
            let id = self.id;
            let _ = self.guard.0.with_proto_deferred(|p| p.finish(id));
        }
    }
}

impl RecvStream {
    /// The stream's identifier.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Reads the next chunk of at most `max` bytes without copying it (the
    /// bytes are a slice of the decrypted record). `None` at end of stream.
    pub async fn read_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        poll_fn(|cx| self.poll_chunk(cx, max)).await
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<Option<Bytes>>> {
        if !self.leftover.is_empty() {
            let n = self.leftover.len().min(max);
            return Poll::Ready(Ok(Some(self.leftover.split_to(n))));
        }
        if self.eof {
            return Poll::Ready(Ok(None));
        }
        let shared = &self.guard.0;
        let mut inner = shared.lock();
        match inner.proto.read(self.id, max) {
            Ok(ReadOutcome::Data(b)) => {
                if inner.proto.has_transmit() {
                    shared.wake_writers();
                }
                if !inner.proto.is_tcpls() {
                    shared.rx.notify_one();
                }
                Poll::Ready(Ok(Some(b)))
            }
            Ok(ReadOutcome::Fin) => {
                self.eof = true;
                self.note_closed(&mut inner);
                Poll::Ready(Ok(None))
            }
            Ok(ReadOutcome::Reset(code)) => {
                self.eof = true;
                self.note_closed(&mut inner);
                Poll::Ready(Err(StreamReset { code }.into()))
            }
            // Blocked (and, the enum being open, anything newer): wait.
            Ok(_) => {
                inner.readers.insert(self.id, cx.waker().clone());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(call_to_io(e))),
        }
    }

    fn note_closed(&self, inner: &mut crate::shared::Inner) {
        if inner.proto.is_send_done(self.id) {
            inner.push_app_event(SessionEvent::StreamClosed(self.id));
        }
    }
}

impl AsyncRead for RecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_chunk(cx, buf.remaining()) {
            Poll::Ready(Ok(Some(chunk))) => {
                buf.put_slice(&chunk);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(None)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        if !self.eof {
            let id = self.id;
            let plain = self.guard.0.with_proto_deferred(|p| {
                let _ = p.stop_reading(id);
                !p.is_tcpls()
            });
            if plain {
                // Plain TLS: the reader may hold input (or a FIN) that only
                // a read used to make it look at again.
                self.guard.0.rx.notify_one();
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().send).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().send).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().send).poll_shutdown(cx)
    }
}
