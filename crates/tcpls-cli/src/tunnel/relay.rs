//! Moving bytes between a local TCP connection and its tunnel stream, both
//! ways, until both directions ended: an EOF is passed on as a half-close
//! (FIN becomes the stream's end and back), a reset as a reset (a TCP RST
//! becomes RESET_STREAM and back), so the applications at both ends see
//! what they would see over one TCP connection.

use bytes::BytesMut;
use tcpls::{RecvStream, SendStream, StreamReset};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

/// RESET_STREAM code for "the local TCP connection was reset".
pub const RESET_CODE: u32 = 1;

/// Bytes read from the local connection at a time (one read, one
/// zero-copy stream write).
const CHUNK: usize = 64 << 10;

/// What one direction ended with.
#[derive(Debug)]
enum End {
    /// Its end of data, passed on; this many bytes moved.
    Finished(u64),
    /// A reset, passed on.
    Reset,
    /// The local connection failed while the stream was fine: the stream
    /// must be reset.
    LocalFailed,
}

/// Bytes moved each way by [`relay`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Moved {
    /// From the local connection into the tunnel.
    pub up: u64,
    /// From the tunnel to the local connection.
    pub down: u64,
    /// The relay ended in a reset (either side's).
    pub reset: bool,
}

/// Relays between `tcp` and a tunnel stream until both directions are
/// finished or either is reset.
pub async fn relay(mut tcp: TcpStream, mut send: SendStream, recv: RecvStream) -> Moved {
    let _ = tcp.set_nodelay(true);
    let mut moved = Moved::default();
    let mut reset_stream = false;
    {
        // Borrowed halves: unlike owned ones, dropping them sends no FIN,
        // which would reach the peer before the reset below.
        let (rd, wr) = tcp.split();
        let up = tcp_to_stream(rd, &mut send);
        let down = stream_to_tcp(recv, wr);
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        while !(up_done && down_done) {
            let end = tokio::select! {
                end = &mut up, if !up_done => {
                    up_done = true;
                    if let End::Finished(n) = end { moved.up = n }
                    end
                }
                end = &mut down, if !down_done => {
                    down_done = true;
                    if let End::Finished(n) = end { moved.down = n }
                    end
                }
            };
            match end {
                End::Finished(_) => {}
                End::Reset => {
                    moved.reset = true;
                    break;
                }
                End::LocalFailed => {
                    moved.reset = true;
                    reset_stream = true;
                    break;
                }
            }
        }
    }
    if reset_stream {
        let _ = send.reset(RESET_CODE);
    }
    if moved.reset {
        refuse(tcp);
    }
    moved
}

/// Local connection into the stream.
async fn tcp_to_stream(mut rd: ReadHalf<'_>, send: &mut SendStream) -> End {
    let mut total = 0u64;
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        buf.reserve(CHUNK);
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                return match send.finish().await {
                    Ok(()) => End::Finished(total),
                    Err(_) => End::Reset,
                }
            }
            Ok(n) => {
                total += n as u64;
                if send.write_chunk(buf.split().freeze()).await.is_err() {
                    // The stream is gone (reset by the peer, or the
                    // session ended): the local connection gets a reset.
                    return End::Reset;
                }
            }
            Err(_) => {
                let _ = send.reset(RESET_CODE);
                return End::Reset;
            }
        }
    }
}

/// The stream into the local connection.
async fn stream_to_tcp(mut recv: RecvStream, mut wr: WriteHalf<'_>) -> End {
    let mut total = 0u64;
    loop {
        match recv.read_chunk(CHUNK).await {
            Ok(Some(chunk)) => {
                total += chunk.len() as u64;
                if wr.write_all(&chunk).await.is_err() {
                    return End::LocalFailed;
                }
            }
            Ok(None) => {
                let _ = wr.shutdown().await;
                return End::Finished(total);
            }
            Err(e) => {
                if StreamReset::from_io(&e).is_none() {
                    tracing::debug!(error = %e, "tunnel stream failed");
                }
                return End::Reset;
            }
        }
    }
}

/// Closes a local connection with a reset (SO_LINGER 0): a tunnel that
/// could not be set up, or one whose other end was reset.
pub fn refuse(tcp: TcpStream) {
    let _ = socket2::SockRef::from(&tcp).set_linger(Some(std::time::Duration::ZERO));
    drop(tcp);
}
