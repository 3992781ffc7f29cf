//! The minimal HTTP/1.1 used on each stream: one request, one response.
//! Heads are parsed by `httparse`; the rest is written here because a full
//! HTTP stack (hyper) would hide the stream mapping we want to show, and
//! plain TLS peers (`openssl s_server -WWW`, `s_client`) only need this
//! much.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest request or response head accepted.
pub const MAX_HEAD: usize = 16 << 10;

/// Most header lines in a head.
const MAX_HEADERS: usize = 64;

/// A parsed request or response head.
#[derive(Debug)]
pub struct Head {
    /// `GET /path HTTP/1.1` or `HTTP/1.1 200 OK`, split on spaces.
    pub start: Vec<String>,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn content_length(&self) -> Result<Option<u64>> {
        self.header("content-length")
            .map(|v| v.trim().parse().context("bad Content-Length"))
            .transpose()
    }
}

/// Reads a head up to the blank line. Returns it and any body bytes read
/// past it. `Ok(None)` if the peer closed before sending anything. Each
/// byte is searched about once, however the head is split into reads (a
/// head sent a byte at a time costs linear, not quadratic, work).
pub async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<(Head, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let mut searched = 0;
    loop {
        if let Some(end) = find_head_end(&buf, searched) {
            if end > MAX_HEAD {
                bail!("head longer than {MAX_HEAD} bytes");
            }
            let head = parse_head(&buf[..end])?;
            return Ok(Some((head, buf[end..].to_vec())));
        }
        searched = buf.len();
        if buf.len() > MAX_HEAD {
            bail!("head longer than {MAX_HEAD} bytes");
        }
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            bail!("connection closed in the middle of the head");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// [`read_head`] that gives up after `limit`: a peer trickling a head, or
/// sending half of one and going quiet, cannot hold the task for longer.
pub async fn read_head_within<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: Duration,
) -> Result<Option<(Head, Vec<u8>)>> {
    tokio::time::timeout(limit, read_head(r))
        .await
        .map_err(|_| anyhow!("head not complete within {limit:?}"))?
}

/// Where the head ends (just past its blank line, `\n\n` or `\n\r\n`),
/// searching what arrived since `from` (and the 2 bytes before it, where
/// a terminator may have started).
fn find_head_end(b: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(2);
    b[start..].iter().enumerate().find_map(|(i, &c)| {
        let next = start + i + 1;
        match (c, b.get(next), b.get(next + 1)) {
            (b'\n', Some(b'\n'), _) => Some(next + 1),
            (b'\n', Some(b'\r'), Some(b'\n')) => Some(next + 2),
            _ => None,
        }
    })
}

/// Parses a complete head (request or response) with httparse.
fn parse_head(raw: &[u8]) -> Result<Head> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (start, headers) = if raw.starts_with(b"HTTP/") {
        let mut res = httparse::Response::new(&mut slots);
        let status = res.parse(raw).context("malformed response head")?;
        if status.is_partial() {
            bail!("incomplete response head");
        }
        let mut start = vec![
            format!("HTTP/1.{}", res.version.unwrap_or(1)),
            res.code.unwrap_or(0).to_string(),
        ];
        start.extend(
            res.reason
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string),
        );
        (start, res.headers)
    } else {
        let mut req = httparse::Request::new(&mut slots);
        let status = req.parse(raw).context("malformed request head")?;
        if status.is_partial() {
            bail!("incomplete request head");
        }
        let start = vec![
            req.method.unwrap_or("").to_string(),
            req.path.unwrap_or("").to_string(),
            format!("HTTP/1.{}", req.version.unwrap_or(1)),
        ];
        (start, req.headers)
    };
    let headers = headers
        .iter()
        .map(|h| {
            let v = std::str::from_utf8(h.value).context("header value is not UTF-8")?;
            Ok((h.name.to_string(), v.trim().to_string()))
        })
        .collect::<Result<_>>()?;
    Ok(Head { start, headers })
}

/// Writes a response head.
pub async fn write_response_head<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    reason: &str,
    len: u64,
) -> Result<()> {
    write_head(w, status, reason, len, "application/octet-stream", &[]).await
}

/// Writes a response head with a content type and extra header lines
/// (each `Name: value`).
pub async fn write_head<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    reason: &str,
    len: u64,
    content_type: &str,
    extra: &[String],
) -> Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {len}\r\nContent-Type: {content_type}\r\nConnection: close\r\nServer: tcpls\r\n"
    );
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes()).await?;
    Ok(())
}

/// A `Range: bytes=...` request header against a body of `len` bytes:
/// `None` without one (or with several ranges, which get the whole
/// body), `Some(Ok(start..end))` for one satisfiable range,
/// `Some(Err(()))` for one that is not (416).
pub fn byte_range(header: Option<&str>, len: u64) -> Option<Result<std::ops::Range<u64>, ()>> {
    let spec = header?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>(), b.parse::<u64>()) {
        // "a-b" and "a-"
        (Ok(start), Ok(last)) if start <= last => start..(last + 1).min(len),
        (Ok(start), Err(_)) if b.is_empty() => start..len,
        // "-n": the last n bytes
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => len.saturating_sub(n)..len,
        _ => return Some(Err(())),
    };
    Some(if range.start < len && range.start < range.end {
        Ok(range)
    } else {
        Err(())
    })
}

/// Writes a complete small response with a text body.
pub async fn write_text_response<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    reason: &str,
    body: &str,
) -> Result<()> {
    write_head(
        w,
        status,
        reason,
        body.len() as u64,
        "text/plain; charset=utf-8",
        &[],
    )
    .await?;
    w.write_all(body.as_bytes()).await?;
    Ok(())
}

/// A response body's framing (RFC 9112 §6.3).
pub fn is_chunked(head: &Head) -> bool {
    head.header("transfer-encoding").is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("chunked"))
    })
}

/// Decodes a chunked body (RFC 9112 §7.1) fed in pieces of any size:
/// chunk sizes through `httparse::parse_chunk_size`, chunk extensions and
/// trailers skipped.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
    /// Bytes fed and not yet consumed.
    pending: Vec<u8>,
    /// Trailer bytes seen (bounded).
    trailers: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
    Done,
}

impl Chunked {
    /// Decodes what `input` completes, appending body bytes to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.pending.extend_from_slice(input);
        let mut pos = 0;
        loop {
            let rest = &self.pending[pos..];
            match self.state {
                ChunkState::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        pos += used;
                        self.state = if size == 0 {
                            ChunkState::Trailers
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if rest.len() <= 1024 => break,
                    _ => bail!("malformed chunk size line"),
                },
                ChunkState::Data(left) => {
                    let k = (rest.len() as u64).min(left) as usize;
                    if k == 0 {
                        break;
                    }
                    out.extend_from_slice(&rest[..k]);
                    pos += k;
                    self.state = match left - k as u64 {
                        0 => ChunkState::DataEnd,
                        n => ChunkState::Data(n),
                    };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        break;
                    }
                    if &rest[..2] != b"\r\n" {
                        bail!("chunk data not followed by CRLF");
                    }
                    pos += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
                        if self.trailers + rest.len() > MAX_HEAD {
                            bail!("trailers longer than {MAX_HEAD} bytes");
                        }
                        break;
                    };
                    self.trailers += end + 2;
                    if self.trailers > MAX_HEAD {
                        bail!("trailers longer than {MAX_HEAD} bytes");
                    }
                    pos += end + 2;
                    if end == 0 {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => {
                    // Anything after the body is not ours.
                    pos = self.pending.len();
                    break;
                }
            }
        }
        self.pending.drain(..pos);
        Ok(())
    }

    /// True once the last chunk and the trailers arrived.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunked_bodies_decode_however_they_are_split() {
        use super::Chunked;
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nnext";
        for split in 1..wire.len() {
            let mut d = Chunked::default();
            let mut out = Vec::new();
            for piece in wire.chunks(split) {
                d.feed(piece, &mut out).unwrap();
            }
            assert!(d.is_done(), "split {split}");
            assert_eq!(out, b"hello, world", "split {split}");
        }
        let mut d = Chunked::default();
        let mut out = Vec::new();
        assert!(d.feed(b"zz\r\n", &mut out).is_err());
        let mut d = Chunked::default();
        assert!(d.feed(b"3\r\nabcXY", &mut out).is_err());
        let mut d = Chunked::default();
        d.feed(b"3\r\nab", &mut out).unwrap();
        assert!(!d.is_done());
    }

    #[test]
    fn byte_ranges() {
        use super::byte_range;
        assert_eq!(byte_range(Some("bytes=0-99"), 1000), Some(Ok(0..100)));
        assert_eq!(byte_range(Some("bytes=900-"), 1000), Some(Ok(900..1000)));
        assert_eq!(byte_range(Some("bytes=-100"), 1000), Some(Ok(900..1000)));
        assert_eq!(
            byte_range(Some("bytes=990-2000"), 1000),
            Some(Ok(990..1000))
        );
        assert_eq!(byte_range(Some("bytes=1000-"), 1000), Some(Err(())));
        assert_eq!(byte_range(Some("bytes=5-2"), 1000), Some(Err(())));
        assert_eq!(byte_range(Some("bytes=0-1,5-6"), 1000), None);
        assert_eq!(byte_range(Some("items=0-1"), 1000), None);
        assert_eq!(byte_range(None, 1000), None);
    }
    use super::*;

    #[tokio::test]
    async fn parses_heads_with_crlf_and_lf() {
        let mut r: &[u8] = b"GET /a%20b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcextra";
        let (h, rest) = read_head(&mut r).await.unwrap().unwrap();
        assert_eq!(h.start, ["GET", "/a%20b", "HTTP/1.1"]);
        assert_eq!(h.content_length().unwrap(), Some(3));
        assert!(rest.starts_with(b"abc"));
        let mut r: &[u8] = b"HTTP/1.0 200 ok\nContent-type: text/plain\n\nbody";
        let (h, rest) = read_head(&mut r).await.unwrap().unwrap();
        assert_eq!(h.start[1], "200");
        assert_eq!(rest, b"body");
        let mut r: &[u8] = b"";
        assert!(read_head(&mut r).await.unwrap().is_none());
        let mut r: &[u8] = b"GET / HTTP/1.1\r\n";
        assert!(read_head(&mut r).await.is_err());
    }

    /// A reader that hands out one byte per read.
    struct Trickle<'a>(&'a [u8]);

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if let Some((&b, rest)) = self.0.split_first() {
                buf.put_slice(&[b]);
                self.0 = rest;
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_head_in_one_byte_reads_parses_and_terminators_across_reads_are_found() {
        for raw in [
            &b"GET /x HTTP/1.1\r\nHost: a\r\n\r\nbody"[..],
            b"GET /x HTTP/1.1\nHost: a\n\nbody",
        ] {
            let (h, rest) = read_head(&mut Trickle(raw)).await.unwrap().unwrap();
            assert_eq!(h.start, ["GET", "/x", "HTTP/1.1"]);
            assert_eq!(h.header("host"), Some("a"));
            // One byte per read: nothing past the terminator was read.
            assert!(rest.is_empty(), "{rest:?}");
        }
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\n", 15), Some(18));
        assert_eq!(find_head_end(b"a\n\n", 2), Some(3));
        assert_eq!(find_head_end(b"a\r\nb\r\n", 0), None);
    }

    #[tokio::test]
    async fn malformed_and_oversized_heads_are_errors() {
        let mut r: &[u8] = b"GET\x01 / HTTP/1.1\r\n\r\n";
        assert!(read_head(&mut r).await.is_err());
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("h{i}: v\r\n"))
            .collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(read_head(&mut raw.as_bytes()).await.is_err());
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD + 1));
        assert!(read_head(&mut long.as_bytes()).await.is_err());
    }

    #[tokio::test]
    async fn a_stalled_head_times_out() {
        let (mut peer, mut ours) = tokio::io::duplex(1024);
        peer.write_all(b"GET / HTTP/1.1\r\nHost: slow")
            .await
            .unwrap();
        // `peer` stays open and silent; the outer bound only keeps a
        // regression (no deadline) from hanging the suite.
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            read_head_within(&mut ours, Duration::from_millis(50)),
        )
        .await
        .expect("the head deadline fired");
        let e = r.unwrap_err().to_string();
        assert!(e.contains("within"), "{e}");
        drop(peer);
    }
}
