//! Credit-based flow control, the same at stream and session level.

use crate::error::Error;

/// What this side lets the peer send.
#[derive(Debug, Clone)]
pub struct RecvCredit {
    window: u64,
    /// Highest offset the peer may reach (last MAX_* we sent).
    advertised: u64,
    /// Highest offset received so far.
    received: u64,
    /// Bytes the application has consumed.
    consumed: u64,
}

impl RecvCredit {
    /// A credit of `window` bytes ahead of the application.
    pub fn new(window: u64) -> Self {
        Self {
            window,
            advertised: window,
            received: 0,
            consumed: 0,
        }
    }

    /// Records that the peer reached `end`; an error if that is beyond credit.
    pub fn on_receive(&mut self, end: u64, what: &'static str) -> Result<u64, Error> {
        if end > self.advertised {
            return Err(Error::FlowControl(what));
        }
        let grown = end.saturating_sub(self.received);
        self.received = self.received.max(end);
        Ok(grown)
    }

    /// Checks that growing by `n` bytes stays within credit (session level).
    pub fn on_grow(&mut self, n: u64, what: &'static str) -> Result<(), Error> {
        let end = self.received + n;
        self.on_receive(end, what).map(|_| ())
    }

    /// Records `n` consumed bytes; returns a new limit to announce when at
    /// least half the window has been used (batching MAX_* frames).
    pub fn on_consume(&mut self, n: u64) -> Option<u64> {
        self.consumed += n;
        let target = self.consumed + self.window;
        if target - self.advertised >= self.window / 2 {
            self.advertised = target;
            Some(target)
        } else {
            None
        }
    }

    /// The limit last announced.
    pub fn advertised(&self) -> u64 {
        self.advertised
    }

    /// Highest offset received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Bytes received (up to the highest offset, gaps included) and not
    /// consumed: what the window currently holds.
    pub fn outstanding(&self) -> u64 {
        self.received.saturating_sub(self.consumed)
    }
}

/// What the peer lets this side send.
#[derive(Debug, Clone)]
pub struct SendCredit {
    max: u64,
    sent: u64,
}

impl SendCredit {
    /// Initial credit from the peer's transport parameters.
    pub fn new(max: u64) -> Self {
        Self { max, sent: 0 }
    }
    /// Bytes that may be sent now.
    pub fn available(&self) -> u64 {
        self.max - self.sent
    }
    /// Records `n` bytes sent (never more than available).
    pub fn consume(&mut self, n: u64) {
        debug_assert!(n <= self.available());
        self.sent += n;
    }
    /// Raises the limit (MAX_* frames only ever raise it). True if it grew.
    pub fn raise(&mut self, max: u64) -> bool {
        let grew = max > self.max;
        self.max = self.max.max(max);
        grew
    }
    /// Bytes sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_is_enforced_and_renewed() {
        let mut c = RecvCredit::new(100);
        assert_eq!(c.on_receive(60, "s").unwrap(), 60);
        assert_eq!(c.on_receive(40, "s").unwrap(), 0);
        assert!(c.on_receive(101, "s").is_err());
        assert_eq!(c.on_consume(10), None);
        assert_eq!(c.on_consume(50), Some(160));
        assert!(c.on_receive(160, "s").is_ok());
        let mut s = SendCredit::new(10);
        s.consume(10);
        assert_eq!(s.available(), 0);
        assert!(!s.raise(5));
        assert!(s.raise(20));
        assert_eq!(s.available(), 10);
    }
}
