//! Typed errors of the protocol core.
//!
//! Every way a session can end has an [`ErrorCode`] that travels in a CLOSE
//! frame, so the peer learns why; [`Error`] is that reason as the local
//! application sees it. A call that fails without ending the session (a
//! misuse, an unknown stream, a refused join) returns a [`CallError`]; its
//! [`CallError::Closed`] carries the [`Error`] of a session that has ended.

use std::fmt;

/// Error code carried by a CLOSE frame. (RESET_STREAM carries the
/// application's own `u32`, not an `ErrorCode`.)
///
/// Codes below `0x100` are the transport's; applications use their own values
/// through [`ErrorCode::app`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// Orderly close, nothing went wrong.
    pub const NO_ERROR: Self = Self(0x0);
    /// The implementation hit a state it cannot continue from.
    pub const INTERNAL: Self = Self(0x1);
    /// The peer sent more than the credit it was given.
    pub const FLOW_CONTROL: Self = Self(0x2);
    /// The peer opened more streams than allowed.
    pub const STREAM_LIMIT: Self = Self(0x3);
    /// A frame was malformed or of an unknown type.
    pub const FRAME_ENCODING: Self = Self(0x4);
    /// A record failed to decrypt or was malformed.
    pub const BAD_RECORD: Self = Self(0x5);
    /// The peer broke a protocol rule (wrong stream direction, data after FIN...).
    pub const PROTOCOL_VIOLATION: Self = Self(0x6);
    /// Nothing was received for the configured idle timeout.
    pub const IDLE_TIMEOUT: Self = Self(0x7);
    /// The record sequence reached the AEAD's usage limit.
    pub const KEY_LIMIT: Self = Self(0x8);
    /// First code available to applications.
    pub const APP_BASE: u32 = 0x100;

    /// An application-defined code (offset by [`Self::APP_BASE`] so it never
    /// collides with transport codes).
    pub const fn app(code: u32) -> Self {
        Self(Self::APP_BASE.saturating_add(code))
    }

    /// A short human-readable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::NO_ERROR => "NO_ERROR",
            Self::INTERNAL => "INTERNAL",
            Self::FLOW_CONTROL => "FLOW_CONTROL",
            Self::STREAM_LIMIT => "STREAM_LIMIT",
            Self::FRAME_ENCODING => "FRAME_ENCODING",
            Self::BAD_RECORD => "BAD_RECORD",
            Self::PROTOCOL_VIOLATION => "PROTOCOL_VIOLATION",
            Self::IDLE_TIMEOUT => "IDLE_TIMEOUT",
            Self::KEY_LIMIT => "KEY_LIMIT",
            c if c.0 >= Self::APP_BASE => "APPLICATION",
            _ => "UNKNOWN",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:x})", self.name(), self.0)
    }
}

/// A wire-format decoding failure. Each maps to a transport [`ErrorCode`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the structure needs.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A frame type this version does not know.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownFrame(u8),
    /// A length field points outside its container.
    #[error("{0} length out of bounds")]
    BadLength(&'static str),
    /// A field holds a value the protocol forbids.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Why a session ended: failed or closed. The session is over once one is
/// reported; [`Error::code`] is what the CLOSE frame told (or tells) the
/// peer.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// TLS handshake failure (OpenSSL's message).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// The handshake did not complete within the configured timeout.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// A record could not be authenticated or parsed.
    #[error("bad record: {0}")]
    BadRecord(&'static str),
    /// A frame could not be decoded.
    #[error("frame decoding failed: {0}")]
    Decode(#[from] DecodeError),
    /// The peer exceeded flow-control credit.
    #[error("flow control violated: {0}")]
    FlowControl(&'static str),
    /// The peer opened more streams than allowed.
    #[error("stream limit exceeded")]
    StreamLimit,
    /// The peer broke a protocol rule.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// The peer closed the session.
    #[error("closed by peer: {code}: {reason}")]
    PeerClosed {
        /// The peer's code.
        code: ErrorCode,
        /// The peer's reason text.
        reason: String,
    },
    /// This side closed the session.
    #[error("closed locally: {code}: {reason}")]
    LocallyClosed {
        /// The code sent to the peer.
        code: ErrorCode,
        /// The reason sent to the peer.
        reason: String,
    },
    /// The peer sent a TLS alert.
    #[error("TLS alert {0} from peer")]
    Alert(u8),
    /// No traffic for the idle timeout.
    #[error("idle timeout")]
    IdleTimeout,
    /// Too many records under one key.
    #[error("AEAD key usage limit reached")]
    KeyLimit,
    /// The TCP connection failed (reset, unreachable, local I/O error).
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// A configuration that cannot be used (missing certificate, ...).
    #[error("configuration: {0}")]
    Config(&'static str),
    /// A configuration that cannot be used, with details (a PEM file that
    /// does not parse, a key that does not match its certificate, an
    /// unknown key exchange group...).
    #[error("configuration: {0}")]
    BadConfig(String),
    /// The peer's certificate failed verification (the handshake was
    /// refused by this side).
    #[error("certificate verification failed: {reason}")]
    Certificate {
        /// OpenSSL's reason.
        reason: String,
        /// The certificate is self-signed, or its chain ends in a root
        /// this side does not trust that signed itself: the usual case of
        /// a lab server (trust its certificate instead).
        self_signed: bool,
    },
    /// Unexpected internal state (a bug, never the peer's fault).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The code this error puts in the CLOSE frame sent to the peer.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Handshake(_)
            | Error::HandshakeTimeout
            | Error::Internal(_)
            | Error::Config(_)
            | Error::BadConfig(_)
            | Error::Certificate { .. }
            | Error::ConnectionLost(_) => ErrorCode::INTERNAL,
            Error::BadRecord(_) | Error::Alert(_) => ErrorCode::BAD_RECORD,
            Error::Decode(_) => ErrorCode::FRAME_ENCODING,
            Error::FlowControl(_) => ErrorCode::FLOW_CONTROL,
            Error::StreamLimit => ErrorCode::STREAM_LIMIT,
            Error::Protocol(_) => ErrorCode::PROTOCOL_VIOLATION,
            Error::IdleTimeout => ErrorCode::IDLE_TIMEOUT,
            Error::KeyLimit => ErrorCode::KEY_LIMIT,
            Error::PeerClosed { code, .. } | Error::LocallyClosed { code, .. } => *code,
        }
    }
}

/// Why one call on a session failed. Only [`CallError::Closed`] means the
/// session is over (and says why); the others leave it as it was.
///
/// ```
/// # use tcpls_proto::{CallError, Session, StreamId};
/// # fn f(s: &mut Session) {
/// match s.write(StreamId(1000), b"x") {
///     Err(CallError::Closed(reason)) => eprintln!("session ended: {reason} ({})", reason.code()),
///     Err(e) => eprintln!("this call failed, the session goes on: {e}"),
///     Ok(n) => println!("queued {n} bytes"),
/// }
/// # }
/// ```
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The session has ended, for this reason.
    #[error("session ended: {0}")]
    Closed(Error),
    /// A local misuse of the API (unknown stream or connection, writing
    /// after finish, joining as a server, ...).
    #[error("{0}")]
    Usage(&'static str),
    /// A joining connection was refused; the session is unaffected.
    #[error("join refused: {0}")]
    JoinRefused(&'static str),
}

impl From<Error> for CallError {
    fn from(e: Error) -> Self {
        CallError::Closed(e)
    }
}

impl CallError {
    /// The reason the session ended, if that is why the call failed.
    pub fn session_error(&self) -> Option<&Error> {
        match self {
            CallError::Closed(e) => Some(e),
            _ => None,
        }
    }
}
