//! Session configuration: TLS credentials and transport limits.
//!
//! ```no_run
//! use tcpls_proto::config::{ClientConfig, ServerConfig};
//! let server = ServerConfig::builder().self_signed(&["localhost"]).unwrap().build().unwrap();
//! let client = ClientConfig::builder().insecure().build().unwrap();
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openssl::ssl::{SslContext, SslContextBuilder, SslSessionCacheMode, SslVerifyMode};
use openssl::x509::X509;

use crate::error::Error;
use crate::record::CipherSuite;
use crate::resumption::SessionCache;
use crate::tls_callbacks;
use crate::tls_ffi;
use crate::tls_options::{self, ClientAuth, Identity, TlsOptions, VerifyStep};
use crate::wire::TransportParams;

/// Limits and timers of a session. Every buffer the session keeps is bounded
/// by one of these, whatever the peer sends.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Receive window per stream: bytes the peer may send beyond what the
    /// application has read (also the bound on that stream's receive buffer).
    pub stream_window: u64,
    /// Receive window for the whole session.
    pub session_window: u64,
    /// Streams the peer may have open at once. Credit for ended streams
    /// goes back in batches of an eighth of this, so a peer may be held at
    /// 7/8 of it until more of its streams end.
    pub max_streams: u32,
    /// Bytes the application may queue on one stream, not yet sent, before
    /// writes block. (Sent bytes kept for acknowledgement are bounded per
    /// session instead: at most twice `session_window`.)
    pub send_buffer: usize,
    /// Bytes the application may queue, not yet sent, on all streams of the
    /// session together, before writes block. Without it a peer that never
    /// reads could make a server hold `max_streams` x `send_buffer` (128 MiB
    /// by default) per session.
    pub session_send_buffer: usize,
    /// The handshake must finish within this time.
    pub handshake_timeout: Duration,
    /// Close the session when nothing arrives for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// TCP User Timeout for the session's sockets (default 250 ms: a
    /// connection whose sent data stays unacknowledged that long fails, and
    /// with failover its data moves to another connection). Both sides
    /// apply the larger of their requests. `None`: the kernel's default.
    pub user_timeout: Option<Duration>,
    /// The most of the peer's user timeout request this side applies
    /// (default 30 s): a peer cannot make a dead connection linger for
    /// days (the field allows 49).
    pub max_peer_user_timeout: Duration,
    /// The least user timeout a peer may ask for with a TRANSPORT_OPTION
    /// (default 100 ms); smaller requests are raised to it.
    pub min_peer_user_timeout: Duration,
    /// Congestion controllers a peer may ask this side's connections to
    /// use (TRANSPORT_OPTION; default reno, cubic and bbr); other names are
    /// refused with a reason and the session goes on. Empty: none.
    pub peer_congestion_controls: Vec<String>,
    /// Congestion controllers a peer may ship to this side as BPF objects
    /// (TRANSPORT_OPTION 3), which this side's runtime would load into the
    /// kernel: none by default. A refused program is answered as soon as
    /// its announcement arrives, before any of its bytes are kept.
    pub peer_cc_programs: crate::session::options::CcProgramPolicy,
    /// The largest such program this side takes (default 1 MiB); larger
    /// ones are refused. At most one is being received at a time, so this
    /// bounds what a session holds of them.
    pub max_cc_program: usize,
    /// Server: addresses advertised to every client (NEW_ADDRESS) in the
    /// same record as its first join tokens, so that a client never joins
    /// before it knows them (behind a load balancer, a join toward the
    /// shared address could reach another server, which knows nothing of
    /// its token). At most 16.
    pub advertised_addresses: Vec<std::net::SocketAddr>,
    /// TCP connections per session (the first plus joins); the session
    /// uses the smaller of both sides' values.
    pub max_connections: u32,
    /// Record acknowledgements and failover: keep sent stream data until
    /// the peer acknowledges its record, and replay it on another
    /// connection when one fails. Used when both sides enable it.
    pub failover: bool,
    /// Acknowledge after this many ack-eliciting records...
    pub ack_every_records: u32,
    /// ...or this many bytes of them...
    pub ack_every_bytes: usize,
    /// ...or this long after the first unacknowledged one (default 5 ms:
    /// a sender allows this much on top of the RTT before it declares a
    /// connection stalled, so it bounds how soon a blackholed path is
    /// noticed; 5 ms costs a busy connection at most 200 ACK records a
    /// second).
    pub ack_delay: Duration,
    /// Probe a connection with PING when nothing arrived on it for this
    /// long, and declare it failed when the PING is not acknowledged within
    /// `probe_timeout` (catches blackholes on idle connections).
    pub keepalive: Option<Duration>,
    /// See `keepalive`. The longest a probe waits: with an RTT figure it
    /// waits two RTTs plus 10 ms (at least 100 ms; the peer acknowledges a
    /// PING at once) when that is shorter, and records arriving meanwhile
    /// count as an answer.
    pub probe_timeout: Duration,
    /// Client, with failover, without `keepalive`: while a stream waits
    /// for data from the server (it has not seen the stream's end), probe
    /// a connection on which nothing arrived for this long (default
    /// 100 ms), so a download whose only path went silent (a blackhole)
    /// fails over and rejoins within about this plus `probe_timeout`,
    /// without periodic probes on idle sessions. `None`: off.
    pub silence_probe: Option<Duration>,
    /// With failover, how long a session without any connection waits for
    /// the client to join a new one before it fails.
    pub rejoin_grace: Duration,
    /// Records this side seals under one key (on all connections together)
    /// before it moves to the next key generation (KEY_UPDATE). Default
    /// 2^23, half the AES-GCM limit of RFC 8446 §5.5; small values are for
    /// tests.
    pub key_update_records: u64,
    /// How streams that are not steered to a connection are spread over
    /// the session's connections when it has more than one: a name for
    /// [`crate::session::scheduler::from_name`]. Default
    /// `earliest-arrival` (bandwidth aggregation that keeps slow paths
    /// from holding up the receiver); `None` keeps each stream on one
    /// connection. Checked when a configuration is built.
    pub scheduler: Option<String>,
    /// TCP Fast Open (default on): a client puts its first bytes (the
    /// ClientHello, a join's hello) in the SYN once it holds a cookie from
    /// the server, and a server's listener accepts such SYNs. Linux needs
    /// `net.ipv4.tcp_fastopen=3` for both (1, its default, is client only).
    /// A destination whose SYN with data went unanswered is not tried
    /// again with it for an hour.
    pub fast_open: bool,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            stream_window: 4 << 20,
            session_window: 16 << 20,
            max_streams: 256,
            // 512 KiB: with many streams or sessions, larger buffers hold
            // megabytes that are read back cold when sealed (16 streams:
            // 0.73x one stream's goodput at 1 MiB, 1.0x at 512 KiB).
            send_buffer: 512 << 10,
            // 8 streams' worth: one bulk stream is never limited by it, and
            // with 16 streams each still has 256 KiB queued.
            session_send_buffer: 4 << 20,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: None,
            user_timeout: Some(Duration::from_millis(250)),
            max_peer_user_timeout: Duration::from_secs(30),
            min_peer_user_timeout: Duration::from_millis(100),
            peer_congestion_controls: ["reno", "cubic", "bbr"].map(String::from).to_vec(),
            peer_cc_programs: Default::default(),
            max_cc_program: 1 << 20,
            advertised_addresses: Vec::new(),
            max_connections: 8,
            failover: true,
            ack_every_records: 64,
            ack_every_bytes: 1 << 20,
            ack_delay: Duration::from_millis(5),
            keepalive: None,
            probe_timeout: Duration::from_millis(300),
            silence_probe: Some(Duration::from_millis(100)),
            rejoin_grace: Duration::from_secs(10),
            key_update_records: 1 << 23,
            scheduler: Some(crate::session::scheduler::DEFAULT.to_string()),
            fast_open: true,
        }
    }
}

impl TransportConfig {
    /// The TCP User Timeout this side asks for (`user_timeout`; zero, like
    /// `None`, asks for none).
    pub fn requested_user_timeout(&self) -> Option<Duration> {
        self.user_timeout.filter(|d| !d.is_zero())
    }

    /// Checks what a builder cannot take as given: the scheduler's name.
    fn check(&self) -> Result<(), Error> {
        if self.advertised_addresses.len() > 16 {
            return Err(Error::Config("at most 16 advertised addresses"));
        }
        if self.min_peer_user_timeout > self.max_peer_user_timeout {
            return Err(Error::Config(
                "min_peer_user_timeout is larger than max_peer_user_timeout",
            ));
        }
        match &self.scheduler {
            Some(name) if crate::session::scheduler::from_name(name).is_none() => Err(
                Error::Config("unknown scheduler (earliest-arrival, round-robin, lowest-rtt, weighted:W0,W1,...)"),
            ),
            _ => Ok(()),
        }
    }

    /// The parameters this side announces in its `tcpls` extension.
    pub fn params(&self) -> TransportParams {
        TransportParams {
            initial_max_data: self.session_window,
            initial_max_stream_data: self.stream_window,
            max_streams: self.max_streams,
            user_timeout_ms: self
                .user_timeout
                .map_or(0, |d| d.as_millis().min(u32::MAX as u128) as u32),
            max_connections: self.max_connections.max(1),
            failover: self.failover,
        }
    }
}

fn tls_err(e: openssl::error::ErrorStack) -> Error {
    Error::BadConfig(e.to_string())
}

/// Configuration of a client session. Cheap to share behind an `Arc`.
pub struct ClientConfig {
    pub(crate) tls: SslContext,
    pub(crate) tls_ordinary: SslContext,
    /// Limits and timers.
    pub transport: TransportConfig,
    /// Offer TCPLS in the ClientHello (false: behave as a plain TLS client).
    pub enable_tcpls: bool,
    /// When the first connection's ClientHello offering TCPLS gets a reset,
    /// an EOF or no finished handshake within this time, retry once with
    /// plain TLS 1.3 (some middleboxes drop or reset hellos with unknown
    /// extensions). `None`: never fall back. Default 3 s. An on-path
    /// attacker can force this downgrade (to plain TLS, never below it:
    /// certificates are still verified); turn it off where TCPLS features
    /// matter more than reachability.
    pub plain_fallback: Option<std::time::Duration>,
    /// Where tickets from servers are kept for resumption (`None`: never
    /// resume). Shared by every session made with this configuration.
    pub session_cache: Option<Arc<SessionCache>>,
    /// Let [`crate::Session::connect_early`] send early data (default
    /// true; it only does so with a ticket that allows it).
    pub early_data: bool,
    pub(crate) verify: bool,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("transport", &self.transport)
            .field("enable_tcpls", &self.enable_tcpls)
            .field("plain_fallback", &self.plain_fallback)
            .field(
                "session_cache",
                &self.session_cache.as_ref().map(|c| c.len()),
            )
            .field("verify", &self.verify)
            .finish()
    }
}

impl ClientConfig {
    /// Starts a builder: certificate verification on, system roots, all suites.
    pub fn builder() -> ClientConfigBuilder {
        ClientConfigBuilder {
            roots: Vec::new(),
            system_roots: true,
            verify: true,
            tls: TlsOptions::default(),
            identity: None,
            transport: TransportConfig::default(),
            enable_tcpls: true,
            plain_fallback: Some(std::time::Duration::from_secs(3)),
            session_cache: Some(Arc::new(SessionCache::new(256))),
            early_data: true,
        }
    }

    /// The same configuration without TCPLS: a plain TLS 1.3 client (what
    /// the explicit fallback retries with).
    pub fn without_tcpls(&self) -> ClientConfig {
        ClientConfig {
            tls: self.tls.clone(),
            tls_ordinary: self.tls_ordinary.clone(),
            transport: self.transport.clone(),
            enable_tcpls: false,
            plain_fallback: None,
            session_cache: self.session_cache.clone(),
            early_data: self.early_data,
            verify: self.verify,
        }
    }

    /// Whether a session to `server_name` would send early data now (the
    /// cache holds a ticket that allows it; see
    /// [`crate::Session::connect_early`]).
    pub fn has_early_ticket(&self, server_name: &str, port: Option<u16>) -> bool {
        let key = crate::resumption::cache_key(server_name, port, self.enable_tcpls, self.verify);
        self.early_data
            && self.enable_tcpls
            && self
                .session_cache
                .as_ref()
                .is_some_and(|c| c.has_early_ticket(&key))
    }

    /// The OpenSSL context used for this session (TCPLS offered or not).
    pub(crate) fn context(&self) -> &SslContext {
        if self.enable_tcpls {
            &self.tls
        } else {
            &self.tls_ordinary
        }
    }
}

/// Builder for [`ClientConfig`].
#[derive(Debug)]
pub struct ClientConfigBuilder {
    roots: Vec<X509>,
    system_roots: bool,
    verify: bool,
    tls: TlsOptions,
    identity: Option<Identity>,
    transport: TransportConfig,
    enable_tcpls: bool,
    plain_fallback: Option<std::time::Duration>,
    session_cache: Option<Arc<SessionCache>>,
    early_data: bool,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl ClientConfigBuilder {
    /// Trusts the certificates in a PEM file (in addition to the system's).
    pub fn root_certificates_pem_file(mut self, path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let pem = tls_options::read_file(path)?;
        self = self.root_certificates_pem(&pem)?;
        Ok(self)
    }

    /// Trusts the certificates in PEM text.
    pub fn root_certificates_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        let certs = X509::stack_from_pem(pem).map_err(tls_err)?;
        if certs.is_empty() {
            return Err(Error::BadConfig("no certificate in PEM data".into()));
        }
        self.roots.extend(certs);
        Ok(self)
    }

    /// Trusts one DER certificate.
    pub fn root_certificate_der(mut self, der: &[u8]) -> Result<Self, Error> {
        self.roots.push(X509::from_der(der).map_err(tls_err)?);
        Ok(self)
    }

    /// Whether to load the system's trust store (default: yes).
    pub fn system_roots(mut self, yes: bool) -> Self {
        self.system_roots = yes;
        self
    }

    /// Disables certificate verification. For tests and self-signed lab
    /// setups only: anyone on the path can then impersonate the server.
    pub fn insecure(mut self) -> Self {
        self.verify = false;
        self
    }

    /// Checks each certificate of the server's chain with `hook` besides
    /// OpenSSL (see [`VerifyStep`]): it may refuse one OpenSSL accepted,
    /// or accept one it refused (pinning a self-signed certificate).
    pub fn verify_callback(
        mut self,
        hook: impl Fn(&VerifyStep) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.tls.verify_hook = Some(Arc::new(hook));
        self
    }

    /// Presents this certificate chain and key when the server asks for
    /// one (mutual TLS), from PEM text.
    pub fn client_certificate_pem(mut self, cert: &[u8], key: &[u8]) -> Result<Self, Error> {
        self.identity = Some(Identity::from_pem(cert, key)?);
        Ok(self)
    }

    /// [`Self::client_certificate_pem`] from PEM files.
    pub fn client_certificate_pem_files(
        mut self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, Error> {
        self.identity = Some(Identity::from_pem_files(cert.as_ref(), key.as_ref())?);
        Ok(self)
    }

    /// [`Self::client_certificate_pem`] from DER (chain leaf first).
    pub fn client_certificate_der(mut self, chain: &[&[u8]], key: &[u8]) -> Result<Self, Error> {
        self.identity = Some(Identity::from_der(chain, key)?);
        Ok(self)
    }

    /// Offers these ALPN protocols, preferred first (e.g. `b"http/1.1"`);
    /// [`crate::Session::alpn`] tells which the server chose.
    pub fn alpn_protocols(mut self, protocols: &[&[u8]]) -> Self {
        self.tls.alpn = protocols.iter().map(|p| p.to_vec()).collect();
        self
    }

    /// Restricts the TLS 1.3 cipher suites offered.
    pub fn cipher_suites(mut self, suites: &[CipherSuite]) -> Self {
        self.tls.suites = suites.to_vec();
        self
    }

    /// Anything else OpenSSL can do: `hook` changes the context after this
    /// builder's settings and before the TCPLS callbacks (the `tcpls`
    /// extension, key export, tickets), which it cannot remove.
    pub fn ssl_context(
        mut self,
        hook: impl Fn(&mut SslContextBuilder) -> Result<(), openssl::error::ErrorStack>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.tls.context_hook = Some(Arc::new(hook));
        self
    }

    /// Sets limits and timers.
    pub fn transport(mut self, t: TransportConfig) -> Self {
        self.transport = t;
        self
    }

    /// Offer TCPLS (default) or behave as a plain TLS 1.3 client.
    pub fn enable_tcpls(mut self, yes: bool) -> Self {
        self.enable_tcpls = yes;
        self
    }

    /// Retry once with plain TLS 1.3 when the TCPLS hello gets a reset, an
    /// EOF or no finished handshake within the time given (default 3 s);
    /// `None` refuses to fall back. See [`ClientConfig::plain_fallback`].
    pub fn plain_fallback(mut self, after: Option<std::time::Duration>) -> Self {
        self.plain_fallback = after;
        self
    }

    /// Key exchange groups, in OpenSSL's list syntax (e.g. `X25519` or
    /// `X25519MLKEM768:X25519`; default OpenSSL's, which sends a hybrid
    /// post-quantum key share). The ClientHello only fits in a TCP Fast
    /// Open SYN (about 1,400 bytes) without the 1,216-byte ML-KEM share:
    /// `X25519` trades post-quantum protection for that round trip.
    pub fn key_exchange_groups(mut self, groups: &str) -> Self {
        self.tls.groups = Some(groups.to_string());
        self
    }

    /// Also offer resumption without a key exchange (TLS 1.3 psk_ke; off
    /// by default). A server that allows it too skips the (EC)DHE and
    /// ML-KEM work of a resumed handshake, most of its CPU, but the
    /// resumed session then has no forward secrecy of its own: whoever
    /// gets the ticket's secret (from a stolen server ticket key or this
    /// client's cache) can decrypt it. [`crate::Session::key_exchange`]
    /// is `None` for such a session.
    pub fn resume_without_key_exchange(mut self, yes: bool) -> Self {
        self.tls.resume_without_key_exchange = yes;
        self
    }

    /// Where to keep the servers' tickets and look for one to resume with
    /// (default: an in-memory cache for 256 servers; `None`: never resume).
    /// Sessions of configurations that share a cache share its tickets.
    pub fn session_cache(mut self, cache: Option<Arc<SessionCache>>) -> Self {
        self.session_cache = cache;
        self
    }

    /// Whether [`crate::Session::connect_early`] may send early data
    /// (default yes; only with a ticket that allows it).
    pub fn early_data(mut self, yes: bool) -> Self {
        self.early_data = yes;
        self
    }

    /// Builds the configuration.
    pub fn build(self) -> Result<ClientConfig, Error> {
        self.transport.check()?;
        let make = |tcpls: bool| -> Result<SslContext, Error> {
            let mut b = self.tls.context(false)?;
            if self.verify {
                self.tls.set_verify(&mut b, SslVerifyMode::PEER);
                if self.system_roots {
                    load_system_roots(&mut b);
                }
                for c in &self.roots {
                    b.cert_store_mut().add_cert(c.clone()).map_err(tls_err)?;
                }
            } else {
                b.set_verify(SslVerifyMode::NONE);
            }
            if let Some(id) = &self.identity {
                id.install_on_context(&mut b)?;
            }
            self.tls.run_context_hook(&mut b)?;
            tls_callbacks::install_callbacks(&mut b, tcpls, false)?;
            if let Some(cache) = &self.session_cache {
                tls_callbacks::install_ticket_store(&mut b, cache.clone());
            }
            Ok(b.build())
        };
        Ok(ClientConfig {
            tls: make(true)?,
            tls_ordinary: make(false)?,
            transport: self.transport,
            enable_tcpls: self.enable_tcpls,
            plain_fallback: self.plain_fallback,
            session_cache: self.session_cache,
            early_data: self.early_data,
            verify: self.verify,
        })
    }
}

/// Most early data a server accepts per session: OpenSSL's default
/// receive limit (`SSL_CTX_set_recv_max_early_data`, not bound by
/// rust-openssl).
const EARLY_DATA_MAX: u64 = 16_384;

/// Sessions the server keeps for early data anti-replay.
const EARLY_DATA_REPLAY_CACHE: i32 = 10_000;

/// Loads the distribution's CA bundle. The vendored OpenSSL's compiled-in
/// default directory is not where Debian, Fedora or Alpine keep theirs.
fn load_system_roots(b: &mut SslContextBuilder) {
    let _ = b.set_default_verify_paths();
    for f in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ] {
        if Path::new(f).exists() {
            let _ = b.set_ca_file(f);
            break;
        }
    }
}

/// Configuration of a server. Cheap to share behind an `Arc`.
pub struct ServerConfig {
    pub(crate) tls: SslContext,
    /// Limits and timers.
    pub transport: TransportConfig,
    /// Certificate chain in PEM (for clients that want to trust it).
    pub certificate_pem: Vec<u8>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    /// Starts a builder (a certificate must be given before `build`).
    pub fn builder() -> ServerConfigBuilder {
        ServerConfigBuilder {
            identity: None,
            sni: HashMap::new(),
            client_auth: ClientAuth::None,
            client_roots: Vec::new(),
            tls: TlsOptions::default(),
            transport: TransportConfig::default(),
            enable_tcpls: true,
            tickets: 2,
            ticket_lifetime: Duration::from_secs(2 * 3600),
            ticket_key_rotation: Duration::from_secs(12 * 3600),
            max_early_data: 0,
        }
    }
}

/// Builder for [`ServerConfig`]. Its `Debug` output leaves private keys
/// out.
pub struct ServerConfigBuilder {
    identity: Option<Identity>,
    /// Certificates for particular server names (SNI), lowercase.
    sni: HashMap<String, Identity>,
    client_auth: ClientAuth,
    client_roots: Vec<X509>,
    tls: TlsOptions,
    transport: TransportConfig,
    enable_tcpls: bool,
    tickets: usize,
    ticket_lifetime: Duration,
    ticket_key_rotation: Duration,
    max_early_data: u32,
}

impl std::fmt::Debug for ServerConfigBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfigBuilder")
            .field("certificate", &self.identity.is_some())
            .field("sni_names", &self.sni.keys().collect::<Vec<_>>())
            .field("client_auth", &self.client_auth)
            .field("tls", &self.tls)
            .field("transport", &self.transport)
            .field("enable_tcpls", &self.enable_tcpls)
            .field("tickets", &self.tickets)
            .field("ticket_lifetime", &self.ticket_lifetime)
            .field("ticket_key_rotation", &self.ticket_key_rotation)
            .field("max_early_data", &self.max_early_data)
            .finish_non_exhaustive()
    }
}

impl ServerConfigBuilder {
    /// Uses a certificate chain and private key from PEM files.
    pub fn pem_files(
        mut self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, Error> {
        self.identity = Some(Identity::from_pem_files(cert.as_ref(), key.as_ref())?);
        Ok(self)
    }

    /// Uses a certificate chain and private key in PEM text.
    pub fn pem(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, Error> {
        self.identity = Some(Identity::from_pem(cert_pem, key_pem)?);
        Ok(self)
    }

    /// Uses a DER certificate chain (leaf first) and DER private key
    /// (PKCS#8 or the algorithm's own form).
    pub fn der(mut self, chain: &[&[u8]], key: &[u8]) -> Result<Self, Error> {
        self.identity = Some(Identity::from_der(chain, key)?);
        Ok(self)
    }

    /// Generates a self-signed certificate for `names` (DNS names or IPs).
    /// (Feature `self-signed`, on by default.)
    #[cfg(feature = "self-signed")]
    pub fn self_signed(self, names: &[&str]) -> Result<Self, Error> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let ck = rcgen::generate_simple_self_signed(names)
            .map_err(|e| Error::BadConfig(format!("generating certificate: {e}")))?;
        let cert = ck.cert.pem();
        let key = zeroize::Zeroizing::new(ck.key_pair.serialize_pem());
        self.pem(cert.as_bytes(), key.as_bytes())
    }

    /// Serves this chain and key (PEM) to clients that ask for `name`
    /// (SNI, case-insensitive); others get the default certificate.
    pub fn sni_certificate_pem(
        mut self,
        name: &str,
        cert: &[u8],
        key: &[u8],
    ) -> Result<Self, Error> {
        self.sni
            .insert(name.to_ascii_lowercase(), Identity::from_pem(cert, key)?);
        Ok(self)
    }

    /// Asks clients for certificates (mutual TLS), verified against the
    /// CA certificates in `roots_pem` (their names are sent in the
    /// request). [`crate::Session::peer_certificate_der`] gives the
    /// client's certificate.
    pub fn client_auth(mut self, mode: ClientAuth, roots_pem: &[u8]) -> Result<Self, Error> {
        let roots = X509::stack_from_pem(roots_pem).map_err(tls_err)?;
        if roots.is_empty() && mode != ClientAuth::None {
            return Err(Error::BadConfig(
                "client authentication needs CA certificates".into(),
            ));
        }
        self.client_auth = mode;
        self.client_roots = roots;
        Ok(self)
    }

    /// Checks each certificate of a client's chain with `hook` besides
    /// OpenSSL (see [`VerifyStep`]); only with [`Self::client_auth`].
    pub fn verify_callback(
        mut self,
        hook: impl Fn(&VerifyStep) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.tls.verify_hook = Some(Arc::new(hook));
        self
    }

    /// Accepts these ALPN protocols, preferred first: the first one the
    /// client also offers is chosen; a client offering none of them gets
    /// no ALPN (not an error).
    pub fn alpn_protocols(mut self, protocols: &[&[u8]]) -> Self {
        self.tls.alpn = protocols.iter().map(|p| p.to_vec()).collect();
        self
    }

    /// Restricts the TLS 1.3 cipher suites accepted.
    pub fn cipher_suites(mut self, suites: &[CipherSuite]) -> Self {
        self.tls.suites = suites.to_vec();
        self
    }

    /// Anything else OpenSSL can do: `hook` changes the context after this
    /// builder's settings and before the TCPLS callbacks, which it cannot
    /// remove.
    pub fn ssl_context(
        mut self,
        hook: impl Fn(&mut SslContextBuilder) -> Result<(), openssl::error::ErrorStack>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.tls.context_hook = Some(Arc::new(hook));
        self
    }

    /// Sets limits and timers.
    pub fn transport(mut self, t: TransportConfig) -> Self {
        self.transport = t;
        self
    }

    /// Accept TCPLS (default) or behave as a plain TLS 1.3 server.
    pub fn enable_tcpls(mut self, yes: bool) -> Self {
        self.enable_tcpls = yes;
        self
    }

    /// Key exchange groups accepted, in OpenSSL's list syntax, in order of
    /// preference (default OpenSSL's: hybrid post-quantum first).
    pub fn key_exchange_groups(mut self, groups: &str) -> Self {
        self.tls.groups = Some(groups.to_string());
        self
    }

    /// Resume without a key exchange when the client offers it (TLS 1.3
    /// psk_ke; off by default): resumed handshakes skip the (EC)DHE and
    /// ML-KEM work, most of their CPU, at the price of forward secrecy for
    /// them: whoever gets a ticket key (they live in this process's memory,
    /// rotated by [`Self::ticket_key_rotation`]) can decrypt recorded
    /// sessions resumed with its tickets.
    pub fn resume_without_key_exchange(mut self, yes: bool) -> Self {
        self.tls.resume_without_key_exchange = yes;
        self
    }

    /// Session tickets sent after each full handshake (default 2; 0: no
    /// resumption). A resumed handshake gets one fresh ticket.
    pub fn tickets(mut self, n: usize) -> Self {
        self.tickets = n;
        self
    }

    /// How long a ticket may be used (default 2 hours; TLS 1.3 allows at
    /// most 7 days).
    pub fn ticket_lifetime(mut self, d: Duration) -> Self {
        self.ticket_lifetime = d;
        self
    }

    /// How often the key that seals tickets is replaced (default 12 hours).
    /// Tickets sealed with the previous key are still accepted, so a ticket
    /// lives at most two periods whatever its lifetime says. The keys are
    /// random and held in memory only: tickets do not survive a restart and
    /// are not shared between servers.
    pub fn ticket_key_rotation(mut self, d: Duration) -> Self {
        self.ticket_key_rotation = d;
        self
    }

    /// Accepts early data (TLS 1.3 0-RTT) from clients resuming with a
    /// ticket: up to `bytes` (at most 16,384, and no more than the
    /// transport's initial windows) per session, 0 to refuse it (the
    /// default). Early requests are answered before the client's Finished.
    /// An attacker can replay early data: only enable it for requests
    /// that are safe to process twice. OpenSSL's anti-replay (each ticket
    /// accepted once for early data) keeps up to 10,000 sessions in the
    /// server's memory for that.
    pub fn max_early_data(mut self, bytes: u32) -> Self {
        self.max_early_data = bytes;
        self
    }

    /// Builds the configuration.
    pub fn build(self) -> Result<ServerConfig, Error> {
        self.transport.check()?;
        if self.ticket_lifetime.is_zero() || self.ticket_lifetime > Duration::from_secs(7 * 86400) {
            return Err(Error::Config(
                "ticket lifetime must be between 1 s and 7 days",
            ));
        }
        if self.ticket_key_rotation.is_zero() {
            return Err(Error::Config("ticket key rotation period must not be zero"));
        }
        let identity = self
            .identity
            .ok_or(Error::Config("server configuration needs a certificate"))?;
        let mut b = self.tls.context(true)?;
        identity.install_on_context(&mut b)?;
        tls_options::install_sni(&mut b, self.sni);
        match self.client_auth {
            ClientAuth::None => {}
            mode => {
                let mut verify = SslVerifyMode::PEER;
                if mode == ClientAuth::Require {
                    verify |= SslVerifyMode::FAIL_IF_NO_PEER_CERT;
                }
                self.tls.set_verify(&mut b, verify);
                let mut names = openssl::stack::Stack::new().map_err(tls_err)?;
                for c in &self.client_roots {
                    b.cert_store_mut().add_cert(c.clone()).map_err(tls_err)?;
                    names
                        .push(c.subject_name().to_owned().map_err(tls_err)?)
                        .map_err(tls_err)?;
                }
                b.set_client_ca_list(names);
                // Resumption needs a session id context once clients are
                // verified (OpenSSL refuses to resume otherwise).
                b.set_session_id_context(b"tcpls").map_err(tls_err)?;
            }
        }
        // Tickets go out under the application key right after the
        // handshake, before any record of ours: the session starts its own
        // sequence numbers after them (see docs/protocol.md).
        b.set_num_tickets(self.tickets).map_err(tls_err)?;
        let early = (self.max_early_data as u64)
            .min(EARLY_DATA_MAX)
            .min(self.transport.stream_window)
            .min(self.transport.session_window) as u32;
        if early > 0 && self.tickets > 0 {
            b.set_max_early_data(early).map_err(tls_err)?;
            // Anti-replay: OpenSSL accepts early data with a ticket only
            // while the ticket's session is in its cache, and removes it
            // then.
            b.set_session_cache_mode(SslSessionCacheMode::SERVER);
            b.set_session_cache_size(EARLY_DATA_REPLAY_CACHE);
            tls_ffi::allow_early_data_only_for_tcpls(&mut b);
        } else {
            // Stateless tickets: a server keeps nothing per ticket.
            b.set_session_cache_mode(SslSessionCacheMode::OFF);
        }
        tls_ffi::set_session_lifetime(&mut b, self.ticket_lifetime);
        tls_ffi::install_ticket_keys(&mut b, self.ticket_key_rotation)?;
        self.tls.run_context_hook(&mut b)?;
        tls_callbacks::install_callbacks(&mut b, self.enable_tcpls, true)?;
        Ok(ServerConfig {
            tls: b.build(),
            transport: self.transport,
            certificate_pem: identity.chain_pem(),
        })
    }
}
