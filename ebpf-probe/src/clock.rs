//! Wall-clock time that follows tokio's clock, so `tokio::time::pause()` and `advance()` drive
//! every window, rate limit and interval of the agent in tests without sleeping.

use tokio::time::Instant;
use verdict_schema::Timestamp;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_wall: Timestamp,
    base: Instant,
}

impl Clock {
    /// Starts at the current wall time.
    pub fn new() -> Self {
        Clock::starting_at(Timestamp::now())
    }

    /// Starts at `wall` (tests pin the clock to known instants).
    pub fn starting_at(wall: Timestamp) -> Self {
        Clock {
            base_wall: wall,
            base: Instant::now(),
        }
    }

    pub fn now(&self) -> Timestamp {
        let elapsed = i64::try_from(self.base.elapsed().as_nanos()).unwrap_or(i64::MAX);
        Timestamp::from_unix_nanos(self.base_wall.unix_nanos().saturating_add(elapsed))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
