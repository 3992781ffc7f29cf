//! The TLS 1.3 handshake, driven through OpenSSL over in-memory buffers.
//!
//! OpenSSL never touches a socket: the session feeds it the bytes that
//! arrived and takes the bytes it wants sent. Two callbacks installed on the
//! `SslContext` (see `tls_callbacks.rs`) do the TCPLS-specific work: the
//! `tcpls` extension and the export of the traffic secrets.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use openssl::ssl::{ErrorCode, ShutdownState, Ssl, SslStream};

use crate::config::{ClientConfig, ServerConfig};
use crate::error::Error;
use crate::ids::Side;
use crate::record::CipherSuite;
use crate::resumption::cache_key;
use crate::session::keys::Generation;
use crate::tls_callbacks::{index, HsShared, Shared};
use crate::tls_ffi;
use crate::wire::codec::Codec;
use crate::wire::extension::{TcplsExtension, TCPLS_VERSION};

/// Byte pipes between OpenSSL and the session.
#[derive(Debug, Default)]
pub(crate) struct MemIo {
    input: Vec<u8>,
    pos: usize,
    pub(crate) output: Vec<u8>,
}

impl MemIo {
    pub(crate) fn feed(&mut self, data: &[u8]) {
        // Drop what OpenSSL already consumed so the buffer stays about one
        // record long instead of growing with everything ever received.
        if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.input.extend_from_slice(data);
    }

    pub(crate) fn pending_input(&self) -> usize {
        self.input.len() - self.pos
    }

    /// True when the unread input starts with a whole TLS record (its
    /// 5-byte header and the length it announces).
    pub(crate) fn has_whole_record(&self) -> bool {
        let rest = &self.input[self.pos..];
        rest.len() >= 5 && rest.len() >= 5 + u16::from_be_bytes([rest[3], rest[4]]) as usize
    }

    fn take_input(&mut self) -> Vec<u8> {
        let rest = self.input.split_off(self.pos);
        self.input.clear();
        self.pos = 0;
        rest
    }
}

impl Read for MemIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = &self.input[self.pos..];
        if avail.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for MemIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the handshake negotiated and who the peer is, kept for the
/// application after OpenSSL is gone.
#[derive(Clone, Debug, Default)]
pub(crate) struct HandshakeInfo {
    /// The ALPN protocol chosen.
    pub(crate) alpn: Option<Vec<u8>>,
    /// The peer's certificate chain as it sent it (leaf first), DER.
    pub(crate) peer_certificates: Vec<Vec<u8>>,
    /// The server name the client asked for (SNI).
    pub(crate) server_name: Option<String>,
}

impl HandshakeInfo {
    fn of(ssl: &openssl::ssl::SslRef) -> Self {
        let mut peer_certificates: Vec<Vec<u8>> = Vec::new();
        // A server's chain does not hold the client's own certificate.
        if let Some(leaf) = ssl.peer_certificate() {
            peer_certificates.extend(leaf.to_der().ok());
        }
        if let Some(chain) = ssl.peer_cert_chain() {
            for c in chain {
                if let Ok(der) = c.to_der() {
                    if !peer_certificates.contains(&der) {
                        peer_certificates.push(der);
                    }
                }
            }
        }
        Self {
            alpn: ssl.selected_alpn_protocol().map(<[u8]>::to_vec),
            peer_certificates,
            server_name: ssl
                .servername(openssl::ssl::NameType::HOST_NAME)
                .map(str::to_string),
        }
    }
}

/// What a finished handshake leaves behind.
#[allow(clippy::large_enum_variant)] // built once per handshake, moved once
pub(crate) enum Outcome {
    /// Both sides speak TCPLS: the session protects records itself.
    Tcpls {
        peer: TcplsExtension,
        /// Generation 0 of each direction's key.
        send: Generation,
        recv: Generation,
        /// Bytes that arrived after the handshake (already records of ours).
        leftover: Vec<u8>,
        /// The handshake resumed a session from a ticket.
        resumed: bool,
        /// Client with a session cache: reads the tickets the server sends.
        tickets: Option<TicketReader>,
    },
    /// The peer is plain TLS: OpenSSL keeps the record layer.
    Fallback(Box<SslStream<MemIo>>),
}

/// A handshake in progress.
pub(crate) struct Handshake {
    stream: SslStream<MemIo>,
    shared: Shared,
    side: Side,
}

impl Handshake {
    pub(crate) fn client(cfg: &ClientConfig, server_name: &str) -> Result<Self, Error> {
        let mut ssl = Ssl::new(cfg.context()).map_err(internal)?;
        match server_name.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                if cfg.verify {
                    ssl.param_mut().set_ip(ip).map_err(internal)?;
                }
            }
            Err(_) => {
                ssl.set_hostname(server_name).map_err(internal)?;
                if cfg.verify {
                    ssl.param_mut().set_host(server_name).map_err(internal)?;
                }
            }
        }
        ssl.set_connect_state();
        let ext = TcplsExtension {
            version: TCPLS_VERSION,
            params: cfg.transport.params(),
        };
        let mut resume_key = None;
        if let Some(cache) = &cfg.session_cache {
            let key = cache_key(server_name, cfg.enable_tcpls, cfg.verify);
            if let Some(ticket) = cache.take(&key) {
                tls_ffi::set_session(&mut ssl, &ticket)?;
            }
            resume_key = Some(key);
        }
        let hs = Self::new(ssl, ext, Side::Client)?;
        hs.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .resume_key = resume_key;
        Ok(hs)
    }

    pub(crate) fn server(cfg: &ServerConfig) -> Result<Self, Error> {
        let mut ssl = Ssl::new(&cfg.tls).map_err(internal)?;
        ssl.set_accept_state();
        let ext = TcplsExtension {
            version: TCPLS_VERSION,
            params: cfg.transport.params(),
        };
        Self::new(ssl, ext, Side::Server)
    }

    fn new(mut ssl: Ssl, ext: TcplsExtension, side: Side) -> Result<Self, Error> {
        let shared: Shared = Arc::new(Mutex::new(HsShared {
            local_ext: ext.to_vec(),
            ..Default::default()
        }));
        ssl.set_ex_data(index()?, shared.clone());
        let stream = SslStream::new(ssl, MemIo::default()).map_err(internal)?;
        Ok(Self {
            stream,
            shared,
            side,
        })
    }

    pub(crate) fn feed(&mut self, data: &[u8]) {
        self.stream.get_mut().feed(data);
    }

    /// Moves OpenSSL's pending output (handshake flight, alerts) to `out`.
    pub(crate) fn take_output(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.stream.get_mut().output);
    }

    pub(crate) fn has_output(&self) -> bool {
        !self.stream.get_ref().output.is_empty()
    }

    /// Advances the handshake. `Ok(true)` once it is complete.
    pub(crate) fn drive(&mut self) -> Result<bool, Error> {
        match self.stream.do_handshake() {
            Ok(()) => Ok(true),
            Err(e) if e.code() == ErrorCode::WANT_READ => Ok(false),
            Err(e) => {
                let verify = self.stream.ssl().verify_result();
                if verify.as_raw() != 0 {
                    // X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT (18),
                    // X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN (19).
                    return Err(Error::Certificate {
                        reason: verify.error_string().to_string(),
                        self_signed: matches!(verify.as_raw(), 18 | 19),
                    });
                }
                Err(Error::Handshake(e.to_string()))
            }
        }
    }

    /// What was negotiated (call before [`Self::finish`]).
    pub(crate) fn info(&self) -> HandshakeInfo {
        HandshakeInfo::of(self.stream.ssl())
    }

    /// Turns the completed handshake into record keys or a fallback stream.
    pub(crate) fn finish(mut self) -> Result<Outcome, Error> {
        let mut st = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let Some(peer) = st.peer_ext else {
            // Plain TLS: OpenSSL keeps its own keys; ours are not needed.
            st.client_secret = None;
            st.server_secret = None;
            drop(st);
            return Ok(Outcome::Fallback(Box::new(self.stream)));
        };
        let name = self
            .stream
            .ssl()
            .current_cipher()
            .and_then(|c| c.standard_name())
            .ok_or_else(|| Error::Internal("no cipher after handshake".into()))?;
        let suite = CipherSuite::from_name(name)
            .ok_or_else(|| Error::Internal(format!("unsupported suite {name}")))?;
        let (c, s) = match (st.client_secret.take(), st.server_secret.take()) {
            (Some(c), Some(s)) => (c, s),
            _ => return Err(Error::Internal("traffic secrets not exported".into())),
        };
        drop(st);
        let ck = Generation::first(suite, c)?;
        let sk = Generation::first(suite, s)?;
        let (send, recv) = match self.side {
            Side::Client => (ck, sk),
            Side::Server => (sk, ck),
        };
        let leftover = self.stream.get_mut().take_input();
        let resumed = self.stream.ssl().session_reused();
        let wants_tickets = self.side == Side::Client
            && self
                .shared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .resume_key
                .is_some();
        Ok(Outcome::Tcpls {
            peer,
            send,
            recv,
            leftover,
            resumed,
            tickets: wants_tickets.then(|| TicketReader {
                stream: Box::new(self.stream),
            }),
        })
    }
}

/// The client's OpenSSL after a TCPLS handshake, kept only to read the
/// server's NewSessionTicket messages. They are the server's first records
/// on the first connection, sealed by its OpenSSL under the application key
/// at the sequence numbers this OpenSSL expects: the session decrypts them
/// like any record, and when one holds tickets gives this reader a copy of
/// its ciphertext. OpenSSL then builds the session and the cache stores it.
pub(crate) struct TicketReader {
    stream: Box<SslStream<MemIo>>,
}

impl TicketReader {
    /// Hands one record (header and ciphertext) of tickets to OpenSSL.
    /// False if OpenSSL did not take it as tickets: read no more.
    pub(crate) fn read(&mut self, record: &[u8]) -> bool {
        self.stream.get_mut().feed(record);
        let mut buf = [0u8; 1];
        match self.stream.ssl_read(&mut buf) {
            Err(e) if e.code() == ErrorCode::WANT_READ => {
                self.stream.get_ref().pending_input() == 0
            }
            _ => false,
        }
    }
}

impl Drop for TicketReader {
    fn drop(&mut self) {
        // Freeing an SSL that never sent close_notify marks its current
        // session (the last ticket read) not resumable; the record layer
        // is ours, so OpenSSL's view of the connection's end is irrelevant.
        self.stream.set_shutdown(ShutdownState::SENT);
    }
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}
