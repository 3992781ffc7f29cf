//! The TLS handshake of a new session's first connection, driven from the
//! task that opens (or accepts) it, before any task of the session exists.
//!
//! Between sockets a handshake is a few round trips of small flights:
//! reading each flight from the task that waits for the session (as
//! tokio-openssl does) spares the hops through the reader task, the writer
//! task and back to that task (10-65 µs each on this kind of machine,
//! several per handshake), which bound how many handshakes a server
//! completes per second.

use std::time::Instant;

use bytes::BytesMut;
use tcpls_proto::session::TransmitBuf;
use tcpls_proto::ConnectionId;
use tokio::net::TcpStream;

use crate::driver::{write_all, WRITE_BATCH};
use crate::error::Error;

/// Bytes asked of the kernel per read during the handshake: a server's
/// whole first flight (certificate chain included) at once.
const HANDSHAKE_READ: usize = 16 << 10;

/// Runs `proto`'s handshake on `tcp` (its first connection) until it is
/// done: `input` holds bytes already read (a server's ClientHello) and, on
/// return, what arrived after the handshake (the client's first records),
/// for the reader task. What the session has to send once established (a
/// client's Finished) is left for the caller to write.
///
/// On failure the session holds its error, and its alert (if any) was
/// written.
pub(crate) async fn drive(
    proto: &mut tcpls_proto::Session,
    tcp: &TcpStream,
    input: &mut BytesMut,
) -> Result<(), Error> {
    let conn = ConnectionId::FIRST;
    loop {
        if !input.is_empty() {
            // An error is kept by the session (checked below).
            let _ = proto.recv(conn, input, Instant::now());
        }
        // Done; also when the input that finished the handshake went on
        // to end the session (a client that closes at once: its Finished
        // and CLOSE arrive together). The session is then handed over
        // closed, as it would be a moment later anyway.
        let finished = proto.error().is_none() || proto.handshake_kind().is_some();
        if !proto.is_handshaking() && finished {
            return Ok(());
        }
        let mut out = TransmitBuf::default();
        let _ = proto.poll_transmit_buf(conn, &mut out, WRITE_BATCH);
        if !out.is_empty() {
            if let Err(e) = write_all(tcp, &out).await {
                proto.handle_connection_error(conn, e.to_string(), Instant::now());
            }
        }
        if let Some(e) = proto.error() {
            return Err(Error::Session(e.clone()));
        }
        input.reserve(HANDSHAKE_READ);
        let read = loop {
            tcp.readable().await?;
            match tcp.try_read_buf(input) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                r => break r,
            }
        };
        match read {
            Ok(0) => proto.handle_eof(conn, Instant::now()),
            Ok(_) => continue,
            Err(e) => proto.handle_connection_error(conn, e.to_string(), Instant::now()),
        }
        return Err(Error::Session(proto.error().cloned().unwrap_or_else(
            || tcpls_proto::Error::ConnectionLost("connection closed during handshake".into()),
        )));
    }
}
