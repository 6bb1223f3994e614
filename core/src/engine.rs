//! The refresh engine: one refresh runs discovery, then every enabled collector at once,
//! each under the collector deadline, and assembles a [`Snapshot`].
//!
//! Failure isolation:
//! - an error, a panic or a missed deadline marks only that collector failed;
//! - a collector that missed its deadline is not cancelled (blocking reads cannot be) and
//!   is not started again while it still runs, so hung work never piles up: later
//!   refreshes report it as still running until it returns.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::discovery::Discovery;
use crate::instance_info::instance_info;
use crate::registry::NamedCollector;
use crate::snapshot::{CollectorStatus, Snapshot, SnapshotBuilder};
use lxmetrics_plugin::{CollectError, Collection, Collector, HostPaths, Instance, Scope};

/// One enabled collector and whether an earlier run of it is still going.
struct Slot {
    name: &'static str,
    collector: Arc<dyn Collector>,
    running: Arc<AtomicBool>,
    /// The error of the last refresh, if it failed: a failure is logged when it starts or
    /// changes and a recovery once, not the same line every refresh.
    last_error: std::sync::Mutex<Option<String>>,
}

impl Slot {
    /// Logs a change of this collector's health: a new or different error as a warning,
    /// the end of one as information.
    fn log_outcome(&self, error: Option<&str>) {
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        match (last.as_deref(), error) {
            (Some(before), Some(now)) if before == now => return,
            (_, Some(now)) => tracing::warn!(
                collector = self.name,
                "collector failed: {now} (logged again only if this changes)"
            ),
            (Some(_), None) => tracing::info!(collector = self.name, "collector recovered"),
            (None, None) => return,
        }
        *last = error.map(str::to_owned);
    }
}

/// Clears a slot's running flag when the collector's task ends, however it ends.
struct RunningGuard(Arc<AtomicBool>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The `collector` label under which discovery's own health is reported; no collector
/// may register it.
pub(crate) const DISCOVERY_STATUS: &str = "discovery";

/// Runs refreshes. Shared by the cache; one refresh at a time is the cache's job.
pub struct RefreshEngine {
    discovery: Arc<dyn Discovery>,
    slots: Vec<Slot>,
    host: Arc<HostPaths>,
    timeout: Duration,
    refreshes: AtomicU64,
    slow_after: Option<Duration>,
    after_refresh: Option<Arc<dyn Fn() + Send + Sync>>,
    prefix: Arc<str>,
}

impl RefreshEngine {
    /// An engine over the given collectors (name, collector) with the given deadline,
    /// for snapshots served under `prefix` (`metrics.prefix`: family names are checked
    /// for collisions as served, and the encoders use the same one).
    pub fn new(
        discovery: Arc<dyn Discovery>,
        collectors: Vec<NamedCollector>,
        host: Arc<HostPaths>,
        timeout: Duration,
        prefix: &str,
    ) -> Self {
        let slots = collectors
            .into_iter()
            .map(|(name, collector)| Slot {
                name,
                collector,
                running: Arc::new(AtomicBool::new(false)),
                last_error: std::sync::Mutex::new(None),
            })
            .collect();
        RefreshEngine {
            discovery,
            slots,
            host,
            timeout,
            refreshes: AtomicU64::new(0),
            slow_after: None,
            after_refresh: None,
            prefix: Arc::from(prefix),
        }
    }

    /// The prefix snapshots are served under; the encoders use this one too.
    pub fn metric_prefix(&self) -> &Arc<str> {
        &self.prefix
    }

    /// How many refreshes have run (`lxd_metrics_refreshes_total`).
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// Runs one refresh. Never fails: every problem becomes a collector status.
    pub async fn refresh(&self) -> Snapshot {
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let deadline = started + self.timeout;

        let (instances, readable, discovery_status) = self.discover(deadline).await;
        let scope = Arc::new(Scope::new(readable, self.host.clone()));

        let runs: Vec<_> = self
            .slots
            .iter()
            .map(|slot| self.start(slot, scope.clone()))
            .collect();

        let mut info = instance_info(&instances);
        let mut builder = SnapshotBuilder::new(instances, self.prefix.clone());
        if discovery_status.success {
            info.families.extend(self.discovery.families());
            builder.add_inventory(discovery_status.duration, info);
        } else {
            builder.add_status(discovery_status);
        }
        for (slot, run) in self.slots.iter().zip(runs) {
            let outcome = match run {
                Some(handle) => finish(handle, deadline, self.timeout).await,
                None => Outcome::failed(
                    Duration::ZERO,
                    "still running from an earlier refresh (missed its deadline)",
                ),
            };
            match outcome.result {
                Ok(collection) => {
                    slot.log_outcome(None);
                    builder.add_collection(slot.name, outcome.duration, collection)
                }
                Err(error) => {
                    slot.log_outcome(Some(&error));
                    builder.add_status(CollectorStatus {
                        name: slot.name.into(),
                        success: false,
                        duration: outcome.duration,
                        failed_instances: 0,
                        error: Some(error),
                        slowest_instance: None,
                    });
                }
            }
        }
        let snapshot = builder.finish();
        if let Some(hook) = &self.after_refresh {
            let hook = hook.clone();
            drop(tokio::task::spawn_blocking(move || hook()));
        }
        let elapsed = started.elapsed();
        match self
            .slow_after
            .and_then(|limit| slow_report(snapshot.statuses(), elapsed, limit))
        {
            Some(report) => tracing::warn!("{report}"),
            None => tracing::debug!(
                elapsed_ms = elapsed.as_millis() as u64,
                instances = snapshot.instances().len(),
                "refresh done"
            ),
        }
        snapshot
    }

    /// Logs a warning naming the slowest collector and instance when a refresh takes
    /// longer than `limit` (the daemon uses half the cache window).
    pub fn with_slow_refresh_warning(mut self, limit: Duration) -> Self {
        self.slow_after = Some(limit);
        self
    }

    /// Runs `hook` on the blocking pool after each refresh. The daemon uses it to hand
    /// freed memory back to the system, so resident memory stays flat across refreshes
    /// instead of creeping up with allocator fragmentation.
    pub fn with_after_refresh(mut self, hook: Arc<dyn Fn() + Send + Sync>) -> Self {
        self.after_refresh = Some(hook);
        self
    }

    /// All instances discovery found, readable ones first (collectors get that prefix,
    /// so an index means the same instance in the scope and in the snapshot), the
    /// readable prefix, and discovery's status.
    async fn discover(
        &self,
        deadline: Instant,
    ) -> (Arc<[Instance]>, Arc<[Instance]>, CollectorStatus) {
        let started = Instant::now();
        let result = tokio::time::timeout_at(deadline, self.discovery.discover(&self.host)).await;
        let (mut instances, error) = match result {
            Ok(Ok(found)) => (found, None),
            Ok(Err(e)) => (Vec::new(), Some(e.to_string())),
            Err(_) => (
                Vec::new(),
                Some(format!("missed its deadline of {:?}", self.timeout)),
            ),
        };
        if let Some(e) = &error {
            tracing::warn!("discovery failed, serving no instances this refresh: {e}");
        }
        let status = CollectorStatus {
            name: DISCOVERY_STATUS.into(),
            success: error.is_none(),
            duration: started.elapsed(),
            failed_instances: 0,
            error,
            slowest_instance: None,
        };
        // Stable: discovery's order (project, name) holds within each part.
        instances.sort_by_key(|i| !i.is_readable());
        let readable_count = instances.iter().take_while(|i| i.is_readable()).count();
        let all: Arc<[Instance]> = instances.into();
        let readable = if readable_count == all.len() {
            all.clone()
        } else {
            all[..readable_count].into()
        };
        (all, readable, status)
    }

    /// Spawns the collector unless an earlier run of it is still going.
    fn start(&self, slot: &Slot, scope: Arc<Scope>) -> Option<tokio::task::JoinHandle<Outcome>> {
        if slot.running.swap(true, Ordering::AcqRel) {
            return None;
        }
        let guard = RunningGuard(slot.running.clone());
        let collector = slot.collector.clone();
        Some(tokio::spawn(async move {
            let _guard = guard;
            let started = Instant::now();
            let result = collector.collect(&scope).await;
            Outcome {
                duration: started.elapsed(),
                result: result.map_err(|e: CollectError| e.to_string()),
            }
        }))
    }
}

/// How one collector run ended.
struct Outcome {
    duration: Duration,
    result: Result<Collection, String>,
}

impl Outcome {
    fn failed(duration: Duration, why: impl Into<String>) -> Self {
        Outcome {
            duration,
            result: Err(why.into()),
        }
    }
}

/// Waits for a collector task until the deadline. On timeout the task is left running
/// (its slot stays busy) rather than aborted.
async fn finish(
    handle: tokio::task::JoinHandle<Outcome>,
    deadline: Instant,
    timeout: Duration,
) -> Outcome {
    match tokio::time::timeout_at(deadline, handle).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(join_error)) => {
            let why = if join_error.is_panic() {
                format!("panicked: {}", panic_message(join_error.into_panic()))
            } else {
                "was cancelled".to_owned()
            };
            Outcome::failed(Duration::ZERO, why)
        }
        Err(_) => Outcome::failed(timeout, format!("missed its deadline of {timeout:?}")),
    }
}

/// The slow-refresh warning, when `elapsed` is over `limit`: which collector took longest
/// and, when it measured it, which instance.
pub(crate) fn slow_report(
    statuses: &[CollectorStatus],
    elapsed: Duration,
    limit: Duration,
) -> Option<String> {
    if elapsed <= limit {
        return None;
    }
    let slowest = statuses.iter().max_by_key(|s| s.duration)?;
    let mut report = format!(
        "slow refresh: {:.0} ms (over {:.0} ms, half the cache window); slowest collector {} took {:.0} ms",
        elapsed.as_secs_f64() * 1e3,
        limit.as_secs_f64() * 1e3,
        slowest.name,
        slowest.duration.as_secs_f64() * 1e3
    );
    if let Some((instance, took)) = &slowest.slowest_instance {
        report.push_str(&format!(
            "; slowest instance in it: {instance} ({:.0} ms)",
            took.as_secs_f64() * 1e3
        ));
    }
    Some(report)
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::StaticDiscovery;
    use async_trait::async_trait;
    use lxmetrics_plugin::{Family, MetricDesc};
    use std::sync::atomic::AtomicUsize;

    struct Fixed(&'static str);

    #[async_trait]
    impl Collector for Fixed {
        async fn collect(&self, scope: &Scope) -> Result<Collection, CollectError> {
            let mut fam = Family::new(MetricDesc::gauge(self.0, "h"), &[]);
            for (i, _) in scope.indexed_instances() {
                fam.push(i, (), 1.0);
            }
            let mut c = Collection::new();
            c.push(fam);
            Ok(c)
        }
    }

    struct Panics;

    #[async_trait]
    impl Collector for Panics {
        async fn collect(&self, _: &Scope) -> Result<Collection, CollectError> {
            panic!("boom");
        }
    }

    struct Errors;

    #[async_trait]
    impl Collector for Errors {
        async fn collect(&self, _: &Scope) -> Result<Collection, CollectError> {
            Err(CollectError::Other("no cgroup mount".into()))
        }
    }

    /// Sleeps far past any deadline, counting how many times it was started.
    struct Hangs(Arc<AtomicUsize>);

    #[async_trait]
    impl Collector for Hangs {
        async fn collect(&self, _: &Scope) -> Result<Collection, CollectError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Collection::new())
        }
    }

    fn engine(collectors: Vec<(&'static str, Arc<dyn Collector>)>) -> RefreshEngine {
        RefreshEngine::new(
            Arc::new(StaticDiscovery(vec![Instance::container(
                "c1",
                "lxc.payload.c1",
            )])),
            collectors,
            Arc::new(HostPaths::default()),
            Duration::from_secs(5),
            "lxd",
        )
    }

    fn status<'a>(s: &'a Snapshot, name: &str) -> &'a CollectorStatus {
        s.statuses().iter().find(|st| st.name == name).unwrap()
    }

    /// The collectors' families (discovery's `instance_info` left out).
    fn collected(s: &Snapshot) -> Vec<&Family> {
        s.families()
            .iter()
            .filter(|f| &*f.desc.name != "instance_info")
            .collect()
    }

    #[tokio::test]
    async fn a_panicking_collector_fails_alone() {
        let e = engine(vec![
            ("good", Arc::new(Fixed("good"))),
            ("bad", Arc::new(Panics)),
        ]);
        let s = e.refresh().await;
        assert!(status(&s, "good").success);
        let bad = status(&s, "bad");
        assert!(!bad.success);
        assert!(bad.error.as_deref().unwrap().contains("boom"));
        assert_eq!(collected(&s).len(), 1);
        assert_eq!(collected(&s)[0].samples.len(), 1);
        // The engine survives and runs again.
        let s2 = e.refresh().await;
        assert!(!status(&s2, "bad").success);
        assert_eq!(e.refreshes(), 2);
    }

    #[tokio::test]
    async fn an_erroring_collector_fails_alone() {
        let e = engine(vec![
            ("good", Arc::new(Fixed("good"))),
            ("bad", Arc::new(Errors)),
        ]);
        let s = e.refresh().await;
        assert!(status(&s, "good").success);
        assert_eq!(status(&s, "bad").error.as_deref(), Some("no cgroup mount"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_collector_past_its_deadline_is_reported_and_not_restarted() {
        let starts = Arc::new(AtomicUsize::new(0));
        let e = engine(vec![
            ("good", Arc::new(Fixed("good"))),
            ("slow", Arc::new(Hangs(starts.clone()))),
        ]);
        let before = Instant::now();
        let s = e.refresh().await;
        // The refresh ends at the deadline, with the good collector's data.
        assert_eq!(before.elapsed(), Duration::from_secs(5));
        assert!(status(&s, "good").success);
        let slow = status(&s, "slow");
        assert!(!slow.success);
        assert_eq!(slow.duration, Duration::from_secs(5));
        assert!(slow.error.as_deref().unwrap().contains("deadline"));
        assert_eq!(collected(&s).len(), 1);

        // While the hung run is still going, it is not started again.
        let s2 = e.refresh().await;
        assert!(status(&s2, "slow")
            .error
            .as_deref()
            .unwrap()
            .contains("still running"));
        assert_eq!(starts.load(Ordering::SeqCst), 1);

        // Once it finishes, the next refresh runs it again.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let _ = e.refresh().await;
        assert_eq!(starts.load(Ordering::SeqCst), 2);
    }
}

#[cfg(test)]
mod slow_report_tests {
    use super::*;

    fn status(name: &str, ms: u64, slowest: Option<(&str, u64)>) -> CollectorStatus {
        CollectorStatus {
            name: name.into(),
            success: true,
            duration: Duration::from_millis(ms),
            failed_instances: 0,
            error: None,
            slowest_instance: slowest.map(|(n, ms)| (n.to_owned(), Duration::from_millis(ms))),
        }
    }

    #[test]
    fn names_the_slowest_collector_and_instance() {
        let statuses = [
            status("cpu", 100, Some(("default/a", 10))),
            status("filesystem", 4_500, Some(("prod/nfs-client", 4_400))),
        ];
        let limit = Duration::from_secs(4);
        assert_eq!(slow_report(&statuses, Duration::from_secs(3), limit), None);
        let report = slow_report(&statuses, Duration::from_millis(4_600), limit).unwrap();
        assert!(
            report.contains("slowest collector filesystem took 4500 ms"),
            "{report}"
        );
        assert!(report.contains("prod/nfs-client (4400 ms)"), "{report}");
    }
}
