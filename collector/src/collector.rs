//! Wiring: opening a collector (storage, commit log, leftovers, WAL replay), running its servers
//! and background jobs, and shutting it down (stop reading, drain, flush).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::RecordBatch;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use verdict_schema::Timestamp;

use crate::buffer::{RowBuffer, Shared, State, TableSnapshot};
use crate::config::Config;
use crate::decode::build_rows;
use crate::error::{Error, Result};
use crate::flush::file_instance;
use crate::ingest::{IngestServer, IngestState, TokenAuth};
use crate::manifest::{CommitLog, FileEntry, SourceKey, SourceWatermark};
use crate::metrics::Metrics;
use crate::storage::Storage;
use crate::table::Table;
use crate::wal::{self, WalWriter};
use crate::writer::{self, WriterSender, WriterSettings};

/// Batches queued for the writer thread (each also holds a permit of its stream).
const WRITER_QUEUE: usize = 1024;

/// The largest HTTP/2 frame the gRPC server accepts, and so tells clients they may send.
const MAX_FRAME_SIZE: u32 = 1024 * 1024;

/// State shared by the collector's tasks.
#[derive(Debug)]
pub struct Inner {
    pub config: Config,
    pub storage: Storage,
    pub shared: Arc<Shared>,
    pub commit_log: tokio::sync::Mutex<CommitLog>,
    pub metrics: Arc<Metrics>,
    pub wal_dir: PathBuf,
    /// Serializes flushes.
    pub flush_lock: tokio::sync::Mutex<()>,
    pub file_seq: AtomicU64,
    /// The running sinks (they read the WAL; flushes keep segments they still need).
    pub sinks: Arc<crate::sinks::Sinks>,
}

/// A running collector (storage side); serve it with [`Collector::serve`].
#[derive(Debug)]
pub struct Collector {
    inner: Arc<Inner>,
    writer_tx: WriterSender,
    writer_thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    shutdown_tx: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
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

impl Collector {
    /// Opens storage and the commit log, deletes uncommitted leftovers, replays the WAL and
    /// starts the writer and the background jobs (flush, compaction, retention).
    pub async fn open(config: Config) -> Result<(Collector, Recovery)> {
        // Two rustls crypto backends are in the tree (ring for tonic, aws-lc-rs for the Pub/Sub
        // client): without a process default, TLS setup panics. The first install wins.
        let _ = rustls::crypto::ring::default_provider().install_default();
        config
            .validate()
            .map_err(|problems| crate::config::ConfigErrors {
                origin: "configuration".into(),
                problems,
            })?;
        let storage = Storage::open(&config)?;
        storage.probe(&config.instance_id).await?;
        let log = CommitLog::open(storage.clone(), &config.instance_id).await?;
        let metrics = Arc::new(Metrics::new());
        let mut recovery = Recovery {
            committed_files: log.state().files.len(),
            ..Recovery::default()
        };

        // Leftovers of flushes and compactions a crash interrupted: files of this instance the
        // commit log does not name, and local staging files.
        for table in Table::ALL {
            storage.remove_local_staging_files(table.dir()).await?;
            for (path, _) in storage.list(table.dir()).await? {
                if file_instance(&path) == Some(config.instance_id.as_str())
                    && !log.state().files.contains_key(&path)
                {
                    storage.delete(&path).await?;
                    recovery.orphans_deleted += 1;
                }
            }
        }
        storage.remove_local_staging_files("_verdict").await?;
        metrics
            .orphan_files_deleted
            .fetch_add(recovery.orphans_deleted as u64, Ordering::Relaxed);

        let wal_dir = config.wal_dir();
        std::fs::create_dir_all(&wal_dir).map_err(|e| {
            Error::setting_caused("wal.dir", format!("cannot create {}", wal_dir.display()), e)
        })?;
        let lock_path = wal_dir.join("LOCK");
        let wal_lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                Error::setting_caused(
                    "wal.dir",
                    format!("cannot write in {}", wal_dir.display()),
                    e,
                )
            })?;
        wal_lock.try_lock().map_err(|_| {
            Error::setting(
                "wal.dir",
                format!(
                    "{} is in use by another collector process",
                    wal_dir.display()
                ),
            )
        })?;

        let committed_lsn = log.state().wal_lsn;
        let mut watermarks: HashMap<SourceKey, SourceWatermark> = log.state().watermarks.clone();
        let mut active = RowBuffer::default();
        let mut applied_lsn = committed_lsn;
        let dir = wal_dir.clone();
        let (outcome, active, watermarks, applied_lsn, rows) =
            tokio::task::spawn_blocking(move || {
                let mut rows = 0u64;
                let outcome = wal::replay(&dir, committed_lsn, |lsn, entry| {
                    let node = entry.node.clone().unwrap_or_default();
                    let receive = Timestamp::from_unix_nanos(entry.receive_unix_nanos);
                    let (parts, _) = build_rows(&node, &entry.source_id, receive, &entry.records)
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
                    applied_lsn = lsn;
                    Ok(())
                })?;
                Ok::<_, Error>((outcome, active, watermarks, applied_lsn, rows))
            })
            .await
            .map_err(|e| Error::io("WAL replay task", std::io::Error::other(e)))??;
        recovery.replayed_entries = outcome.replayed;
        recovery.replayed_rows = rows;
        recovery.torn_wal_bytes = outcome.torn_bytes;
        let next_lsn = outcome.next_lsn.max(committed_lsn + 1);
        let wal_writer = WalWriter::create(&wal_dir, next_lsn, config.wal.segment_bytes.0)?;

        let shared = Arc::new(Shared::new(State {
            active,
            frozen: None,
            applied_lsn: next_lsn - 1,
            watermarks: watermarks.clone(),
            committed: Arc::new(log.state().files.clone()),
            failed: None,
            closing: false,
        }));
        debug_assert!(applied_lsn < next_lsn);
        let (writer_tx, writer_rx) = mpsc::channel(WRITER_QUEUE);
        let writer_thread = writer::spawn(
            wal_writer,
            watermarks,
            Arc::clone(&shared),
            Arc::clone(&metrics),
            WriterSettings {
                max_group_bytes: usize::try_from(config.wal.max_group_bytes.0)
                    .unwrap_or(usize::MAX),
                max_unflushed_bytes: usize::try_from(config.flush.max_unflushed_bytes.0)
                    .unwrap_or(usize::MAX),
                flush_rows: config.flush.max_rows,
                source_retention: config.dedup.source_retention,
            },
            writer_rx,
        );
        let sinks = Arc::new(crate::sinks::Sinks::new(
            crate::sinks::SinksSettings {
                wal_dir: wal_dir.clone(),
                data_dir: config.data_dir.clone(),
                max_retention_bytes: config.wal.max_sink_retention_bytes.0,
                build: crate::sinks::BuildContext {
                    parquet: config.parquet.clone(),
                },
            },
            shared.durable.subscribe(),
        ));
        let inner = Arc::new(Inner {
            sinks,
            config,
            storage,
            shared,
            commit_log: tokio::sync::Mutex::new(log),
            metrics,
            wal_dir,
            flush_lock: tokio::sync::Mutex::new(()),
            file_seq: AtomicU64::new(0),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(crate::flush::run(
            Arc::clone(&inner),
            shutdown_rx.clone(),
        ))];
        if inner.config.compaction.enabled {
            tasks.push(tokio::spawn(crate::compaction::run(
                Arc::clone(&inner),
                shutdown_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(crate::retention::run(
            Arc::clone(&inner),
            shutdown_rx,
        )));
        // A bad sink definition is reported by name and skipped; it never stops the collector.
        inner.sinks.apply(&inner.config.sinks).await;
        tracing::info!(
            storage = inner.storage.url(),
            wal = %inner.wal_dir.display(),
            ?recovery,
            "collector opened"
        );
        Ok((
            Collector {
                inner,
                writer_tx: Arc::new(std::sync::Mutex::new(Some(writer_tx))),
                writer_thread: std::sync::Mutex::new(Some(writer_thread)),
                shutdown_tx,
                tasks: std::sync::Mutex::new(tasks),
                wal_lock: std::sync::Mutex::new(Some(wal_lock)),
            },
            recovery,
        ))
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    /// The running sinks.
    pub fn sinks(&self) -> &crate::sinks::Sinks {
        &self.inner.sinks
    }

    /// Replaces the sink definitions without touching ingest (the binary calls it on SIGHUP):
    /// new sinks start, changed ones restart from their cursors, removed ones stop, invalid
    /// ones are rejected by name while the others run.
    pub async fn reload_sinks(&self, definitions: &[toml::Table]) -> crate::sinks::ApplyReport {
        self.inner.sinks.apply(definitions).await
    }

    /// Committed files and not-yet-flushed rows of `table`, consistent with each other (each
    /// row in exactly one of them). For [`Table::Rollups`] the unflushed part is the rollup of
    /// the unflushed flow rows.
    pub fn snapshot(&self, table: Table) -> Result<TableSnapshot> {
        snapshot_of(&self.inner, table)
    }

    /// The committed files of `table`.
    pub fn committed_files(&self, table: Table) -> Vec<FileEntry> {
        self.inner.shared.snapshot(table).files
    }

    /// Rows of `table` (flows or loss) durable but not yet in committed files.
    pub fn unflushed_batches(&self, table: Table) -> Vec<RecordBatch> {
        self.inner.shared.snapshot(table).unflushed
    }

    /// Reads every committed file of `table` (decoded), in path order.
    pub async fn read_committed(&self, table: Table) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for f in self.committed_files(table) {
            let bytes = self
                .inner
                .storage
                .get(&f.path)
                .await?
                .ok_or_else(|| Error::Manifest {
                    path: f.path.clone(),
                    message: "committed but missing from storage".into(),
                })?;
            out.extend(
                tokio::task::spawn_blocking(move || crate::parquet_file::decode(bytes))
                    .await
                    .map_err(|e| Error::io("decoding task", std::io::Error::other(e)))??,
            );
        }
        Ok(out)
    }

    /// Flushes everything buffered now (and waits for it).
    pub async fn flush(&self) -> Result<()> {
        while crate::flush::flush_once(&self.inner).await? {}
        Ok(())
    }

    /// Runs compaction now, as of `now`; returns the merges done.
    pub async fn compact(&self, now: Timestamp) -> Result<usize> {
        crate::compaction::compact_once(&self.inner, now.unix_nanos()).await
    }

    /// Applies retention now, as of `now`; returns the files deleted.
    pub async fn apply_retention(&self, now: Timestamp) -> Result<usize> {
        crate::retention::apply_once(&self.inner, now.unix_nanos()).await
    }

    /// The gRPC ingest service (with token auth when configured).
    pub fn ingest_service(
        &self,
    ) -> Result<tonic::service::interceptor::InterceptedService<IngestServer, TokenAuth>> {
        let writer = Arc::clone(&self.writer_tx);
        let state = Arc::new(IngestState::new(
            &self.inner.config,
            writer,
            Arc::clone(&self.inner.shared),
            Arc::clone(&self.inner.metrics),
            self.shutdown_tx.subscribe(),
        ));
        let max = usize::try_from(self.inner.config.grpc.max_message_bytes.0).unwrap_or(usize::MAX);
        Ok(tonic::service::interceptor::InterceptedService::new(
            IngestServer::new(state, max),
            TokenAuth::new(
                self.inner.config.grpc.auth_tokens.clone(),
                Arc::clone(&self.inner.metrics),
            ),
        ))
    }

    /// Serves gRPC ingest on `grpc` and HTTP on `http` until `shutdown` resolves; then every
    /// stream is answered up to what it sent and ended with `UNAVAILABLE`, and the servers stop.
    /// Call [`close`](Self::close) afterwards to flush.
    pub async fn serve(
        &self,
        grpc: TcpListener,
        http: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let tls = crate::tls::server_config(&self.inner.config)?;
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
        let service = self.ingest_service()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut grpc_stop = stop_rx.clone();
        let grpc_task = tokio::spawn(builder.add_service(service).serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc),
            async move { stopped(&mut grpc_stop).await },
        ));
        let engine = Arc::new(crate::query::engine(&self.inner).await?);
        let router = crate::http::router(Arc::clone(&self.inner)).merge(verdict_query::router(
            engine,
            crate::query::api_settings(&self.inner),
            stop_rx.clone(),
        ));
        let mut http_stop = stop_rx;
        let http_task = tokio::spawn(async move {
            // The peer address tells the query API which clients are on loopback.
            axum::serve(
                http,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(async move { stopped(&mut http_stop).await })
            .await
        });
        shutdown.await;
        tracing::info!("shutting down: closing ingest streams");
        // Stream handlers stop reading, answer what they hold and end their streams, so the
        // server's graceful shutdown does not wait on shippers.
        let _ = self.shutdown_tx.send(true);
        let _ = stop_tx.send(true);
        let grpc_result = grpc_task
            .await
            .map_err(|e| Error::io("gRPC server task", std::io::Error::other(e)))?;
        let _ = http_task.await;
        grpc_result?;
        Ok(())
    }

    /// Stops background jobs and the writer, then flushes everything buffered.
    pub async fn close(&self) -> Result<()> {
        let _ = self.shutdown_tx.send(true);
        // Sinks first: each delivers what it holds and saves its cursor.
        self.inner.sinks.stop_all().await;
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        for t in tasks {
            let _ = t.await;
        }
        // The writer thread ends once its queue is drained and no sender is left.
        self.writer_tx.lock().expect("writer sender lock").take();
        {
            self.inner.shared.lock().closing = true;
        }
        self.inner.shared.space_freed();
        let flushed = self.flush().await;
        let thread = self
            .writer_thread
            .lock()
            .expect("writer thread lock")
            .take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        flushed?;
        // Anything the writer applied while draining.
        self.flush().await?;
        self.wal_lock.lock().expect("wal lock").take();
        tracing::info!("collector closed");
        Ok(())
    }
}

/// See [`Collector::snapshot`].
pub(crate) fn snapshot_of(inner: &Inner, table: Table) -> Result<TableSnapshot> {
    match table {
        Table::Rollups => {
            // One lock for both: a flush between them would count its rows twice (as
            // unflushed flows rolled up here and in the rollup files it committed).
            let (flows, mut s) = inner.shared.snapshot_pair(Table::Flows, Table::Rollups);
            s.unflushed = if flows.unflushed.is_empty() {
                Vec::new()
            } else {
                vec![
                    crate::rollup::aggregate_flows(&flows.unflushed)
                        .map_err(|e| Error::arrow("rolling up unflushed flows", e))?,
                ]
            };
            Ok(s)
        }
        _ => Ok(inner.shared.snapshot(table)),
    }
}

/// Resolves once `rx` turns true (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Binds `grpc.listen` and `http.listen` (an unusable address is reported by its setting).
pub async fn bind(config: &Config) -> Result<(TcpListener, TcpListener)> {
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
    Ok((grpc, http))
}

/// Runs a collector with `config` until `shutdown` resolves: binds `grpc.listen` and
/// `http.listen`, serves, and on shutdown flushes everything buffered.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (grpc, http) = bind(&config).await?;
    let (collector, _) = Collector::open(config).await?;
    let served = collector.serve(grpc, http, shutdown).await;
    let closed = collector.close().await;
    served.and(closed)
}
