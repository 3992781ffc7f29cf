//! Server limits (issue 16, findings 3 and 4): idle connections cannot stop
//! the server from taking new sessions and rejoins, and sessions are
//! capped in total and per source address. Every test bounds its own time.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tcpls::{Server, ServerLimits, SessionEvent, TransportConfig};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(20);

/// A TCP connection from `from` (any port) that sends nothing.
async fn idle_connection(from: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{from}:0").parse().unwrap()).unwrap();
    s.connect(to).await.unwrap()
}

/// True when the server closes `tcp` (EOF or reset) within `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 1];
    matches!(
        timeout(within, tcp.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// Waits for the server side of a session to see a connection join.
async fn connection_added(session: &tcpls::Session) {
    loop {
        match session.next_event().await {
            Some(SessionEvent::ConnectionAdded(_)) => return,
            Some(_) => {}
            None => panic!("session ended before the join"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_block_new_sessions_or_joins() {
    timeout(BOUND, async {
        let (s, c) = configs(TransportConfig::default());
        // The deadline for a first record is long here: what keeps the
        // server serving is refusing over the limits, not the deadline.
        let limits = ServerLimits {
            first_record_timeout: Duration::from_secs(60),
            ..ServerLimits::default()
        };
        let per_ip = limits.max_handshakes_per_ip;
        let server = Server::bind_with_limits("127.0.0.1:0".parse().unwrap(), s, limits)
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();

        // A live session, before the attack.
        let client = tcpls::connect(addr, "localhost", c.clone()).await.unwrap();
        let live = server.accept().await.unwrap();
        wait_for_tokens(&client).await;

        // More idle connections from one address than the server had
        // handshake permits before (256): all but the per-address limit
        // are closed at once, none is left hanging.
        let mut idle = Vec::new();
        for _ in 0..300 {
            idle.push(idle_connection("127.0.0.2", addr).await);
        }
        let mut refused = 0;
        for tcp in idle.iter_mut().skip(per_ip) {
            if closed_within(tcp, Duration::from_secs(5)).await {
                refused += 1;
            }
        }
        assert_eq!(refused, 300 - per_ip, "connections over the limit closed");

        // A new client still gets a session, and the live session still
        // joins a second connection.
        let second = tcpls::connect(addr, "localhost", c.clone()).await.unwrap();
        let _second_server = server.accept().await.unwrap();
        assert!(second.is_tcpls());
        client
            .join(addr, Some("127.0.0.3:0".parse().unwrap()))
            .await
            .unwrap();
        connection_added(&live).await;
        drop(idle);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_connection_without_a_first_record_is_closed_after_the_deadline() {
    timeout(BOUND, async {
        let (s, _) = configs(TransportConfig::default());
        let limits = ServerLimits {
            first_record_timeout: Duration::from_millis(300),
            max_handshakes_per_ip: 2,
            ..ServerLimits::default()
        };
        let server = Server::bind_with_limits("127.0.0.1:0".parse().unwrap(), s, limits)
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let mut a = idle_connection("127.0.0.4", addr).await;
        let mut b = idle_connection("127.0.0.4", addr).await;
        assert!(closed_within(&mut a, Duration::from_secs(10)).await);
        assert!(closed_within(&mut b, Duration::from_secs(10)).await);
        // Their slots were given back: the address may open again (this
        // one is not refused at once; it too meets the deadline).
        let mut c = idle_connection("127.0.0.4", addr).await;
        let mut byte = [0u8; 1];
        assert!(
            timeout(Duration::from_millis(100), c.read(&mut byte))
                .await
                .is_err(),
            "a connection within the limit is not closed at once"
        );
        assert!(closed_within(&mut c, Duration::from_secs(10)).await);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_capped_in_total_and_per_address() {
    timeout(BOUND, async {
        let (s, c) = configs(TransportConfig::default());
        let limits = ServerLimits {
            max_sessions: Some(3),
            max_sessions_per_ip: Some(2),
            ..ServerLimits::default()
        };
        let server = Server::bind_with_limits("127.0.0.1:0".parse().unwrap(), s, limits)
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let from = |ip: &str| Some(format!("{ip}:0").parse::<SocketAddr>().unwrap());
        let connect = |ip: &'static str| {
            let c = c.clone();
            async move { tcpls::connect_from(addr, from(ip), "localhost", c).await }
        };
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(connect("127.0.0.5").await.unwrap());
            held.push(server.accept().await.unwrap());
        }
        // Third from the same address: refused (closed), not left hanging.
        assert!(connect("127.0.0.5").await.is_err());
        held.push(connect("127.0.0.6").await.unwrap());
        held.push(server.accept().await.unwrap());
        // Fourth in total: refused whatever the address.
        assert!(connect("127.0.0.7").await.is_err());
        // A session that ends gives its place back.
        held.truncate(4);
        let mut again = None;
        for _ in 0..200 {
            if let Ok(s) = connect("127.0.0.7").await {
                again = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(again.is_some(), "the ended session's place was not freed");
    })
    .await
    .expect("test timed out");
}
