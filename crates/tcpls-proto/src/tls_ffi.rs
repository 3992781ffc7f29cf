//! The OpenSSL calls resumption needs that rust-openssl does not wrap
//! safely: offering a cached session, the server's session lifetime, and
//! the server's ticket key callback (a key ring that rotates); and the
//! negotiated key exchange group.
#![allow(unsafe_code)]

use std::os::raw::{c_int, c_long, c_uchar};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use foreign_types::ForeignTypeRef;
use openssl::ex_data::Index;
use openssl::rand::rand_bytes;
use openssl::ssl::{SslContext, SslContextBuilder, SslRef, SslSessionRef};
use openssl_sys as ffi;
use zeroize::Zeroizing;

use crate::error::Error;

extern "C" {
    // In libssl since 0.9.8; openssl-sys has no binding.
    fn SSL_CTX_set_timeout(ctx: *mut ffi::SSL_CTX, t: c_long) -> c_long;
    // Since 1.1.1; not bound either.
    fn SSL_get_early_data_status(s: *const ffi::SSL) -> c_int;
    fn SSL_CTX_set_allow_early_data_cb(
        ctx: *mut ffi::SSL_CTX,
        cb: Option<unsafe extern "C" fn(*mut ffi::SSL, *mut std::ffi::c_void) -> c_int>,
        arg: *mut std::ffi::c_void,
    );
    // Since 3.0; not bound.
    fn SSL_group_to_name(s: *mut ffi::SSL, id: c_int) -> *const std::os::raw::c_char;
}

/// `SSL_CTRL_GET_NEGOTIATED_GROUP` (`SSL_get_negotiated_group` is a macro).
const SSL_CTRL_GET_NEGOTIATED_GROUP: c_int = 134;

/// The key exchange group a finished handshake used; `None` when there was
/// none (a psk_ke resumption).
pub(crate) fn negotiated_group(ssl: &SslRef) -> Option<String> {
    // SAFETY: `ssl` is a live SSL; the control reads a field, and the name
    // is a static string of OpenSSL's (or NULL), copied at once.
    unsafe {
        let id = ffi::SSL_ctrl(
            ssl.as_ptr(),
            SSL_CTRL_GET_NEGOTIATED_GROUP,
            0,
            std::ptr::null_mut(),
        ) as c_int;
        if id <= 0 {
            return None;
        }
        let name = SSL_group_to_name(ssl.as_ptr(), id);
        if name.is_null() {
            return Some(format!("group {id}"));
        }
        Some(
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// Server: early data is accepted only from clients that offered TCPLS
/// (its units are TCPLS frames; a plain TLS client's early bytes would
/// have nowhere to go before the handshake ends).
pub(crate) fn allow_early_data_only_for_tcpls(b: &mut SslContextBuilder) {
    // SAFETY: the callback has the signature OpenSSL documents and uses
    // no argument.
    unsafe {
        SSL_CTX_set_allow_early_data_cb(b.as_ptr(), Some(allow_early_data), std::ptr::null_mut())
    };
}

unsafe extern "C" fn allow_early_data(ssl: *mut ffi::SSL, _arg: *mut std::ffi::c_void) -> c_int {
    std::panic::catch_unwind(|| {
        // SAFETY: OpenSSL passes the live SSL whose ClientHello it parsed.
        let ssl = unsafe { SslRef::from_ptr(ssl) };
        c_int::from(crate::tls_callbacks::peer_offered_tcpls(ssl))
    })
    .unwrap_or(0)
}

/// `SSL_EARLY_DATA_ACCEPTED` (ssl.h).
const EARLY_DATA_ACCEPTED: c_int = 2;

/// Whether the server accepted the early data of this (finished)
/// handshake.
pub(crate) fn early_data_accepted(ssl: &SslRef) -> bool {
    // SAFETY: a live SSL.
    unsafe { SSL_get_early_data_status(ssl.as_ptr()) == EARLY_DATA_ACCEPTED }
}

/// What one `SSL_read_early_data` call gave.
pub(crate) enum EarlyRead {
    /// Early data bytes (into the buffer).
    Data(usize),
    /// No more early data: the handshake goes on.
    Finished,
    /// More input is needed.
    WantRead,
}

/// Server: reads early data (`SSL_read_early_data`, which also runs the
/// handshake up to the client's Finished). rust-openssl's wrapper maps
/// both "finished" and an empty read to `Ok(0)`.
pub(crate) fn read_early_data(ssl: &SslRef, buf: &mut [u8]) -> Result<EarlyRead, Error> {
    let mut read = 0usize;
    // SAFETY: `buf` is writable for its length; `read` outlives the call.
    let ret = unsafe {
        ffi::SSL_read_early_data(ssl.as_ptr(), buf.as_mut_ptr().cast(), buf.len(), &mut read)
    };
    match ret {
        ffi::SSL_READ_EARLY_DATA_SUCCESS => Ok(EarlyRead::Data(read)),
        ffi::SSL_READ_EARLY_DATA_FINISH => Ok(EarlyRead::Finished),
        _ => {
            // SAFETY: a live SSL and the return value of its last call.
            let e = unsafe { ffi::SSL_get_error(ssl.as_ptr(), ret) };
            if e == ffi::SSL_ERROR_WANT_READ {
                Ok(EarlyRead::WantRead)
            } else {
                let stack = openssl::error::ErrorStack::get();
                Err(Error::Handshake(format!("reading early data: {stack}")))
            }
        }
    }
}

/// `SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB` (tls1.h).
const SET_TICKET_KEY_CB: c_int = 72;

/// Offers `session` in the next ClientHello of `ssl`.
///
/// rust-openssl marks this unsafe because the session must come from the
/// same `SslContext`: the session cache is keyed so that it does (see
/// `resumption::cache_key`), and `ssl` was made from that context.
pub(crate) fn set_session(ssl: &mut SslRef, session: &SslSessionRef) -> Result<(), Error> {
    // SAFETY: both pointers are live for the call; see the note above.
    unsafe { ssl.set_session(session) }.map_err(|e| Error::Internal(e.to_string()))
}

/// How long the server's tickets stay valid (the `ticket_lifetime` it
/// announces, and what it accepts).
pub(crate) fn set_session_lifetime(b: &mut SslContextBuilder, lifetime: Duration) {
    let secs = lifetime.as_secs().clamp(1, i32::MAX as u64) as c_long;
    // SAFETY: the builder owns a live SSL_CTX.
    unsafe { SSL_CTX_set_timeout(b.as_ptr(), secs) };
}

/// One ticket key: a name the ticket carries, and its AES and HMAC keys.
struct TicketKey {
    name: [u8; 16],
    aes: Zeroizing<[u8; 32]>,
    hmac: Zeroizing<[u8; 32]>,
}

impl TicketKey {
    fn random() -> Result<Self, Error> {
        let mut k = Self {
            name: [0; 16],
            aes: Zeroizing::new([0; 32]),
            hmac: Zeroizing::new([0; 32]),
        };
        let err = |e: openssl::error::ErrorStack| Error::Internal(e.to_string());
        rand_bytes(&mut k.name).map_err(err)?;
        rand_bytes(&mut k.aes[..]).map_err(err)?;
        rand_bytes(&mut k.hmac[..]).map_err(err)?;
        Ok(k)
    }
}

/// The server's ticket keys: tickets are sealed with the current key and
/// accepted under it or the previous one, so a ticket stays usable across
/// one rotation. Rotation happens on the first ticket operation after the
/// period ends.
pub(crate) struct TicketKeys {
    ring: Mutex<Ring>,
    rotation: Duration,
}

struct Ring {
    current: TicketKey,
    previous: Option<TicketKey>,
    since: Instant,
}

impl TicketKeys {
    fn new(rotation: Duration) -> Result<Self, Error> {
        Ok(Self {
            ring: Mutex::new(Ring {
                current: TicketKey::random()?,
                previous: None,
                since: Instant::now(),
            }),
            rotation,
        })
    }
}

fn keys_index() -> Result<Index<SslContext, TicketKeys>, Error> {
    static IDX: OnceLock<Index<SslContext, TicketKeys>> = OnceLock::new();
    if let Some(i) = IDX.get() {
        return Ok(*i);
    }
    let i = SslContext::new_ex_index::<TicketKeys>().map_err(|e| Error::Internal(e.to_string()))?;
    Ok(*IDX.get_or_init(|| i))
}

/// Installs a fresh key ring rotating every `rotation` on the server
/// context `b`.
pub(crate) fn install_ticket_keys(
    b: &mut SslContextBuilder,
    rotation: Duration,
) -> Result<(), Error> {
    b.set_ex_data(keys_index()?, TicketKeys::new(rotation)?);
    type Cb = unsafe extern "C" fn(
        *mut ffi::SSL,
        *mut c_uchar,
        *mut c_uchar,
        *mut ffi::EVP_CIPHER_CTX,
        *mut ffi::HMAC_CTX,
        c_int,
    ) -> c_int;
    let cb: Cb = ticket_key_cb;
    // SAFETY: the callback has the signature SSL_CTX_set_tlsext_ticket_key_cb
    // documents; OpenSSL casts it back before calling it.
    let r = unsafe {
        ffi::SSL_CTX_callback_ctrl__fixed_rust(
            b.as_ptr(),
            SET_TICKET_KEY_CB,
            Some(std::mem::transmute::<Cb, unsafe extern "C" fn()>(cb)),
        )
    };
    if r != 1 {
        return Err(Error::Internal("installing the ticket key callback".into()));
    }
    Ok(())
}

/// OpenSSL's ticket key callback: `enc` 1 seals a new ticket (return 1),
/// `enc` 0 opens one: 0 for an unknown key (the client gets a full
/// handshake), 2 for a known one (accepted, and the client is sent a
/// fresh ticket).
unsafe extern "C" fn ticket_key_cb(
    ssl: *mut ffi::SSL,
    key_name: *mut c_uchar,
    iv: *mut c_uchar,
    cipher: *mut ffi::EVP_CIPHER_CTX,
    hmac: *mut ffi::HMAC_CTX,
    enc: c_int,
) -> c_int {
    // A panic must not unwind into C.
    std::panic::catch_unwind(|| {
        // SAFETY: OpenSSL passes a live SSL, a 16-byte key name, an IV of
        // EVP_MAX_IV_LENGTH (16) bytes and initialised contexts.
        unsafe {
            let ssl = SslRef::from_ptr(ssl);
            let Some(keys) = keys_index().ok().and_then(|i| ssl.ssl_context().ex_data(i)) else {
                return -1;
            };
            let mut ring = keys.ring.lock().unwrap_or_else(|p| p.into_inner());
            let age = ring.since.elapsed();
            if age >= keys.rotation {
                let Ok(fresh) = TicketKey::random() else {
                    return -1;
                };
                let old = std::mem::replace(&mut ring.current, fresh);
                // After two periods without a ticket, the old key's
                // tickets are too old for it to be the previous key.
                ring.previous = (age < keys.rotation * 2).then_some(old);
                ring.since = Instant::now();
            }
            let name = std::slice::from_raw_parts_mut(key_name, 16);
            let (key, answer) = if enc == 1 {
                if ffi::RAND_bytes(iv, 16) != 1 {
                    return -1;
                }
                name.copy_from_slice(&ring.current.name);
                (&ring.current, 1)
            } else if *name == ring.current.name {
                // 2, not 1: OpenSSL then sends a resumed client a fresh
                // ticket, which it needs as tickets are used once.
                (&ring.current, 2)
            } else {
                match &ring.previous {
                    Some(p) if *name == p.name => (p, 2),
                    _ => return 0,
                }
            };
            let init = if enc == 1 {
                ffi::EVP_EncryptInit_ex
            } else {
                ffi::EVP_DecryptInit_ex
            };
            if init(
                cipher,
                ffi::EVP_aes_256_cbc(),
                std::ptr::null_mut(),
                key.aes.as_ptr(),
                iv,
            ) != 1
                || ffi::HMAC_Init_ex(
                    hmac,
                    key.hmac.as_ptr().cast(),
                    32,
                    ffi::EVP_sha256(),
                    std::ptr::null_mut(),
                ) != 1
            {
                return -1;
            }
            answer
        }
    })
    .unwrap_or(-1)
}
