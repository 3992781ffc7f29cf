//! # tcpls
//!
//! TCPLS over tokio: the [`tcpls_proto`] state machine driven over real TCP
//! sockets, with an API in the spirit of quinn.
//!
//! ```no_run
//! # async fn run() -> Result<(), tcpls::Error> {
//! use std::sync::Arc;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tcpls::{ClientConfig, Server, ServerConfig};
//!
//! let server = Server::bind("127.0.0.1:0".parse().unwrap(),
//!     Arc::new(ServerConfig::builder().self_signed(&["localhost"])?.build()?)).await?;
//! let addr = server.local_addr()?;
//! tokio::spawn(async move {
//!     while let Ok(session) = server.accept().await {
//!         tokio::spawn(async move {
//!             while let Ok(mut stream) = session.accept_stream().await {
//!                 let mut buf = Vec::new();
//!                 stream.read_to_end(&mut buf).await.ok();
//!                 stream.write_all(&buf).await.ok();
//!                 stream.shutdown().await.ok();
//!             }
//!         });
//!     }
//! });
//! let client = Arc::new(ClientConfig::builder().insecure().build()?);
//! let session = tcpls::connect(addr, "localhost", client).await?;
//! let mut stream = session.open_stream().await?;
//! stream.write_all(b"echo me").await?;
//! stream.shutdown().await?;
//! let mut back = Vec::new();
//! stream.read_to_end(&mut back).await?;
//! assert_eq!(back, b"echo me");
//! # Ok(()) }
//! ```
//!
//! **Linux only**: the runtime reads the kernel's per-connection TCP
//! figures (`TCP_INFO`) to detect failed paths, sets `TCP_USER_TIMEOUT`,
//! `TCP_NOTSENT_LOWAT` and `TCP_FASTOPEN_CONNECT`, and watches local links
//! over rtnetlink. (The sans-IO core, `tcpls-proto`, has no such ties.)
//!
//! Features: `vendored` (default) builds OpenSSL from source; without it
//! the system's OpenSSL 3 is used. `self-signed` (default) provides
//! [`ServerConfigBuilder::self_signed`].
//!
//! More in `examples/`: an echo server and client, a download over two
//! connections, and a TCP port forwarder over TCPLS.

#[cfg(not(target_os = "linux"))]
compile_error!("tcpls runs on Linux only (TCP_INFO, TCP_USER_TIMEOUT, rtnetlink)");

mod bpf_cc;
mod driver;
mod endpoint;
mod error;
mod handshake;
mod limits;
mod links;
mod monitor;
mod options;
mod session;
mod shared;
mod socket;
mod stream;

pub use bpf_cc::loaded_congestion_programs;
pub use endpoint::{connect, connect_any, connect_early, connect_from, ConnectOptions, Server};
pub use error::{Error, StreamReset};
pub use limits::ServerLimits;
pub use session::Session;
pub use shared::SessionEvent;
pub use socket::{block_fast_open, fast_open_blocked_destinations, ConnectionStats};
pub use stream::{RecvStream, SendStream, Stream};
pub use tcpls_proto::session::options::{CcProgramPolicy, OptionStatus, PeerOption};
/// A connection's state in its session ([`Session::connections`]).
pub use tcpls_proto::session::ConnectionState;
pub use tcpls_proto::tls_options::{ClientAuth, VerifyStep};
/// Why a session ended (what [`Error::Session`] carries).
pub use tcpls_proto::Error as SessionError;
pub use tcpls_proto::{
    config::{ClientConfigBuilder, ServerConfigBuilder},
    CallError, CipherSuite, ClientConfig, ConnectionId, EarlyData, ErrorCode, ExportedTicket,
    HandshakeKind, ServerConfig, SessionCache, StreamId, TransportConfig,
};
