//! A sink's durable cursor: the LSN of the last write-ahead log entry the sink has finished
//! with (every record of it delivered, dead-lettered or filtered out). One small file per sink,
//! `WAL_DIR/sink-cursors/NAME.cursor`, beside the log its positions refer to; replaced
//! atomically (write a temporary file, fsync, rename, fsync the folder), so after a crash it
//! holds either the old or the new position — never a torn one. The sink resumes at the entry
//! after it, so a crash re-sends at most what was delivered since the last save (at least once).

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The cursor file of one sink.
#[derive(Debug, Clone)]
pub struct CursorFile {
    path: PathBuf,
}

impl CursorFile {
    pub fn new(wal_dir: &Path, sink: &str) -> CursorFile {
        CursorFile {
            path: wal_dir.join("sink-cursors").join(format!("{sink}.cursor")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved position, or `None` for a sink that never saved one.
    pub fn load(&self) -> Result<Option<u64>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => text
                .trim()
                .strip_prefix("lsn=")
                .and_then(|n| n.parse().ok())
                .map(Some)
                .ok_or_else(|| Error::WalCorrupt {
                    path: self.path.clone(),
                    message: format!("not a sink cursor ({:?}); delete it to start the sink at the newest record", text.trim()),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", self.path.display()), e)),
        }
    }

    /// Durably replaces the saved position with `lsn`.
    pub fn save(&self, lsn: u64) -> Result<()> {
        let dir = self.path.parent().expect("the cursor file has a folder");
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let tmp = self.path.with_extension("cursor.tmp");
        let io = |e| Error::io(format!("writing {}", tmp.display()), e);
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(format!("lsn={lsn}\n").as_bytes()).map_err(io)?;
        f.sync_data().map_err(io)?;
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| Error::io(format!("renaming to {}", self.path.display()), e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("fsync {}", dir.display()), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let c = CursorFile::new(dir.path(), "s");
        assert_eq!(c.load().unwrap(), None);
        c.save(41).unwrap();
        c.save(42).unwrap();
        assert_eq!(c.load().unwrap(), Some(42));
        std::fs::write(c.path(), "oops").unwrap();
        let e = c.load().unwrap_err().to_string();
        assert!(e.contains("not a sink cursor"), "{e}");
    }
}
