//! The on-disk spool: batches the indexer could not take (unreachable, 429,
//! 5xx), kept across restarts and sent again oldest first.
//!
//! Format: one file per batch, `spool/<sequence>.batch`, holding an 8-byte
//! magic (`WARDSPL1`), the CRC32 of the body (u32, little endian), the body
//! length (u64, little endian) and the body (the zstd-compressed NDJSON batch
//! as it would have been POSTed). A file is written as `<sequence>.tmp`,
//! fsynced, renamed into place and the directory fsynced, and only then is
//! the batch reported as durable (and the files it came from may be
//! checkpointed past it).
//!
//! Recovery rule, at start: `*.tmp` files were never reported durable and
//! are deleted; a `*.batch` file whose magic, length or CRC does not match
//! (disk corruption: a torn write never gets renamed into place) is moved
//! to `spool/corrupt/` and logged, never sent and never silently deleted.
//!
//! Why files and not an embedded store such as redb: the spool is a FIFO of
//! immutable blobs, each written once, read once and deleted. One file per
//! entry makes append and delete atomic through the file system (rename,
//! unlink), needs no compaction or free-space management, and adds no
//! dependency to the collector's build; a transactional key-value store
//! would add a B-tree and a second copy of each blob through its log for no
//! guarantee this layout does not already give.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::Error;
use crate::error::io;
use crate::metrics::Metrics;

const MAGIC: &[u8; 8] = b"WARDSPL1";
const HEADER: usize = 8 + 4 + 8;

#[derive(Debug)]
struct State {
    /// Sequence number and size on disk of every entry, oldest first.
    entries: VecDeque<(u64, u64)>,
    bytes: u64,
    next_seq: u64,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    /// Woken when an entry is added (for the drainer).
    pub(crate) added: tokio::sync::Notify,
    /// Woken when an entry is removed (for writers waiting for space).
    pub(crate) removed: tokio::sync::Notify,
    metrics: Arc<Metrics>,
}

/// What [`Spool::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Stored,
    Full,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, applying the recovery rule.
    pub fn open(dir: &Path, max_bytes: u64, metrics: Arc<Metrics>) -> Result<Spool, Error> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(seq) = name.strip_suffix(".tmp") {
                tracing::debug!(seq, "removing unfinished spool entry");
                std::fs::remove_file(&path).map_err(io(&path))?;
                continue;
            }
            let Some(seq) = name
                .strip_suffix(".batch")
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            match read_entry(&path) {
                Ok(body) => entries.push((seq, (HEADER + body.len()) as u64)),
                Err(reason) => quarantine(dir, &path, &reason)?,
            }
        }
        entries.sort_unstable();
        let bytes = entries.iter().map(|(_, size)| size).sum();
        let next_seq = entries.last().map_or(0, |(seq, _)| seq + 1);
        if !entries.is_empty() {
            tracing::info!(
                batches = entries.len(),
                bytes,
                "spool holds batches from before; sending them first"
            );
        }
        metrics.spool_bytes.store(bytes, Ordering::Relaxed);
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            state: Mutex::new(State {
                entries: entries.into(),
                bytes,
                next_seq,
            }),
            added: tokio::sync::Notify::new(),
            removed: tokio::sync::Notify::new(),
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent numbers behind.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Stores one batch durably, unless that would take the spool over its
    /// bound (an empty spool takes any batch, so that one large batch
    /// cannot block for ever).
    pub fn push(&self, body: &[u8]) -> Result<Pushed, Error> {
        let size = (HEADER + body.len()) as u64;
        let seq = {
            let mut state = self.lock();
            if !state.entries.is_empty() && state.bytes + size > self.max_bytes {
                return Ok(Pushed::Full);
            }
            let seq = state.next_seq;
            state.next_seq += 1;
            // Reserve the space now so that concurrent writers respect the bound.
            state.bytes += size;
            seq
        };
        if let Err(e) = self.write(seq, body) {
            self.lock().bytes -= size;
            return Err(e);
        }
        let mut state = self.lock();
        // Keep the queue sorted: a concurrent writer may have finished first.
        let at = state.entries.partition_point(|(s, _)| *s < seq);
        state.entries.insert(at, (seq, size));
        self.metrics
            .spool_bytes
            .store(state.bytes, Ordering::Relaxed);
        drop(state);
        self.added.notify_one();
        Ok(Pushed::Stored)
    }

    fn write(&self, seq: u64, body: &[u8]) -> Result<(), Error> {
        let tmp = self.dir.join(format!("{seq:020}.tmp"));
        let path = self.dir.join(format!("{seq:020}.batch"));
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        header.extend_from_slice(&(body.len() as u64).to_le_bytes());
        f.write_all(&header).map_err(io(&tmp))?;
        f.write_all(body).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))
    }

    /// The oldest batch still held, with its sequence number. Corrupt
    /// entries met on the way are quarantined.
    pub fn oldest(&self) -> Result<Option<(u64, Vec<u8>)>, Error> {
        loop {
            let Some((seq, _)) = self.lock().entries.front().copied() else {
                return Ok(None);
            };
            let path = self.dir.join(format!("{seq:020}.batch"));
            match read_entry(&path) {
                Ok(body) => return Ok(Some((seq, body))),
                Err(reason) => {
                    quarantine(&self.dir, &path, &reason)?;
                    self.forget(seq);
                }
            }
        }
    }

    /// Deletes a batch the indexer took (or refused for good).
    pub fn remove(&self, seq: u64) -> Result<(), Error> {
        let path = self.dir.join(format!("{seq:020}.batch"));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        self.forget(seq);
        Ok(())
    }

    fn forget(&self, seq: u64) {
        let mut state = self.lock();
        if let Some(i) = state.entries.iter().position(|(s, _)| *s == seq)
            && let Some((_, size)) = state.entries.remove(i)
        {
            state.bytes = state.bytes.saturating_sub(size);
        }
        self.metrics
            .spool_bytes
            .store(state.bytes, Ordering::Relaxed);
        drop(state);
        self.removed.notify_waiters();
    }
}

/// Reads and checks one entry; the error says why it is not valid.
fn read_entry(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err("bad header".into());
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().map_err(|_| "bad header")?);
    let len = u64::from_le_bytes(bytes[12..20].try_into().map_err(|_| "bad header")?);
    let body = &bytes[HEADER..];
    if body.len() as u64 != len {
        return Err(format!("length {} but header says {len}", body.len()));
    }
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch".into());
    }
    Ok(body.to_vec())
}

fn quarantine(dir: &Path, path: &Path, reason: &str) -> Result<(), Error> {
    let corrupt = dir.join("corrupt");
    std::fs::create_dir_all(&corrupt).map_err(io(&corrupt))?;
    let target = corrupt.join(path.file_name().unwrap_or_default());
    tracing::error!(path = %path.display(), reason, moved_to = %target.display(), "corrupt spool entry set aside");
    std::fs::rename(path, &target).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_bounded_and_survives_reopen_with_corruption_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let spool = Spool::open(dir.path(), 3 * (HEADER as u64 + 10), metrics.clone()).unwrap();
        for i in 0..3u8 {
            assert_eq!(spool.push(&[i; 10]).unwrap(), Pushed::Stored);
        }
        assert_eq!(spool.push(&[9; 10]).unwrap(), Pushed::Full);
        assert_eq!(
            metrics.spool_bytes.load(Ordering::Relaxed),
            3 * (HEADER as u64 + 10)
        );
        let (seq, body) = spool.oldest().unwrap().unwrap();
        assert_eq!(body, vec![0; 10]);
        spool.remove(seq).unwrap();
        drop(spool);

        // A torn temporary file and a corrupted entry, as a crash and a bad disk leave them.
        std::fs::write(dir.path().join("00000000000000000099.tmp"), b"torn").unwrap();
        let second = dir.path().join(format!("{:020}.batch", 1));
        let mut bytes = std::fs::read(&second).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&second, bytes).unwrap();

        let spool = Spool::open(dir.path(), 1 << 20, metrics).unwrap();
        assert!(!dir.path().join("00000000000000000099.tmp").exists());
        assert!(
            dir.path()
                .join("corrupt")
                .join(second.file_name().unwrap())
                .exists()
        );
        let (seq, body) = spool.oldest().unwrap().unwrap();
        assert_eq!(body, vec![2; 10], "oldest valid entry first");
        spool.remove(seq).unwrap();
        assert!(spool.oldest().unwrap().is_none());
        assert_eq!(spool.push(b"next").unwrap(), Pushed::Stored);
        assert_eq!(spool.oldest().unwrap().unwrap().0, 3, "sequence continues");
    }
}
