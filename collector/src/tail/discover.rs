//! Finding the files to follow: glob expansion (at start, on events and on
//! the rescan interval), marking files whose path no longer names them as
//! rotated or deleted, and the directories to watch.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::identity::{check_rewritten, note_identity};
use super::{Kind, TailedFile, Tailer, rotated, wake};
use crate::CollectorConfig;

impl Tailer {
    pub(super) fn discover(&mut self, cause: Scan) {
        let counter = match cause {
            Scan::Start => &self.metrics.scans_start,
            Scan::Event => &self.metrics.scans_event,
            Scan::Rescan => &self.metrics.scans_rescan,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.sizes_stale = true;
        let mut seen: Vec<(PathBuf, Kind)> = Vec::new();
        let patterns = self
            .config
            .container_globs
            .iter()
            .map(|p| (p, Kind::Container))
            .chain(self.config.audit_logs.iter().map(|p| (p, Kind::Audit)));
        for (pattern, kind) in patterns {
            let Ok(paths) = glob::glob(pattern) else {
                continue;
            };
            for path in paths.flatten() {
                seen.push((path, kind));
            }
        }
        for file in &mut self.files {
            file.orphaned = !seen.iter().any(|(p, _)| *p == file.path) || moved_away(file);
            if file.orphaned {
                file.orphaned_since.get_or_insert_with(Instant::now);
            } else {
                file.orphaned_since = None;
                check_rewritten(file);
            }
        }
        // Once, at startup: files rotated while the collector was down may
        // still hold unacknowledged lines, also where nothing is at the
        // live path yet; later rotations keep the open descriptor, so the
        // live path needs no sibling scan.
        let mut candidates: Vec<(PathBuf, Kind, bool)> = Vec::new();
        if !self.scanned_siblings {
            self.scanned_siblings = true;
            for (path, kind) in seen.iter().cloned().chain(self.known_live_paths(&seen)) {
                for sibling in rotated::rotated_siblings(&path) {
                    if !seen.iter().any(|(p, _)| *p == sibling)
                        && !candidates.iter().any(|(p, _, _)| *p == sibling)
                    {
                        candidates.push((sibling, kind, true));
                    }
                }
            }
        }
        let seen = seen.into_iter().map(|(p, k)| (p, k, false));
        for (path, kind, rotated_candidate) in candidates.into_iter().chain(seen) {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let dev_ino = (meta.dev(), meta.ino());
            // The same file under another name (a symlink, or after a rename) is
            // tailed once.
            if let Some(existing) = self.files.iter_mut().find(|f| f.dev_ino == dev_ino) {
                if existing.orphaned && !rotated_candidate {
                    existing.real_path = std::fs::canonicalize(&path).unwrap_or(path.clone());
                    existing.path = path;
                    existing.parts = None;
                    existing.orphaned = false;
                    existing.orphaned_since = None;
                    existing.dirty = true;
                }
                continue;
            }
            let compressed = rotated_candidate && path.extension().is_some_and(|e| e == "gz");
            match File::open(&path) {
                Ok(file) => {
                    tracing::debug!(path = %path.display(), rotated_candidate, "tailing file");
                    let real_path = std::fs::canonicalize(&path).unwrap_or(path.clone());
                    let mut tailed = TailedFile::new(
                        path,
                        real_path,
                        kind,
                        file,
                        dev_ino,
                        self.config.max_line_bytes,
                        rotated_candidate,
                    );
                    if compressed {
                        let known = (&self.resume, &self.identities_at_start[..]);
                        if !rotated::open_gz(&mut tailed, &meta, &self.config.node, known) {
                            continue;
                        }
                        note_identity(&mut self.identities, &mut self.identities_unsaved, &tailed);
                    }
                    self.files.push(tailed);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot open log file")
                }
            }
        }
        self.metrics
            .files_tracked
            .store(self.files.len() as u64, Ordering::Relaxed);
        // Targets outside the watched roots (symlinked files) are watched
        // through their directories, so that their writes and rotations
        // are events too.
        let extra = self
            .files
            .iter()
            .filter(|f| !f.orphaned && !wake::under_any(&f.real_path, &self.roots))
            .filter_map(|f| f.real_path.parent().map(Path::to_path_buf))
            .collect();
        self.wakes.watch_extra(extra);
    }

    /// Paths the previous run read files at (from the checkpoints and the
    /// saved identities) that match a configured pattern but were not
    /// found by it now: a file rotated while the collector was down leaves
    /// nothing at its path until the next write creates a new one, and its
    /// rotated (maybe gzipped) self, with lines not yet acknowledged, must
    /// still be found by the sibling scan at start.
    fn known_live_paths(&self, seen: &[(PathBuf, Kind)]) -> Vec<(PathBuf, Kind)> {
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::new()
        };
        let patterns: Vec<(glob::Pattern, Kind)> = self
            .config
            .container_globs
            .iter()
            .map(|p| (p, Kind::Container))
            .chain(self.config.audit_logs.iter().map(|p| (p, Kind::Audit)))
            .filter_map(|(p, kind)| Some((glob::Pattern::new(p).ok()?, kind)))
            .collect();
        let mut done: std::collections::HashSet<&Path> =
            seen.iter().map(|(p, _)| p.as_path()).collect();
        let mut known: Vec<(PathBuf, Kind)> = Vec::new();
        for position in self.resume.values().chain(&self.identities_at_start) {
            let path = Path::new(&position.path);
            if !done.insert(path) {
                continue;
            }
            if let Some((_, kind)) = patterns
                .iter()
                .find(|(pattern, _)| pattern.matches_path_with(path, options))
            {
                known.push((path.to_path_buf(), *kind));
            }
        }
        known
    }
}

/// Why a discovery ran (`ward_collector_discovery_scans_total{cause}`).
#[derive(Debug, Clone, Copy)]
pub(super) enum Scan {
    Start,
    /// An event said files appeared, went or were renamed.
    Event,
    /// The rescan interval passed: a safety net for missed events.
    Rescan,
}

/// Whether the file's path no longer names it (renamed or deleted, maybe
/// with another file there now).
pub(super) fn moved_away(file: &TailedFile) -> bool {
    std::fs::metadata(&file.path)
        .map(|m| (m.dev(), m.ino()))
        .ok()
        != Some(file.dev_ino)
}

/// The directories to watch: the literal prefix of each glob (the nearest
/// existing directory).
pub(super) fn watch_roots(config: &CollectorConfig) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    for pattern in config.container_globs.iter().chain(&config.audit_logs) {
        let mut root = PathBuf::new();
        for part in Path::new(pattern).components() {
            let s = part.as_os_str().to_string_lossy();
            if s.contains(['*', '?', '[']) {
                break;
            }
            root.push(part);
        }
        while !root.as_os_str().is_empty() && !root.is_dir() {
            root = root.parent().map(Path::to_path_buf).unwrap_or_default();
        }
        if !root.as_os_str().is_empty() && !roots.iter().any(|r| root.starts_with(r)) {
            roots.retain(|r| !r.starts_with(&root));
            roots.push(root);
        }
    }
    roots
}
