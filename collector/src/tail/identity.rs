//! A file's identity: its fingerprint (node, device, inode and first
//! line), the hash of its first line, the epoch, and the hash of the bytes
//! before a position, which tell where a known file resumes and whether it
//! was truncated or rewritten (see ARCHITECTURE.md, crash semantics).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use ward_event::hash::{self, Fnv64};

use super::TailedFile;
use crate::checkpoint::FilePosition;

/// Bytes of a file's start that go into its fingerprint.
pub(super) const HEAD_BYTES: usize = 256;
/// Bytes before a position that are hashed to recognise the same content.
pub(super) const TAIL_BYTES: usize = 64;

pub(super) enum Identified {
    /// Identified; reading resumes where the checkpoints say.
    Yes,
    /// Identified, but the bytes before the saved position changed: read
    /// again from the start in a new epoch.
    Reset,
    /// Too short to identify yet.
    NotYet,
    /// A rotated sibling that cannot be identified (no complete first line).
    Unknown,
}

/// Reads the head of a new file to fingerprint it, and finds where to resume.
pub(super) fn identify(
    file: &mut TailedFile,
    node: &str,
    resume: &HashMap<String, FilePosition>,
) -> Identified {
    let mut head = vec![0u8; HEAD_BYTES];
    let n = match file.file.read_at(&mut head, 0) {
        Ok(n) => n,
        Err(_) => return Identified::NotYet,
    };
    let head = &head[..n];
    // Until the first line is complete the head may still change.
    let head = match memchr::memchr(b'\n', head) {
        Some(end) => &head[..=end],
        None if n == HEAD_BYTES => head,
        None if file.rotated_candidate => return Identified::Unknown,
        None => return Identified::NotYet,
    };
    let fp = fingerprint(node, file.dev_ino, head);
    let head_hash = hash_hex(head);
    // After a truncation the same fingerprint means the same first line
    // with other content after it: a new epoch keeps the ids apart.
    let after_truncation = file
        .previous
        .take()
        .filter(|(old, _)| *old == fp)
        .map(|(_, epoch)| epoch + 1);
    let mut saved = resume.get(&fp);
    if file.rotated_candidate && saved.is_none() {
        // A copy (copytruncate's) of a file that was being read: resume
        // where that file was, if the bytes there are the same.
        saved = resume.values().find(|p| {
            p.head_hash.as_deref() == Some(head_hash.as_str())
                && p.tail_hash.is_some()
                && tail_hash(&file.file, p.offset) == p.tail_hash
        });
        if let Some(original) = saved {
            tracing::info!(path = %file.path.display(), offset = original.offset, "rotated copy of a file read before; resuming where it was");
        }
    }
    let mut outcome = Identified::Yes;
    let (epoch, offset) = match (after_truncation, saved) {
        (Some(epoch), saved) => (epoch.max(saved.map_or(0, |s| s.epoch + 1)), 0),
        (None, None) => (0, 0),
        (None, Some(saved)) => {
            let len = file.file.metadata().map(|m| m.len()).unwrap_or(0);
            let same = saved.offset <= len
                && (saved.tail_hash.is_none()
                    || tail_hash(&file.file, saved.offset) == saved.tail_hash);
            if same {
                (saved.epoch, saved.offset)
            } else {
                tracing::info!(path = %file.path.display(), offset = saved.offset, len, "file truncated or rewritten since the checkpoint; reading it again from the start");
                outcome = Identified::Reset;
                (saved.epoch + 1, 0)
            }
        }
    };
    tracing::debug!(path = %file.path.display(), fingerprint = %fp, epoch, offset, "identified file");
    file.fingerprint = Some(fp);
    file.head_hash = Some(head_hash);
    file.epoch = epoch;
    file.read_offset = offset;
    file.buf_offset = offset;
    file.tail.clear();
    if offset > 0 {
        let start = offset.saturating_sub(TAIL_BYTES as u64);
        let mut tail = vec![0u8; (offset - start) as usize];
        if file.file.read_exact_at(&mut tail, start).is_ok() {
            file.tail = tail;
        }
    }
    outcome
}

/// Remembers a newly identified file's identity (see `Tailer::identities`).
pub(super) fn note_identity(
    identities: &mut HashMap<String, FilePosition>,
    unsaved: &mut bool,
    file: &TailedFile,
) {
    let Some(fp) = &file.fingerprint else { return };
    if identities.get(fp).is_some_and(|p| p.epoch == file.epoch) {
        return;
    }
    identities.insert(
        fp.clone(),
        FilePosition {
            fingerprint: fp.clone(),
            path: file.path.display().to_string(),
            offset: 0,
            epoch: file.epoch,
            tail_hash: None,
            head_hash: file.head_hash.clone(),
        },
    );
    *unsaved = true;
}

/// Whether the bytes before the read position are still those that were
/// read; if not (copytruncate followed by quick writes, or an in-place
/// rewrite), the file is read again from its start.
pub(super) fn check_rewritten(file: &mut TailedFile) {
    if file.tail.is_empty() || file.fingerprint.is_none() {
        return;
    }
    let start = file.read_offset - file.tail.len() as u64;
    let mut now = vec![0u8; file.tail.len()];
    let same = file.file.read_exact_at(&mut now, start).is_ok() && now == file.tail;
    if !same {
        // Shrinking is handled (and counted) where reads happen; this makes
        // the next read see a file "shorter" than its position.
        tracing::info!(path = %file.path.display(), "file rewritten in place; reading it again from the start");
        file.read_offset = u64::MAX;
    }
}

/// Keeps the last [`TAIL_BYTES`] bytes read.
pub(super) fn remember_tail(tail: &mut Vec<u8>, chunk: &[u8]) {
    if chunk.len() >= TAIL_BYTES {
        tail.clear();
        tail.extend_from_slice(&chunk[chunk.len() - TAIL_BYTES..]);
    } else {
        tail.extend_from_slice(chunk);
        let excess = tail.len().saturating_sub(TAIL_BYTES);
        tail.drain(..excess);
    }
}

/// Hash of up to [`TAIL_BYTES`] bytes before `offset` (None at offset 0 or
/// when they cannot be read).
pub(super) fn tail_hash(file: &File, offset: u64) -> Option<String> {
    if offset == 0 {
        return None;
    }
    let start = offset.saturating_sub(TAIL_BYTES as u64);
    let mut bytes = vec![0u8; (offset - start) as usize];
    file.read_exact_at(&mut bytes, start).ok()?;
    Some(hash_hex(&bytes))
}

pub(super) fn hash_hex(bytes: &[u8]) -> String {
    hash::hex(hash::fnv64(bytes))
}

/// A file's identity: node, device and inode, and its first line, so that
/// an inode reused by a new file is a new identity.
pub(super) fn fingerprint(node: &str, (dev, ino): (u64, u64), head: &[u8]) -> String {
    let mut h = Fnv64::new();
    h.write(node.as_bytes());
    h.write(&dev.to_le_bytes());
    h.write(&ino.to_le_bytes());
    h.write(head);
    hash::hex(h.finish())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};

    use super::super::Kind;
    use super::*;

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::write(path, bytes).unwrap();
    }

    /// `a.log` with `content`, in a folder removed when dropped.
    fn log_file(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        write(&path, content);
        (dir, path)
    }

    fn tailed(path: &Path, rotated_candidate: bool) -> TailedFile {
        let file = File::open(path).unwrap();
        let meta = file.metadata().unwrap();
        TailedFile::new(
            path.to_path_buf(),
            path.to_path_buf(),
            Kind::Audit,
            file,
            (meta.dev(), meta.ino()),
            1024,
            rotated_candidate,
        )
    }

    /// The checkpoint of `path`'s file up to `offset`, as the batch
    /// encoder writes it.
    fn checkpoint(path: &Path, offset: u64, epoch: u32) -> FilePosition {
        let file = tailed(path, false);
        let content = std::fs::read(path).unwrap();
        let head_end = memchr::memchr(b'\n', &content).unwrap() + 1;
        FilePosition {
            fingerprint: fingerprint("n1", file.dev_ino, &content[..head_end]),
            path: path.display().to_string(),
            offset,
            epoch,
            tail_hash: tail_hash(&file.file, offset),
            head_hash: Some(hash_hex(&content[..head_end])),
        }
    }

    fn resume(positions: &[FilePosition]) -> HashMap<String, FilePosition> {
        positions
            .iter()
            .map(|p| (p.fingerprint.clone(), p.clone()))
            .collect()
    }

    /// Fingerprints and hashes are in checkpoints on disk: a change here
    /// makes every file read again from its start.
    #[test]
    fn persisted_identities_are_pinned() {
        let head = b"{\"kind\":\"Event\"}\n";
        assert_eq!(fingerprint("n1", (2049, 131), head), "5f010529e7dd5fa0");
        assert_eq!(hash_hex(b"foobar"), "85944171f73967e8");
    }

    #[test]
    fn a_file_is_identified_once_its_first_line_is_whole() {
        let (_dir, path) = log_file(b"first");
        let mut file = tailed(&path, false);
        assert!(matches!(
            identify(&mut file, "n1", &HashMap::new()),
            Identified::NotYet
        ));
        assert_eq!(file.fingerprint, None);
        // A rotated file will not grow: without a first line it is unknown.
        let mut rotated = tailed(&path, true);
        assert!(matches!(
            identify(&mut rotated, "n1", &HashMap::new()),
            Identified::Unknown
        ));

        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b" line\nsecond\n")
            .unwrap();
        assert!(matches!(
            identify(&mut file, "n1", &HashMap::new()),
            Identified::Yes
        ));
        let expected = fingerprint("n1", file.dev_ino, b"first line\n");
        assert_eq!(file.fingerprint.as_deref(), Some(expected.as_str()));
        assert_eq!(file.head_hash, Some(hash_hex(b"first line\n")));
        assert_eq!((file.epoch, file.read_offset, file.buf_offset), (0, 0, 0));
        // Another node's file with the same inode and line is another file.
        assert_ne!(fingerprint("n2", file.dev_ino, b"first line\n"), expected);
    }

    #[test]
    fn a_known_file_resumes_at_its_checkpoint() {
        let (_dir, path) = log_file(b"first\nsecond\nthird\n");
        let saved = checkpoint(&path, 13, 2);
        let mut file = tailed(&path, false);
        assert!(matches!(
            identify(&mut file, "n1", &resume(std::slice::from_ref(&saved))),
            Identified::Yes
        ));
        assert_eq!(file.fingerprint, Some(saved.fingerprint));
        assert_eq!((file.epoch, file.read_offset, file.buf_offset), (2, 13, 13));
        assert_eq!(file.tail, b"first\nsecond\n");
    }

    #[test]
    fn a_file_changed_before_its_checkpoint_is_read_again_in_a_new_epoch() {
        let (_dir, path) = log_file(b"first\nsecond\nthird\n");
        let mut rewritten = checkpoint(&path, 13, 2);
        rewritten.tail_hash = Some(hash_hex(b"first\nSECOND\n"));
        let mut longer = checkpoint(&path, 13, 0);
        longer.offset = 1000;
        for (saved, epoch) in [(rewritten, 3), (longer, 1)] {
            let mut file = tailed(&path, false);
            assert!(matches!(
                identify(&mut file, "n1", &resume(&[saved])),
                Identified::Reset
            ));
            assert_eq!((file.epoch, file.read_offset), (epoch, 0));
            assert!(file.tail.is_empty());
        }
    }

    #[test]
    fn a_truncated_file_with_the_same_first_line_gets_a_new_epoch() {
        let (_dir, path) = log_file(b"first\nother\n");
        let mut file = tailed(&path, false);
        identify(&mut file, "n1", &HashMap::new());
        let fp = file.fingerprint.clone().unwrap();
        file.start_over();
        assert_eq!(file.previous, Some((fp.clone(), 0)));
        assert!(matches!(
            identify(&mut file, "n1", &HashMap::new()),
            Identified::Yes
        ));
        assert_eq!(file.fingerprint, Some(fp));
        assert_eq!((file.epoch, file.read_offset), (1, 0));
    }

    #[test]
    fn a_rotated_copy_resumes_where_its_original_was() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("a.log");
        let copy = dir.path().join("a.log.1");
        write(&live, b"first\nsecond\nthird\n");
        std::fs::copy(&live, &copy).unwrap();
        let saved = checkpoint(&live, 13, 1);
        let mut file = tailed(&copy, true);
        assert!(matches!(
            identify(&mut file, "n1", &resume(std::slice::from_ref(&saved))),
            Identified::Yes
        ));
        // Its own identity (another inode), the original's place.
        assert_ne!(file.fingerprint, Some(saved.fingerprint.clone()));
        assert_eq!((file.epoch, file.read_offset), (1, 13));

        // Other bytes before the position: not the same content.
        write(&copy, b"first\nSECOND\nthird\n");
        let mut file = tailed(&copy, true);
        identify(&mut file, "n1", &resume(&[saved]));
        assert_eq!((file.epoch, file.read_offset), (0, 0));
    }

    #[test]
    fn a_rewrite_before_the_read_position_is_noticed() {
        let (_dir, path) = log_file(b"first\nsecond\n");
        let mut file = tailed(&path, false);
        identify(&mut file, "n1", &HashMap::new());
        file.read_offset = 13;
        remember_tail(&mut file.tail, b"first\nsecond\n");
        check_rewritten(&mut file);
        assert_eq!(file.read_offset, 13);
        // The same length, other bytes: copytruncate and a quick write.
        write(&path, b"first\nthird!\n");
        check_rewritten(&mut file);
        assert_eq!(file.read_offset, u64::MAX);
    }

    #[test]
    fn the_tail_is_the_last_bytes_read() {
        let mut tail = Vec::new();
        remember_tail(&mut tail, b"abc");
        remember_tail(&mut tail, b"def");
        assert_eq!(tail, b"abcdef");
        let long: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        remember_tail(&mut tail, &long[..500]);
        assert_eq!(tail, &long[500 - TAIL_BYTES..500]);
        remember_tail(&mut tail, &long[500..510]);
        assert_eq!(tail, &long[510 - TAIL_BYTES..510]);
    }

    #[test]
    fn the_tail_hash_is_of_the_bytes_before_an_offset() {
        let content: Vec<u8> = (0..200u8).collect();
        let (_dir, path) = log_file(&content);
        let file = File::open(&path).unwrap();
        assert_eq!(tail_hash(&file, 0), None);
        assert_eq!(tail_hash(&file, 5), Some(hash_hex(&content[..5])));
        assert_eq!(
            tail_hash(&file, 150),
            Some(hash_hex(&content[150 - TAIL_BYTES..150]))
        );
        assert_eq!(tail_hash(&file, 201), None);
    }

    #[test]
    fn an_identity_is_noted_once_per_epoch() {
        let (_dir, path) = log_file(b"first\n");
        let mut file = tailed(&path, false);
        let mut identities = HashMap::new();
        let mut unsaved = false;
        note_identity(&mut identities, &mut unsaved, &file);
        assert!(identities.is_empty() && !unsaved, "not identified yet");
        identify(&mut file, "n1", &HashMap::new());
        note_identity(&mut identities, &mut unsaved, &file);
        assert!(unsaved);
        let fp = file.fingerprint.clone().unwrap();
        assert_eq!(identities[&fp].offset, 0);
        assert_eq!(identities[&fp].head_hash, Some(hash_hex(b"first\n")));
        unsaved = false;
        note_identity(&mut identities, &mut unsaved, &file);
        assert!(!unsaved);
        file.epoch = 1;
        note_identity(&mut identities, &mut unsaved, &file);
        assert!(unsaved);
        assert_eq!(identities[&fp].epoch, 1);
    }
}
