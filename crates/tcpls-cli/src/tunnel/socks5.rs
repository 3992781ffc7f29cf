//! The tunnel client's SOCKS5 front end (RFC 1928): CONNECT, without
//! authentication (the listener is meant for the local host). Written here
//! rather than taken from a SOCKS crate because those dial the destination
//! themselves, while here it is the far end of the tunnel that dials; the
//! request and the reply are all that is needed.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::header::{Destination, Status};

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const CONNECT: u8 = 1;

/// How long a local client may take over its SOCKS request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a SOCKS5 greeting and CONNECT request from `tcp`; returns where
/// it wants to go. Answers a bad request itself (and fails).
pub async fn accept(tcp: &mut TcpStream) -> Result<Destination> {
    tokio::time::timeout(REQUEST_TIMEOUT, request(tcp))
        .await
        .context("SOCKS5 request timed out")?
}

async fn request(tcp: &mut TcpStream) -> Result<Destination> {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).await?;
    if head[0] != VERSION {
        bail!("not a SOCKS5 client (version {})", head[0]);
    }
    let mut methods = vec![0u8; head[1] as usize];
    tcp.read_exact(&mut methods).await?;
    if !methods.contains(&NO_AUTH) {
        tcp.write_all(&[VERSION, NO_ACCEPTABLE_METHOD]).await?;
        bail!("the SOCKS5 client requires authentication");
    }
    tcp.write_all(&[VERSION, NO_AUTH]).await?;
    // VER CMD RSV ATYP
    let mut req = [0u8; 4];
    tcp.read_exact(&mut req).await?;
    if req[0] != VERSION {
        bail!("bad SOCKS5 request version {}", req[0]);
    }
    let value = match req[3] {
        1 => read_n(tcp, 6).await?,
        4 => read_n(tcp, 18).await?,
        3 => {
            let mut n = [0u8; 1];
            tcp.read_exact(&mut n).await?;
            read_n(tcp, n[0] as usize + 2).await?
        }
        _ => {
            reply(tcp, Status::AddressTypeNotSupported).await?;
            bail!("SOCKS5 address type {} not supported", req[3]);
        }
    };
    if req[1] != CONNECT {
        reply(tcp, Status::CommandNotSupported).await?;
        bail!("SOCKS5 command {} not supported (only CONNECT)", req[1]);
    }
    // The tunnel header uses SOCKS5's address types.
    match Destination::decode(req[3], &value) {
        Ok(d) => Ok(d),
        Err(e) => {
            reply(tcp, Status::GeneralFailure).await?;
            Err(e.into())
        }
    }
}

async fn read_n(tcp: &mut TcpStream, n: usize) -> Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    tcp.read_exact(&mut v).await?;
    Ok(v)
}

/// Sends the SOCKS5 reply for `status` (the bound address is not known
/// here: all zeros, as many proxies do).
pub async fn reply(tcp: &mut TcpStream, status: Status) -> Result<()> {
    tcp.write_all(&[VERSION, status as u8, 0, 1, 0, 0, 0, 0, 0, 0])
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn a_connect_request_by_name() {
        let (mut c, mut s) = pair().await;
        let client = tokio::spawn(async move {
            c.write_all(&[5, 1, 0]).await.unwrap();
            let mut m = [0u8; 2];
            c.read_exact(&mut m).await.unwrap();
            assert_eq!(m, [5, 0]);
            let mut req = vec![5, 1, 0, 3, 11];
            req.extend_from_slice(b"example.com");
            req.extend_from_slice(&443u16.to_be_bytes());
            c.write_all(&req).await.unwrap();
            let mut rep = [0u8; 10];
            c.read_exact(&mut rep).await.unwrap();
            rep[1]
        });
        let d = accept(&mut s).await.unwrap();
        assert_eq!(d, Destination::Name("example.com".into(), 443));
        reply(&mut s, Status::Connected).await.unwrap();
        assert_eq!(client.await.unwrap(), 0);
    }

    #[tokio::test]
    async fn other_commands_and_authentication_are_refused() {
        let (mut c, mut s) = pair().await;
        tokio::spawn(async move {
            c.write_all(&[5, 1, 2]).await.unwrap(); // username/password only
            let mut m = [0u8; 2];
            c.read_exact(&mut m).await.unwrap();
            assert_eq!(m, [5, 0xff]);
        });
        assert!(accept(&mut s).await.is_err());

        let (mut c, mut s) = pair().await;
        let client = tokio::spawn(async move {
            c.write_all(&[5, 1, 0]).await.unwrap();
            let mut m = [0u8; 2];
            c.read_exact(&mut m).await.unwrap();
            c.write_all(&[5, 2, 0, 1, 10, 0, 0, 1, 0, 80])
                .await
                .unwrap(); // BIND
            let mut rep = [0u8; 10];
            c.read_exact(&mut rep).await.unwrap();
            rep[1]
        });
        assert!(accept(&mut s).await.is_err());
        assert_eq!(client.await.unwrap(), Status::CommandNotSupported as u8);
    }
}
