//! Our record layer is TLS 1.3's: for connection 0, a record sealed by
//! `RecordKey` is byte-identical to the one OpenSSL writes for the same
//! plaintext, key and sequence number, for every TLS 1.3 suite.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use openssl::pkey::PKey;
use openssl::ssl::{ErrorCode, Ssl, SslContext, SslMethod, SslStream, SslVersion};
use openssl::x509::X509;
use tcpls_proto::record::{CipherSuite, RecordKey};
use tcpls_proto::wire::record::{ContentType, HEADER_LEN};
use tcpls_proto::ConnectionId;

#[derive(Default)]
struct Pipe {
    input: Vec<u8>,
    output: Vec<u8>,
}
impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input.drain(..n);
        Ok(n)
    }
}
impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

type Secrets = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

fn ctx(server: bool, suite: CipherSuite, secrets: Secrets) -> SslContext {
    let m = if server {
        SslMethod::tls_server()
    } else {
        SslMethod::tls_client()
    };
    let mut b = openssl::ssl::SslContextBuilder::new(m).unwrap();
    b.set_min_proto_version(Some(SslVersion::TLS1_3)).unwrap();
    b.set_ciphersuites(suite.name()).unwrap();
    b.set_keylog_callback(move |_, line| {
        let mut p = line.split(' ');
        let (label, _, secret) = (p.next().unwrap(), p.next(), p.next().unwrap());
        let bytes = (0..secret.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&secret[i..i + 2], 16).unwrap())
            .collect();
        secrets.lock().unwrap().push((label.to_string(), bytes));
    });
    if server {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        b.set_certificate(&X509::from_pem(ck.cert.pem().as_bytes()).unwrap())
            .unwrap();
        b.set_private_key(
            &PKey::private_key_from_pem(ck.key_pair.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    }
    b.build()
}

fn pump(a: &mut SslStream<Pipe>, b: &mut SslStream<Pipe>) {
    let out = std::mem::take(&mut a.get_mut().output);
    b.get_mut().input.extend_from_slice(&out);
}

#[test]
fn connection_zero_records_match_openssl() {
    for suite in CipherSuite::ALL {
        let secrets: Secrets = Default::default();
        let mut c = Ssl::new(&ctx(false, suite, secrets.clone())).unwrap();
        c.set_connect_state();
        let mut s = Ssl::new(&ctx(true, suite, Default::default())).unwrap();
        s.set_accept_state();
        let mut c = SslStream::new(c, Pipe::default()).unwrap();
        let mut s = SslStream::new(s, Pipe::default()).unwrap();
        for _ in 0..4 {
            for side in [&mut c, &mut s] {
                if let Err(e) = side.do_handshake() {
                    assert_eq!(e.code(), ErrorCode::WANT_READ, "{e}");
                }
            }
            pump(&mut c, &mut s);
            pump(&mut s, &mut c);
        }
        c.get_mut().output.clear();
        let secret = secrets
            .lock()
            .unwrap()
            .iter()
            .find(|(l, _)| l == "CLIENT_TRAFFIC_SECRET_0")
            .map(|(_, s)| s.clone())
            .expect("client traffic secret");
        let key = RecordKey::new(suite, &secret).unwrap();
        for (seq, plaintext) in [b"first record".to_vec(), vec![0xab; 16384], vec![1]]
            .into_iter()
            .enumerate()
        {
            c.ssl_write(&plaintext).unwrap();
            let theirs = std::mem::take(&mut c.get_mut().output);
            let mut ours = vec![0u8; HEADER_LEN];
            ours.extend_from_slice(&plaintext);
            key.seal(
                ConnectionId(0),
                seq as u64,
                ContentType::ApplicationData,
                &mut ours,
                0,
            )
            .unwrap();
            assert_eq!(ours, theirs, "{} record {seq}", suite.name());
            // And OpenSSL's peer accepts ours.
            s.get_mut().input.extend_from_slice(&ours);
            let mut buf = vec![0u8; 20000];
            let n = s.ssl_read(&mut buf).unwrap();
            assert_eq!(&buf[..n], &plaintext[..]);
        }
    }
}
