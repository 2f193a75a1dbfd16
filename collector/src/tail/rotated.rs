//! Rotated files: the siblings of tailed files found at start (rotated
//! while the collector was down), and gzipped ones, matched to the
//! checkpoint or identity of the file they were compressed from and read
//! through a decoder (see ARCHITECTURE.md, crash semantics).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::TailedFile;
use super::identity::{HEAD_BYTES, TAIL_BYTES, fingerprint, hash_hex};
use crate::checkpoint::{FORGET_AFTER, FilePosition};

pub(super) type GzReader = flate2::read::MultiGzDecoder<std::io::BufReader<File>>;

/// A decoder of the gzip file at `path`, moved to `offset` of its content,
/// and the up to [`TAIL_BYTES`] bytes before that offset; None when the
/// content is shorter than `offset`.
fn gz_at(path: &Path, offset: u64) -> std::io::Result<Option<(GzReader, Vec<u8>)>> {
    let file = File::open(path)?;
    let mut gz = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file));
    let skip = offset.saturating_sub(TAIL_BYTES as u64);
    let skipped = std::io::copy(&mut (&mut gz).take(skip), &mut std::io::sink())?;
    if skipped < skip {
        return Ok(None);
    }
    let mut tail = Vec::with_capacity(TAIL_BYTES);
    (&mut gz).take(offset - skip).read_to_end(&mut tail)?;
    if (tail.len() as u64) < offset - skip {
        return Ok(None);
    }
    Ok(Some((gz, tail)))
}

/// Identifies a compressed rotated file and finds where to read it from
/// (see ARCHITECTURE.md, crash semantics). Returns false when it is not to be read.
/// `known`: the checkpoints, and the identities of files the previous run
/// read (offset 0), which are used only when no checkpoint matches.
pub(super) fn open_gz(
    file: &mut TailedFile,
    meta: &std::fs::Metadata,
    node: &str,
    (resume, identities): (&HashMap<String, FilePosition>, &[FilePosition]),
) -> bool {
    let path = file.path.clone();
    let warn = |e: std::io::Error| {
        tracing::warn!(path = %path.display(), error = %e, "cannot read compressed rotated file");
        false
    };
    let mut head = Vec::with_capacity(HEAD_BYTES);
    let read = File::open(&path).and_then(|f| {
        flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f))
            .take(HEAD_BYTES as u64)
            .read_to_end(&mut head)
    });
    if let Err(e) = read {
        return warn(e);
    }
    let head = match memchr::memchr(b'\n', &head) {
        Some(end) => &head[..=end],
        None if head.len() == HEAD_BYTES => &head[..],
        // No complete first line: nothing that was ever tailed.
        None => return false,
    };
    let own = fingerprint(node, file.dev_ino, head);
    let head_hash = hash_hex(head);
    // Read before under its own name (a restart while reading it), or the
    // file it was compressed from, if the content at its checkpoint agrees.
    let saved = resume.get(&own).or_else(|| {
        let unknown_identities = identities
            .iter()
            .filter(|p| !resume.contains_key(&p.fingerprint));
        resume
            .values()
            .chain(unknown_identities)
            .filter(|p| p.head_hash.as_deref() == Some(head_hash.as_str()))
            .filter(|p| match gz_at(&path, p.offset) {
                Ok(Some((_, tail))) => {
                    p.tail_hash.is_none() || p.tail_hash == Some(hash_hex(&tail))
                }
                _ => false,
            })
            .max_by_key(|p| (p.epoch, p.offset))
    });
    let (fp, epoch, offset) = match saved {
        Some(p) => (p.fingerprint.clone(), p.epoch, p.offset),
        None => {
            let recent = meta
                .modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < FORGET_AFTER);
            if !recent {
                tracing::debug!(path = %path.display(), "compressed rotated file unknown to the checkpoints and old: read before, not again");
                return false;
            }
            (own, 0, 0)
        }
    };
    let (gz, tail) = match gz_at(&path, offset) {
        Ok(Some(at)) => at,
        Ok(None) => {
            tracing::warn!(path = %path.display(), offset, "compressed rotated file shorter than its checkpoint; not read");
            return false;
        }
        Err(e) => return warn(e),
    };
    tracing::info!(path = %path.display(), fingerprint = %fp, offset, "reading compressed rotated file");
    file.fingerprint = Some(fp);
    file.head_hash = Some(head_hash);
    file.epoch = epoch;
    file.read_offset = offset;
    file.buf_offset = offset;
    file.tail = tail;
    file.gz = Some(gz);
    true
}

/// Rotated siblings of a tailed file: kubelet's `<n>.log.<timestamp>` and
/// the API server's `audit-<timestamp>.log`, and both gzipped (`.gz`).
/// Symlinks (`/var/log/containers`) are followed to where kubelet rotates.
pub(super) fn rotated_siblings(path: &Path) -> Vec<PathBuf> {
    // A symlink whose file was just rotated away dangles: follow it by hand.
    let real = std::fs::canonicalize(path)
        .or_else(|_| std::fs::read_link(path).map(|to| path.parent().unwrap_or(path).join(to)))
        .unwrap_or_else(|_| path.to_path_buf());
    let (Some(dir), Some(name)) = (real.parent(), real.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let stem = name.strip_suffix(".log").unwrap_or(name);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            let rest = n.strip_prefix(stem)?;
            // `x.gz` beside `x` is gzip still at work: `x` is read instead.
            let gzip_at_work = n
                .strip_suffix(".gz")
                .is_some_and(|original| dir.join(original).exists());
            let rotated = (rest.starts_with('.') || rest.starts_with('-'))
                && n != name
                && !gzip_at_work
                && !n.ends_with(".tmp");
            rotated.then(|| e.path())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, SystemTime};

    use super::super::Kind;
    use super::*;

    fn gzip(path: &Path, content: &[u8]) {
        let mut gz = flate2::write::GzEncoder::new(File::create(path).unwrap(), Default::default());
        gz.write_all(content).unwrap();
        gz.finish().unwrap();
    }

    fn tailed(path: &Path) -> (TailedFile, std::fs::Metadata) {
        let file = File::open(path).unwrap();
        let meta = file.metadata().unwrap();
        let dev_ino = (meta.dev(), meta.ino());
        let tailed = TailedFile::new(
            path.to_path_buf(),
            path.to_path_buf(),
            Kind::Container,
            file,
            dev_ino,
            1024,
            true,
        );
        (tailed, meta)
    }

    fn rest(file: &mut TailedFile) -> Vec<u8> {
        let mut rest = Vec::new();
        file.gz.as_mut().unwrap().read_to_end(&mut rest).unwrap();
        rest
    }

    fn names(paths: Vec<PathBuf>) -> Vec<String> {
        let mut names: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn siblings_are_the_rotated_names_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "0.log",
            "0.log.20240501-100000",
            "0.log.20240501-090000.gz",
            // Being compressed: the original is read, not its `.gz`.
            "0.log.20240501-110000",
            "0.log.20240501-110000.gz",
            "0.log.20240501-120000.tmp",
            "01.log",
            "audit.log",
            "audit-2024-05-01T10-00-00.000.log",
            "audit-2024-05-01T09-00-00.000.log.gz",
            "auditor.log",
        ] {
            std::fs::write(dir.path().join(name), b"x\n").unwrap();
        }
        assert_eq!(
            names(rotated_siblings(&dir.path().join("0.log"))),
            [
                "0.log.20240501-090000.gz",
                "0.log.20240501-100000",
                "0.log.20240501-110000"
            ]
        );
        assert_eq!(
            names(rotated_siblings(&dir.path().join("audit.log"))),
            [
                "audit-2024-05-01T09-00-00.000.log.gz",
                "audit-2024-05-01T10-00-00.000.log"
            ]
        );
    }

    /// `/var/log/containers/*.log` are symlinks: rotation happens where
    /// they point, also when the link dangles after it.
    #[test]
    fn siblings_of_a_symlink_are_beside_its_target() {
        let pods = tempfile::tempdir().unwrap();
        let links = tempfile::tempdir().unwrap();
        std::fs::write(pods.path().join("0.log.20240501-100000"), b"x\n").unwrap();
        let link = links.path().join("web.log");
        std::os::unix::fs::symlink(pods.path().join("0.log"), &link).unwrap();
        assert_eq!(names(rotated_siblings(&link)), ["0.log.20240501-100000"]);
        std::fs::write(pods.path().join("0.log"), b"x\n").unwrap();
        assert_eq!(names(rotated_siblings(&link)), ["0.log.20240501-100000"]);
    }

    #[test]
    fn gz_at_moves_to_an_offset_of_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log.1.gz");
        let content: Vec<u8> = (0..200u8).collect();
        gzip(&path, &content);
        let (mut gz, tail) = gz_at(&path, 150).unwrap().unwrap();
        assert_eq!(tail, &content[150 - TAIL_BYTES..150]);
        let mut rest = Vec::new();
        gz.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, &content[150..]);
        let (_, tail) = gz_at(&path, 5).unwrap().unwrap();
        assert_eq!(tail, &content[..5]);
        assert!(gz_at(&path, 200).unwrap().is_some());
        assert!(gz_at(&path, 201).unwrap().is_none());
    }

    #[test]
    fn a_gzipped_file_resumes_at_the_checkpoint_of_its_original() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log.1.gz");
        let content = b"first\nsecond\nthird\n";
        gzip(&path, content);
        let original = FilePosition {
            fingerprint: "0123456789abcdef".into(),
            path: dir.path().join("a.log").display().to_string(),
            offset: 13,
            epoch: 1,
            tail_hash: Some(hash_hex(b"first\nsecond\n")),
            head_hash: Some(hash_hex(b"first\n")),
        };
        let resume = HashMap::from([(original.fingerprint.clone(), original.clone())]);
        let (mut file, meta) = tailed(&path);
        assert!(open_gz(&mut file, &meta, "n1", (&resume, &[])));
        assert_eq!(file.fingerprint, Some(original.fingerprint.clone()));
        assert_eq!(file.head_hash, original.head_hash);
        assert_eq!((file.epoch, file.read_offset, file.buf_offset), (1, 13, 13));
        assert_eq!(file.tail, b"first\nsecond\n");
        assert_eq!(rest(&mut file), b"third\n");

        // Other bytes before the checkpoint: not that file. Recent, so read whole.
        let mut other = original.clone();
        other.tail_hash = Some(hash_hex(b"first\nSECOND\n"));
        let resume = HashMap::from([(other.fingerprint.clone(), other)]);
        let (mut file, meta) = tailed(&path);
        assert!(open_gz(&mut file, &meta, "n1", (&resume, &[])));
        let own = fingerprint("n1", file.dev_ino, b"first\n");
        assert_eq!(file.fingerprint, Some(own));
        assert_eq!((file.epoch, file.read_offset), (0, 0));
        assert_eq!(rest(&mut file), content);
    }

    /// A file compressed before its first checkpoint: its identity, saved
    /// before its first batch went out, tells which file it was.
    #[test]
    fn a_gzipped_file_without_a_checkpoint_is_matched_to_its_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log.1.gz");
        gzip(&path, b"first\nsecond\n");
        let identity = FilePosition {
            fingerprint: "0123456789abcdef".into(),
            path: dir.path().join("a.log").display().to_string(),
            offset: 0,
            epoch: 2,
            tail_hash: None,
            head_hash: Some(hash_hex(b"first\n")),
        };
        let (mut file, meta) = tailed(&path);
        assert!(open_gz(
            &mut file,
            &meta,
            "n1",
            (&HashMap::new(), std::slice::from_ref(&identity))
        ));
        assert_eq!(file.fingerprint, Some(identity.fingerprint));
        assert_eq!((file.epoch, file.read_offset), (2, 0));
        assert_eq!(rest(&mut file), b"first\nsecond\n");
    }

    #[test]
    fn an_unknown_gzipped_file_is_read_only_if_recent_and_whole_lined() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("a.log.1.gz");
        gzip(&old, b"first\n");
        let long_ago = SystemTime::now() - FORGET_AFTER - Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let (mut file, meta) = tailed(&old);
        assert!(!open_gz(&mut file, &meta, "n1", (&HashMap::new(), &[])));

        let no_line = dir.path().join("a.log.2.gz");
        gzip(&no_line, b"no end");
        let (mut file, meta) = tailed(&no_line);
        assert!(!open_gz(&mut file, &meta, "n1", (&HashMap::new(), &[])));
        assert_eq!(file.fingerprint, None);
    }
}
