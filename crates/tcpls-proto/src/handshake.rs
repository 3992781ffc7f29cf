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
use crate::wire::record::{HEADER_LEN, MAX_PLAINTEXT};

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
    /// The key exchange group (e.g. `X25519MLKEM768`); `None` for a
    /// resumption without key exchange (TLS 1.3 psk_ke).
    pub(crate) key_exchange: Option<String>,
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
            key_exchange: crate::tls_ffi::negotiated_group(ssl),
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
        /// Early data was offered (client) or could be read (server), and
        /// whether the server accepted it.
        early_accepted: Option<bool>,
        /// OpenSSL's state when nothing reads tickets with it.
        retired: Option<RetiredTls>,
    },
    /// The peer is plain TLS: OpenSSL keeps the record layer.
    Fallback(Box<SslStream<MemIo>>),
}

/// A handshake in progress.
pub(crate) struct Handshake {
    stream: SslStream<MemIo>,
    shared: Shared,
    side: Side,
    early: EarlyHs,
    /// Server: early data that came and was not taken yet.
    early_in: Vec<u8>,
    /// The start of the server's first flight until its ServerHello is
    /// whole, then whether that carried a key share (OpenSSL tells no
    /// psk_ke resumption from a psk_dhe_ke one).
    hello: Vec<u8>,
    key_share: Option<bool>,
}

/// Follows the server's first flight (`bytes` the next of it) in `hello`
/// until its ServerHello is whole, then says in `key_share` whether it
/// carried a key share.
fn watch_hello(hello: &mut Vec<u8>, key_share: &mut Option<bool>, bytes: &[u8]) {
    if key_share.is_some() || bytes.is_empty() {
        return;
    }
    // One record at most: a ServerHello longer than that is not one.
    const MAX: usize = HEADER_LEN + MAX_PLAINTEXT;
    hello.extend_from_slice(&bytes[..bytes.len().min(MAX)]);
    *key_share = crate::wire::hello::server_hello_key_share(hello);
    if key_share.is_some() || hello.len() > MAX {
        *hello = Vec::new();
        key_share.get_or_insert(true);
    }
}

/// Where a handshake is with early data (TLS 1.3 0-RTT).
enum EarlyHs {
    None,
    /// Client: the ticket allows this many early bytes; the first early
    /// write sends the ClientHello with it.
    Client {
        budget: usize,
        started: bool,
    },
    /// Server: reading early data (with `SSL_read_early_data`) until the
    /// client's EndOfEarlyData.
    ServerReading,
    /// Server: early data over (read, rejected or never offered).
    ServerDone,
}

impl Handshake {
    /// A client handshake; with `early`, early data is prepared when the
    /// ticket offered allows it (see [`Self::early_budget`]): the
    /// ClientHello then leaves with the first [`Self::write_early`].
    pub(crate) fn client(
        cfg: &ClientConfig,
        server_name: &str,
        port: Option<u16>,
        early: bool,
    ) -> Result<Self, Error> {
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
        let mut budget = 0;
        if let Some(cache) = &cfg.session_cache {
            let key = cache_key(server_name, port, cfg.enable_tcpls, cfg.verify);
            if let Some(ticket) = cache.take(&key) {
                tls_ffi::set_session(&mut ssl, &ticket.session)?;
                // Early data carries TCPLS frames: only to a server that
                // spoke TCPLS when it issued the ticket.
                if early && cfg.enable_tcpls && ticket.tcpls {
                    budget = ticket.session.max_early_data() as usize;
                }
            }
            resume_key = Some(key);
        }
        let mut hs = Self::new(ssl, ext, Side::Client)?;
        if budget > 0 {
            hs.early = EarlyHs::Client {
                budget,
                started: false,
            };
        }
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
        let early = cfg.tls.max_early_data() > 0;
        let mut hs = Self::new(ssl, ext, Side::Server)?;
        hs.early = if early {
            EarlyHs::ServerReading
        } else {
            EarlyHs::ServerDone
        };
        Ok(hs)
    }

    /// Client: early bytes the ticket allows, 0 without early data.
    pub(crate) fn early_budget(&self) -> usize {
        match self.early {
            EarlyHs::Client { budget, .. } => budget,
            _ => 0,
        }
    }

    /// Client: sends `data` as early data (the ClientHello goes with the
    /// first call). At most [`Self::early_budget`] bytes in all.
    pub(crate) fn write_early(&mut self, mut data: &[u8]) -> Result<(), Error> {
        let EarlyHs::Client { budget, started } = &mut self.early else {
            return Err(Error::Internal("early data without a ticket for it".into()));
        };
        if data.len() > *budget {
            return Err(Error::Internal("early data over the ticket's limit".into()));
        }
        *budget -= data.len();
        *started = true;
        while !data.is_empty() {
            let n = self
                .stream
                .write_early_data(data)
                .map_err(|e| Error::Handshake(format!("writing early data: {e}")))?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Client: whether the ClientHello has gone (an early handshake holds
    /// it until the first early write).
    pub(crate) fn started(&self) -> bool {
        !matches!(self.early, EarlyHs::Client { started: false, .. })
    }

    /// Server: the early data that arrived since the last call (TCPLS
    /// early units), once the server accepted it.
    pub(crate) fn take_early(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.early_in)
    }

    /// Server: early data was accepted and the server's application key
    /// exists (its Finished is written): it may send records now, before
    /// the client's Finished (0.5-RTT). The secret, to build that key.
    pub(crate) fn early_send_secret(&self) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        if self.side != Side::Server || !tls_ffi::early_data_accepted(self.stream.ssl()) {
            return None;
        }
        let st = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        st.peer_ext.as_ref()?;
        st.server_secret.clone()
    }

    /// The peer's transport parameters, once its `tcpls` extension came.
    pub(crate) fn peer_params(&self) -> Option<crate::wire::TransportParams> {
        let st = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        st.peer_ext.as_ref().map(|e| e.params)
    }

    /// The negotiated suite, once known.
    pub(crate) fn suite(&self) -> Option<CipherSuite> {
        suite_of(self.stream.ssl())
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
            early: EarlyHs::None,
            early_in: Vec::new(),
            hello: Vec::new(),
            key_share: None,
        })
    }

    pub(crate) fn feed(&mut self, data: &[u8]) {
        if self.side == Side::Client {
            watch_hello(&mut self.hello, &mut self.key_share, data);
        }
        self.stream.get_mut().feed(data);
    }

    /// Moves OpenSSL's pending output (handshake flight, alerts) to `out`.
    pub(crate) fn take_output(&mut self, out: &mut Vec<u8>) {
        if self.side == Side::Server {
            let flight = &self.stream.get_ref().output;
            watch_hello(&mut self.hello, &mut self.key_share, flight);
        }
        out.append(&mut self.stream.get_mut().output);
    }

    pub(crate) fn has_output(&self) -> bool {
        !self.stream.get_ref().output.is_empty()
    }

    /// Advances the handshake. `Ok(true)` once it is complete.
    pub(crate) fn drive(&mut self) -> Result<bool, Error> {
        if matches!(self.early, EarlyHs::ServerReading) {
            // Runs the handshake up to the client's Finished, collecting
            // the early data on the way.
            let mut buf = [0u8; 4096];
            loop {
                match tls_ffi::read_early_data(self.stream.ssl(), &mut buf)? {
                    tls_ffi::EarlyRead::Data(n) => self.early_in.extend_from_slice(&buf[..n]),
                    tls_ffi::EarlyRead::WantRead => return Ok(false),
                    tls_ffi::EarlyRead::Finished => {
                        self.early = EarlyHs::ServerDone;
                        break;
                    }
                }
            }
        }
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
        let mut info = HandshakeInfo::of(self.stream.ssl());
        if self.key_share == Some(false) {
            // Resumed without key exchange: OpenSSL names the original
            // session's group.
            info.key_exchange = None;
        }
        info
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
        // The contexts offer only the suites `CipherSuite` knows.
        let suite = self
            .suite()
            .ok_or_else(|| Error::Internal("no known cipher suite after handshake".into()))?;
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
        // The record layer is ours from here: freeing this SSL without
        // close_notify must not count as a failed connection, which would
        // take its session out of the server's cache (stateful tickets,
        // early data anti-replay) or make the client's not resumable.
        self.stream.set_shutdown(ShutdownState::SENT);
        let resumed = self.stream.ssl().session_reused();
        let early_accepted = match self.early {
            EarlyHs::Client { started: true, .. } | EarlyHs::ServerDone => {
                Some(tls_ffi::early_data_accepted(self.stream.ssl()))
            }
            _ => None,
        };
        let wants_tickets = self.side == Side::Client
            && self
                .shared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .resume_key
                .is_some();
        let stream = Box::new(self.stream);
        let (tickets, retired) = match wants_tickets {
            true => (
                Some(TicketReader {
                    stream,
                    fed: 0,
                    records: 0,
                }),
                None,
            ),
            false => (None, Some(RetiredTls(stream))),
        };
        Ok(Outcome::Tcpls {
            peer,
            send,
            recv,
            leftover,
            resumed,
            tickets,
            early_accepted,
            retired,
        })
    }
}

/// OpenSSL's state after a TCPLS handshake, which the session no longer
/// needs (the record layer is the session's own). Freeing it (`SSL_free`:
/// the handshake's buffers, key shares, certificate references) took 4.5
/// of the 19.5 µs a server spent on the client's Finished, where OpenSSL's
/// own server spends 10 µs and frees its state at the connection's end;
/// so the session leaves it to its runtime
/// ([`crate::Session::take_retired_tls`]), which frees it once the first
/// response is out.
pub struct RetiredTls(#[allow(dead_code)] Box<SslStream<MemIo>>);

impl std::fmt::Debug for RetiredTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RetiredTls")
    }
}

/// The client's OpenSSL after a TCPLS handshake, kept only to read the
/// server's NewSessionTicket messages. The session decrypts them like any
/// record; each one it finds is sealed again, under the same key, at the
/// sequence number this OpenSSL expects (its own count of tickets: after
/// 0-RTT the server's 0.5-RTT records come first, so the server's
/// sequence numbers differ) and handed to OpenSSL, which builds the
/// session; the cache stores it.
pub(crate) struct TicketReader {
    stream: Box<SslStream<MemIo>>,
    /// Ticket records given to OpenSSL so far.
    fed: u64,
    /// Records of the first connection looked at.
    pub(crate) records: u32,
}

impl TicketReader {
    /// Ticket records given to OpenSSL so far.
    pub(crate) fn fed(&self) -> u64 {
        self.fed
    }

    /// Hands one record's plaintext (only NewSessionTicket messages),
    /// sealed again with the server's first key `key`, to OpenSSL. False
    /// if OpenSSL did not take it as tickets: read no more.
    pub(crate) fn read(&mut self, plain: &[u8], key: &crate::record::RecordKey) -> bool {
        let mut record = vec![0u8; crate::wire::record::HEADER_LEN];
        record.extend_from_slice(plain);
        if key
            .seal(
                crate::ids::ConnectionId::FIRST,
                self.fed,
                crate::wire::record::ContentType::Handshake,
                &mut record,
                0,
            )
            .is_err()
        {
            return false;
        }
        self.fed += 1;
        self.stream.get_mut().feed(&record);
        let mut buf = [0u8; 1];
        match self.stream.ssl_read(&mut buf) {
            Err(e) if e.code() == ErrorCode::WANT_READ => {
                self.stream.get_ref().pending_input() == 0
            }
            _ => false,
        }
    }
}

/// The TLS 1.3 suite an SSL negotiated, if one we know.
pub(crate) fn suite_of(ssl: &openssl::ssl::SslRef) -> Option<CipherSuite> {
    ssl.current_cipher()
        .and_then(|c| c.standard_name())
        .and_then(CipherSuite::from_name)
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}
