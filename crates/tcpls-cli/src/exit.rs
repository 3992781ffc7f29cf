//! curl's exit codes, so that scripts written against curl read `tcpls
//! get`'s outcome unchanged: 6 the host did not resolve, 7 no connection,
//! 18 the body ended before its length or last chunk, 22 an HTTP error
//! with `--fail`, 28 a timeout, 35 the TLS handshake failed, 60 the
//! server's certificate was refused; 1 for anything else.

use std::fmt;

pub const RESOLVE: u8 = 6;
pub const CONNECT: u8 = 7;
pub const PARTIAL: u8 = 18;
pub const HTTP: u8 = 22;
pub const TIMEOUT: u8 = 28;
pub const TLS: u8 = 35;
pub const CERTIFICATE: u8 = 60;

/// An error that carries its exit code.
#[derive(Debug)]
pub struct Coded {
    pub code: u8,
    pub msg: String,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Coded {}

/// An error with exit code `code`.
pub fn coded(code: u8, msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code,
        msg: msg.into(),
    })
}

/// The exit code `e` calls for: the one it carries, else what a failed
/// handshake says (a session started with early data fails its handshake
/// while a request is under way), else 1.
pub fn code_of(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|c| c.downcast_ref::<Coded>().map(|c| c.code))
        .or_else(|| handshake_code(e, false))
        .unwrap_or(1)
}

/// The exit code of a failure to open a session: what the handshake's
/// failure says (a peer's alert counts), else "no connection" (7).
pub fn connect_code(e: &anyhow::Error) -> u8 {
    handshake_code(e, true).unwrap_or(CONNECT)
}

/// The code of a failed handshake in `e`'s chain: certificate (60),
/// timeout (28), TLS (35; with `alerts`, a peer's alert too).
fn handshake_code(e: &anyhow::Error, alerts: bool) -> Option<u8> {
    use tcpls_proto::Error as S;
    e.chain()
        .find_map(|c| match c.downcast_ref::<tcpls::Error>()? {
            tcpls::Error::Session(S::Certificate { .. }) => Some(CERTIFICATE),
            tcpls::Error::Session(S::HandshakeTimeout) => Some(TIMEOUT),
            tcpls::Error::Session(S::Handshake(_)) => Some(TLS),
            tcpls::Error::Session(S::Alert(_)) if alerts => Some(TLS),
            _ => None,
        })
}
