//! The collector as a service: [`Collector::open`] (storage, commit log, leftovers, WAL lock and
//! replay, then the writer thread, the sinks and the background tasks), [`Collector::serve`]
//! (gRPC ingest and HTTP until the shutdown token is cancelled) and [`Collector::close`] (stop
//! the tasks, drain the writer, flush). [`run`] is all three. See docs/design.md, "Services:
//! start, serve, stop".
//!
//! Every task the collector starts — flush, compaction, retention, the writer thread (through a
//! task-set token it holds) — is in one [`TaskTracker`] and stops on one [`CancellationToken`];
//! ingest stream handlers watch the same token. Nothing in the crate imports this module: each
//! part gets the narrow handle it needs ([`Lake`], the buffer, its config section).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use verdict_schema::Timestamp;
use verdict_service::metrics::Registry;
use verdict_service::shutdown::{CancellationToken, TaskTracker};

use crate::buffer::{RowBuffer, Shared, State, TableSnapshot};
use crate::config::Config;
use crate::decode::build_rows;
use crate::error::{Error, Result};
use crate::flush::{FlushSettings, Flusher};
use crate::ingest::{IngestServer, IngestState};
use crate::lake::Lake;
use crate::manifest::{CommitLog, FileEntry, SourceKey, SourceWatermark};
use crate::metrics::Metrics;
use crate::node_auth::{NodeAuth, NodeTokens};
use crate::sinks::Sinks;
use crate::storage::Storage;
use crate::table::Table;
use crate::wal::{self, WalWriter};
use crate::writer::{self, WriterSender, WriterSettings};

/// Batches queued for the writer thread (each also holds a permit of its stream).
const WRITER_QUEUE: usize = 1024;

/// The largest HTTP/2 frame the gRPC server accepts, and so tells clients they may send.
const MAX_FRAME_SIZE: u32 = 1024 * 1024;

/// The collector's listening sockets.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC ingest (`grpc.listen`).
    pub grpc: TcpListener,
    /// HTTP: metrics, health, sinks and the query API (`http.listen`).
    pub http: TcpListener,
}

impl Listeners {
    /// Binds `grpc.listen` and `http.listen` (an unusable address is reported by its setting).
    pub async fn bind(config: &Config) -> Result<Listeners> {
        let grpc = TcpListener::bind(config.grpc.listen).await.map_err(|e| {
            Error::setting_caused(
                "grpc.listen",
                format!("cannot listen on {}", config.grpc.listen),
                e,
            )
        })?;
        let http = TcpListener::bind(config.http.listen).await.map_err(|e| {
            Error::setting_caused(
                "http.listen",
                format!("cannot listen on {}", config.http.listen),
                e,
            )
        })?;
        Ok(Listeners { grpc, http })
    }
}

/// An open collector; serve it with [`Collector::serve`], then [`Collector::close`] it.
#[derive(Debug)]
pub struct Collector {
    config: Config,
    lake: Arc<Lake>,
    buffer: Arc<Shared>,
    flusher: Arc<Flusher>,
    sinks: Arc<Sinks>,
    alerts: Arc<crate::alerts::Alerts>,
    /// The query engine over the lake (HTTP API, alert enrichment).
    query: Arc<verdict_query::QueryEngine>,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    writer: WriterSender,
    /// Cancelled at shutdown: ingest handlers stop reading, background tasks stop.
    stop: CancellationToken,
    /// The background tasks and the writer thread.
    tasks: TaskTracker,
    /// Held until [`close`](Collector::close): one collector per WAL directory.
    wal_lock: std::sync::Mutex<Option<std::fs::File>>,
}

/// What start-up found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    pub committed_files: usize,
    pub replayed_entries: u64,
    pub replayed_rows: u64,
    pub torn_wal_bytes: u64,
    pub orphans_deleted: usize,
}

/// Takes `wal_dir` for this process (creating it): an exclusive lock on its `LOCK` file, held
/// until the returned file is dropped.
fn lock_wal_dir(wal_dir: &std::path::Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(wal_dir).map_err(|e| {
        Error::setting_caused("wal.dir", format!("cannot create {}", wal_dir.display()), e)
    })?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(wal_dir.join("LOCK"))
        .map_err(|e| {
            Error::setting_caused(
                "wal.dir",
                format!("cannot write in {}", wal_dir.display()),
                e,
            )
        })?;
    lock.try_lock().map_err(|_| {
        Error::setting(
            "wal.dir",
            format!(
                "{} is in use by another collector process",
                wal_dir.display()
            ),
        )
    })?;
    Ok(lock)
}

/// What replaying the write-ahead log rebuilt.
struct Replayed {
    outcome: wal::ReplayOutcome,
    active: RowBuffer,
    watermarks: HashMap<SourceKey, SourceWatermark>,
    rows: u64,
}

/// Replays the WAL entries after `committed_lsn` onto `watermarks` (blocking).
fn replay_wal(
    dir: PathBuf,
    committed_lsn: u64,
    mut watermarks: HashMap<SourceKey, SourceWatermark>,
) -> Result<Replayed> {
    let mut active = RowBuffer::default();
    let mut rows = 0u64;
    let outcome = wal::replay(&dir, committed_lsn, |lsn, entry| {
        let node = entry.node.clone().unwrap_or_default();
        let receive = Timestamp::from_unix_nanos(entry.receive_unix_nanos);
        let (parts, _) = build_rows(&node, &entry.source_id, receive, &entry.records, None)
            .map_err(|r| Error::WalCorrupt {
                path: dir.clone(),
                message: format!("entry {lsn} no longer decodes: {}", r.message),
            })?;
        for p in parts {
            rows += p.batch.num_rows() as u64;
            active.add(p.table, p.hour, p.batch);
        }
        watermarks.insert(
            (node.node_name, entry.source_id),
            SourceWatermark {
                sequence: entry.watermark,
                last_seen: entry.receive_unix_nanos,
            },
        );
        Ok(())
    })?;
    Ok(Replayed {
        outcome,
        active,
        watermarks,
        rows,
    })
}

impl Collector {
    /// Opens storage and the commit log, deletes uncommitted leftovers, replays the WAL and
    /// starts the writer, the sinks and the background tasks (flush, compaction, retention).
    pub async fn open(config: Config) -> Result<(Collector, Recovery)> {
        // Two rustls crypto backends may be in the tree (ring for tonic, aws-lc-rs for the
        // Pub/Sub client): without a process default, TLS setup panics. The first install wins.
        let _ = rustls::crypto::ring::default_provider().install_default();
        config
            .validate()
            .map_err(|problems| crate::config::ConfigErrors {
                origin: "configuration".into(),
                problems,
            })?;
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::register(&mut registry));
        let storage = Storage::open(&config.storage_url(), &config.storage.options)?;
        storage.probe(&config.instance_id).await?;
        let log = CommitLog::open(storage.clone(), &config.instance_id).await?;
        let committed = log.state().clone();

        let wal_dir = config.wal_dir();
        let wal_lock = lock_wal_dir(&wal_dir)?;
        let replayed = {
            let (dir, lsn, marks) = (
                wal_dir.clone(),
                committed.wal_lsn,
                committed.watermarks.clone(),
            );
            tokio::task::spawn_blocking(move || replay_wal(dir, lsn, marks))
                .await
                .map_err(|e| Error::io("WAL replay task", std::io::Error::other(e)))??
        };
        let next_lsn = replayed.outcome.next_lsn.max(committed.wal_lsn + 1);
        let wal_writer = WalWriter::create(&wal_dir, next_lsn, config.wal.segment_bytes.0)?;

        let buffer = Arc::new(Shared::new(State {
            active: replayed.active,
            frozen: None,
            applied_lsn: next_lsn - 1,
            watermarks: replayed.watermarks.clone(),
            committed: Arc::new(committed.files.clone()),
            failed: None,
            closing: false,
        }));
        let lake = Arc::new(Lake::new(
            storage,
            config.instance_id.clone(),
            log,
            Arc::clone(&buffer),
            Arc::clone(&metrics),
        ));
        let recovery = Recovery {
            committed_files: committed.files.len(),
            replayed_entries: replayed.outcome.replayed,
            replayed_rows: replayed.rows,
            torn_wal_bytes: replayed.outcome.torn_bytes,
            // Leftovers of flushes and compactions a crash interrupted.
            orphans_deleted: lake.remove_leftovers().await?,
        };

        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (writer_tx, writer_rx) = mpsc::channel(WRITER_QUEUE);
        writer::spawn(
            wal_writer,
            replayed.watermarks,
            Arc::clone(&buffer),
            Arc::clone(&metrics),
            WriterSettings {
                max_sequence_gap: config.grpc.max_sequence_gap.0,
                max_group_bytes: usize::try_from(config.wal.max_group_bytes.0)
                    .unwrap_or(usize::MAX),
                max_unflushed_bytes: usize::try_from(config.flush.max_unflushed_bytes.0)
                    .unwrap_or(usize::MAX),
                flush_rows: config.flush.max_rows,
                source_retention: config.dedup.source_retention,
            },
            writer_rx,
            tasks.token(),
        )?;
        let sinks = Arc::new(Sinks::new(
            crate::sinks::SinksSettings {
                wal_dir: wal_dir.clone(),
                data_dir: config.data_dir.clone(),
                max_retention_bytes: config.wal.max_sink_retention_bytes.0,
                build: crate::sinks::sink::BuildContext {
                    parquet: config.parquet.clone(),
                },
            },
            buffer.durable.subscribe(),
        ));
        registry.register_collector(Box::new(crate::sinks::metrics::SinkMetrics::new(
            Arc::clone(&sinks),
        )));
        let flusher = Arc::new(Flusher::new(
            Arc::clone(&lake),
            Arc::clone(&buffer),
            Arc::clone(&sinks),
            FlushSettings {
                flush: config.flush.clone(),
                parquet: config.parquet.clone(),
                source_retention: config.dedup.source_retention,
                wal_dir: wal_dir.clone(),
            },
            Arc::clone(&metrics),
        ));
        tasks.spawn(crate::flush::run(Arc::clone(&flusher), stop.clone()));
        if config.compaction.enabled {
            tasks.spawn(crate::compaction::run(
                Arc::clone(&lake),
                config.compaction.clone(),
                config.parquet.clone(),
                Arc::clone(&metrics),
                stop.clone(),
            ));
        }
        tasks.spawn(crate::retention::run(
            Arc::clone(&lake),
            config.retention.clone(),
            Arc::clone(&metrics),
            stop.clone(),
        ));
        // Log-based metrics and detectors, rebuilt from the lake before ingest opens.
        let query = crate::query::engine(Arc::clone(&lake), &config.query).await?;
        let alerts = crate::alerts::start(
            crate::alerts::AlertingContext {
                config: &config.alerts,
                data_dir: &config.data_dir,
                project: config.alerts.project_id.clone(),
                http_listen: config.http.listen,
                buffer: Arc::clone(&buffer),
                query: query.clone(),
                build: crate::sinks::sink::BuildContext {
                    parquet: config.parquet.clone(),
                },
                stop: stop.clone(),
                tasks: &tasks,
            },
            &mut registry,
        )
        .await?;
        // A bad sink definition is reported by name and skipped; it never stops the collector.
        sinks.apply(&config.sinks).await;
        tracing::info!(
            storage = lake.storage().url(),
            wal = %wal_dir.display(),
            ?recovery,
            "collector opened"
        );
        Ok((
            Collector {
                config,
                lake,
                buffer,
                flusher,
                sinks,
                alerts,
                query: Arc::new(query),
                metrics,
                registry: Arc::new(registry),
                writer: Arc::new(std::sync::Mutex::new(Some(writer_tx))),
                stop,
                tasks,
                wal_lock: std::sync::Mutex::new(Some(wal_lock)),
            },
            recovery,
        ))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The registry `/metrics` renders.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn storage(&self) -> &Storage {
        self.lake.storage()
    }

    pub fn lake(&self) -> &Arc<Lake> {
        &self.lake
    }

    /// The alerts firing and their history.
    pub fn alerts(&self) -> &Arc<crate::alerts::Alerts> {
        &self.alerts
    }

    /// The running sinks.
    pub fn sinks(&self) -> &Sinks {
        &self.sinks
    }

    /// Replaces the sink definitions without touching ingest (the binary calls it on SIGHUP):
    /// new sinks start, changed ones restart from their cursors, removed ones stop, invalid
    /// ones are rejected by name while the others run.
    pub async fn reload_sinks(
        &self,
        definitions: &[crate::sinks::registry::SinkDefinition],
    ) -> crate::sinks::ApplyReport {
        self.sinks.apply(definitions).await
    }

    /// Committed files and not-yet-flushed rows of `table`, consistent with each other.
    pub fn snapshot(&self, table: Table) -> Result<TableSnapshot> {
        self.lake.snapshot(table)
    }

    /// The committed files of `table`.
    pub fn committed_files(&self, table: Table) -> Vec<FileEntry> {
        self.lake.committed_files(table)
    }

    /// Rows of `table` (flows or loss) durable but not yet in committed files.
    pub fn unflushed_batches(&self, table: Table) -> Vec<arrow_array::RecordBatch> {
        self.buffer.snapshot(table).unflushed
    }

    /// Reads every committed file of `table` (decoded), in path order.
    pub async fn read_committed(&self, table: Table) -> Result<Vec<arrow_array::RecordBatch>> {
        let mut out = Vec::new();
        for f in self.committed_files(table) {
            out.extend(self.lake.read(&f).await?.ok_or_else(|| Error::Manifest {
                path: f.path.clone(),
                message: "committed but missing from storage".into(),
            })?);
        }
        Ok(out)
    }

    /// Flushes everything buffered now (and waits for it).
    pub async fn flush(&self) -> Result<()> {
        self.flusher.flush_all().await
    }

    /// Runs compaction now, as of `now`; returns the merges done.
    pub async fn compact(&self, now: Timestamp) -> Result<usize> {
        crate::compaction::compact_once(
            &self.lake,
            &self.config.compaction,
            &self.config.parquet,
            &self.metrics.maintenance,
            now.unix_nanos(),
        )
        .await
    }

    /// Applies retention now, as of `now`; returns the files deleted.
    pub async fn apply_retention(&self, now: Timestamp) -> Result<usize> {
        crate::retention::apply_once(
            &self.lake,
            &self.config.retention,
            &self.metrics.maintenance,
            now.unix_nanos(),
        )
        .await
    }

    /// The gRPC ingest service, each stream bound to the node its credential names.
    pub async fn ingest_service(
        &self,
    ) -> Result<tonic::service::interceptor::InterceptedService<IngestServer, NodeAuth>> {
        let g = &self.config.grpc;
        let tokens = match &g.node_tokens_file {
            Some(path) => NodeTokens::load(path)?,
            None => NodeTokens::default(),
        };
        let certificates = g.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some());
        let state = Arc::new(IngestState::new(
            &self.config,
            Arc::clone(&self.writer),
            Arc::clone(&self.buffer),
            Arc::clone(&self.metrics),
            self.stop.clone(),
        ));
        let max = usize::try_from(self.config.grpc.max_message_bytes.0).unwrap_or(usize::MAX);
        let mut auth = NodeAuth::new(
            tokens,
            certificates,
            self.metrics.ingest.auth_failures.clone(),
        );
        if let Some(k) = &g.kubernetes {
            let options = verdict_cluster::api::ApiOptions {
                kubeconfig: k.kubeconfig.clone(),
                context: k.context.clone(),
            };
            let client =
                verdict_cluster::api::connect(&options)
                    .await
                    .map_err(|e| Error::Setting {
                        setting: "grpc.kubernetes".into(),
                        message: format!("cannot reach the Kubernetes API server: {e}"),
                        source: None,
                    })?;
            auth = auth.with_reviewer(verdict_cluster::api::review::TokenReviewer::new(
                client,
                &k.audience,
                &k.service_accounts,
                k.cache_ttl,
            ));
        }
        Ok(tonic::service::interceptor::InterceptedService::new(
            IngestServer::new(state, max),
            auth,
        ))
    }

    /// Serves gRPC ingest and HTTP on `listeners` until `shutdown` is cancelled; then every
    /// stream is answered up to what it sent and ended with `UNAVAILABLE`, and the servers
    /// stop. Call [`close`](Self::close) afterwards to flush.
    pub async fn serve(&self, listeners: Listeners, shutdown: CancellationToken) -> Result<()> {
        let tls = crate::tls::server_config(&self.config)?;
        let mut builder = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_adaptive_window(Some(true))
            // Shippers send batches of megabytes: large DATA frames let them write a batch in
            // a few syscalls instead of one per 16 KiB (HTTP/2's default frame size).
            .max_frame_size(Some(MAX_FRAME_SIZE));
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).map_err(|e| {
                Error::setting_caused("grpc.tls", "the certificate or key is not usable", e)
            })?;
        }
        // The servers stop when `servers` is cancelled: after shutdown, once stream handlers
        // were told to end (so graceful shutdown does not wait on shippers).
        let servers = CancellationToken::new();
        let grpc_task = tokio::spawn({
            let servers = servers.clone();
            builder
                .add_service(self.ingest_service().await?)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listeners.grpc),
                    async move { servers.cancelled().await },
                )
        });
        if let Ok(addr) = listeners.http.local_addr() {
            self.alerts.set_listen_address(addr);
        }
        let engine = Arc::clone(&self.query);
        let router = crate::http::router(crate::http::HttpState {
            registry: Arc::clone(&self.registry),
            buffer: Arc::clone(&self.buffer),
            sinks: Arc::clone(&self.sinks),
            alerts: Arc::clone(&self.alerts),
            auth: crate::query::http_auth(&self.config.query),
        })
        .merge(verdict_query::router(
            engine,
            crate::query::api_settings(&self.config.query),
            servers.clone(),
        ));
        let http_task = tokio::spawn({
            let servers = servers.clone();
            let http = listeners.http;
            let limits = verdict_service::http::HttpLimits {
                max_connections: self.config.http.max_connections,
                header_read_timeout: self.config.http.header_read_timeout,
            };
            // The peer address (ConnectInfo) tells the API which clients are on loopback.
            verdict_service::http::serve(http, router, limits, servers)
        });
        shutdown.cancelled().await;
        tracing::info!("shutting down: closing ingest streams");
        // Stream handlers stop reading, answer what they hold and end their streams.
        self.stop.cancel();
        servers.cancel();
        let grpc_result = grpc_task
            .await
            .map_err(|e| Error::io("gRPC server task", std::io::Error::other(e)))?;
        let _ = http_task.await;
        grpc_result?;
        Ok(())
    }

    /// Stops the background tasks and the writer, then flushes everything buffered.
    pub async fn close(&self) -> Result<()> {
        self.stop.cancel();
        // Sinks first: each delivers what it holds and saves its cursor.
        self.sinks.stop_all().await;
        // The writer thread ends once its queue is drained and no sender is left.
        self.writer.lock().expect("writer sender lock").take();
        self.buffer.lock().closing = true;
        self.buffer.space_freed();
        let flushed = self.flush().await;
        self.tasks.close();
        self.tasks.wait().await;
        flushed?;
        // Anything the writer applied while draining.
        self.flush().await?;
        self.wal_lock.lock().expect("wal lock").take();
        tracing::info!("collector closed");
        Ok(())
    }

    /// Serves until `shutdown` is cancelled, then closes (flushes everything buffered).
    pub async fn run(&self, listeners: Listeners, shutdown: CancellationToken) -> Result<()> {
        let served = self.serve(listeners, shutdown).await;
        let closed = self.close().await;
        served.and(closed)
    }
}

/// Runs a collector with `config` on `listeners` until `shutdown` is cancelled, then flushes
/// everything buffered.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<()> {
    let (collector, _) = Collector::open(config).await?;
    collector.run(listeners, shutdown).await
}
