//! Reading host files: a reusable-buffer file reader with a size bound, and the errors
//! that say why a value is missing. Our own small reader because `cgroups-rs` cannot read
//! a fixture root and reads a missing cgroup as zeros.

use std::fmt;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::kept_files::{KeptFiles, KeptForRefresh};

/// What is wrong with a file's contents: what a parser given to [`FileReader::parse`]
/// returns.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    line: usize,
    message: String,
}

impl ParseError {
    /// A problem on 1-based `line` (0 when it is not on one line, e.g. an empty file).
    pub fn new(line: usize, message: impl Into<String>) -> Self {
        ParseError {
            line,
            message: message.into(),
        }
    }

    /// The 1-based line, 0 when the problem is not on one line.
    pub fn line(&self) -> usize {
        self.line
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => f.write_str(&self.message),
            n => write!(f, "line {n}: {}", self.message),
        }
    }
}

/// Why a file's values are missing: it could not be read, or it made no sense.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadError {
    /// open/read failed (a vanished cgroup gives NotFound).
    Io(PathBuf, io::Error),
    /// The contents did not parse.
    Parse(PathBuf, ParseError),
}

impl ReadError {
    /// True when the file is gone (instance stopped mid-refresh), as opposed to broken.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io(_, e) if e.kind() == io::ErrorKind::NotFound)
    }
}

/// A file's value, or `None` when the host has no such file (a kernel without the
/// feature, a controller not enabled): such a series is left out, never sent as zero.
/// Any other error stays an error.
pub fn optional<T>(read: Result<T, ReadError>) -> Result<Option<T>, ReadError> {
    match read {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            ReadError::Parse(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for ReadError {}

/// Files larger than this are refused by [`FileReader`]: no cgroup or proc file comes
/// close, and a bound keeps a malformed or hostile file from growing memory.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The reused buffer's first size: every cgroup and proc file a collector reads fits.
const FIRST_BUFFER: usize = 16 * 1024;

/// Reads small files into one reused buffer (one `open` + `read` per file, no per-file
/// allocation once the buffer has grown). The reader a [`crate::PerInstanceCollector`]
/// hands its [`crate::InstanceReader`] also keeps cgroup files open for the next refresh
/// and reads them again from offset 0 (no `open` or `close`).
#[derive(Debug, Default)]
pub struct FileReader {
    /// Always initialized to its full length; `filled` bytes of it are the last file.
    buffer: Vec<u8>,
    filled: usize,
    /// Cgroup files kept open between refreshes, when the reader is a collector's.
    kept: Option<KeptForRefresh>,
}

/// Reads all of `source` into `into` (cleared first), refusing more than `max` bytes
/// with `InvalidData`: the one bounded read for files whose size is not ours to choose.
pub fn read_capped(source: impl Read, max: u64, into: &mut Vec<u8>) -> io::Result<()> {
    into.clear();
    source.take(max + 1).read_to_end(into)?;
    if into.len() as u64 > max {
        return Err(too_large(max));
    }
    Ok(())
}

/// The error for a file past its bound.
fn too_large(max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than {max} bytes"),
    )
}

impl FileReader {
    /// A reader with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A reader for one refresh that reads again, with one `pread`, the files below
    /// `cgroup_root` the last reader made from `kept` read, and keeps those it reads open
    /// for the next; the others are closed when this reader is dropped. Only cgroup files
    /// are kept: a `/proc/<pid>/...` file would hold its process's namespaces alive.
    pub fn keeping(kept: &Arc<KeptFiles>, cgroup_root: &Path) -> Self {
        FileReader {
            kept: Some(kept.for_refresh(cgroup_root)),
            ..Self::default()
        }
    }

    /// The file's text, valid until the next read.
    pub fn read(&mut self, path: &Path) -> Result<&str, ReadError> {
        let io_error = |e| ReadError::Io(path.to_owned(), e);
        let kept = self.kept.as_mut().and_then(|k| k.take(path));
        if let Some((kept_path, kept)) = kept {
            // Read again from the start; a removed cgroup's file answers ENODEV and is
            // opened anew below (the path may be a new cgroup's by now).
            if self
                .read_generated(|buf, at| kept.0.read_at(buf, at))
                .is_ok()
            {
                if let Some(k) = self.kept.as_mut() {
                    k.keep_again(kept_path, kept);
                }
                return self.text(path);
            }
        }
        let mut file = std::fs::File::open(path).map_err(io_error)?;
        self.read_generated(|buf, _| file.read(buf))
            .map_err(io_error)?;
        if let Some(k) = self.kept.as_mut() {
            k.keep(path, file);
        }
        self.text(path)
    }

    /// The last file's text.
    fn text(&self, path: &Path) -> Result<&str, ReadError> {
        std::str::from_utf8(&self.buffer[..self.filled]).map_err(|_| {
            ReadError::Io(
                path.to_owned(),
                io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"),
            )
        })
    }

    /// Reads a file the kernel generates (proc, sysfs, cgroupfs) whole, up to
    /// [`MAX_FILE_BYTES`]. Such a read returns as much as was asked unless the end is
    /// reached (a seq_file fills the caller's buffer before returning, a sysfs attribute
    /// is at most one page), so a read that returns less is the end, and the extra read
    /// that would return 0 is skipped: one `read` per file.
    fn read_generated(
        &mut self,
        mut read_at: impl FnMut(&mut [u8], u64) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.filled = 0;
        if self.buffer.is_empty() {
            self.buffer.resize(FIRST_BUFFER, 0);
        }
        loop {
            let asked = self.buffer.len() - self.filled;
            let got = match read_at(&mut self.buffer[self.filled..], self.filled as u64) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.filled += got;
            if self.filled as u64 > MAX_FILE_BYTES {
                return Err(too_large(MAX_FILE_BYTES));
            }
            if got < asked {
                return Ok(());
            }
            let grown = (self.buffer.len() * 2).min(MAX_FILE_BYTES as usize + 1);
            self.buffer.resize(grown.max(self.filled + 1), 0);
        }
    }

    /// Reads and parses a file.
    pub fn parse<T>(
        &mut self,
        path: &Path,
        parse: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Result<T, ReadError> {
        let text = self.read(path)?;
        parse(text).map_err(|e| ReadError::Parse(path.to_owned(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers reads as a seq_file does: as much as asked until the end.
    struct Generated(Vec<u8>, usize, usize);

    impl Read for Generated {
        fn read(&mut self, into: &mut [u8]) -> io::Result<usize> {
            self.2 += 1;
            let n = into.len().min(self.0.len() - self.1);
            into[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    fn read_all(files: &mut FileReader, text: Vec<u8>) -> (io::Result<Vec<u8>>, usize) {
        let mut source = Generated(text, 0, 0);
        let result = files
            .read_generated(|buf, _| source.read(buf))
            .map(|()| files.buffer[..files.filled].to_vec());
        (result, source.2)
    }

    #[test]
    fn a_small_file_takes_one_read_and_a_large_one_is_read_whole() {
        let mut files = FileReader::new();
        let (text, reads) = read_all(&mut files, b"nr_periods 0\n".to_vec());
        assert_eq!(text.unwrap(), b"nr_periods 0\n");
        assert_eq!(reads, 1, "the short read is the end");

        let large: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (text, _) = read_all(&mut files, large.clone());
        assert_eq!(text.unwrap(), large);
        // An exactly full buffer is not mistaken for the end.
        let exact = vec![7u8; files.buffer.len()];
        let (text, _) = read_all(&mut files, exact.clone());
        assert_eq!(text.unwrap(), exact);
        let (text, reads) = read_all(&mut files, b"".to_vec());
        assert_eq!((text.unwrap(), reads), (Vec::new(), 1));
    }

    #[test]
    fn a_file_past_the_bound_is_refused() {
        let mut files = FileReader::new();
        let (result, _) = read_all(&mut files, vec![b'x'; MAX_FILE_BYTES as usize + 10]);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidData);
        let (result, _) = read_all(&mut files, vec![b'x'; MAX_FILE_BYTES as usize]);
        assert_eq!(result.unwrap().len(), MAX_FILE_BYTES as usize);
    }

    #[test]
    fn real_files_read_as_before() {
        let dir = std::env::temp_dir().join(format!("lxm-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, "a 1\nb 2\n").unwrap();
        let mut files = FileReader::new();
        assert_eq!(files.read(&path).unwrap(), "a 1\nb 2\n");
        assert!(files
            .read(Path::new("/proc/self/stat"))
            .unwrap()
            .contains(')'));
        assert!(files.read(&dir.join("missing")).unwrap_err().is_not_found());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
