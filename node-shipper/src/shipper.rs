//! Everything wired together: [`Shipper::start`] opens the inputs from their checkpoints,
//! spawns one shipping loop per input on the current tokio runtime (plus the metrics server,
//! the cluster-state watcher and the Event poster when configured) and returns a
//! [`ShipperHandle`]; [`ShipperHandle::shutdown`] flushes and writes the final checkpoints.
//! [`run`] is both, until a shutdown token is cancelled (docs/design.md, "Services: start,
//! serve, stop").
//!
//! The binary runs it on a current-thread runtime; `verdict demo` runs it in process beside the
//! probe and the collector.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use verdict_cluster::ClusterSource;
use verdict_schema::proto::v1;
use verdict_service::shutdown::{CancellationToken, TaskTracker};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::input::{Input, LogFileInput, Position, checkpoint_path, resume_position};
use crate::iptables_input::IptablesInput;
use crate::metrics::Metrics;
use crate::pod_directory::{PodDirectory, ReverseDns};
use crate::ship::{ShipSettings, ship};

/// The shipper's listening sockets.
#[derive(Debug, Default)]
pub struct Listeners {
    /// Prometheus `/metrics` and `/healthz`; none: not served.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds `metrics_addr` when it is set.
    pub async fn bind(config: &Config) -> Result<Listeners> {
        let metrics = match config.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::Metrics { addr, source: e })?,
            ),
            None => None,
        };
        Ok(Listeners { metrics })
    }
}

/// The running shipper.
#[derive(Debug)]
pub struct ShipperHandle {
    /// Cancelled at shutdown: the shipping loops flush and checkpoint.
    stop_loops: CancellationToken,
    loops: TaskTracker,
    /// Cancelled after the loops ended: the metrics server, the watcher, the Event poster.
    stop_background: CancellationToken,
    background: TaskTracker,
    metrics: Arc<Metrics>,
    metrics_addr: Option<SocketAddr>,
    /// Held (locked) while the shipper runs; see [`lock_checkpoint_dir`].
    _dir_lock: std::fs::File,
}

/// The name of the lock file in the checkpoint directory.
pub const LOCK_FILE: &str = "shipper.lock";

/// Takes the checkpoint directory for this process: two shippers sharing one (an overlapping
/// DaemonSet rollout with a hostPath, a second copy started by hand) would each resume from
/// the other's checkpoints and skip what the other one read. The lock is an advisory `flock`
/// on [`LOCK_FILE`], released by the kernel when the process ends, however it ends.
pub fn lock_checkpoint_dir(dir: &std::path::Path) -> Result<std::fs::File> {
    use std::io::Write;
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(Error::config(
                "checkpoint-dir",
                format!(
                    "{} is in use by another verdict-shipper ({}); each shipper needs its own",
                    dir.display(),
                    holder.trim()
                ),
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    file.set_len(0).map_err(|e| Error::io(&path, e))?;
    write!(file, "pid {}", std::process::id()).map_err(|e| Error::io(&path, e))?;
    Ok(file)
}

/// The node shipper.
#[derive(Debug)]
pub struct Shipper;

impl Shipper {
    /// Validates `config`, opens every input and starts shipping (and serving metrics on
    /// `listeners`).
    pub async fn start(config: Config, listeners: Listeners) -> Result<ShipperHandle> {
        if let Err(mut errors) = config.validate() {
            return Err(errors.remove(0));
        }
        std::fs::create_dir_all(&config.checkpoint_dir)
            .map_err(|e| Error::io(&config.checkpoint_dir, e))?;
        let dir_lock = lock_checkpoint_dir(&config.checkpoint_dir)?;
        let channel = crate::collector_client::channel(&config)?;
        let metrics = Arc::new(Metrics::default());
        let (stop_loops, loops) = (CancellationToken::new(), TaskTracker::new());
        let (stop_background, background) = (CancellationToken::new(), TaskTracker::new());

        let metrics_addr = match listeners.metrics {
            Some(listener) => {
                let bound = listener.local_addr().map_err(|e| Error::Metrics {
                    addr: config
                        .metrics_addr
                        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                    source: e,
                })?;
                let (registry, stop) = (Arc::clone(metrics.registry()), stop_background.clone());
                background.spawn(async move {
                    if let Err(e) = verdict_service::metrics::serve(listener, registry, stop).await
                    {
                        tracing::error!("metrics server: {e}");
                    }
                });
                Some(bound)
            }
            None => None,
        };

        let id = &config.identity;
        let node = v1::NodeIdentity {
            node_name: id.node_name.clone(),
            cluster_name: id.cluster_name.clone(),
            location: id.location.clone(),
            project_id: id.project_id.clone(),
        };
        let load = |name: &'static str| -> Result<Option<Position>> {
            resume_position(&config.checkpoint_dir, name, &metrics.input(name))
                .map_err(|e| Error::io(checkpoint_path(&config.checkpoint_dir, name), e))
        };

        let mut inputs: Vec<Box<dyn Input>> = Vec::new();
        if let Some(dir) = &config.log_dir {
            for (name, file) in [
                (LogFileInput::POLICY_ACTION, "policy_action.log"),
                (LogFileInput::POLICY_ACTION_LOSS, "policy_action_loss.log"),
            ] {
                let cp = match load(name)? {
                    Some(Position::File(cp)) => Some(cp),
                    _ => None,
                };
                let path = dir.join(file);
                let input = LogFileInput::open(
                    name,
                    &path,
                    cp.as_ref(),
                    config.max_line_bytes,
                    metrics.input(name),
                )
                .map_err(|e| Error::io(&path, e))?;
                inputs.push(Box::new(input));
            }
        }
        if let Some(ipt) = &config.iptables {
            let (dir_tx, dir_rx) = watch::channel(Arc::new(PodDirectory::default()));
            if let Some(state_source) = ipt.state_source() {
                let interval = ipt.reload_interval;
                let mut source = state_source
                    .open(None)
                    .await
                    .map_err(|e| Error::KubernetesApi(e.to_string()))?;
                // The first state before any line is read, so early drops are named.
                match source.next_state().await {
                    Ok(u) => {
                        let _ = dir_tx.send(Arc::new(PodDirectory::from_state(&u.state)));
                    }
                    Err(e) => tracing::warn!("{e} (IPs stay unnamed until it loads)"),
                }
                let stop = stop_background.clone();
                background.spawn(async move {
                    loop {
                        let next = tokio::select! {
                            _ = stop.cancelled() => return,
                            next = source.next_state() => next,
                        };
                        match next {
                            Ok(u) => {
                                if dir_tx
                                    .send(Arc::new(PodDirectory::from_state(&u.state)))
                                    .is_err()
                                {
                                    return;
                                }
                            }
                            Err(e) => {
                                tracing::warn!("{e} (keeping the previous state)");
                                tokio::time::sleep(interval).await;
                            }
                        }
                    }
                });
            }
            let notices = match &ipt.events {
                Some(ev) => {
                    let client = crate::k8s_events::client(&ipt.api_options()).await?;
                    let (tx, rx) = mpsc::channel(ev.queue.max(1));
                    let dns = ipt
                        .reverse_dns
                        .then(|| Arc::new(ReverseDns::new(ipt.dns_cache_ttl, 4096)));
                    let poster = crate::k8s_events::run(
                        rx,
                        client,
                        ev.clone(),
                        id.node_name.clone(),
                        dns,
                        Arc::clone(&metrics),
                    );
                    let stop = stop_background.clone();
                    background.spawn(async move {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            () = poster => {}
                        }
                    });
                    Some(tx)
                }
                None => None,
            };
            let cp = load(IptablesInput::NAME)?;
            let input = IptablesInput::open(
                ipt,
                cp.as_ref(),
                &id.node_name,
                dir_rx,
                notices,
                &metrics,
                config.max_line_bytes,
            )
            .map_err(|e| Error::io(&ipt.log_path, e))?;
            inputs.push(Box::new(input));
        }

        for input in inputs {
            {
                let name = input.name();
                let settings = ShipSettings {
                    node: node.clone(),
                    batch: config.batch.clone(),
                    poll_interval: config.poll_interval,
                    checkpoint_interval: config.checkpoint_interval,
                    checkpoint_file: checkpoint_path(&config.checkpoint_dir, name),
                    backoff: config.backoff.clone(),
                    shutdown_timeout: config.shutdown_timeout,
                    token: config.token.clone(),
                    token_file: config.token_file.clone(),
                };
                loops.spawn(ship(
                    input,
                    channel.clone(),
                    settings,
                    metrics.input(name),
                    stop_loops.clone(),
                ));
            }
        }
        Ok(ShipperHandle {
            stop_loops,
            loops,
            stop_background,
            background,
            metrics,
            metrics_addr,
            _dir_lock: dir_lock,
        })
    }
}

impl ShipperHandle {
    /// The metrics (also served on the metrics address).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Where `/metrics` is served (the bound port when configured with port 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops reading, sends what was read (up to the shutdown timeout), writes the final
    /// checkpoints and stops everything else.
    pub async fn shutdown(self) {
        self.stop_loops.cancel();
        self.loops.close();
        self.loops.wait().await;
        self.stop_background.cancel();
        self.background.close();
        self.background.wait().await;
    }

    /// Ships until `shutdown` is cancelled, then [`shutdown`](Self::shutdown)s.
    pub async fn run(self, shutdown: CancellationToken) {
        shutdown.cancelled().await;
        tracing::info!("shutting down: flushing and writing checkpoints");
        self.shutdown().await;
    }
}

/// Runs a shipper with `config` (metrics on `listeners`) until `shutdown` is cancelled; then it
/// flushes and writes the final checkpoints.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<()> {
    Shipper::start(config, listeners).await?.run(shutdown).await;
    Ok(())
}
