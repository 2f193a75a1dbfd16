//! Hash chains: tamper evidence for what the index holds.
//!
//! Every partition keeps `chain.jsonl`, one JSON entry per committed batch
//! of that partition (the documents of one group commit). An entry holds
//! the batch's record count and the SHA-256 over its records, and is
//! chained to the entry before it: `hash = SHA-256(prev ‖ body)`. With an
//! HMAC key configured, each entry also carries `HMAC-SHA256(key, hash)`,
//! so that someone who can write the data directory but does not hold the
//! key cannot rebuild a consistent chain after altering records.
//!
//! The data directory also keeps a ledger (`ledger.jsonl`, the same kind of
//! chain) of partitions created and removed. Retention writes the removal
//! of a partition, with the head of its chain, into the ledger before it
//! deletes anything, so that a removal by policy is told apart from a
//! partition that vanished.
//!
//! Crash semantics: entries are appended and fsynced *before* the tantivy
//! commit, whose payload names the last entry it covers. An entry past
//! that payload belongs to a commit that never happened; it is cut off
//! when the partition is opened and ignored by verification.
//!
//! A batch's hash does not depend on the order of its records (tantivy
//! does not keep insertion order across segments and merges): it is the
//! SHA-256 of the sorted per-record digests, each the SHA-256 of the stored record.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;

pub type Digest32 = [u8; 32];

/// The digest of one stored record (its `_source`, which holds its id).
pub fn record_digest(source: &[u8]) -> Digest32 {
    Sha256::digest(source).into()
}

/// The hash of a batch: its record digests, sorted, hashed together.
pub fn batch_digest(digests: &mut [Digest32]) -> Digest32 {
    digests.sort_unstable();
    let mut h = Sha256::new();
    for d in digests.iter() {
        h.update(d);
    }
    h.finalize().into()
}

/// The key that signs chain entries (`--hmac-key FILE`).
#[derive(Clone)]
pub struct HmacKey(Vec<u8>);

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.write_str("HmacKey(..)")
    }
}

impl HmacKey {
    /// Reads a key file; surrounding whitespace is not part of the key.
    pub fn from_file(path: &Path) -> Result<HmacKey, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::io(path, source))?;
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < 16 {
            return Err(Error::InvalidRequest(format!(
                "hmac key in {} is shorter than 16 bytes",
                path.display()
            )));
        }
        Ok(HmacKey(trimmed.to_vec()))
    }

    pub fn from_bytes(bytes: &[u8]) -> HmacKey {
        HmacKey(bytes.to_vec())
    }

    fn sign(&self, hash: &Digest32) -> String {
        // HMAC accepts keys of any length.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => return String::new(),
        };
        mac.update(hash);
        hex::encode(mac.finalize().into_bytes())
    }

    fn check(&self, hash: &Digest32, signature: &str) -> bool {
        let Ok(expected) = hex::decode(signature) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return false;
        };
        mac.update(hash);
        mac.verify_slice(&expected).is_ok()
    }
}

/// What an entry records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntryBody {
    /// Records committed to a partition in one commit.
    Batch { records: u64, events_sha256: String },
    /// (Ledger) a partition was created.
    PartitionCreated { partition: String },
    /// (Ledger) retention removed a partition; `head` is its chain's last
    /// entry hash and `last_seq` its sequence number.
    PartitionRemoved {
        partition: String,
        reason: String,
        records: u64,
        last_seq: u64,
        head: String,
    },
}

/// One line of a chain file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    /// When the entry was written (RFC 3339), for the reader's benefit.
    pub time: String,
    #[serde(flatten)]
    pub body: EntryBody,
    pub prev: String,
    pub hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac: Option<String>,
}

/// The hash an entry must carry, from its predecessor's hash and its body.
pub fn entry_hash(prev: &str, seq: u64, time: &str, body: &EntryBody) -> Digest32 {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(seq.to_le_bytes());
    h.update(time.as_bytes());
    h.update(b"\n");
    // Serializing a plain enum of strings and numbers cannot fail.
    h.update(serde_json::to_vec(body).unwrap_or_default());
    h.finalize().into()
}

/// The `prev` of a chain's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Checks one entry against its predecessor; returns what is wrong.
pub fn check_entry(entry: &Entry, prev: &str, key: Option<&HmacKey>) -> Option<String> {
    if entry.prev != prev {
        return Some(format!(
            "entry {} does not link to the entry before it",
            entry.seq
        ));
    }
    let hash = entry_hash(&entry.prev, entry.seq, &entry.time, &entry.body);
    if hex::encode(hash) != entry.hash {
        return Some(format!("entry {} does not match its hash", entry.seq));
    }
    if let Some(key) = key {
        match &entry.hmac {
            Some(sig) if key.check(&hash, sig) => {}
            Some(_) => return Some(format!("entry {} has a wrong hmac", entry.seq)),
            None => return Some(format!("entry {} is not signed", entry.seq)),
        }
    }
    None
}

/// An append-only chain file, open for writing.
pub struct ChainFile {
    path: PathBuf,
    file: File,
    len: u64,
    head: String,
    seq: u64,
    key: Option<HmacKey>,
}

impl ChainFile {
    /// Opens (or creates) a chain file, keeping only the entries up to
    /// `keep_through` (the last sequence number a commit covers; `None`
    /// keeps every entry). Entries after it, and a torn last line, are cut.
    pub fn open(
        path: &Path,
        keep_through: Option<u64>,
        key: Option<HmacKey>,
    ) -> Result<ChainFile, Error> {
        let (entries, _) = read_entries(path)?;
        let mut len = 0u64;
        let mut head = GENESIS.to_owned();
        let mut seq = 0u64;
        let mut offset = 0u64;
        for (entry, line_len) in entries {
            offset += line_len;
            if keep_through.is_some_and(|k| entry.seq > k) {
                break;
            }
            head = entry.hash.clone();
            seq = entry.seq;
            len = offset;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(|source| Error::io(path, source))?;
        if file.metadata().map_err(|e| Error::io(path, e))?.len() != len {
            file.set_len(len).map_err(|e| Error::io(path, e))?;
            file.sync_all().map_err(|e| Error::io(path, e))?;
        }
        Ok(ChainFile {
            path: path.to_owned(),
            file,
            len,
            head,
            seq,
            key,
        })
    }

    /// The last entry's hash and sequence number (0 when empty).
    pub fn head(&self) -> (&str, u64) {
        (&self.head, self.seq)
    }

    /// Appends an entry and fsyncs it.
    pub fn append(&mut self, body: EntryBody) -> Result<Entry, Error> {
        let seq = self.seq + 1;
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let hash = entry_hash(&self.head, seq, &time, &body);
        let entry = Entry {
            seq,
            time,
            body,
            prev: self.head.clone(),
            hash: hex::encode(hash),
            hmac: self.key.as_ref().map(|k| k.sign(&hash)),
        };
        let mut line = serde_json::to_vec(&entry).unwrap_or_default();
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| Error::io(&self.path, source))?;
        self.len += line.len() as u64;
        self.head = entry.hash.clone();
        self.seq = seq;
        Ok(entry)
    }

    /// Takes back the entries after `seq` (their commit failed).
    pub fn truncate_to(&mut self, len: u64, head: String, seq: u64) -> Result<(), Error> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| Error::io(&self.path, source))?;
        self.len = len;
        self.head = head;
        self.seq = seq;
        Ok(())
    }

    /// Byte length of the valid entries, to truncate back to.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Reads a chain file: each entry with the byte length of its line, and the
/// length of the leading part that parsed. Parsing stops at the first line
/// that is not an entry (a torn write at the end after a crash).
pub fn read_entries(path: &Path) -> Result<(Vec<(Entry, u64)>, u64), Error> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(source) => return Err(Error::io(path, source)),
    };
    let mut reader = BufReader::new(file);
    let mut entries = Vec::new();
    let mut valid = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| Error::io(path, source))?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        match serde_json::from_slice::<Entry>(&line) {
            Ok(entry) => {
                valid += n as u64;
                entries.push((entry, n as u64));
            }
            Err(_) => break,
        }
    }
    Ok((entries, valid))
}

/// What a commit's payload says about the chain: the last entry it covers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CommitPayload {
    pub chain_seq: u64,
    pub chain_head: String,
}

impl CommitPayload {
    pub fn parse(payload: Option<&str>) -> Option<CommitPayload> {
        payload.and_then(|p| serde_json::from_str(p).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_survives_reopen_and_cuts_uncommitted_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.jsonl");
        let key = HmacKey::from_bytes(b"0123456789abcdef0123");
        let mut chain = ChainFile::open(&path, None, Some(key.clone())).unwrap();
        for n in 1..=3 {
            chain
                .append(EntryBody::Batch {
                    records: n,
                    events_sha256: "ab".into(),
                })
                .unwrap();
        }
        let (_, head2) = {
            let (entries, _) = read_entries(&path).unwrap();
            (entries.len(), entries[1].0.hash.clone())
        };
        drop(chain);
        let chain = ChainFile::open(&path, Some(2), Some(key.clone())).unwrap();
        assert_eq!(chain.head(), (head2.as_str(), 2));
        let (entries, _) = read_entries(&path).unwrap();
        assert_eq!(entries.len(), 2);
        let mut prev = GENESIS.to_owned();
        for (e, _) in &entries {
            assert_eq!(check_entry(e, &prev, Some(&key)), None);
            prev = e.hash.clone();
        }
        let other = HmacKey::from_bytes(b"another key of some length");
        assert!(check_entry(&entries[0].0, GENESIS, Some(&other)).is_some());
    }

    #[test]
    fn a_torn_last_line_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.jsonl");
        let mut chain = ChainFile::open(&path, None, None).unwrap();
        chain
            .append(EntryBody::PartitionCreated {
                partition: "2026-11-23".into(),
            })
            .unwrap();
        drop(chain);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":2,\"ti").unwrap();
        drop(f);
        let chain = ChainFile::open(&path, None, None).unwrap();
        assert_eq!(chain.head().1, 1);
        assert_eq!(read_entries(&path).unwrap().0.len(), 1);
    }

    #[test]
    fn batch_digest_ignores_record_order() {
        let a = record_digest(b"{\"a\":1}");
        let b = record_digest(b"{\"b\":1}");
        assert_eq!(batch_digest(&mut [a, b]), batch_digest(&mut [b, a]));
        assert_ne!(batch_digest(&mut [a]), batch_digest(&mut [a, b]));
    }
}
