//! Facts about a process that do not change while it lives (when it started, which
//! network namespace it is in), kept between refreshes so a refresh does not walk
//! `/proc/<pid>/...` again for them: one path lookup less per instance and fact.
//!
//! Kept at most [`MAX_AGE`] and only for the same instance cgroup, so a pid that is reused
//! (only after the kernel's pid counter wraps) or a process that enters another
//! namespace (a container's init does not) is re-read within that time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a fact is trusted without reading it again.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(300);

/// One kind of fact, by pid and instance cgroup.
pub(crate) struct PidFacts<T> {
    /// By pid: the instance cgroup it was read for, the fact, when it was read.
    known: Mutex<HashMap<u32, (String, T, Instant)>>,
}

impl<T> Default for PidFacts<T> {
    fn default() -> Self {
        PidFacts {
            known: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Copy> PidFacts<T> {
    /// The fact for `pid` in `cgroup`: kept if younger than [`MAX_AGE`], else `read` (an
    /// error is returned and nothing kept).
    pub(crate) fn get<E>(
        &self,
        pid: u32,
        cgroup: &str,
        read: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let now = Instant::now();
        if let Some((of, fact, at)) = self.lock().get(&pid) {
            if of == cgroup && now.duration_since(*at) < MAX_AGE {
                return Ok(*fact);
            }
        }
        let fact = read()?;
        self.lock().insert(pid, (cgroup.to_owned(), fact, now));
        Ok(fact)
    }

    /// Forgets what is too old to be used (processes gone, instances stopped).
    pub(crate) fn forget_old(&self) {
        let now = Instant::now();
        self.lock()
            .retain(|_, (_, _, at)| now.duration_since(*at) < MAX_AGE);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (String, T, Instant)>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fact_is_read_once_per_process_and_cgroup() {
        let facts = PidFacts::<u64>::default();
        let mut reads = 0;
        for _ in 0..3 {
            let got: Result<u64, ()> = facts.get(7, "lxc.payload.a", || {
                reads += 1;
                Ok(42)
            });
            assert_eq!(got, Ok(42));
        }
        assert_eq!(reads, 1);
        // The same pid in another instance's cgroup is another process.
        let got: Result<u64, ()> = facts.get(7, "lxc.payload.b", || Ok(9));
        assert_eq!(got, Ok(9));
        // A failed read keeps nothing.
        let failed: Result<u64, &str> = facts.get(8, "lxc.payload.c", || Err("gone"));
        assert_eq!(failed, Err("gone"));
        let got: Result<u64, &str> = facts.get(8, "lxc.payload.c", || Ok(1));
        assert_eq!(got, Ok(1));
    }

    #[test]
    fn an_old_fact_is_read_again_and_forgotten() {
        let facts = PidFacts::<u64>::default();
        let old = Instant::now() - MAX_AGE - Duration::from_secs(1);
        facts.lock().insert(7, ("c".into(), 1, old));
        facts.lock().insert(8, ("c".into(), 1, old));
        let got: Result<u64, ()> = facts.get(7, "c", || Ok(2));
        assert_eq!(got, Ok(2));
        facts.forget_old();
        assert_eq!(facts.lock().len(), 1);
    }
}
