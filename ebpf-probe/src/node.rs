//! The node agent as a service: [`Node::start`] loads the first cluster state, starts the
//! logging pipeline and the metrics endpoint and brings up the datapath (eBPF when it loads,
//! or the userspace one); [`Node::run`] runs it until the shutdown token is cancelled (or, for
//! the userspace datapath, until its attempts end) and then drains the pipeline into the log.
//! [`run`] is both. `verdict-probe` and `verdict demo` start nodes only this way. See
//! docs/design.md, "Services: start, serve, stop".

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use verdict_cluster::{PolicySnapshot, StateSource};
use verdict_policy::engine::EnforcementMode;
use verdict_service::shutdown::{CancellationToken, TaskTracker};

use crate::agent::{Agent, AgentConfig, AgentError};
use crate::clock::Clock;
use crate::datapath::{Attempt, Datapath, UserspaceDatapath};
use crate::event::VerdictEvent;
use crate::kernel::compile::NodeContext;
use crate::kernel::datapath::{DatapathError, EbpfDatapath, run_with_agent};
use crate::metrics::Metrics;

/// Which datapath enforces and reports connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatapathChoice {
    /// eBPF when it loads (and no attempts are given), else userspace — saying why.
    Auto,
    Ebpf,
    Userspace,
}

/// Where the userspace datapath's connection attempts come from.
#[derive(Debug)]
pub enum AttemptInput {
    /// JSON lines from a file; the node stops at its end.
    File(PathBuf),
    /// JSON lines from standard input; the node stops at its end.
    Stdin,
    /// Attempts sent in-process (`verdict demo`); the node stops when every sender is gone.
    Channel(mpsc::Receiver<Attempt>),
}

/// Everything a node runs with (the probe's flags).
#[derive(Debug)]
pub struct NodeConfig {
    /// Where cluster state is read from: the API server, or a folder of manifests.
    pub cluster: StateSource,
    pub agent: AgentConfig,
    pub datapath: DatapathChoice,
    /// Where the eBPF maps are pinned (kept across restarts).
    pub bpf_pin_dir: PathBuf,
    /// The node's interfaces towards other nodes (Service traffic to remote backends).
    pub uplinks: Vec<String>,
    /// This node's name: only its pods are enforced and produce records (eBPF needs it).
    pub node_name: Option<String>,
    /// The default enforcement mode (namespaces override it by annotation).
    pub mode: EnforcementMode,
    /// Idle time after which a UDP/ICMP 5-tuple is a new connection.
    pub udp_idle_window: Duration,
    /// Attempts for the userspace datapath; none: it judges nothing and waits for shutdown.
    pub attempts: Option<AttemptInput>,
}

/// The node's listening sockets.
#[derive(Debug, Default)]
pub struct Listeners {
    /// Prometheus `/metrics` and `/healthz`; none: not served.
    pub metrics: Option<TcpListener>,
}

/// Why a node could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("starting the eBPF datapath: {0}")]
    Ebpf(String),
    #[error("the eBPF datapath: {0}")]
    Datapath(#[from] DatapathError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("attempts line {line}: {source}")]
    Attempt {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

enum RunningDatapath {
    Ebpf(Box<EbpfDatapath>),
    Userspace {
        datapath: UserspaceDatapath,
        attempts: Option<AttemptInput>,
    },
}

/// A started node.
pub struct Node {
    agent: Agent,
    datapath: RunningDatapath,
    tasks: TaskTracker,
    stop_tasks: CancellationToken,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("datapath", &self.datapath_name())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Loads the first cluster state (failing if it can't), starts the pipeline, the writer
    /// and the metrics endpoint, and brings up the datapath.
    pub async fn start(mut config: NodeConfig, listeners: Listeners) -> Result<Node, NodeError> {
        tracing::info!(from = %config.cluster.describe(), "reading cluster state");
        let source = config
            .cluster
            .open(config.node_name.clone())
            .await
            .map_err(AgentError::from)?;
        let agent = Agent::start(config.agent.clone(), source, Clock::new()).await?;
        let tasks = TaskTracker::new();
        let stop_tasks = CancellationToken::new();
        if let Some(listener) = listeners.metrics {
            let (registry, stop) = (Arc::clone(agent.metrics.registry()), stop_tasks.clone());
            tasks.spawn(async move {
                if let Err(e) = verdict_service::metrics::serve(listener, registry, stop).await {
                    tracing::error!(error = %e, "metrics server stopped");
                }
            });
        }
        let want_ebpf = match config.datapath {
            DatapathChoice::Ebpf => true,
            DatapathChoice::Userspace => false,
            DatapathChoice::Auto => config.attempts.is_none(),
        };
        let node_name = config.node_name.clone().unwrap_or_default();
        if want_ebpf {
            let loaded = if node_name.is_empty() {
                Err(
                    "the eBPF datapath needs --node-name (or $NODE_NAME) to know which pods are local"
                        .to_owned(),
                )
            } else {
                EbpfDatapath::load(
                    &config.bpf_pin_dir,
                    NodeContext {
                        node_name: node_name.clone(),
                        default_mode: config.mode,
                        idle_ns: u64::try_from(config.udp_idle_window.as_nanos())
                            .unwrap_or(u64::MAX),
                    },
                    config.uplinks.clone(),
                    agent.snapshots.borrow().clone(),
                )
                .map_err(|e| e.to_string())
            };
            match loaded {
                Ok(ebpf) => {
                    return Ok(Node {
                        agent,
                        datapath: RunningDatapath::Ebpf(Box::new(ebpf)),
                        tasks,
                        stop_tasks,
                    });
                }
                Err(e) if config.datapath == DatapathChoice::Ebpf => {
                    stop_tasks.cancel();
                    agent.shutdown().await;
                    return Err(NodeError::Ebpf(e));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "eBPF datapath unavailable; datapath: userspace")
                }
            }
        } else {
            tracing::info!("datapath: userspace, ready");
        }
        let datapath = UserspaceDatapath::new(
            agent.snapshots.borrow().clone(),
            config.node_name.clone(),
            config.mode,
            config.udp_idle_window,
        );
        Ok(Node {
            agent,
            datapath: RunningDatapath::Userspace {
                datapath,
                attempts: config.attempts.take(),
            },
            tasks,
            stop_tasks,
        })
    }

    /// `ebpf` or `userspace`.
    pub fn datapath_name(&self) -> &'static str {
        match self.datapath {
            RunningDatapath::Ebpf(_) => "ebpf",
            RunningDatapath::Userspace { .. } => "userspace",
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.agent.metrics
    }

    /// The policy generation in force, and every later one.
    pub fn snapshots(&self) -> watch::Receiver<Arc<PolicySnapshot>> {
        self.agent.snapshots.clone()
    }

    /// Runs until `shutdown` is cancelled (or the userspace attempts end), then drains the
    /// pipeline — open deny windows included — into the log and stops the metrics endpoint.
    /// eBPF programs stay attached: enforcement outlives the agent.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), NodeError> {
        let Node {
            agent,
            datapath,
            tasks,
            stop_tasks,
        } = self;
        let result = match datapath {
            RunningDatapath::Ebpf(ebpf) => run_with_agent(*ebpf, &agent, shutdown.cancelled())
                .await
                .map_err(NodeError::from),
            RunningDatapath::Userspace { datapath, attempts } => {
                run_userspace(datapath, attempts, &agent, &shutdown).await
            }
        };
        agent.shutdown().await;
        stop_tasks.cancel();
        tasks.close();
        tasks.wait().await;
        result
    }
}

/// Judges attempts with the userspace datapath until they end or `shutdown`.
async fn run_userspace(
    mut datapath: UserspaceDatapath,
    attempts: Option<AttemptInput>,
    agent: &Agent,
    shutdown: &CancellationToken,
) -> Result<(), NodeError> {
    let (mut rx, reader) = match attempts {
        None => {
            tracing::info!(
                "userspace datapath without attempts: nothing to judge; waiting for a stop signal"
            );
            shutdown.cancelled().await;
            return Ok(());
        }
        Some(AttemptInput::Channel(rx)) => (rx, None),
        Some(AttemptInput::Stdin) => {
            let (tx, rx) = mpsc::channel(1024);
            let input = tokio::io::BufReader::new(tokio::io::stdin());
            (rx, Some(tokio::spawn(read_attempts(input, tx))))
        }
        Some(AttemptInput::File(p)) => {
            let file = tokio::fs::File::open(&p)
                .await
                .map_err(|source| NodeError::Io {
                    context: format!("opening {}", p.display()),
                    source,
                })?;
            let (tx, rx) = mpsc::channel(1024);
            let input = tokio::io::BufReader::new(file);
            (rx, Some(tokio::spawn(read_attempts(input, tx))))
        }
    };
    let mut snapshots = agent.snapshots.clone();
    let mut snapshots_open = true;
    let mut events = Vec::new();
    let mut ended = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = snapshots.changed(), if snapshots_open => match changed {
                Ok(()) => datapath.install(snapshots.borrow_and_update().clone()),
                Err(_) => snapshots_open = false,
            },
            attempt = rx.recv() => {
                let Some(attempt) = attempt else {
                    ended = true;
                    break;
                };
                // Judge what is queued together: one clock reading per burst.
                let burst = std::iter::once(attempt)
                    .chain(std::iter::from_fn(|| rx.try_recv().ok()).take(4095));
                if !judge(&mut datapath, burst, agent, &mut events).await {
                    break;
                }
            }
        }
    }
    match reader {
        // The attempts ended: a line that did not parse is the node's error.
        Some(reader) if ended => reader.await.unwrap_or(Ok(())),
        Some(reader) => {
            reader.abort();
            Ok(())
        }
        None => Ok(()),
    }
}

/// Reads attempts, one JSON object per line, into `tx` until the input ends (or a line does
/// not parse, which ends them with the line's error).
async fn read_attempts(
    input: impl tokio::io::AsyncBufRead + Unpin,
    tx: mpsc::Sender<Attempt>,
) -> Result<(), NodeError> {
    let mut lines = input.lines();
    let mut line_no = 0usize;
    while let Some(line) = lines.next_line().await.map_err(|source| NodeError::Io {
        context: "reading attempts".into(),
        source,
    })? {
        line_no += 1;
        if line.trim().is_empty() {
            continue;
        }
        let attempt: Attempt =
            serde_json::from_str(&line).map_err(|source| NodeError::Attempt {
                line: line_no,
                source,
            })?;
        if tx.send(attempt).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Judges `attempts` (at one clock reading) and hands the events to the pipeline; false once
/// the pipeline is gone.
async fn judge(
    datapath: &mut UserspaceDatapath,
    attempts: impl IntoIterator<Item = Attempt>,
    agent: &Agent,
    events: &mut Vec<VerdictEvent>,
) -> bool {
    let now = agent.clock.now();
    for attempt in attempts {
        datapath.process(&attempt, now, events);
    }
    for ev in events.drain(..) {
        if agent.events.send(ev).await.is_err() {
            return false;
        }
    }
    true
}

/// Starts a node and runs it until `shutdown` is cancelled (see [`Node`]).
pub async fn run(
    config: NodeConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    // Starting waits for the first cluster state (the API server may be slow or away): a stop
    // request meanwhile ends it, with nothing yet to drain.
    let node = tokio::select! {
        node = Node::start(config, listeners) => node?,
        () = shutdown.cancelled() => {
            tracing::info!("stopped before the first cluster state arrived");
            return Ok(());
        }
    };
    node.run(shutdown).await
}
