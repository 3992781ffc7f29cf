//! Client-side options shared by `get` and `perf`, and the plain TLS client
//! used for fallback (`get`) and the baseline (`perf --baseline tls`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

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
    /// TCP connections per session: the first plus joins (toward the
    /// server's advertised addresses when it has any). Each side's
    /// scheduler spreads stream data over them (earliest-arrival by
    /// default, see `serve --scheduler`).
    #[arg(long, default_value_t = 1)]
    pub connections: u32,
    /// Local address to connect from (repeatable: connection i uses the
    /// i-th, cycling), e.g. one per interface.
    #[arg(long = "bind")]
    pub binds: Vec<SocketAddr>,
    /// Probe each idle connection this often (e.g. 200ms) and fail it over
    /// when the probe is not acknowledged: finds blackholes on paths that
    /// carry no data. Off by default (a session with one connection still
    /// probes it after 100 ms without data while it waits for a response).
    #[arg(long, value_parser = crate::units::parse_duration)]
    pub keepalive: Option<Duration>,
    /// Start with one connection and join the other --connections this
    /// long into the transfer (adding paths mid-transfer).
    #[arg(long, value_parser = crate::units::parse_duration)]
    pub join_after: Option<Duration>,
    /// Move this side's sending key to a new generation every N records
    /// (default 8388608, half the AES-GCM limit); small values exercise
    /// key updates.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub key_update_records: Option<u64>,
    /// When the TCPLS hello gets a reset, an EOF or no finished handshake
    /// within this time (a middlebox that drops unknown TLS extensions),
    /// retry once with plain TLS 1.3 and say so.
    #[arg(long, default_value = "3s", value_parser = crate::units::parse_duration)]
    pub fallback_after: Duration,
    /// This side's receive window for the whole session (e.g. 1M; default
    /// 16M): how far the peer may send ahead of what was read. Small
    /// windows show head-of-line blocking across paths.
    #[arg(long, value_parser = crate::units::parse_bytes)]
    pub window: Option<u64>,
    /// Never retry with plain TLS after a failed TCPLS hello (an on-path
    /// attacker can otherwise force the session down to plain TLS 1.3).
    #[arg(long)]
    pub no_fallback: bool,
    /// Keep TLS session tickets in this file, so later sessions to the
    /// same server resume (no certificate exchange). Default:
    /// $XDG_CACHE_HOME/tcpls/sessions.json, else ~/.cache/tcpls/sessions.json;
    /// written with mode 0600 (it holds resumption secrets).
    #[arg(long, value_name = "FILE")]
    pub session_cache: Option<PathBuf>,
    /// Present this certificate (PEM chain) when the server asks for one
    /// (mutual TLS; the server's --client-ca).
    #[arg(long, value_name = "PEM", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "PEM", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Key exchange groups to offer, OpenSSL syntax (e.g. X25519). The
    /// default sends a hybrid post-quantum key share (X25519MLKEM768),
    /// which makes the ClientHello too large for a TCP Fast Open SYN;
    /// X25519 lets Fast Open save its round trip.
    #[arg(long, value_name = "LIST")]
    pub groups: Option<String>,
    /// Do not resume sessions: no ticket is read or kept.
    #[arg(long, conflicts_with = "session_cache")]
    pub no_session_cache: bool,
    /// Also offer to resume without a new key exchange (TLS 1.3 psk_ke),
    /// used if the server allows it too: a faster resumption without
    /// forward secrecy of its own (a stolen ticket key decrypts it).
    #[arg(long)]
    pub resume_without_key_exchange: bool,
    #[command(flatten)]
    pub options: TransportOptionArgs,
}

/// Congestion control and transport options, for clients and servers.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TransportOptionArgs {
    /// Congestion controller of this side's connections (TCP_CONGESTION),
    /// e.g. bbr, cubic, reno: a default, which the peer's --peer-cc
    /// overrides when --accept-cc allows it.
    #[arg(long, value_name = "NAME")]
    pub cc: Option<String>,
    /// Ask the peer to send to us with this congestion controller (an
    /// encrypted TRANSPORT_OPTION; applied if the peer's --accept-cc
    /// allows it, and the answer is reported).
    #[arg(long, value_name = "NAME")]
    pub peer_cc: Option<String>,
    /// Ship this compiled BPF congestion controller (a struct_ops
    /// tcp_congestion_ops object, e.g. from bpf/build.sh) to the peer,
    /// which loads it if its --accept-cc-programs allows, then uses it as
    /// --peer-cc NAME (the name the object registers).
    #[arg(long, value_name = "FILE", requires = "peer_cc")]
    pub peer_cc_program: Option<PathBuf>,
    /// Ask the peer to use this TCP user timeout (e.g. 2s) on the session's
    /// connections: TCP_USER_TIMEOUT there, and the threshold at which it
    /// declares a connection failed (clamped by the peer to 100 ms-30 s).
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration)]
    pub peer_user_timeout: Option<Duration>,
    /// Congestion controllers the peer may ask this side to use
    /// (comma-separated; "none" refuses all).
    #[arg(long, value_name = "NAMES", default_value = "reno,cubic,bbr")]
    pub accept_cc: String,
    /// BPF congestion controllers the peer may ship to this side
    /// (--peer-cc-program), which it then loads into the kernel (needs
    /// root and a build with the bpf-cc feature): "none", SHA-256 digests
    /// of the objects (comma-separated, as sha256sum prints them), or
    /// "any" (labs only: the kernel's verifier is then the only check).
    #[arg(long, value_name = "POLICY", default_value = "none",
          value_parser = tcpls::CcProgramPolicy::parse)]
    pub accept_cc_programs: tcpls::CcProgramPolicy,
    /// The --peer-cc-program request, built (file read, digest taken)
    /// once for all sessions.
    #[arg(skip)]
    program: std::sync::OnceLock<tcpls::PeerOption>,
    /// No TCP Fast Open: a client's ClientHello and join hellos never ride
    /// in the SYN, a server's listener refuses SYNs with data. (Fast Open
    /// also needs net.ipv4.tcp_fastopen=3 on Linux; see docs/deployment.md.)
    #[arg(long)]
    pub no_fast_open: bool,
}

impl TransportOptionArgs {
    /// The local policy, into a transport configuration.
    pub fn configure(&self, transport: &mut TransportConfig) {
        transport.fast_open = !self.no_fast_open;
        transport.peer_congestion_controls = if self.accept_cc.trim() == "none" {
            Vec::new()
        } else {
            self.accept_cc
                .split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect()
        };
        transport.peer_cc_programs = self.accept_cc_programs.clone();
        if !cfg!(feature = "bpf-cc") && self.accept_cc_programs != tcpls::CcProgramPolicy::Refuse {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                eprintln!(
                    "tcpls: warning: this build cannot load eBPF programs (build with --features \
                     bpf-cc): --accept-cc-programs only changes what the peer is told"
                )
            });
        }
    }

    /// The --peer-cc-program request (the object registering --peer-cc),
    /// built on first use (a server checks it at start, not at its first
    /// client).
    pub fn program(&self) -> Result<Option<tcpls::PeerOption>> {
        let (Some(path), Some(name)) = (&self.peer_cc_program, &self.peer_cc) else {
            return Ok(None);
        };
        if let Some(p) = self.program.get() {
            return Ok(Some(p.clone()));
        }
        let bytes =
            std::fs::read(path).with_context(|| format!("--peer-cc-program {}", path.display()))?;
        anyhow::ensure!(
            bytes.starts_with(b"\x7fELF"),
            "--peer-cc-program {}: not an ELF object (build one with bpf/build.sh)",
            path.display()
        );
        let option = self
            .program
            .get_or_init(|| tcpls::PeerOption::congestion_program(name, bytes));
        Ok(Some(option.clone()))
    }

    /// True when [`Self::apply`] has something to do.
    pub fn sends_requests(&self) -> bool {
        self.cc.is_some() || self.peer_cc.is_some() || self.peer_user_timeout.is_some()
    }

    /// Applies `--cc` and sends the `--peer-*` requests on a new session.
    pub fn apply(&self, session: &tcpls::Session) -> Result<()> {
        if !session.is_tcpls() {
            return Ok(());
        }
        if let Some(name) = &self.cc {
            // A default: a controller the peer asked for (before or after
            // this) wins.
            session
                .default_congestion_control(name)
                .with_context(|| format!("--cc {name}"))?;
        }
        if let Some(name) = &self.peer_cc {
            let option = match self.program()? {
                Some(program) => program,
                None => tcpls::PeerOption::CongestionControl(name.clone()),
            };
            session.set_peer_option(None, option)?;
        }
        if let Some(t) = self.peer_user_timeout {
            session.set_peer_option(None, tcpls::PeerOption::UserTimeout(t))?;
        }
        Ok(())
    }
}

/// What a session event says about transport options, for logs and
/// reports: `None` for other events.
pub fn option_event(e: &tcpls::SessionEvent) -> Option<String> {
    let scope = |c: &Option<tcpls::ConnectionId>| match c {
        Some(c) => format!("connection {c}"),
        None => "all connections".to_string(),
    };
    let outcome = |r: &Result<(), String>| match r {
        Ok(()) => "applied".to_string(),
        Err(why) => format!("refused ({why})"),
    };
    Some(match e {
        tcpls::SessionEvent::PeerOption {
            conn,
            option,
            applied,
        } => format!(
            "peer asked {} on {}: {}",
            option.describe(),
            scope(conn),
            outcome(applied)
        ),
        tcpls::SessionEvent::PeerOptionAnswered {
            conn,
            option,
            answer,
            ..
        } => format!(
            "asked the peer {} on {}: {}",
            option.describe(),
            scope(conn),
            outcome(answer)
        ),
        _ => return None,
    })
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
        self.tcpls_config_alpn(transport, &[])
    }

    /// [`Self::tcpls_config`], offering these ALPN protocols.
    pub fn tcpls_config_alpn(
        &self,
        mut transport: TransportConfig,
        alpn: &[&[u8]],
    ) -> Result<Arc<ClientConfig>> {
        if self.keepalive.is_some() {
            transport.keepalive = self.keepalive;
        }
        if let Some(n) = self.key_update_records {
            transport.key_update_records = n;
        }
        if let Some(w) = self.window {
            transport.session_window = w;
            transport.stream_window = transport.stream_window.min(w);
        }
        self.options.configure(&mut transport);
        let cache = self
            .session_cache_path()
            .map(|p| crate::session_cache::load(&p));
        let mut b = ClientConfig::builder()
            .alpn_protocols(alpn)
            .session_cache(cache)
            .cipher_suites(&self.suites())
            .transport(transport)
            .plain_fallback((!self.no_fallback).then_some(self.fallback_after));
        if let Some(ca) = &self.ca {
            b = b.root_certificates_pem_file(ca)?;
        }
        if self.insecure {
            b = b.insecure();
        }
        if let Some(g) = &self.groups {
            b = b.key_exchange_groups(g);
        }
        b = b.resume_without_key_exchange(self.resume_without_key_exchange);
        if let (Some(c), Some(k)) = (&self.cert, &self.key) {
            b = b.client_certificate_pem_files(c, k)?;
        }
        Ok(Arc::new(b.build()?))
    }

    /// The session cache file, unless `--no-session-cache`.
    fn session_cache_path(&self) -> Option<PathBuf> {
        if self.no_session_cache {
            return None;
        }
        self.session_cache
            .clone()
            .or_else(crate::session_cache::default_path)
    }

    /// Writes the tickets `cfg`'s sessions received to the cache file
    /// (a failure is a warning: the transfer itself went well).
    pub fn save_session_cache(&self, cfg: &ClientConfig) {
        let (Some(path), Some(cache)) = (self.session_cache_path(), &cfg.session_cache) else {
            return;
        };
        if let Err(e) = crate::session_cache::save(cache, &path) {
            tracing::warn!("session cache not saved: {e:#}");
        }
    }

    fn bind_for(&self, i: usize) -> Option<SocketAddr> {
        (!self.binds.is_empty()).then(|| self.binds[i % self.binds.len()])
    }

    /// Opens a session with `--connections` connections (falls back to one
    /// connection against a plain TLS server).
    /// With several addresses (e.g. from DNS) and no `--bind`, they are
    /// raced happy-eyeballs style.
    pub async fn open_session(
        &self,
        addrs: &[SocketAddr],
        name: &str,
        cfg: Arc<ClientConfig>,
    ) -> Result<tcpls::Session> {
        if self.connections == 0 {
            anyhow::bail!("--connections must be at least 1");
        }
        let addr = *addrs.first().context("no address")?;
        let session = if addrs.len() > 1 && self.binds.is_empty() {
            tcpls::connect_any(addrs, name, cfg, tcpls::ConnectOptions::default())
                .await
                .with_context(|| format!("connecting to {addrs:?}"))?
        } else {
            tcpls::connect_from(addr, self.bind_for(0), name, cfg)
                .await
                .with_context(|| format!("connecting to {addr}"))?
        };
        self.complete_session(&session, addr).await?;
        Ok(session)
    }

    /// What follows a session's handshake: the transport options, then the
    /// other `--connections` (unless `--join-after` leaves them for later).
    pub async fn complete_session(&self, session: &tcpls::Session, addr: SocketAddr) -> Result<()> {
        self.options.apply(session)?;
        let addr = session.peer_addr().unwrap_or(addr);
        if self.join_after.is_some() {
            // `perf --join-after`: the caller joins the rest later.
            return Ok(());
        }
        if self.connections == 1 || !session.is_tcpls() {
            return Ok(());
        }
        // Tokens (and address advertisements) follow the handshake, within
        // an ACK delay.
        for _ in 0..200 {
            if session.available_tokens() + 1 >= self.connections as usize {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.join_more(session, addr, 1).await
    }

    /// `--join-after`: joins the other `--connections` that long from now,
    /// in the background (after `open_session`, which leaves them to the
    /// caller then). Nothing without `--join-after`.
    pub fn join_later(&self, session: &tcpls::Session) {
        let (Some(after), Some(addr)) = (self.join_after, session.peer_addr()) else {
            return;
        };
        if self.connections < 2 || !session.is_tcpls() {
            return;
        }
        let (opts, later) = (self.clone(), session.clone());
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Err(e) = opts.join_more(&later, addr, 1).await {
                tracing::warn!(error = %format!("{e:#}"), "joining the other connections");
            }
        });
    }

    /// Joins connections `from..--connections` to `session` (toward the
    /// server's advertised addresses, then `addr`).
    pub async fn join_more(
        &self,
        session: &tcpls::Session,
        addr: SocketAddr,
        from: usize,
    ) -> Result<()> {
        let advertised = session.peer_addresses();
        for i in from..self.connections as usize {
            // Toward the advertised addresses in turn (the original address
            // last); the first one reachable from this bind address wins.
            let mut candidates: Vec<SocketAddr> = advertised.clone();
            let n = candidates.len();
            if n > 0 {
                candidates.rotate_left((i - 1) % n);
            }
            candidates.push(addr);
            let mut last_err = None;
            let mut joined = false;
            for remote in candidates {
                match session.join(remote, self.bind_for(i)).await {
                    Ok(_) => {
                        joined = true;
                        break;
                    }
                    Err(e) => last_err = Some(format!("{remote}: {e}")),
                }
            }
            if !joined {
                anyhow::bail!(
                    "joining connection {i}: {}",
                    last_err.unwrap_or_else(|| "no address".into())
                );
            }
        }
        Ok(())
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

/// Parses `--scheduler`: a scheduler's name, or `none`.
pub fn parse_scheduler(s: &str) -> Result<String, String> {
    if s == "none" || tcpls_proto::session::scheduler::from_name(s).is_some() {
        Ok(s.to_string())
    } else {
        Err(format!(
            "unknown scheduler {s:?} (earliest-arrival, round-robin, lowest-rtt, weighted:W0,W1,..., none)"
        ))
    }
}

/// What a `--scheduler` value asks of `Session::set_scheduler`.
pub fn scheduler_choice(name: &str) -> Option<&str> {
    (name != "none").then_some(name)
}

/// What the user can do about an error, when a flag fixes it.
pub fn hint(e: &anyhow::Error) -> Option<&'static str> {
    e.chain().find_map(|c| match c.downcast_ref::<tcpls::Error>() {
        Some(tcpls::Error::Session(tcpls_proto::Error::Certificate {
            self_signed: true, ..
        })) => Some("self-signed certificate: trust it with --ca FILE (the server's --cert-out) or skip the check with -k"),
        _ => None,
    })
}

/// An error as the user reads it: its chain, then the hint if any.
pub fn describe(e: &anyhow::Error) -> String {
    match hint(e) {
        Some(h) => format!("{e:#}\n  hint: {h}"),
        None => format!("{e:#}"),
    }
}
