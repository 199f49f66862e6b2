//! Object storage: a local folder by default, S3, GCS or Azure by URL, all through
//! `object_store`. Every object the collector writes is addressed relative to the storage root
//! (the URL's path), so a lake can be moved or read under another prefix.
//!
//! A written object is either complete or absent: object stores make a PUT (and a completed
//! multipart upload) visible atomically, and the local backend writes a staging file
//! (`NAME#N`, which readers never list) and renames it. On the local backend every object is
//! also fsynced (file and folder) before the call returns, so the commit log never names a file
//! a power loss could take back.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::config::values::{StorageKind, StorageOptions};
use crate::error::{Error, Result};
use crate::table::{Hour, Table};

/// Objects larger than this are uploaded in parts.
const MULTIPART_THRESHOLD: usize = 32 << 20;
const MULTIPART_CHUNK: usize = 16 << 20;

/// The folder under the storage root that holds Verdict's own metadata (commit logs, start-up
/// probes), `_verdict/INSTANCE/…`; everything else is table data.
pub const METADATA_DIR: &str = "_verdict";

/// The opened storage root.
#[derive(Debug, Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    root: Path,
    /// The root folder on disk, for the local backend.
    local_root: Option<PathBuf>,
    url: String,
}

impl Storage {
    /// Opens the lake's storage: `url` is `storage.url` (or its default under the data
    /// directory), `options` `storage.options` (creating the local folder if needed). Does no I/O
    /// against a remote store; [`probe`](Self::probe) does.
    pub fn open(url: &str, options: &StorageOptions) -> Result<Storage> {
        Storage::open_url(url, &options.0, "storage.url", "storage.options")
    }

    /// Opens the storage at `url` with object_store `opts` (also used by sinks exporting to
    /// object storage); errors name `url_setting` or `options_setting`.
    pub fn open_url(
        url: &str,
        opts: &std::collections::BTreeMap<String, String>,
        url_setting: &str,
        options_setting: &str,
    ) -> Result<Storage> {
        let url = url.to_owned();
        let kind = StorageKind::of(&url).map_err(|m| Error::setting(url_setting, m))?;
        match kind {
            StorageKind::Local => {
                let dir = PathBuf::from(url.strip_prefix("file://").unwrap_or(&url));
                std::fs::create_dir_all(&dir).map_err(|e| {
                    Error::setting_caused(
                        url_setting,
                        format!("cannot create the folder {}", dir.display()),
                        e,
                    )
                })?;
                let dir = dir.canonicalize().map_err(|e| {
                    Error::setting_caused(url_setting, format!("cannot resolve {url}"), e)
                })?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| Error::setting_caused(url_setting, "cannot open folder", e))?;
                Ok(Storage {
                    store: Arc::new(store),
                    root: Path::default(),
                    local_root: Some(dir),
                    url,
                })
            }
            _ => {
                let parsed = url::Url::parse(&url)
                    .map_err(|e| Error::setting_caused(url_setting, "not a URL", e))?;
                let (_, root) = object_store::ObjectStoreScheme::parse(&parsed)
                    .map_err(|e| Error::setting_caused(url_setting, "not a storage URL", e))?;
                let bad = |e: object_store::Error| {
                    Error::setting_caused(options_setting, format!("cannot open {url}"), e)
                };
                let store: Arc<dyn ObjectStore> = match kind {
                    StorageKind::S3 => {
                        let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(&url);
                        for (k, v) in opts {
                            let key = k.to_ascii_lowercase().parse().map_err(bad)?;
                            b = b.with_config(key, v);
                        }
                        Arc::new(b.build().map_err(bad)?)
                    }
                    StorageKind::Gcs => {
                        let mut b =
                            object_store::gcp::GoogleCloudStorageBuilder::from_env().with_url(&url);
                        for (k, v) in opts {
                            let key = k.to_ascii_lowercase().parse().map_err(bad)?;
                            b = b.with_config(key, v);
                        }
                        Arc::new(b.build().map_err(bad)?)
                    }
                    StorageKind::Azure => {
                        let mut b =
                            object_store::azure::MicrosoftAzureBuilder::from_env().with_url(&url);
                        for (k, v) in opts {
                            let key = k.to_ascii_lowercase().parse().map_err(bad)?;
                            b = b.with_config(key, v);
                        }
                        Arc::new(b.build().map_err(bad)?)
                    }
                    StorageKind::Local => unreachable!("handled above"),
                };
                Ok(Storage {
                    store,
                    root,
                    local_root: None,
                    url,
                })
            }
        }
    }

    /// The underlying store (for readers such as a query engine).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// The root every relative path is under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The storage URL as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The root folder on disk, when storage is local.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local_root.as_deref()
    }

    /// `relative` (e.g. `policy_action/dt=…/hour=…/f.parquet`) under the root.
    pub fn path(&self, relative: &str) -> Path {
        relative
            .split('/')
            .filter(|p| !p.is_empty())
            .fold(self.root.clone(), |p, part| p.join(part))
    }

    /// The path of `location` relative to the root, if it is under it.
    pub fn relative(&self, location: &Path) -> Option<String> {
        let parts: Vec<String> = location
            .prefix_match(&self.root)?
            .map(|p| p.as_ref().to_owned())
            .collect();
        Some(parts.join("/"))
    }

    /// Relative path of a data file.
    pub fn data_file(table: Table, hour: Hour, name: &str) -> String {
        format!("{}/{}/{name}", table.dir(), hour.partition_path())
    }

    /// Checks that the store accepts a write, a read and a delete under the root.
    pub async fn probe(&self, instance_id: &str) -> Result<()> {
        let rel = format!("{METADATA_DIR}/{instance_id}/probe");
        let fail = |what: &str, e: object_store::Error| {
            Error::setting_caused(
                "storage.url",
                format!(
                    "cannot {what} under {} (check the URL, credentials and options)",
                    self.url
                ),
                e,
            )
        };
        self.put(&rel, Bytes::from_static(b"ok"))
            .await
            .map_err(|e| match e {
                Error::ObjectStore { source, .. } => fail("write", source),
                other => other,
            })?;
        self.store
            .get(&self.path(&rel))
            .await
            .map_err(|e| fail("read", e))?;
        self.store
            .delete(&self.path(&rel))
            .await
            .map_err(|e| fail("delete", e))?;
        Ok(())
    }

    /// Writes `bytes` at `relative`, atomically, durably on the local backend.
    pub async fn put(&self, relative: &str, bytes: Bytes) -> Result<()> {
        let path = self.path(relative);
        if bytes.len() > MULTIPART_THRESHOLD {
            let upload = self
                .store
                .put_multipart(&path)
                .await
                .map_err(|e| Error::store(format!("starting upload of {path}"), e))?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, MULTIPART_CHUNK);
            w.put(bytes);
            w.finish()
                .await
                .map_err(|e| Error::store(format!("uploading {path}"), e))?;
        } else {
            self.store
                .put(&path, PutPayload::from_bytes(bytes))
                .await
                .map_err(|e| Error::store(format!("writing {path}"), e))?;
        }
        if let Some(root) = &self.local_root {
            let file = root.join(relative);
            tokio::task::spawn_blocking(move || sync_file_and_parent(&file))
                .await
                .map_err(|e| Error::io("fsync task", std::io::Error::other(e)))??;
        }
        Ok(())
    }

    /// Reads the whole object at `relative`; `None` when it does not exist.
    pub async fn get(&self, relative: &str) -> Result<Option<Bytes>> {
        let path = self.path(relative);
        match self.store.get(&path).await {
            Ok(r) => r
                .bytes()
                .await
                .map(Some)
                .map_err(|e| Error::store(format!("reading {path}"), e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::store(format!("reading {path}"), e)),
        }
    }

    /// Deletes `relative`; a missing object is not an error.
    pub async fn delete(&self, relative: &str) -> Result<()> {
        let path = self.path(relative);
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::store(format!("deleting {path}"), e)),
        }
    }

    /// Every object under `relative_prefix` (recursively), as relative paths with sizes.
    pub async fn list(&self, relative_prefix: &str) -> Result<Vec<(String, u64)>> {
        let prefix = self.path(relative_prefix);
        let metas: Vec<ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| Error::store(format!("listing {prefix}"), e))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| Some((self.relative(&m.location)?, m.size)))
            .collect())
    }

    /// Removes staging files (`NAME#N`) a crash left in the local folder under
    /// `relative_prefix`. Object stores have no such leftovers (an unfinished multipart upload is
    /// invisible and expires by bucket lifecycle).
    pub async fn remove_local_staging_files(&self, relative_prefix: &str) -> Result<usize> {
        let Some(root) = &self.local_root else {
            return Ok(0);
        };
        let dir = root.join(relative_prefix);
        tokio::task::spawn_blocking(move || {
            let mut removed = 0;
            let mut stack = vec![dir];
            while let Some(d) = stack.pop() {
                let entries = match std::fs::read_dir(&d) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(format!("listing {}", d.display()), e)),
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if is_staging_name(&entry.file_name().to_string_lossy()) {
                        std::fs::remove_file(&path)
                            .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
                        removed += 1;
                    }
                }
            }
            Ok(removed)
        })
        .await
        .map_err(|e| Error::io("cleanup task", std::io::Error::other(e)))?
    }
}

/// object_store's local staging names: `NAME#DIGITS`.
fn is_staging_name(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn sync_file_and_parent(file: &std::path::Path) -> Result<()> {
    let f = std::fs::File::open(file)
        .map_err(|e| Error::io(format!("opening {}", file.display()), e))?;
    f.sync_all()
        .map_err(|e| Error::io(format!("fsync {}", file.display()), e))?;
    if let Some(dir) = file.parent() {
        let d = std::fs::File::open(dir)
            .map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
        d.sync_all()
            .map_err(|e| Error::io(format!("fsync {}", dir.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names() {
        assert!(is_staging_name("part.parquet#12"));
        assert!(!is_staging_name("part.parquet"));
        assert!(!is_staging_name("part#x"));
    }

    #[tokio::test]
    async fn local_round_trip_under_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/lake", dir.path().display());
        let s = Storage::open(&url, &StorageOptions::default()).unwrap();
        s.probe("i").await.unwrap();
        s.put("a/b/c.txt", Bytes::from_static(b"hi")).await.unwrap();
        assert_eq!(s.get("a/b/c.txt").await.unwrap().unwrap(), "hi");
        assert_eq!(s.get("a/none").await.unwrap(), None);
        assert_eq!(
            s.list("a").await.unwrap(),
            vec![("a/b/c.txt".to_owned(), 2)]
        );
        std::fs::write(dir.path().join("lake/a/b/c.txt#3"), b"half").unwrap();
        assert_eq!(
            s.list("a").await.unwrap().len(),
            1,
            "staging files are not listed"
        );
        assert_eq!(s.remove_local_staging_files("a").await.unwrap(), 1);
        s.delete("a/b/c.txt").await.unwrap();
        s.delete("a/b/c.txt").await.unwrap();
        assert!(s.list("a").await.unwrap().is_empty());
    }
}
