//! Test support: configurations, deterministic content, and [`net`], the
//! in-memory network two sessions are tested over.
#![allow(dead_code)]

pub mod net;

use std::sync::Arc;

use tcpls_proto::{ClientConfig, ServerConfig, TransportConfig};

pub use net::*;

pub fn server_config(t: TransportConfig) -> Arc<ServerConfig> {
    Arc::new(
        ServerConfig::builder()
            .self_signed(&["localhost"])
            .unwrap()
            .transport(t)
            .build()
            .unwrap(),
    )
}

/// A client with `t`, except that its silence probe is off: a client
/// waiting for data would probe every 100 ms and `Net::drive` would never
/// settle. Tests of the probe use [`client_config_probing`].
pub fn client_config(t: TransportConfig) -> Arc<ClientConfig> {
    client_config_probing(TransportConfig {
        silence_probe: None,
        ..t
    })
}

/// A client with `t` as given.
pub fn client_config_probing(t: TransportConfig) -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder()
            .insecure()
            .transport(t)
            .build()
            .unwrap(),
    )
}

/// A plain TLS 1.3 client (no `tcpls` extension): the peer falls back.
pub fn plain_client_config(t: TransportConfig) -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder()
            .insecure()
            .enable_tcpls(false)
            .transport(t)
            .build()
            .unwrap(),
    )
}

/// Deterministic content: byte `i` of stream `s`.
pub fn pattern(stream: u32, offset: u64) -> u8 {
    let x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (stream as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (x >> 29) as u8
}
