//! A multi-connection session driven by a fuzzed program.
//!
//! Each run starts from an established client/server pair built from fixed
//! keys (`Session::established_pair_for_testing`, no handshake) whose
//! connection 0 has already delivered the server's join tokens. The input
//! is a program: one opcode byte, then that operation's argument bytes
//! (missing bytes read as 0). Operations join a second and third
//! connection (and later ones in place of links both sides have closed),
//! move bytes on any connection (all or part of what is in
//! flight, corrupted or not), inject raw bytes or client-sealed records,
//! signal EOF or a reset on a connection to either side, advance the clock
//! and fire timers, and use the stream API on both sides. Keys update
//! every few records (`key_update_records: 3`), so generations change
//! under all of this.
//!
//! After every operation: nothing panicked; each side's received-data
//! memory is within `recv_memory_limit()` and its send memory within the
//! bound `send_buffered` documents; a `recv` that fails with `Closed`
//! leaves its session failed, and once `poll_transmit` ran on its
//! connections, drained.
//!
//! Cost: under ASan and sancov an operation costs tens of microseconds, so
//! a program runs at most `MAX_OPS` operations, and the harness avoids
//! work that checks nothing: sessions write into one reused `TransmitBuf`
//! (`poll_transmit_buf`, as the runtime does) instead of a fresh zeroed
//! `Vec` per call, and poll only when `has_transmit()` or failed (when
//! the runtime wakes its writers), a link with nothing in flight is not
//! handed to `recv` (a runtime calls it only when bytes arrived), a pump
//! stops at the first round that moved and read nothing (the next rounds
//! would repeat it exactly), and a write's buffer is never longer than a
//! stream's send buffer (`write` takes no more than that).

use std::time::{Duration, Instant};

use bytes::BytesMut;
use tcpls_proto::join::{probe_join, JoinProbe};
use tcpls_proto::session::options::{OptionStatus, PeerOption};
use tcpls_proto::session::{ConnectionState, Event, TransmitBuf};
use tcpls_proto::wire::record::MAX_PLAINTEXT;
use tcpls_proto::{
    CallError, CipherSuite, ConnectionId, ReadOutcome, Session, Side, StreamId, TransportConfig,
};

/// The pair's transport configuration: small windows, buffers and key
/// lifetimes so that fuzzed programs reach flow control, send-budget
/// limits and key updates within a few operations.
fn transport() -> TransportConfig {
    TransportConfig {
        stream_window: 4096,
        session_window: 16384,
        max_streams: 4,
        send_buffer: 8192,
        session_send_buffer: 16384,
        max_connections: 3,
        key_update_records: 3,
        ack_every_records: 2,
        // Any congestion controller program, small: fuzzed
        // TRANSPORT_OPTION_DATA frames reach the reassembly and its bounds.
        peer_cc_programs: tcpls_proto::session::options::CcProgramPolicy::Any,
        max_cc_program: 4096,
        ..TransportConfig::default()
    }
}

/// One direction of one TCP connection.
#[derive(Default)]
struct Pipe {
    /// Sent, not delivered yet.
    in_flight: BytesMut,
    /// Delivered, not consumed by `recv` (a partial record).
    inbuf: BytesMut,
}

/// One TCP connection between the two sessions (slot 0 is connection 0).
struct Link {
    id: ConnectionId,
    to_server: Pipe,
    to_client: Pipe,
}

struct World {
    c: Session,
    s: Session,
    now: Instant,
    links: Vec<Link>,
    /// Streams each side knows: client-opened, then server-accepted.
    c_streams: Vec<StreamId>,
    s_streams: Vec<StreamId>,
    /// Reused by every `poll_transmit_buf`, emptied after each.
    tx: TransmitBuf,
    /// Both sides' configuration (`transport()`).
    cfg: TransportConfig,
}

/// Arguments of the current operation.
struct Args<'a>(&'a [u8]);

impl Args<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b
    }
}

fn side(b: u8) -> Side {
    if b & 1 == 0 {
        Side::Client
    } else {
        Side::Server
    }
}

/// What `send_buffered` promises: stream queues within
/// `session_send_buffer`, unacknowledged records within twice
/// `session_window`, and the block pool within 4 MiB.
fn send_bound(t: &TransportConfig) -> u64 {
    t.session_send_buffer as u64 + 2 * t.session_window + (4 << 20)
}

impl World {
    fn new() -> Self {
        let now = Instant::now();
        let t = transport();
        let (c, s) = Session::established_pair_for_testing(
            t.clone(),
            t.clone(),
            CipherSuite::Aes128GcmSha256,
            now,
        )
        .expect("fixed-key pair");
        let mut w = World {
            c,
            s,
            now,
            links: vec![Link {
                id: ConnectionId::FIRST,
                to_server: Pipe::default(),
                to_client: Pipe::default(),
            }],
            c_streams: Vec::new(),
            s_streams: Vec::new(),
            tx: TransmitBuf::new(),
            cfg: t,
        };
        // The server's NEW_TOKEN frames reach the client (in a record of
        // their own once an ACK delay passed without another).
        w.now += w.cfg.ack_delay;
        w.s.handle_timeout(w.now);
        w.transmit_all();
        w.deliver(0, Side::Client, usize::MAX, None);
        assert!(w.c.available_tokens() > 0, "the client got no join token");
        w
    }

    fn session(&mut self, side: Side) -> &mut Session {
        match side {
            Side::Client => &mut self.c,
            Side::Server => &mut self.s,
        }
    }

    /// Both sides put what they have to send on their links; returns the
    /// number of bytes.
    fn transmit_all(&mut self) -> usize {
        let mut total = 0;
        // As the runtime wakes its writers: when the session has something
        // to send or has failed (then polling lets it drain).
        let due = |s: &Session| s.has_transmit() || s.error().is_some();
        let (c_due, s_due) = (due(&self.c), due(&self.s));
        for l in &mut self.links {
            for (from, pipe, due) in [
                (&mut self.c, &mut l.to_server, c_due),
                (&mut self.s, &mut l.to_client, s_due),
            ] {
                if !due {
                    continue;
                }
                self.tx.clear();
                // Usage errors: the session forgot this connection.
                let _ = from.poll_transmit_buf(l.id, &mut self.tx, 64 << 10);
                pipe.in_flight.extend_from_slice(&self.tx);
                total += self.tx.len();
            }
        }
        check_drained(&self.c);
        check_drained(&self.s);
        total
    }

    /// Delivers up to `n` bytes in flight on link `slot` to `to`, the
    /// byte at `corrupt` (if any) flipped on the way.
    fn deliver(&mut self, slot: usize, to: Side, n: usize, corrupt: Option<usize>) {
        let Some(l) = self.links.get_mut(slot) else {
            return;
        };
        let (pipe, sess) = match to {
            Side::Server => (&mut l.to_server, &mut self.s),
            Side::Client => (&mut l.to_client, &mut self.c),
        };
        let n = n.min(pipe.in_flight.len());
        if n == 0 {
            // Nothing arrived: a runtime would not call `recv`.
            return;
        }
        let mut bytes = pipe.in_flight.split_to(n);
        if let Some(i) = corrupt {
            if let Some(b) = bytes.get_mut(i) {
                *b ^= 0x5a;
            }
        }
        pipe.inbuf.extend_from_slice(&bytes);
        let r = sess.recv(l.id, &mut pipe.inbuf, self.now);
        after_recv(sess, &r);
    }

    /// The client joins a connection; the server probes its first bytes
    /// and accepts the token, as an endpoint would.
    fn join(&mut self) {
        // A new link, or one in place of a link that both sides have
        // closed or forgotten (the socket is gone), so that a program can
        // go through more than three connections.
        let slot = if self.links.len() < 3 {
            self.links.len()
        } else {
            let gone = |s: &Session, id| {
                matches!(s.connection_state(id), None | Some(ConnectionState::Closed))
            };
            match (0..3).find(|&i| {
                let id = self.links[i].id;
                gone(&self.c, id) && gone(&self.s, id)
            }) {
                Some(i) => i,
                None => return,
            }
        };
        let Ok((id, bytes)) = self.c.join() else {
            return;
        };
        let JoinProbe::Join { token, len } = probe_join(&bytes) else {
            panic!("the client's join hello does not probe as a join");
        };
        assert!(len <= bytes.len());
        let mut l = Link {
            id,
            to_server: Pipe::default(),
            to_client: Pipe::default(),
        };
        match self.s.accept_join(&token) {
            Ok(sid) => {
                assert_eq!(sid, id, "server and client disagree on the connection id");
                l.to_server.in_flight.extend_from_slice(&bytes[len..]);
            }
            // Refused (token spent by a failed attempt, session closed):
            // the endpoint closes the socket; the link stays dead.
            Err(CallError::JoinRefused(_)) | Err(CallError::Closed(_)) => {}
            Err(e) => panic!("accept_join: {e}"),
        }
        if slot == self.links.len() {
            self.links.push(l);
        } else {
            self.links[slot] = l;
        }
    }

    /// Whether each side has failed and drained.
    fn ended(&self) -> [bool; 4] {
        [
            self.c.error().is_some(),
            self.c.is_drained(),
            self.s.error().is_some(),
            self.s.is_drained(),
        ]
    }

    fn stream(&self, side: Side, i: u8) -> Option<StreamId> {
        let v = match side {
            Side::Client => &self.c_streams,
            Side::Server => &self.s_streams,
        };
        (!v.is_empty()).then(|| v[i as usize % v.len()])
    }

    /// The application on `side` reads everything readable; returns
    /// whether anything happened (a stream accepted, bytes or an end read,
    /// an event).
    fn read_all(&mut self, side: Side) -> bool {
        let mut moved = false;
        while let Some(id) = self.s.accept_stream() {
            self.s_streams.push(id);
            moved = true;
        }
        let (sess, ids) = match side {
            Side::Client => (&mut self.c, &self.c_streams),
            Side::Server => (&mut self.s, &self.s_streams),
        };
        for &id in ids {
            // Bounded: each read consumes bytes or ends the loop.
            for _ in 0..64 {
                match sess.read(id, 1500) {
                    Ok(ReadOutcome::Data(d)) => {
                        assert!(!d.is_empty());
                        moved = true;
                    }
                    // A FIN or reset is reported once; a stream that has
                    // ended answers with an error from then on.
                    Ok(ReadOutcome::Fin) | Ok(ReadOutcome::Reset(_)) => {
                        moved = true;
                        break;
                    }
                    _ => break,
                }
            }
        }
        while let Some(ev) = sess.poll_event() {
            // The runtime's part: apply (or fail to apply) what the peer
            // asks, and answer.
            if let Event::PeerOption {
                request,
                conn,
                option,
            } = ev
            {
                let answer = if request.is_multiple_of(3) {
                    Err((OptionStatus::Failed, "fuzz".to_string()))
                } else {
                    Ok(())
                };
                sess.answer_peer_option(request, conn, &option, answer);
            }
            moved = true;
        }
        moved
    }

    fn step(&mut self, op: u8, a: &mut Args) {
        match op % 16 {
            0 => self.join(),
            1 => {
                self.transmit_all();
            }
            // Deliver all, or part, of what is in flight on a link.
            2 | 3 => {
                let (slot, to) = (a.u8() as usize % 3, side(a.u8()));
                let n = if op % 16 == 2 {
                    usize::MAX
                } else {
                    a.u16() as usize
                };
                self.deliver(slot, to, n, None);
            }
            // Deliver with one byte flipped (a corrupting middlebox).
            4 => {
                let (slot, to, at) = (a.u8() as usize % 3, side(a.u8()), a.u16() as usize);
                self.deliver(slot, to, usize::MAX, Some(at));
            }
            // Raw bytes (a hostile peer or middlebox) into a link's input.
            5 => {
                let (slot, to) = (a.u8() as usize % 3, side(a.u8()));
                let n = a.u8() as usize;
                let bytes = a.bytes(n).to_vec();
                if let Some(l) = self.links.get_mut(slot) {
                    let pipe = match to {
                        Side::Server => &mut l.to_server,
                        Side::Client => &mut l.to_client,
                    };
                    pipe.in_flight.extend_from_slice(&bytes);
                }
                self.deliver(slot, to, usize::MAX, None);
            }
            // A plaintext the client seals as a valid record (on its
            // primary connection): fuzzed frames past the AEAD.
            6 => {
                let n = (a.u16() as usize).min(MAX_PLAINTEXT);
                let plain = a.bytes(n).to_vec();
                match self.c.send_raw_record_for_testing(&plain) {
                    Ok(()) | Err(CallError::Closed(_)) | Err(CallError::Usage(_)) => {}
                    Err(e) => panic!("send_raw_record_for_testing: {e}"),
                }
            }
            7 => {
                let (slot, to) = (a.u8() as usize % 3, side(a.u8()));
                if let Some(id) = self.links.get(slot).map(|l| l.id) {
                    let now = self.now;
                    self.session(to).handle_eof(id, now);
                }
            }
            8 => {
                let (slot, to) = (a.u8() as usize % 3, side(a.u8()));
                if let Some(l) = self.links.get_mut(slot) {
                    let id = l.id;
                    // The socket is gone: what was in flight is lost.
                    l.to_server = Pipe::default();
                    l.to_client = Pipe::default();
                    let now = self.now;
                    self.session(to)
                        .handle_connection_error(id, "reset".into(), now);
                }
            }
            // Time passes (up to about 65 s) and due timers fire.
            9 => {
                let ms = a.u16() as u64;
                self.now += Duration::from_millis(ms);
                let now = self.now;
                for s in [&mut self.c, &mut self.s] {
                    if s.poll_timeout().is_some_and(|t| t <= now) {
                        s.handle_timeout(now);
                    }
                }
            }
            // Jump to the next deadline of one side and fire it.
            10 => {
                let sd = side(a.u8());
                if let Some(t) = self.session(sd).poll_timeout() {
                    self.now = self.now.max(t);
                    let now = self.now;
                    self.c.handle_timeout(now);
                    self.s.handle_timeout(now);
                }
            }
            11 => {
                let sd = side(a.u8());
                if sd == Side::Client && (a.u8() & 1 == 0 || self.c_streams.is_empty()) {
                    if let Ok(id) = self.c.open_stream() {
                        self.c_streams.push(id);
                    }
                }
                let (i, n) = (a.u8(), a.u16() as usize);
                if let Some(id) = self.stream(sd, i) {
                    // `write` takes at most `send_buffer` bytes.
                    let data = vec![i; n.min(self.cfg.send_buffer)];
                    let _ = self.session(sd).write(id, &data);
                }
            }
            12 => {
                let sd = side(a.u8());
                self.read_all(sd);
            }
            13 => {
                let (sd, i, how, code) = (side(a.u8()), a.u8(), a.u8(), a.u8() as u32);
                if how % 5 >= 3 {
                    // A transport option request, on a connection or all.
                    let conn = (code % 4 != 3).then_some(ConnectionId(code % 4));
                    let option = if how % 5 == 3 {
                        let names = ["bbr", "cubic", "vegas", "", "a-b_c"];
                        PeerOption::CongestionControl(names[i as usize % names.len()].into())
                    } else {
                        PeerOption::UserTimeout(Duration::from_millis(code as u64 * 997))
                    };
                    let _ = self.session(sd).set_peer_option(conn, option);
                } else if let Some(id) = self.stream(sd, i) {
                    let s = self.session(sd);
                    let _ = match how % 5 {
                        0 => s.finish(id),
                        1 => s.reset(id, code),
                        _ => s.stop_reading(id),
                    };
                }
            }
            // Both sides move everything for a few rounds.
            _ => {
                for _ in 0..(a.u8() % 4 + 1) {
                    let ended = self.ended();
                    let mut moved = self.transmit_all() > 0;
                    for slot in 0..self.links.len() {
                        let l = &self.links[slot];
                        // Bytes left from an earlier partial delivery count.
                        moved |=
                            !l.to_server.in_flight.is_empty() || !l.to_client.in_flight.is_empty();
                        self.deliver(slot, Side::Server, usize::MAX, None);
                        self.deliver(slot, Side::Client, usize::MAX, None);
                    }
                    moved |= self.read_all(Side::Server);
                    moved |= self.read_all(Side::Client);
                    if !moved && self.ended() == ended {
                        // Nothing was sent, delivered or read: another
                        // round would do exactly the same nothing.
                        break;
                    }
                }
            }
        }
        let t = &self.cfg;
        for s in [&self.c, &self.s] {
            assert!(
                s.recv_held() <= s.recv_memory_limit(),
                "received data holds {} bytes, limit {}",
                s.recv_held(),
                s.recv_memory_limit()
            );
            assert!(
                s.send_buffered() <= send_bound(t),
                "send side holds {} bytes, bound {}",
                s.send_buffered(),
                send_bound(t)
            );
        }
    }
}

/// `recv` ends in `Ok`, a refused join, a forgotten connection, or `Closed`
/// with the session failed.
fn after_recv(s: &Session, r: &Result<(), CallError>) {
    match r {
        Ok(()) | Err(CallError::JoinRefused(_)) | Err(CallError::Usage(_)) => {}
        Err(CallError::Closed(e)) => assert!(
            s.error().is_some(),
            "recv returned {e} but the session is not failed"
        ),
        Err(e) => panic!("recv returned {e}"),
    }
}

/// After a failure, once `poll_transmit` ran, nothing is left to say.
fn check_drained(s: &Session) {
    let Some(e) = s.error() else {
        return;
    };
    // With no connection left that can carry it, the CLOSE stays unsent.
    let can_send = s
        .connections()
        .iter()
        .any(|(_, st)| *st == ConnectionState::Active);
    if can_send {
        // A graceful close may still be sending queued data.
        if !matches!(e, tcpls_proto::Error::LocallyClosed { .. }) {
            assert!(s.is_drained(), "failed session not drained: {e}");
        }
    }
}

/// The target: see the module documentation.
pub fn session_multi(data: &[u8]) {
    let mut w = World::new();
    let mut a = Args(data);
    // Bounded: every operation consumes its opcode byte, and a program
    // runs at most MAX_OPS of them.
    for _ in 0..MAX_OPS {
        let Some(&op) = a.0.first() else {
            break;
        };
        a.0 = &a.0[1..];
        w.step(op, &mut a);
    }
}

/// Operations a program runs at most; the rest of a longer input is
/// ignored. Enough for deep states (dozens of key generations, several
/// connections joined, failed and replaced, timers fired repeatedly),
/// while keeping one input around a millisecond with ASan: libFuzzer lets
/// inputs grow to `-max_len` (4096 bytes, well over 1,000 operations when
/// most are zero bytes, i.e. joins), and such inputs made long campaigns
/// slow.
const MAX_OPS: usize = 128;
