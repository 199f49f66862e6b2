//! A mutational fuzzer on stable Rust for the inputs an attacker controls: the Logging filter
//! (parser, translator, evaluator), the SQL endpoint, the ingest decoder, the manifest loader,
//! the iptables/kmsg line parser and WAL replay ([`targets`]).
//!
//! Each target starts from real inputs (its seeds: the conformance queries, the example
//! manifests, encoded batches, WAL segments, kernel log lines) and mutates them — bit flips,
//! byte insertions and deletions, duplicated runs (deeper nesting, longer lists), splices of two
//! corpus entries, and tokens of the target's own dictionary. Without compiler coverage, the
//! feedback is the target's *outcome*: an input whose outcome (accepted, or the kind of error)
//! was never seen joins the corpus, so mutation moves on from inputs that reach new code paths.
//!
//! A *finding* is a panic (caught per input; the input is saved under the findings directory to
//! be replayed with `verdict-fuzz --replay FILE`) or a broken invariant the target checks. A
//! stack overflow or abort ends the process: the run fails loudly rather than reporting.

pub mod targets;

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What one input did.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Accepted; the string names the path (e.g. "parsed+translated").
    Accepted(String),
    /// Refused with a clear error of this kind (the error's variant or first words).
    Refused(String),
}

/// One fuzz target.
pub trait Target {
    fn name(&self) -> &'static str;
    /// Real inputs to start from.
    fn seeds(&self) -> Vec<Vec<u8>>;
    /// Tokens worth inserting (keywords, delimiters, magic numbers).
    fn dictionary(&self) -> Vec<Vec<u8>>;
    /// Runs one input. `Err` is a broken invariant (a finding), not a refused input.
    fn run(&mut self, input: &[u8]) -> Result<Outcome, String>;
    /// Inputs longer than this are cut (the targets' own limits are far below).
    fn max_len(&self) -> usize {
        64 * 1024
    }
}

/// A small, fast, seedable generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Mutates `input` in place, one to four times.
pub fn mutate(
    rng: &mut Rng,
    input: &mut Vec<u8>,
    corpus: &[Vec<u8>],
    dictionary: &[Vec<u8>],
    max_len: usize,
) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next_u64() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next_u64() as u8);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                input.drain(i..i + n);
            }
            4 if len > 0 => {
                // Duplicate a run, several times: deeper nesting, longer lists.
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                let run = input[i..i + n].to_vec();
                let most = if rng.below(8) == 0 { 2000 } else { 8 };
                let times = 1 + rng.below(most);
                let at = i + n;
                let tail = input.split_off(at);
                for _ in 0..times {
                    input.extend_from_slice(&run);
                }
                input.extend_from_slice(&tail);
            }
            5 | 6 if !dictionary.is_empty() => {
                let token = &dictionary[rng.below(dictionary.len())];
                let i = rng.below(len + 1);
                let tail = input.split_off(i);
                input.extend_from_slice(token);
                input.extend_from_slice(&tail);
            }
            7 if !corpus.is_empty() => {
                // Splice: a prefix of this input and a suffix of another.
                let other = &corpus[rng.below(corpus.len())];
                let i = rng.below(len + 1);
                let j = rng.below(other.len() + 1);
                input.truncate(i);
                input.extend_from_slice(&other[j..]);
            }
            8 if len > 0 => {
                // Interesting numbers over a byte or an ASCII number.
                const INTERESTING: [&[u8]; 8] = [
                    b"0",
                    b"-1",
                    b"4294967296",
                    b"18446744073709551615",
                    b"\xff\xff\xff\xff",
                    b"\x00",
                    b"9999999999999999999999",
                    b"1e309",
                ];
                let token = INTERESTING[rng.below(INTERESTING.len())];
                let i = rng.below(len);
                let end = (i + token.len()).min(len);
                input.splice(i..end, token.iter().copied());
            }
            _ => {}
        }
    }
    input.truncate(max_len);
}

/// Why a run stops.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub time: Duration,
    pub max_execs: u64,
}

/// One finding: the input saved, and what happened.
#[derive(Debug, Clone)]
pub struct Finding {
    pub what: String,
    pub saved: Option<PathBuf>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: &'static str,
    pub execs: u64,
    pub elapsed: Duration,
    pub corpus: usize,
    pub outcomes: usize,
    pub accepted: u64,
    pub findings: Vec<Finding>,
}

/// Runs `input` through `target`, turning a panic into a finding message.
pub fn run_one(target: &mut dyn Target, input: &[u8]) -> Result<Outcome, String> {
    match catch_unwind(AssertUnwindSafe(|| target.run(input))) {
        Ok(r) => r,
        Err(panic) => Err(format!(
            "panic: {}",
            panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(not a string)".into())
        )),
    }
}

/// Fuzzes `target` within `budget`, saving findings under `findings_dir/TARGET/`.
pub fn fuzz(
    target: &mut dyn Target,
    budget: Budget,
    seed: u64,
    findings_dir: Option<&Path>,
) -> Report {
    // Panics are findings, reported once in the table, not printed for every input.
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let dictionary = target.dictionary();
    let max_len = target.max_len();
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    let mut seen: HashSet<Outcome> = HashSet::new();
    let mut report = Report {
        target: target.name(),
        execs: 0,
        elapsed: Duration::ZERO,
        corpus: 0,
        outcomes: 0,
        accepted: 0,
        findings: Vec::new(),
    };
    let mut record = |input: &[u8],
                      result: Result<Outcome, String>,
                      corpus: &mut Vec<Vec<u8>>,
                      report: &mut Report| {
        report.execs += 1;
        match result {
            Ok(outcome) => {
                if matches!(outcome, Outcome::Accepted(_)) {
                    report.accepted += 1;
                }
                if seen.insert(outcome) {
                    corpus.push(input.to_vec());
                }
            }
            Err(what) => {
                let saved = findings_dir.and_then(|dir| save(dir, report.target, input));
                if report.findings.len() < 20 {
                    report.findings.push(Finding { what, saved });
                }
            }
        }
    };
    for s in target.seeds() {
        let r = run_one(target, &s);
        record(&s, r, &mut corpus, &mut report);
        if !corpus.iter().any(|c| c == &s) {
            corpus.push(s);
        }
    }
    while started.elapsed() < budget.time && report.execs < budget.max_execs {
        let mut input = if corpus.is_empty() {
            Vec::new()
        } else {
            corpus[rng.below(corpus.len())].clone()
        };
        mutate(&mut rng, &mut input, &corpus, &dictionary, max_len);
        let r = run_one(target, &input);
        record(&input, r, &mut corpus, &mut report);
    }
    std::panic::set_hook(previous_hook);
    report.elapsed = started.elapsed();
    report.corpus = corpus.len();
    report.outcomes = seen.len();
    report
}

fn save(dir: &Path, target: &str, input: &[u8]) -> Option<PathBuf> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    input.hash(&mut h);
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!("{:016x}", h.finish()));
    std::fs::write(&path, input).ok()?;
    Some(path)
}
