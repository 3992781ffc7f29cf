//! Established sessions without a handshake, for fuzzing and tests
//! (feature `testing`).
//!
//! A TLS handshake through OpenSSL costs milliseconds, so a fuzz target
//! that starts every input with one runs a few hundred inputs a second.
//! Everything after the handshake depends only on the two traffic secrets
//! and each side's transport parameters, so a pair built from fixed
//! secrets is, to the record layer and the state machine, the same as one
//! that shook hands: same key schedule (generation 0 from the secret, key
//! updates derived from it), same peer parameters, and the server's join
//! tokens issued as after a real handshake.

use std::time::Instant;

use zeroize::Zeroizing;

use super::keys::Generation;
use super::{Session, State};
use crate::config::TransportConfig;
use crate::error::Error;
use crate::ids::Side;
use crate::record::CipherSuite;

/// The fixed client-to-server traffic secret (any bytes do: HKDF derives
/// the key and IV from it).
const CLIENT_SECRET: u8 = 0xc1;
/// The fixed server-to-client traffic secret.
const SERVER_SECRET: u8 = 0x5e;

/// Length of a traffic secret: the suite's hash length.
fn secret_len(suite: CipherSuite) -> usize {
    match suite {
        CipherSuite::Aes256GcmSha384 => 48,
        _ => 32,
    }
}

impl Session {
    /// An established TCPLS client/server pair with fixed traffic secrets
    /// and no handshake, as if a handshake with these configurations had
    /// just finished on connection 0 (the `Connected` events and the
    /// server's `TokenIssued` events are queued, its NEW_TOKEN frames wait
    /// in `poll_transmit`). **Insecure** (the keys are public): only for
    /// tests and fuzzing.
    pub fn established_pair_for_testing(
        client_cfg: TransportConfig,
        server_cfg: TransportConfig,
        suite: CipherSuite,
        now: Instant,
    ) -> Result<(Session, Session), Error> {
        let secret = |b: u8| Zeroizing::new(vec![b; secret_len(suite)]);
        let key = |b: u8| Generation::first(suite, secret(b));
        let client_params = client_cfg.params();
        let server_params = server_cfg.params();
        let mut c = Session::new(Side::Client, client_cfg, State::Done, now);
        c.establish_tcpls(server_params, key(CLIENT_SECRET)?, key(SERVER_SECRET)?);
        let mut s = Session::new(Side::Server, server_cfg, State::Done, now);
        s.establish_tcpls(client_params, key(SERVER_SECRET)?, key(CLIENT_SECRET)?);
        Ok((c, s))
    }

    /// The fixed traffic secret `sender` seals with in a pair from
    /// [`Self::established_pair_for_testing`] (generation 0), so tests can
    /// open its records themselves, e.g. to record seed plaintexts.
    pub fn fixed_secret_for_testing(sender: Side, suite: CipherSuite) -> Vec<u8> {
        let b = match sender {
            Side::Client => CLIENT_SECRET,
            Side::Server => SERVER_SECRET,
        };
        vec![b; secret_len(suite)]
    }
}
