//! One record's plaintext while it is assembled: stream data first (the
//! receiver then hands it out from offset 0), then frame headers, then
//! control frames. What the record carries that must be replayed if it is
//! never acknowledged is collected here and recorded once, after the seal.

use bytes::Bytes;

use super::connection::Sent;
use super::transmit_buf::TransmitBuf;
use crate::ids::StreamId;
use crate::wire::frame::{stream_header, Frame};
use crate::wire::record::{HEADER_LEN, MAX_PLAINTEXT};

/// Buffers a session reuses for every record it builds (no allocation per
/// record).
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// Control frames of the record being built.
    ctl: Vec<u8>,
    /// One frame being encoded; while sealing, the plaintext after the
    /// lead bytes.
    pub frame: Vec<u8>,
    /// What the record carries for replay.
    sent: Vec<Sent>,
}

/// A record under construction at the end of a connection's output.
pub(crate) struct RecordBuilder<'a> {
    out: &'a mut TransmitBuf,
    /// Where the record (its header) starts in `out`.
    start: usize,
    /// Where its plaintext starts.
    body: usize,
    /// Stream bytes that start the record, left where they are until the
    /// seal encrypts them from there (see [`Self::put_data`]).
    lead: Option<Bytes>,
    /// Control frames, appended after the data when the record is done.
    pub ctl: Vec<u8>,
    frame: Vec<u8>,
    sent: Vec<Sent>,
    /// Keep what the record carries for replay (acknowledgements are on).
    track: bool,
    /// Streams whose last frame (FIN or RESET_STREAM) is in this record.
    pub finished: Vec<StreamId>,
    /// Most plaintext bytes of the record (see [`SMALL_RECORD`]).
    limit: usize,
}

/// Plaintext bytes of the first [`SMALL_RECORDS`] records of a connection:
/// one record per TCP segment of a 1500-byte MTU. A fresh connection's
/// first flight (ten segments) then delivers data at once, where a
/// 16 KiB record would wait for the second flight, one more round trip
/// (TLS dynamic record sizing, as in nginx's `ssl_dyn_rec`).
pub(crate) const SMALL_RECORD: usize = 1400;

/// Records of a connection that start small (about two initial windows).
pub(crate) const SMALL_RECORDS: u64 = 24;

/// A record whose plaintext is complete, ready to be sealed.
pub(crate) struct Built {
    pub start: usize,
    pub lead: Option<Bytes>,
    pub finished: Vec<StreamId>,
}

impl<'a> RecordBuilder<'a> {
    /// Starts a record at the end of `out` (room for its header first).
    /// `limit`: most plaintext bytes (`MAX_PLAINTEXT`, or less).
    pub fn new(out: &'a mut TransmitBuf, scratch: Scratch, track: bool, limit: usize) -> Self {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        let body = out.len();
        let Scratch {
            mut ctl,
            frame,
            mut sent,
        } = scratch;
        ctl.clear();
        sent.clear();
        Self {
            out,
            start,
            body,
            lead: None,
            ctl,
            frame,
            sent,
            track,
            finished: Vec::new(),
            limit: limit.min(MAX_PLAINTEXT),
        }
    }

    /// Plaintext bytes still free in the record.
    pub fn room(&self) -> usize {
        // Control frames may fill a small record (they are bounded on
        // their own): no room for data then.
        self.limit
            .saturating_sub(self.out.len() - self.body + self.ctl.len())
    }

    /// Stream bytes put in the record so far and kept for replay.
    pub fn tracked_bytes(&self) -> u64 {
        self.sent
            .iter()
            .map(|s| match s {
                Sent::Stream { data, .. } => data.len() as u64,
                Sent::Reset { .. } => 0,
            })
            .sum()
    }

    /// True when nothing was put in the record.
    pub fn is_empty(&self) -> bool {
        self.out.len() == self.body && self.ctl.is_empty()
    }

    /// Puts stream bytes into the record. The first piece is not copied:
    /// `out` gets room for it and the seal encrypts it straight from the
    /// send buffer (`lead`), reading the bulk of the bytes once instead of
    /// copying them and encrypting the copy. A second piece in the same
    /// record (bytes straddling two send blocks, or another stream) is
    /// copied, and the first then too, so the plaintext after the lead
    /// stays a few header bytes.
    pub fn put_data(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        if self.out.len() == self.body && self.lead.is_none() {
            self.out.grow(data.len());
            self.lead = Some(data);
        } else {
            if let Some(l) = self.lead.take() {
                self.out[self.body..self.body + l.len()].copy_from_slice(&l);
            }
            self.out.extend_from_slice(&data);
        }
    }

    /// Puts the header of a STREAM frame whose data was put just before.
    pub fn put_stream_header(&mut self, id: StreamId, offset: u64, len: usize, fin: bool) {
        self.out
            .extend_from_slice(&stream_header(id, offset, len as u16, fin));
    }

    /// Puts one STREAM frame and keeps its bytes for replay.
    pub fn put_stream(&mut self, id: StreamId, offset: u64, data: Bytes, fin: bool) {
        let len = data.len();
        if self.track {
            let data = data.clone();
            self.sent.push(Sent::Stream {
                id,
                offset,
                data,
                fin,
            });
        }
        self.put_data(data);
        self.put_stream_header(id, offset, len, fin);
    }

    /// Puts a RESET_STREAM frame and keeps it for replay.
    pub fn put_reset(&mut self, id: StreamId, code: u32, final_size: u64) {
        self.put_frame(Frame::ResetStream {
            id,
            code,
            final_size,
        });
        if self.track {
            self.sent.push(Sent::Reset {
                id,
                code,
                final_size,
            });
        }
    }

    /// Puts a frame among the record's data (not a control frame).
    pub fn put_frame(&mut self, frame: Frame<'_>) {
        self.frame.clear();
        frame.encode(&mut self.frame);
        self.out.extend_from_slice(&self.frame);
    }

    /// Appends the control frames; gives back the record to seal and the
    /// scratch buffers (whose sent items are recorded once it is sealed).
    pub fn finish(self) -> (Built, Scratch) {
        self.out.extend_from_slice(&self.ctl);
        self.into_parts()
    }

    /// Drops the record (nothing to send): `out` is as before.
    pub fn abandon(self) -> Scratch {
        self.out.truncate(self.start);
        self.into_parts().1
    }

    fn into_parts(self) -> (Built, Scratch) {
        let built = Built {
            start: self.start,
            lead: self.lead,
            finished: self.finished,
        };
        let scratch = Scratch {
            ctl: self.ctl,
            frame: self.frame,
            sent: self.sent,
        };
        (built, scratch)
    }
}

impl Scratch {
    /// What the last record carried for replay, to record as sent.
    pub fn sent_mut(&mut self) -> &mut Vec<Sent> {
        &mut self.sent
    }
}
