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
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
mod handshake;
pub mod ids;
pub mod record;
pub mod session;
mod tls_callbacks;
pub mod wire;

pub use config::{ClientConfig, ServerConfig, TransportConfig};
pub use error::{DecodeError, Error, ErrorCode};
pub use ids::{ConnectionId, Side, StreamId};
pub use record::CipherSuite;
pub use session::{Event, ReadOutcome, Session};
