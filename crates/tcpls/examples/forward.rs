//! A TCP port forwarder over TCPLS, the core of `tcpls tunnel`: each TCP
//! connection accepted on one side becomes a stream of one shared session,
//! and a TCP connection to the target on the other (half-close both ways).
//!
//! ```sh
//! # server side: forward streams to the local ssh server
//! cargo run -p tcpls --example forward -- server 0.0.0.0:4433 127.0.0.1:22 /tmp/fwd-cert.pem
//! # client side: local port 2222 to the server
//! cargo run -p tcpls --example forward -- client 127.0.0.1:2222 SERVER:4433 /tmp/fwd-cert.pem
//! ssh -p 2222 localhost
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use tcpls::{ClientConfig, Server, ServerConfig};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, listen, target, cert] = args.as_slice() else {
        return Err("usage: forward server|client LISTEN TARGET CERT.pem".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let target: SocketAddr = target.parse()?;
    match mode.as_str() {
        "server" => {
            let config = ServerConfig::builder()
                .self_signed(&["localhost", &listen.ip().to_string()])?
                .build()?;
            std::fs::write(cert, &config.certificate_pem)?;
            let server = Server::bind(listen, Arc::new(config)).await?;
            while let Ok(session) = server.accept().await {
                tokio::spawn(async move {
                    while let Ok(mut stream) = session.accept_stream().await {
                        tokio::spawn(async move {
                            let mut tcp = TcpStream::connect(target).await?;
                            tokio::io::copy_bidirectional(&mut tcp, &mut stream).await?;
                            Ok::<_, std::io::Error>(())
                        });
                    }
                });
            }
            Ok(())
        }
        "client" => {
            let config = ClientConfig::builder()
                .root_certificates_pem_file(cert)?
                .build()?;
            let session = tcpls::connect(target, "localhost", Arc::new(config)).await?;
            let listener = TcpListener::bind(listen).await?;
            loop {
                let (mut tcp, _) = listener.accept().await?;
                let mut stream = session.open_stream().await?;
                tokio::spawn(async move {
                    tokio::io::copy_bidirectional(&mut tcp, &mut stream).await?;
                    Ok::<_, std::io::Error>(())
                });
            }
        }
        _ => Err("mode is server or client".into()),
    }
}
