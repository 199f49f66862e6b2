//! The per-node log rate limit: at most `limit` records in any one-second window, with no burst
//! allowance beyond that (GKE: "a node can log up to 500 connections per second before it starts
//! dropping logs"). A sliding window of the last `limit` emission times makes this exact: a
//! record is admitted only if fewer than `limit` were admitted in the preceding second.

use std::collections::VecDeque;

use verdict_schema::Timestamp;

const WINDOW_NANOS: i64 = 1_000_000_000;

#[derive(Debug)]
pub struct RateLimiter {
    limit: usize,
    admitted: VecDeque<i64>,
}

impl RateLimiter {
    /// `limit` records per second; 0 means unlimited.
    pub fn new(limit: u32) -> Self {
        RateLimiter {
            limit: limit as usize,
            admitted: VecDeque::with_capacity((limit as usize).min(65_536)),
        }
    }

    /// Whether a record emitted at `now` may be written.
    pub fn admit(&mut self, now: Timestamp) -> bool {
        if self.limit == 0 {
            return true;
        }
        let now = now.unix_nanos();
        while self
            .admitted
            .front()
            .is_some_and(|&t| t <= now - WINDOW_NANOS)
        {
            self.admitted.pop_front();
        }
        if self.admitted.len() < self.limit {
            self.admitted.push_back(now);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_nanos(ms * 1_000_000)
    }

    #[test]
    fn at_most_limit_in_any_second() {
        let mut r = RateLimiter::new(3);
        assert!(r.admit(at(0)) && r.admit(at(100)) && r.admit(at(200)));
        assert!(!r.admit(at(300)), "fourth within the second");
        assert!(!r.admit(at(999)));
        assert!(r.admit(at(1000)), "the first has left the window");
        assert!(!r.admit(at(1050)));
        assert!(r.admit(at(1100)));
    }

    #[test]
    fn no_burst_credit_accumulates() {
        let mut r = RateLimiter::new(2);
        // A long quiet period does not allow more than the limit at once.
        assert!(r.admit(at(10_000)) && r.admit(at(10_000)));
        assert!(!r.admit(at(10_001)));
    }

    #[test]
    fn zero_is_unlimited() {
        let mut r = RateLimiter::new(0);
        assert!((0..10_000).all(|_| r.admit(at(0))));
    }
}
