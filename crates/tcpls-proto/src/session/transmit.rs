//! The output path: what goes out on a connection, record by record. A
//! record is built by [`Session::build_record`] from, in order, the CLOSE
//! (alone), ACKs and probes, pending control frames, replayed data of
//! failed connections and the streams' turn, then sealed; what it carries
//! for replay is recorded once it is sealed.

use super::pending::Limits;
use super::record_builder::{RecordBuilder, SMALL_RECORD, SMALL_RECORDS};
use super::timers::{ConnTimer, SessionTimer};
use super::transmit_buf::TransmitBuf;
use super::{Session, State};
use crate::error::{CallError, Error};
use crate::ids::ConnectionId;
use crate::wire::frame::Frame;
use crate::wire::record::{ContentType, MAX_PLAINTEXT, TAG_LEN};

impl Session {
    /// Appends bytes to send on connection `conn` to `out`, at most about
    /// `max` bytes (whole records). Returns the number of bytes appended.
    pub fn poll_transmit(
        &mut self,
        conn: ConnectionId,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<usize, CallError> {
        let mut buf = TransmitBuf::from(std::mem::take(out));
        let r = self.poll_transmit_buf(conn, &mut buf, max);
        *out = buf.into_vec();
        r
    }

    /// [`Self::poll_transmit`] into a [`TransmitBuf`], which a writer keeps
    /// from one call to the next: records are then encrypted straight into
    /// its memory, with no zeroing first.
    pub fn poll_transmit_buf(
        &mut self,
        conn: ConnectionId,
        out: &mut TransmitBuf,
        max: usize,
    ) -> Result<usize, CallError> {
        let Some(c) = self.paths.conns.get(&conn) else {
            return Err(CallError::Usage("unknown connection id"));
        };
        if !c.can_send() {
            return Ok(0);
        }
        let start = out.len();
        if conn == self.paths.primary {
            out.extend_from_slice(&self.raw_out);
            self.raw_out.clear();
        }
        if self.early_wants_transmit() {
            if let Err(e) = self.write_early_units() {
                self.fail_silently(e);
            }
        }
        match &mut self.state {
            State::Handshake(hs) => {
                let flight = &mut self.scratch.frame;
                flight.clear();
                hs.take_output(flight);
                out.extend_from_slice(flight);
            }
            State::Fallback(_) => self.transmit_fallback(out, start + max),
            State::Tcpls(_) => {
                while out.len() - start < max {
                    match self.build_record(conn, out) {
                        Ok(true) => {}
                        Ok(false) => break,
                        // Nothing more can be sealed (key limit, AEAD
                        // failure): end without a CLOSE.
                        Err(e) => {
                            self.fail_silently(e);
                            break;
                        }
                    }
                }
            }
            State::Done => {}
        }
        Ok(out.len() - start)
    }

    /// True if `poll_transmit` would produce bytes now.
    pub fn has_transmit(&self) -> bool {
        if !self.raw_out.is_empty() {
            return true;
        }
        match &self.state {
            State::Handshake(hs) => hs.has_output() || self.early_wants_transmit(),
            State::Done => false,
            State::Fallback(fb) => {
                fb.has_output() || self.close.frame.is_some() || !self.streams.send_queue.is_empty()
            }
            State::Tcpls(_) => {
                self.close.frame.is_some()
                    || !self.recovery.replay.is_empty()
                    || self
                        .paths
                        .conns
                        .values()
                        .any(|c| c.ack_due || c.ping_due || c.challenge_due() || c.key_update_due)
                    || !self.pending.is_empty()
                    || !self.options.is_empty()
                    || self.streams.data_sendable()
            }
        }
    }

    /// Plain TLS: stream 0's bytes go through OpenSSL's record layer.
    fn transmit_fallback(&mut self, out: &mut TransmitBuf, limit: usize) {
        let State::Fallback(fb) = &mut self.state else {
            return;
        };
        let mut err = None;
        let st = &mut self.streams;
        while let Some(&id) = st.send_queue.front() {
            let Some(s) = st.map.get_mut(&id) else {
                st.send_queue.pop_front();
                continue;
            };
            if out.len() >= limit {
                break;
            }
            if !s.send.unsent.is_empty() {
                let front = s.send.unsent.front();
                let n = front.len().min(MAX_PLAINTEXT);
                match fb.write(&front[..n]) {
                    Ok(w) => {
                        s.send.unsent.advance(w, &mut st.block_pool);
                        // The writers are woken below in any case.
                        let _ = st.budget.dequeued(w, self.cfg.session_send_buffer);
                        s.send.offset += w as u64;
                    }
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
                fb.take_output_buf(out);
                continue;
            }
            st.send_queue.pop_front();
            s.in_send_queue = false;
            if s.send.fin_queued && !s.send.fin_sent {
                s.send.fin_sent = true;
                fb.shutdown();
            }
        }
        if self.close.frame.is_some() && st.send_queue.is_empty() {
            self.close.frame = None;
            fb.shutdown();
        }
        fb.take_output_buf(out);
        self.wake_writers();
        if let Some(e) = err {
            self.fail(e);
        }
        if self.close.error.is_some() && self.close.frame.is_none() {
            self.state = State::Done;
        }
    }

    /// Builds and seals one record; false when there was nothing to send.
    fn build_record(&mut self, conn: ConnectionId, out: &mut TransmitBuf) -> Result<bool, Error> {
        let State::Tcpls(keys) = &mut self.state else {
            return Ok(false);
        };
        if keys.send.update_due(&self.paths.conns) {
            keys.send.update(&mut self.paths.conns)?;
        }
        let new_gen = keys.send.current.gen;
        let Some(c) = self.paths.conns.get(&conn) else {
            return Ok(false);
        };
        let seq = c.send_seq;
        // This record announces the new key generation: sealed with the
        // old one, the connection's next records use the new one.
        let announce = c.key_update_due;
        // A graceful CLOSE waits until everything is out and, with
        // acknowledgements, acknowledged: the peer drops whatever arrives
        // after it, on any connection. Records of this very connection
        // need no ACK first: TCP delivers them before the CLOSE.
        let flush_first = self.close.graceful
            && (self.streams.data_sendable()
                || self.recovery.has_unacked(&self.paths.conns, Some(conn)));
        if let Some(close) = self.close.frame.take_if(|_| !flush_first) {
            return self.write_close(conn, out, close);
        }
        if self.close.error.is_some() && !flush_first {
            self.state = State::Done;
            return Ok(false);
        }
        let scratch = std::mem::take(&mut self.scratch);
        let limit = if seq < SMALL_RECORDS {
            SMALL_RECORD
        } else {
            MAX_PLAINTEXT
        };
        let mut rb = RecordBuilder::new(out, scratch, self.recovery.enabled, limit);
        // Control frames go to their own buffer so stream data can lead
        // the record (the receiver then hands it out from offset 0).
        self.write_control_frames(conn, seq, &mut rb.ctl);
        if announce {
            Frame::KeyUpdate { gen: new_gen }.encode(&mut rb.ctl);
        }
        if self
            .paths
            .conns
            .get(&conn)
            .is_some_and(|c| c.carries_data())
        {
            self.write_replay(&mut rb);
        }
        self.write_stream_frames(conn, &mut rb);
        if rb.is_empty() {
            self.scratch = rb.abandon();
            return Ok(false);
        }
        // A record goes out anyway: acknowledge what arrived so far on
        // every connection, sparing the peer a record of its own later.
        let room = rb.room() + rb.ctl.len();
        super::recovery::encode_acks(&mut self.paths.conns, conn, &mut rb.ctl, room, |c| {
            c.ack_records > 0 || c.ack_due
        });
        // Likewise the join tokens not yet due (on the connection that
        // carries control frames).
        if !self.pending.new_tokens.is_empty()
            && conn == self.paths.control_connection(self.paths.primary)
        {
            let limit = (rb.room() + rb.ctl.len()).min(super::pending::CONTROL_LIMIT);
            self.pending.write_tokens(&mut rb.ctl, limit);
        }
        if self.pending.new_tokens.is_empty() {
            self.timers.stop(SessionTimer::Tokens);
        }
        let (built, scratch) = rb.finish();
        self.scratch = scratch;
        for id in built.finished {
            self.maybe_remove(id);
        }
        self.seal_record(conn, out, built.start, built.lead.as_deref())?;
        let stall_after = self.stall_limit(conn);
        if let Some(c) = self.paths.conns.get_mut(&conn) {
            let first = c.sent_at.is_empty();
            self.recovery
                .record_sent(c, seq, self.scratch.sent_mut(), self.now);
            if first && !c.sent_at.is_empty() {
                super::recovery::arm_silence(c, self.cfg.ack_delay);
            }
            if let Some(limit) = stall_after {
                if !c.unacked.is_empty() && c.timers.get(ConnTimer::Stall).is_none() {
                    c.timers.set(ConnTimer::Stall, self.now + limit);
                }
            }
            if announce {
                // The previous key is dropped by `update_due` once no
                // connection uses it.
                c.key_update_due = false;
                c.send_gen = new_gen;
            }
        }
        Ok(true)
    }

    /// ACKs, the keepalive PING and the pending control frames.
    fn write_control_frames(&mut self, conn: ConnectionId, seq: u64, ctl: &mut Vec<u8>) {
        self.write_recovery_frames(conn, seq, ctl);
        if conn != self.paths.control_connection(self.paths.primary) {
            // Credit and the rest wait for the fastest connection: on a
            // slow one they would hold the peer back (or, as a bulk
            // sender's credit, keep it from using its slow paths at all).
            self.pending
                .write_stream_changes(ctl, conn, &mut self.streams.map);
            let max_data = self.streams.recv_credit.advertised();
            self.pending
                .write_credit_copies(ctl, &self.streams.map, max_data);
            return;
        }
        let limits = Limits {
            max_data: self.streams.recv_credit.advertised(),
            max_streams: self.streams.peer_limit,
        };
        if self.pending.max_streams {
            // Written first by `write_control_frames`, always.
            self.streams.peer_limit_sent = limits.max_streams;
        }
        let credited = self
            .pending
            .write_control_frames(ctl, conn, &mut self.streams.map, limits);
        self.options
            .write_frames(ctl, super::pending::CONTROL_LIMIT);
        for id in credited {
            self.maybe_remove(id);
        }
    }

    /// A record with the CLOSE frame alone: the last this side sends.
    fn write_close(
        &mut self,
        conn: ConnectionId,
        out: &mut TransmitBuf,
        (code, reason): (u32, Vec<u8>),
    ) -> Result<bool, Error> {
        let scratch = std::mem::take(&mut self.scratch);
        let mut rb = RecordBuilder::new(out, scratch, false, MAX_PLAINTEXT);
        rb.put_frame(Frame::Close {
            code,
            reason: &reason,
        });
        let (built, scratch) = rb.finish();
        self.scratch = scratch;
        self.seal_record(conn, out, built.start, None)?;
        self.state = State::Done;
        Ok(true)
    }

    /// Seals `plaintext` as one record and queues it, bypassing the frame
    /// encoder. Only for tests that play a misbehaving peer.
    #[cfg(feature = "testing")]
    pub fn send_raw_record_for_testing(&mut self, plaintext: &[u8]) -> Result<(), CallError> {
        use crate::wire::record::HEADER_LEN;
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(CallError::Usage("record plaintext too long"));
        }
        if !self.paths.conns.contains_key(&self.paths.primary) {
            return Err(CallError::Usage("unknown connection id"));
        }
        let mut out = TransmitBuf::from(vec![0; HEADER_LEN]);
        out.extend_from_slice(plaintext);
        self.seal_record(self.paths.primary, &mut out, 0, None)?;
        self.raw_out.extend_from_slice(&out);
        Ok(())
    }

    /// Seals the record at `out[start..]`; with `lead`, its content starts
    /// with those bytes and `out` holds only room for them.
    pub(crate) fn seal_record(
        &mut self,
        conn: ConnectionId,
        out: &mut TransmitBuf,
        start: usize,
        lead: Option<&[u8]>,
    ) -> Result<(), Error> {
        let State::Tcpls(keys) = &mut self.state else {
            return Err(Error::Internal("seal outside TCPLS mode".into()));
        };
        let c = self
            .paths
            .conns
            .get_mut(&conn)
            .ok_or_else(|| Error::Internal("seal on an unknown connection".into()))?;
        out.push(ContentType::ApplicationData.into());
        out.grow(TAG_LEN);
        let record = &mut out[start..];
        let trailer = &mut self.scratch.frame;
        let sealed = keys.send.seal_key(c.send_gen).and_then(|key| match lead {
            Some(lead) => key.seal_with_lead(conn, c.send_seq, lead, record, trailer),
            None => key.seal_in_place(conn, c.send_seq, record),
        });
        if let Err(e) = sealed {
            out.truncate(start); // never let plaintext reach the wire
            return Err(e);
        }
        c.send_seq += 1;
        Ok(())
    }
}
