//! # tcpls-proto
//!
//! The sans-IO core of TCPLS: a TLS 1.3 handshake driven through OpenSSL over
//! in-memory buffers, a record layer of our own (AEAD in place, per-connection
//! nonces), the frame codec, and the session state machine with streams and
//! flow control. No sockets, no clock reads, no threads: the `tcpls` crate
//! runs it over tokio, and tests run two of them against each other in memory.
//!
//! See `docs/protocol.md` for the wire format and `docs/architecture.md` for
//! how the pieces fit.
#![warn(missing_docs)]
// FFI calls rust-openssl does not bind (SSL_key_update in
// session/fallback.rs; offering a session and the ticket key callback in
// tls_ffi.rs) are the only unsafe code, allowed there alone.
#![deny(unsafe_code)]

pub mod config;
pub mod error;
mod handshake;
pub mod ids;
pub mod resumption;
pub mod session;
mod tls_callbacks;
mod tls_ffi;
pub mod tls_options;

// The record layer and the wire codecs are public only for tests, fuzzing
// and benches (feature `testing`): applications go through `Session`.
#[cfg(feature = "testing")]
pub mod record;
// Without `testing`, parts only tests and fuzzers use are unused.
#[cfg(not(feature = "testing"))]
#[allow(dead_code, unused_imports)]
mod record;
#[cfg(feature = "testing")]
pub mod wire;
#[cfg(not(feature = "testing"))]
#[allow(dead_code, unused_imports)]
mod wire;

pub use config::{ClientConfig, ServerConfig, TransportConfig};
pub use error::{CallError, DecodeError, Error, ErrorCode};
pub use handshake::RetiredTls;
pub use ids::{ConnectionId, Side, StreamId};
pub use record::CipherSuite;
pub use resumption::{ExportedTicket, SessionCache};
pub use session::{EarlyData, Event, HandshakeKind, ReadOutcome, Session};
pub use wire::extension::TransportParams;
pub use wire::frame::TOKEN_LEN;
/// What a server needs to route a new TCP connection: the first bytes of a
/// join ClientHello carry the token of the session it joins.
pub mod join {
    pub use crate::wire::join::{probe_join, JoinProbe};
}
pub use wire::record::MAX_RECORD;
