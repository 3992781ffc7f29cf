//! The OpenSSL callbacks installed on the `SslContext` that do the
//! TCPLS-specific work of the handshake:
//! - a custom extension `tcpls` in ClientHello and EncryptedExtensions that
//!   carries version and transport parameters (a missing echo means the
//!   server is an ordinary TLS server: fallback, not an error);
//! - the keylog callback, which is the only OpenSSL interface that exposes
//!   the application traffic secrets the session's own record layer needs
//!   (and which also appends every secret to the file `SSLKEYLOGFILE`
//!   names, when set, for Wireshark);
//!
//! They write into the per-handshake state ([`HsShared`]) that
//! `handshake.rs` attaches to each `Ssl`.

use std::sync::{Arc, Mutex, OnceLock};

use openssl::ex_data::Index;
use openssl::ssl::{
    ExtensionContext, Ssl, SslAlert, SslContextBuilder, SslRef, SslSessionCacheMode,
};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::resumption::SessionCache;
use crate::wire::codec::Codec;
use crate::wire::extension::{TcplsExtension, TCPLS_EXTENSION_TYPE, TCPLS_VERSION};

/// Per-handshake state the OpenSSL callbacks write into.
#[derive(Default)]
pub(crate) struct HsShared {
    pub(crate) local_ext: Vec<u8>,
    pub(crate) peer_ext: Option<TcplsExtension>,
    pub(crate) client_secret: Option<Zeroizing<Vec<u8>>>,
    pub(crate) server_secret: Option<Zeroizing<Vec<u8>>>,
    /// Client: where a ticket the server sends is kept in the session cache.
    pub(crate) resume_key: Option<String>,
}

pub(crate) type Shared = Arc<Mutex<HsShared>>;

pub(crate) fn index() -> Result<Index<Ssl, Shared>, Error> {
    static IDX: OnceLock<Index<Ssl, Shared>> = OnceLock::new();
    if let Some(i) = IDX.get() {
        return Ok(*i);
    }
    let i = Ssl::new_ex_index::<Shared>().map_err(|e| Error::Internal(e.to_string()))?;
    Ok(*IDX.get_or_init(|| i))
}

fn shared(ssl: &SslRef) -> Option<&Shared> {
    ssl.ex_data(index().ok()?)
}

/// The file `SSLKEYLOGFILE` names, opened once per process for appending
/// (created with mode 0600): the NSS key log format Wireshark reads.
fn keylog_file() -> Option<&'static Mutex<std::fs::File>> {
    static FILE: OnceLock<Option<Mutex<std::fs::File>>> = OnceLock::new();
    FILE.get_or_init(|| {
        use std::os::unix::fs::OpenOptionsExt;
        let path = std::env::var_os("SSLKEYLOGFILE").filter(|p| !p.is_empty())?;
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                tracing::warn!(path = %std::path::Path::new(&path).display(),
                    "SSLKEYLOGFILE is set: TLS secrets are written there (debugging only)");
                Some(Mutex::new(f))
            }
            Err(e) => {
                tracing::warn!(error = %e, "SSLKEYLOGFILE cannot be opened");
                None
            }
        }
    })
    .as_ref()
}

/// Server: the client's hello carried a `tcpls` extension this side
/// speaks.
pub(crate) fn peer_offered_tcpls(ssl: &SslRef) -> bool {
    shared(ssl).is_some_and(|st| {
        st.lock()
            .unwrap_or_else(|p| p.into_inner())
            .peer_ext
            .is_some()
    })
}

fn parse_hex(s: &str) -> Option<Zeroizing<Vec<u8>>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let mut v = Zeroizing::new(Vec::with_capacity(s.len() / 2));
    for i in (0..s.len()).step_by(2) {
        v.push(u8::from_str_radix(s.get(i..i + 2)?, 16).ok()?);
    }
    Some(v)
}

/// Installs the keylog and (when `tcpls`) the extension callbacks.
pub(crate) fn install_callbacks(
    b: &mut SslContextBuilder,
    tcpls: bool,
    server: bool,
) -> Result<(), Error> {
    index()?;
    b.set_keylog_callback(|ssl, line| {
        if let Some(f) = keylog_file() {
            use std::io::Write;
            let _ = writeln!(f.lock().unwrap_or_else(|p| p.into_inner()), "{line}");
        }
        let Some(st) = shared(ssl) else { return };
        let mut parts = line.split(' ');
        let (Some(label), Some(_random), Some(secret)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let mut st = st.lock().unwrap_or_else(|p| p.into_inner());
        match label {
            "CLIENT_TRAFFIC_SECRET_0" => st.client_secret = parse_hex(secret),
            "SERVER_TRAFFIC_SECRET_0" => st.server_secret = parse_hex(secret),
            _ => {}
        }
    });
    if !tcpls {
        return Ok(());
    }
    let ctx = ExtensionContext::TLS1_3_ONLY
        | ExtensionContext::CLIENT_HELLO
        | ExtensionContext::TLS1_3_ENCRYPTED_EXTENSIONS;
    b.add_custom_ext(
        TCPLS_EXTENSION_TYPE,
        ctx,
        move |ssl: &mut SslRef, _ctx, _cert| -> Result<Option<Vec<u8>>, SslAlert> {
            let Some(st) = shared(ssl) else {
                return Ok(None);
            };
            let st = st.lock().unwrap_or_else(|p| p.into_inner());
            // A server echoes only to a client that offered a version it speaks.
            if server && st.peer_ext.is_none() {
                return Ok(None);
            }
            Ok(Some(st.local_ext.clone()))
        },
        move |ssl: &mut SslRef, _ctx, data: &[u8], _cert| -> Result<(), SslAlert> {
            let Some(st) = shared(ssl) else {
                return Ok(());
            };
            // The version comes first: a server that does not speak it
            // answers as plain TLS whatever the rest looks like.
            let version = data.get(..2).map(|v| u16::from_be_bytes([v[0], v[1]]));
            if version != Some(TCPLS_VERSION) {
                if server {
                    return Ok(());
                }
                return Err(SslAlert::ILLEGAL_PARAMETER);
            }
            let ext = TcplsExtension::from_slice(data).map_err(|_| SslAlert::DECODE_ERROR)?;
            st.lock().unwrap_or_else(|p| p.into_inner()).peer_ext = Some(ext);
            Ok(())
        },
    )
    .map_err(|e| Error::Internal(e.to_string()))
}

/// Client: keeps the tickets the server sends in `cache`, under the key
/// the handshake was started with.
pub(crate) fn install_ticket_store(b: &mut SslContextBuilder, cache: std::sync::Arc<SessionCache>) {
    b.set_session_cache_mode(SslSessionCacheMode::CLIENT | SslSessionCacheMode::NO_INTERNAL);
    b.set_new_session_callback(move |ssl, session| {
        let Some(st) = shared(ssl) else { return };
        let (key, tcpls) = {
            let st = st.lock().unwrap_or_else(|p| p.into_inner());
            (st.resume_key.clone(), st.peer_ext.is_some())
        };
        if let Some(key) = key {
            tracing::debug!(%key, tcpls, "session ticket stored");
            cache.insert(&key, crate::resumption::Ticket { session, tcpls });
        }
    });
}
