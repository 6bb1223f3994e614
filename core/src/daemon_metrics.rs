//! Metrics about the daemon itself, computed on every request (never cached): uptime,
//! instance counts, API request counters, collector health, refresh count and the
//! standard `process_*` metrics.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::process;
use crate::project_filter::ProjectFilter;
use crate::snapshot::Snapshot;
use lxmetrics_plugin::{Family, InstanceType, MetricDesc, SeriesOf};

// Types and HELP texts of the families LXD also serves are LXD's (lxd/metrics/types.go).
const UPTIME: MetricDesc = MetricDesc::counter("uptime_seconds", "The daemon uptime in seconds.");
const INSTANCES: MetricDesc = MetricDesc::gauge("instances", "The number of instances.");
const API_COMPLETED: MetricDesc = MetricDesc::counter(
    "api_requests_completed_total",
    "The total number of completed API requests.",
);
const API_ONGOING: MetricDesc = MetricDesc::gauge(
    "api_requests_ongoing",
    "The number of API requests currently being handled.",
);
const COLLECTOR_DURATION: MetricDesc = MetricDesc::gauge(
    "metrics_collector_duration_seconds",
    "How long each collector took in the last refresh",
);
const COLLECTOR_SUCCESS: MetricDesc = MetricDesc::gauge(
    "metrics_collector_success",
    "Whether each collector succeeded in the last refresh (1) or not (0)",
);
const COLLECTOR_FAILED_INSTANCES: MetricDesc = MetricDesc::gauge(
    "metrics_collector_failed_instances",
    "Instances each collector could not read in the last refresh (their series are absent)",
);
const REFRESHES: MetricDesc = MetricDesc::counter(
    "metrics_refreshes_total",
    "Metric collections actually run (cache misses)",
);

/// How an API request ended, as LXD labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RequestResult {
    /// 2xx/3xx.
    Succeeded,
    /// 4xx.
    ErrorClient,
    /// 5xx.
    ErrorServer,
}

impl RequestResult {
    /// Every result, in the order series are written.
    const ALL: [RequestResult; 3] = [
        RequestResult::ErrorServer,
        RequestResult::ErrorClient,
        RequestResult::Succeeded,
    ];

    /// Classifies an HTTP status code.
    pub fn from_status(status: u16) -> Self {
        match status {
            500.. => RequestResult::ErrorServer,
            400.. => RequestResult::ErrorClient,
            _ => RequestResult::Succeeded,
        }
    }

    const fn as_str(self) -> &'static str {
        match self {
            RequestResult::Succeeded => "succeeded",
            RequestResult::ErrorClient => "error_client",
            RequestResult::ErrorServer => "error_server",
        }
    }

    const fn slot(self) -> usize {
        self as usize
    }
}

/// LXD's entity types for `api_requests_*` (its `APIMetricsEntityTypes`): every one is
/// written, zeros included, so dashboards and rates see the same series as on LXD.
const ENTITY_TYPES: [&str; 13] = [
    "certificate",
    "cluster_member",
    "identity",
    "image",
    "instance",
    "network",
    "operation",
    "placement_group",
    "profile",
    "project",
    "server",
    "storage_pool",
    "warning",
];

/// One of LXD's API entity types, for the request counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntityType(usize);

impl EntityType {
    /// The entity type of a request path, as LXD classifies it: `/1.0/instances...` is
    /// `instance`, `/1.0/certificates...` is `certificate`; `/1.0`, `/1.0/metrics` and
    /// every path LXD has no entity for (unknown paths included) are `server`.
    pub fn of_path(path: &str) -> Self {
        let rest = path.strip_prefix("/1.0/").unwrap_or("");
        let first = rest.split('/').next().unwrap_or("");
        let name = match first {
            "instances" | "containers" | "virtual-machines" => "instance",
            "certificates" => "certificate",
            _ => "server",
        };
        Self::named(name)
    }

    fn named(name: &str) -> Self {
        EntityType(ENTITY_TYPES.iter().position(|e| *e == name).unwrap_or(0))
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        ENTITY_TYPES[self.0]
    }
}

/// Daemon-wide counters the server updates and the metrics endpoint reads.
pub struct DaemonTelemetry {
    started: Instant,
    started_wall: SystemTime,
    completed: [[AtomicU64; 3]; ENTITY_TYPES.len()],
    ongoing: [AtomicI64; ENTITY_TYPES.len()],
    sources: Mutex<Vec<TelemetrySource>>,
}

/// Daemon families from another part of the daemon (the remote-write pusher), computed per
/// request like the rest. Name them `metrics_*`, a prefix collectors cannot use.
pub type TelemetrySource = Arc<dyn Fn() -> Vec<Family> + Send + Sync>;

impl Default for DaemonTelemetry {
    fn default() -> Self {
        DaemonTelemetry {
            started: Instant::now(),
            started_wall: SystemTime::now(),
            completed: std::array::from_fn(|_| Default::default()),
            ongoing: std::array::from_fn(|_| AtomicI64::new(0)),
            sources: Mutex::new(Vec::new()),
        }
    }
}

impl std::fmt::Debug for DaemonTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonTelemetry")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

/// Counts a request as ongoing until dropped.
#[derive(Debug)]
pub struct OngoingRequest<'a>(&'a AtomicI64);

impl Drop for OngoingRequest<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl DaemonTelemetry {
    /// Marks a request as started; it counts as ongoing until the guard drops.
    pub fn request_started(&self, entity: EntityType) -> OngoingRequest<'_> {
        let ongoing = &self.ongoing[entity.0];
        ongoing.fetch_add(1, Ordering::Relaxed);
        OngoingRequest(ongoing)
    }

    /// Counts a completed request.
    pub fn request_completed(&self, entity: EntityType, result: RequestResult) {
        self.completed[entity.0][result.slot()].fetch_add(1, Ordering::Relaxed);
    }

    /// The daemon families for one response. `filter` hides instance counts of projects
    /// the caller may not see; a response limited to projects (a restricted
    /// certificate, or `?project=`) also leaves out the daemon's internal series
    /// (`lxd_metrics_*` and added sources such as remote write), which describe every
    /// project's instances. Process health (`process_*`, uptime) and the API request
    /// counters (shown to every trusted caller, as LXD does) stay.
    pub fn families(
        &self,
        snapshot: &Snapshot,
        refreshes: u64,
        filter: &ProjectFilter,
    ) -> Vec<Family> {
        let mut out = Vec::with_capacity(16);

        let mut uptime = Family::new(UPTIME, &[]);
        uptime.push(SeriesOf::HOST, (), self.started.elapsed().as_secs_f64());
        out.push(uptime);

        // As LXD: every instance, running or not, counted per project and type; both
        // types written for every project that has an instance.
        let mut instances = Family::new(INSTANCES, &["project", "type"]);
        let counts = snapshot.instance_counts().iter();
        for (project, [containers, vms]) in counts.filter(|(p, _)| filter.allows(Some(p))) {
            let container = InstanceType::Container.as_str();
            let vm = InstanceType::VirtualMachine.as_str();
            instances.push(SeriesOf::HOST, [project, container], *containers as f64);
            instances.push(SeriesOf::HOST, [project, vm], *vms as f64);
        }
        out.push(instances);

        let mut completed = Family::new(API_COMPLETED, &["entity_type", "result"]);
        let mut ongoing = Family::new(API_ONGOING, &["entity_type"]);
        for (index, entity) in ENTITY_TYPES.iter().enumerate() {
            for result in RequestResult::ALL {
                let n = self.completed[index][result.slot()].load(Ordering::Relaxed);
                completed.push(SeriesOf::HOST, [*entity, result.as_str()], n as f64);
            }
            let n = self.ongoing[index].load(Ordering::Relaxed);
            ongoing.push(SeriesOf::HOST, [*entity], n as f64);
        }
        out.push(completed);
        out.push(ongoing);

        if *filter != ProjectFilter::All {
            out.extend(self.process_families());
            return out;
        }

        let mut duration = Family::new(COLLECTOR_DURATION, &["collector"]);
        let mut success = Family::new(COLLECTOR_SUCCESS, &["collector"]);
        let mut failed = Family::new(COLLECTOR_FAILED_INSTANCES, &["collector"]);
        for status in snapshot.statuses() {
            let name = [status.name.clone()];
            duration.push(SeriesOf::HOST, name.clone(), status.duration.as_secs_f64());
            success.push(
                SeriesOf::HOST,
                name.clone(),
                if status.success { 1.0 } else { 0.0 },
            );
            failed.push(SeriesOf::HOST, name, f64::from(status.failed_instances));
        }
        out.extend([duration, success, failed]);

        let mut refreshed = Family::new(REFRESHES, &[]);
        refreshed.push(SeriesOf::HOST, (), refreshes as f64);
        out.push(refreshed);

        let sources = self
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for source in sources {
            out.extend(source());
        }

        out.extend(self.process_families());
        out
    }

    /// Adds a source of daemon families, shown on every scrape from now on.
    pub fn add_source(&self, source: TelemetrySource) {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(source);
    }

    /// `process_*` from `/proc/self`; a value that cannot be read is left out.
    fn process_families(&self) -> Vec<Family> {
        let mut out = Vec::with_capacity(6);
        let mut gauge = |name: &'static str, help: &'static str, value: Option<f64>| {
            if let Some(v) = value {
                let mut f = Family::new(MetricDesc::gauge(name, help).bare(), &[]);
                f.push(SeriesOf::HOST, (), v);
                out.push(f);
            }
        };
        let memory = process::memory().ok();
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            memory.map(|m| m.resident_bytes as f64),
        );
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            memory.map(|m| m.virtual_bytes as f64),
        );
        gauge(
            "process_open_fds",
            "Number of open file descriptors",
            process::open_fds().ok().map(|n| n as f64),
        );
        gauge(
            "process_max_fds",
            "Maximum number of open file descriptors",
            process::max_fds().map(|n| n as f64),
        );
        let start = self
            .started_wall
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs_f64());
        gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            start,
        );
        let mut cpu = Family::new(
            MetricDesc::counter(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds",
            )
            .bare(),
            &[],
        );
        cpu.push(SeriesOf::HOST, (), process::cpu_seconds());
        out.push(cpu);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family_rules::is_reserved;

    #[test]
    fn results_follow_status_classes() {
        assert_eq!(RequestResult::from_status(200), RequestResult::Succeeded);
        assert_eq!(RequestResult::from_status(304), RequestResult::Succeeded);
        assert_eq!(RequestResult::from_status(403), RequestResult::ErrorClient);
        assert_eq!(RequestResult::from_status(503), RequestResult::ErrorServer);
    }

    #[test]
    fn ongoing_requests_are_counted_until_dropped() {
        let t = DaemonTelemetry::default();
        let instance = EntityType::of_path("/1.0/instances");
        let g = t.request_started(instance);
        assert_eq!(t.ongoing[instance.0].load(Ordering::Relaxed), 1);
        drop(g);
        assert_eq!(t.ongoing[instance.0].load(Ordering::Relaxed), 0);
    }

    #[test]
    fn paths_map_to_lxd_entity_types() {
        let of = |p| EntityType::of_path(p).as_str();
        assert_eq!(of("/1.0/metrics"), "server");
        assert_eq!(of("/1.0"), "server");
        assert_eq!(of("/not/an/endpoint"), "server");
        assert_eq!(of("/1.0/instances"), "instance");
        assert_eq!(of("/1.0/instances/c1"), "instance");
        assert_eq!(of("/1.0/certificates/abc"), "certificate");
        assert!(ENTITY_TYPES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn reserved_names() {
        let reserved =
            |desc: MetricDesc, prefix: &str| is_reserved(&desc.rendered_name(prefix), prefix);
        assert!(reserved(MetricDesc::gauge("uptime_seconds", ""), "lxd"));
        assert!(reserved(MetricDesc::gauge("metrics_anything", ""), "lxd"));
        assert!(reserved(
            MetricDesc::gauge("process_open_fds", "").bare(),
            "lxd"
        ));
        assert!(!reserved(MetricDesc::gauge("process_open_fds", ""), "lxd"));
        assert!(!reserved(MetricDesc::gauge("cpu_seconds_total", ""), "lxd"));
        // Judged by the served name: a bare name spelled with the prefix is the same.
        assert!(reserved(
            MetricDesc::gauge("lxd_uptime_seconds", "").bare(),
            "lxd"
        ));
        assert!(reserved(
            MetricDesc::gauge("incus_metrics_x", "").bare(),
            "incus"
        ));
        assert!(!reserved(
            MetricDesc::gauge("lxd_uptime_seconds", "").bare(),
            "incus"
        ));
        // Without a prefix, a prefixed `process_*` is served as the standard name.
        assert!(reserved(MetricDesc::gauge("process_open_fds", ""), ""));
        assert!(reserved(MetricDesc::gauge("uptime_seconds", "").bare(), ""));
    }

    #[test]
    fn daemon_families_include_process_metrics() {
        let t = DaemonTelemetry::default();
        t.request_completed(
            EntityType::of_path("/1.0/metrics"),
            RequestResult::Succeeded,
        );
        let fams = t.families(&Snapshot::empty(), 3, &ProjectFilter::All);
        let names: Vec<&str> = fams.iter().map(|f| &*f.desc.name).collect();
        // No collector can shadow any of them: the reserved list covers every family.
        for f in &fams {
            assert!(
                is_reserved(&f.desc.rendered_name("lxd"), "lxd"),
                "{}",
                f.desc.name
            );
        }
        for expected in [
            "uptime_seconds",
            "instances",
            "api_requests_completed_total",
            "metrics_refreshes_total",
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
    }
}
