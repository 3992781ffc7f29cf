//! Sends a message on a TCPLS stream and prints what comes back (see
//! `echo_server.rs`). The certificate is verified against the file the
//! server wrote.

use std::sync::Arc;

use tcpls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:4433".into());
    let ca = args.next().unwrap_or_else(|| "/tmp/echo-cert.pem".into());
    let message = args.next().unwrap_or_else(|| "hello over TCPLS".into());
    let config = ClientConfig::builder()
        .root_certificates_pem_file(&ca)?
        .build()?;
    let session = tcpls::connect(addr.parse()?, "localhost", Arc::new(config)).await?;
    println!(
        "connected: {} ({:?} handshake, {:?})",
        if session.is_tcpls() {
            "TCPLS"
        } else {
            "plain TLS"
        },
        session.handshake_kind(),
        session.cipher_suite()
    );
    let mut stream = session.open_stream().await?;
    stream.write_all(message.as_bytes()).await?;
    // Half-close: the server echoes until it sees the end.
    stream.shutdown().await?;
    let mut back = String::new();
    stream.read_to_string(&mut back).await?;
    println!("echoed: {back}");
    session.close(0, "done");
    session.drained().await;
    Ok(())
}
