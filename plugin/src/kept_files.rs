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
//! container's cgroup has the same path); one not read in a refresh is closed. A v1 pid
//! list is never kept ([`is_v1_pid_list`]).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
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

/// A kept file and the path it was opened by.
type Entry = (PathBuf, KeptFile);

/// The cgroup files one reader of the host keeps open between its refreshes, for
/// [`crate::FileReader::keeping`]: something that reads the same cgroup files every
/// refresh (an instance source, a collector that is not a [`crate::PerInstanceCollector`],
/// which has its own) reads each again with one `pread`, with no path lookup, `open` or
/// `close`. Bounded for the whole process: past 2,048 kept files the rest are opened per
/// read as before.
#[derive(Debug, Default)]
pub struct KeptFiles {
    files: Mutex<Vec<Entry>>,
}

impl KeptFiles {
    /// A refresh's view: the files kept so far, and those this refresh keeps.
    pub(crate) fn for_refresh(self: &Arc<Self>, under: &Path) -> KeptForRefresh {
        let previous: Vec<_> = std::mem::take(&mut *self.lock())
            .into_iter()
            .map(Some)
            .collect();
        KeptForRefresh {
            home: self.clone(),
            under: under.as_os_str().as_bytes().to_owned(),
            remaining: previous.len(),
            next: Vec::with_capacity(previous.len()),
            previous,
            cursor: 0,
            by_path: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The kept files during one refresh; what it read is kept for the next one when it ends,
/// the rest closed.
///
/// A refresh reads the same files in the same order as the last one, so the file asked
/// for is almost always the one after the last taken: found by comparing the path's
/// bytes, with no hashing or allocation per file. Only when instances came or went is
/// the rest looked up by path, through an index built then.
#[derive(Debug)]
pub(crate) struct KeptForRefresh {
    home: Arc<KeptFiles>,
    /// Only files below this (the cgroup root) are kept.
    under: Vec<u8>,
    /// The last refresh's files, in its order; `None` once taken.
    previous: Vec<Option<Entry>>,
    /// Where in `previous` the next read is expected.
    cursor: usize,
    /// How many of `previous` are not taken yet.
    remaining: usize,
    /// `previous` by path, built at the first read out of order.
    by_path: Option<HashMap<OsString, usize>>,
    /// The files this refresh read, in its order.
    next: Vec<Entry>,
}

impl KeptForRefresh {
    /// The file kept open for `path`, if any: taken out until [`KeptForRefresh::keep`]
    /// gives it back.
    pub(crate) fn take(&mut self, path: &Path) -> Option<Entry> {
        if self.remaining == 0 || !self.is_under(path) {
            return None;
        }
        let bytes = path.as_os_str().as_bytes();
        let at = match self.previous.get(self.cursor) {
            Some(Some((kept, _))) if kept.as_os_str().as_bytes() == bytes => self.cursor,
            _ => {
                let previous = &self.previous;
                let by_path = self.by_path.get_or_insert_with(|| {
                    (0..)
                        .zip(previous)
                        .filter_map(|(i, e)| Some((e.as_ref()?.0.as_os_str().to_owned(), i)))
                        .collect()
                });
                *by_path.get(path.as_os_str())?
            }
        };
        let taken = self.previous[at].take()?;
        self.cursor = at + 1;
        self.remaining -= 1;
        Some(taken)
    }

    /// True when `path` is below the cgroup root, by its bytes.
    fn is_under(&self, path: &Path) -> bool {
        path.as_os_str()
            .as_bytes()
            .strip_prefix(self.under.as_slice())
            .is_some_and(|rest| rest.first() == Some(&b'/') || self.under.ends_with(b"/"))
    }

    /// Keeps `file` (just read whole) for the next refresh, if it is a cgroup file that
    /// reads anew from offset 0.
    pub(crate) fn keep(&mut self, path: &Path, file: File) {
        if self.is_under(path) && !is_v1_pid_list(path, &file) {
            if let Some(kept) = KeptFile::within_budget(file) {
                self.next.push((path.to_owned(), kept));
            }
        }
    }

    /// Keeps a file that was already kept, under the path it was taken with (no new
    /// allocation per file and refresh).
    pub(crate) fn keep_again(&mut self, path: PathBuf, kept: KeptFile) {
        self.next.push((path, kept));
    }
}

/// The magic number of a cgroup v1 file system (`statfs`'s `f_type`).
const CGROUP_SUPER_MAGIC: u64 = 0x0027_e0eb;

/// True for a v1 cgroup's `cgroup.procs` or `tasks`. v1 builds a cgroup's pid list when a
/// file is opened and hands the same list again to a read from offset 0 of that open file
/// while the list lives, until a second after its last read (`cgroup_pidlist_start`): a
/// kept file read more often than that would never see a process come or go. v2
/// generates the list anew on every read, as every other cgroup file.
fn is_v1_pid_list(path: &Path, file: &File) -> bool {
    path.file_name()
        .is_some_and(|name| name == "cgroup.procs" || name == "tasks")
        && rustix::fs::fstatfs(file).is_ok_and(|fs| fs.f_type as u64 == CGROUP_SUPER_MAGIC)
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

        let mut files = FileReader::keeping(&home, &cgroups);
        for path in [&a, &b, &outside] {
            assert_eq!(files.read(path).unwrap(), "1\n");
        }
        drop(files);
        assert_eq!(home.lock().len(), 2, "the two cgroup files, not the other");

        // Written in place: the kept file reads the new text from its start.
        std::fs::write(&a, "22\n").unwrap();
        let mut files = FileReader::keeping(&home, &cgroups);
        assert_eq!(files.read(&a).unwrap(), "22\n");
        drop(files);
        assert_eq!(
            home.lock().iter().map(|(p, _)| p).collect::<Vec<_>>(),
            [&a],
            "b was not read in that refresh: closed"
        );
        assert_eq!(KEPT.load(Ordering::Relaxed), before + 1);
        home.lock().clear();
        assert_eq!(KEPT.load(Ordering::Relaxed), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_read_in_another_order_are_still_found_kept() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = std::env::temp_dir().join(format!("lxm-kept-order-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths: Vec<PathBuf> = ["a", "b", "c", "d"].iter().map(|n| dir.join(n)).collect();
        for path in &paths {
            std::fs::write(path, path.file_name().unwrap().as_encoded_bytes()).unwrap();
        }
        let home = Arc::new(KeptFiles::default());
        let mut files = FileReader::keeping(&home, &dir);
        for path in &paths {
            files.read(path).unwrap();
        }
        drop(files);

        // Gone by path: only a kept descriptor can still read them. An instance that
        // went away (b) and the order changed (d before a) find the rest all the same.
        for path in &paths {
            std::fs::remove_file(path).unwrap();
        }
        let mut files = FileReader::keeping(&home, &dir);
        for (path, text) in [(&paths[3], "d"), (&paths[0], "a"), (&paths[2], "c")] {
            assert_eq!(files.read(path).unwrap(), text);
        }
        assert!(files.read(&paths[3]).is_err(), "taken once per refresh");
        drop(files);
        assert_eq!(home.lock().len(), 3, "b was not read: closed");
        home.lock().clear();
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
