//! Plain TLS mode: the peer did not speak TCPLS, so OpenSSL keeps the record
//! layer and the session exposes the TLS byte stream as stream 0.

use bytes::BytesMut;
use openssl::ssl::{ErrorCode, SslRef, SslStream};

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
    /// Records written under the current key, and after how many to send
    /// a TLS 1.3 KeyUpdate (one key must not protect too many records).
    records: u64,
    update_after: u64,
    /// KeyUpdates sent.
    pub key_updates: u32,
    /// OpenSSL decrypts into this; the caller copies the bytes out (packed
    /// with their neighbours), so a record does not keep a buffer alive.
    scratch: Vec<u8>,
    pub shutdown_sent: bool,
    /// close_notify arrived.
    pub eof: bool,
    /// The TCP connection ended without close_notify while whole records
    /// were still waiting to be decrypted (the application had not read
    /// that far): they are delivered first, then the session fails.
    pub tcp_eof: bool,
}

impl Fallback {
    pub fn new(ssl: Box<SslStream<MemIo>>, update_after: u64) -> Self {
        Self {
            ssl,
            records: 0,
            update_after: update_after.max(1),
            key_updates: 0,
            scratch: Vec::new(),
            shutdown_sent: false,
            eof: false,
            tcp_eof: false,
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

    /// True when OpenSSL's input holds a whole record not yet decrypted.
    pub fn has_whole_record(&self) -> bool {
        self.ssl.get_ref().has_whole_record()
    }

    /// The bytes the last [`FallbackRead::Data`] announced.
    pub fn data(&self, n: usize) -> &[u8] {
        &self.scratch[..n]
    }

    /// Writes one record (at most `MAX_PLAINTEXT` bytes of `data`), first
    /// moving to a new key when the current one protected enough records.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, Error> {
        if self.records >= self.update_after {
            // `&mut self`: nothing else uses the SSL object meanwhile.
            if !request_key_update(self.ssl.ssl()) {
                return Err(Error::Internal("TLS KeyUpdate failed".into()));
            }
            self.records = 0;
            self.key_updates += 1;
        }
        let n = self
            .ssl
            .ssl_write(data)
            .map_err(|e| Error::Internal(format!("TLS write failed: {e}")))?;
        self.records += 1;
        Ok(n)
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

/// `SSL_key_update`, which rust-openssl does not bind; the vendored
/// OpenSSL 3 that the `openssl` crate links provides it.
mod ffi {
    use std::os::raw::c_int;

    /// Update our sending key only (the peer need not update its own).
    pub const SSL_KEY_UPDATE_NOT_REQUESTED: c_int = 0;

    extern "C" {
        pub fn SSL_key_update(s: *mut openssl_sys::SSL, updatetype: c_int) -> c_int;
    }
}

/// Schedules a TLS 1.3 KeyUpdate: OpenSSL sends it before the next record
/// and protects what follows with the next traffic secret.
/// The caller must be the only user of `ssl` during the call (rust-openssl
/// hands out only a shared reference to a stream's SSL object).
#[allow(unsafe_code)]
fn request_key_update(ssl: &SslRef) -> bool {
    use foreign_types::ForeignTypeRef;
    // SAFETY: `ssl` is a live SSL object of an established TLS 1.3
    // connection, not used concurrently (the caller holds the stream by
    // `&mut`); SSL_key_update only marks it so the next write sends a
    // KeyUpdate message, and returns 1 on success.
    unsafe { ffi::SSL_key_update(ssl.as_ptr(), ffi::SSL_KEY_UPDATE_NOT_REQUESTED) == 1 }
}
