//! Raising the open-file limit at start-up.
//!
//! The listener accepts up to 4,096 connections, each a descriptor, and the collectors
//! open files on top. The usual soft limit of 1,024 would turn a burst of scrapers (or of
//! hostile half-open connections) into `EMFILE`, so the daemon raises its soft limit to
//! the hard limit (capped, so a huge hard limit does not make descriptor tables huge), as
//! systemd services and most servers do.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Enough for the connection cap, the collectors and the state directory.
const WANTED: u64 = 65_536;

/// Raises the soft `RLIMIT_NOFILE` towards the hard limit; returns the soft limit now in
/// force, or why it could not be raised.
pub fn raise() -> Result<u64, String> {
    let current = getrlimit(Resource::Nofile);
    let soft = current.current.unwrap_or(u64::MAX);
    let hard = current.maximum.unwrap_or(u64::MAX);
    let target = hard.min(WANTED);
    if soft >= target {
        return Ok(soft);
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: current.maximum,
        },
    )
    .map_err(|e| format!("cannot raise the open-file limit from {soft} to {target}: {e}"))?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_ends_at_least_where_it_was() {
        let before = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        let now = super::raise().expect("raising within the hard limit works");
        assert!(now >= before.current.unwrap_or(0));
        let after = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(after.current.unwrap_or(u64::MAX), now);
    }
}
