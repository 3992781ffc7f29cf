//! The minimal HTTP/1.1 used on each stream: one request, one response.
//! Written here because a full HTTP stack (hyper) would hide the stream
//! mapping we want to show, and plain TLS peers (`openssl s_server -WWW`,
//! `s_client`) only need this much.

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest request or response head accepted.
pub const MAX_HEAD: usize = 16 << 10;

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
/// past it. `Ok(None)` if the peer closed before sending anything.
pub async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<(Head, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find_blank_line(&buf) {
            let text = std::str::from_utf8(&buf[..end]).context("head is not UTF-8")?;
            let mut lines = text.split("\r\n").flat_map(|l| l.split('\n'));
            let start: Vec<String> = lines
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect();
            let headers = lines
                .filter(|l| !l.is_empty())
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            let sep = if buf[end..].starts_with(b"\r\n\r\n") {
                4
            } else {
                2
            };
            let rest = buf[end + sep..].to_vec();
            return Ok(Some((Head { start, headers }, rest)));
        }
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

fn find_blank_line(b: &[u8]) -> Option<usize> {
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = b.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Writes a response head.
pub async fn write_response_head<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    reason: &str,
    len: u64,
) -> Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\nServer: tcpls\r\n\r\n"
    );
    w.write_all(head.as_bytes()).await?;
    Ok(())
}

/// Writes a complete small response with a text body.
pub async fn write_text_response<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    reason: &str,
    body: &str,
) -> Result<()> {
    write_response_head(w, status, reason, body.len() as u64).await?;
    w.write_all(body.as_bytes()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
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
}
