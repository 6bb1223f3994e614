//! Reading host files: a reusable-buffer file reader with a size bound, and the errors
//! that say why a value is missing. Our own small reader because `cgroups-rs` cannot read
//! a fixture root and reads a missing cgroup as zeros.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

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

/// Reads small files into one reused buffer (one `open` + `read` per file, no per-file
/// allocation once the buffer has grown).
#[derive(Debug, Default)]
pub struct FileReader {
    buffer: Vec<u8>,
}

/// Reads all of `source` into `into` (cleared first), refusing more than `max` bytes
/// with `InvalidData`: the one bounded read for files whose size is not ours to choose.
pub fn read_capped(source: impl Read, max: u64, into: &mut Vec<u8>) -> io::Result<()> {
    into.clear();
    source.take(max + 1).read_to_end(into)?;
    if into.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(())
}

impl FileReader {
    /// A reader with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The file's text, valid until the next read.
    pub fn read(&mut self, path: &Path) -> Result<&str, ReadError> {
        let io_error = |e| ReadError::Io(path.to_owned(), e);
        let file = std::fs::File::open(path).map_err(io_error)?;
        read_capped(file, MAX_FILE_BYTES, &mut self.buffer).map_err(io_error)?;
        std::str::from_utf8(&self.buffer)
            .map_err(|_| io_error(io::Error::new(io::ErrorKind::InvalidData, "not UTF-8")))
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
