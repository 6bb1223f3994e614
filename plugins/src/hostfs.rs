//! Parsers for the few host-wide proc and sys files the collectors need.

use crate::cgroupfs::parse::{parse_u64, ParseError};

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn meminfo_total(text: &str) -> Result<u64, ParseError> {
    for (i, line) in text.lines().enumerate() {
        if let Some(rest) = line.strip_prefix("MemTotal:") {
            let mut fields = rest.split_whitespace();
            let kib = parse_u64(fields.next().unwrap_or(""), i + 1)?;
            return match fields.next() {
                Some("kB") => kib.checked_mul(1024).ok_or_else(|| ParseError {
                    line: i + 1,
                    message: "MemTotal overflows".into(),
                }),
                _ => Err(ParseError {
                    line: i + 1,
                    message: "MemTotal without kB unit".into(),
                }),
            };
        }
    }
    Err(ParseError {
        line: 0,
        message: "no MemTotal line".into(),
    })
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
