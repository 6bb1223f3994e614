//! Logging a source's problem once, not once per refresh.
//!
//! A broken textfile or a failing command would otherwise log the same warning every
//! eight seconds. [`ProblemLog`] remembers the last problem of each source and logs only
//! when it appears, changes, or goes away.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// The last problem of each source, for change-only logging.
#[derive(Debug)]
pub struct ProblemLog {
    collector: &'static str,
    last: Mutex<HashMap<String, String>>,
}

impl ProblemLog {
    /// A log for the sources of one collector.
    pub fn new(collector: &'static str) -> Self {
        ProblemLog {
            collector,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Records how `source` did this refresh: `Err` with the problem, or `Ok`.
    pub fn record(&self, source: &str, outcome: Result<(), &str>) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        match outcome {
            Err(problem) => {
                if last.get(source).map(String::as_str) != Some(problem) {
                    tracing::warn!(collector = self.collector, source, "skipped: {problem}");
                    last.insert(source.to_owned(), problem.to_owned());
                }
            }
            Ok(()) => {
                if last.remove(source).is_some() {
                    tracing::info!(collector = self.collector, source, "read again");
                }
            }
        }
    }

    /// Forgets sources not seen this refresh (deleted files, stopped instances), so the
    /// map does not grow with every instance that ever existed.
    pub fn retain(&self, seen: &HashSet<String>) {
        if let Ok(mut last) = self.last.lock() {
            last.retain(|source, _| seen.contains(source));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_remembered_until_fixed_or_gone() {
        let log = ProblemLog::new("test");
        log.record("a.prom", Err("line 1: bad"));
        log.record("b.prom", Err("line 2: bad"));
        log.record("a.prom", Err("line 1: bad"));
        assert_eq!(log.last.lock().unwrap().len(), 2);
        log.record("a.prom", Ok(()));
        assert!(!log.last.lock().unwrap().contains_key("a.prom"));
        log.retain(&HashSet::new());
        assert!(log.last.lock().unwrap().is_empty(), "b.prom vanished");
    }
}
