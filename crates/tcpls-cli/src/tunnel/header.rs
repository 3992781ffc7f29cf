//! The tunnel's stream header: the first bytes of every tunnel stream say
//! where the tunnel server should connect it, and the server answers with
//! one status byte before relaying. A TLV with SOCKS5's address types and
//! reply codes (RFC 1928), so the SOCKS5 front end maps one to the other:
//!
//! ```text
//! type (1) | length (1) | value (length bytes)
//!   0x00     0            the server's --to destination
//!   0x01     6            IPv4 address (4), port (2, big endian)
//!   0x03     n + 2        domain name (n bytes, 1..=253), port (2)
//!   0x04     18           IPv6 address (16), port (2)
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// Where a tunnel stream goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The tunnel server's `--to`.
    Default,
    /// An address.
    Addr(SocketAddr),
    /// A host name the tunnel server resolves, and a port.
    Name(String, u16),
}

const DEFAULT: u8 = 0x00;
const IPV4: u8 = 0x01;
const NAME: u8 = 0x03;
const IPV6: u8 = 0x04;

/// Longest domain name (RFC 1035), so that a name and its port fit the
/// one-byte length.
pub const MAX_NAME: usize = 253;

/// A header that cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("unknown destination type {0:#04x}")]
    UnknownType(u8),
    #[error("destination type {kind:#04x} with length {len}")]
    BadLength { kind: u8, len: usize },
    #[error("destination name is not a valid host name")]
    BadName,
    #[error("the stream ended before its destination header")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The tunnel server's answer: SOCKS5's reply codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Connected = 0,
    GeneralFailure = 1,
    NotAllowed = 2,
    NetworkUnreachable = 3,
    HostUnreachable = 4,
    ConnectionRefused = 5,
    TimedOut = 6,
    CommandNotSupported = 7,
    AddressTypeNotSupported = 8,
}

impl Status {
    pub fn from_u8(b: u8) -> Status {
        match b {
            0 => Status::Connected,
            2 => Status::NotAllowed,
            3 => Status::NetworkUnreachable,
            4 => Status::HostUnreachable,
            5 => Status::ConnectionRefused,
            6 => Status::TimedOut,
            7 => Status::CommandNotSupported,
            8 => Status::AddressTypeNotSupported,
            _ => Status::GeneralFailure,
        }
    }

    /// The status for a failed connection attempt.
    pub fn from_io(e: &std::io::Error) -> Status {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused => Status::ConnectionRefused,
            K::TimedOut => Status::TimedOut,
            K::HostUnreachable => Status::HostUnreachable,
            K::NetworkUnreachable => Status::NetworkUnreachable,
            _ => Status::GeneralFailure,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Status::Connected => "connected",
            Status::GeneralFailure => "general failure",
            Status::NotAllowed => "destination not allowed by the tunnel server",
            Status::NetworkUnreachable => "network unreachable",
            Status::HostUnreachable => "host unreachable",
            Status::ConnectionRefused => "connection refused",
            Status::TimedOut => "timed out",
            Status::CommandNotSupported => "command not supported",
            Status::AddressTypeNotSupported => "address type not supported",
        }
    }
}

/// True for a name a resolver may be asked about: letters, digits,
/// hyphens, dots and underscores, no empty label.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl Destination {
    /// The header bytes.
    pub fn encode(&self) -> Result<Vec<u8>, HeaderError> {
        let mut out = Vec::with_capacity(20);
        match self {
            Destination::Default => out.extend_from_slice(&[DEFAULT, 0]),
            Destination::Addr(SocketAddr::V4(a)) => {
                out.extend_from_slice(&[IPV4, 6]);
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
            Destination::Addr(SocketAddr::V6(a)) => {
                out.extend_from_slice(&[IPV6, 18]);
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
            Destination::Name(name, port) => {
                if !valid_name(name) {
                    return Err(HeaderError::BadName);
                }
                out.extend_from_slice(&[NAME, (name.len() + 2) as u8]);
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(&port.to_be_bytes());
            }
        }
        Ok(out)
    }

    /// Decodes a type and its value.
    pub fn decode(kind: u8, value: &[u8]) -> Result<Destination, HeaderError> {
        let bad = || HeaderError::BadLength {
            kind,
            len: value.len(),
        };
        let port = |v: &[u8]| u16::from_be_bytes([v[v.len() - 2], v[v.len() - 1]]);
        Ok(match kind {
            DEFAULT if value.is_empty() => Destination::Default,
            IPV4 if value.len() == 6 => {
                let ip = Ipv4Addr::new(value[0], value[1], value[2], value[3]);
                Destination::Addr(SocketAddr::new(IpAddr::V4(ip), port(value)))
            }
            IPV6 if value.len() == 18 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&value[..16]);
                Destination::Addr(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port(value)))
            }
            NAME if value.len() > 2 => {
                let name = std::str::from_utf8(&value[..value.len() - 2])
                    .map_err(|_| HeaderError::BadName)?;
                if !valid_name(name) {
                    return Err(HeaderError::BadName);
                }
                Destination::Name(name.to_string(), port(value))
            }
            DEFAULT | IPV4 | IPV6 | NAME => return Err(bad()),
            other => return Err(HeaderError::UnknownType(other)),
        })
    }

    /// Reads a header from the start of a stream (exactly its bytes).
    pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Destination, HeaderError> {
        let mut tl = [0u8; 2];
        read_exact(r, &mut tl).await?;
        let mut value = vec![0u8; tl[1] as usize];
        read_exact(r, &mut value).await?;
        Destination::decode(tl[0], &value)
    }
}

async fn read_exact<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), HeaderError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(HeaderError::Truncated),
        Err(e) => Err(e.into()),
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Default => write!(f, "(the server's --to)"),
            Destination::Addr(a) => write!(f, "{a}"),
            Destination::Name(n, p) => write!(f, "{n}:{p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn round_trip(d: Destination) {
        let bytes = d.encode().unwrap();
        let mut r = &bytes[..];
        assert_eq!(Destination::read(&mut r).await.unwrap(), d);
        assert!(r.is_empty(), "read exactly the header");
    }

    #[tokio::test]
    async fn headers_round_trip() {
        round_trip(Destination::Default).await;
        round_trip(Destination::Addr("10.1.2.3:22".parse().unwrap())).await;
        round_trip(Destination::Addr("[fd00::1]:443".parse().unwrap())).await;
        round_trip(Destination::Name("example.com".into(), 80)).await;
        round_trip(Destination::Name("a".repeat(63) + ".b", 1)).await;
    }

    #[test]
    fn bad_headers_are_typed_errors() {
        assert!(matches!(
            Destination::decode(0x09, &[]),
            Err(HeaderError::UnknownType(9))
        ));
        assert!(matches!(
            Destination::decode(IPV4, &[1, 2, 3]),
            Err(HeaderError::BadLength { .. })
        ));
        assert!(matches!(
            Destination::decode(NAME, b"bad name\0\x50"),
            Err(HeaderError::BadName)
        ));
        assert!(matches!(
            Destination::decode(NAME, &[0, 80]),
            Err(HeaderError::BadLength { .. })
        ));
        assert!(Destination::Name("x..y".into(), 1).encode().is_err());
        assert!(Destination::Name("a".repeat(254), 1).encode().is_err());
    }

    #[tokio::test]
    async fn a_short_stream_is_truncated() {
        let mut r = &[IPV4, 6, 10, 0][..];
        assert!(matches!(
            Destination::read(&mut r).await,
            Err(HeaderError::Truncated)
        ));
    }
}
