//! A short, repeatable run of every fuzz target (a fixed seed and a fixed number of executions,
//! so CI sees the same inputs every time): nothing may panic or break a target's invariant.
//! Long runs: `bash load-tests/fuzz.sh`.

use std::time::Duration;

fn short_run(mut target: Box<dyn verdict_fuzz::Target>, execs: u64) {
    let budget = verdict_fuzz::Budget {
        time: Duration::from_secs(600),
        max_execs: execs,
    };
    let r = verdict_fuzz::fuzz(target.as_mut(), budget, 1, None);
    eprintln!(
        "{}: {} executions in {:.1}s, corpus {}, {} outcomes, {} accepted",
        r.target,
        r.execs,
        r.elapsed.as_secs_f64(),
        r.corpus,
        r.outcomes,
        r.accepted
    );
    assert!(r.execs >= execs, "{}: ran {} of {execs}", r.target, r.execs);
    assert!(
        r.outcomes >= 2,
        "{}: the inputs reached one outcome only",
        r.target
    );
    assert!(
        r.accepted > 0,
        "{}: nothing was accepted (the seeds are broken)",
        r.target
    );
    assert!(r.findings.is_empty(), "{}: {:#?}", r.target, r.findings);
}

#[test]
fn filter() {
    short_run(Box::new(verdict_fuzz::targets::FilterTarget::new()), 20_000);
}

#[test]
fn sql() {
    short_run(Box::new(verdict_fuzz::targets::SqlTarget::new()), 1_500);
}

#[test]
fn ingest() {
    short_run(Box::new(verdict_fuzz::targets::IngestTarget::new()), 20_000);
}

#[test]
fn manifests() {
    short_run(Box::new(verdict_fuzz::targets::ManifestTarget), 5_000);
}

#[test]
fn iptables() {
    short_run(Box::new(verdict_fuzz::targets::IptablesTarget), 50_000);
}

#[test]
fn wal() {
    short_run(Box::new(verdict_fuzz::targets::WalTarget::new()), 10_000);
}
