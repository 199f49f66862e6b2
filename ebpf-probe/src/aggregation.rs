//! Deny aggregation: denied connections with the same src_ip, dest_ip, dest_port, protocol and
//! direction within `window` (5 s) of the first become one record with the first attempt's
//! timestamp and src_port and `count` = attempts, emitted when the window closes. The table is
//! bounded; a deny that finds it full is refused (the caller drops and counts it).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;

use verdict_schema::{Direction, PolicyActionRecord, Protocol, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    src_ip: IpAddr,
    dest_ip: IpAddr,
    dest_port: u16,
    protocol: Protocol,
    direction: Direction,
}

impl Key {
    fn of(r: &PolicyActionRecord) -> Self {
        Key {
            src_ip: r.connection.src_ip,
            dest_ip: r.connection.dest_ip,
            dest_port: r.connection.dest_port,
            protocol: r.connection.protocol.clone(),
            direction: r.connection.direction,
        }
    }
}

/// What [`DenyAggregator::add`] did with a record.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    /// Folded into an open window.
    Aggregated,
    /// Opened a new window. If an older window of the same key had to close first (the new
    /// attempt is past its end before a tick closed it), that record is returned for emission.
    Opened { closed: Option<PolicyActionRecord> },
    /// The table is full: the record was not taken.
    Overflow(PolicyActionRecord),
}

#[derive(Debug)]
pub struct DenyAggregator {
    window_nanos: i64,
    max_entries: usize,
    open: HashMap<Key, PolicyActionRecord>,
    /// (deadline, first timestamp, key) — stale entries are skipped on pop.
    deadlines: BinaryHeap<Reverse<(i64, i64, KeyOrd)>>,
}

/// Keys ordered only for heap tie-breaking.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyOrd(Key);

impl PartialOrd for KeyOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyOrd {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let a = &self.0;
        let b = &other.0;
        (a.src_ip, a.dest_ip, a.dest_port, &a.protocol, a.direction).cmp(&(
            b.src_ip,
            b.dest_ip,
            b.dest_port,
            &b.protocol,
            b.direction,
        ))
    }
}

impl DenyAggregator {
    pub fn new(window: std::time::Duration, max_entries: usize) -> Self {
        DenyAggregator {
            window_nanos: i64::try_from(window.as_nanos()).unwrap_or(i64::MAX),
            max_entries,
            open: HashMap::new(),
            deadlines: BinaryHeap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub fn add(&mut self, record: PolicyActionRecord) -> Added {
        let key = Key::of(&record);
        let ts = record.timestamp.unix_nanos();
        if let Some(open) = self.open.get_mut(&key) {
            let first = open.timestamp.unix_nanos();
            if ts >= first && ts < first.saturating_add(self.window_nanos) {
                open.count += record.count;
                return Added::Aggregated;
            }
            if ts >= first {
                // Past the window: close it now, open a new one.
                let closed = self.open.remove(&key);
                self.insert(key, record);
                return Added::Opened { closed };
            }
            // An attempt older than the open window's first (reordered events): count it in.
            open.count += record.count;
            return Added::Aggregated;
        }
        if self.open.len() >= self.max_entries {
            return Added::Overflow(record);
        }
        self.insert(key, record);
        Added::Opened { closed: None }
    }

    fn insert(&mut self, key: Key, record: PolicyActionRecord) {
        let first = record.timestamp.unix_nanos();
        self.deadlines.push(Reverse((
            first.saturating_add(self.window_nanos),
            first,
            KeyOrd(key.clone()),
        )));
        self.open.insert(key, record);
    }

    /// Removes and returns the records whose window has closed by `now`, oldest deadline first.
    pub fn expire(&mut self, now: Timestamp, out: &mut Vec<PolicyActionRecord>) {
        let now = now.unix_nanos();
        while let Some(Reverse((deadline, first, _))) = self.deadlines.peek() {
            if *deadline > now {
                break;
            }
            let (first, Reverse((_, _, KeyOrd(key)))) =
                (*first, self.deadlines.pop().expect("peeked"));
            // Skip heap entries of windows that were closed early and replaced.
            if self
                .open
                .get(&key)
                .is_some_and(|r| r.timestamp.unix_nanos() == first)
            {
                out.extend(self.open.remove(&key));
            }
        }
    }

    /// Removes every open window (shutdown: nothing is lost).
    pub fn drain(&mut self, out: &mut Vec<PolicyActionRecord>) {
        self.deadlines.clear();
        let mut all: Vec<PolicyActionRecord> = self.open.drain().map(|(_, r)| r).collect();
        all.sort_by_key(|r| r.timestamp);
        out.extend(all);
    }
}
