//! Pure parsers for cgroup v1 and v2 files, for [`lxmetrics_plugin::FileReader::parse`]. They take the file's text and return values
//! or a [`ParseError`] naming the line; they never return a default for something they
//! could not read. Device numbers are `u32` (minors go up to 2^20; `cgroups-rs` panics
//! above 32767).

use std::fmt;

use lxmetrics_plugin::ParseError;

fn error(line: usize, message: impl Into<String>) -> ParseError {
    ParseError::new(line, message)
}

/// Parses a counter or byte count: a plain unsigned decimal that fits in u64.
pub fn parse_u64(text: &str, line: usize) -> Result<u64, ParseError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error(line, format!("\"{text}\" is not a number")));
    }
    text.parse()
        .map_err(|_| error(line, format!("\"{text}\" is too large")))
}

/// A file holding one number (`memory.current`, `pids.current`, `memory.usage_in_bytes`).
pub fn single_value(text: &str) -> Result<u64, ParseError> {
    let mut lines = text.lines();
    let first = lines.next().ok_or_else(|| error(0, "empty file"))?.trim();
    if lines.any(|l| !l.trim().is_empty()) {
        return Err(error(2, "more than one line"));
    }
    parse_u64(first, 1)
}

/// A limit file: a number, or `max` (v2) for no limit. v1's "no limit" is a huge number
/// (`PAGE_COUNTER_MAX` times the page size), which callers treat like `max` by comparing
/// with the host's memory.
pub fn limit_value(text: &str) -> Result<Option<u64>, ParseError> {
    if text.trim() == "max" {
        return Ok(None);
    }
    single_value(text).map(Some)
}

/// A "flat keyed" file: `key value` per line (`cpu.stat`, `memory.stat`, `memory.events`,
/// `cpuacct.stat`, `memory.oom_control`). Calls `each` for every pair; a malformed line is
/// an error for the whole file (a truncated file must not be half-served).
pub fn flat_keyed<'a>(text: &'a str, mut each: impl FnMut(&'a str, u64)) -> Result<(), ParseError> {
    let mut any = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once(' ')
            .ok_or_else(|| error(i + 1, format!("\"{line}\" has no value")))?;
        each(key, parse_u64(value.trim(), i + 1)?);
        any = true;
    }
    if !any {
        return Err(error(0, "empty file"));
    }
    Ok(())
}

/// Looks up one key of a flat keyed file.
pub fn flat_keyed_get(text: &str, wanted: &str) -> Result<Option<u64>, ParseError> {
    let mut found = None;
    flat_keyed(text, |k, v| {
        if k == wanted {
            found = Some(v);
        }
    })?;
    Ok(found)
}

/// One CPU's usage from `cpuacct.usage_all` (v1), in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuUsage {
    /// CPU number.
    pub cpu: u32,
    /// User time, ns.
    pub user_ns: u64,
    /// System time, ns.
    pub system_ns: u64,
}

/// Parses `cpuacct.usage_all`: a header `cpu user system`, then `N user_ns system_ns`.
pub fn cpuacct_usage_all(text: &str) -> Result<Vec<CpuUsage>, ParseError> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.split_whitespace().eq(["cpu", "user", "system"]) => {}
        Some(_) => return Err(error(1, "expected the header \"cpu user system\"")),
        None => return Err(error(0, "empty file")),
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(cpu), Some(user), Some(system), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(error(i + 1, "expected three fields"));
        };
        out.push(CpuUsage {
            cpu: u32::try_from(parse_u64(cpu, i + 1)?)
                .map_err(|_| error(i + 1, "CPU number out of range"))?,
            user_ns: parse_u64(user, i + 1)?,
            system_ns: parse_u64(system, i + 1)?,
        });
    }
    if out.is_empty() {
        return Err(error(0, "no CPU lines"));
    }
    Ok(out)
}

/// A block device number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceNumber {
    /// Major.
    pub major: u32,
    /// Minor (up to 2^20 - 1 on Linux).
    pub minor: u32,
}

impl fmt::Display for DeviceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

fn device_number(text: &str, line: usize) -> Result<DeviceNumber, ParseError> {
    let (major, minor) = text
        .split_once(':')
        .ok_or_else(|| error(line, format!("\"{text}\" is not a MAJOR:MINOR device")))?;
    let part = |t: &str| -> Result<u32, ParseError> {
        u32::try_from(parse_u64(t, line)?)
            .map_err(|_| error(line, format!("device number \"{text}\" out of range")))
    };
    Ok(DeviceNumber {
        major: part(major)?,
        minor: part(minor)?,
    })
}

/// Per-device I/O counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceIo {
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub written_bytes: u64,
    /// Read operations completed.
    pub reads: u64,
    /// Write operations completed.
    pub writes: u64,
}

/// Parses v2 `io.stat`: `MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N`.
/// Keys we do not use are skipped; the four we use must be present.
pub fn io_stat(text: &str) -> Result<Vec<(DeviceNumber, DeviceIo)>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let Some(device) = fields.next() else {
            continue;
        };
        let device = device_number(device, i + 1)?;
        let (mut rb, mut wb, mut ri, mut wi) = (None, None, None, None);
        for field in fields {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| error(i + 1, format!("\"{field}\" is not key=value")))?;
            let slot = match key {
                "rbytes" => &mut rb,
                "wbytes" => &mut wb,
                "rios" => &mut ri,
                "wios" => &mut wi,
                _ => continue,
            };
            *slot = Some(parse_u64(value, i + 1)?);
        }
        match (rb, wb, ri, wi) {
            (Some(read_bytes), Some(written_bytes), Some(reads), Some(writes)) => out.push((
                device,
                DeviceIo {
                    read_bytes,
                    written_bytes,
                    reads,
                    writes,
                },
            )),
            _ => return Err(error(i + 1, "missing one of rbytes, wbytes, rios, wios")),
        }
    }
    Ok(out)
}

/// Parses a v1 `blkio.throttle.io_service_bytes` or `..._io_serviced` file:
/// `MAJ:MIN Read N` / `Write N` / `Sync` / `Async` / `Discard` / `Total` lines and a final
/// `Total N`. Returns (device, read, write) in order of first appearance.
pub fn blkio_throttle(text: &str) -> Result<Vec<(DeviceNumber, u64, u64)>, ParseError> {
    let mut out: Vec<(DeviceNumber, Option<u64>, Option<u64>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [] => continue,
            ["Total", value] => {
                parse_u64(value, i + 1)?;
            }
            [device, op, value] => {
                let device = device_number(device, i + 1)?;
                let value = parse_u64(value, i + 1)?;
                let entry = match out.iter_mut().find(|(d, _, _)| *d == device) {
                    Some(e) => e,
                    None => {
                        out.push((device, None, None));
                        out.last_mut().expect("just pushed")
                    }
                };
                match *op {
                    "Read" => entry.1 = Some(value),
                    "Write" => entry.2 = Some(value),
                    "Sync" | "Async" | "Discard" | "Total" => {}
                    other => return Err(error(i + 1, format!("unknown operation \"{other}\""))),
                }
            }
            _ => return Err(error(i + 1, "expected \"MAJ:MIN Operation value\"")),
        }
    }
    out.into_iter()
        .map(|(d, r, w)| match (r, w) {
            (Some(r), Some(w)) => Ok((d, r, w)),
            _ => Err(error(0, format!("device {d} lacks a Read or Write line"))),
        })
        .collect()
}

/// CPU ids at or above this are not real (the kernel's `NR_CPUS` is at most 8192 today;
/// this leaves room and keeps the count from overflowing).
const CPU_ID_LIMIT: u64 = 1 << 22;

/// Counts the distinct CPUs in a list like `0-3,8,10-11` (`cpuset.cpus.effective`).
pub fn cpu_list_len(text: &str) -> Result<u64, ParseError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    let mut ranges = Vec::new();
    for range in text.split(',') {
        let (lo, hi) = match range.split_once('-') {
            Some((lo, hi)) => (parse_u64(lo, 1)?, parse_u64(hi, 1)?),
            None => {
                let n = parse_u64(range, 1)?;
                (n, n)
            }
        };
        if hi < lo {
            return Err(error(1, format!("range \"{range}\" goes backwards")));
        }
        if hi >= CPU_ID_LIMIT {
            return Err(error(1, format!("CPU {hi} is out of range")));
        }
        ranges.push((lo, hi));
    }
    // Overlapping ranges ("0-3,2-5") name some CPUs twice; count each once.
    ranges.sort_unstable();
    let mut count = 0;
    let mut covered_to = None::<u64>;
    for (lo, hi) in ranges {
        let start = covered_to.map_or(lo, |end| lo.max(end + 1));
        if hi >= start {
            count += hi - start + 1;
        }
        covered_to = Some(covered_to.map_or(hi, |end| end.max(hi)));
    }
    Ok(count)
}

/// The `total=` of the `some` and `full` lines, in µs:
/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=12345`.
pub fn pressure_totals(text: &str) -> Result<(Option<u64>, Option<u64>), ParseError> {
    let (mut some, mut full) = (None, None);
    for (n, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        let slot = match words.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            Some(_) | None => continue,
        };
        let total = words
            .find_map(|w| w.strip_prefix("total="))
            .ok_or_else(|| ParseError::new(n + 1, "no total="))?;
        *slot = Some(
            total
                .parse()
                .map_err(|_| error(n + 1, format!("total={total} is not a number")))?,
        );
    }
    Ok((some, full))
}

/// v2 `cpu.max`: `<quota> <period>` in µs, quota `max` when unlimited.
pub fn cpu_max(text: &str) -> Result<Option<f64>, ParseError> {
    let bad = || {
        error(
            1,
            format!("expected \"<quota|max> <period>\", got {:?}", text.trim()),
        )
    };
    let mut words = text.split_whitespace();
    let (quota, period) = (words.next().ok_or_else(bad)?, words.next().ok_or_else(bad)?);
    let period: u64 = period.parse().map_err(|_| bad())?;
    if quota == "max" {
        return Ok(None);
    }
    let quota: u64 = quota.parse().map_err(|_| bad())?;
    Ok((period > 0).then(|| quota as f64 / period as f64))
}

/// The pids in `cgroup.procs` / `tasks`, one per line.
pub fn pid_list(text: &str) -> Result<Vec<u32>, ParseError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            u32::try_from(parse_u64(l.trim(), i + 1)?).map_err(|_| error(i + 1, "pid out of range"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("0", 1), Ok(0));
        assert_eq!(parse_u64("18446744073709551615", 1), Ok(u64::MAX));
        assert!(parse_u64("18446744073709551616", 1)
            .unwrap_err()
            .to_string()
            .contains("too large"));
        assert!(parse_u64("-1", 1).is_err());
        assert!(parse_u64("", 1).is_err());
        assert!(parse_u64("1e3", 1).is_err());
        assert_eq!(single_value("42\n"), Ok(42));
        assert!(single_value("").is_err());
        assert!(single_value("abc\n").is_err());
        assert_eq!(limit_value("max\n"), Ok(None));
        assert_eq!(limit_value("1073741824\n"), Ok(Some(1 << 30)));
    }

    #[test]
    fn flat_keyed_files() {
        let mut seen = Vec::new();
        flat_keyed("usage_usec 100\nuser_usec 60\nsystem_usec 40\n", |k, v| {
            seen.push((k, v))
        })
        .unwrap();
        assert_eq!(
            seen,
            [("usage_usec", 100), ("user_usec", 60), ("system_usec", 40)]
        );
        let truncated = flat_keyed("anon 1\nfile", |_, _| {}).unwrap_err();
        assert_eq!(truncated.line(), 2);
        let bad = flat_keyed("anon 1\nfile x\n", |_, _| {}).unwrap_err();
        assert_eq!(bad.to_string(), "line 2: \"x\" is not a number");
        assert!(flat_keyed("", |_, _| {}).is_err());
        assert_eq!(
            flat_keyed_get("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"),
            Ok(Some(3))
        );
        assert_eq!(flat_keyed_get("a 1\n", "b"), Ok(None));
    }

    #[test]
    fn cpuacct_usage_all_file() {
        let text = "cpu user system\n0 1000000000 500000000\n1 2000000000 0\n";
        let usage = cpuacct_usage_all(text).unwrap();
        assert_eq!(usage.len(), 2);
        assert_eq!(
            usage[1],
            CpuUsage {
                cpu: 1,
                user_ns: 2_000_000_000,
                system_ns: 0
            }
        );
        assert!(cpuacct_usage_all("cpu user system\n0 1\n").is_err());
        assert!(cpuacct_usage_all("nonsense\n").is_err());
        assert!(cpuacct_usage_all("cpu user system\n").is_err());
    }

    #[test]
    fn io_stat_file() {
        let text = "8:0 rbytes=1024 wbytes=2048 rios=3 wios=4 dbytes=0 dios=0\n\
                    259:65535 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n";
        let stats = io_stat(text).unwrap();
        assert_eq!(stats[0].0, DeviceNumber { major: 8, minor: 0 });
        assert_eq!(
            stats[0].1,
            DeviceIo {
                read_bytes: 1024,
                written_bytes: 2048,
                reads: 3,
                writes: 4
            }
        );
        assert_eq!(
            stats[1].0,
            DeviceNumber {
                major: 259,
                minor: 65535
            }
        );
        assert!(io_stat("8:0 rbytes=1 wbytes=2\n").is_err());
        assert!(io_stat("8:x rbytes=1 wbytes=2 rios=1 wios=1\n").is_err());
        assert!(io_stat("8:99999999999 rbytes=1 wbytes=2 rios=1 wios=1\n").is_err());
        assert_eq!(io_stat(""), Ok(vec![]));
    }

    #[test]
    fn blkio_files() {
        let text = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Discard 0\n8:0 Total 12288\n\
                    8:16 Read 1\n8:16 Write 2\n8:16 Total 3\nTotal 12291\n";
        let stats = blkio_throttle(text).unwrap();
        assert_eq!(
            stats,
            [
                (DeviceNumber { major: 8, minor: 0 }, 4096, 8192),
                (
                    DeviceNumber {
                        major: 8,
                        minor: 16
                    },
                    1,
                    2
                )
            ]
        );
        assert_eq!(blkio_throttle("Total 0\n"), Ok(vec![]));
        assert!(blkio_throttle("8:0 Read\n").is_err());
        assert!(blkio_throttle("8:0 Read 1\n").is_err());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list_len("0-3\n"), Ok(4));
        assert_eq!(cpu_list_len("0-3,8,10-11"), Ok(7));
        assert_eq!(cpu_list_len("5"), Ok(1));
        assert_eq!(cpu_list_len("\n"), Ok(0));
        assert!(cpu_list_len("3-1").is_err());
        assert!(cpu_list_len("a-b").is_err());
        // Found by fuzzing: a huge range overflowed the count.
        assert!(cpu_list_len("885555-5888888888888").is_err());
        assert!(cpu_list_len("0-18446744073709551615").is_err());
        // Overlaps count once.
        assert_eq!(cpu_list_len("0-3,2-5,4,9"), Ok(7));
        assert_eq!(cpu_list_len("2-5,0-3"), Ok(6));
    }

    #[test]
    fn pid_lists() {
        assert_eq!(pid_list("1\n23\n"), Ok(vec![1, 23]));
        assert_eq!(pid_list(""), Ok(vec![]));
        assert!(pid_list("1\nx\n").is_err());
    }
}
