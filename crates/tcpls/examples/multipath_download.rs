//! One download over two TCP connections of one session, on loopback:
//! the client connects from 127.0.0.1, joins a second connection from
//! 127.0.0.2, and the server's scheduler spreads the stream over both.
//! Prints what each connection carried.
//!
//! ```sh
//! cargo run --release -p tcpls --example multipath_download -- 256
//! ```

use std::sync::Arc;
use std::time::Instant;

use tcpls::{ClientConfig, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(64);
    let server_config = ServerConfig::builder()
        .self_signed(&["localhost"])?
        .build()?;
    let client_config = ClientConfig::builder()
        .root_certificates_pem(&server_config.certificate_pem)?
        .build()?;
    let server = Server::bind("127.0.0.1:0".parse()?, Arc::new(server_config)).await?;
    let addr = server.local_addr()?;
    tokio::spawn(async move {
        while let Ok(session) = server.accept().await {
            tokio::spawn(async move {
                while let Ok(mut stream) = session.accept_stream().await {
                    let block = vec![7u8; 1 << 20];
                    for _ in 0..mib {
                        if stream.write_all(&block).await.is_err() {
                            return;
                        }
                    }
                    let _ = stream.shutdown().await;
                }
            });
        }
    });

    let session = tcpls::connect_from(
        addr,
        Some("127.0.0.1:0".parse()?),
        "localhost",
        Arc::new(client_config),
    )
    .await?;
    // Join tokens follow the handshake.
    while session.available_tokens() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    session.join(addr, Some("127.0.0.2:0".parse()?)).await?;
    let start = Instant::now();
    let mut stream = session.open_stream().await?;
    stream.shutdown().await?; // the request: an empty stream
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0usize;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} MiB in {secs:.3} s ({:.2} Gbit/s)",
        total >> 20,
        total as f64 * 8.0 / secs / 1e9
    );
    for c in session.connection_stats() {
        println!(
            "connection {} from {:?}: {} bytes received",
            c.conn, c.local_addr, c.bytes_received
        );
    }
    session.close(0, "done");
    session.drained().await;
    Ok(())
}
