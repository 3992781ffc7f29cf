//! TCPLS frames: the plaintext of every post-handshake record is a sequence of
//! frames. Each frame is written as `[body][type]` and the record is parsed
//! from its end, so the payload of a STREAM frame sits before its header and
//! the first frame's data starts at byte 0 of the record: stream data can be
//! handed out as a slice of the decrypted record without copying.
//!
//! All integers are fixed-width big-endian (not varints: a varint cannot be
//! read backwards). Layouts, last field nearest to the type byte:
//!
//! | type | name | layout (front ... back) |
//! |---|---|---|
//! | 0x00 | PADDING | `[type]` |
//! | 0x01 | PING | `[type]` |
//! | 0x02 | STREAM | `[data][stream u32][offset u64][len u16][type]` |
//! | 0x03 | STREAM + FIN | same as STREAM |
//! | 0x04 | ACK | `[conn u32][highest record seq u64][type]` |
//! | 0x05 | NEW_TOKEN | `[token 32][seq u32][type]` |
//! | 0x06 | CONNECTION_RESET | `[conn u32][type]` |
//! | 0x07 | NEW_ADDRESS | `[addr 4 or 16][port u16][family u8][type]` |
//! | 0x08 | REMOVE_ADDRESS | same as NEW_ADDRESS |
//! | 0x09 | STREAM_CHANGE | `[stream u32][conn u32][type]` |
//! | 0x0a | MAX_DATA | `[max u64][type]` |
//! | 0x0b | MAX_STREAM_DATA | `[stream u32][max u64][type]` |
//! | 0x0c | RESET_STREAM | `[stream u32][code u32][final size u64][type]` |
//! | 0x0d | TRANSPORT_OPTION | `[value][len u16][option u16][conn u32][request u32][type]` |
//! | 0x0e | CLOSE | `[reason][len u16][code u32][type]` |
//! | 0x0f | MAX_STREAMS | `[max u32][type]` |
//! | 0x10 | KEY_UPDATE | `[generation u32][type]` |
//! | 0x11 | TRANSPORT_OPTION_ACK | `[reason][len u16][status u8][request u32][type]` |
//! | 0x12 | TRANSPORT_OPTION_DATA | `[data][len u16][offset u32][request u32][type]` |

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::DecodeError;
use crate::ids::{ConnectionId, StreamId};
use crate::wire::codec::{RevReader, Take};

/// Frame type byte values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum FrameType {
    Padding = 0x00,
    Ping = 0x01,
    Stream = 0x02,
    StreamFin = 0x03,
    Ack = 0x04,
    NewToken = 0x05,
    ConnectionReset = 0x06,
    NewAddress = 0x07,
    RemoveAddress = 0x08,
    StreamChange = 0x09,
    MaxData = 0x0a,
    MaxStreamData = 0x0b,
    ResetStream = 0x0c,
    TransportOption = 0x0d,
    Close = 0x0e,
    MaxStreams = 0x0f,
    KeyUpdate = 0x10,
    TransportOptionAck = 0x11,
    TransportOptionData = 0x12,
}

impl FrameType {
    fn from_u8(v: u8) -> Option<Self> {
        use FrameType::*;
        Some(match v {
            0x00 => Padding,
            0x01 => Ping,
            0x02 => Stream,
            0x03 => StreamFin,
            0x04 => Ack,
            0x05 => NewToken,
            0x06 => ConnectionReset,
            0x07 => NewAddress,
            0x08 => RemoveAddress,
            0x09 => StreamChange,
            0x0a => MaxData,
            0x0b => MaxStreamData,
            0x0c => ResetStream,
            0x0d => TransportOption,
            0x0e => Close,
            0x0f => MaxStreams,
            0x10 => KeyUpdate,
            0x11 => TransportOptionAck,
            0x12 => TransportOptionData,
            _ => return None,
        })
    }
}

/// Bytes a STREAM frame adds after its data.
pub const STREAM_HEADER_LEN: usize = 4 + 8 + 2 + 1;
/// Encoded ACK frame: connection id, sequence number, type.
pub const ACK_FRAME_LEN: usize = 4 + 8 + 1;
/// Longest CLOSE reason we send (longer reasons are cut).
pub const MAX_REASON_LEN: usize = 1024;
/// Length of a join token.
pub const TOKEN_LEN: usize = 32;

/// TRANSPORT_OPTION's connection field for "every connection of the
/// session".
pub const ALL_CONNECTIONS: u32 = u32::MAX;

/// Longest option value (and answer reason) this side puts in a
/// TRANSPORT_OPTION (or TRANSPORT_OPTION_ACK) frame; a receiver takes any
/// length that fits the record.
pub const MAX_OPTION_LEN: usize = 256;

/// Transport options exchanged in TRANSPORT_OPTION frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportOptionId(pub u16);

impl TransportOptionId {
    /// TCP User Timeout in milliseconds (u32 value).
    pub const USER_TIMEOUT: Self = Self(1);
    /// Congestion control algorithm name (ASCII value).
    pub const CONGESTION_CONTROL: Self = Self(2);
    /// A congestion controller shipped as a BPF object: the value is
    /// `[length u32][sha256 32][name]`, the object follows in
    /// TRANSPORT_OPTION_DATA frames of the same request.
    pub const CONGESTION_PROGRAM: Self = Self(3);
}

/// One decoded frame. Byte payloads borrow from the record plaintext.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Frame<'a> {
    Padding,
    Ping,
    Stream {
        id: StreamId,
        offset: u64,
        fin: bool,
        data: &'a [u8],
    },
    Ack {
        conn: ConnectionId,
        seq: u64,
    },
    NewToken {
        seq: u32,
        token: [u8; TOKEN_LEN],
    },
    ConnectionReset {
        conn: ConnectionId,
    },
    NewAddress(SocketAddr),
    RemoveAddress(SocketAddr),
    StreamChange {
        id: StreamId,
        conn: ConnectionId,
    },
    MaxData(u64),
    MaxStreamData {
        id: StreamId,
        max: u64,
    },
    ResetStream {
        id: StreamId,
        code: u32,
        final_size: u64,
    },
    /// A request that the peer apply a transport option, on connection
    /// `conn` or (`None`) on all of the session's connections; answered by
    /// a TRANSPORT_OPTION_ACK with the same `request`.
    TransportOption {
        request: u32,
        conn: Option<ConnectionId>,
        option: TransportOptionId,
        value: &'a [u8],
    },
    /// The answer to TRANSPORT_OPTION `request`: `status` 0 applied, else
    /// why not (see `OptionStatus`), with a reason text.
    TransportOptionAck {
        request: u32,
        status: u8,
        reason: &'a [u8],
    },
    /// `data` found at `offset` of the object a TRANSPORT_OPTION `request`
    /// announced (a congestion controller program).
    TransportOptionData {
        request: u32,
        offset: u32,
        data: &'a [u8],
    },
    Close {
        code: u32,
        reason: &'a [u8],
    },
    MaxStreams(u32),
    /// The sender's records on this connection after the one carrying
    /// this frame use key generation `gen` (section 2 of docs/protocol.md).
    KeyUpdate {
        gen: u32,
    },
}

/// Writes the header that follows `len` bytes of stream data already in `out`.
pub fn encode_stream_header(id: StreamId, offset: u64, len: u16, fin: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(&stream_header(id, offset, len, fin));
}

/// The header that follows `len` bytes of stream data.
pub fn stream_header(id: StreamId, offset: u64, len: u16, fin: bool) -> [u8; STREAM_HEADER_LEN] {
    let mut h = [0u8; STREAM_HEADER_LEN];
    h[..4].copy_from_slice(&id.0.to_be_bytes());
    h[4..12].copy_from_slice(&offset.to_be_bytes());
    h[12..14].copy_from_slice(&len.to_be_bytes());
    h[14] = if fin {
        FrameType::StreamFin
    } else {
        FrameType::Stream
    } as u8;
    h
}

fn encode_addr(addr: &SocketAddr, out: &mut Vec<u8>) {
    match addr.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
    out.push(if addr.is_ipv4() { 4 } else { 6 });
}

fn decode_addr(r: &mut RevReader<'_>) -> Result<SocketAddr, DecodeError> {
    let family = r.u8("address family")?;
    let port = r.u16("address port")?;
    let ip = match family {
        4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>("IPv4 address")?)),
        6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>("IPv6 address")?)),
        _ => return Err(DecodeError::Invalid("address family")),
    };
    Ok(SocketAddr::new(ip, port))
}

impl Frame<'_> {
    /// Appends the frame (body then type byte) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Padding => out.push(FrameType::Padding as u8),
            Frame::Ping => out.push(FrameType::Ping as u8),
            Frame::Stream {
                id,
                offset,
                fin,
                data,
            } => {
                debug_assert!(data.len() <= u16::MAX as usize);
                out.extend_from_slice(data);
                encode_stream_header(*id, *offset, data.len() as u16, *fin, out);
            }
            Frame::Ack { conn, seq } => {
                out.extend_from_slice(&conn.0.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.push(FrameType::Ack as u8);
            }
            Frame::NewToken { seq, token } => {
                out.extend_from_slice(token);
                out.extend_from_slice(&seq.to_be_bytes());
                out.push(FrameType::NewToken as u8);
            }
            Frame::ConnectionReset { conn } => {
                out.extend_from_slice(&conn.0.to_be_bytes());
                out.push(FrameType::ConnectionReset as u8);
            }
            Frame::NewAddress(a) => {
                encode_addr(a, out);
                out.push(FrameType::NewAddress as u8);
            }
            Frame::RemoveAddress(a) => {
                encode_addr(a, out);
                out.push(FrameType::RemoveAddress as u8);
            }
            Frame::StreamChange { id, conn } => {
                out.extend_from_slice(&id.0.to_be_bytes());
                out.extend_from_slice(&conn.0.to_be_bytes());
                out.push(FrameType::StreamChange as u8);
            }
            Frame::MaxData(max) => {
                out.extend_from_slice(&max.to_be_bytes());
                out.push(FrameType::MaxData as u8);
            }
            Frame::MaxStreamData { id, max } => {
                out.extend_from_slice(&id.0.to_be_bytes());
                out.extend_from_slice(&max.to_be_bytes());
                out.push(FrameType::MaxStreamData as u8);
            }
            Frame::ResetStream {
                id,
                code,
                final_size,
            } => {
                out.extend_from_slice(&id.0.to_be_bytes());
                out.extend_from_slice(&code.to_be_bytes());
                out.extend_from_slice(&final_size.to_be_bytes());
                out.push(FrameType::ResetStream as u8);
            }
            Frame::TransportOption {
                request,
                conn,
                option,
                value,
            } => {
                debug_assert!(value.len() <= u16::MAX as usize);
                out.extend_from_slice(value);
                out.extend_from_slice(&(value.len() as u16).to_be_bytes());
                out.extend_from_slice(&option.0.to_be_bytes());
                out.extend_from_slice(&conn.map_or(ALL_CONNECTIONS, |c| c.0).to_be_bytes());
                out.extend_from_slice(&request.to_be_bytes());
                out.push(FrameType::TransportOption as u8);
            }
            Frame::TransportOptionAck {
                request,
                status,
                reason,
            } => {
                let reason = &reason[..reason.len().min(MAX_REASON_LEN)];
                out.extend_from_slice(reason);
                out.extend_from_slice(&(reason.len() as u16).to_be_bytes());
                out.push(*status);
                out.extend_from_slice(&request.to_be_bytes());
                out.push(FrameType::TransportOptionAck as u8);
            }
            Frame::TransportOptionData {
                request,
                offset,
                data,
            } => {
                debug_assert!(data.len() <= u16::MAX as usize);
                out.extend_from_slice(data);
                out.extend_from_slice(&(data.len() as u16).to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(&request.to_be_bytes());
                out.push(FrameType::TransportOptionData as u8);
            }
            Frame::Close { code, reason } => {
                let reason = &reason[..reason.len().min(MAX_REASON_LEN)];
                out.extend_from_slice(reason);
                out.extend_from_slice(&(reason.len() as u16).to_be_bytes());
                out.extend_from_slice(&code.to_be_bytes());
                out.push(FrameType::Close as u8);
            }
            Frame::MaxStreams(max) => {
                out.extend_from_slice(&max.to_be_bytes());
                out.push(FrameType::MaxStreams as u8);
            }
            Frame::KeyUpdate { gen } => {
                out.extend_from_slice(&gen.to_be_bytes());
                out.push(FrameType::KeyUpdate as u8);
            }
        }
    }

    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        let addr_len = |a: &SocketAddr| if a.is_ipv4() { 4 } else { 16 } + 3;
        1 + match self {
            Frame::Padding | Frame::Ping => 0,
            Frame::Stream { data, .. } => data.len() + STREAM_HEADER_LEN - 1,
            Frame::Ack { .. } => ACK_FRAME_LEN - 1,
            Frame::NewToken { .. } => TOKEN_LEN + 4,
            Frame::ConnectionReset { .. } => 4,
            Frame::NewAddress(a) | Frame::RemoveAddress(a) => addr_len(a),
            Frame::StreamChange { .. } => 8,
            Frame::MaxData(_) => 8,
            Frame::MaxStreamData { .. } => 12,
            Frame::ResetStream { .. } => 16,
            Frame::TransportOption { value, .. } => value.len() + 12,
            Frame::TransportOptionAck { reason, .. } => reason.len().min(MAX_REASON_LEN) + 7,
            Frame::TransportOptionData { data, .. } => data.len() + 10,
            Frame::Close { reason, .. } => reason.len().min(MAX_REASON_LEN) + 6,
            Frame::MaxStreams(_) | Frame::KeyUpdate { .. } => 4,
        }
    }
}

/// Iterates over the frames of a record plaintext, from the last to the first.
///
/// Yields an error once (then stops) if the plaintext is malformed.
///
/// ```
/// use tcpls_proto::wire::{Frame, FrameIter};
/// let mut rec = Vec::new();
/// Frame::Ping.encode(&mut rec);
/// Frame::MaxData(7).encode(&mut rec);
/// let frames: Vec<_> = FrameIter::new(&rec).collect::<Result<_, _>>().unwrap();
/// assert_eq!(frames, vec![Frame::MaxData(7), Frame::Ping]);
/// ```
#[derive(Debug)]
pub struct FrameIter<'a> {
    r: RevReader<'a>,
    failed: bool,
}

impl<'a> FrameIter<'a> {
    /// Parses `plaintext` (the record content without its inner content type).
    pub fn new(plaintext: &'a [u8]) -> Self {
        Self {
            r: RevReader::new(plaintext),
            failed: false,
        }
    }

    fn next_frame(&mut self) -> Result<Frame<'a>, DecodeError> {
        let r = &mut self.r;
        let t = r.u8("frame type")?;
        let ty = FrameType::from_u8(t).ok_or(DecodeError::UnknownFrame(t))?;
        Ok(match ty {
            FrameType::Padding => Frame::Padding,
            FrameType::Ping => Frame::Ping,
            FrameType::Stream | FrameType::StreamFin => {
                let len = r.u16("stream length")? as usize;
                let offset = r.u64("stream offset")?;
                let id = StreamId(r.u32("stream id")?);
                if offset.checked_add(len as u64).is_none() {
                    return Err(DecodeError::Invalid("stream offset"));
                }
                let data = r
                    .take(len, "stream data")
                    .map_err(|_| DecodeError::BadLength("stream data"))?;
                Frame::Stream {
                    id,
                    offset,
                    fin: ty == FrameType::StreamFin,
                    data,
                }
            }
            FrameType::Ack => {
                let seq = r.u64("ack seq")?;
                let conn = ConnectionId(r.u32("ack connection")?);
                Frame::Ack { conn, seq }
            }
            FrameType::NewToken => {
                let seq = r.u32("token seq")?;
                let token = r.array::<TOKEN_LEN>("token")?;
                Frame::NewToken { seq, token }
            }
            FrameType::ConnectionReset => Frame::ConnectionReset {
                conn: ConnectionId(r.u32("reset connection")?),
            },
            FrameType::NewAddress => Frame::NewAddress(decode_addr(r)?),
            FrameType::RemoveAddress => Frame::RemoveAddress(decode_addr(r)?),
            FrameType::StreamChange => {
                let conn = ConnectionId(r.u32("stream change connection")?);
                let id = StreamId(r.u32("stream change stream")?);
                Frame::StreamChange { id, conn }
            }
            FrameType::MaxData => Frame::MaxData(r.u64("max data")?),
            FrameType::MaxStreamData => {
                let max = r.u64("max stream data")?;
                let id = StreamId(r.u32("max stream data stream")?);
                Frame::MaxStreamData { id, max }
            }
            FrameType::ResetStream => {
                let final_size = r.u64("reset final size")?;
                let code = r.u32("reset code")?;
                let id = StreamId(r.u32("reset stream")?);
                Frame::ResetStream {
                    id,
                    code,
                    final_size,
                }
            }
            FrameType::TransportOption => {
                let request = r.u32("option request")?;
                let conn = match r.u32("option connection")? {
                    ALL_CONNECTIONS => None,
                    c => Some(ConnectionId(c)),
                };
                let option = TransportOptionId(r.u16("option id")?);
                let len = r.u16("option length")? as usize;
                let value = r
                    .take(len, "option value")
                    .map_err(|_| DecodeError::BadLength("option value"))?;
                Frame::TransportOption {
                    request,
                    conn,
                    option,
                    value,
                }
            }
            FrameType::TransportOptionAck => {
                let request = r.u32("option ack request")?;
                let status = r.u8("option ack status")?;
                let len = r.u16("option ack reason length")? as usize;
                let reason = r
                    .take(len, "option ack reason")
                    .map_err(|_| DecodeError::BadLength("option ack reason"))?;
                Frame::TransportOptionAck {
                    request,
                    status,
                    reason,
                }
            }
            FrameType::TransportOptionData => {
                let request = r.u32("option data request")?;
                let offset = r.u32("option data offset")?;
                let len = r.u16("option data length")? as usize;
                let data = r
                    .take(len, "option data")
                    .map_err(|_| DecodeError::BadLength("option data"))?;
                Frame::TransportOptionData {
                    request,
                    offset,
                    data,
                }
            }
            FrameType::Close => {
                let code = r.u32("close code")?;
                let len = r.u16("close reason length")? as usize;
                let reason = r
                    .take(len, "close reason")
                    .map_err(|_| DecodeError::BadLength("close reason"))?;
                Frame::Close { code, reason }
            }
            FrameType::MaxStreams => Frame::MaxStreams(r.u32("max streams")?),
            FrameType::KeyUpdate => Frame::KeyUpdate {
                gen: r.u32("key generation")?,
            },
        })
    }
}

impl<'a> Iterator for FrameIter<'a> {
    type Item = Result<Frame<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.remaining() == 0 {
            return None;
        }
        let f = self.next_frame();
        self.failed = f.is_err();
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| SocketAddr::from((a, p))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(a, p)| SocketAddr::from((a, p))),
        ]
    }

    /// Owned description of a frame, so proptest can generate borrowed ones.
    fn arb_frame() -> impl Strategy<Value = (u8, u64, u64, u32, Vec<u8>, SocketAddr, [u8; 32])> {
        (
            0u8..19,
            any::<u64>(),
            0u64..(u64::MAX / 2),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..600),
            arb_addr(),
            any::<[u8; 32]>(),
        )
    }

    fn build<'a>(
        t: u8,
        a: u64,
        off: u64,
        b: u32,
        data: &'a [u8],
        addr: SocketAddr,
        tok: [u8; 32],
    ) -> Frame<'a> {
        match t {
            0 => Frame::Padding,
            1 => Frame::Ping,
            2 | 3 => Frame::Stream {
                id: StreamId(b),
                offset: off,
                fin: t == 3,
                data,
            },
            4 => Frame::Ack {
                conn: ConnectionId(b),
                seq: a,
            },
            5 => Frame::NewToken { seq: b, token: tok },
            6 => Frame::ConnectionReset {
                conn: ConnectionId(b),
            },
            7 => Frame::NewAddress(addr),
            8 => Frame::RemoveAddress(addr),
            9 => Frame::StreamChange {
                id: StreamId(b),
                conn: ConnectionId(a as u32),
            },
            10 => Frame::MaxData(a),
            11 => Frame::MaxStreamData {
                id: StreamId(b),
                max: a,
            },
            12 => Frame::ResetStream {
                id: StreamId(b),
                code: a as u32,
                final_size: off,
            },
            13 => Frame::TransportOption {
                request: a as u32,
                conn: (!b.is_multiple_of(3)).then_some(ConnectionId(b / 2)),
                option: TransportOptionId(b as u16),
                value: &data[..data.len().min(MAX_OPTION_LEN)],
            },
            17 => Frame::TransportOptionAck {
                request: b,
                status: a as u8,
                reason: data,
            },
            18 => Frame::TransportOptionData {
                request: b,
                offset: a as u32,
                data,
            },
            14 => Frame::Close {
                code: b,
                reason: data,
            },
            15 => Frame::MaxStreams(b),
            _ => Frame::KeyUpdate { gen: b },
        }
    }

    proptest! {
        #[test]
        fn every_frame_round_trips(frames in proptest::collection::vec(arb_frame(), 1..8)) {
            let built: Vec<Frame<'_>> = frames
                .iter()
                .map(|(t, a, off, b, d, addr, tok)| build(*t, *a, *off, *b, d, *addr, *tok))
                .collect();
            let mut rec = Vec::new();
            for f in &built {
                let before = rec.len();
                f.encode(&mut rec);
                prop_assert_eq!(rec.len() - before, f.encoded_len());
            }
            let mut parsed: Vec<Frame<'_>> = FrameIter::new(&rec).collect::<Result<_, _>>().unwrap();
            parsed.reverse();
            prop_assert_eq!(parsed, built);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            for f in FrameIter::new(&bytes) {
                if f.is_err() { break; }
            }
        }
    }

    #[test]
    fn stream_data_is_at_front() {
        let mut rec = Vec::new();
        Frame::Stream {
            id: StreamId(4),
            offset: 9,
            fin: true,
            data: b"hello",
        }
        .encode(&mut rec);
        assert_eq!(&rec[..5], b"hello");
        let f = FrameIter::new(&rec).next().unwrap().unwrap();
        match f {
            Frame::Stream { data, .. } => assert_eq!(data.as_ptr(), rec.as_ptr()),
            _ => panic!("wrong frame"),
        }
    }

    #[test]
    fn bad_lengths_are_errors() {
        // STREAM frame claiming 100 bytes with only 3 present.
        let mut rec = vec![1, 2, 3];
        encode_stream_header(StreamId(0), 0, 100, false, &mut rec);
        let e = FrameIter::new(&rec).next().unwrap().unwrap_err();
        assert_eq!(e, DecodeError::BadLength("stream data"));
        assert_eq!(
            FrameIter::new(&[0x77]).next().unwrap(),
            Err(DecodeError::UnknownFrame(0x77))
        );
        // Offset overflow.
        let mut rec = vec![1];
        encode_stream_header(StreamId(0), u64::MAX, 1, false, &mut rec);
        assert!(FrameIter::new(&rec).next().unwrap().is_err());
    }
}
