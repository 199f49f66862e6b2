//! The value types settings are made of — sizes with units, secrets, object store options,
//! durations as text — and the problem reports validation returns.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A byte count: an integer, or a string with a unit (`"64MiB"`, `"512 KiB"`, `"1GB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '_')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .replace('_', "")
            .parse()
            .map_err(|_| format!("{s:?} is not a size (expected e.g. 1048576 or \"64MiB\")"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "kib" | "k" => 1 << 10,
            "mb" => 1_000_000,
            "mib" | "m" => 1 << 20,
            "gb" => 1_000_000_000,
            "gib" | "g" => 1 << 30,
            other => return Err(format!("unknown size unit {other:?} in {s:?}")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

pub use verdict_service::secret::Secret;

/// object_store options; values whose key names a secret are redacted by `Debug`.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct StorageOptions(pub BTreeMap<String, String>);

impl StorageOptions {
    fn is_secret_key(key: &str) -> bool {
        let k = key.to_ascii_lowercase();
        // Azure's SAS settings are `*sas_key`/`*sas_token`: "key" and "token" cover them
        // (a bare "sas" would also hide Kafka's `sasl.username`).
        ["secret", "token", "password", "credential", "key"]
            .iter()
            .any(|w| k.contains(w))
            && !k.ends_with("key_id")
    }
}

impl fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.0 {
            if Self::is_secret_key(k) {
                m.entry(k, &"<redacted>");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

/// Serde for `Duration` as humantime text (`"5s"`, `"30d"`, `"1h 30m"`).
pub(crate) mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration ({e}); write e.g. \"5s\", \"10m\", \"30d\""
            ))
        })
    }
}

/// One problem with one setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted setting name, e.g. `grpc.max_batch_bytes`.
    pub setting: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// Where the configuration came from (file path, or "defaults").
    pub origin: String,
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({})", self.origin)?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// Which object store a storage URL addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    Local,
    S3,
    Gcs,
    Azure,
}

impl StorageKind {
    /// The backend of `url` (a URL or a plain local path).
    pub fn of(url: &str) -> Result<StorageKind, String> {
        let Some((scheme, _)) = url.split_once("://") else {
            return Ok(StorageKind::Local);
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => Ok(StorageKind::Local),
            "s3" | "s3a" => Ok(StorageKind::S3),
            "gs" => Ok(StorageKind::Gcs),
            "az" | "azure" | "abfs" | "abfss" | "adl" => Ok(StorageKind::Azure),
            other => Err(format!(
                "unsupported scheme {other:?}; use a local path, file://, s3://, gs:// or az://"
            )),
        }
    }

    /// Whether `key` is an object_store option of this backend.
    pub(crate) fn accepts_option(self, key: &str) -> bool {
        let k = key.to_ascii_lowercase();
        match self {
            StorageKind::Local => false,
            StorageKind::S3 => object_store::aws::AmazonS3ConfigKey::from_str(&k).is_ok(),
            StorageKind::Gcs => object_store::gcp::GoogleConfigKey::from_str(&k).is_ok(),
            StorageKind::Azure => object_store::azure::AzureConfigKey::from_str(&k).is_ok(),
        }
    }
}
