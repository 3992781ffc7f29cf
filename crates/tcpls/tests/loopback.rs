//! The runtime over real loopback sockets.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{configs, configs_for};
use sha2::{Digest, Sha256};
use tcpls::{ClientConfig, Server, ServerConfig, TransportConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn echo_server(cfg: Arc<ServerConfig>) -> std::net::SocketAddr {
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok(session) = server.accept().await {
            tokio::spawn(async move {
                while let Ok(stream) = session.accept_stream().await {
                    tokio::spawn(async move {
                        let (mut tx, mut rx) = stream.split();
                        tokio::io::copy(&mut rx, &mut tx).await.unwrap();
                        tx.finish().await.unwrap();
                    });
                }
            });
        }
    });
    addr
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn echo_many_concurrent_streams_verified() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (s, c) = configs(TransportConfig::default());
        let addr = echo_server(s).await;
        let session = tcpls::connect(addr, "localhost", c).await.unwrap();
        assert!(session.is_tcpls());
        let mut tasks = Vec::new();
        for i in 0..16u8 {
            let stream = session.open_stream().await.unwrap();
            tasks.push(tokio::spawn(async move {
                let payload = data(i, 1 << 20);
                let (mut tx, mut rx) = stream.split();
                let sent = payload.clone();
                let w = tokio::spawn(async move {
                    tx.write_all(&sent).await.unwrap();
                    tx.finish().await.unwrap();
                });
                let mut back = Vec::new();
                rx.read_to_end(&mut back).await.unwrap();
                w.await.unwrap();
                assert_eq!(Sha256::digest(&back), Sha256::digest(&payload));
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        session.close(0, "done");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn verification_is_on_by_default() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (s, _) = configs(TransportConfig::default());
        let addr = echo_server(s).await;
        let strict = Arc::new(ClientConfig::builder().system_roots(false).build().unwrap());
        let err = tcpls::connect(addr, "localhost", strict).await.unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn slow_reader_blocks_writer_within_limits() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let t = TransportConfig {
            stream_window: 128 << 10,
            session_window: 512 << 10,
            send_buffer: 64 << 10,
            ..Default::default()
        };
        let (s, c) = configs(t);
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), s)
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let session = tcpls::connect(addr, "localhost", c).await.unwrap();
        let peer = server.accept().await.unwrap();
        let mut stream = session.open_stream().await.unwrap();
        // Write until the writer blocks: the peer accepts but never reads.
        let chunk = vec![5u8; 16 << 10];
        let mut written = 0usize;
        loop {
            match tokio::time::timeout(Duration::from_millis(300), stream.write_all(&chunk)).await {
                Ok(r) => {
                    r.unwrap();
                    written += chunk.len();
                }
                Err(_) => break,
            }
            assert!(written < 8 << 20, "writer never blocked");
        }
        // Window + send buffer + what the kernel's socket buffers hold.
        assert!(written >= 128 << 10, "wrote {written}");
        let mut incoming = peer.accept_stream().await.unwrap();
        let mut got = vec![0u8; written];
        incoming.read_exact(&mut got).await.unwrap();
        assert!(got.iter().all(|b| *b == 5));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn close_reaches_peer_with_code() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (server, c) = common::server().await;
        let addr = server.local_addr().unwrap();
        let session = tcpls::connect(addr, "localhost", c).await.unwrap();
        let peer = server.accept().await.unwrap();
        session.close(9, "maintenance");
        match peer.closed().await {
            tcpls_proto::Error::PeerClosed { code, reason } => {
                assert_eq!(code, tcpls::ErrorCode::app(9));
                assert_eq!(reason, "maintenance");
            }
            e => panic!("unexpected {e}"),
        }
    })
    .await
    .unwrap();
}

/// The client's Finished waits to ride with its first write: a client
/// that never writes (the server speaks first) still completes the
/// handshake, its connection's task sending the Finished alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_speaks_first_to_a_client_that_never_writes() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (server, c) = common::server().await;
        let addr = server.local_addr().unwrap();
        let greeter = tokio::spawn(async move {
            let session = server.accept().await.unwrap();
            let (mut tx, _rx) = session.open_stream().await.unwrap().split();
            tx.write_all(b"220 hello").await.unwrap();
            tx.finish().await.unwrap();
            session
        });
        let session = tcpls::connect(addr, "localhost", c).await.unwrap();
        let mut stream = session.accept_stream().await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"220 hello");
        drop(greeter.await.unwrap());
    })
    .await
    .unwrap();
}

/// `drained` returns once the CLOSE is on the wire: a client whose runtime
/// stops right after (a process exiting) still ends the session properly
/// at the server, which otherwise sees a bare FIN and waits for a rejoin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_close_reaches_peer_before_the_client_runtime_stops() {
    let (server, c) = common::server().await;
    let addr = server.local_addr().unwrap();
    let client = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let session = tcpls::connect(addr, "localhost", c).await.unwrap();
            session.close(7, "bye");
            tokio::time::timeout(Duration::from_secs(10), session.drained())
                .await
                .expect("drained within 10 s");
        });
        drop(rt); // every task of the session stops here
    });
    // The client's Finished and CLOSE may arrive in one read: the session
    // is still handed over, closed (it once failed the handshake instead,
    // and this waited forever).
    let peer = tokio::time::timeout(Duration::from_secs(10), server.accept())
        .await
        .expect("the session reached the server")
        .unwrap();
    client.await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), peer.closed()).await {
        Ok(tcpls_proto::Error::PeerClosed { code, reason }) => {
            assert_eq!(code, tcpls::ErrorCode::app(7));
            assert_eq!(reason, "bye");
        }
        Ok(e) => panic!("unexpected {e}"),
        Err(_) => panic!("the server did not see the CLOSE within 5 s"),
    }
}

/// A plain TLS client uploading to a server whose application reads slowly:
/// fallback backpressure must deliver every byte. (The stranded-backlog race
/// fixed in `driver.rs` showed up in 1 of 4 `tcpls perf --upload --baseline
/// tls` runs; this test exercises the same path but does not force the race.)
#[tokio::test]
async fn plain_tls_upload_to_slow_reader_completes() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let t = TransportConfig {
            stream_window: 64 << 10,
            ..Default::default()
        };
        let (s, _) = configs(t);
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), s)
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let plain = Arc::new(
            ClientConfig::builder()
                .insecure()
                .enable_tcpls(false)
                .build()
                .unwrap(),
        );
        let payload = data(3, 8 << 20);
        let sent = payload.clone();
        let client = tokio::spawn(async move {
            let session = tcpls::connect(addr, "localhost", plain).await.unwrap();
            assert!(!session.is_tcpls());
            let mut stream = session.open_stream().await.unwrap();
            stream.write_all(&sent).await.unwrap();
            stream.shutdown().await.unwrap();
            let mut ack = Vec::new();
            stream.read_to_end(&mut ack).await.unwrap();
            assert_eq!(ack, b"ok");
        });
        let peer = server.accept().await.unwrap();
        let mut stream = peer.accept_stream().await.unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 5000];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.len() % 7 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        assert_eq!(Sha256::digest(&got), Sha256::digest(&payload));
        stream.write_all(b"ok").await.unwrap();
        stream.shutdown().await.unwrap();
        client.await.unwrap();
    })
    .await
    .expect("test timed out");
}

/// Small writes leave from the writing task itself (inline), large ones
/// through the connection's writer task; when the socket is full an inline
/// transmit hands its remainder to the writer task; chunks written with
/// `write_chunk` are queued without a copy between copied ones. Whatever
/// the mix, the bytes arrive complete and in order, also from several
/// streams at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_small_and_large_writes_arrive_in_order() {
    let (s, c) = configs(TransportConfig::default());
    let addr = echo_server(s).await;
    let session = tcpls::connect(addr, "localhost", c).await.unwrap();
    let mut tasks = Vec::new();
    for seed in 0..3u8 {
        let stream = session.open_stream().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let want = data(seed, 12 << 20);
            let (mut rx, mut tx) = {
                let (tx, rx) = stream.split();
                (rx, tx)
            };
            let sent = bytes::Bytes::from(want.clone());
            let writer = tokio::spawn(async move {
                let mut at = 0;
                let mut k = 1usize;
                while at < sent.len() {
                    // 1 B .. 64 KiB, cycling through sizes on both sides
                    // of the inline limit (16 KiB).
                    k = (k * 7 + 1) % (64 << 10) + 1;
                    let end = (at + k).min(sent.len());
                    // Copying writes, and (stream 1 always, the others
                    // now and then) chunks queued without a copy.
                    if seed == 1 || k.is_multiple_of(3) {
                        tx.write_chunk(sent.slice(at..end)).await.unwrap();
                    } else {
                        tx.write_all(&sent[at..end]).await.unwrap();
                    }
                    at = end;
                }
                tx.finish().await.unwrap();
            });
            // Read slowly at first, so the sockets fill up.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut got = Vec::new();
            rx.read_to_end(&mut got).await.unwrap();
            writer.await.unwrap();
            assert!(got == want, "stream {seed}: bytes lost or reordered");
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("transfer within 60 s")
            .unwrap();
    }
}

#[tokio::test]
async fn a_peer_reset_is_a_typed_code_and_the_session_goes_on() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (server, c) = common::server().await;
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let session = server.accept().await.unwrap();
            // First stream: reset with code 42 once its request arrived.
            let stream = session.accept_stream().await.unwrap();
            let (mut tx, mut rx) = stream.split();
            let mut req = [0u8; 5];
            rx.read_exact(&mut req).await.unwrap();
            tx.reset(42).unwrap();
            // Second stream: echoed, proving the session survived.
            let stream = session.accept_stream().await.unwrap();
            let (mut tx, mut rx) = stream.split();
            tokio::io::copy(&mut rx, &mut tx).await.unwrap();
            tx.finish().await.unwrap();
            session.drained().await;
        });
        let session = tcpls::connect(addr, "localhost", c).await.unwrap();
        let (mut tx, mut rx) = session.open_stream().await.unwrap().split();
        tx.write_all(b"hello").await.unwrap();
        let mut buf = Vec::new();
        let err = rx.read_to_end(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        assert_eq!(
            tcpls::StreamReset::from_io(&err),
            Some(tcpls::StreamReset { code: 42 })
        );
        assert!(
            session.close_reason().is_none(),
            "a stream reset ends only the stream"
        );
        let (mut tx, mut rx) = session.open_stream().await.unwrap().split();
        tx.write_all(b"still here").await.unwrap();
        tx.finish().await.unwrap();
        let mut back = Vec::new();
        rx.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"still here");
        session.close(0, "done");
    })
    .await
    .expect("test timed out");
}

/// A plain TLS server that sends its response and closes at once
/// (close_notify and FIN right behind the data), to a client whose
/// application reads only later, through a small window: every byte
/// arrives and the stream ends cleanly, whenever the runtime sees the FIN
/// (`driver.rs`: records it read before the FIN are still delivered). The
/// race behind the `tcpls get` failure against nginx ("TCP connection
/// closed without CLOSE") did not show here in 8 rounds on the old code;
/// the core's part is pinned by the sim test
/// `a_plain_tls_end_behind_unread_records_delivers_them_first`.
#[tokio::test]
async fn plain_tls_server_closing_after_its_response_delivers_all_of_it() {
    // The end races with the reads: several rounds.
    for round in 0..8u8 {
        plain_tls_response_then_close(round).await;
    }
}

async fn plain_tls_response_then_close(round: u8) {
    tokio::time::timeout(Duration::from_secs(60), async {
        let t = TransportConfig {
            stream_window: 64 << 10,
            ..Default::default()
        };
        let s = Arc::new(
            ServerConfig::builder()
                .self_signed(&["localhost"])
                .unwrap()
                .enable_tcpls(false)
                .build()
                .unwrap(),
        );
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), s)
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let payload = data(round, (2 << 20) + round as usize * 7919);
        let sent = payload.clone();
        tokio::spawn(async move {
            let peer = server.accept().await.unwrap();
            let mut stream = peer.accept_stream().await.unwrap();
            let mut go = [0u8; 2];
            stream.read_exact(&mut go).await.unwrap();
            stream.write_all(&sent).await.unwrap();
            stream.shutdown().await.unwrap();
            drop(stream);
            let _ = tokio::time::timeout(Duration::from_secs(5), peer.drained()).await;
        });
        let plain = Arc::new(
            ClientConfig::builder()
                .insecure()
                .enable_tcpls(false)
                .transport(t)
                .build()
                .unwrap(),
        );
        let session = tcpls::connect(addr, "localhost", plain).await.unwrap();
        let mut stream = session.open_stream().await.unwrap();
        stream.write_all(b"go").await.unwrap();
        // Everything, the close_notify and the FIN arrive meanwhile; the
        // window lets only 64 KiB of it be decrypted.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 3000];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            tokio::task::yield_now().await;
        }
        assert_eq!(got.len(), payload.len());
        assert_eq!(Sha256::digest(&got), Sha256::digest(&payload));
    })
    .await
    .expect("test timed out");
}

/// A server's tickets wait for its first write (they go out with it), or
/// for its connection's task: a server that never writes still hands the
/// client its tickets, and the next session resumes.
#[tokio::test]
async fn a_server_that_never_writes_still_sends_its_tickets() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (server, c) = common::server().await;
        let addr = server.local_addr().unwrap();
        let held = tokio::spawn(async move {
            // Keeps every session open without writing a byte.
            let mut sessions = Vec::new();
            while let Ok(session) = server.accept().await {
                sessions.push(session);
            }
        });
        let cache = c
            .session_cache
            .clone()
            .expect("a default client keeps tickets");
        let first = tcpls::connect(addr, "localhost", c.clone()).await.unwrap();
        assert_eq!(first.handshake_kind(), Some(tcpls::HandshakeKind::Full));
        let mut waited = 0;
        while cache.is_empty() {
            assert!(waited < 500, "no ticket arrived from a silent server");
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        let second = tcpls::connect(addr, "localhost", c).await.unwrap();
        assert_eq!(second.handshake_kind(), Some(tcpls::HandshakeKind::Resumed));
        held.abort();
    })
    .await
    .expect("test timed out");
}

/// A session's sockets get TCP_NODELAY and the user timeout before the
/// handshake, from the local configuration (off the handshake's critical
/// path); when the peer's transport parameters make the session's user
/// timeout another one, the socket gets that one. Each side's addresses
/// are the other side's.
#[tokio::test]
async fn sockets_get_the_sessions_options_and_addresses() {
    tokio::time::timeout(Duration::from_secs(20), async {
        // (client's user timeout, what both sockets end with): the
        // default 250 ms is raised to the kernel floor with failover
        // (10 s); a client asking for 15 s gets 15 s on both sides, the
        // server's socket having been given 10 s before the handshake.
        let cases = [
            (Duration::from_millis(250), Duration::from_secs(10)),
            (Duration::from_secs(15), Duration::from_secs(15)),
        ];
        for (client_timeout, expected) in cases {
            let client_t = TransportConfig {
                user_timeout: Some(client_timeout),
                ..TransportConfig::default()
            };
            let (s, c) = configs_for(TransportConfig::default(), client_t);
            let server = Server::bind("127.0.0.1:0".parse().unwrap(), s)
                .await
                .unwrap();
            let addr = server.local_addr().unwrap();
            let (client, accepted) = tokio::join!(tcpls::connect(addr, "localhost", c), async {
                server.accept().await
            });
            let (client, accepted) = (client.unwrap(), accepted.unwrap());
            for (side, session) in [("client", &client), ("server", &accepted)] {
                let stats = session.connection_stats();
                assert_eq!(stats.len(), 1, "{side}");
                assert!(stats[0].nodelay, "{side}: TCP_NODELAY");
                assert_eq!(stats[0].user_timeout, Some(expected), "{side}");
            }
            assert_eq!(client.peer_addr(), Some(addr));
            assert_eq!(accepted.local_addr(), Some(addr));
            assert!(client.local_addr().is_some());
            assert_eq!(accepted.peer_addr(), client.local_addr());
        }
    })
    .await
    .expect("timed out");
}
