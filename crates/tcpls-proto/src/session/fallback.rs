//! Plain TLS mode: the peer did not speak TCPLS, so OpenSSL keeps the record
//! layer and the session exposes the TLS byte stream as stream 0.

use bytes::BytesMut;
use openssl::ssl::{ErrorCode, SslStream};

use crate::error::Error;
use crate::handshake::MemIo;
use crate::wire::record::{MAX_PLAINTEXT, MAX_RECORD};

/// What reading the TLS stream produced.
pub(crate) enum FallbackRead {
    /// This many bytes are in [`Fallback::data`].
    Data(usize),
    /// close_notify: the peer finished its direction.
    Eof,
    /// Needs more bytes from the network.
    Blocked,
}

pub(crate) struct Fallback {
    ssl: Box<SslStream<MemIo>>,
    /// OpenSSL decrypts into this; the caller copies the bytes out (packed
    /// with their neighbours), so a record does not keep a buffer alive.
    scratch: Vec<u8>,
    pub shutdown_sent: bool,
    pub eof: bool,
}

impl Fallback {
    pub fn new(ssl: Box<SslStream<MemIo>>) -> Self {
        Self {
            ssl,
            scratch: Vec::new(),
            shutdown_sent: false,
            eof: false,
        }
    }

    /// Takes bytes from `buf` as long as OpenSSL's input stays small, so a
    /// slow reader keeps the backlog in the caller's (bounded) buffer.
    pub fn feed(&mut self, buf: &mut BytesMut) {
        let io = self.ssl.get_mut();
        let room = (2 * MAX_RECORD).saturating_sub(io.pending_input());
        let n = room.min(buf.len());
        if n > 0 {
            io.feed(&buf.split_to(n));
        }
    }

    pub fn read(&mut self) -> Result<FallbackRead, Error> {
        if self.eof {
            return Ok(FallbackRead::Eof);
        }
        self.scratch.resize(MAX_PLAINTEXT, 0);
        match self.ssl.ssl_read(&mut self.scratch) {
            Ok(0) => {
                self.eof = true;
                Ok(FallbackRead::Eof)
            }
            Ok(n) => Ok(FallbackRead::Data(n)),
            Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                self.eof = true;
                Ok(FallbackRead::Eof)
            }
            Err(e) if e.code() == ErrorCode::WANT_READ => Ok(FallbackRead::Blocked),
            Err(e) => Err(Error::Handshake(format!("TLS read failed: {e}"))),
        }
    }

    /// The bytes the last [`FallbackRead::Data`] announced.
    pub fn data(&self, n: usize) -> &[u8] {
        &self.scratch[..n]
    }

    pub fn write(&mut self, data: &[u8]) -> Result<usize, Error> {
        self.ssl
            .ssl_write(data)
            .map_err(|e| Error::Internal(format!("TLS write failed: {e}")))
    }

    /// Sends close_notify (TLS 1.3 closes only our direction).
    pub fn shutdown(&mut self) {
        if !self.shutdown_sent {
            self.shutdown_sent = true;
            let _ = self.ssl.shutdown();
        }
    }

    pub fn take_output(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.ssl.get_mut().output);
    }

    /// As `take_output`, into a connection writer's buffer.
    pub fn take_output_buf(&mut self, out: &mut super::TransmitBuf) {
        let pending = &mut self.ssl.get_mut().output;
        out.extend_from_slice(pending);
        pending.clear();
    }

    pub fn has_output(&self) -> bool {
        !self.ssl.get_ref().output.is_empty()
    }
}
