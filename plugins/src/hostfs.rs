//! Parsers for the few host-wide proc and sys files the collectors need.

use lxmetrics_plugin::{ParseError, ReadContext, ReadError};

use crate::cgroupfs::parse_u64;

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn meminfo_total(text: &str) -> Result<u64, ParseError> {
    for (i, line) in text.lines().enumerate() {
        if let Some(rest) = line.strip_prefix("MemTotal:") {
            let mut fields = rest.split_whitespace();
            let kib = parse_u64(fields.next().unwrap_or(""), i + 1)?;
            return match fields.next() {
                Some("kB") => kib
                    .checked_mul(1024)
                    .ok_or_else(|| ParseError::new(i + 1, "MemTotal overflows")),
                _ => Err(ParseError::new(i + 1, "MemTotal without kB unit")),
            };
        }
    }
    Err(ParseError::new(0, "no MemTotal line"))
}

/// `btime` from `/proc/stat`: when the host booted, in seconds since the epoch.
pub fn boot_time(text: &str) -> Result<u64, ParseError> {
    for (i, line) in text.lines().enumerate() {
        if let Some(rest) = line.strip_prefix("btime ") {
            return parse_u64(rest.trim(), i + 1);
        }
    }
    Err(ParseError::new(0, "no btime line"))
}

/// Field 22 of `/proc/<pid>/stat`, `starttime`: when the process started, in clock
/// ticks after boot. Fields are counted after the command name, which may hold spaces
/// and parentheses, so after its last `)`.
pub fn process_start_ticks(text: &str) -> Result<u64, ParseError> {
    let bad = |message: &str| ParseError::new(1, message);
    let after_name = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| bad("no command name"))?;
    // After the name: state is field 3, so starttime (22) is the 20th word.
    let word = after_name
        .split_whitespace()
        .nth(19)
        .ok_or_else(|| bad("fewer than 22 fields"))?;
    parse_u64(word, 1)
}

/// `DEVNAME` from a `/sys/dev/block/MAJ:MIN/uevent` file.
pub fn uevent_devname(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .map(str::trim)
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        assert_eq!(
            meminfo_total("MemTotal:       16318480 kB\nMemFree: 1 kB\n"),
            Ok(16318480 * 1024)
        );
        assert!(meminfo_total("MemFree: 1 kB\n").is_err());
        assert!(meminfo_total("MemTotal: x kB\n").is_err());
        assert!(meminfo_total("MemTotal: 5\n").is_err());
    }

    #[test]
    fn uevent() {
        assert_eq!(
            uevent_devname("MAJOR=8\nMINOR=0\nDEVNAME=sda\nDEVTYPE=disk\n"),
            Some("sda")
        );
        assert_eq!(uevent_devname("MAJOR=8\n"), None);
        assert_eq!(uevent_devname("DEVNAME=\n"), None);
    }
}

/// One interface's counters from `/proc/<pid>/net/dev`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceCounters {
    /// Interface name.
    pub device: String,
    /// bytes, packets, errs, drop received.
    pub receive: [u64; 4],
    /// bytes, packets, errs, drop transmitted.
    pub transmit: [u64; 4],
}

/// Parses `/proc/<pid>/net/dev`: two header lines, then `name: 16 counters` per interface.
pub fn net_dev(text: &str) -> Result<Vec<InterfaceCounters>, ParseError> {
    let mut lines = text.lines().enumerate();
    for expected in ["Inter-|", " face |"] {
        match lines.next() {
            Some((_, l)) if l.starts_with(expected) => {}
            _ => return Err(ParseError::new(1, "missing the net/dev header")),
        }
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let (name, counters) = line
            .split_once(':')
            .ok_or_else(|| ParseError::new(i + 1, "no ':' after the interface name"))?;
        let values: Vec<u64> = counters
            .split_whitespace()
            .map(|v| parse_u64(v, i + 1))
            .collect::<Result<_, _>>()?;
        if values.len() != 16 {
            return Err(ParseError::new(
                i + 1,
                format!("expected 16 counters, found {}", values.len()),
            ));
        }
        out.push(InterfaceCounters {
            device: name.trim().to_owned(),
            receive: [values[0], values[1], values[2], values[3]],
            transmit: [values[8], values[9], values[10], values[11]],
        });
    }
    Ok(out)
}

#[cfg(test)]
mod net_dev_tests {
    use super::*;

    const SAMPLE: &str = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  \
eth0:123456789 1000 1 2 0 0 0 5 987654 900 3 4 0 0 0 0\n";

    #[test]
    fn parses_interfaces() {
        let ifs = net_dev(SAMPLE).unwrap();
        assert_eq!(ifs.len(), 2);
        assert_eq!(ifs[0].device, "lo");
        assert_eq!(ifs[1].device, "eth0");
        assert_eq!(ifs[1].receive, [123456789, 1000, 1, 2]);
        assert_eq!(ifs[1].transmit, [987654, 900, 3, 4]);
    }

    #[test]
    fn rejects_broken_files() {
        assert!(net_dev("").is_err());
        assert!(net_dev(&SAMPLE.replace("eth0:123456789 1000", "eth0:123456789")).is_err());
        assert!(net_dev(&SAMPLE.replace("1000 1 2", "1000 x 2")).is_err());
    }
}

/// A mounted file system of a mount namespace, from `/proc/<pid>/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Mount source (`/dev/sda1`, `overlay`, `zfs/dataset`).
    pub device: String,
    /// File system type.
    pub fstype: String,
}

/// Finds the mount on `/` in a mountinfo file (the last one: later mounts cover earlier
/// ones). Fields: `id parent maj:min root mountpoint options [optional...] - fstype source super`.
pub fn mountinfo_root(text: &str) -> Result<Mount, ParseError> {
    mountinfo_at(text, &["/"])?
        .pop()
        .flatten()
        .ok_or_else(|| ParseError::new(0, "no mount on /"))
}

/// The mount covering each of `paths` exactly (the last mount on that path), in one
/// pass over a mountinfo file; `None` for a path nothing is mounted on.
pub(crate) fn mountinfo_at(text: &str, paths: &[&str]) -> Result<Vec<Option<Mount>>, ParseError> {
    let mut found = vec![None; paths.len()];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(' ').collect();
        let separator = fields
            .iter()
            .position(|f| *f == "-")
            .ok_or_else(|| ParseError::new(i + 1, "no '-' separator"))?;
        if separator < 6 || fields.len() < separator + 3 {
            return Err(ParseError::new(i + 1, "too few fields"));
        }
        let mountpoint = fields[4];
        let escaped = mountpoint.contains('\\');
        let mountpoint = if escaped {
            std::borrow::Cow::Owned(unescape_octal(mountpoint))
        } else {
            std::borrow::Cow::Borrowed(mountpoint)
        };
        if let Some(slot) = paths.iter().position(|p| *p == mountpoint) {
            found[slot] = Some(Mount {
                device: unescape_octal(fields[separator + 2]),
                fstype: fields[separator + 1].to_owned(),
            });
        }
    }
    Ok(found)
}

/// Undoes mountinfo's octal escapes (`\040` is a space).
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).ok();
            if let Some(b) = digits.and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod mountinfo_tests {
    use super::*;

    #[test]
    fn finds_the_last_root_mount() {
        let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    30 22 0:26 / /proc rw - proc proc rw\n\
                    40 22 0:50 / / rw - overlay my\\040overlay rw,lowerdir=/x\n";
        assert_eq!(
            mountinfo_root(text).unwrap(),
            Mount {
                device: "my overlay".into(),
                fstype: "overlay".into()
            }
        );
    }

    #[test]
    fn broken_mountinfo() {
        assert!(mountinfo_root("").is_err());
        assert!(mountinfo_root("22 1 8:1 / / rw ext4 /dev/sda1\n").is_err());
        assert!(mountinfo_root("30 22 0:26 / /proc rw - proc proc rw\n").is_err());
        assert!(mountinfo_root("1 2 - x\n").is_err());
    }
}

#[cfg(test)]
mod boot_time_tests {
    use super::*;

    #[test]
    fn boot_time_and_process_start() {
        assert_eq!(
            boot_time("cpu 1 2 3\nbtime 1764570000\nprocesses 5\n").unwrap(),
            1_764_570_000
        );
        assert!(boot_time("cpu 1\n").is_err());
        // A command name with spaces and a parenthesis does not shift the fields.
        let stat = "4242 (my (odd) init) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 \
                    987654 1234567 89 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(process_start_ticks(stat).unwrap(), 987_654);
        assert!(process_start_ticks("4242 (x) S 1 2\n").is_err());
    }
}

/// Host-wide figures a refresh reads at most once, however many instances need them:
/// the [`InstanceReader::State`](lxmetrics_plugin::InstanceReader::State) of the readers
/// that use them.
#[derive(Debug, Default)]
pub(crate) struct HostFigures {
    memory: Option<u64>,
    online_cpus: Option<u64>,
    boot_time: Option<u64>,
}

impl HostFigures {
    /// The host's `MemTotal` in bytes.
    pub(crate) fn memory(&mut self, ctx: &mut ReadContext<'_>) -> Result<u64, ReadError> {
        let path = ctx.host.proc_root.join("meminfo");
        once(&mut self.memory, || ctx.files.parse(&path, meminfo_total))
    }

    /// The number of online CPUs.
    pub(crate) fn online_cpus(&mut self, ctx: &mut ReadContext<'_>) -> Result<u64, ReadError> {
        let path = ctx.host.sys_root.join("devices/system/cpu/online");
        once(&mut self.online_cpus, || {
            ctx.files.parse(&path, crate::cgroupfs::cpu_list_len)
        })
    }

    /// When the host booted (`btime` of `/proc/stat`).
    pub(crate) fn boot_time(&mut self, ctx: &mut ReadContext<'_>) -> Result<u64, ReadError> {
        let path = ctx.host.proc_root.join("stat");
        once(&mut self.boot_time, || ctx.files.parse(&path, boot_time))
    }
}

/// `slot`'s value, read with `read` the first time.
fn once(
    slot: &mut Option<u64>,
    read: impl FnOnce() -> Result<u64, ReadError>,
) -> Result<u64, ReadError> {
    if let Some(v) = *slot {
        return Ok(v);
    }
    let v = read()?;
    *slot = Some(v);
    Ok(v)
}
