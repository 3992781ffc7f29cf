//! Session tickets and resumption, between two in-memory peers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tcpls_proto::{
    ClientConfig, HandshakeKind, ReadOutcome, ServerConfig, SessionCache, TransportConfig,
};

fn client(cache: &Arc<SessionCache>, tcpls: bool) -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder()
            .insecure()
            .enable_tcpls(tcpls)
            .session_cache(Some(cache.clone()))
            .transport(TransportConfig {
                silence_probe: None,
                ..Default::default()
            })
            .build()
            .unwrap(),
    )
}

/// A request and its answer on one stream, both checked.
fn exchange(p: &mut Net) {
    let id = p.c.open_stream().unwrap();
    p.c.write(id, b"request").unwrap();
    p.c.finish(id).unwrap();
    p.drive();
    let sid = p.s.accept_stream().unwrap();
    assert_eq!(
        p.s.read(sid, 100).unwrap(),
        ReadOutcome::Data("request".into())
    );
    let answer = vec![7u8; 100_000];
    let mut off = 0;
    while off < answer.len() {
        off += p.s.write(sid, &answer[off..]).unwrap();
        p.drive();
    }
    p.s.finish(sid).unwrap();
    p.drive();
    let mut got = Vec::new();
    loop {
        match p.c.read(id, usize::MAX).unwrap() {
            ReadOutcome::Data(d) => got.extend_from_slice(&d),
            ReadOutcome::Fin => break,
            o => panic!("unexpected {o:?}"),
        }
    }
    assert_eq!(got, answer);
}

fn session(c: &Arc<ClientConfig>, s: &Arc<ServerConfig>) -> Net {
    let mut p = Net::new(c.clone(), s.clone(), 3);
    p.drive();
    p
}

#[test]
fn a_second_session_resumes_with_a_ticket_from_the_first() {
    let cache = Arc::new(SessionCache::new(8));
    let c = client(&cache, true);
    let s = server_config(TransportConfig::default());

    let mut first = session(&c, &s);
    assert!(first.c.is_tcpls());
    assert_eq!(first.c.handshake_kind(), Some(HandshakeKind::Full));
    // The tickets came before any record of the server's own, and the
    // records after them decrypt: the sequence numbers line up.
    exchange(&mut first);
    assert_eq!(cache.len(), 2, "the server sends two tickets");

    let mut second = session(&c, &s);
    assert!(second.c.is_tcpls() && second.s.is_tcpls());
    assert_eq!(second.c.handshake_kind(), Some(HandshakeKind::Resumed));
    assert_eq!(second.s.handshake_kind(), Some(HandshakeKind::Resumed));
    exchange(&mut second);
    // One ticket was used; the resumed handshake brought at least one more.
    assert!(cache.len() >= 2, "{} tickets", cache.len());
    // A resumed session joins connections like a full one: it got tokens.
    let id = second.join_now();
    assert!(second.live_links().contains(&id));
}

/// Once the handshake is over, the server's OpenSSL state is handed out
/// once, for the caller to free off the critical path, and the session
/// works without it; a client that reads tickets keeps its own until they
/// came, and still gets them.
#[test]
fn the_handshakes_openssl_state_is_handed_out_unless_tickets_need_it() {
    let cache = Arc::new(SessionCache::new(8));
    let c = client(&cache, true);
    let s = server_config(TransportConfig::default());
    let mut p = session(&c, &s);
    assert!(p.s.take_retired_tls().is_some(), "the server's state");
    assert!(p.s.take_retired_tls().is_none(), "handed out once");
    assert!(p.c.take_retired_tls().is_none(), "kept for the tickets");
    exchange(&mut p);
    assert_eq!(cache.len(), 2, "the tickets still came");
    // A client without a session cache hands its state out too.
    let plain = Arc::new(
        ClientConfig::builder()
            .insecure()
            .session_cache(None)
            .transport(TransportConfig {
                silence_probe: None,
                ..Default::default()
            })
            .build()
            .unwrap(),
    );
    let mut q = session(&plain, &s);
    assert!(q.c.take_retired_tls().is_some());
    exchange(&mut q);
}

#[test]
fn tickets_are_used_once() {
    let cache = Arc::new(SessionCache::new(8));
    let c = client(&cache, true);
    let s = Arc::new(
        ServerConfig::builder()
            .self_signed(&["localhost"])
            .unwrap()
            .tickets(1)
            .build()
            .unwrap(),
    );
    let first = session(&c, &s);
    drop(first);
    assert_eq!(cache.len(), 1);
    // Two sessions start before either finishes: only one has a ticket.
    let mut a = Net::new(c.clone(), s.clone(), 4);
    let mut b = Net::new(c.clone(), s.clone(), 5);
    assert!(cache.is_empty());
    a.drive();
    b.drive();
    let kinds = [a.c.handshake_kind(), b.c.handshake_kind()];
    assert!(kinds.contains(&Some(HandshakeKind::Resumed)));
    assert!(kinds.contains(&Some(HandshakeKind::Full)));
}

#[test]
fn a_ticket_from_another_server_key_gives_a_full_handshake() {
    let cache = Arc::new(SessionCache::new(8));
    let c = client(&cache, true);
    let one = server_config(TransportConfig::default());
    let other = server_config(TransportConfig::default());
    let mut p = session(&c, &one);
    exchange(&mut p);
    let before = cache.len();
    let mut q = session(&c, &other);
    assert_eq!(q.c.handshake_kind(), Some(HandshakeKind::Full));
    assert_eq!(q.s.handshake_kind(), Some(HandshakeKind::Full));
    exchange(&mut q);
    // The refused ticket is gone; the new server's are there.
    assert_eq!(cache.len(), before - 1 + 2);
}

#[test]
fn a_ticket_of_a_rotated_out_key_is_refused() {
    let cache = Arc::new(SessionCache::new(8));
    let c = client(&cache, true);
    let s = Arc::new(
        ServerConfig::builder()
            .self_signed(&["localhost"])
            .unwrap()
            .ticket_key_rotation(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    session(&c, &s);
    // One period later the ticket's key is the previous one: accepted, and
    // the client gets a ticket under the new key.
    std::thread::sleep(Duration::from_millis(350));
    let p = session(&c, &s);
    assert_eq!(p.c.handshake_kind(), Some(HandshakeKind::Resumed));
    drop(p);
    // Two periods later that key is gone too.
    std::thread::sleep(Duration::from_millis(700));
    let q = session(&c, &s);
    assert_eq!(q.c.handshake_kind(), Some(HandshakeKind::Full));
}

#[test]
fn a_server_without_tickets_gives_full_handshakes() {
    let cache = Arc::new(SessionCache::new(8));
    let c = client(&cache, true);
    let s = Arc::new(
        ServerConfig::builder()
            .self_signed(&["localhost"])
            .unwrap()
            .tickets(0)
            .build()
            .unwrap(),
    );
    let mut p = session(&c, &s);
    exchange(&mut p);
    assert!(cache.is_empty());
}

#[test]
fn plain_tls_sessions_resume_too() {
    // A plain TLS client against a TCPLS server: OpenSSL keeps the record
    // layer on both sides and reads the tickets itself.
    let cache = Arc::new(SessionCache::new(8));
    let c = client(&cache, false);
    let s = server_config(TransportConfig::default());
    let mut p = session(&c, &s);
    assert!(!p.c.is_tcpls());
    exchange(&mut p);
    assert!(!cache.is_empty());
    let mut q = session(&c, &s);
    assert_eq!(q.c.handshake_kind(), Some(HandshakeKind::Resumed));
    exchange(&mut q);
}

#[test]
fn the_cache_exports_and_imports_tickets() {
    let cache = Arc::new(SessionCache::new(8));
    let c = client(&cache, true);
    let s = server_config(TransportConfig::default());
    let mut p = session(&c, &s);
    exchange(&mut p);
    let saved = cache.export();
    assert_eq!(saved.len(), 2);
    let restored = Arc::new(SessionCache::new(8));
    assert!(saved.iter().all(|t| t.tcpls), "the server spoke TCPLS");
    let n = restored.import(saved);
    assert_eq!(n, 2);
    // Garbage is skipped, not an error.
    let junk = tcpls_proto::ExportedTicket {
        key: "localhost".into(),
        der: b"not a session".to_vec(),
        tcpls: true,
    };
    assert_eq!(restored.import([junk]), 0);
    let c2 = client(&restored, true);
    let q = session(&c2, &s);
    assert_eq!(q.c.handshake_kind(), Some(HandshakeKind::Resumed));
}

#[test]
fn a_ticket_from_an_unverified_session_is_not_used_by_a_verifying_client() {
    let cache = Arc::new(SessionCache::new(8));
    let s = server_config(TransportConfig::default());
    let insecure = client(&cache, true);
    let verifying = Arc::new(
        ClientConfig::builder()
            .root_certificates_pem(&s.certificate_pem)
            .unwrap()
            .system_roots(false)
            .session_cache(Some(cache.clone()))
            .transport(TransportConfig {
                silence_probe: None,
                ..Default::default()
            })
            .build()
            .unwrap(),
    );
    let mut p = session(&insecure, &s);
    exchange(&mut p);
    assert_eq!(cache.len(), 2);
    // Resuming would skip the certificate check this client asks for.
    let mut q = session(&verifying, &s);
    assert_eq!(q.c.handshake_kind(), Some(HandshakeKind::Full));
    exchange(&mut q);
    assert_eq!(cache.len(), 4);
    let r = session(&verifying, &s);
    assert_eq!(r.c.handshake_kind(), Some(HandshakeKind::Resumed));
}

/// Resumption without a key exchange (psk_ke) only when both sides allow
/// it: a full handshake names its group, a resumed one between two
/// consenting sides none, and one where only the client offers it keeps
/// the key exchange. Each session carries data.
#[test]
fn resumption_skips_the_key_exchange_only_when_both_sides_allow_it() {
    let psk_server = |yes: bool| {
        Arc::new(
            ServerConfig::builder()
                .self_signed(&["localhost"])
                .unwrap()
                .resume_without_key_exchange(yes)
                .build()
                .unwrap(),
        )
    };
    let psk_client = |cache: &Arc<SessionCache>| {
        Arc::new(
            ClientConfig::builder()
                .insecure()
                .session_cache(Some(cache.clone()))
                .resume_without_key_exchange(true)
                .transport(TransportConfig {
                    silence_probe: None,
                    ..Default::default()
                })
                .build()
                .unwrap(),
        )
    };
    for server_allows in [true, false] {
        let cache = Arc::new(SessionCache::new(8));
        let (c, s) = (psk_client(&cache), psk_server(server_allows));
        let mut first = session(&c, &s);
        assert_eq!(first.c.handshake_kind(), Some(HandshakeKind::Full));
        let group = first.c.key_exchange().map(str::to_string);
        assert!(group.is_some(), "a full handshake has a key exchange");
        assert_eq!(first.s.key_exchange(), group.as_deref());
        exchange(&mut first);
        let mut second = session(&c, &s);
        assert_eq!(second.c.handshake_kind(), Some(HandshakeKind::Resumed));
        if server_allows {
            assert_eq!(second.c.key_exchange(), None, "psk_ke");
            assert_eq!(second.s.key_exchange(), None);
        } else {
            assert_eq!(second.c.key_exchange(), group.as_deref(), "psk_dhe_ke");
        }
        exchange(&mut second);
    }
}
