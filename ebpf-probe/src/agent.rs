//! The node agent's moving parts, wired together:
//!
//! ```text
//! ClusterSource ─ states ─▶ PolicyCompiler ─ snapshots (watch) ─▶ datapath, pipeline
//! datapath ─ VerdictEvents (bounded channel) ─▶ pipeline task ─ lines ─▶ writer thread ─▶ files
//! ```
//!
//! The event channel is bounded: a datapath that can wait (userspace) gets backpressure; one that
//! cannot (the kernel ring buffer) counts what it loses and reports it with
//! through [`Agent::lost_events_counter`]. Shutdown drains the channel, emits every open deny window and
//! waits for the writer, so a clean stop loses nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use verdict_policy::IpBlockMode;

use crate::clock::Clock;
use crate::event::VerdictEvent;
use crate::log_writer::LogWriter;
use crate::metrics::Metrics;
use crate::pipeline::{LoggingPipeline, PipelineConfig};
use verdict_cluster::PolicySnapshot;
use verdict_cluster::{ClusterSource, PolicyCompiler, SourceError};

/// Where `policy_action.log` goes by default (GKE's path).
pub const DEFAULT_LOG_PATH: &str = "/var/log/network/policy_action.log";
/// Events buffered between datapath and pipeline.
pub const DEFAULT_EVENT_QUEUE: usize = 65_536;
/// How often open deny windows and loss intervals are checked.
const TICK: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub log_path: PathBuf,
    pub max_log_bytes: u64,
    pub keep_log_files: usize,
    pub pipeline: PipelineConfig,
    pub ipblock_mode: IpBlockMode,
    pub event_queue: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("compiling cluster state: {0}")]
    Compile(#[from] verdict_policy::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What the agent reports besides metrics (the last configuration problems).
#[derive(Debug, Default)]
pub struct AgentStatus {
    /// The last rejected NetworkLogging (GKE's text), cleared when a valid one is applied.
    pub network_logging_error: std::sync::Mutex<Option<String>>,
    /// The last cluster state that could not be loaded or compiled.
    pub state_error: std::sync::Mutex<Option<String>>,
}

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    /// Where datapaths send events.
    pub events: mpsc::Sender<VerdictEvent>,
    /// The policy generation in force.
    pub snapshots: watch::Receiver<Arc<PolicySnapshot>>,
    pub metrics: Arc<Metrics>,
    pub status: Arc<AgentStatus>,
    pub clock: Clock,
    lost: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    source_task: JoinHandle<()>,
    pipeline_task: JoinHandle<Option<LogWriter>>,
}

impl Agent {
    /// Loads the first cluster state (failing if it can't) and starts the pipeline, the writer
    /// and the source watcher.
    pub async fn start(
        config: AgentConfig,
        mut source: impl ClusterSource,
        clock: Clock,
    ) -> Result<Agent, AgentError> {
        let metrics = Arc::new(Metrics::new());
        let status = Arc::new(AgentStatus::default());
        let mut compiler = PolicyCompiler::new(config.ipblock_mode);
        let first = compiler.compile(source.next_state().await?)?;
        note_network_logging(&first.network_logging_error, &metrics, &status);
        let (snap_tx, snap_rx) = watch::channel(first.snapshot.clone());
        let writer = LogWriter::spawn(
            &config.log_path,
            config.max_log_bytes,
            config.keep_log_files,
            config.pipeline.node_name.clone(),
            metrics.clone(),
        )?;
        let (events_tx, events_rx) = mpsc::channel(config.event_queue.max(1));
        let (stop_tx, stop_rx) = watch::channel(false);
        let lost = Arc::new(AtomicU64::new(0));

        let source_task = {
            let (metrics, status, mut stop) = (metrics.clone(), status.clone(), stop_rx.clone());
            tokio::spawn(async move {
                loop {
                    let update = tokio::select! {
                        _ = stop.changed() => return,
                        u = source.next_state() => u,
                    };
                    let compiled = update
                        .map_err(AgentError::from)
                        .and_then(|u| compiler.compile(u).map_err(AgentError::from));
                    match compiled {
                        Ok(c) => {
                            note_network_logging(&c.network_logging_error, &metrics, &status);
                            metrics.state_stale.set(0);
                            *status.state_error.lock().expect("status lock") = None;
                            tracing::info!(
                                generation = c.snapshot.generation,
                                "policy state updated"
                            );
                            let _ = snap_tx.send(c.snapshot);
                        }
                        Err(e) => {
                            metrics.state_errors.inc();
                            metrics.state_stale.set(1);
                            tracing::error!(error = %e, "cluster state rejected; the previous one stays in force");
                            *status.state_error.lock().expect("status lock") = Some(e.to_string());
                        }
                    }
                }
            })
        };

        let pipeline = LoggingPipeline::new(config.pipeline.clone(), first.snapshot);
        let pipeline_task = tokio::spawn(run_pipeline(
            pipeline,
            events_rx,
            snap_rx.clone(),
            stop_rx,
            writer,
            metrics.clone(),
            lost.clone(),
            clock,
        ));
        Ok(Agent {
            events: events_tx,
            snapshots: snap_rx,
            metrics,
            status,
            clock,
            lost,
            stop: stop_tx,
            source_task,
            pipeline_task,
        })
    }

    /// A handle for reporting losses from another task.
    pub fn lost_events_counter(&self) -> Arc<AtomicU64> {
        self.lost.clone()
    }

    /// Stops: drains queued events, emits open deny windows, waits for the files to be written.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        drop(self.events);
        let _ = self.source_task.await;
        if let Ok(Some(writer)) = self.pipeline_task.await {
            writer.finish().await;
        }
    }
}

fn note_network_logging(error: &Option<String>, metrics: &Metrics, status: &AgentStatus) {
    match error {
        Some(e) => {
            metrics.config_errors.inc();
            metrics.config_valid.set(0);
            tracing::warn!(error = %e, "InvalidNetworkLogging: the previous configuration stays in force");
            *status.network_logging_error.lock().expect("status lock") = Some(e.clone());
        }
        None => {
            metrics.config_valid.set(1);
            *status.network_logging_error.lock().expect("status lock") = None;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_pipeline(
    mut pipeline: LoggingPipeline,
    mut events: mpsc::Receiver<VerdictEvent>,
    mut snapshots: watch::Receiver<Arc<PolicySnapshot>>,
    mut stop: watch::Receiver<bool>,
    writer: LogWriter,
    metrics: Arc<Metrics>,
    lost: Arc<AtomicU64>,
    clock: Clock,
) -> Option<LogWriter> {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    // Closed once the source task has ended (its sender dropped): `changed()` would then return
    // at once forever.
    let mut snapshots_open = true;
    loop {
        tokio::select! {
            biased;
            changed = snapshots.changed(), if snapshots_open && !stopping => match changed {
                Ok(()) => {
                    let s = snapshots.borrow_and_update().clone();
                    pipeline.install(s, clock.now());
                }
                Err(_) => snapshots_open = false,
            },
            ev = events.recv() => match ev {
                Some(ev) => {
                    let now = clock.now();
                    pipeline.handle(ev, now);
                    // Drain what is queued before writing: one write per batch.
                    for _ in 0..4096 {
                        match events.try_recv() {
                            Ok(ev) => pipeline.handle(ev, now),
                            Err(_) => break,
                        }
                    }
                }
                None => break,
            },
            _ = stop.changed(), if !stopping => {
                // Keep draining until every sender is gone.
                stopping = true;
                events.close();
            }
            _ = ticker.tick() => {
                let now = clock.now();
                pipeline.lost_events(lost.swap(0, Ordering::Relaxed), now);
                pipeline.tick(now);
            }
        }
        if pipeline.has_output() && writer.sender.send(pipeline.take_output()).await.is_err() {
            tracing::error!("log writer stopped; records are being lost");
        }
        pipeline.publish(&metrics);
    }
    let now = clock.now();
    pipeline.lost_events(lost.swap(0, Ordering::Relaxed), now);
    pipeline.finish(now);
    if pipeline.has_output() {
        let _ = writer.sender.send(pipeline.take_output()).await;
    }
    pipeline.publish(&metrics);
    Some(writer)
}
