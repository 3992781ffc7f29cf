//! Failover over real sockets: a proxy on connection 0 cuts the flow in the
//! middle of a transfer, with FINs (a middlebox ending the flow) or resets,
//! or corrupts one byte (a hostile or broken middlebox); the session
//! replays what was not acknowledged on its other connection and every
//! byte arrives exactly once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tcpls::{ConnectionId, SessionEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug)]
enum Cut {
    Fin,
    Reset,
    /// Flip one byte toward the client and keep forwarding.
    Corrupt,
}

/// Forwards one client to `upstream`; after `after` bytes toward the
/// client, cuts both sides or corrupts the next byte as `cut` says.
async fn proxy(listener: TcpListener, upstream: std::net::SocketAddr, after: usize, cut: Cut) {
    let (mut client, _) = listener.accept().await.unwrap();
    let mut server = TcpStream::connect(upstream).await.unwrap();
    let (mut a, mut b) = (vec![0u8; 16 << 10], vec![0u8; 16 << 10]);
    let mut toward_client = 0;
    loop {
        if toward_client >= after && !matches!(cut, Cut::Corrupt) {
            break;
        }
        tokio::select! {
            r = client.read(&mut a) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => if server.write_all(&a[..n]).await.is_err() { return },
            },
            r = server.read(&mut b) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if matches!(cut, Cut::Corrupt) && toward_client < after && toward_client + n > after {
                        b[after - toward_client] ^= 0x40;
                    }
                    if client.write_all(&b[..n]).await.is_err() {
                        return;
                    }
                    toward_client += n;
                }
            },
        }
    }
    match cut {
        Cut::Corrupt => unreachable!("forwards until either side closes"),
        Cut::Fin => {
            // FIN both ways, then drain so closing sends no reset.
            let _ = client.shutdown().await;
            let _ = server.shutdown().await;
            let drain = async {
                while client.read(&mut a).await.is_ok_and(|n| n > 0) {}
                while server.read(&mut b).await.is_ok_and(|n| n > 0) {}
            };
            let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
        }
        Cut::Reset => {
            for s in [&client, &server] {
                socket2::SockRef::from(s)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
            }
        }
    }
}

async fn cut_in_the_middle(cut: Cut) {
    let (server, c) = common::server().await;
    let direct = server.local_addr().unwrap();
    let proxy_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let via_proxy = proxy_listener.local_addr().unwrap();
    tokio::spawn(proxy(proxy_listener, direct, 3 << 20, cut));

    let data: Arc<Vec<u8>> = Arc::new((0..24_000_000u32).map(|i| (i * 13 % 251) as u8).collect());
    let sent = data.clone();
    tokio::spawn(async move {
        let session = server.accept().await.unwrap();
        // Everything on connection 0 (the primary), so that the proxy
        // surely sees the 3 MiB it cuts after: aggregation could put most
        // of it on the direct, faster path.
        session.set_scheduler(None).unwrap();
        let mut stream = session.accept_stream().await.unwrap();
        let mut req = [0u8; 3];
        stream.read_exact(&mut req).await.unwrap();
        stream.write_all(&sent).await.unwrap();
        stream.shutdown().await.unwrap();
        session.closed().await;
    });

    // Connection 0 goes through the proxy; connection 1 directly.
    let session = tcpls::connect(via_proxy, "localhost", c).await.unwrap();
    assert!(session.failover());
    common::wait_for_tokens(&session).await;
    session
        .join(direct, Some("127.0.0.2:0".parse().unwrap()))
        .await
        .unwrap();
    let mut stream = session.open_stream().await.unwrap();
    stream.write_all(b"GET").await.unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), data.len(), "{cut:?}");
    assert_eq!(Sha256::digest(&got), Sha256::digest(&data[..]), "{cut:?}");
    let mut failed = false;
    while let Ok(Some(ev)) =
        tokio::time::timeout(Duration::from_millis(100), session.next_event()).await
    {
        failed |= matches!(ev, SessionEvent::ConnectionFailed(ConnectionId(0)));
    }
    assert!(failed, "{cut:?}: connection 0 was cut and failed over");
    assert!(session.close_reason().is_none());
}

#[tokio::test]
async fn unexpected_fin_fails_over_without_loss() {
    tokio::time::timeout(Duration::from_secs(60), cut_in_the_middle(Cut::Fin))
        .await
        .expect("timed out");
}

/// A byte flipped mid-transfer on connection 0 fails that connection's
/// record authentication: the client fails it over like a reset (not the
/// session) and the download completes intact on connection 1.
#[tokio::test]
async fn corrupted_record_fails_over_without_loss() {
    tokio::time::timeout(Duration::from_secs(60), cut_in_the_middle(Cut::Corrupt))
        .await
        .expect("timed out");
}

#[tokio::test]
async fn reset_fails_over_without_loss() {
    tokio::time::timeout(Duration::from_secs(60), cut_in_the_middle(Cut::Reset))
        .await
        .expect("timed out");
}
