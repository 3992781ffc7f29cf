//! The tasks that move bytes between a TCP socket and the protocol core.
//!
//! Two tasks per connection, like quinn's connection driver split in halves:
//! the reader feeds whole records to `Session::recv` (reading in large
//! chunks), the writer drains `Session::poll_transmit` in batches and fires
//! timers. Both hold the session lock only while calling the state machine.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::session::Shared;
use tcpls_proto::wire::record::MAX_RECORD;

/// Bytes asked of the kernel per read: several maximal records at once.
const READ_CHUNK: usize = 256 << 10;
/// Bytes of records built before one write to the socket.
const WRITE_BATCH: usize = 256 << 10;

pub(crate) fn spawn(shared: Arc<Shared>, tcp: TcpStream) {
    let (rd, wr) = tcp.into_split();
    let done = Arc::new(Notify::new());
    tokio::spawn(reader(shared.clone(), rd, done.clone()));
    tokio::spawn(writer(shared, wr, done));
}

async fn reader(shared: Arc<Shared>, mut rd: OwnedReadHalf, done: Arc<Notify>) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        let wants_input = {
            let inner = shared.lock();
            if inner.proto.is_drained() {
                break;
            }
            inner.proto.wants_input()
        };
        if wants_input && buf.capacity() - buf.len() < MAX_RECORD {
            buf.reserve(READ_CHUNK);
        }
        // `rx` fires when a plain TLS reader consumed data: bytes already in
        // `buf` may then be processable even if the peer sends nothing more,
        // and while the session wants no input only that can make progress.
        // (`read_buf` is cancel-safe.)
        let r = tokio::select! {
            r = rd.read_buf(&mut buf), if wants_input => r,
            _ = shared.rx.notified() => {
                let mut inner = shared.lock();
                let _ = inner.proto.recv(0, &mut buf, Instant::now());
                inner.dispatch();
                drop(inner);
                shared.tx.notify_one();
                continue;
            }
            _ = done.notified() => break,
        };
        let mut inner = shared.lock();
        let end = match r {
            Ok(0) => {
                inner.proto.handle_eof(0);
                true
            }
            Ok(_) => {
                let _ = inner.proto.recv(0, &mut buf, Instant::now());
                false
            }
            Err(e) => {
                inner.proto.handle_connection_error(0, e.to_string());
                true
            }
        };
        inner.dispatch();
        // Wake the writer only when the input produced something to send
        // (credit updates, CLOSE): a wake-up per read costs a context switch.
        let wake_writer = end || inner.proto.has_transmit() || inner.proto.error().is_some();
        drop(inner);
        if wake_writer {
            shared.tx.notify_one();
        }
        if end {
            break;
        }
    }
}

async fn writer(shared: Arc<Shared>, mut wr: OwnedWriteHalf, done: Arc<Notify>) {
    let mut out = Vec::with_capacity(WRITE_BATCH + MAX_RECORD);
    loop {
        let (deadline, drained) = {
            let mut inner = shared.lock();
            out.clear();
            let _ = inner.proto.poll_transmit(0, &mut out, WRITE_BATCH);
            inner.flushers.drain(..).for_each(|w| w.wake());
            inner.dispatch();
            (inner.proto.poll_timeout(), inner.proto.is_drained())
        };
        if !out.is_empty() {
            if let Err(e) = wr.write_all(&out).await {
                let mut inner = shared.lock();
                inner.proto.handle_connection_error(0, e.to_string());
                inner.dispatch();
                break;
            }
            continue;
        }
        if drained {
            let _ = wr.shutdown().await;
            break;
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shared.tx.notified() => {}
            _ = sleep => {
                let mut inner = shared.lock();
                inner.proto.handle_timeout(Instant::now());
                inner.dispatch();
            }
        }
    }
    done.notify_one();
}
