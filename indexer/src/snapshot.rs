//! Snapshots: a consistent copy of the data directory while the indexer
//! keeps running, and restoring one.
//!
//! A snapshot is a zstd-compressed tar of, per partition, the files of its
//! last commit (the segments `meta.json` lists, and a `meta.json` written
//! from that same listing) and the chain entries that commit covers, plus
//! the ledger. Segment files never change once written, so copying the
//! files a commit names gives exactly that commit; if a merge deletes one
//! of them during the copy, the partition is copied again from its newer
//! commit.
//!
//! Stores this crate does not own go in beside the index through
//! [`create_with`]: the caller hands over finished files (for `ward
//! snapshot`, the alert store's NDJSON dump as `alerts.ndjson`, which
//! `ward restore` imports again), and the manifest records their names,
//! sizes and what they hold. The index crate never depends on the alerts
//! crate; an extra file is just bytes to it. An extra file is taken at its
//! own moment, not at the partitions' commits: each part is consistent on
//! its own.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::chain::{self, CommitPayload};
use crate::partition::{self, Day};
use crate::schema::WardSchema;

/// What a snapshot holds (also written into it as `SNAPSHOT.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub created: String,
    pub partitions: Vec<PartitionManifest>,
    /// Files added beside the index ([`create_with`]); absent in
    /// snapshots of earlier releases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<ExtraManifest>,
}

/// A file a snapshot holds beside the index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtraManifest {
    /// Its path in the snapshot, and in the restored data directory.
    pub name: String,
    pub bytes: u64,
    /// What it holds, in its producer's words (e.g. `{"alerts": 12}`).
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
}

/// A finished file to add to a snapshot ([`create_with`]).
#[derive(Debug, Clone)]
pub struct Extra {
    /// Its path in the snapshot: relative, outside `partitions/`, and not
    /// the ledger's or the manifest's.
    pub name: String,
    /// Where its bytes are now.
    pub path: PathBuf,
    /// Recorded in the manifest.
    pub counts: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionManifest {
    pub partition: String,
    pub records: u64,
    pub chain_seq: u64,
    pub files: usize,
}

const MANIFEST: &str = "SNAPSHOT.json";
const ATTEMPTS: usize = 20;

/// Writes a snapshot of `data_dir` to `out` (through a temporary file, so
/// `out` is either the whole snapshot or absent).
pub fn create(data_dir: &Path, out: &Path) -> Result<Manifest, Error> {
    create_with(data_dir, out, &[])
}

/// [`create`], with `extra` files added after the ledger.
pub fn create_with(data_dir: &Path, out: &Path, extra: &[Extra]) -> Result<Manifest, Error> {
    for e in extra {
        check_extra_name(&e.name)?;
    }
    let schema = WardSchema::new();
    let tmp = out.with_extension("partial");
    let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let encoder = zstd::Encoder::new(BufWriter::new(file), 3).map_err(|e| Error::io(&tmp, e))?;
    let mut tar = tar::Builder::new(encoder);
    let io = |e: std::io::Error| Error::io(out, e);
    let mut manifest = Manifest {
        created: chrono::Utc::now().to_rfc3339(),
        partitions: Vec::new(),
        extra: Vec::new(),
    };
    for day in partition::list(data_dir)? {
        manifest
            .partitions
            .push(copy_partition(data_dir, day, &schema, &mut tar)?);
    }
    // The ledger after the partitions: it then names every partition copied.
    let (entries, _) = chain::read_entries(&data_dir.join(partition::LEDGER_FILE))?;
    append_bytes(
        &mut tar,
        partition::LEDGER_FILE,
        &jsonl(entries.iter().map(|(e, _)| e)),
    )
    .map_err(io)?;
    for e in extra {
        let mut file = File::open(&e.path).map_err(|err| Error::io(&e.path, err))?;
        let bytes = file
            .metadata()
            .map_err(|err| Error::io(&e.path, err))?
            .len();
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes);
        header.set_mode(0o640);
        header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
        header.set_cksum();
        tar.append_data(&mut header, &e.name, &mut file)
            .map_err(|err| Error::io(&e.path, err))?;
        manifest.extra.push(ExtraManifest {
            name: e.name.clone(),
            bytes,
            counts: e.counts.clone(),
        });
    }
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    append_bytes(&mut tar, MANIFEST, &manifest_bytes).map_err(io)?;
    let encoder = tar.into_inner().map_err(io)?;
    let writer = encoder.finish().map_err(io)?;
    let file = writer.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, out).map_err(io)?;
    Ok(manifest)
}

/// An extra file may not hide or replace what the snapshot holds itself.
fn check_extra_name(name: &str) -> Result<(), Error> {
    let path = Path::new(name);
    let plain = !name.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    let reserved = name == MANIFEST
        || name == partition::LEDGER_FILE
        || path.starts_with(partition::PARTITIONS_DIR);
    if plain && !reserved {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "{name:?} cannot be added to a snapshot: it must be a relative path outside {}/ and not {MANIFEST} or {}",
            partition::PARTITIONS_DIR,
            partition::LEDGER_FILE
        )))
    }
}

fn jsonl<'a>(entries: impl Iterator<Item = &'a chain::Entry>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend(serde_json::to_vec(e).unwrap_or_default());
        out.push(b'\n');
    }
    out
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o640);
    header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
    header.set_cksum();
    tar.append_data(&mut header, path, bytes)
}

/// The files of one commit of a partition, read completely, or `None` if
/// one vanished (a merge finished) and the caller should try again.
type CommitFiles = (Vec<(PathBuf, Vec<u8>)>, Vec<u8>, CommitPayload, u64);

fn read_commit(index_dir: &Path, index: &tantivy::Index) -> Result<Option<CommitFiles>, Error> {
    let metas = index.load_metas()?;
    let payload = CommitPayload::parse(metas.payload.as_deref()).unwrap_or_default();
    let prefixes: Vec<(String, Option<PathBuf>)> = metas
        .segments
        .iter()
        .map(|s| {
            let delete = (s.num_deleted_docs() > 0)
                .then(|| s.relative_path(tantivy::index::SegmentComponent::Delete));
            (s.id().uuid_string(), delete)
        })
        .collect();
    let records: u64 = metas.segments.iter().map(|s| s.num_docs() as u64).sum();
    let listing = std::fs::read_dir(index_dir).map_err(|e| Error::io(index_dir, e))?;
    let mut files = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|e| Error::io(index_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let wanted = prefixes.iter().any(|(uuid, delete)| {
            name.starts_with(uuid.as_str())
                && !name.ends_with(".temp")
                && (!name.ends_with(".del")
                    || delete.as_deref().is_some_and(|d| d == Path::new(&name)))
        });
        if !wanted {
            continue;
        }
        match std::fs::read(entry.path()) {
            Ok(bytes) => files.push((PathBuf::from(name), bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&entry.path(), e)),
        }
    }
    // Every component of every segment must be there.
    for (uuid, _) in &prefixes {
        if !files.iter().any(|(p, _)| {
            p.to_string_lossy().ends_with(".store")
                && p.to_string_lossy().starts_with(uuid.as_str())
        }) {
            return Ok(None);
        }
    }
    let meta_json = serde_json::to_vec_pretty(&metas)
        .map_err(|e| Error::InvalidRequest(format!("cannot write meta.json: {e}")))?;
    Ok(Some((files, meta_json, payload, records)))
}

fn copy_partition<W: Write>(
    data_dir: &Path,
    day: Day,
    schema: &WardSchema,
    tar: &mut tar::Builder<W>,
) -> Result<PartitionManifest, Error> {
    let dir = partition::partition_dir(data_dir, day);
    let index_dir = dir.join(partition::INDEX_DIR);
    let index = partition::open_index(data_dir, day, schema, false)?;
    for _ in 0..ATTEMPTS {
        let Some((files, meta_json, payload, records)) = read_commit(&index_dir, &index)? else {
            continue;
        };
        let prefix = format!("{}/{}", partition::PARTITIONS_DIR, day.name());
        let io = |e: std::io::Error| Error::io(&dir, e);
        for (name, bytes) in &files {
            append_bytes(
                tar,
                &format!("{prefix}/{}/{}", partition::INDEX_DIR, name.display()),
                bytes,
            )
            .map_err(io)?;
        }
        append_bytes(
            tar,
            &format!("{prefix}/{}/meta.json", partition::INDEX_DIR),
            &meta_json,
        )
        .map_err(io)?;
        let (entries, _) = chain::read_entries(&dir.join(partition::CHAIN_FILE))?;
        let covered = entries
            .iter()
            .map(|(e, _)| e)
            .filter(|e| e.seq <= payload.chain_seq);
        append_bytes(
            tar,
            &format!("{prefix}/{}", partition::CHAIN_FILE),
            &jsonl(covered),
        )
        .map_err(io)?;
        return Ok(PartitionManifest {
            partition: day.name(),
            records,
            chain_seq: payload.chain_seq,
            files: files.len() + 1,
        });
    }
    Err(Error::Unavailable(format!(
        "partition {day} kept changing under the snapshot; try again"
    )))
}

/// Restores a snapshot into `data_dir`, which must not exist or be empty.
/// Extra files ([`Manifest::extra`]) are restored under their names; what
/// to do with them is the caller's business.
pub fn restore(snapshot: &Path, data_dir: &Path) -> Result<Manifest, Error> {
    if data_dir.exists()
        && std::fs::read_dir(data_dir)
            .map_err(|e| Error::io(data_dir, e))?
            .next()
            .is_some()
    {
        return Err(Error::InvalidRequest(format!(
            "{} is not empty; restore into a new directory",
            data_dir.display()
        )));
    }
    let staging = data_dir.with_extension("restoring");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    }
    std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    let io = |e: std::io::Error| Error::io(snapshot, e);
    let file = File::open(snapshot).map_err(io)?;
    let decoder = zstd::Decoder::new(file).map_err(io)?;
    let mut archive = tar::Archive::new(decoder);
    let mut manifest: Option<Manifest> = None;
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let path = entry.path().map_err(io)?.into_owned();
        if path.is_absolute()
            || path
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
            || !entry.header().entry_type().is_file()
        {
            return Err(Error::InvalidRequest(format!(
                "snapshot entry {} is not a plain relative file",
                path.display()
            )));
        }
        if path == Path::new(MANIFEST) {
            let mut text = Vec::new();
            entry.read_to_end(&mut text).map_err(io)?;
            manifest = serde_json::from_slice(&text).ok();
            continue;
        }
        let target = staging.join(&path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let mut out = File::create(&target).map_err(|e| Error::io(&target, e))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| Error::io(&target, e))?;
        out.sync_all().map_err(|e| Error::io(&target, e))?;
    }
    let manifest = manifest.ok_or_else(|| {
        Error::InvalidRequest(format!("{} is not a Ward snapshot", snapshot.display()))
    })?;
    if data_dir.exists() {
        std::fs::remove_dir(data_dir).map_err(|e| Error::io(data_dir, e))?;
    }
    std::fs::rename(&staging, data_dir).map_err(|e| Error::io(data_dir, e))?;
    Ok(manifest)
}
