//! Identifiers shared by the wire format and the session.

use std::fmt;

/// Which end of the session this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Initiated the TLS handshake.
    Client,
    /// Accepted the TLS handshake.
    Server,
}

impl Side {
    /// The other side.
    pub fn peer(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

/// A stream identifier. Bit 0 tells who opened it (0: client, 1: server), so
/// both sides can open streams without coordination.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u32);

impl StreamId {
    /// The `index`-th stream opened by `side`.
    pub fn new(side: Side, index: u32) -> Self {
        StreamId(index << 1 | (side == Side::Server) as u32)
    }
    /// Who opened the stream.
    pub fn initiator(self) -> Side {
        if self.0 & 1 == 0 {
            Side::Client
        } else {
            Side::Server
        }
    }
    /// Position among the streams opened by [`Self::initiator`].
    pub fn index(self) -> u32 {
        self.0 >> 1
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream#{}", self.0)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A TCP connection's identifier within its session. Connection 0 is the one
/// that carried the TLS handshake; joined connections use the sequence number
/// of the token they joined with. It is part of every record's nonce.
///
/// ```
/// use tcpls_proto::ConnectionId;
/// assert_eq!(ConnectionId::FIRST, ConnectionId(0));
/// assert_eq!(ConnectionId(3).to_string(), "3");
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub u32);

impl ConnectionId {
    /// The connection that carried the handshake.
    pub const FIRST: Self = Self(0);
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
