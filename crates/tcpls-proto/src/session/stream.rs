//! Per-stream state: the send queue with its credit and the receive
//! reassembly with its window.

use crate::ids::ConnectionId;
use crate::session::assembler::Assembler;
use crate::session::flow::{RecvCredit, SendCredit};
use crate::session::send_buffer::SendBuffer;

/// The sending half of a stream.
#[derive(Debug)]
pub(crate) struct SendState {
    /// Bytes written by the application and not yet put in a record.
    pub unsent: SendBuffer,
    /// Offset of the first byte of `unsent`.
    pub offset: u64,
    pub credit: SendCredit,
    /// The application finished the stream.
    pub fin_queued: bool,
    pub fin_sent: bool,
    /// A RESET_STREAM to send (code).
    pub reset: Option<u32>,
    pub reset_sent: bool,
    /// The application's last write found the send buffer full.
    pub blocked: bool,
}

impl SendState {
    pub fn new(credit: u64) -> Self {
        Self {
            unsent: SendBuffer::default(),
            offset: 0,
            credit: SendCredit::new(credit),
            fin_queued: false,
            fin_sent: false,
            reset: None,
            reset_sent: false,
            blocked: false,
        }
    }

    /// True once nothing more will ever be sent.
    pub fn is_done(&self) -> bool {
        self.fin_sent || self.reset_sent
    }

    /// True when a record could carry something of this stream now (given
    /// session credit `session_avail`).
    pub fn wants_send(&self, session_avail: u64) -> bool {
        if self.reset.is_some() && !self.reset_sent {
            return true;
        }
        if self.is_done() || self.reset.is_some() {
            return false;
        }
        let can_data = !self.unsent.is_empty() && self.credit.available() > 0 && session_avail > 0;
        can_data || (self.fin_queued && self.unsent.is_empty())
    }
}

/// The receiving half of a stream.
#[derive(Debug)]
pub(crate) struct RecvState {
    pub asm: Assembler,
    pub credit: RecvCredit,
    /// Final size, once a FIN or RESET_STREAM told it.
    pub final_size: Option<u64>,
    /// The peer reset the stream with this code.
    pub reset: Option<u32>,
    /// The application saw the end (FIN or reset) of the stream.
    pub done: bool,
}

impl RecvState {
    pub fn new(window: u64) -> Self {
        Self {
            asm: Assembler::default(),
            credit: RecvCredit::new(window),
            final_size: None,
            reset: None,
            done: false,
        }
    }

    /// Plain TLS stream 0 may take more bytes: what its reassembly holds
    /// (counted as memory) is under `window`. The one test for both
    /// `recv_fallback` and `wants_input`, so the runtime stops reading the
    /// socket exactly when the session stops taking its bytes.
    pub fn has_room(&self, window: u64) -> bool {
        (self.asm.held() as u64) < window
    }

    /// All data up to the FIN has been read by the application.
    pub fn at_fin(&self) -> bool {
        self.final_size == Some(self.asm.read_offset())
    }
}

/// One bidirectional stream.
#[derive(Debug)]
pub(crate) struct Stream {
    pub send: SendState,
    pub recv: RecvState,
    /// Queued on the session's send rotation.
    pub in_send_queue: bool,
    /// A MAX_STREAM_DATA for this stream is waiting to be sent.
    pub max_data_pending: bool,
    /// Connection this side sends the stream's data on.
    pub conn: ConnectionId,
    /// Steered to `conn` (by the application, or by the peer's
    /// STREAM_CHANGE): the scheduler does not spread it over other
    /// connections.
    pub pinned: bool,
    /// A STREAM_CHANGE for this stream is queued.
    pub change_pending: bool,
}

impl Stream {
    pub fn new(send_credit: u64, recv_window: u64, conn: ConnectionId) -> Self {
        Self {
            send: SendState::new(send_credit),
            recv: RecvState::new(recv_window),
            in_send_queue: false,
            max_data_pending: false,
            conn,
            pinned: false,
            change_pending: false,
        }
    }

    /// Both directions finished and observed: the state can be dropped.
    pub fn is_closed(&self) -> bool {
        self.send.is_done() && self.recv.done && !self.max_data_pending
    }
}
