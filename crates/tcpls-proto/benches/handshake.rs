//! What a full TLS 1.3 handshake costs the protocol engine, with no
//! sockets and no runtime: a TCPLS client and server (`Session`) against
//! OpenSSL's own client and server (`SslStream` over in-memory pipes), with
//! the same certificate (ECDSA P-256), the same OpenSSL build and the same
//! key exchange (OpenSSL's default groups), no session tickets. The
//! difference between this and `tcpls-bench --handshakes` (sockets,
//! tasks, wake-ups) is what the runtime adds:
//! `cargo bench -p tcpls-proto --bench handshake`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use openssl::pkey::PKey;
use openssl::ssl::{
    Ssl, SslAcceptor, SslConnector, SslMethod, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::X509;
use tcpls_proto::session::TransmitBuf;
use tcpls_proto::{ClientConfig, ConnectionId, ServerConfig, Session};

/// One TCPLS handshake: flights go back and forth until both sides are
/// done (the client's `handshake_kind` is set once it finished).
fn tcpls_handshake(c: &Arc<ClientConfig>, s: &Arc<ServerConfig>) {
    let now = Instant::now();
    let mut client = Session::connect(c.clone(), "localhost", now).unwrap();
    let mut server = Session::accept(s.clone(), now).unwrap();
    let mut wire = TransmitBuf::default();
    for _ in 0..4 {
        wire.clear();
        client
            .poll_transmit_buf(ConnectionId::FIRST, &mut wire, 1 << 20)
            .unwrap();
        let _ = server.recv(ConnectionId::FIRST, &mut BytesMut::from(&wire[..]), now);
        wire.clear();
        server
            .poll_transmit_buf(ConnectionId::FIRST, &mut wire, 1 << 20)
            .unwrap();
        let _ = client.recv(ConnectionId::FIRST, &mut BytesMut::from(&wire[..]), now);
    }
    assert!(client.handshake_kind().is_some() && server.handshake_kind().is_some());
}

/// One end of an in-memory duplex pipe for `SslStream`.
struct Pipe {
    rd: Rc<RefCell<VecDeque<u8>>>,
    wr: Rc<RefCell<VecDeque<u8>>>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut q = self.rd.borrow_mut();
        if q.is_empty() {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(q.len());
        for (b, x) in buf.iter_mut().zip(q.drain(..n)) {
            *b = x;
        }
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.wr.borrow_mut().extend(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One OpenSSL handshake over an in-memory pipe pair.
fn openssl_handshake(client: &SslConnector, server: &SslAcceptor) {
    let (a, b) = (Rc::default(), Rc::default());
    let ssl = client.configure().unwrap().into_ssl("localhost").unwrap();
    let to_server = Pipe {
        rd: Rc::clone(&a),
        wr: Rc::clone(&b),
    };
    let mut c = SslStream::new(ssl, to_server).unwrap();
    let to_client = Pipe { rd: b, wr: a };
    let mut s = SslStream::new(Ssl::new(server.context()).unwrap(), to_client).unwrap();
    let (mut c_done, mut s_done) = (false, false);
    for _ in 0..4 {
        c_done = c_done || c.connect().is_ok();
        s_done = s_done || s.accept().is_ok();
    }
    assert!(c_done && s_done);
}

fn handshakes(cr: &mut Criterion) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (ck.cert.pem(), ck.key_pair.serialize_pem());

    let server = Arc::new(
        ServerConfig::builder()
            .pem(cert.as_bytes(), key.as_bytes())
            .unwrap()
            .build()
            .unwrap(),
    );
    let client = Arc::new(ClientConfig::builder().insecure().build().unwrap());

    let mut a = SslAcceptor::mozilla_modern_v5(SslMethod::tls_server()).unwrap();
    a.set_min_proto_version(Some(SslVersion::TLS1_3)).unwrap();
    a.set_certificate(&X509::from_pem(cert.as_bytes()).unwrap())
        .unwrap();
    a.set_private_key(&PKey::private_key_from_pem(key.as_bytes()).unwrap())
        .unwrap();
    a.set_num_tickets(0).unwrap();
    let ossl_server = a.build();
    let mut c = SslConnector::builder(SslMethod::tls_client()).unwrap();
    c.set_min_proto_version(Some(SslVersion::TLS1_3)).unwrap();
    c.set_verify(SslVerifyMode::NONE);
    let ossl_client = c.build();

    let mut g = cr.benchmark_group("full handshake, in memory");
    g.bench_function("tcpls", |b| b.iter(|| tcpls_handshake(&client, &server)));
    g.bench_function("openssl", |b| {
        b.iter(|| openssl_handshake(&ossl_client, &ossl_server))
    });
    g.finish();
}

criterion_group!(benches, handshakes);
criterion_main!(benches);
