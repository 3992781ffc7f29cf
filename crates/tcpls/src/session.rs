//! The application's handle on a session.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use tcpls_proto::{ErrorCode, Event, StreamId};
use tokio::sync::Notify;

use crate::error::Error;
use crate::stream::Stream;

/// Events the application can observe with [`Session::next_event`].
#[derive(Clone, Debug)]
pub enum SessionEvent {
    /// The peer opened a stream (also delivered by [`Session::accept_stream`]).
    StreamOpened(StreamId),
    /// A stream finished in both directions and its state was freed.
    StreamClosed(StreamId),
    /// The session ended (by either side, or a failure).
    Closed(tcpls_proto::Error),
}

/// Most events kept for the application; older ones are dropped so a session
/// whose application never looks at events keeps bounded memory.
const MAX_APP_EVENTS: usize = 1024;

pub(crate) struct Inner {
    pub proto: tcpls_proto::Session,
    pub readers: HashMap<StreamId, Waker>,
    pub writers: HashMap<StreamId, Waker>,
    /// Waiters for "something was transmitted" (flush, shutdown).
    pub flushers: Vec<Waker>,
    pub acceptors: Vec<Waker>,
    pub openers: Vec<Waker>,
    pub event_waiters: Vec<Waker>,
    pub app_events: VecDeque<SessionEvent>,
    pub connected: Option<bool>,
    pub local_addr: Option<SocketAddr>,
    pub peer_addr: Option<SocketAddr>,
}

impl Inner {
    /// Turns protocol events into wake-ups. Called after every interaction
    /// with the protocol state machine.
    pub fn dispatch(&mut self) {
        while let Some(ev) = self.proto.poll_event() {
            match ev {
                Event::Connected { tcpls } => {
                    self.connected = Some(tcpls);
                    self.openers.drain(..).for_each(Waker::wake);
                }
                Event::StreamOpened(id) => {
                    self.acceptors.drain(..).for_each(Waker::wake);
                    self.push_app_event(SessionEvent::StreamOpened(id));
                }
                Event::StreamReadable(id) => {
                    if let Some(w) = self.readers.remove(&id) {
                        w.wake();
                    }
                }
                Event::StreamWritable(id) => {
                    if let Some(w) = self.writers.remove(&id) {
                        w.wake();
                    }
                }
                Event::StreamsAvailable => self.openers.drain(..).for_each(Waker::wake),
                // Multipath events: the runtime joins no connections yet.
                Event::TokensAvailable
                | Event::TokenIssued(_)
                | Event::TokenRetired(_)
                | Event::ConnectionAdded(_)
                | Event::ConnectionClosed(_)
                | Event::PeerAddress { .. } => {}
                Event::Closed(e) => {
                    self.readers.drain().for_each(|(_, w)| w.wake());
                    self.writers.drain().for_each(|(_, w)| w.wake());
                    self.flushers.drain(..).for_each(Waker::wake);
                    self.acceptors.drain(..).for_each(Waker::wake);
                    self.openers.drain(..).for_each(Waker::wake);
                    self.push_app_event(SessionEvent::Closed(e));
                }
            }
        }
    }

    pub fn push_app_event(&mut self, e: SessionEvent) {
        if self.app_events.len() >= MAX_APP_EVENTS {
            self.app_events.pop_front();
        }
        self.app_events.push_back(e);
        self.event_waiters.drain(..).for_each(Waker::wake);
    }
}

pub(crate) struct Shared {
    pub inner: Mutex<Inner>,
    /// Wakes the writer task: something may be ready to transmit.
    pub tx: Notify,
    /// Wakes the reader task: the application consumed buffered input.
    pub rx: Notify,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Closes the session when the last handle (session or stream) is dropped.
pub(crate) struct Guard(pub Arc<Shared>);

impl Drop for Guard {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner
            .proto
            .close_gracefully(ErrorCode::NO_ERROR, "session dropped");
        inner.dispatch();
        drop(inner);
        self.0.tx.notify_one();
    }
}

/// A TCPLS session (or a plain TLS session after fallback, with one stream).
///
/// Cloning gives another handle on the same session. The session closes
/// (CLOSE frame with `NO_ERROR`, after data already queued) when every
/// handle and every stream is dropped, or on [`Session::close`].
#[derive(Clone)]
pub struct Session {
    pub(crate) guard: Arc<Guard>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer_addr())
            .field("tcpls", &self.is_tcpls())
            .finish()
    }
}

impl Session {
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.guard.0
    }

    /// True when the peer speaks TCPLS; false after fallback to plain TLS.
    pub fn is_tcpls(&self) -> bool {
        self.shared().lock().proto.is_tcpls()
    }

    /// The negotiated TLS 1.3 cipher suite.
    pub fn cipher_suite(&self) -> Option<tcpls_proto::CipherSuite> {
        self.shared().lock().proto.cipher_suite()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.shared().lock().peer_addr
    }

    /// This side's address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared().lock().local_addr
    }

    /// Why the session ended, if it has.
    pub fn close_reason(&self) -> Option<tcpls_proto::Error> {
        self.shared().lock().proto.error().cloned()
    }

    /// Opens a stream, waiting while the peer's stream limit is reached.
    /// On a plain TLS session only the first call succeeds.
    pub async fn open_stream(&self) -> Result<Stream, Error> {
        let id = poll_fn(|cx| {
            let mut inner = self.shared().lock();
            if let Some(e) = inner.proto.error() {
                return Poll::Ready(Err(Error::Session(e.clone())));
            }
            if inner.proto.can_open_stream() {
                return Poll::Ready(inner.proto.open_stream().map_err(Error::Session));
            }
            if inner.connected == Some(false) {
                // Plain TLS: the single stream is taken.
                return Poll::Ready(inner.proto.open_stream().map_err(Error::Session));
            }
            inner.openers.push(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        Ok(Stream::new(self.guard.clone(), id))
    }

    /// Waits for the next stream the peer opens. Fails once the session ended.
    pub async fn accept_stream(&self) -> Result<Stream, Error> {
        let id = poll_fn(|cx| {
            let mut inner = self.shared().lock();
            if let Some(id) = inner.proto.accept_stream() {
                return Poll::Ready(Ok(id));
            }
            if let Some(e) = inner.proto.error() {
                return Poll::Ready(Err(Error::Session(e.clone())));
            }
            inner.acceptors.push(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        Ok(Stream::new(self.guard.clone(), id))
    }

    /// Waits for the next session event; `None` after `Closed` was taken.
    pub async fn next_event(&self) -> Option<SessionEvent> {
        poll_fn(|cx| {
            let mut inner = self.shared().lock();
            if let Some(e) = inner.app_events.pop_front() {
                return Poll::Ready(Some(e));
            }
            if inner.proto.error().is_some() {
                return Poll::Ready(None);
            }
            inner.event_waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Closes the session now: the peer gets a CLOSE frame with the
    /// application `code` and `reason`. Data not yet sent is dropped; call
    /// [`crate::SendStream::finish`] on streams first for a graceful end.
    pub fn close(&self, code: u32, reason: &str) {
        let mut inner = self.shared().lock();
        inner.proto.close(ErrorCode::app(code), reason);
        inner.dispatch();
        drop(inner);
        self.shared().tx.notify_one();
    }

    /// Waits until the session has ended and returns why.
    pub async fn closed(&self) -> tcpls_proto::Error {
        poll_fn(|cx| {
            let mut inner = self.shared().lock();
            if let Some(e) = inner.proto.error() {
                return Poll::Ready(e.clone());
            }
            inner.event_waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}
