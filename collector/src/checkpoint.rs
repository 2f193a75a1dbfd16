//! Acknowledged positions of tailed files, saved crash-safely.
//!
//! A position is saved only after the indexer acknowledged every record
//! before it. The file is replaced atomically (write to a temporary file,
//! fsync, rename, fsync the directory), so a crash leaves either the old or
//! the new checkpoints, never a torn mix.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::error::io;

const FILE_NAME: &str = "checkpoints.json";
/// Checkpoints of files no longer tailed are forgotten after this long
/// without moving (long after any restart could need them). A compressed
/// rotated file last written within this long and unknown to the
/// checkpoints therefore cannot have been delivered (see `tail::rotated`).
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(6 * 3600);

/// Where to resume reading one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    /// The file's identity (see `tail::identity::fingerprint`).
    pub fingerprint: String,
    /// The path it was last seen at (for humans; identity is the fingerprint).
    pub path: String,
    /// Every byte before this offset is acknowledged.
    pub offset: u64,
    /// How many times the file was found truncated or rewritten under the
    /// same fingerprint; part of record ids so that re-read content gets
    /// new ids, and positions of a newer epoch replace older ones.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u32,
    /// Hash of the bytes just before `offset` (see `tail::identity::tail_hash`): on
    /// resume, a file whose bytes there differ was truncated or rewritten
    /// and is read again from the start rather than skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail_hash: Option<String>,
    /// Hash of the file's first line alone (no device or inode): a copy of
    /// the file (copytruncate's) is recognised by it at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_hash: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    files: Vec<FilePosition>,
}

const IDENTITIES: &str = "identities.json";

/// Identities of files read in this run, saved before any of their lines
/// is sent (see `tail::rotated`): the checkpoints only learn a file once a
/// batch of it was acknowledged, and a file that is gzipped before that
/// (which changes its inode) could not be matched to what was sent of it.
pub(crate) fn load_identities(state_dir: &Path) -> Result<Vec<FilePosition>, Error> {
    let path = state_dir.join(IDENTITIES);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<OnDisk>(&bytes)
            .map(|d| d.files)
            .map_err(|e| Error::Checkpoint {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(&path)(e)),
    }
}

pub(crate) fn save_identities(state_dir: &Path, files: Vec<FilePosition>) -> Result<(), Error> {
    let path = state_dir.join(IDENTITIES);
    let bytes = serde_json::to_vec(&OnDisk { files }).map_err(|e| Error::Checkpoint {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    write_atomically(&path, &bytes)
}

/// Temporary file, fsync, rename, fsync of the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    positions: HashMap<String, FilePosition>,
    /// When each position last moved (loaded ones: when they were loaded).
    touched: HashMap<String, Instant>,
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
        let now = Instant::now();
        let touched = positions
            .keys()
            .map(|fp: &String| (fp.clone(), now))
            .collect();
        Ok(Checkpoints {
            path,
            positions,
            touched,
            dirty: false,
        })
    }

    pub fn get(&self, fingerprint: &str) -> Option<&FilePosition> {
        self.positions.get(fingerprint)
    }

    pub fn all(&self) -> impl Iterator<Item = &FilePosition> {
        self.positions.values()
    }

    /// Forgets files that are no longer tailed and whose position has not
    /// moved for `idle`: rotated files long finished or compressed, deleted
    /// pods. Without this the file would grow with every rotation. A file
    /// still tailed is kept however quiet it is.
    pub fn prune(&mut self, tailed: impl Fn(&str) -> bool, idle: Duration) {
        let before = self.positions.len();
        let touched = &self.touched;
        self.positions
            .retain(|fp, _| tailed(fp) || touched.get(fp).is_none_or(|t| t.elapsed() < idle));
        let positions = &self.positions;
        self.touched.retain(|fp, _| positions.contains_key(fp));
        if self.positions.len() != before {
            tracing::debug!(
                forgotten = before - self.positions.len(),
                "forgot checkpoints of files no longer tailed"
            );
            self.dirty = true;
        }
    }

    /// Records acknowledged positions; they reach disk on the next [`Checkpoints::save`].
    pub fn advance(&mut self, positions: impl IntoIterator<Item = FilePosition>) {
        for p in positions {
            self.touched.insert(p.fingerprint.clone(), Instant::now());
            match self.positions.get_mut(&p.fingerprint) {
                // Acknowledgements arrive in order, so an older epoch or a
                // smaller offset can only be a stale duplicate.
                Some(old) if (old.epoch, old.offset) > (p.epoch, p.offset) => {}
                Some(old) if *old == p => {}
                Some(old) => {
                    *old = p;
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
        write_atomically(&self.path, &bytes)?;
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
            epoch: 0,
            tail_hash: None,
            head_hash: None,
        };
        c.advance([pos(10)]);
        c.advance([pos(5)]);
        c.save().unwrap();
        let mut c = Checkpoints::load(dir.path()).unwrap();
        assert_eq!(c.get("f1").unwrap().offset, 10);
        // A truncated file starts over in a new epoch, at a smaller offset.
        c.advance([FilePosition { epoch: 1, ..pos(3) }]);
        c.advance([pos(20)]);
        assert_eq!(c.get("f1").unwrap().offset, 3);
        assert_eq!(c.get("f1").unwrap().epoch, 1);
        // Pruning keeps tailed files and recently moved ones only.
        c.advance([FilePosition {
            fingerprint: "f2".into(),
            ..pos(1)
        }]);
        c.prune(|fp| fp == "f1", Duration::from_secs(3600));
        assert!(c.get("f2").is_some(), "moved recently");
        c.prune(|fp| fp == "f1", Duration::ZERO);
        assert!(c.get("f2").is_none() && c.get("f1").is_some());
        std::fs::write(dir.path().join(FILE_NAME), b"{garbage").unwrap();
        assert!(matches!(
            Checkpoints::load(dir.path()),
            Err(Error::Checkpoint { .. })
        ));
    }
}
