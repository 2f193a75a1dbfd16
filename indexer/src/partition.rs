//! Time partitions: one tantivy index per UTC day of event time.
//!
//! A record goes to the day of its own timestamp, so a late event lands in
//! its day, a search opens only the days its range touches, and retention
//! removes whole days (a directory delete, not a delete-by-query that would
//! rewrite segments).
//!
//! Layout under the data directory:
//!
//! ```text
//! ledger.jsonl                     partitions created and removed (a hash chain)
//! partitions/2026-11-23/index/     the day's tantivy index
//! partitions/2026-11-23/chain.jsonl  the day's hash chain over committed batches
//! ```

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use tantivy::directory::MmapDirectory;
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::{Index, IndexSettings};

use crate::Error;
use crate::schema::WardSchema;

pub const PARTITIONS_DIR: &str = "partitions";
pub const LEDGER_FILE: &str = "ledger.jsonl";
pub const CHAIN_FILE: &str = "chain.jsonl";
pub const INDEX_DIR: &str = "index";

/// zstd level of the document store. Level 9 measured 4% smaller than
/// level 3 on the audit corpus but cost 20% more ingest CPU (BENCHMARKS.md).
const DOCSTORE_ZSTD_LEVEL: i32 = 3;
/// Larger blocks compress repetitive audit JSON much better (1 MiB blocks
/// took the stored records from 0.120 to 0.070 bytes per byte of audit
/// JSON, BENCHMARKS.md); fetching
/// one record decompresses one block, about a millisecond, and neighbouring
/// records (a page of hits in time order) share blocks. Quickwit's default
/// is the same size.
pub(crate) const DOCSTORE_BLOCK_BYTES: usize = 1024 * 1024;

/// A UTC day: the unit of partitioning and retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(NaiveDate);

impl Day {
    pub fn of_nanos(nanos: i64) -> Day {
        Day(DateTime::from_timestamp_nanos(nanos).date_naive())
    }

    pub fn of(time: DateTime<Utc>) -> Day {
        Day(time.date_naive())
    }

    pub fn parse(name: &str) -> Option<Day> {
        NaiveDate::parse_from_str(name, "%Y-%m-%d").ok().map(Day)
    }

    pub fn name(&self) -> String {
        self.0.format("%Y-%m-%d").to_string()
    }

    /// The first instant of the day.
    pub fn start(&self) -> DateTime<Utc> {
        self.0.and_time(chrono::NaiveTime::MIN).and_utc()
    }

    /// The first instant of the next day.
    pub fn end(&self) -> DateTime<Utc> {
        self.0.succ_opt().map_or(DateTime::<Utc>::MAX_UTC, |d| {
            d.and_time(chrono::NaiveTime::MIN).and_utc()
        })
    }

    /// Whether the day overlaps `[start, end)`.
    pub fn overlaps(&self, start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> bool {
        start.is_none_or(|s| self.end() > s) && end.is_none_or(|e| self.start() < e)
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

pub fn partitions_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(PARTITIONS_DIR)
}

pub fn partition_dir(data_dir: &Path, day: Day) -> PathBuf {
    partitions_dir(data_dir).join(day.name())
}

/// The days with a partition directory, oldest first.
pub fn list(data_dir: &Path) -> Result<Vec<Day>, Error> {
    let dir = partitions_dir(data_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::io(&dir, source)),
    };
    let mut days = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::io(&dir, source))?;
        if let Some(day) = entry.file_name().to_str().and_then(Day::parse) {
            days.push(day);
        }
    }
    days.sort();
    Ok(days)
}

/// The settings partitions are created with (the document store's
/// compression).
pub fn index_settings() -> IndexSettings {
    IndexSettings {
        docstore_compression: Compressor::Zstd(ZstdCompressor {
            compression_level: Some(DOCSTORE_ZSTD_LEVEL),
        }),
        docstore_blocksize: DOCSTORE_BLOCK_BYTES,
        ..IndexSettings::default()
    }
}

/// Opens a partition's index, creating it when `create` is set.
pub fn open_index(
    data_dir: &Path,
    day: Day,
    schema: &WardSchema,
    create: bool,
) -> Result<Index, Error> {
    let dir = partition_dir(data_dir, day).join(INDEX_DIR);
    if create {
        std::fs::create_dir_all(&dir).map_err(|source| Error::io(&dir, source))?;
    }
    let directory =
        MmapDirectory::open(&dir).map_err(|e| Error::Tantivy(tantivy::TantivyError::from(e)))?;
    // A partition that exists keeps the schema it was created with.
    let index = if create && !dir.join("meta.json").exists() {
        Index::builder()
            .schema(schema.schema.clone())
            .settings(index_settings())
            .open_or_create(directory)?
    } else {
        let index = Index::open(directory)?;
        check_schema(&index.schema(), &schema.schema, &dir)?;
        index
    };
    WardSchema::register_tokenizers(&index);
    Ok(index)
}

/// A partition keeps the schema it was created with; its fields' options
/// may differ from today's, but queries are compiled once for all
/// partitions, so every field must have the same id, name and type.
fn check_schema(
    on_disk: &tantivy::schema::Schema,
    current: &tantivy::schema::Schema,
    dir: &Path,
) -> Result<(), Error> {
    let disk: Vec<_> = on_disk.fields().collect();
    for (field, entry) in current.fields() {
        let same = disk.get(field.field_id() as usize).is_some_and(|(_, d)| {
            d.name() == entry.name()
                && d.field_type().value_type() == entry.field_type().value_type()
        });
        if !same {
            return Err(Error::Tantivy(tantivy::TantivyError::SchemaError(format!(
                "{}: the index was written by an incompatible version of Ward (field {:?}); re-ingest it",
                dir.display(),
                entry.name()
            ))));
        }
    }
    Ok(())
}

/// Bytes on disk under a directory (files only, not following links).
pub fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => total += entry.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_follow_utc() {
        let t = DateTime::parse_from_rfc3339("2026-11-23T23:59:59.999999999Z")
            .unwrap()
            .with_timezone(&Utc);
        let day = Day::of_nanos(t.timestamp_nanos_opt().unwrap());
        assert_eq!(day.name(), "2026-11-23");
        assert_eq!(day, Day::of(t));
        assert_eq!(Day::of_nanos(-1).name(), "1969-12-31");
        assert_eq!(Day::parse("2026-11-23"), Some(day));
        assert!(day.overlaps(Some(t), None));
        assert!(!day.overlaps(Some(day.end()), None));
        assert!(!day.overlaps(None, Some(day.start())));
        assert!(day.overlaps(None, Some(t)));
    }
}
