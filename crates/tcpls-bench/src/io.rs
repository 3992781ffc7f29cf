//! The benchmark's tiny application protocol, the same over every peer.
//!
//! The client sends a 9-byte request, `kind || u64 BE`:
//! - `BULK n`: the server writes `n` pattern bytes and closes its side;
//! - `ECHO _`: the server echoes every byte until the client closes;
//! - `HELLO _`: the server writes one byte and closes (handshake rate: the
//!   client knows both sides finished).

use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const BULK: u8 = b'B';
pub const ECHO: u8 = b'E';
pub const HELLO: u8 = b'H';

/// Write size of the sender: large, as a bulk application would use.
pub const WRITE_SIZE: usize = 256 << 10;

/// Byte `i` of every bulk transfer (period 251, prime, so misplaced
/// chunks do not line up by accident).
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

pub fn request(kind: u8, n: u64) -> [u8; 9] {
    let mut r = [0u8; 9];
    r[0] = kind;
    r[1..].copy_from_slice(&n.to_be_bytes());
    r
}

/// How a server writes its bulk data: through each stack's best API. Byte
/// streams (TCP, TLS) copy it (`write_all`); stacks with a zero-copy write
/// (TCPLS and quinn, `write_chunk`) queue the `Bytes` themselves, as their
/// clients read with `read_chunk`.
pub trait ChunkWrite: AsyncWrite + Unpin {
    async fn write_bytes(&mut self, b: Bytes) -> io::Result<()> {
        self.write_all(&b).await
    }
}

impl ChunkWrite for tokio::net::TcpStream {}
impl ChunkWrite for tokio_openssl::SslStream<tokio::net::TcpStream> {}
impl ChunkWrite for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {}

impl ChunkWrite for tcpls::Stream {
    async fn write_bytes(&mut self, b: Bytes) -> io::Result<()> {
        self.send_half().write_chunk(b).await
    }
}

impl ChunkWrite for tokio::io::Join<quinn::RecvStream, quinn::SendStream> {
    async fn write_bytes(&mut self, b: Bytes) -> io::Result<()> {
        self.writer_mut()
            .write_chunk(b)
            .await
            .map_err(io::Error::other)
    }
}

/// Serves one request on `s` (server side of every peer).
pub async fn serve<S: AsyncRead + ChunkWrite>(mut s: S) -> io::Result<()> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await?;
    let n = u64::from_be_bytes(head[1..].try_into().expect("8 bytes"));
    match head[0] {
        BULK => send_pattern(&mut s, n).await?,
        ECHO => {
            let mut b = [0u8; 1];
            while s.read(&mut b).await? == 1 {
                s.write_all(&b).await?;
                s.flush().await?;
            }
        }
        HELLO => s.write_all(&[1]).await?,
        k => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown request kind {k}"),
            ))
        }
    }
    s.shutdown().await
}

/// Writes `n` pattern bytes in `WRITE_SIZE` writes.
async fn send_pattern<S: ChunkWrite>(s: &mut S, n: u64) -> io::Result<()> {
    // 251 bytes longer than a write, so every write can start at the
    // pattern offset where the previous one stopped.
    let block: Bytes = (0..(WRITE_SIZE + 251) as u64).map(pattern_byte).collect();
    let mut sent = 0u64;
    while sent < n {
        let off = (sent % 251) as usize;
        let k = (n - sent).min(WRITE_SIZE as u64) as usize;
        s.write_bytes(block.slice(off..off + k)).await?;
        sent += k as u64;
    }
    Ok(())
}

/// Checks that `data` is the pattern at stream offset `at`.
pub fn check_pattern(at: u64, data: &[u8]) -> io::Result<()> {
    match data
        .iter()
        .zip(at..)
        .position(|(&b, i)| b != pattern_byte(i))
    {
        None => Ok(()),
        Some(p) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "received byte at offset {} differs from the pattern",
                at + p as u64
            ),
        )),
    }
}

/// Client side of `BULK n` over a byte stream: reads to the end and checks
/// the length (and with `verify` every byte).
pub async fn bulk<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    n: u64,
    verify: bool,
    progress: &indicatif::ProgressBar,
) -> io::Result<()> {
    s.write_all(&request(BULK, n)).await?;
    s.flush().await?;
    let mut buf = vec![0u8; WRITE_SIZE];
    let mut got = 0u64;
    loop {
        let k = s.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        if verify {
            check_pattern(got, &buf[..k])?;
        }
        got += k as u64;
        progress.inc(k as u64);
    }
    expect_len(got, n)
}

/// Fails unless a transfer delivered exactly `want` bytes.
pub fn expect_len(got: u64, want: u64) -> io::Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("transfer ended after {got} of {want} bytes"),
        ))
    }
}

/// Client side of `HELLO`: one byte back proves both handshakes finished.
pub async fn hello<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> io::Result<()> {
    s.write_all(&request(HELLO, 0)).await?;
    s.flush().await?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await?;
    Ok(())
}

/// Client side of `ECHO`: `rounds` one-byte round trips, each timed.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    rounds: u32,
) -> io::Result<Vec<Duration>> {
    s.write_all(&request(ECHO, 0)).await?;
    let mut times = Vec::with_capacity(rounds as usize);
    let mut b = [7u8; 1];
    for _ in 0..rounds {
        let t = Instant::now();
        s.write_all(&b).await?;
        s.flush().await?;
        s.read_exact(&mut b).await?;
        times.push(t.elapsed());
    }
    s.shutdown().await?;
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_checks_offsets() {
        let data: Vec<u8> = (1000..3000).map(pattern_byte).collect();
        assert!(check_pattern(1000, &data).is_ok());
        assert!(check_pattern(1001, &data).is_err());
        let mut bad = data.clone();
        bad[777] ^= 1;
        let e = check_pattern(1000, &bad).unwrap_err().to_string();
        assert!(e.contains("1777"), "{e}");
    }

    impl ChunkWrite for tokio::io::DuplexStream {}

    #[tokio::test]
    async fn bulk_request_round_trip_over_a_pipe() {
        let (a, b) = tokio::io::duplex(64 << 10);
        let server = tokio::spawn(serve(b));
        let n = 3 * WRITE_SIZE as u64 + 17;
        bulk(a, n, true, &indicatif::ProgressBar::hidden())
            .await
            .unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn echo_and_hello() {
        let (a, b) = tokio::io::duplex(1024);
        tokio::spawn(serve(b));
        assert_eq!(echo(a, 5).await.unwrap().len(), 5);
        let (a, b) = tokio::io::duplex(1024);
        tokio::spawn(serve(b));
        hello(a).await.unwrap();
    }
}
