//! An echo server: every stream of every session gets its bytes back.
//!
//! ```sh
//! cargo run -p tcpls --example echo_server -- 127.0.0.1:4433 /tmp/echo-cert.pem
//! cargo run -p tcpls --example echo_client -- 127.0.0.1:4433 /tmp/echo-cert.pem "hello"
//! ```
//!
//! The server makes a self-signed certificate for `localhost` and
//! 127.0.0.1 and writes it to the path given, for the client to trust.

use std::sync::Arc;

use tcpls::{Server, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:4433".into());
    let cert_out = args.next().unwrap_or_else(|| "/tmp/echo-cert.pem".into());
    let config = ServerConfig::builder()
        .self_signed(&["localhost", "127.0.0.1"])?
        .build()?;
    std::fs::write(&cert_out, &config.certificate_pem)?;
    let server = Server::bind(addr.parse()?, Arc::new(config)).await?;
    eprintln!(
        "echo server on {}, certificate in {cert_out}",
        server.local_addr()?
    );
    loop {
        let session = server.accept().await?;
        tokio::spawn(async move {
            eprintln!("session from {:?}", session.peer_addr());
            while let Ok(mut stream) = session.accept_stream().await {
                tokio::spawn(async move {
                    // Read side to write side until the client finishes.
                    let (mut rx, mut tx) = tokio::io::split(&mut stream);
                    if let Err(e) = tokio::io::copy(&mut rx, &mut tx).await {
                        eprintln!("stream: {e}");
                    }
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
                });
            }
        });
    }
}
