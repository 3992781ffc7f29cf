//! TLS 1.3 early data (0-RTT) between in-memory peers: a request in the
//! client's first flight is answered in the server's first flight; refused
//! early data is sent again and arrives once; a replayed first flight gets
//! nothing processed twice.

mod common;

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use common::*;
use tcpls_proto::{
    ClientConfig, ConnectionId, EarlyData, ReadOutcome, ServerConfig, Session, SessionCache,
    StreamId, TransportConfig,
};

const C0: ConnectionId = ConnectionId(0);

fn quiet() -> TransportConfig {
    TransportConfig {
        silence_probe: None,
        ..Default::default()
    }
}

fn server(early: u32) -> Arc<ServerConfig> {
    Arc::new(
        ServerConfig::builder()
            .self_signed(&["localhost"])
            .unwrap()
            .max_early_data(early)
            .transport(quiet())
            .build()
            .unwrap(),
    )
}

fn client(cache: &Arc<SessionCache>) -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder()
            .insecure()
            .session_cache(Some(cache.clone()))
            .transport(quiet())
            .build()
            .unwrap(),
    )
}

/// A full session with `s` so that `cache` holds its tickets.
fn prime(c: &Arc<ClientConfig>, s: &Arc<ServerConfig>) {
    let mut p = Net::new(c.clone(), s.clone(), 1);
    p.drive();
    let id = p.c.open_stream().unwrap();
    p.c.write(id, b"x").unwrap();
    p.drive();
    assert!(p.c.is_tcpls());
}

/// Moves everything `from` has for connection 0 to `to`; the bytes moved.
fn send(from: &mut Session, to: &mut Session, now: Instant) -> Vec<u8> {
    let mut wire = Vec::new();
    from.poll_transmit(C0, &mut wire, 1 << 20).unwrap();
    let mut b = BytesMut::from(&wire[..]);
    to.recv(C0, &mut b, now).unwrap();
    wire
}

fn read_all(s: &mut Session, id: StreamId) -> Vec<u8> {
    let mut out = Vec::new();
    while let ReadOutcome::Data(d) = s.read(id, usize::MAX).unwrap() {
        out.extend_from_slice(&d);
    }
    out
}

/// A client holding a ticket of a server that takes `early` bytes of
/// early data, and its session resuming with it (nothing sent yet).
fn resuming(early: u32) -> (Arc<SessionCache>, Arc<ServerConfig>, Session, Instant) {
    let cache = Arc::new(SessionCache::new(8));
    let c = client(&cache);
    let s = server(early);
    prime(&c, &s);
    let now = Instant::now();
    let cl = Session::connect_early(c, "localhost", None, now).unwrap();
    (cache, s, cl, now)
}

#[test]
fn an_early_request_is_answered_in_the_servers_first_flight() {
    let (cache, s, mut cl, now) = resuming(16_384);
    let mut sv = Session::accept(s.clone(), now).unwrap();
    assert_eq!(cl.early_data(), EarlyData::Pending);
    // The ClientHello waits for the request.
    assert!(!cl.has_transmit());
    let id = cl.open_stream().unwrap();
    cl.write(id, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    // Flight 1: ClientHello and the request, as early data.
    send(&mut cl, &mut sv, now);
    let sid = sv
        .accept_stream()
        .expect("the early request opened a stream");
    assert_eq!(read_all(&mut sv, sid), b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(sv.early_data(), EarlyData::Accepted);
    assert_eq!(
        sv.handshake_kind(),
        None,
        "the client's Finished has not come"
    );
    assert!(sv.take_retired_tls().is_none(), "OpenSSL is still in use");
    // Flight 2: the server's handshake and, at once, the answer.
    sv.write(sid, b"HTTP/1.1 200 OK\r\n\r\nhello").unwrap();
    sv.finish(sid).unwrap();
    send(&mut sv, &mut cl, now);
    assert!(cl.is_tcpls());
    assert_eq!(cl.early_data(), EarlyData::Accepted);
    assert_eq!(read_all(&mut cl, id), b"HTTP/1.1 200 OK\r\n\r\nhello");
    // Flight 3 on: the client's Finished, the tickets; nothing twice.
    cl.finish(id).unwrap();
    for _ in 0..4 {
        send(&mut cl, &mut sv, now);
        send(&mut sv, &mut cl, now);
    }
    assert_eq!(
        sv.handshake_kind(),
        Some(tcpls_proto::HandshakeKind::Resumed)
    );
    // Once the handshake is over the server's OpenSSL state is handed out
    // (the runtime frees it in the dispatch after that input).
    assert!(sv.take_retired_tls().is_some());
    assert_eq!(sv.read(sid, usize::MAX).unwrap(), ReadOutcome::Fin);
    assert!(
        !cache.is_empty(),
        "a fresh ticket came after the 0.5-RTT records"
    );
    // The session goes on as any other.
    let id2 = cl.open_stream().unwrap();
    cl.write(id2, b"more").unwrap();
    send(&mut cl, &mut sv, now);
    let sid2 = sv.accept_stream().unwrap();
    assert_eq!(read_all(&mut sv, sid2), b"more");
}

#[test]
fn refused_early_data_is_sent_again_and_arrives_once() {
    let cache = Arc::new(SessionCache::new(8));
    let c = client(&cache);
    let s1 = server(16_384);
    prime(&c, &s1);
    // Another server (other ticket keys): the ticket and its early data
    // are refused, the handshake is full.
    let s2 = server(16_384);
    let now = Instant::now();
    let mut cl = Session::connect_early(c.clone(), "localhost", None, now).unwrap();
    let mut sv = Session::accept(s2, now).unwrap();
    let id = cl.open_stream().unwrap();
    cl.write(id, b"request").unwrap();
    cl.finish(id).unwrap();
    for _ in 0..6 {
        send(&mut cl, &mut sv, now);
        send(&mut sv, &mut cl, now);
    }
    assert_eq!(cl.early_data(), EarlyData::Rejected);
    assert_eq!(sv.early_data(), EarlyData::NotAttempted);
    let sid = sv.accept_stream().unwrap();
    assert_eq!(read_all(&mut sv, sid), b"request");
    assert_eq!(sv.read(sid, usize::MAX).unwrap(), ReadOutcome::Fin);
    assert!(sv.accept_stream().is_none());
}

#[test]
fn a_replayed_first_flight_is_not_processed_twice() {
    let (_cache, s, mut cl, now) = resuming(16_384);
    let id = cl.open_stream().unwrap();
    cl.write(id, b"transfer 100 coins").unwrap();
    let mut flight = Vec::new();
    cl.poll_transmit(C0, &mut flight, 1 << 20).unwrap();
    // The genuine server session takes it...
    let mut first = Session::accept(s.clone(), now).unwrap();
    first
        .recv(C0, &mut BytesMut::from(&flight[..]), now)
        .unwrap();
    let sid = first.accept_stream().unwrap();
    assert_eq!(read_all(&mut first, sid), b"transfer 100 coins");
    // ...an attacker replays the same bytes to the same server.
    let mut replay = Session::accept(s.clone(), now).unwrap();
    let _ = replay.recv(C0, &mut BytesMut::from(&flight[..]), now);
    assert!(
        replay.accept_stream().is_none(),
        "replayed early data was processed"
    );
    assert_ne!(replay.early_data(), EarlyData::Accepted);
}

#[test]
fn without_early_data_on_the_server_connect_early_is_a_plain_connect() {
    let (_cache, s, mut cl, now) = resuming(0);
    assert_eq!(cl.early_data(), EarlyData::NotAttempted);
    let mut sv = Session::accept(s, now).unwrap();
    for _ in 0..4 {
        send(&mut cl, &mut sv, now);
        send(&mut sv, &mut cl, now);
    }
    assert!(cl.is_tcpls());
    assert_eq!(
        cl.handshake_kind(),
        Some(tcpls_proto::HandshakeKind::Resumed)
    );
}

#[test]
fn early_data_refused_by_a_plain_tls_server_goes_on_the_tls_stream() {
    let cache = Arc::new(SessionCache::new(8));
    let c = client(&cache);
    prime(&c, &server(16_384));
    // The same name now answers as a plain TLS server.
    let plain = Arc::new(
        ServerConfig::builder()
            .self_signed(&["localhost"])
            .unwrap()
            .enable_tcpls(false)
            .max_early_data(16_384)
            .transport(quiet())
            .build()
            .unwrap(),
    );
    let now = Instant::now();
    let mut cl = Session::connect_early(c.clone(), "localhost", None, now).unwrap();
    assert_eq!(cl.early_data(), EarlyData::Pending);
    let mut sv = Session::accept(plain, now).unwrap();
    let id = cl.open_stream().unwrap();
    cl.write(id, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    for _ in 0..6 {
        send(&mut cl, &mut sv, now);
        send(&mut sv, &mut cl, now);
    }
    assert!(!cl.is_tcpls());
    assert_eq!(cl.early_data(), EarlyData::Rejected);
    let sid = sv.accept_stream().unwrap();
    assert_eq!(read_all(&mut sv, sid), b"GET / HTTP/1.1\r\n\r\n");
}
