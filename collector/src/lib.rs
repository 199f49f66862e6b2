//! `verdict-collector`: the central service nodes stream their policy-action records to. It
//! deduplicates them exactly once per (node, source), makes them durable in a write-ahead log
//! before acknowledging, and stores them as hive-partitioned Parquet (zstd) on object storage —
//! a local folder by default, S3, GCS or Azure by URL — with one-minute rollups beside the raw
//! rows; it routes them to sinks and answers queries over the lake. See docs/design.md
//! ("Storage and exactly-once", "Sinks", "Queries").
//!
//! Modules:
//! - [`config`]: the TOML configuration, its defaults, env overrides and validation.
//! - [`ingest`]: the gRPC service `verdict.ingest.v1.Ingest/Stream` (raw-bytes codec, per-stream
//!   backpressure); [`node_auth`]: each stream bound to the node its token or client
//!   certificate names; [`tls`]: TLS and mTLS.
//! - [`decode`]: batch validation, record decoding and conversion to Arrow rows.
//! - [`writer`]: the single writer — dedup, WAL group commit, apply, acknowledge. **The
//!   exactly-once invariant is written at its top.**
//! - [`wal`]: the write-ahead log format, replay and truncation.
//! - [`buffer`]: unflushed rows and the state readers, writer and flusher share.
//! - [`lake`]: the [`Lake`](lake::Lake) — storage, the commit log, the published snapshot, file
//!   naming; upload, commit (and publish), discard, snapshot. **How a change becomes visible
//!   is written at its top.**
//! - [`flush`], [`compaction`], [`retention`]: the tasks that change the lake — buffered rows
//!   to Parquet files committed with the watermarks they imply; merging small files; deleting
//!   expired partitions.
//! - [`manifest`]: the commit log in object storage (files, watermarks, WAL position).
//! - [`rollup`]: one-minute aggregates.
//! - [`parquet_file`]: file layout, encoding and decoding; [`storage`]: object storage;
//!   [`table`]: tables and hive partitions.
//! - [`metrics`], [`http`]: Prometheus metrics on the HTTP port.
//! - [`query`]: the lake as the query engine sees it (`verdict-query`), and the engine and
//!   query API (`/v2/entries:list`, `/v1/sql`, `/v1/tail`) served on the HTTP port.
//! - [`sinks`]: routing stored records to Kafka, Pub/Sub and object storage through filters,
//!   each sink with its own durable cursor in the WAL, one folder per destination. **The
//!   delivery invariant is at its top.**
//! - [`alerts`]: log-based metrics on `/metrics` and the deny-spike detectors of
//!   `[[alerts.rules]]` over applied rows, with Alertmanager, webhook and topic receivers and
//!   `GET /v1/alerts`.
//! - [`service`]: [`Collector`] — open (recovery), serve, close — and [`run`]; nothing else
//!   imports it.

pub mod alerts;
pub mod buffer;
pub mod compaction;
pub mod config;
pub mod decode;
pub mod error;
pub mod flush;
pub mod http;
pub mod ingest;
pub mod lake;
pub mod manifest;
pub mod metrics;
pub mod node_auth;
pub mod parquet_file;
pub mod query;
pub mod retention;
pub mod rollup;
pub mod service;
pub mod sinks;
pub mod storage;
pub mod table;
pub mod tls;
pub mod wal;
pub mod writer;

pub use config::Config;
pub use error::{Error, Result};
pub use service::{Collector, Listeners, Recovery, run};
pub use table::{Hour, Table};
