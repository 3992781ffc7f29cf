//! TLS configuration between two in-memory peers: ALPN, mutual TLS,
//! certificates chosen by SNI, custom verification, DER input, the OpenSSL
//! context hook, and errors that tell configuration, certificate and
//! handshake failures apart.

mod common;

use std::sync::Arc;

use common::*;
use tcpls_proto::tls_options::ClientAuth;
use tcpls_proto::{ClientConfig, Error, ServerConfig, Session, TransportConfig};

fn quiet() -> TransportConfig {
    TransportConfig {
        silence_probe: None,
        ..Default::default()
    }
}

struct Cert {
    pem: String,
    key_pem: String,
    der: Vec<u8>,
    key_der: Vec<u8>,
}

fn cert(name: &str) -> Cert {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    Cert {
        pem: ck.cert.pem(),
        key_pem: ck.key_pair.serialize_pem(),
        der: ck.cert.der().to_vec(),
        key_der: ck.key_pair.serialize_der(),
    }
}

fn server(c: &Cert) -> tcpls_proto::config::ServerConfigBuilder {
    ServerConfig::builder()
        .pem(c.pem.as_bytes(), c.key_pem.as_bytes())
        .unwrap()
        .transport(quiet())
}

fn client() -> tcpls_proto::config::ClientConfigBuilder {
    ClientConfig::builder()
        .system_roots(false)
        .session_cache(None)
        .transport(quiet())
}

/// Runs the handshake between `c` (asking for `name`) and `s`.
fn pair(c: ClientConfig, s: ServerConfig, name: &str) -> Net {
    let c = Arc::new(c);
    let mut p = Net::new(c.clone(), Arc::new(s), 7);
    p.c = Session::connect(c, name, p.now).unwrap();
    p.drive();
    p
}

#[test]
fn alpn_is_negotiated_and_readable() {
    let id = cert("localhost");
    let s = server(&id)
        .alpn_protocols(&[b"h2", b"http/1.1"])
        .build()
        .unwrap();
    let c = client()
        .insecure()
        .alpn_protocols(&[b"http/1.1", b"h2"])
        .build()
        .unwrap();
    let p = pair(c, s, "localhost");
    assert!(p.c.is_tcpls());
    // The server's preference wins among what the client offers.
    assert_eq!(p.c.alpn(), Some(&b"h2"[..]));
    assert_eq!(p.s.alpn(), Some(&b"h2"[..]));

    // No protocol in common: no ALPN, and the session still starts.
    let s = server(&id).alpn_protocols(&[b"h2"]).build().unwrap();
    let c = client()
        .insecure()
        .alpn_protocols(&[b"imap"])
        .build()
        .unwrap();
    let p = pair(c, s, "localhost");
    assert!(p.c.is_tcpls());
    assert_eq!(p.c.alpn(), None);
}

#[test]
fn mutual_tls_requires_and_shows_the_client_certificate() {
    let srv = cert("localhost");
    let cli = cert("client.example");
    let s = || {
        server(&srv)
            .client_auth(ClientAuth::Require, cli.pem.as_bytes())
            .unwrap()
            .build()
            .unwrap()
    };
    // Without a certificate: refused.
    let p = pair(client().insecure().build().unwrap(), s(), "localhost");
    assert!(p.s.error().is_some(), "the server refused");
    assert!(p.c.error().is_some() || !p.c.is_tcpls());
    // With one: in, and the server sees it.
    let c = client()
        .insecure()
        .client_certificate_pem(cli.pem.as_bytes(), cli.key_pem.as_bytes())
        .unwrap()
        .build()
        .unwrap();
    let p = pair(c, s(), "localhost");
    assert!(p.s.is_tcpls(), "{:?}", p.s.error());
    assert_eq!(p.s.peer_certificate_der(), Some(&cli.der[..]));
    assert_eq!(p.c.peer_certificate_der(), Some(&srv.der[..]));
    // With an untrusted one: refused, as a certificate failure.
    let other = cert("other.example");
    let c = client()
        .insecure()
        .client_certificate_pem(other.pem.as_bytes(), other.key_pem.as_bytes())
        .unwrap()
        .build()
        .unwrap();
    let p = pair(c, s(), "localhost");
    assert!(
        matches!(p.s.error(), Some(Error::Certificate { .. })),
        "{:?}",
        p.s.error()
    );

    // Request (not require): a client without one is served.
    let s = server(&srv)
        .client_auth(ClientAuth::Request, cli.pem.as_bytes())
        .unwrap()
        .build()
        .unwrap();
    let p = pair(client().insecure().build().unwrap(), s, "localhost");
    assert!(p.s.is_tcpls());
    assert_eq!(p.s.peer_certificate_der(), None);
}

#[test]
fn the_certificate_follows_the_server_name() {
    let default = cert("localhost");
    let other = cert("other.example");
    let s = || {
        server(&default)
            .sni_certificate_pem(
                "Other.Example",
                other.pem.as_bytes(),
                other.key_pem.as_bytes(),
            )
            .unwrap()
            .build()
            .unwrap()
    };
    let p = pair(client().insecure().build().unwrap(), s(), "other.example");
    assert_eq!(p.c.peer_certificate_der(), Some(&other.der[..]));
    assert_eq!(p.s.server_name(), Some("other.example"));
    let p = pair(client().insecure().build().unwrap(), s(), "localhost");
    assert_eq!(p.c.peer_certificate_der(), Some(&default.der[..]));
    // Verified against the name asked for.
    let c = client()
        .root_certificates_pem(other.pem.as_bytes())
        .unwrap()
        .build()
        .unwrap();
    let p = pair(c, s(), "other.example");
    assert!(p.c.is_tcpls(), "{:?}", p.c.error());
}

#[test]
fn errors_tell_certificate_configuration_and_handshake_apart() {
    let id = cert("localhost");
    // A self-signed server the client does not trust.
    let p = pair(
        client().build().unwrap(),
        server(&id).build().unwrap(),
        "localhost",
    );
    match p.c.error() {
        Some(Error::Certificate { self_signed, .. }) => assert!(self_signed),
        e => panic!("expected a certificate error, got {e:?}"),
    }
    // Trusted, but for another name.
    let c = client()
        .root_certificates_pem(id.pem.as_bytes())
        .unwrap()
        .build()
        .unwrap();
    let p = pair(c, server(&id).build().unwrap(), "wrong.example");
    assert!(matches!(
        p.c.error(),
        Some(Error::Certificate {
            self_signed: false,
            ..
        })
    ));
    // Configuration problems are found when building, with the reason.
    let other = cert("other.example");
    let e = ServerConfig::builder()
        .pem(id.pem.as_bytes(), other.key_pem.as_bytes())
        .unwrap_err();
    assert!(
        matches!(&e, Error::BadConfig(m) if m.contains("does not match")),
        "{e}"
    );
    let e = ServerConfig::builder().pem(b"not pem", b"x").unwrap_err();
    assert!(matches!(e, Error::BadConfig(_)), "{e}");
    let e = client()
        .key_exchange_groups("nonsense")
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::BadConfig(_)), "{e}");
    // No suite in common: a handshake failure, neither of the above.
    let s = server(&id)
        .cipher_suites(&[tcpls_proto::CipherSuite::Aes256GcmSha384])
        .build()
        .unwrap();
    let c = client()
        .insecure()
        .cipher_suites(&[tcpls_proto::CipherSuite::Chacha20Poly1305Sha256])
        .build()
        .unwrap();
    let p = pair(c, s, "localhost");
    assert!(
        matches!(p.s.error(), Some(Error::Handshake(_))),
        "{:?}",
        p.s.error()
    );
}

#[test]
fn a_custom_verifier_can_pin_or_refuse() {
    let id = cert("localhost");
    let pinned = id.der.clone();
    // Pinning: OpenSSL refuses the self-signed certificate, the hook
    // accepts it because it is the expected one.
    let c = client()
        .verify_callback(move |step| step.certificate_der == pinned)
        .build()
        .unwrap();
    let p = pair(c, server(&id).build().unwrap(), "localhost");
    assert!(p.c.is_tcpls(), "{:?}", p.c.error());
    // Refusing a certificate OpenSSL trusts.
    let c = client()
        .root_certificates_pem(id.pem.as_bytes())
        .unwrap()
        .verify_callback(|_| false)
        .build()
        .unwrap();
    let p = pair(c, server(&id).build().unwrap(), "localhost");
    assert!(
        matches!(p.c.error(), Some(Error::Certificate { .. })),
        "{:?}",
        p.c.error()
    );
}

#[test]
fn der_input_and_the_context_hook() {
    let id = cert("localhost");
    let s = ServerConfig::builder()
        .der(&[&id.der], &id.key_der)
        .unwrap()
        .transport(quiet())
        // Runs after our settings: no tickets, whatever `tickets` says.
        .ssl_context(|b| b.set_num_tickets(0))
        .build()
        .unwrap();
    assert!(String::from_utf8_lossy(&s.certificate_pem).contains("BEGIN CERTIFICATE"));
    let cache = Arc::new(tcpls_proto::SessionCache::new(4));
    let c = client()
        .root_certificate_der(&id.der)
        .unwrap()
        .session_cache(Some(cache.clone()))
        .build()
        .unwrap();
    let mut p = pair(c, s, "localhost");
    // The TCPLS callbacks survived the hook.
    assert!(p.c.is_tcpls() && p.s.is_tcpls());
    let sid = p.c.open_stream().unwrap();
    p.c.write(sid, b"x").unwrap();
    p.drive();
    assert!(cache.is_empty(), "the hook turned tickets off");
    let e = ServerConfig::builder()
        .der(&[&id.der], b"junk")
        .unwrap_err();
    assert!(matches!(e, Error::BadConfig(_)));
}
