//! The session's receive path, end to end.
//!
//! Each run builds an established client/server pair in memory (configs are
//! built once), then, depending on the first input byte:
//!
//! - mode 0: the rest of the input is raw wire bytes fed to the server with
//!   `Session::recv` (in two pieces, so partial records are exercised);
//! - mode 1: the rest is cut into plaintexts (`[len u16][plaintext]...`),
//!   which the client seals as valid records with
//!   `send_raw_record_for_testing`, so fuzzed frames get past the AEAD and
//!   reach the frame decoder and the stream / flow-control state machine.
//!
//! Afterwards the server behaves like an echo application (accepts streams,
//! reads everything, writes it back, finishes on FIN) and both sides are
//! driven for a few rounds, so whatever the fuzzed frames changed (credits,
//! limits, resets) is also exercised on the send side and by the client.
//!
//! Every call must end in `Ok` or an `Err`, never a panic or a hang; an
//! error must leave the session failed and, after one `poll_transmit`,
//! drained (its CLOSE record handed out).

use std::time::Instant;

use bytes::BytesMut;
use tcpls_proto::wire::record::MAX_PLAINTEXT;
use tcpls_proto::{
    CallError, CipherSuite, ConnectionId, ReadOutcome, Session, StreamId, TransportConfig,
};

/// Small windows and few streams, so that fuzzed offsets and stream ids
/// reach the flow-control, re-announcement and stream-limit paths.
fn transport() -> TransportConfig {
    TransportConfig {
        stream_window: 2048,
        session_window: 8192,
        max_streams: 4,
        send_buffer: 8192,
        // Any congestion controller program, small: fuzzed
        // TRANSPORT_OPTION_DATA frames reach the reassembly and its bounds.
        peer_cc_programs: tcpls_proto::session::options::CcProgramPolicy::Any,
        max_cc_program: 4096,
        ..TransportConfig::default()
    }
}

struct Pair {
    c: Session,
    s: Session,
    c_in: BytesMut,
    s_in: BytesMut,
    now: Instant,
    /// Streams the server application knows about.
    accepted: Vec<StreamId>,
}

impl Pair {
    /// An established pair from fixed keys (no TLS handshake, so a run
    /// costs microseconds); the server's join tokens reach the client.
    fn established() -> Self {
        let now = Instant::now();
        let t = transport();
        let (c, s) =
            Session::established_pair_for_testing(t.clone(), t, CipherSuite::Aes128GcmSha256, now)
                .expect("fixed-key pair");
        let mut p = Pair {
            c,
            s,
            c_in: BytesMut::new(),
            s_in: BytesMut::new(),
            now,
            accepted: Vec::new(),
        };
        p.server_to_client().expect("tokens reach the client");
        // The client opens every stream it may (nothing is sent until data is
        // written), so the server's echoes on those ids are legitimate.
        while p.c.can_open_stream() {
            p.c.open_stream().expect("open_stream");
        }
        while p.c.poll_event().is_some() {}
        while p.s.poll_event().is_some() {}
        p
    }

    fn client_to_server(&mut self) -> Result<(), CallError> {
        let mut wire = Vec::new();
        let _ = self.c.poll_transmit(ConnectionId(0), &mut wire, usize::MAX);
        self.s_in.extend_from_slice(&wire);
        let r = self.s.recv(ConnectionId(0), &mut self.s_in, self.now);
        check_failed(&self.s, &r);
        r
    }

    fn server_to_client(&mut self) -> Result<(), CallError> {
        let mut wire = Vec::new();
        let _ = self.s.poll_transmit(ConnectionId(0), &mut wire, usize::MAX);
        if self.s.error().is_some() {
            assert!(
                self.s.is_drained(),
                "failed server not drained after poll_transmit: {:?}",
                self.s.error()
            );
        }
        self.c_in.extend_from_slice(&wire);
        let r = self.c.recv(ConnectionId(0), &mut self.c_in, self.now);
        check_failed(&self.c, &r);
        r
    }

    /// The server application: accept, read everything, echo it, finish on FIN.
    fn server_app(&mut self) {
        while let Some(id) = self.s.accept_stream() {
            if !self.accepted.contains(&id) {
                self.accepted.push(id);
            }
        }
        while self.s.poll_event().is_some() {}
        let ids = self.accepted.clone();
        for id in ids {
            // Bounded: every read consumes buffered bytes or ends the loop.
            for _ in 0..64 {
                match self.s.read(id, 700) {
                    Ok(ReadOutcome::Data(d)) => {
                        let _ = self.s.write(id, &d);
                    }
                    Ok(ReadOutcome::Fin) => {
                        let _ = self.s.finish(id);
                        break;
                    }
                    Ok(ReadOutcome::Reset(code)) => {
                        let _ = self.s.reset(id, code);
                        break;
                    }
                    Ok(_) | Err(_) => break,
                }
            }
        }
    }
}

/// An error from `recv` on an established connection means the session
/// ended: it must be failed.
fn check_failed(s: &Session, r: &Result<(), CallError>) {
    match r {
        Ok(()) => {}
        Err(CallError::Closed(e)) => assert!(
            s.error().is_some(),
            "recv returned {e} but the session is not failed"
        ),
        // A corrupt record fails connection 0 over (failover is on) and the
        // session forgets it: the runtime would have closed its socket.
        Err(CallError::Usage(_)) if s.connection_state(ConnectionId(0)).is_none() => {}
        Err(e) => panic!("recv on an established connection returned {e}"),
    }
}

/// The target: see the module documentation.
pub fn session_recv(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut p = Pair::established();

    match mode % 2 {
        0 => {
            // Raw wire bytes, delivered in two reads.
            let cut = match rest.first() {
                Some(&b) => (b as usize).min(rest.len()),
                None => 0,
            };
            for piece in [&rest[..cut], &rest[cut..]] {
                p.s_in.extend_from_slice(piece);
                let r = p.s.recv(ConnectionId(0), &mut p.s_in, p.now);
                check_failed(&p.s, &r);
                if r.is_err() {
                    break;
                }
            }
        }
        _ => {
            // Plaintexts sealed by the client as valid records.
            let mut rest = rest;
            for _ in 0..16 {
                if rest.is_empty() {
                    break;
                }
                let (len, body) = if rest.len() >= 2 {
                    (u16::from_be_bytes([rest[0], rest[1]]) as usize, &rest[2..])
                } else {
                    (rest.len(), rest)
                };
                // The record layer carries at most 2^14 bytes of plaintext.
                let n = len.min(body.len()).min(MAX_PLAINTEXT);
                p.c.send_raw_record_for_testing(&body[..n])
                    .expect("client seals a record");
                rest = &body[n..];
            }
            let _ = p.client_to_server();
        }
    }

    // Let the server application and both sides react for a few rounds.
    for _ in 0..4 {
        p.server_app();
        let _ = p.server_to_client();
        let _ = p.client_to_server();
        if p.s.is_drained() && p.c.error().is_some() {
            break;
        }
    }
}
