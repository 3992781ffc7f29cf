//! One self-signed identity, and every peer's client and server
//! configuration built from it, all restricted to the same TLS 1.3 suite.

use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use openssl::pkey::PKey;
use openssl::ssl::{
    SslAcceptor, SslConnector, SslMethod, SslOptions, SslSession, SslSessionCacheMode,
    SslVerifyMode, SslVersion,
};
use openssl::x509::X509;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tcpls::CipherSuite;

/// Server name every client asks for.
pub const SERVER_NAME: &str = "localhost";

/// Configurations for all peers, built once per run.
pub struct Configs {
    pub suite: CipherSuite,
    pub openssl_server: SslAcceptor,
    pub openssl_client: SslConnector,
    pub rustls_server: Arc<rustls::ServerConfig>,
    pub rustls_client: Arc<rustls::ClientConfig>,
    pub quinn_server: quinn::ServerConfig,
    pub quinn_client: quinn::ClientConfig,
    pub cert_pem: String,
    pub key_pem: String,
    /// Resuming configurations: the OpenSSL client's newest ticket, which
    /// its next connection offers (each ticket used once).
    pub openssl_ticket: Option<Arc<Mutex<Option<SslSession>>>>,
    /// Client connections (OpenSSL, rustls) whose handshake resumed: the
    /// resumed figures check that every timed one did.
    pub resumed: AtomicU32,
    /// OpenSSL and TCPLS resume without key exchange (psk_ke) both sides.
    pub psk_ke: bool,
}

impl Configs {
    /// Configurations for full handshakes: no server sends tickets.
    pub fn new(suite: CipherSuite) -> Result<Self> {
        Self::build(suite, false, false)
    }

    /// Configurations for resumed handshakes: each server (OpenSSL,
    /// rustls; quinn's are those of [`Self::new`]) sends one ticket per
    /// handshake and each client offers its newest.
    pub fn resuming(suite: CipherSuite) -> Result<Self> {
        Self::build(suite, true, false)
    }

    /// [`Self::resuming`], OpenSSL and TCPLS resuming without key exchange
    /// (psk_ke, both sides opted in; rustls and quinn have no such mode).
    pub fn resuming_psk_ke(suite: CipherSuite) -> Result<Self> {
        Self::build(suite, true, true)
    }

    fn build(suite: CipherSuite, resuming: bool, psk_ke: bool) -> Result<Self> {
        let ck = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
            .context("generating the certificate")?;
        let cert_pem = ck.cert.pem();
        let key_pem = ck.key_pair.serialize_pem();
        let cert_der = CertificateDer::from(ck.cert.der().to_vec());
        let key_der = PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());

        // OpenSSL: the vendored build the TCPLS handshake also uses.
        let mut a = SslAcceptor::mozilla_modern_v5(SslMethod::tls_server())?;
        a.set_min_proto_version(Some(SslVersion::TLS1_3))?;
        a.set_ciphersuites(suite.name())?;
        let x509 = X509::from_pem(cert_pem.as_bytes())?;
        a.set_certificate(&x509)?;
        let pkey = PKey::private_key_from_pem(key_pem.as_bytes())?;
        a.set_private_key(&pkey)?;
        a.set_num_tickets(resuming as usize)?;
        // SSL_OP_ALLOW_NO_DHE_KEX (bit 10), SSL_OP_PREFER_NO_DHE_KEX (35).
        if psk_ke {
            a.set_options(SslOptions::from_bits_retain(1 << 10 | 1 << 35));
        }
        let openssl_server = a.build();
        let mut c = SslConnector::builder(SslMethod::tls_client())?;
        c.set_min_proto_version(Some(SslVersion::TLS1_3))?;
        if psk_ke {
            c.set_options(SslOptions::from_bits_retain(1 << 10));
        }
        c.set_ciphersuites(suite.name())?;
        c.set_verify(SslVerifyMode::NONE);
        let openssl_ticket = resuming.then(|| Arc::new(Mutex::new(None)));
        if let Some(slot) = &openssl_ticket {
            let slot = slot.clone();
            c.set_session_cache_mode(
                SslSessionCacheMode::CLIENT | SslSessionCacheMode::NO_INTERNAL,
            );
            c.set_new_session_callback(move |_, s| {
                // A copy: OpenSSL marks the connection's own session not
                // resumable when the connection is dropped without a
                // close_notify, as the benchmark's are.
                if let Ok(copy) = s.to_der().and_then(|d| SslSession::from_der(&d)) {
                    *slot.lock().unwrap() = Some(copy);
                }
            });
        }
        let openssl_client = c.build();

        // rustls with its default provider (aws-lc-rs), one suite.
        let provider = Arc::new(rustls_provider(suite));
        let mut s = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert_der.clone()],
                PrivateKeyDer::Pkcs8(key_der.clone_key()),
            )?;
        s.send_tls13_tickets = resuming as usize;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert_der.clone())?;
        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();

        // quinn: default transport configuration, the same rustls provider
        // (QUIC needs ALPN-free TLS 1.3 and early data off, quinn's defaults).
        // QUIC's Initial packets need AES-128-GCM whatever the suite.
        let mut quic_provider = rustls_provider(suite);
        if suite != CipherSuite::Aes128GcmSha256 {
            quic_provider
                .cipher_suites
                .push(rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256);
        }
        let quic_provider = Arc::new(quic_provider);
        let quic_server = rustls::ServerConfig::builder_with_provider(quic_provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![cert_der], PrivateKeyDer::Pkcs8(key_der))?;
        let quinn_server = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(quic_server)?,
        ));
        let quic_client = rustls::ClientConfig::builder_with_provider(quic_provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let quinn_client = quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(quic_client)?,
        ));

        Ok(Self {
            suite,
            openssl_server,
            openssl_client,
            rustls_server: Arc::new(s),
            rustls_client: Arc::new(client),
            quinn_server,
            quinn_client,
            cert_pem,
            key_pem,
            openssl_ticket,
            resumed: AtomicU32::new(0),
            psk_ke,
        })
    }

    /// A TCPLS server configuration with this run's certificate and suite,
    /// sending `tickets` session tickets per handshake (0 for the full
    /// handshake figures, as the other stacks' servers send none there).
    pub fn tcpls_server(
        &self,
        transport: tcpls::TransportConfig,
        tickets: usize,
    ) -> Result<tcpls::ServerConfig> {
        Ok(tcpls::ServerConfig::builder()
            .pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes())?
            .cipher_suites(&[self.suite])
            .transport(transport)
            .tickets(tickets)
            .resume_without_key_exchange(self.psk_ke)
            .build()?)
    }

    /// A TCPLS client configuration (certificate not verified, as for the
    /// OpenSSL peer), keeping tickets in `cache` (`None`: never resumes).
    pub fn tcpls_client(
        &self,
        transport: tcpls::TransportConfig,
        cache: Option<Arc<tcpls::SessionCache>>,
    ) -> Result<tcpls::ClientConfig> {
        Ok(tcpls::ClientConfig::builder()
            .insecure()
            .cipher_suites(&[self.suite])
            .transport(transport)
            .session_cache(cache)
            .resume_without_key_exchange(self.psk_ke)
            .build()?)
    }
}

/// rustls's aws-lc-rs provider limited to `suite`; key exchange groups are
/// the provider's defaults.
fn rustls_provider(suite: CipherSuite) -> rustls::crypto::CryptoProvider {
    use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider};
    let s = match suite {
        CipherSuite::Aes128GcmSha256 => cipher_suite::TLS13_AES_128_GCM_SHA256,
        CipherSuite::Aes256GcmSha384 => cipher_suite::TLS13_AES_256_GCM_SHA384,
        CipherSuite::Chacha20Poly1305Sha256 => cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    };
    rustls::crypto::CryptoProvider {
        cipher_suites: vec![s],
        ..default_provider()
    }
}
