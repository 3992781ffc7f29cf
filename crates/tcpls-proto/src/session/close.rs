//! Ending a session: an application's close (immediate or graceful) and a
//! failure, each of which leaves a reason behind and, where a connection is
//! left to carry it, a CLOSE frame for the peer.

use super::timers::SessionTimer;
use super::{Event, Session, State};
use crate::error::{CallError, Error, ErrorCode};
use crate::ids::Side;

/// Longest a graceful close waits for its data to be sent and
/// acknowledged before closing anyway.
const GRACEFUL_CLOSE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How the session ends, once it does.
#[derive(Debug, Default)]
pub(crate) struct Closing {
    /// Why the session ended.
    pub error: Option<Error>,
    /// A CLOSE frame (code, reason) still to send.
    pub frame: Option<(u32, Vec<u8>)>,
    /// Send the CLOSE only after stream data already queued.
    pub graceful: bool,
}

impl Session {
    /// Why the session ended, if it has.
    pub fn error(&self) -> Option<&Error> {
        self.close.error.as_ref()
    }

    /// True once the session ended and everything it still had to say
    /// (CLOSE frame, alert, close_notify) was handed to `poll_transmit`.
    pub fn is_drained(&self) -> bool {
        self.close.error.is_some() && matches!(self.state, State::Done) && self.raw_out.is_empty()
    }

    /// Closes the session: the peer gets a CLOSE frame with `code` and
    /// `reason` (plain TLS: close_notify after queued data).
    pub fn close(&mut self, code: ErrorCode, reason: &str) {
        if self.close.error.is_some() {
            return;
        }
        let e = Error::LocallyClosed {
            code,
            reason: reason.to_string(),
        };
        self.close.frame = Some((code.0, reason.as_bytes().to_vec()));
        self.retire_all_tokens();
        self.events.push_back(Event::Closed(e.clone()));
        self.close.error = Some(e);
    }

    /// Like [`Self::close`], but stream data already queued (and allowed by
    /// flow control) is sent before the CLOSE frame.
    pub fn close_gracefully(&mut self, code: ErrorCode, reason: &str) {
        if self.close.error.is_none() {
            self.close(code, reason);
            self.close.graceful = true;
            self.timers
                .set(SessionTimer::GracefulClose, self.now + GRACEFUL_CLOSE_LIMIT);
        }
    }

    /// The session's error if it ended.
    pub(crate) fn check_open(&self) -> Result<(), CallError> {
        match &self.close.error {
            Some(e) => Err(CallError::Closed(e.clone())),
            None => Ok(()),
        }
    }

    /// Server: the session's tokens will never be used; the endpoint
    /// forgets them.
    fn retire_all_tokens(&mut self) {
        if self.side == Side::Server {
            for (_, t) in std::mem::take(&mut self.paths.tokens.outstanding) {
                self.events.push_back(Event::TokenRetired(t));
            }
        }
    }

    /// Ends the session with `e`: the peer gets a CLOSE with its code
    /// unless the peer is the one who closed.
    pub(crate) fn fail(&mut self, e: Error) {
        if self.close.error.is_some() {
            if matches!(e, Error::PeerClosed { .. }) {
                // Closing already, and the peer is gone: nothing more to send.
                self.close.frame = None;
                self.state = State::Done;
            }
            return;
        }
        // A CLOSE from the peer (or our own close) is an end, not a failure.
        let what = match &e {
            Error::PeerClosed { .. } | Error::LocallyClosed { .. } => "session ended",
            _ => "session failed",
        };
        tracing::debug!(side = ?self.side, error = %e, "{what}");
        self.close.graceful = false;
        match &e {
            Error::PeerClosed { .. } => self.state = State::Done,
            _ => self.close.frame = Some((e.code().0, e.to_string().into_bytes())),
        }
        if let State::Handshake(hs) = &mut self.state {
            hs.take_output(&mut self.raw_out); // the alert, if any
            self.state = State::Done;
        }
        self.retire_all_tokens();
        self.events.push_back(Event::Closed(e.clone()));
        self.close.error = Some(e);
    }

    /// Ends the session where nothing can be sent any more (the last
    /// connection broke, keys are exhausted): no CLOSE frame.
    pub(crate) fn fail_silently(&mut self, e: Error) {
        self.fail(e);
        self.close.frame = None;
        self.state = State::Done;
    }
}
