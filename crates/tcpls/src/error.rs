//! Errors of the runtime: socket errors, the end of a session, calls that
//! fail without ending it, and a peer's stream reset.

use std::io;

use tcpls_proto::CallError;

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket operation failed (connect refused, bind, ...).
    // Transparent: the I/O error's own text, once (an outer "{0}" would
    // repeat it when the chain is printed, as anyhow's `{:#}` does).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The session has ended (failed or closed), for this reason.
    #[error(transparent)]
    Session(#[from] tcpls_proto::Error),
    /// The call failed and the session goes on (a misuse, a refused join).
    #[error(transparent)]
    Call(CallError),
}

impl From<CallError> for Error {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Closed(e) => Error::Session(e),
            other => Error::Call(other),
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) => e,
            Error::Session(e) => session_to_io(e),
            Error::Call(e) => call_to_io(e),
        }
    }
}

/// The peer reset the stream (RESET_STREAM) with an application code.
/// Reads of a reset stream fail with an [`io::Error`] of kind
/// `ConnectionReset` that carries this value:
///
/// ```
/// # use tcpls::StreamReset;
/// # fn f(e: std::io::Error) {
/// if let Some(reset) = StreamReset::from_io(&e) {
///     println!("the peer gave up on the stream with code {}", reset.code);
/// }
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stream reset by peer (code {code})")]
pub struct StreamReset {
    /// The application's code from RESET_STREAM.
    pub code: u32,
}

impl StreamReset {
    /// The reset inside an I/O error from a stream read, if that is what
    /// it reports.
    pub fn from_io(e: &io::Error) -> Option<Self> {
        e.get_ref()?.downcast_ref::<Self>().copied()
    }
}

impl From<StreamReset> for io::Error {
    fn from(r: StreamReset) -> Self {
        io::Error::new(io::ErrorKind::ConnectionReset, r)
    }
}

/// Maps a session error to the `io::ErrorKind` an `AsyncRead`/`AsyncWrite`
/// user expects.
pub(crate) fn session_to_io(e: tcpls_proto::Error) -> io::Error {
    use io::ErrorKind;
    use tcpls_proto::Error as E;
    let kind = match &e {
        E::PeerClosed { .. } | E::ConnectionLost(_) => ErrorKind::ConnectionReset,
        E::LocallyClosed { .. } => ErrorKind::NotConnected,
        E::HandshakeTimeout | E::IdleTimeout => ErrorKind::TimedOut,
        _ => ErrorKind::InvalidData,
    };
    io::Error::new(kind, e)
}

/// Maps a failed call to an `io::Error`: the session's end as
/// [`session_to_io`] does, a misuse as `InvalidInput`.
pub(crate) fn call_to_io(e: CallError) -> io::Error {
    match e {
        CallError::Closed(e) => session_to_io(e),
        CallError::JoinRefused(_) => io::Error::new(io::ErrorKind::PermissionDenied, e),
        other => io::Error::new(io::ErrorKind::InvalidInput, other),
    }
}
