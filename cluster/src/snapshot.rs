//! Policy generations: each cluster-state change compiles a new engine with a higher generation.
//! Datapaths decide with the current one; the pipeline keeps superseded ones for a grace period
//! so late events are judged and attributed with the state they were decided under.

use std::collections::VecDeque;
use std::sync::Arc;

use verdict_policy::Engine;
use verdict_schema::Timestamp;

/// One compiled policy state.
#[derive(Debug)]
pub struct PolicySnapshot {
    pub generation: u64,
    pub engine: Engine,
}

/// The current generation and the superseded ones still within their grace period.
#[derive(Debug)]
pub struct Generations {
    current: Arc<PolicySnapshot>,
    retired: VecDeque<(Arc<PolicySnapshot>, Timestamp)>,
    grace_nanos: i64,
}

impl Generations {
    pub fn new(current: Arc<PolicySnapshot>, grace: std::time::Duration) -> Self {
        Generations {
            current,
            retired: VecDeque::new(),
            grace_nanos: i64::try_from(grace.as_nanos()).unwrap_or(i64::MAX),
        }
    }

    pub fn current(&self) -> &Arc<PolicySnapshot> {
        &self.current
    }

    /// Makes `next` current; the previous one is kept until `now + grace`.
    pub fn install(&mut self, next: Arc<PolicySnapshot>, now: Timestamp) {
        if next.generation == self.current.generation {
            return;
        }
        let prev = std::mem::replace(&mut self.current, next);
        self.retired.push_back((prev, now));
        self.expire(now);
    }

    /// Forgets generations retired more than the grace period ago.
    pub fn expire(&mut self, now: Timestamp) {
        while let Some((_, at)) = self.retired.front() {
            if now.unix_nanos().saturating_sub(at.unix_nanos()) > self.grace_nanos {
                self.retired.pop_front();
            } else {
                break;
            }
        }
    }

    /// The snapshot of `generation`, if still known.
    pub fn get(&self, generation: u64) -> Option<&Arc<PolicySnapshot>> {
        if self.current.generation == generation {
            return Some(&self.current);
        }
        self.retired
            .iter()
            .rev()
            .map(|(s, _)| s)
            .find(|s| s.generation == generation)
    }
}
