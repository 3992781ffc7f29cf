//! Client-side options shared by `get` and `perf`, and the plain TLS client
//! used for fallback (`get`) and the baseline (`perf --baseline tls`).

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{Context, Result};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use tcpls::{CipherSuite, ClientConfig, TransportConfig};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

#[derive(clap::Args, Debug, Clone)]
pub struct ClientOpts {
    /// Skip certificate verification (self-signed lab servers only).
    #[arg(long, short = 'k')]
    pub insecure: bool,
    /// Trust the certificates in this PEM file (e.g. from `serve --cert-out`).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// TLS 1.3 cipher suite to offer (default: all, server's choice).
    #[arg(long, value_parser = parse_suite)]
    pub cipher: Option<CipherSuite>,
}

fn parse_suite(s: &str) -> Result<CipherSuite, String> {
    CipherSuite::from_name(s).ok_or_else(|| {
        let names: Vec<_> = CipherSuite::ALL.iter().map(|c| c.name()).collect();
        format!("unknown suite {s:?}; one of {}", names.join(", "))
    })
}

impl ClientOpts {
    pub fn suites(&self) -> Vec<CipherSuite> {
        self.cipher.map_or(CipherSuite::ALL.to_vec(), |c| vec![c])
    }

    pub fn tcpls_config(&self, transport: TransportConfig) -> Result<Arc<ClientConfig>> {
        let mut b = ClientConfig::builder()
            .cipher_suites(&self.suites())
            .transport(transport);
        if let Some(ca) = &self.ca {
            b = b.root_certificates_pem_file(ca)?;
        }
        if self.insecure {
            b = b.insecure();
        }
        Ok(Arc::new(b.build()?))
    }

    /// A plain TLS 1.3 connection through OpenSSL's own record layer.
    pub async fn tls_connect(
        &self,
        addr: std::net::SocketAddr,
        host: &str,
    ) -> Result<SslStream<TcpStream>> {
        let mut b = SslConnector::builder(SslMethod::tls_client())?;
        b.set_min_proto_version(Some(SslVersion::TLS1_3))?;
        let names: Vec<_> = self.suites().iter().map(|c| c.name()).collect();
        b.set_ciphersuites(&names.join(":"))?;
        if let Some(ca) = &self.ca {
            b.set_ca_file(ca)
                .with_context(|| format!("loading {}", ca.display()))?;
        }
        if self.insecure {
            b.set_verify(SslVerifyMode::NONE);
        }
        let mut cfg = b.build().configure()?;
        if self.insecure {
            cfg.set_verify_hostname(false);
        }
        let ssl = cfg.into_ssl(host)?;
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let mut s = SslStream::new(ssl, tcp)?;
        Pin::new(&mut s)
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("TLS handshake with {addr}: {e}"))?;
        Ok(s)
    }
}
