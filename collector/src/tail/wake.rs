//! What wakes the tailing loop, and what each wake-up asks of it.
//!
//! The loop (`Tailer::run`) sleeps until a filesystem event or its next
//! deadline (rescan, batch age, partial-line timeout, a rotated file's
//! linger). Only events that can mean new data or new files count: the
//! collector's own opens and reads of watched files and directories are
//! inotify events too, and waking on them made every discovery wake the
//! loop for the next one, so that an idle collector used a whole core.
//! A data event names the file to read; a change to what files exist asks
//! for a discovery.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};

use crate::Error;

/// Paths remembered between two wake-ups; past this many, every file is
/// read instead (as after an event queue overflow).
const MAX_PATHS: usize = 4096;

/// What an event asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Interest {
    /// The collector's own opens and reads, and events that change nothing
    /// it reads.
    None,
    /// The file at the event's path may have new bytes (or was truncated).
    Data,
    /// Files may have appeared, gone, been renamed or become readable.
    Files,
}

/// Sorts an event kind. The inotify backend reports an open as
/// `Access(Open)`, reading a directory or file as `Access(Read)`, and never
/// subscribes to close-after-read; all are the collector's own doing.
pub(super) fn interest(kind: &EventKind) -> Interest {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Interest::Data,
        EventKind::Access(_) => Interest::None,
        EventKind::Modify(ModifyKind::Data(_)) => Interest::Data,
        // Attributes: a file that could not be opened may now be, and an
        // unlinked file's link count changed.
        EventKind::Modify(_) | EventKind::Create(_) | EventKind::Remove(_) => Interest::Files,
        EventKind::Any | EventKind::Other => Interest::Files,
    }
}

/// What arrived since the loop last looked.
#[derive(Debug, Default)]
pub(super) struct Wake {
    /// A discovery is wanted.
    pub files: bool,
    /// Every file should be read (events were lost, or too many to name).
    pub all: bool,
    /// Files with data events, by the path the event named.
    pub paths: HashSet<PathBuf>,
}

impl Wake {
    fn add(&mut self, interest: Interest, paths: Vec<PathBuf>) {
        match interest {
            Interest::None => {}
            Interest::Files => self.files = true,
            Interest::Data if self.all => {}
            Interest::Data => {
                self.paths.extend(paths);
                if self.paths.len() > MAX_PATHS {
                    self.all = true;
                    self.paths = HashSet::new();
                }
            }
        }
    }
}

/// Wakes the tailing loop from another thread (to stop it).
#[derive(Debug, Clone)]
pub struct Waker(crossbeam_channel::Sender<()>);

impl Waker {
    pub fn wake(&self) {
        let _ = self.0.try_send(());
    }
}

/// The watcher and what it has gathered for the loop.
pub(super) struct Wakes {
    pending: Arc<Mutex<Wake>>,
    signal: crossbeam_channel::Receiver<()>,
    waker: Waker,
    watcher: notify::RecommendedWatcher,
    /// Directories watched on their own, non-recursively: those holding a
    /// tailed file's target outside the glob roots (`/var/log/containers`
    /// holds only symlinks, whose targets' writes are events elsewhere).
    extra: HashSet<PathBuf>,
    /// Some root could not be watched: files are polled instead.
    pub polling: bool,
}

impl Wakes {
    /// Watches `roots` recursively (canonicalized, so that event paths
    /// compare with the canonical paths of tailed files).
    pub fn new(roots: &[PathBuf]) -> Result<Wakes, Error> {
        let pending = Arc::new(Mutex::new(Wake::default()));
        let (signal_tx, signal) = crossbeam_channel::bounded::<()>(1);
        let waker = Waker(signal_tx);
        let handler = {
            let (pending, waker) = (pending.clone(), waker.clone());
            move |event: notify::Result<notify::Event>| {
                // An overflowed queue or a watcher error: events were
                // lost, so look at everything.
                let (interest, paths, lost) = match event {
                    Ok(e) if e.need_rescan() => (Interest::Files, Vec::new(), true),
                    Ok(e) => (interest(&e.kind), e.paths, false),
                    Err(_) => (Interest::Files, Vec::new(), true),
                };
                if interest == Interest::None {
                    return;
                }
                tracing::trace!(?interest, ?paths, "file event");
                let Ok(mut wake) = pending.lock() else { return };
                wake.add(interest, paths);
                if lost {
                    wake.all = true;
                    wake.paths = HashSet::new();
                }
                drop(wake);
                waker.wake();
            }
        };
        let mut watcher = notify::recommended_watcher(handler)
            .map_err(|e| Error::Config(format!("file watcher: {e}")))?;
        let mut polling = false;
        for root in roots {
            let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
            if let Err(e) = watcher.watch(&root, RecursiveMode::Recursive) {
                tracing::warn!(dir = %root.display(), error = %e, "cannot watch directory; polling files instead");
                polling = true;
            }
        }
        Ok(Wakes {
            pending,
            signal,
            waker,
            watcher,
            extra: HashSet::new(),
            polling,
        })
    }

    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Sleeps until an event (or [`Waker::wake`]) or until `timeout` has
    /// passed; returns whether it was woken.
    pub fn wait(&self, timeout: Duration) -> bool {
        self.signal.recv_timeout(timeout).is_ok()
    }

    /// What arrived since the last call.
    pub fn take(&self) -> Wake {
        // The signals of what is taken now: no second wake-up for them.
        while self.signal.try_recv().is_ok() {}
        match self.pending.lock() {
            Ok(mut wake) => std::mem::take(&mut *wake),
            // A handler panicked holding the lock: read everything.
            Err(_) => Wake {
                files: true,
                all: true,
                paths: HashSet::new(),
            },
        }
    }

    /// Watches the directories of tailed files that lie outside the
    /// recursive roots (`dirs`), and stops watching those no longer needed.
    pub fn watch_extra(&mut self, dirs: HashSet<PathBuf>) {
        for gone in self.extra.difference(&dirs) {
            // The directory may be gone, and its watch with it.
            let _ = self.watcher.unwatch(gone);
        }
        let mut watched = HashSet::with_capacity(dirs.len());
        for dir in dirs {
            if self.extra.contains(&dir) {
                watched.insert(dir);
                continue;
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!(dir = %dir.display(), "watching the folder of a symlinked file");
                    watched.insert(dir);
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory; polling files instead");
                    self.polling = true;
                }
            }
        }
        self.extra = watched;
    }
}

/// Whether `path` lies below one of `roots`.
pub(super) fn under_any(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| path.starts_with(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode};

    #[test]
    fn the_collectors_own_opens_and_reads_wake_nothing() {
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Close(AccessMode::Execute)),
        ] {
            assert_eq!(interest(&kind), Interest::None, "{kind:?}");
        }
    }

    #[test]
    fn writes_read_and_file_changes_discover() {
        assert_eq!(
            interest(&EventKind::Modify(ModifyKind::Data(DataChange::Any))),
            Interest::Data
        );
        assert_eq!(
            interest(&EventKind::Access(AccessKind::Close(AccessMode::Write))),
            Interest::Data
        );
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Remove(RemoveKind::File),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
            EventKind::Other,
        ] {
            assert_eq!(interest(&kind), Interest::Files, "{kind:?}");
        }
    }

    #[test]
    fn too_many_paths_read_everything() {
        let mut wake = Wake::default();
        for i in 0..=MAX_PATHS {
            wake.add(Interest::Data, vec![PathBuf::from(format!("/l/{i}.log"))]);
        }
        assert!(wake.all);
        assert!(wake.paths.is_empty());
        wake.add(Interest::Data, vec![PathBuf::from("/l/x.log")]);
        assert!(wake.paths.is_empty(), "nothing to name once all are read");
    }
}
