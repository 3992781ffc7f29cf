//! The delay line: packets leave in the order they came, each no earlier
//! than its arrival plus the delay.
//!
//! One constant delay makes the due times non-decreasing, so a FIFO is all
//! it takes, and it cannot reorder (netem with jitter can; this cannot, by
//! construction).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A FIFO of items, each with the instant it is due.
#[derive(Debug)]
pub struct DelayLine<T> {
    delay: Duration,
    held: VecDeque<(Instant, T)>,
}

impl<T> DelayLine<T> {
    pub fn new(delay: Duration) -> Self {
        DelayLine {
            delay,
            held: VecDeque::new(),
        }
    }

    /// Holds `item`, which arrived at `now`. Arrival instants must not go
    /// backwards (they come from one monotonic clock, read in order).
    pub fn push(&mut self, now: Instant, item: T) {
        if let Some((last, _)) = self.held.back() {
            debug_assert!(*last <= now + self.delay, "arrivals went backwards");
        }
        self.held.push_back((now + self.delay, item));
    }

    /// The oldest item if it is due at `now`, with how late it leaves
    /// (`now` minus its due instant).
    pub fn pop_due(&mut self, now: Instant) -> Option<(T, Duration)> {
        match self.held.front() {
            Some((due, _)) if *due <= now => {
                let (due, item) = self.held.pop_front()?;
                Some((item, now - due))
            }
            _ => None,
        }
    }

    /// Everything held, oldest first, due or not (for shutting down).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.held.drain(..).map(|(_, item)| item)
    }

    /// When the oldest item is due, if any is held.
    pub fn next_due(&self) -> Option<Instant> {
        self.held.front().map(|(due, _)| *due)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_in_order_after_the_delay() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut line = DelayLine::new(ms(10));
        line.push(t0, 1);
        line.push(t0 + ms(1), 2);
        line.push(t0 + ms(1), 3);
        assert_eq!(line.next_due(), Some(t0 + ms(10)));
        assert!(line.pop_due(t0 + ms(9)).is_none());
        assert_eq!(line.pop_due(t0 + ms(10)), Some((1, ms(0))));
        assert!(line.pop_due(t0 + ms(10)).is_none());
        assert_eq!(line.pop_due(t0 + ms(12)), Some((2, ms(1))));
        assert_eq!(line.pop_due(t0 + ms(12)), Some((3, ms(1))));
        assert_eq!(line.len(), 0);
        assert_eq!(line.next_due(), None);
    }

    #[test]
    fn drain_keeps_order() {
        let t0 = Instant::now();
        let mut line = DelayLine::new(Duration::from_secs(1));
        for i in 0..5 {
            line.push(t0, i);
        }
        assert_eq!(line.len(), 5);
        assert_eq!(line.drain().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        assert_eq!(line.len(), 0);
    }
}
