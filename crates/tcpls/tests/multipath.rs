//! Several TCP connections per session over loopback (127.0.0.1 and
//! 127.0.0.2 stand for two paths).

mod common;

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tcpls::{ClientConfig, ConnectionId, Server, ServerConfig, SessionEvent};
use tcpls_proto::session::ConnectionState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn setup() -> (Server, tcpls::Session, tcpls::Session) {
    let (server, c) = common::server().await;
    let addr = server.local_addr().unwrap();
    let client = tcpls::connect(addr, "localhost", c).await.unwrap();
    let peer = server.accept().await.unwrap();
    common::wait_for_tokens(&client).await;
    (server, client, peer)
}

#[tokio::test]
async fn join_steer_migrate_and_retire_over_loopback() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (server, client, peer) = setup().await;
        let addr = server.local_addr().unwrap();
        let conn = client
            .join(addr, Some("127.0.0.2:0".parse().unwrap()))
            .await
            .unwrap();
        // Steer a stream onto the new connection; the echo comes back on it.
        let stream = client.open_stream().await.unwrap();
        stream.set_connection(conn).unwrap();
        assert_eq!(stream.connection(), Some(conn));
        let data: Vec<u8> = (0..8_000_000u32).map(|i| (i % 253) as u8).collect();
        let sent = data.clone();
        let echo = tokio::spawn(async move {
            let s = peer.accept_stream().await.unwrap();
            let (mut tx, mut rx) = s.split();
            tokio::io::copy(&mut rx, &mut tx).await.unwrap();
            tx.finish().await.unwrap();
            peer
        });
        let (mut tx, mut rx) = stream.split();
        let writer = tokio::spawn(async move {
            let half = sent.len() / 2;
            tx.write_all(&sent[..half]).await.unwrap();
            tx.write_all(&sent[half..]).await.unwrap();
            tx.finish().await.unwrap();
        });
        // Mid-transfer, move everything back to connection 0, then retire
        // the joined connection.
        tokio::time::sleep(Duration::from_millis(5)).await;
        client.migrate(ConnectionId(0)).unwrap();
        let mut back = Vec::new();
        rx.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        assert_eq!(Sha256::digest(&back), Sha256::digest(&data));
        let peer = echo.await.unwrap();
        client.close_connection(conn).unwrap();
        // The server sees the connection go; the session stays.
        let mut closed = false;
        while let Ok(Some(ev)) =
            tokio::time::timeout(Duration::from_secs(5), peer.next_event()).await
        {
            if matches!(ev, SessionEvent::ConnectionClosed(c) if c == conn) {
                closed = true;
                break;
            }
        }
        assert!(closed, "server saw the joined connection close");
        assert!(client
            .connections()
            .iter()
            .all(|(id, st)| *id != conn || *st != ConnectionState::Active));
        let mut s2 = client.open_stream().await.unwrap();
        s2.write_all(b"after").await.unwrap();
        s2.shutdown().await.unwrap();
        assert!(peer.close_reason().is_none() && client.close_reason().is_none());
    })
    .await
    .expect("timed out");
}

#[tokio::test]
async fn forged_join_is_refused_and_session_unaffected() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (server, client, peer) = setup().await;
        let addr = server.local_addr().unwrap();
        // A join hello with a random token: the server closes the connection.
        let hello = tcpls_proto::wire::join::encode_join_hello(&[9u8; 32], &[3u8; 64]);
        let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
        raw.write_all(&hello).await.unwrap();
        let mut b = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut b))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "refused join gets no answer");
        // The session still works.
        let mut s = client.open_stream().await.unwrap();
        s.write_all(b"fine").await.unwrap();
        s.shutdown().await.unwrap();
        let mut incoming = peer.accept_stream().await.unwrap();
        let mut got = Vec::new();
        incoming.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"fine");
    })
    .await
    .expect("timed out");
}

#[tokio::test]
async fn happy_eyeballs_skips_silent_and_refused_addresses() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let s = Arc::new(
            ServerConfig::builder()
                .self_signed(&["localhost"])
                .unwrap()
                .build()
                .unwrap(),
        );
        let c = Arc::new(ClientConfig::builder().insecure().build().unwrap());
        // Listening on every address so 127.0.0.1 and 127.0.0.2 reach it.
        let server = Server::bind("0.0.0.0:0".parse().unwrap(), s).await.unwrap();
        let port = server.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok(session) = server.accept().await {
                tokio::spawn(async move { session.closed().await });
            }
        });
        // Accepts TCP but never answers the TLS handshake.
        let silent = tokio::net::TcpListener::bind("127.0.0.3:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        // Nothing listens here: refused at once.
        let refused: std::net::SocketAddr = {
            let l = std::net::TcpListener::bind("127.0.0.4:0").unwrap();
            l.local_addr().unwrap()
        };
        let real1: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let real2: std::net::SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
        let opts = tcpls::ConnectOptions {
            attempt_delay: Duration::from_millis(100),
            timeout: Duration::from_secs(10),
            keep_others: true,
        };
        let session =
            tcpls::connect_any(&[silent_addr, refused, real1, real2], "localhost", c, opts)
                .await
                .unwrap();
        let won = session.peer_addr().unwrap();
        assert!(won == real1 || won == real2, "winner {won}");
        // The other real address was joined; the refused one was not.
        let active = session
            .connections()
            .iter()
            .filter(|(_, st)| *st == ConnectionState::Active)
            .count();
        assert!(active >= 2, "connections: {:?}", session.connections());
        // Kernel statistics are available per connection.
        let mut st = session.open_stream().await.unwrap();
        st.write_all(&[1u8; 100_000]).await.unwrap();
        st.shutdown().await.unwrap();
        let stats = session.connection_stats();
        assert!(!stats.is_empty());
        assert!(stats.iter().any(|s| s.rtt_us > 0 && s.mss > 0), "{stats:?}");
        drop(silent);
    })
    .await
    .expect("timed out");
}

#[tokio::test]
async fn addresses_are_advertised_and_withdrawn() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (_server, client, peer) = setup().await;
        let a: std::net::SocketAddr = "192.0.2.7:4443".parse().unwrap();
        let b: std::net::SocketAddr = "[2001:db8::7]:4443".parse().unwrap();
        peer.advertise_address(a).unwrap();
        peer.advertise_address(b).unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            if let Some(SessionEvent::PeerAddress { addr, added: true }) = client.next_event().await
            {
                seen.push(addr);
            }
        }
        assert!(seen.contains(&a) && seen.contains(&b));
        peer.withdraw_address(a).unwrap();
        loop {
            if let Some(SessionEvent::PeerAddress { addr, added: false }) =
                client.next_event().await
            {
                assert_eq!(addr, a);
                break;
            }
        }
        assert_eq!(client.peer_addresses(), vec![b]);
    })
    .await
    .expect("timed out");
}
