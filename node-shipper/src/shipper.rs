//! Everything wired together: [`Shipper::start`] opens the inputs from their checkpoints,
//! spawns one shipping loop per input on the current tokio runtime (plus the metrics server,
//! the cluster-state watcher and the Event poster when configured) and returns a
//! [`ShipperHandle`]; [`ShipperHandle::shutdown`] flushes and writes the final checkpoints.
//!
//! The binary runs it on a current-thread runtime; `verdict demo` runs it in process beside the
//! probe and the collector.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use verdict_cluster::{ClusterSource, ManifestDirSource};
use verdict_schema::proto::v1;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::input::{Input, LogFileInput, Position, checkpoint_path, load_position};
use crate::iptables_input::IptablesInput;
use crate::metrics::Metrics;
use crate::pod_directory::{PodDirectory, ReverseDns};
use crate::ship::{ShipSettings, ship};

/// The running shipper.
#[derive(Debug)]
pub struct ShipperHandle {
    shutdown: watch::Sender<bool>,
    loops: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
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
    /// Validates `config`, opens every input and starts shipping.
    pub async fn start(config: Config) -> Result<ShipperHandle> {
        if let Err(mut errors) = config.validate() {
            return Err(errors.remove(0));
        }
        std::fs::create_dir_all(&config.checkpoint_dir)
            .map_err(|e| Error::io(&config.checkpoint_dir, e))?;
        let dir_lock = lock_checkpoint_dir(&config.checkpoint_dir)?;
        let channel = crate::collector_client::channel(&config)?;
        let metrics = Arc::new(Metrics::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut background = Vec::new();

        let metrics_addr = match config.metrics_addr {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::Metrics { addr, source: e })?;
                let bound = listener
                    .local_addr()
                    .map_err(|e| Error::Metrics { addr, source: e })?;
                let m = Arc::clone(&metrics);
                let mut stop = shutdown_rx.clone();
                background.push(tokio::spawn(async move {
                    let stopped = async move {
                        let _ = stop.wait_for(|s| *s).await;
                    };
                    if let Err(e) = crate::metrics::serve(listener, m, stopped).await {
                        tracing::error!("metrics server: {e}");
                    }
                }));
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
        let load = |name: &str| -> Result<Option<Position>> {
            let p = checkpoint_path(&config.checkpoint_dir, name);
            load_position(&p).map_err(|e| Error::io(&p, e))
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
            if let Some(manifests) = &ipt.manifests {
                let mut source = ManifestDirSource::new(manifests.clone(), ipt.reload_interval);
                let interval = ipt.reload_interval;
                // The first state before any line is read, so early drops are named.
                match source.next_state().await {
                    Ok(u) => {
                        let _ = dir_tx.send(Arc::new(PodDirectory::from_state(&u.state)));
                    }
                    Err(e) => tracing::warn!("{e} (IPs stay unnamed until it loads)"),
                }
                background.push(tokio::spawn(async move {
                    loop {
                        match source.next_state().await {
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
                }));
            }
            let notices = match &ipt.events {
                Some(ev) => {
                    let client = crate::k8s_events::ApiClient::new(ev)?;
                    let (tx, rx) = mpsc::channel(ev.queue.max(1));
                    let dns = ipt
                        .reverse_dns
                        .then(|| Arc::new(ReverseDns::new(ipt.dns_cache_ttl, 4096)));
                    background.push(tokio::spawn(crate::k8s_events::run(
                        rx,
                        client,
                        ev.clone(),
                        id.node_name.clone(),
                        dns,
                        Arc::clone(&metrics),
                    )));
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

        let loops = inputs
            .into_iter()
            .map(|input| {
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
                };
                tokio::spawn(ship(
                    input,
                    channel.clone(),
                    settings,
                    metrics.input(name),
                    shutdown_rx.clone(),
                ))
            })
            .collect();
        Ok(ShipperHandle {
            shutdown,
            loops,
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
        let _ = self.shutdown.send(true);
        for l in self.loops {
            let _ = l.await;
        }
        for b in self.background {
            b.abort();
            let _ = b.await;
        }
    }
}
