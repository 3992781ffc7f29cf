//! TLS settings shared by client and server configurations: suites, key
//! exchange groups, ALPN, certificates and keys (PEM or DER), client
//! authentication, certificates chosen by SNI, custom verification, and
//! the escape hatch to OpenSSL's context builder.
//!
//! ```no_run
//! use tcpls_proto::config::{ClientConfig, ServerConfig};
//! use tcpls_proto::tls_options::ClientAuth;
//! # fn f(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<(), tcpls_proto::Error> {
//! let server = ServerConfig::builder()
//!     .pem(cert, key)?
//!     .alpn_protocols(&[b"h2", b"http/1.1"])
//!     .client_auth(ClientAuth::Require, ca)?
//!     .build()?;
//! let client = ClientConfig::builder()
//!     .root_certificates_pem(ca)?
//!     .client_certificate_pem(cert, key)?
//!     .alpn_protocols(&[b"http/1.1"])
//!     .build()?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use openssl::error::ErrorStack;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    AlpnError, NameType, SniError, SslAlert, SslContextBuilder, SslMethod, SslOptions, SslRef,
    SslVerifyMode, SslVersion,
};
use openssl::x509::{X509VerifyResult, X509};

use crate::error::Error;
use crate::record::CipherSuite;

/// Changes made to the OpenSSL context after ours and before the TCPLS
/// callbacks are installed (so they cannot be removed by it).
pub type ContextHook = Arc<dyn Fn(&mut SslContextBuilder) -> Result<(), ErrorStack> + Send + Sync>;

/// A certificate check, as OpenSSL walks the peer's chain from the root
/// (highest depth) to the peer's own certificate (depth 0).
#[derive(Debug, Clone)]
pub struct VerifyStep {
    /// Position in the chain: 0 is the peer's certificate.
    pub depth: u32,
    /// OpenSSL's verdict for this certificate.
    pub ok: bool,
    /// OpenSSL's reason when `ok` is false.
    pub error: String,
    /// The certificate, DER.
    pub certificate_der: Vec<u8>,
}

/// A custom verification: given each step, true accepts the certificate
/// (even one OpenSSL refused, e.g. for pinning), false refuses it.
pub type VerifyHook = Arc<dyn Fn(&VerifyStep) -> bool + Send + Sync>;

/// Whether a server asks clients for certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificate asked (the default).
    #[default]
    None,
    /// Asked; a client without one is served, one with a bad one refused.
    Request,
    /// Required: a client without a valid certificate is refused.
    Require,
}

/// A certificate chain (leaf first) and its private key.
#[derive(Clone)]
pub(crate) struct Identity {
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
}

impl Identity {
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, Error> {
        let chain = X509::stack_from_pem(cert_pem).map_err(config_err("certificate PEM"))?;
        let key = PKey::private_key_from_pem(key_pem).map_err(config_err("private key PEM"))?;
        Self::new(chain, key)
    }

    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, Error> {
        let c = read_file(cert)?;
        let k = zeroize::Zeroizing::new(read_file(key)?);
        Self::from_pem(&c, &k)
    }

    /// `chain`: DER certificates, leaf first; `key`: PKCS#8 or the
    /// algorithm's own DER form.
    pub fn from_der(chain: &[&[u8]], key: &[u8]) -> Result<Self, Error> {
        let chain = chain
            .iter()
            .map(|c| X509::from_der(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(config_err("certificate DER"))?;
        let key = PKey::private_key_from_der(key).map_err(config_err("private key DER"))?;
        Self::new(chain, key)
    }

    fn new(chain: Vec<X509>, key: PKey<Private>) -> Result<Self, Error> {
        let leaf = chain
            .first()
            .ok_or_else(|| Error::BadConfig("no certificate given".into()))?;
        let public = leaf.public_key().map_err(config_err("certificate key"))?;
        if !public.public_eq(&key) {
            return Err(Error::BadConfig(
                "the private key does not match the certificate".into(),
            ));
        }
        Ok(Self { chain, key })
    }

    /// The chain in PEM.
    pub fn chain_pem(&self) -> Vec<u8> {
        self.chain
            .iter()
            .filter_map(|c| c.to_pem().ok())
            .flatten()
            .collect()
    }

    pub fn install_on_context(&self, b: &mut SslContextBuilder) -> Result<(), Error> {
        let err = config_err("installing the certificate");
        b.set_certificate(&self.chain[0]).map_err(&err)?;
        for c in &self.chain[1..] {
            b.add_extra_chain_cert(c.clone()).map_err(&err)?;
        }
        b.set_private_key(&self.key).map_err(&err)?;
        b.check_private_key().map_err(&err)
    }

    fn install_on_ssl(&self, ssl: &mut SslRef) -> Result<(), ErrorStack> {
        ssl.set_certificate(&self.chain[0])?;
        for c in &self.chain[1..] {
            ssl.add_chain_cert(c.clone())?;
        }
        ssl.set_private_key(&self.key)
    }
}

/// `SSL_OP_ALLOW_NO_DHE_KEX` and `SSL_OP_PREFER_NO_DHE_KEX` (OpenSSL 3.3;
/// the openssl crate names neither).
const SSL_OP_ALLOW_NO_DHE_KEX: u64 = 1 << 10;
const SSL_OP_PREFER_NO_DHE_KEX: u64 = 1 << 35;

/// What both sides configure alike.
#[derive(Clone)]
pub(crate) struct TlsOptions {
    pub suites: Vec<CipherSuite>,
    pub groups: Option<String>,
    /// ALPN protocols: offered (client) or accepted in order of preference
    /// (server).
    pub alpn: Vec<Vec<u8>>,
    pub verify_hook: Option<VerifyHook>,
    pub context_hook: Option<ContextHook>,
    /// Resumption may skip the key exchange (TLS 1.3 psk_ke).
    pub resume_without_key_exchange: bool,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self {
            suites: CipherSuite::ALL.to_vec(),
            groups: None,
            alpn: Vec::new(),
            verify_hook: None,
            context_hook: None,
            resume_without_key_exchange: false,
        }
    }
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("suites", &self.suites)
            .field("groups", &self.groups)
            .field("alpn", &self.alpn)
            .field("verify_hook", &self.verify_hook.is_some())
            .field("context_hook", &self.context_hook.is_some())
            .field(
                "resume_without_key_exchange",
                &self.resume_without_key_exchange,
            )
            .finish()
    }
}

impl TlsOptions {
    /// A context builder for TLS 1.3 only with these suites, groups and
    /// ALPN (the server picks its first protocol the client offers).
    pub fn context(&self, server: bool) -> Result<SslContextBuilder, Error> {
        let method = if server {
            SslMethod::tls_server()
        } else {
            SslMethod::tls_client()
        };
        let mut b = SslContextBuilder::new(method).map_err(internal)?;
        b.set_min_proto_version(Some(SslVersion::TLS1_3))
            .map_err(internal)?;
        let names: Vec<&str> = self.suites.iter().map(|s| s.name()).collect();
        b.set_ciphersuites(&names.join(":"))
            .map_err(config_err("cipher suites"))?;
        if let Some(g) = &self.groups {
            b.set_groups_list(g)
                .map_err(|e| Error::BadConfig(format!("key exchange groups {g:?}: {e}")))?;
        }
        if self.resume_without_key_exchange {
            // A client offers psk_ke beside psk_dhe_ke; a server takes it
            // when offered (OpenSSL otherwise prefers psk_dhe_ke).
            let mut o = SslOptions::from_bits_retain(SSL_OP_ALLOW_NO_DHE_KEX);
            if server {
                o |= SslOptions::from_bits_retain(SSL_OP_PREFER_NO_DHE_KEX);
            }
            b.set_options(o);
        }
        if !self.alpn.is_empty() {
            let mut wire = Vec::new();
            for p in &self.alpn {
                let len = u8::try_from(p.len())
                    .ok()
                    .filter(|l| *l > 0)
                    .ok_or_else(|| {
                        Error::BadConfig("ALPN protocol of 0 or over 255 bytes".into())
                    })?;
                wire.push(len);
                wire.extend_from_slice(p);
            }
            if server {
                let ours = self.alpn.clone();
                b.set_alpn_select_callback(move |_, client| {
                    select_alpn(&ours, client).ok_or(AlpnError::NOACK)
                });
            } else {
                b.set_alpn_protos(&wire).map_err(internal)?;
            }
        }
        Ok(b)
    }

    /// Peer verification with `mode`, through the custom hook if any.
    pub fn set_verify(&self, b: &mut SslContextBuilder, mode: SslVerifyMode) {
        match (&self.verify_hook, mode.contains(SslVerifyMode::PEER)) {
            (Some(hook), true) => {
                let hook = hook.clone();
                b.set_verify_callback(mode, move |ok, ctx| {
                    let step = VerifyStep {
                        depth: ctx.error_depth(),
                        ok,
                        error: if ok {
                            String::new()
                        } else {
                            ctx.error().error_string().to_string()
                        },
                        certificate_der: ctx
                            .current_cert()
                            .and_then(|c| c.to_der().ok())
                            .unwrap_or_default(),
                    };
                    let accept = hook(&step);
                    if accept && !ok {
                        // The application vouches for it: later checks
                        // and the final result must not refuse it again.
                        ctx.set_error(X509VerifyResult::OK);
                    } else if !accept && ok {
                        // So the handshake reports a certificate failure.
                        ctx.set_error(X509VerifyResult::APPLICATION_VERIFICATION);
                    }
                    accept
                });
            }
            _ => b.set_verify(mode),
        }
    }

    /// Runs the application's context hook, if any.
    pub fn run_context_hook(&self, b: &mut SslContextBuilder) -> Result<(), Error> {
        match &self.context_hook {
            Some(h) => h(b).map_err(config_err("context hook")),
            None => Ok(()),
        }
    }
}

/// Server: installs the certificate for the name the client asked for
/// (SNI), when one was configured for it; others get the default one.
pub(crate) fn install_sni(b: &mut SslContextBuilder, by_name: HashMap<String, Identity>) {
    if by_name.is_empty() {
        return;
    }
    b.set_servername_callback(move |ssl: &mut SslRef, alert: &mut SslAlert| {
        let Some(name) = ssl
            .servername(NameType::HOST_NAME)
            .map(str::to_ascii_lowercase)
        else {
            return Ok(());
        };
        let Some(id) = by_name.get(&name) else {
            return Ok(());
        };
        id.install_on_ssl(ssl).map_err(|_| {
            *alert = SslAlert::INTERNAL_ERROR;
            SniError::ALERT_FATAL
        })
    });
}

/// Our first protocol that the client's list (ALPN wire format) holds, as
/// a slice of that list (OpenSSL wants the client's bytes back).
fn select_alpn<'a>(ours: &[Vec<u8>], mut client: &'a [u8]) -> Option<&'a [u8]> {
    let mut offered = Vec::new();
    while let Some((&len, rest)) = client.split_first() {
        let p = rest.get(..len as usize)?;
        offered.push(p);
        client = &rest[len as usize..];
    }
    ours.iter()
        .find_map(|o| offered.iter().find(|p| **p == o.as_slice()).copied())
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::BadConfig(format!("reading {}: {e}", path.display())))
}

/// Maps an OpenSSL error on `what` to a configuration error.
pub(crate) fn config_err(what: &'static str) -> impl Fn(ErrorStack) -> Error {
    move |e| Error::BadConfig(format!("{what}: {e}"))
}

fn internal(e: ErrorStack) -> Error {
    Error::Internal(e.to_string())
}
