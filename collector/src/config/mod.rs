//! The collector's configuration: one TOML file, every setting defaulted so that no file at all
//! runs a complete collector on one machine (gRPC on :9000, HTTP on :8080, Parquet under
//! `verdict-data/lake`, the write-ahead log under `verdict-data/wal`).
//!
//! Environment variables override the file: `VERDICT_COLLECTOR__SECTION__FIELD=value` sets
//! `[section] field = value` (the value is read as a TOML value when it parses as one, e.g.
//! `16`, `true`, `["a","b"]`, otherwise as a string). `collector.example.toml` lists every setting
//! with its default and meaning; a test keeps it equal to [`Config::default`].
//!
//! [`Config::validate`] returns every problem at once, each naming its setting
//! (`grpc.max_batch_bytes: must be at most grpc.max_message_bytes (67108864)`). Settings that can
//! only be checked by using them (a writable directory, a reachable bucket, a certificate that
//! parses) are checked at start and reported the same way.
//!
//! Modules: [`sections`] holds each section's settings (what the parts of the collector take),
//! [`values`] the value types settings are made of (sizes, secrets, object store options) and
//! the problem reports. This module is the file as a whole: [`Config`], loading, environment
//! overrides and validation; sinks' definitions are read by `sinks::registry`.

pub mod alerts;
pub mod sections;
pub mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use self::alerts::AlertsConfig;
pub use self::sections::*;
pub use self::values::*;
use crate::sinks::registry::SinkDefinition;

/// Prefix of environment variables that override settings.
pub const ENV_PREFIX: &str = "VERDICT_COLLECTOR__";

pub const DEFAULT_INSTANCE_ID: &str = "collector-0";
pub const DEFAULT_DATA_DIR: &str = "verdict-data";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Names this collector in the files it writes and in its commit log
    /// (`_verdict/INSTANCE/…`). Collectors that share one storage URL need distinct ids; a
    /// restarted collector must keep its id (and its `wal.dir`). Letters, digits, `-` and `_`.
    pub instance_id: String,
    /// Local directory for state that must survive restarts. `wal.dir` and the default
    /// `storage.url` live under it. Relative paths are relative to the working directory.
    pub data_dir: PathBuf,
    pub grpc: GrpcConfig,
    pub http: HttpConfig,
    pub storage: StorageConfig,
    pub wal: WalConfig,
    pub flush: FlushConfig,
    pub parquet: ParquetConfig,
    pub compaction: CompactionConfig,
    pub retention: RetentionConfig,
    pub dedup: DedupConfig,
    pub query: QueryConfig,
    /// Sinks (`[[sinks]]`): routes of records to Kafka, Pub/Sub or object storage, see
    /// `sinks::definition::SinkConfig`. Each definition is validated on its own when read: a bad
    /// one is kept as rejected (reported by name and skipped), the others run. Re-read on
    /// SIGHUP.
    #[serde(deserialize_with = "crate::sinks::registry::deserialize_definitions")]
    pub sinks: Vec<SinkDefinition>,
    /// Log-based metrics, deny-spike detectors and where alerts go (`[alerts]`, see
    /// [`alerts`]).
    pub alerts: AlertsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            instance_id: DEFAULT_INSTANCE_ID.to_owned(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            grpc: GrpcConfig::default(),
            http: HttpConfig::default(),
            storage: StorageConfig::default(),
            wal: WalConfig::default(),
            flush: FlushConfig::default(),
            parquet: ParquetConfig::default(),
            compaction: CompactionConfig::default(),
            retention: RetentionConfig::default(),
            dedup: DedupConfig::default(),
            query: QueryConfig::default(),
            sinks: Vec::new(),
            alerts: AlertsConfig::default(),
        }
    }
}

impl Config {
    /// Reads `path` (or nothing: defaults), then applies `VERDICT_COLLECTOR__*` overrides from
    /// `env`, then validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        let origin = path.map_or_else(|| "defaults".to_owned(), |p| p.display().to_string());
        let fail = |setting: &str, message: String| ConfigErrors {
            origin: origin.clone(),
            problems: vec![ConfigProblem {
                setting: setting.to_owned(),
                message,
            }],
        };
        let mut table = match path {
            None => toml::Table::new(),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| fail("--config", format!("cannot read {}: {e}", p.display())))?;
                text.parse::<toml::Table>()
                    .map_err(|e| fail("--config", format!("not valid TOML: {e}")))?
            }
        };
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let keys: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if keys.iter().any(String::is_empty) {
                return Err(fail(&name, "empty key segment".into()));
            }
            set_path(&mut table, &keys, parse_env_value(&value))
                .map_err(|m| fail(&keys.join("."), format!("from ${name}: {m}")))?;
        }
        let config: Config = Config::deserialize(toml::Value::Table(table)).map_err(|e| {
            // serde names the field (`unknown field `lisen``); toml gives the path.
            fail("config", e.to_string())
        })?;
        config.validate().map_err(|problems| ConfigErrors {
            origin: origin.clone(),
            problems,
        })?;
        Ok(config)
    }

    /// Every problem with this configuration, or `Ok`.
    pub fn validate(&self) -> Result<(), Vec<ConfigProblem>> {
        let mut p = Vec::new();
        let mut bad = |setting: &str, message: String| {
            p.push(ConfigProblem {
                setting: setting.to_owned(),
                message,
            })
        };
        if self.instance_id.is_empty()
            || self.instance_id.len() > 64
            || !self
                .instance_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bad(
                "instance_id",
                format!(
                    "{:?}: use 1–64 letters, digits, '-' or '_'",
                    self.instance_id
                ),
            );
        }
        if self.data_dir.as_os_str().is_empty() {
            bad("data_dir", "must not be empty".into());
        }
        let g = &self.grpc;
        if g.listen == self.http.listen && g.listen.port() != 0 {
            bad(
                "http.listen",
                format!("{} is also grpc.listen", self.http.listen),
            );
        }
        if g.max_batch_bytes.0 == 0 {
            bad("grpc.max_batch_bytes", "must be positive".into());
        }
        if g.max_message_bytes < g.max_batch_bytes {
            bad(
                "grpc.max_batch_bytes",
                format!(
                    "must be at most grpc.max_message_bytes ({})",
                    g.max_message_bytes.0
                ),
            );
        }
        if g.max_message_bytes.0 > u64::from(u32::MAX) {
            bad(
                "grpc.max_message_bytes",
                "must be below 4 GiB (a gRPC message length is 32 bits)".into(),
            );
        }
        if g.max_records_per_batch == 0 {
            bad("grpc.max_records_per_batch", "must be positive".into());
        }
        if g.max_record_bytes.0 == 0 || g.max_record_bytes > g.max_batch_bytes {
            bad(
                "grpc.max_record_bytes",
                "must be positive and at most grpc.max_batch_bytes".into(),
            );
        }
        if g.max_in_flight_batches == 0 {
            bad("grpc.max_in_flight_batches", "must be positive".into());
        }
        if g.max_streams == 0 {
            bad("grpc.max_streams", "must be positive".into());
        }
        if g.max_record_age < Duration::from_secs(60) {
            bad("grpc.max_record_age", "must be at least 1m".into());
        }
        if g.max_record_ahead < Duration::from_secs(1) {
            bad("grpc.max_record_ahead", "must be at least 1s".into());
        }
        if self.http.max_connections == 0 {
            bad("http.max_connections", "must be positive".into());
        }
        if self.http.header_read_timeout.is_zero() {
            bad("http.header_read_timeout", "must be positive".into());
        }
        if g.max_sequence_gap.0 == 0 {
            bad("grpc.max_sequence_gap", "must be positive".into());
        }
        if let Some(path) = &g.node_tokens_file
            && !path.is_file()
        {
            bad(
                "grpc.node_tokens_file",
                format!("{} is not a file", path.display()),
            );
        }
        if let Some(k) = &g.kubernetes {
            if k.audience.trim().is_empty() {
                bad("grpc.kubernetes.audience", "must not be empty".into());
            }
            if k.service_accounts.is_empty() {
                bad(
                    "grpc.kubernetes.service_accounts",
                    "name the agents' ServiceAccounts (NAMESPACE:NAME)".into(),
                );
            }
            for sa in &k.service_accounts {
                let valid = sa.split_once(':').is_some_and(|(ns, name)| {
                    !ns.is_empty() && !name.is_empty() && !name.contains(':')
                });
                if !valid {
                    bad(
                        "grpc.kubernetes.service_accounts",
                        format!("{sa:?} is not NAMESPACE:NAME"),
                    );
                }
            }
            if k.cache_ttl.is_zero() {
                bad("grpc.kubernetes.cache_ttl", "must be positive".into());
            }
            if g.tls.is_none() && !g.listen.ip().is_loopback() {
                bad(
                    "grpc.kubernetes",
                    "ServiceAccount tokens would cross the network in clear text: configure grpc.tls".into(),
                );
            }
        }
        let node_credentials = g.node_tokens_file.is_some()
            || g.kubernetes.is_some()
            || g.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some());
        if !g.listen.ip().is_loopback() && !node_credentials && !g.insecure {
            bad(
                "grpc.listen",
                format!(
                    "{} accepts nodes from other hosts but no node credential is configured: set \
                     grpc.node_tokens_file, grpc.kubernetes or grpc.tls.client_ca_file (or \
                     grpc.insecure = true to \
                     accept any client as any node)",
                    g.listen
                ),
            );
        }
        if let Some(tls) = &g.tls {
            for (name, path) in [
                ("grpc.tls.cert_file", Some(&tls.cert_file)),
                ("grpc.tls.key_file", Some(&tls.key_file)),
                ("grpc.tls.client_ca_file", tls.client_ca_file.as_ref()),
            ] {
                if let Some(path) = path
                    && !path.is_file()
                {
                    bad(name, format!("{} is not a readable file", path.display()));
                }
            }
        }
        let url = self.storage_url();
        match StorageKind::of(&url) {
            Err(m) => bad("storage.url", m),
            Ok(kind) => {
                if kind != StorageKind::Local {
                    if let Err(e) = url::Url::parse(&url) {
                        bad("storage.url", format!("{url:?} is not a URL: {e}"));
                    }
                } else if url.starts_with("file://") && !url.starts_with("file:///") {
                    bad(
                        "storage.url",
                        "a file:// URL needs an absolute path (file:///…); or give a plain path"
                            .into(),
                    );
                }
                for key in self.storage.options.0.keys() {
                    if !kind.accepts_option(key) {
                        bad(
                            &format!("storage.options.{key}"),
                            format!("not an option of the {kind:?} backend of {url:?}"),
                        );
                    }
                }
            }
        }
        if self.wal.segment_bytes.0 < 1 << 20 {
            bad("wal.segment_bytes", "must be at least 1 MiB".into());
        }
        if self.wal.max_group_bytes < g.max_batch_bytes {
            bad(
                "wal.max_group_bytes",
                "must be at least grpc.max_batch_bytes".into(),
            );
        }
        if self.flush.max_age.is_zero() {
            bad("flush.max_age", "must be positive".into());
        }
        if self.flush.max_rows == 0 {
            bad("flush.max_rows", "must be positive".into());
        }
        if self.flush.max_unflushed_bytes.0 < 4 * g.max_batch_bytes.0 {
            bad(
                "flush.max_unflushed_bytes",
                "must be at least 4 × grpc.max_batch_bytes".into(),
            );
        }
        let pq = &self.parquet;
        if !(1..=22).contains(&pq.zstd_level) {
            bad(
                "parquet.zstd_level",
                format!("{} is not in 1–22", pq.zstd_level),
            );
        }
        if pq.row_group_rows == 0 {
            bad("parquet.row_group_rows", "must be positive".into());
        }
        if pq.data_page_rows == 0 || pq.data_page_rows > pq.row_group_rows {
            bad(
                "parquet.data_page_rows",
                "must be positive and at most parquet.row_group_rows".into(),
            );
        }
        if !(pq.bloom_filter_fpp > 0.0 && pq.bloom_filter_fpp < 1.0) {
            bad(
                "parquet.bloom_filter_fpp",
                format!("{} is not between 0 and 1", pq.bloom_filter_fpp),
            );
        }
        let c = &self.compaction;
        if c.interval.is_zero() {
            bad("compaction.interval", "must be positive".into());
        }
        if c.min_files < 2 {
            bad("compaction.min_files", "must be at least 2".into());
        }
        if c.target_file_bytes.0 < 1 << 20 {
            bad(
                "compaction.target_file_bytes",
                "must be at least 1 MiB".into(),
            );
        }
        let r = &self.retention;
        if r.interval.is_zero() {
            bad("retention.interval", "must be positive".into());
        }
        for (name, d) in [
            ("retention.flows", r.flows),
            ("retention.loss", r.loss),
            ("retention.rollups", r.rollups),
        ] {
            if !d.is_zero() && d < Duration::from_secs(3600) {
                bad(
                    name,
                    "must be 0s (keep forever) or at least 1h (partitions are hours)".into(),
                );
            }
        }
        if self.dedup.source_retention < Duration::from_secs(60) {
            bad("dedup.source_retention", "must be at least 1m".into());
        }
        let q = &self.query;
        if q.max_rows == 0 {
            bad("query.max_rows", "must be at least 1".into());
        }
        if q.max_memory.0 < 16 << 20 {
            bad("query.max_memory", "must be at least 16MiB".into());
        }
        if q.timeout.is_zero() {
            bad("query.timeout", "must be more than 0s".into());
        }
        if q.max_concurrent == 0 {
            bad("query.max_concurrent", "must be positive".into());
        }
        for (setting, size) in [
            ("query.max_sql_bytes", q.max_sql_bytes),
            ("query.max_value_bytes", q.max_value_bytes),
            ("query.max_result_bytes", q.max_result_bytes),
        ] {
            if size.0 == 0 {
                bad(setting, "must be positive".into());
            }
        }
        if q.auth_tokens.iter().any(|t| t.expose().trim().is_empty()) {
            bad("query.auth_tokens", "a token must not be empty".into());
        }
        p.extend(self.alerts.problems());
        if p.is_empty() { Ok(()) } else { Err(p) }
    }

    /// Whether every setting but `sinks` equals `other`'s.
    pub fn same_except_sinks(&self, other: &Config) -> bool {
        let mut a = self.clone();
        a.sinks.clone_from(&other.sinks);
        a == *other
    }

    /// The storage URL, with the default (`DATA_DIR/lake`) filled in.
    pub fn storage_url(&self) -> String {
        match &self.storage.url {
            Some(u) => u.clone(),
            None => self.data_dir.join("lake").display().to_string(),
        }
    }

    /// The write-ahead log directory, with the default (`DATA_DIR/wal`) filled in.
    pub fn wal_dir(&self) -> PathBuf {
        self.wal
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("wal"))
    }
}

/// An override value: TOML when it parses as a TOML value, otherwise the raw string.
fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = keys.split_last().expect("at least one key");
    let mut t = table;
    for k in parents {
        let entry = t
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry
            .as_table_mut()
            .ok_or_else(|| format!("{k} is not a section"))?;
    }
    // Keep strings that look like numbers as strings where the file had a string.
    let value = match (t.get(last), value) {
        (Some(toml::Value::String(_)), toml::Value::Integer(i)) => {
            toml::Value::String(i.to_string())
        }
        (Some(toml::Value::String(_)), toml::Value::Float(f)) => toml::Value::String(f.to_string()),
        (Some(toml::Value::String(_)), toml::Value::Boolean(b)) => {
            toml::Value::String(b.to_string())
        }
        (_, v) => v,
    };
    t.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_work_on_one_machine() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.grpc.listen.port(), 9000);
        assert_eq!(c.http.listen.port(), 8080);
        assert_eq!(c.storage_url(), "verdict-data/lake");
        assert_eq!(c.wal_dir(), PathBuf::from("verdict-data/wal"));
    }

    #[test]
    fn the_example_file_lists_exactly_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("collector.example.toml");
        let c = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(c, Config::default());
    }

    /// The settings named by the problems of a configuration file holding `toml`, and the
    /// error's text.
    fn problems(toml: &str) -> (Vec<String>, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        let e = Config::load(Some(&path), env(&[])).unwrap_err();
        let settings = e.problems.iter().map(|p| p.setting.clone()).collect();
        (settings, e.to_string())
    }

    #[test]
    fn every_problem_is_reported_with_its_setting() {
        let (settings, text) = problems(
            r#"
instance_id = "a b"
[grpc]
max_batch_bytes = "128MiB"
[parquet]
zstd_level = 40
[storage]
url = "ftp://x/y"
"#,
        );
        assert_eq!(
            settings,
            [
                "instance_id",
                "grpc.max_batch_bytes",
                "storage.url",
                "wal.max_group_bytes",
                "parquet.zstd_level",
            ],
            "{text}"
        );
        assert!(
            text.contains("parquet.zstd_level: 40 is not in 1–22"),
            "{text}"
        );
        assert!(text.contains("unsupported scheme \"ftp\""), "{text}");
    }

    #[test]
    fn unknown_settings_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[grpc]\nlisen = \"0.0.0.0:1\"\n").unwrap();
        let e = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(e.contains("unknown field `lisen`"), "{e}");
        let e = Config::load(None, env(&[("VERDICT_COLLECTOR__FLUSH__MAX_AGE", "soon")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"soon\" is not a duration"), "{e}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "instance_id = \"a\"\n[grpc]\nlisten = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            env(&[
                ("VERDICT_COLLECTOR__GRPC__LISTEN", "127.0.0.1:7000"),
                ("VERDICT_COLLECTOR__QUERY__AUTH_TOKENS", r#"["t1", "t2"]"#),
                ("VERDICT_COLLECTOR__STORAGE__URL", "s3://bucket/lake"),
                (
                    "VERDICT_COLLECTOR__STORAGE__OPTIONS__AWS_ENDPOINT",
                    "http://127.0.0.1:9",
                ),
                ("VERDICT_COLLECTOR__FLUSH__MAX_ROWS", "10"),
                ("VERDICT_COLLECTOR__INSTANCE_ID", "12"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.grpc.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(
            c.query.auth_tokens,
            vec![Secret::new("t1"), Secret::new("t2")]
        );
        assert_eq!(c.storage_url(), "s3://bucket/lake");
        assert_eq!(c.flush.max_rows, 10);
        // A number given for a setting the file had as a string stays a string.
        assert_eq!(c.instance_id, "12");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let mut c = Config::default();
        c.query.auth_tokens = vec![Secret::new("hunter2")];
        c.storage
            .options
            .0
            .insert("aws_secret_access_key".into(), "s3cr3t".into());
        c.storage
            .options
            .0
            .insert("aws_access_key_id".into(), "AKIDVISIBLE".into());
        c.storage
            .options
            .0
            .insert("aws_endpoint".into(), "http://e".into());
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2") && !d.contains("s3cr3t"), "{d}");
        assert!(d.contains("AKIDVISIBLE") && d.contains("http://e"), "{d}");
    }

    #[test]
    fn ingest_beyond_loopback_needs_a_node_credential_or_an_explicit_insecure() {
        let mut c = Config::default();
        c.grpc.listen = "0.0.0.0:9000".parse().unwrap();
        c.http.listen = "127.0.0.1:8080".parse().unwrap();
        let problems = c.validate().unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].setting, "grpc.listen");
        assert!(
            problems[0].message.contains("no node credential"),
            "{}",
            problems[0].message
        );
        // IPv6 too.
        c.grpc.listen = "[::]:9000".parse().unwrap();
        assert_eq!(c.validate().unwrap_err()[0].setting, "grpc.listen");
        // An explicit opt-out, or a credential, is accepted.
        c.grpc.insecure = true;
        assert!(c.validate().is_ok());
        c.grpc.insecure = false;
        let tokens = tempfile::NamedTempFile::new().unwrap();
        c.grpc.node_tokens_file = Some(tokens.path().to_owned());
        assert!(c.validate().is_ok());
        // Loopback needs nothing.
        let mut c = Config::default();
        c.grpc.listen = "[::1]:9000".parse().unwrap();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn kubernetes_identity_is_checked() {
        let (settings, text) = problems(
            r#"
[grpc]
listen = "0.0.0.0:9000"
[grpc.kubernetes]
audience = " "
service_accounts = ["verdict-agent", "ns:a:b"]
cache_ttl = "0s"
"#,
        );
        assert_eq!(
            settings,
            [
                "grpc.kubernetes.audience",
                "grpc.kubernetes.service_accounts",
                "grpc.kubernetes.service_accounts",
                "grpc.kubernetes.cache_ttl",
                "grpc.kubernetes",
            ],
            "{text}"
        );
        assert!(
            text.contains("\"verdict-agent\" is not NAMESPACE:NAME"),
            "{text}"
        );
        assert!(text.contains("clear text: configure grpc.tls"), "{text}");
        // A Kubernetes identity is a node credential: with TLS, listening off loopback is fine.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "").unwrap();
        let mut c = Config::default();
        c.grpc.listen = "0.0.0.0:9000".parse().unwrap();
        c.grpc.tls = Some(TlsConfig {
            cert_file: path.clone(),
            key_file: path.clone(),
            client_ca_file: None,
        });
        c.grpc.kubernetes = Some(KubernetesIdentityConfig {
            audience: "verdict-collector".into(),
            service_accounts: vec!["verdict:verdict-agent".into()],
            cache_ttl: Duration::from_secs(300),
            kubeconfig: None,
            context: None,
        });
        c.validate().unwrap();
    }

    #[test]
    fn storage_options_must_belong_to_the_backend() {
        let mut c = Config::default();
        c.storage.url = Some("s3://b/p".into());
        c.storage
            .options
            .0
            .insert("aws_endpoint".into(), "http://e".into());
        c.storage
            .options
            .0
            .insert("google_service_account".into(), "x".into());
        let p = c.validate().unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].setting, "storage.options.google_service_account");
        c.storage.options.0.remove("google_service_account");
        c.storage.url = Some("gs://b/p".into());
        assert_eq!(
            c.validate().unwrap_err()[0].setting,
            "storage.options.aws_endpoint"
        );
        c.storage.options.0.clear();
        for url in [
            "gs://b/p",
            "az://c/p",
            "s3://b",
            "/abs/path",
            "rel/path",
            "file:///abs",
        ] {
            c.storage.url = Some(url.into());
            c.validate().unwrap_or_else(|e| panic!("{url}: {e:?}"));
        }
    }

    #[test]
    fn sizes_accept_units() {
        assert_eq!("64MiB".parse::<ByteSize>().unwrap(), ByteSize(64 << 20));
        assert_eq!("512 KiB".parse::<ByteSize>().unwrap(), ByteSize(512 << 10));
        assert_eq!("1GB".parse::<ByteSize>().unwrap(), ByteSize(1_000_000_000));
        assert_eq!("1_000".parse::<ByteSize>().unwrap(), ByteSize(1000));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
    }
}
