//! The session's record keys, per direction and generation.
//!
//! One key protects the records of every connection of the session, so the
//! number of records it may protect (RFC 8446 §5.5) is counted across
//! connections, not per connection. Before that limit a side moves its
//! sending direction to the next generation: the next traffic secret is
//! TLS 1.3's `HKDF-Expand-Label(secret, "traffic upd", "", Hash.length)`
//! (RFC 8446 §7.2). Each connection switches at a record boundary of its
//! own: its last record under the old key carries a KEY_UPDATE frame
//! naming the new generation, and its next records use the new key. TCP
//! keeps each connection's records in order, so the receiver always knows
//! which key a record uses; other connections, replays and joins go on
//! with the key their connection is at.

use zeroize::Zeroizing;

use super::connection::Connections;
use crate::error::Error;
use crate::ids::ConnectionId;
use crate::record::{hkdf_expand_label, CipherSuite, RecordKey};
use crate::wire::record::ContentType;

/// Receive-side generations kept at once: one per connection and the
/// newest; more means a peer announcing keys it does not use.
const MAX_GENERATIONS: usize = 64;

/// How many generations ahead of the newest known one a connection's first
/// record may be (KEY_UPDATE frames naming them may still be in flight on
/// other connections). Only a join's first record is tried this way.
const FIRST_RECORD_LOOKAHEAD: u32 = 8;

/// One key of one direction.
pub(crate) struct Generation {
    pub gen: u32,
    pub key: RecordKey,
    secret: Zeroizing<Vec<u8>>,
    /// Records protected (sealed or opened) with it, on every connection.
    pub records: u64,
}

impl Generation {
    pub fn first(suite: CipherSuite, secret: Zeroizing<Vec<u8>>) -> Result<Self, Error> {
        Ok(Self {
            gen: 0,
            key: RecordKey::new(suite, &secret)?,
            secret,
            records: 0,
        })
    }

    /// The generation after this one.
    fn next(&self) -> Result<Self, Error> {
        let suite = self.key.suite();
        let mut secret = Zeroizing::new(vec![0u8; self.secret.len()]);
        hkdf_expand_label(suite, &self.secret, b"traffic upd", &mut secret)?;
        Ok(Self {
            gen: self.gen + 1,
            key: RecordKey::new(suite, &secret)?,
            secret,
            records: 0,
        })
    }

    /// Counts one more record, or refuses past the suite's limit.
    fn count(&mut self) -> Result<(), Error> {
        if self.records >= self.key.suite().record_limit() {
            return Err(Error::KeyLimit);
        }
        self.records += 1;
        Ok(())
    }
}

/// The sending direction: the current generation, and the previous one
/// while some connection has not switched yet.
pub(crate) struct SendKeys {
    pub current: Generation,
    previous: Option<Generation>,
    /// Start the next generation after this many records of the current.
    update_after: u64,
}

impl SendKeys {
    pub fn new(first: Generation, update_after: u64) -> Self {
        Self {
            current: first,
            previous: None,
            update_after: update_after.max(1),
        }
    }

    /// The key connection generation `gen` seals with, counted.
    pub fn seal_key(&mut self, gen: u32) -> Result<&RecordKey, Error> {
        let g = match &mut self.previous {
            Some(p) if p.gen == gen => p,
            _ if self.current.gen == gen => &mut self.current,
            _ => {
                return Err(Error::Internal(
                    "no sending key for a connection's generation".into(),
                ))
            }
        };
        g.count()?;
        Ok(&g.key)
    }

    /// True once the current key has protected enough records, and every
    /// connection has left the previous one: time for the next generation.
    pub fn update_due(&mut self, conns: &Connections) -> bool {
        if self.previous.is_some() {
            self.forget_previous_if_unused(conns);
        }
        self.previous.is_none() && self.current.records >= self.update_after
    }

    /// Moves to the next generation; every connection that can send must
    /// carry a KEY_UPDATE frame before it uses it.
    pub fn update(&mut self, conns: &mut Connections) -> Result<(), Error> {
        let next = self.current.next()?;
        self.previous = Some(std::mem::replace(&mut self.current, next));
        let gen = self.current.gen;
        for c in conns.values_mut().filter(|c| c.can_send()) {
            c.key_update_due = true;
        }
        tracing::debug!(gen, "sending key updated");
        Ok(())
    }

    /// Drops the previous key once no connection that can send uses it.
    fn forget_previous_if_unused(&mut self, conns: &Connections) {
        let Some(p) = &self.previous else { return };
        if !conns.values().any(|c| c.can_send() && c.send_gen == p.gen) {
            self.previous = None;
        }
    }
}

/// The receiving direction: the generations connections use, and the
/// newest known (the base for the next ones). The peer switches each
/// connection on its own, so a connection with records in flight may lag
/// the others by several generations; each connection uses one, so this
/// holds at most one per connection plus the newest.
pub(crate) struct RecvKeys {
    gens: Vec<Generation>,
}

impl RecvKeys {
    pub fn new(first: Generation) -> Self {
        Self { gens: vec![first] }
    }

    fn newest(&self) -> &Generation {
        self.gens
            .iter()
            .max_by_key(|g| g.gen)
            .expect("at least one generation")
    }

    /// The key of generation `gen`, if still held.
    pub fn key_of(&self, gen: u32) -> Option<&RecordKey> {
        self.gens.iter().find(|g| g.gen == gen).map(|g| &g.key)
    }

    /// The newest generation known: a new connection starts there.
    pub fn newest_gen(&self) -> u32 {
        self.newest().gen
    }

    /// Opens record `seq` of `conn` with generation `gen`, counted.
    pub fn open(
        &mut self,
        gen: u32,
        conn: ConnectionId,
        seq: u64,
        record: &mut [u8],
    ) -> Result<(ContentType, usize), Error> {
        let g = self
            .gens
            .iter_mut()
            .find(|g| g.gen == gen)
            .ok_or_else(|| Error::Internal("no key for a connection's generation".into()))?;
        g.count()?;
        g.key.open(conn, seq, record)
    }

    /// Opens the first record of a connection, whose generation is not
    /// known yet: tried with the newest known generation, then the next
    /// few (the KEY_UPDATE frames naming them may still be in flight on
    /// other connections). Each try works on a copy (a failed open leaves
    /// its buffer unspecified). Returns the generation that worked.
    pub fn open_first(
        &mut self,
        conn: ConnectionId,
        seq: u64,
        record: &mut [u8],
    ) -> Result<(u32, ContentType, usize), Error> {
        let mut copy = record.to_vec();
        let newest = self.newest_gen();
        if let Ok((ct, len)) = self.open(newest, conn, seq, &mut copy) {
            record.copy_from_slice(&copy);
            return Ok((newest, ct, len));
        }
        let mut next = self.newest().next()?;
        for _ in 0..FIRST_RECORD_LOOKAHEAD {
            copy.copy_from_slice(record);
            if let Ok((ct, len)) = next.key.open(conn, seq, &mut copy) {
                let gen = next.gen;
                next.records = 1;
                self.insert(next)?;
                record.copy_from_slice(&copy);
                return Ok((gen, ct, len));
            }
            next = next.next()?;
        }
        Err(Error::BadRecord("decryption failed"))
    }

    /// Makes generation `from + 1` available (a connection at `from` got
    /// a KEY_UPDATE naming it).
    pub fn advance(&mut self, from: u32) -> Result<(), Error> {
        if self.gens.iter().any(|g| g.gen == from + 1) {
            return Ok(());
        }
        let base = self
            .gens
            .iter()
            .find(|g| g.gen == from)
            .ok_or_else(|| Error::Internal("no key for a connection's generation".into()))?;
        let next = base.next()?;
        self.insert(next)
    }

    fn insert(&mut self, g: Generation) -> Result<(), Error> {
        if self.gens.len() >= MAX_GENERATIONS {
            return Err(Error::Protocol("too many key generations in use"));
        }
        self.gens.push(g);
        Ok(())
    }

    /// Drops the generations no connection uses, except the newest.
    pub fn prune(&mut self, conns: &Connections) {
        let newest = self.newest_gen();
        self.gens
            .retain(|g| g.gen == newest || conns.values().any(|c| c.recv_gen == Some(g.gen)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_upd_follows_rfc8446() {
        // The next secret is HKDF-Expand-Label(secret, "traffic upd", "",
        // 32); two sides deriving from the same secret agree, and the key
        // changes with each generation.
        let secret = Zeroizing::new(vec![7u8; 32]);
        let a = Generation::first(CipherSuite::Aes128GcmSha256, secret.clone()).unwrap();
        let b = Generation::first(CipherSuite::Aes128GcmSha256, secret).unwrap();
        let (a1, b1) = (a.next().unwrap(), b.next().unwrap());
        assert_eq!(*a1.secret, *b1.secret);
        assert_ne!(*a1.secret, *a.secret);
        let mut expected = [0u8; 32];
        hkdf_expand_label(
            CipherSuite::Aes128GcmSha256,
            &[7u8; 32],
            b"traffic upd",
            &mut expected,
        )
        .unwrap();
        assert_eq!(&a1.secret[..], &expected[..]);
        assert_eq!(a1.gen, 1);
    }
}
