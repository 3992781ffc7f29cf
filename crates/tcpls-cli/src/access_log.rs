//! `serve`'s request log: one line per request with its status, the bytes
//! sent and the time taken, from a wrapper that counts what the handler
//! writes (and reads the status from the response's first line).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream that counts the bytes written through it and keeps the start
/// of the response.
pub struct Counted<S> {
    inner: S,
    written: u64,
    /// The first bytes written ("HTTP/1.1 200 ...").
    head: [u8; 12],
}

impl<S> Counted<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            written: 0,
            head: [0; 12],
        }
    }

    /// The response's status code, if a status line was written.
    pub fn status(&self) -> Option<u16> {
        let line = std::str::from_utf8(&self.head).ok()?;
        line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }

    /// Logs the request line (`tcpls::access` target, info level).
    pub fn log(&self, peer: Option<SocketAddr>, request: &(String, String), took: Duration) {
        let (method, path) = request;
        let status = self.status().map_or("-".to_string(), |s| s.to_string());
        tracing::info!(
            target: "tcpls::access",
            "{} {method} {path} {status} {} bytes {} ms",
            peer.map_or("-".to_string(), |p| p.to_string()),
            self.written,
            took.as_millis()
        );
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            let at = self.written as usize;
            if at < self.head.len() {
                let k = (self.head.len() - at).min(*n);
                self.head[at..at + k].copy_from_slice(&buf[..k]);
            }
            self.written += *n as u64;
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::Counted;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn counts_bytes_and_reads_the_status() {
        let mut c = Counted::new(Vec::new());
        c.write_all(b"HTTP/1.1 4").await.unwrap();
        c.write_all(b"04 Not Found\r\n\r\nnope").await.unwrap();
        assert_eq!(c.status(), Some(404));
        assert_eq!(c.written, 30);
        assert_eq!(Counted::new(Vec::<u8>::new()).status(), None);
    }
}
