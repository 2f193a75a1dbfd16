//! Acknowledged positions of tailed files, saved crash-safely.
//!
//! A position is saved only after the indexer acknowledged every record
//! before it. The file is replaced atomically (write to a temporary file,
//! fsync, rename, fsync the directory), so a crash leaves either the old or
//! the new checkpoints, never a torn mix.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::error::io;

const FILE_NAME: &str = "checkpoints.json";

/// Where to resume reading one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    /// The file's identity (see `tail::fingerprint`).
    pub fingerprint: String,
    /// The path it was last seen at (for humans; identity is the fingerprint).
    pub path: String,
    /// Every byte before this offset is acknowledged.
    pub offset: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    files: Vec<FilePosition>,
}

#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    positions: HashMap<String, FilePosition>,
    dirty: bool,
}

impl Checkpoints {
    pub fn load(state_dir: &Path) -> Result<Checkpoints, Error> {
        let path = state_dir.join(FILE_NAME);
        let positions = match std::fs::read(&path) {
            Ok(bytes) => {
                let on_disk: OnDisk =
                    serde_json::from_slice(&bytes).map_err(|e| Error::Checkpoint {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                on_disk
                    .files
                    .into_iter()
                    .map(|p| (p.fingerprint.clone(), p))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(io(&path)(e)),
        };
        Ok(Checkpoints {
            path,
            positions,
            dirty: false,
        })
    }

    pub fn get(&self, fingerprint: &str) -> Option<&FilePosition> {
        self.positions.get(fingerprint)
    }

    pub fn all(&self) -> impl Iterator<Item = &FilePosition> {
        self.positions.values()
    }

    /// Records acknowledged positions; they reach disk on the next [`Checkpoints::save`].
    pub fn advance(&mut self, positions: impl IntoIterator<Item = FilePosition>) {
        for p in positions {
            match self.positions.get_mut(&p.fingerprint) {
                Some(old) if old.offset >= p.offset && old.path == p.path => {}
                Some(old) => {
                    old.offset = old.offset.max(p.offset);
                    old.path = p.path;
                    self.dirty = true;
                }
                None => {
                    self.positions.insert(p.fingerprint.clone(), p);
                    self.dirty = true;
                }
            }
        }
    }

    /// Writes the checkpoints if they changed.
    pub fn save(&mut self) -> Result<(), Error> {
        if !self.dirty {
            return Ok(());
        }
        let mut files: Vec<FilePosition> = self.positions.values().cloned().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let bytes =
            serde_json::to_vec_pretty(&OnDisk { files }).map_err(|e| Error::Checkpoint {
                path: self.path.display().to_string(),
                reason: e.to_string(),
            })?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_only_forward_and_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Checkpoints::load(dir.path()).unwrap();
        let pos = |o| FilePosition {
            fingerprint: "f1".into(),
            path: "/a".into(),
            offset: o,
        };
        c.advance([pos(10)]);
        c.advance([pos(5)]);
        c.save().unwrap();
        let c = Checkpoints::load(dir.path()).unwrap();
        assert_eq!(c.get("f1").unwrap().offset, 10);
        std::fs::write(dir.path().join(FILE_NAME), b"{garbage").unwrap();
        assert!(matches!(
            Checkpoints::load(dir.path()),
            Err(Error::Checkpoint { .. })
        ));
    }
}
