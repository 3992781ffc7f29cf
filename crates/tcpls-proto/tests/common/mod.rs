//! Two sessions over a simulated network, driven by a virtual clock.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tcpls_proto::{ClientConfig, ServerConfig, Session, TransportConfig};

pub fn server_config(t: TransportConfig) -> Arc<ServerConfig> {
    Arc::new(
        ServerConfig::builder()
            .self_signed(&["localhost"])
            .unwrap()
            .transport(t)
            .build()
            .unwrap(),
    )
}

pub fn client_config(t: TransportConfig) -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder()
            .insecure()
            .transport(t)
            .build()
            .unwrap(),
    )
}

/// Client and server joined by an in-memory byte pipe per direction.
pub struct Pair {
    pub c: Session,
    pub s: Session,
    pub now: Instant,
    c_in: BytesMut,
    s_in: BytesMut,
    pub rng: StdRng,
    /// Deliver bytes in random-sized pieces (records split across reads).
    pub chunked: bool,
    /// Bytes carried client→server and server→client.
    pub carried: (usize, usize),
}

impl Pair {
    pub fn new(c: Arc<ClientConfig>, s: Arc<ServerConfig>, seed: u64) -> Self {
        let now = Instant::now();
        Self {
            c: Session::connect(c, "localhost", now).unwrap(),
            s: Session::accept(s, now).unwrap(),
            now,
            c_in: BytesMut::new(),
            s_in: BytesMut::new(),
            rng: StdRng::seed_from_u64(seed),
            chunked: false,
            carried: (0, 0),
        }
    }

    pub fn default_pair() -> Self {
        Self::new(
            client_config(TransportConfig::default()),
            server_config(TransportConfig::default()),
            1,
        )
    }

    /// Moves what each side has to send to the other. True if anything moved.
    pub fn step(&mut self) -> bool {
        self.now += Duration::from_millis(1);
        self.timers();
        let mut wire = Vec::new();
        let _ = self.c.poll_transmit(0, &mut wire, 256 << 10);
        let a = wire.len();
        self.carried.0 += a;
        deliver(
            &mut self.s,
            &mut self.s_in,
            &wire,
            self.chunked,
            &mut self.rng,
            self.now,
        );
        wire.clear();
        let _ = self.s.poll_transmit(0, &mut wire, 256 << 10);
        let b = wire.len();
        self.carried.1 += b;
        deliver(
            &mut self.c,
            &mut self.c_in,
            &wire,
            self.chunked,
            &mut self.rng,
            self.now,
        );
        a + b > 0
    }

    /// Fires the sessions' timers that are due.
    pub fn timers(&mut self) {
        for s in [&mut self.c, &mut self.s] {
            if s.poll_timeout().is_some_and(|t| t <= self.now) {
                s.handle_timeout(self.now);
            }
        }
    }

    /// Steps until nothing moves, jumping the clock to timers (ACK delays)
    /// due within 100 ms.
    pub fn drive(&mut self) {
        for _ in 0..1_000_000 {
            self.timers();
            if self.step() {
                continue;
            }
            let next = [self.c.poll_timeout(), self.s.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= self.now + Duration::from_millis(100) => {
                    self.now = self.now.max(t);
                }
                _ => return,
            }
        }
        panic!("simulation did not settle");
    }

    pub fn established() -> Self {
        let mut p = Self::default_pair();
        p.drive();
        assert!(p.c.is_tcpls() && p.s.is_tcpls());
        p
    }
}

pub fn deliver(
    to: &mut Session,
    inbuf: &mut BytesMut,
    wire: &[u8],
    chunked: bool,
    rng: &mut StdRng,
    now: Instant,
) {
    let mut rest = wire;
    while !rest.is_empty() {
        let n = if chunked {
            rng.gen_range(1..=rest.len().min(40_000))
        } else {
            rest.len()
        };
        inbuf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        let _ = to.recv(0, inbuf, now);
    }
}

/// Deterministic content: byte `i` of stream `s`.
pub fn pattern(stream: u32, offset: u64) -> u8 {
    let x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (stream as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (x >> 29) as u8
}
