//! quinn's time to first byte, for `testbed/ttfb-bench.sh`: a server that
//! answers each bidirectional stream with 1 KiB, and a client that times,
//! for each of `--runs` new connections, from the connect to the first
//! byte of the answer: full handshakes, or resumed with the request as
//! 0-RTT data (quinn's `into_0rtt`; the server answers in 0.5-RTT).
//!
//! ```sh
//! quic-ttfb server 0.0.0.0:4444 /tmp/quic-cert.pem
//! quic-ttfb client 10.71.1.2:4444 /tmp/quic-cert.pem --runs 20 [--zero-rtt]
//! ```
//!
//! The client prints the median in milliseconds, then whether every run
//! was what it says (`0-rtt accepted` or `full`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Answer every stream with 1 KiB; write the certificate to CERT_OUT.
    Server {
        addr: SocketAddr,
        cert_out: std::path::PathBuf,
    },
    /// Time `--runs` connections to the server.
    Client {
        addr: SocketAddr,
        /// The server's certificate (its `cert_out`).
        cert: std::path::PathBuf,
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Resume and send the request as 0-RTT data (after one untimed
        /// connection for the ticket).
        #[arg(long)]
        zero_rtt: bool,
    },
}

const SERVER_NAME: &str = "localhost";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

async fn server(addr: SocketAddr, cert_out: &std::path::Path) -> Result<()> {
    let ck = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])?;
    std::fs::write(cert_out, ck.cert.pem())?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(ck.cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der())),
        )?;
    // quinn's 0-RTT: any amount (QUIC flow control bounds it), and answers
    // before the client's Finished.
    tls.max_early_data_size = u32::MAX;
    tls.send_half_rtt_data = true;
    // One ticket per connection: rustls's server keeps sessions to resume
    // (stateful tickets) and a session resumed with 0-RTT is gone, so a
    // second ticket of the same connection would be refused.
    tls.send_tls13_tickets = 1;
    let cfg = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(tls)?,
    ));
    let ep = quinn::Endpoint::server(cfg, addr)?;
    eprintln!("quic-ttfb server on {}", ep.local_addr()?);
    while let Some(incoming) = ep.accept().await {
        tokio::spawn(async move {
            let Ok(connecting) = incoming.accept() else {
                return;
            };
            // A server may always take 0-RTT streams.
            let Ok((conn, _)) = connecting.into_0rtt() else {
                return;
            };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    if recv.read_to_end(4096).await.is_ok() {
                        let _ = send.write_all(&[7u8; 1024]).await;
                        let _ = send.finish();
                    }
                });
            }
        });
    }
    Ok(())
}

async fn client(
    addr: SocketAddr,
    cert: &std::path::Path,
    runs: usize,
    zero_rtt: bool,
) -> Result<()> {
    let pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile_certs(&pem)? {
        roots.add(c)?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    if zero_rtt {
        tls.enable_early_data = true;
    } else {
        tls.resumption = rustls::client::Resumption::disabled();
    }
    let cfg = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls)?,
    ));
    let mut ep = quinn::Endpoint::client("0.0.0.0:0".parse()?)?;
    ep.set_default_client_config(cfg);
    if zero_rtt {
        // The ticket.
        once(&ep, addr, false).await?;
    }
    let mut times = Vec::new();
    let mut all_as_said = true;
    for _ in 0..runs {
        let (ms, zero) = once(&ep, addr, zero_rtt).await?;
        times.push(ms);
        all_as_said &= zero == zero_rtt;
    }
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let median = if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2.0
    };
    println!("{median:.1}");
    println!(
        "{}",
        match (zero_rtt, all_as_said) {
            (true, true) => "0-rtt accepted",
            (false, true) => "full",
            _ => "MIXED",
        }
    );
    ep.wait_idle().await;
    Ok(())
}

/// One connection, one request: milliseconds to the first byte of the
/// answer, and whether it went as accepted 0-RTT data.
async fn once(ep: &quinn::Endpoint, addr: SocketAddr, zero_rtt: bool) -> Result<(f64, bool)> {
    let start = Instant::now();
    let connecting = ep.connect(addr, SERVER_NAME)?;
    let (conn, accepted) = if zero_rtt {
        match connecting.into_0rtt() {
            Ok((conn, accepted)) => (conn, Some(accepted)),
            Err(connecting) => (connecting.await?, None),
        }
    } else {
        (connecting.await?, None)
    };
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(b"GET\n").await?;
    send.finish()?;
    let first = recv.read_chunk(4096, true).await?.context("no answer")?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let mut got = first.bytes.len();
    while let Some(c) = recv.read_chunk(4096, true).await? {
        got += c.bytes.len();
    }
    if got != 1024 {
        bail!("answer of {got} bytes");
    }
    let zero = match accepted {
        Some(a) => a.await,
        None => false,
    };
    // Let the server's ticket for the next connection arrive (after the
    // client's Finished) before closing; the time is already taken.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    conn.close(0u32.into(), b"done");
    Ok((ms, zero))
}

/// The certificates of a PEM file (rustls-pki-types' PEM parser).
fn rustls_pemfile_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .context("reading the certificate PEM")
}

#[tokio::main]
async fn main() -> Result<()> {
    match Args::parse().cmd {
        Cmd::Server { addr, cert_out } => server(addr, &cert_out).await,
        Cmd::Client {
            addr,
            cert,
            runs,
            zero_rtt,
        } => client(addr, &cert, runs, zero_rtt).await,
    }
}
