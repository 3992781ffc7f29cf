//! Shared setup of the runtime tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tcpls::{ClientConfig, Server, ServerConfig, TransportConfig};

/// A server config with a fresh self-signed certificate and a client config
/// that trusts exactly it.
pub fn configs(t: TransportConfig) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    configs_for(t.clone(), t)
}

/// [`configs`] with a transport configuration for each side.
pub fn configs_for(
    server: TransportConfig,
    client: TransportConfig,
) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let s = ServerConfig::builder()
        .self_signed(&["localhost"])
        .unwrap()
        .transport(server)
        .build()
        .unwrap();
    let c = ClientConfig::builder()
        .root_certificates_pem(&s.certificate_pem)
        .unwrap()
        .transport(client)
        .build()
        .unwrap();
    (Arc::new(s), Arc::new(c))
}

/// A server on 127.0.0.1 with default limits, and a matching client config.
pub async fn server() -> (Server, Arc<ClientConfig>) {
    let (s, c) = configs(TransportConfig::default());
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), s)
        .await
        .unwrap();
    (server, c)
}

/// Waits (briefly) for the join tokens that follow the handshake.
pub async fn wait_for_tokens(session: &tcpls::Session) {
    for _ in 0..100 {
        if session.available_tokens() > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no join token arrived");
}
