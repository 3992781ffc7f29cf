//! Errors of the runtime: socket errors and session errors.

/// Why an operation on a session failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket operation failed (connect refused, bind, ...).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The session failed or was closed.
    #[error(transparent)]
    Session(#[from] tcpls_proto::Error),
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) => e,
            Error::Session(e) => session_to_io(e),
        }
    }
}

/// Maps a session error to the `io::ErrorKind` an `AsyncRead`/`AsyncWrite`
/// user expects.
pub(crate) fn session_to_io(e: tcpls_proto::Error) -> std::io::Error {
    use std::io::ErrorKind;
    use tcpls_proto::Error as E;
    let kind = match &e {
        E::PeerClosed { .. } | E::ConnectionLost(_) => ErrorKind::ConnectionReset,
        E::LocallyClosed { .. } => ErrorKind::NotConnected,
        E::HandshakeTimeout | E::IdleTimeout => ErrorKind::TimedOut,
        E::Usage(_) => ErrorKind::InvalidInput,
        _ => ErrorKind::InvalidData,
    };
    std::io::Error::new(kind, e)
}
