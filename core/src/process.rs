//! Reads this process's own resource usage from `/proc/self` for the `process_*` metrics.

use std::fs;
use std::io;

/// Fields of `/proc/self/stat` the process metrics need.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SelfStat {
    /// utime + stime in seconds.
    pub cpu_seconds: f64,
    /// vsize.
    pub virtual_bytes: u64,
    /// rss pages times the page size.
    pub resident_bytes: u64,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("/proc/<pid>/stat: {what}"),
    )
}

/// Parses the text of a `/proc/<pid>/stat` file.
/// `clock_ticks` and `page_size` come from the kernel (see [`self_stat`]).
pub fn parse_stat(text: &str, clock_ticks: u64, page_size: u64) -> io::Result<SelfStat> {
    // The command name is in parentheses and may contain spaces: fields start after ')'.
    let rest = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| invalid("no ')' after the command name"))?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After ')': field 3 (state) is index 0, so field N is index N - 3.
    let field = |n: usize| -> io::Result<u64> {
        fields
            .get(n - 3)
            .ok_or_else(|| invalid(&format!("field {n} missing")))?
            .parse()
            .map_err(|_| invalid(&format!("field {n} is not a number")))
    };
    Ok(SelfStat {
        cpu_seconds: (field(14)? + field(15)?) as f64 / clock_ticks.max(1) as f64,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)?.saturating_mul(page_size),
    })
}

/// This process's stat.
pub fn self_stat() -> io::Result<SelfStat> {
    stat_at("/proc/self/stat")
}

/// Another process's stat.
#[cfg(test)]
fn pid_stat(pid: u32) -> io::Result<SelfStat> {
    stat_at(&format!("/proc/{pid}/stat"))
}

fn stat_at(path: &str) -> io::Result<SelfStat> {
    parse_stat(
        &fs::read_to_string(path)?,
        rustix::param::clock_ticks_per_second(),
        rustix::param::page_size() as u64,
    )
}

/// How long a count of open file descriptors is reused where it must be listed.
const OPEN_FDS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// Open file descriptors of this process. Since Linux 6.2 the size of `/proc/self/fd` is
/// that number: one `stat`. Older kernels report 0 there, and the directory is listed
/// instead, at most once a second: it holds the collectors' kept cgroup files (up to
/// 2,048; listing them took 0.5 ms per scrape), and the daemon's own metrics are made for
/// every request.
pub fn open_fds() -> io::Result<usize> {
    let size = fs::metadata("/proc/self/fd")?.len();
    if size > 0 {
        return usize::try_from(size).map_err(|_| invalid("/proc/self/fd: size out of range"));
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

/// The soft limit on open files.
pub fn max_fds() -> io::Result<u64> {
    let limits = fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or_else(|| invalid("no 'Max open files' line in /proc/self/limits"))?;
    line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| invalid("unreadable 'Max open files' limit"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_the_name() {
        let text = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 5000 104857600 2560 18446744073709551615";
        let s = parse_stat(text, 100, 4096).unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.virtual_bytes, 104_857_600);
        assert_eq!(s.resident_bytes, 2560 * 4096);
    }

    #[test]
    fn truncated_stat_is_an_error() {
        assert!(parse_stat("1234 (x) S 1 2", 100, 4096).is_err());
        assert!(parse_stat("garbage", 100, 4096).is_err());
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
        assert!(self_stat().unwrap().resident_bytes > 0);
        assert!(pid_stat(std::process::id()).unwrap().resident_bytes > 0);
        assert!(pid_stat(u32::MAX).is_err());
        assert!(open_fds().unwrap() > 0);
        assert!(max_fds().unwrap() > 0);
    }
}
