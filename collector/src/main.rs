//! `verdict-collector`: runs the collector with one TOML configuration file (or none: every
//! setting has a default that works on one machine) and `VERDICT_COLLECTOR__*` overrides.

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "verdict-collector", version, about)]
struct Args {
    /// Configuration file (TOML). Every setting is optional; see collector.example.toml.
    #[arg(long, env = "VERDICT_COLLECTOR_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> std::process::ExitCode {
    verdict_service::logging::init("info");
    let args = Args::parse();
    let config = match verdict_collector::Config::load(args.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("verdict-collector: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if args.print_config {
        println!("{config:#?}");
        return std::process::ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("verdict-collector: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config, args.config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("verdict-collector: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{msg}");
            let code = match e {
                verdict_collector::Error::Config(_) | verdict_collector::Error::Setting { .. } => 2,
                _ => 1,
            };
            std::process::ExitCode::from(code)
        }
    }
}

/// Binds, opens the collector (recovering what a previous run left), announces the bound
/// addresses on stdout (ports may be 0 in the configuration), serves until SIGINT/SIGTERM and
/// flushes. On SIGHUP the configuration file is read again and its `[[sinks]]` applied (other
/// settings need a restart).
async fn serve(
    config: verdict_collector::Config,
    path: Option<PathBuf>,
) -> verdict_collector::Result<()> {
    // Signal handlers first: a stop request that comes early is never fatal.
    let shutdown = verdict_service::shutdown::on_signals()
        .map_err(|e| verdict_collector::Error::io("installing signal handlers", e))?;
    let listeners = verdict_collector::Listeners::bind(&config).await?;
    let addrs = (listeners.grpc.local_addr(), listeners.http.local_addr());
    let (collector, recovery) = verdict_collector::Collector::open(config).await?;
    let collector = std::sync::Arc::new(collector);
    #[cfg(unix)]
    let reloader = {
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        tokio::spawn(reload_sinks_on_sighup(
            std::sync::Arc::clone(&collector),
            path,
            hup,
        ))
    };
    #[cfg(not(unix))]
    let _ = path;
    if let (Ok(g), Ok(h)) = addrs {
        println!("verdict-collector listening grpc={g} http={h}");
    }
    tracing::info!(?recovery, "ready");
    let result = collector.run(listeners, shutdown).await;
    #[cfg(unix)]
    reloader.abort();
    result
}

/// Re-reads the configuration file on every SIGHUP and applies its sinks. A file that no longer
/// loads keeps the running sinks (the error is logged); a bad sink is rejected by name.
#[cfg(unix)]
async fn reload_sinks_on_sighup(
    collector: std::sync::Arc<verdict_collector::Collector>,
    path: Option<PathBuf>,
    hup: std::io::Result<tokio::signal::unix::Signal>,
) {
    let Ok(mut hup) = hup else {
        tracing::warn!("cannot listen for SIGHUP; sinks are not reloadable");
        return;
    };
    while hup.recv().await.is_some() {
        let loaded = verdict_collector::Config::load(path.as_deref(), std::env::vars());
        match loaded {
            Ok(config) => {
                if !config.same_except_sinks(collector.config()) {
                    tracing::warn!(
                        "SIGHUP reloads sinks only; other changed settings take effect at the next restart"
                    );
                }
                let report = collector.reload_sinks(&config.sinks).await;
                println!(
                    "verdict-collector sinks reloaded started={:?} restarted={:?} stopped={:?} rejected={:?}",
                    report.started,
                    report.restarted,
                    report.stopped,
                    report
                        .rejected
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                );
            }
            Err(e) => tracing::error!(
                "SIGHUP: the configuration no longer loads; the running sinks stay: {e}"
            ),
        }
    }
}
