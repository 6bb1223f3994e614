//! Reads this process's own resource usage for the `process_*` metrics.
//!
//! These are made for every request, so each figure comes from the cheapest call that
//! gives it: the CPU clock, `/proc/self/statm` and `getrlimit`. `/proc/self/stat` (as
//! Prometheus' client libraries read it) walks every thread to sum their times, and with
//! `/proc/self/limits` it took 16 % of the daemon's CPU per cached keep-alive request.

use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use rustix::process::{getrlimit, Resource};
use rustix::time::{clock_gettime, ClockId};

/// Memory figures of `/proc/<pid>/statm`, in bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Memory {
    /// Virtual memory size (`size`, the same figure as `vsize` in `/proc/<pid>/stat`).
    pub(crate) virtual_bytes: u64,
    /// Resident set size (`resident`, the same figure as `rss` in `/proc/<pid>/stat`).
    pub(crate) resident_bytes: u64,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("/proc/self/{what}"))
}

/// Parses the text of a `/proc/<pid>/statm` file: sizes in pages of `page_size` bytes.
fn parse_statm(text: &str, page_size: u64) -> io::Result<Memory> {
    let mut pages = text.split_ascii_whitespace().map(str::parse::<u64>);
    let mut next = |what: &str| match pages.next() {
        Some(Ok(n)) => Ok(n.saturating_mul(page_size)),
        _ => Err(invalid(&format!("statm: no {what} size"))),
    };
    Ok(Memory {
        virtual_bytes: next("virtual")?,
        resident_bytes: next("resident")?,
    })
}

/// `path`, opened on first use and kept, so that each later read or `fstat` is one call
/// with no path lookup (open, read and close of `/proc/self/statm` took 6 % of the
/// daemon's CPU per cached request). `/proc` files are generated anew on every read
/// from offset 0.
fn kept(file: &'static OnceLock<fs::File>, path: &str) -> io::Result<&'static fs::File> {
    if let Some(open) = file.get() {
        return Ok(open);
    }
    let opened = fs::File::open(path)?;
    Ok(file.get_or_init(|| opened))
}

/// This process's memory.
pub(crate) fn memory() -> io::Result<Memory> {
    static STATM: OnceLock<fs::File> = OnceLock::new();
    // Seven numbers of at most 20 digits.
    let mut buf = [0u8; 192];
    let n = kept(&STATM, "/proc/self/statm")?.read_at(&mut buf, 0)?;
    let text = std::str::from_utf8(&buf[..n]).map_err(|_| invalid("statm: not text"))?;
    parse_statm(text, rustix::param::page_size() as u64)
}

/// CPU time this process has used, user and system, all threads (live and ended), in
/// seconds.
pub(crate) fn cpu_seconds() -> f64 {
    let spent = clock_gettime(ClockId::ProcessCPUTime);
    spent.tv_sec as f64 + spent.tv_nsec as f64 / 1e9
}

/// How long a count of open file descriptors is reused where it must be listed.
const OPEN_FDS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// Open file descriptors of this process. Since Linux 6.2 the size of `/proc/self/fd` is
/// that number: one `stat`. Older kernels report 0 there, and the directory is listed
/// instead, at most once a second: it holds the collectors' kept cgroup files (up to
/// 2,048; listing them took 0.5 ms per scrape), and the daemon's own metrics are made for
/// every request.
pub(crate) fn open_fds() -> io::Result<usize> {
    static FD_DIR: OnceLock<fs::File> = OnceLock::new();
    let size = kept(&FD_DIR, "/proc/self/fd")?.metadata()?.len();
    if size > 0 {
        return usize::try_from(size).map_err(|_| invalid("fd: size out of range"));
    }
    static LAST: std::sync::Mutex<Option<(std::time::Instant, usize)>> =
        std::sync::Mutex::new(None);
    let now = std::time::Instant::now();
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, count)) = *last {
        if now.duration_since(at) < OPEN_FDS_MAX_AGE {
            return Ok(count);
        }
    }
    let count = fs::read_dir("/proc/self/fd")?.count();
    *last = Some((now, count));
    Ok(count)
}

/// The soft limit on open files; `None` when there is none.
pub(crate) fn max_fds() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_sizes_are_pages() {
        let m = parse_statm("25600 2560 512 100 0 3000 0\n", 4096).unwrap();
        assert_eq!(m.virtual_bytes, 25600 * 4096);
        assert_eq!(m.resident_bytes, 2560 * 4096);
    }

    #[test]
    fn truncated_statm_is_an_error() {
        assert!(parse_statm("25600", 4096).is_err());
        assert!(parse_statm("garbage 12", 4096).is_err());
        assert!(parse_statm("", 4096).is_err());
    }

    #[test]
    fn counts_descriptors_as_they_open() {
        let before = open_fds().unwrap() as i64;
        let files: Vec<fs::File> = (0..200)
            .map(|_| fs::File::open("/proc/self/stat").unwrap())
            .collect();
        let after = open_fds().unwrap() as i64;
        drop(files);
        // Other tests open and close files meanwhile. A kernel before 6.2 has no count
        // in the size of /proc/self/fd, and a listing is reused for a second.
        assert!(
            (190..=210).contains(&(after - before)),
            "200 files opened, count went from {before} to {after} (needs Linux 6.2+)"
        );
    }

    #[test]
    fn reads_this_process() {
        let m = memory().unwrap();
        assert!(m.resident_bytes > 0 && m.virtual_bytes >= m.resident_bytes);
        assert!(open_fds().unwrap() > 0);
        // The soft limit, as /proc/self/limits shows it.
        let limits = fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits.lines().find(|l| l.starts_with("Max open files"));
        let soft = line.and_then(|l| l.split_ascii_whitespace().nth(3));
        assert_eq!(max_fds().map(|n| n.to_string()).as_deref(), soft);
    }

    #[test]
    fn the_kept_statm_reads_anew() {
        let before = memory().unwrap().resident_bytes;
        let touched = vec![1u8; 64 << 20];
        let after = memory().unwrap().resident_bytes;
        std::hint::black_box(&touched);
        assert!(
            after >= before + (48 << 20),
            "64 MiB touched, resident went from {before} to {after} bytes"
        );
    }

    #[test]
    fn cpu_time_is_what_proc_stat_counts() {
        let busy_until = std::time::Instant::now() + std::time::Duration::from_millis(200);
        let mut spin = 0u64;
        while std::time::Instant::now() < busy_until {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let clock = cpu_seconds();
        // utime and stime, fields 14 and 15, in clock ticks.
        let stat = fs::read_to_string("/proc/self/stat").unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
            .split_ascii_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let stat_seconds = ticks as f64 / rustix::param::clock_ticks_per_second() as f64;
        assert!(
            clock >= 0.2,
            "200 ms spent spinning, the clock says {clock} s"
        );
        // Other tests' threads run meanwhile; the two reads are taken apart in time and
        // /proc counts in ticks.
        assert!(
            (clock - stat_seconds).abs() < 0.1,
            "CPU clock {clock} s, /proc/self/stat {stat_seconds} s"
        );
    }
}
