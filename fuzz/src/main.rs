//! `verdict-fuzz`: runs the fuzz targets for a while each and prints a table (target,
//! executions, executions per second, corpus, distinct outcomes, findings). Exit status 1 when
//! anything was found; the inputs are saved under `--findings`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "verdict-fuzz", about = "Fuzz Verdict's parsers and decoders")]
struct Args {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The generator's seed (a run is repeatable given the seed and the executions).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where inputs that found something are saved (one folder per target).
    #[arg(long, default_value = "fuzz-findings")]
    findings: PathBuf,
    /// Run this saved input through its target (the folder name) and print the outcome.
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
    /// Targets to run (default: all): filter, sql, ingest, manifests, iptables, wal.
    targets: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut targets = verdict_fuzz::targets::all();
    if let Some(file) = &args.replay {
        let input = std::fs::read(file)?;
        let name = file
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let target = targets
            .iter_mut()
            .find(|t| t.name() == name)
            .ok_or_else(|| anyhow::anyhow!("{}: its folder names no target", file.display()))?;
        println!("{:?}", verdict_fuzz::run_one(target.as_mut(), &input));
        return Ok(());
    }
    let known: Vec<&str> = targets.iter().map(|t| t.name()).collect();
    for t in &args.targets {
        anyhow::ensure!(
            known.contains(&t.as_str()),
            "unknown target {t}: one of {known:?}"
        );
    }
    println!("| target | executions | per second | corpus | distinct outcomes | findings |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut found = 0;
    for target in targets.iter_mut() {
        if !args.targets.is_empty() && !args.targets.iter().any(|t| t == target.name()) {
            continue;
        }
        let budget = verdict_fuzz::Budget {
            time: Duration::from_secs(args.seconds),
            max_execs: u64::MAX,
        };
        let r = verdict_fuzz::fuzz(target.as_mut(), budget, args.seed, Some(&args.findings));
        println!(
            "| {} | {} | {:.0} | {} | {} | {} |",
            r.target,
            r.execs,
            r.execs as f64 / r.elapsed.as_secs_f64(),
            r.corpus,
            r.outcomes,
            r.findings.len()
        );
        for f in &r.findings {
            eprintln!("{}: {} (saved: {:?})", r.target, f.what, f.saved);
        }
        found += r.findings.len();
    }
    if found > 0 {
        std::process::exit(1);
    }
    Ok(())
}
