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

/// Descriptor slots the table is given at start: the kept cgroup files (2,048) and a
/// burst of connections fit without the table growing again.
const PRESIZED_SLOTS: u64 = 8_192;

/// Grows the descriptor table once, while the process has a single thread. Growing it
/// later, as kept cgroup files and connections add descriptors, makes the kernel wait for
/// an RCU grace period at each doubling when threads share the table (a stall of several
/// milliseconds each: 20 ms for one container's files in the first refresh). Call after
/// [`raise`] and before any thread is started; returns the slots the table now has.
pub fn presize_table() -> Result<u64, String> {
    let limit = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let slots = PRESIZED_SLOTS.min(limit);
    let top = i32::try_from(slots.saturating_sub(1)).unwrap_or(i32::MAX);
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    // The lowest free descriptor at or above `top`: the table grows to hold it, and stays
    // that size after it is closed.
    let high = rustix::io::fcntl_dupfd_cloexec(&null, top)
        .map_err(|e| format!("cannot grow the descriptor table to {slots}: {e}"))?;
    drop(high);
    Ok(slots)
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
