//! Cgroup files kept open between refreshes. The kernel generates a cgroup file anew on
//! every read from offset 0, so a file once opened can be read again with `pread` at 0:
//! no path lookup, `open` or `close` per refresh, which is most of a refresh's cost on a
//! host of real containers (docs/performance.md).
//!
//! Bounded: at most [`MAX_KEPT_FILES`] files for the whole process, each costing the
//! kernel about one page (the file's read buffer), so beyond a few hundred instances the
//! rest are opened per refresh as before. Only files under the cgroup root are kept: a
//! `/proc/<pid>/...` file would hold its process's namespaces alive after it stopped. A
//! file whose cgroup was removed answers `ENODEV` and is opened anew by path (a restarted
//! container's cgroup has the same path); one not read in a refresh is closed.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Open files kept by the whole process at most (about 9 MiB of kernel buffers).
pub(crate) const MAX_KEPT_FILES: usize = 2048;

/// Files kept open by this process now.
static KEPT: AtomicUsize = AtomicUsize::new(0);

/// One kept file; its place in the budget is given back when it closes.
#[derive(Debug)]
pub(crate) struct KeptFile(pub(crate) File);

impl KeptFile {
    /// Keeps `file` if the budget allows.
    fn within_budget(file: File) -> Option<KeptFile> {
        KEPT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < MAX_KEPT_FILES).then_some(n + 1)
        })
        .ok()
        .map(|_| KeptFile(file))
    }
}

impl Drop for KeptFile {
    fn drop(&mut self) {
        KEPT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One collector's kept files, between its refreshes.
#[derive(Debug, Default)]
pub(crate) struct KeptFiles {
    files: Mutex<HashMap<PathBuf, KeptFile>>,
}

impl KeptFiles {
    /// A refresh's view: the files kept so far, and those this refresh keeps.
    pub(crate) fn for_refresh(self: &Arc<Self>, under: &Path) -> KeptForRefresh {
        let previous = std::mem::take(&mut *self.lock());
        KeptForRefresh {
            home: self.clone(),
            under: under.to_owned(),
            next: HashMap::with_capacity(previous.len()),
            previous,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, KeptFile>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The kept files during one refresh; what it read is kept for the next one when it ends,
/// the rest closed.
#[derive(Debug)]
pub(crate) struct KeptForRefresh {
    home: Arc<KeptFiles>,
    /// Only files below this (the cgroup root) are kept.
    under: PathBuf,
    previous: HashMap<PathBuf, KeptFile>,
    next: HashMap<PathBuf, KeptFile>,
}

impl KeptForRefresh {
    /// The file kept open for `path`, if any: taken out until [`KeptForRefresh::keep`]
    /// gives it back.
    pub(crate) fn take(&mut self, path: &Path) -> Option<(PathBuf, KeptFile)> {
        self.previous.remove_entry(path)
    }

    /// Keeps `file` (just read whole) for the next refresh, if it is a cgroup file.
    pub(crate) fn keep(&mut self, path: &Path, file: File) {
        if path.starts_with(&self.under) {
            if let Some(kept) = KeptFile::within_budget(file) {
                self.next.insert(path.to_owned(), kept);
            }
        }
    }

    /// Keeps a file that was already kept, under the path it was taken with (no new
    /// allocation per file and refresh).
    pub(crate) fn keep_again(&mut self, path: PathBuf, kept: KeptFile) {
        self.next.insert(path, kept);
    }
}

impl Drop for KeptForRefresh {
    fn drop(&mut self) {
        let next = std::mem::take(&mut self.next);
        let mut home = self.home.lock();
        // Another refresh of the same collector cannot have run meanwhile (the engine
        // never starts a collector that is still running); if one did, keep both.
        home.extend(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::FileReader;

    /// The tests share the process-wide count.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn files_read_are_kept_read_again_from_the_start_and_closed_when_not_read() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = std::env::temp_dir().join(format!("lxm-kept-{}", std::process::id()));
        let (cgroups, other) = (dir.join("cgroup"), dir.join("proc"));
        std::fs::create_dir_all(&cgroups).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let (a, b, outside) = (cgroups.join("a"), cgroups.join("b"), other.join("stat"));
        for path in [&a, &b, &outside] {
            std::fs::write(path, "1\n").unwrap();
        }
        let home = Arc::new(KeptFiles::default());
        let before = KEPT.load(Ordering::Relaxed);

        let mut files = FileReader::keeping(home.for_refresh(&cgroups));
        for path in [&a, &b, &outside] {
            assert_eq!(files.read(path).unwrap(), "1\n");
        }
        drop(files);
        assert_eq!(home.lock().len(), 2, "the two cgroup files, not the other");

        // Written in place: the kept file reads the new text from its start.
        std::fs::write(&a, "22\n").unwrap();
        let mut files = FileReader::keeping(home.for_refresh(&cgroups));
        assert_eq!(files.read(&a).unwrap(), "22\n");
        drop(files);
        assert_eq!(
            home.lock().keys().collect::<Vec<_>>(),
            [&a],
            "b was not read in that refresh: closed"
        );
        assert_eq!(KEPT.load(Ordering::Relaxed), before + 1);
        home.lock().clear();
        assert_eq!(KEPT.load(Ordering::Relaxed), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nothing_is_kept_past_the_budget() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let before = KEPT.load(Ordering::Relaxed);
        KEPT.store(MAX_KEPT_FILES, Ordering::Relaxed);
        let file = File::open("/proc/self/stat").unwrap();
        assert!(KeptFile::within_budget(file).is_none());
        KEPT.store(before, Ordering::Relaxed);
        let file = File::open("/proc/self/stat").unwrap();
        let kept = KeptFile::within_budget(file).expect("room again");
        assert_eq!(KEPT.load(Ordering::Relaxed), before + 1);
        drop(kept);
        assert_eq!(KEPT.load(Ordering::Relaxed), before);
    }
}
