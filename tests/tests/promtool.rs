//! The exposition passes `promtool check metrics` (Debian package `prometheus`), except the
//! lint rules LXD-compatible names break, which `docs/metrics.md` lists in its
//! "promtool lint exceptions" table. The test reads that table, so the documented list
//! and the accepted list are the same list.

use std::sync::Arc;
use std::time::Duration;

use lxmetrics_core::cache::MetricsCache;
use lxmetrics_core::daemon_metrics::DaemonTelemetry;
use lxmetrics_core::discovery::StaticDiscovery;
use lxmetrics_core::engine::RefreshEngine;
use lxmetrics_core::exposition::{ContentEncoding, Format};
use lxmetrics_core::project_filter::ProjectFilter;
use lxmetrics_core::scrape::{MetricsService, ScrapeRequest};
use lxmetrics_plugin::{
    CollectError, Collection, Collector, Family, HostPaths, Instance, InstanceType, MetricDesc,
    Scope,
};
use lxmetrics_tests::{promtool_check_metrics, workspace_root, Daemon};

/// One documented exception: a metric name (or prefix ending in `*`) and the message.
struct Exception {
    metric: String,
    message: String,
}

fn documented_exceptions() -> Vec<Exception> {
    let doc = std::fs::read_to_string(workspace_root().join("docs/metrics.md"))
        .expect("docs/metrics.md exists");
    let section = doc
        .split("## promtool lint exceptions")
        .nth(1)
        .expect("docs/metrics.md has a \"promtool lint exceptions\" section");
    let rows: Vec<Exception> = section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| `"))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            Exception {
                metric: cells[1].trim_matches('`').to_owned(),
                message: cells[2].to_owned(),
            }
        })
        .collect();
    assert!(!rows.is_empty(), "the exceptions table has no rows");
    rows
}

/// Runs promtool on `body` and returns the problems not covered by the documented list.
fn undocumented_problems(body: &str) -> Vec<String> {
    let (code, report) = promtool_check_metrics(body);
    let exceptions = documented_exceptions();
    let problems: Vec<String> = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|line| {
            !exceptions.iter().any(|e| {
                let (name, message) = line.split_once(' ').unwrap_or((line, ""));
                let name_ok = match e.metric.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => name == e.metric,
                };
                name_ok && message.trim() == e.message
            })
        })
        .map(str::to_owned)
        .collect();
    // promtool exits 3 for lint findings and 1 for parse errors; a parse error always
    // shows up as an undocumented line.
    if code != Some(0) && code != Some(3) {
        assert!(
            !problems.is_empty(),
            "promtool failed without output: {report}"
        );
    }
    problems
}

/// Produces every instance metric family of DESIGN.md with LXD's labels, including
/// label values that need escaping.
struct LxdShaped;

#[async_trait::async_trait]
impl Collector for LxdShaped {
    async fn collect(&self, scope: &Scope) -> Result<Collection, CollectError> {
        let mut c = Collection::new();
        let mut cpu = Family::new(
            MetricDesc::counter(
                "cpu_seconds_total",
                "The total number of CPU time used in seconds.",
            ),
            &["cpu", "mode"],
        );
        let mut effective = Family::new(
            MetricDesc::gauge("cpu_effective_total", "The total number of effective CPUs."),
            &[],
        );
        let memory_keys = [
            "Active",
            "Active_anon",
            "Active_file",
            "Cached",
            "Dirty",
            "Inactive",
            "Inactive_anon",
            "Inactive_file",
            "Mapped",
            "MemAvailable",
            "MemFree",
            "MemTotal",
            "RSS",
            "Shmem",
            "Swap",
            "Unevictable",
            "Writeback",
        ];
        let mut memory: Vec<Family> = memory_keys
            .iter()
            .map(|k| {
                Family::new(
                    MetricDesc {
                        name: format!("memory_{k}_bytes").into(),
                        help: format!("The amount of {k} memory.").into(),
                        kind: lxmetrics_plugin::MetricKind::Gauge,
                        namespace: lxmetrics_plugin::Namespace::Prefixed,
                    },
                    &[],
                )
            })
            .collect();
        let mut oom = Family::new(
            MetricDesc::counter(
                "memory_OOM_kills_total",
                "The number of out of memory kills.",
            ),
            &[],
        );
        let mut net: Vec<Family> = ["receive", "transmit"]
            .iter()
            .flat_map(|dir| ["bytes", "packets", "errs", "drop"].map(|what| (dir, what)))
            .map(|(dir, what)| {
                Family::new(
                    MetricDesc {
                        name: format!("network_{dir}_{what}_total").into(),
                        help: format!("Network {dir} {what}.").into(),
                        kind: lxmetrics_plugin::MetricKind::Counter,
                        namespace: lxmetrics_plugin::Namespace::Prefixed,
                    },
                    &["device"],
                )
            })
            .collect();
        let mut disk: Vec<Family> = [
            "disk_read_bytes_total",
            "disk_written_bytes_total",
            "disk_reads_completed_total",
            "disk_writes_completed_total",
        ]
        .iter()
        .map(|n| {
            Family::new(
                MetricDesc {
                    name: (*n).into(),
                    help: "Disk counter.".into(),
                    kind: lxmetrics_plugin::MetricKind::Counter,
                    namespace: lxmetrics_plugin::Namespace::Prefixed,
                },
                &["device"],
            )
        })
        .collect();
        let mut fs: Vec<Family> = ["avail", "free", "size"]
            .iter()
            .map(|w| {
                Family::new(
                    MetricDesc {
                        name: format!("filesystem_{w}_bytes").into(),
                        help: format!("Filesystem {w} bytes.").into(),
                        kind: lxmetrics_plugin::MetricKind::Gauge,
                        namespace: lxmetrics_plugin::Namespace::Prefixed,
                    },
                    &["device", "fstype", "mountpoint"],
                )
            })
            .collect();
        let mut procs = Family::new(
            MetricDesc::gauge("procs_total", "The number of running processes."),
            &[],
        );
        for (i, _) in scope.indexed_instances() {
            for cpu_n in 0..4 {
                for mode in ["user", "system", "iowait"] {
                    cpu.push(
                        i,
                        [cpu_n.to_string().as_str(), mode],
                        12.5 + f64::from(cpu_n),
                    );
                }
            }
            effective.push(i, (), 4.0);
            for f in &mut memory {
                f.push(i, (), 1_048_576.0);
            }
            oom.push(i, (), 0.0);
            for f in &mut net {
                f.push(i, ["eth0"], 1000.0);
                f.push(i, ["lo"], 10.0);
            }
            for f in &mut disk {
                f.push(i, ["sda"], 4096.0);
            }
            for f in &mut fs {
                f.push(i, ["/dev/sda1", "ext4", "/"], 1e10);
            }
            procs.push(i, (), 7.0);
        }
        c.push(cpu);
        c.push(effective);
        memory.into_iter().for_each(|f| c.push(f));
        c.push(oom);
        net.into_iter().for_each(|f| c.push(f));
        disk.into_iter().for_each(|f| c.push(f));
        fs.into_iter().for_each(|f| c.push(f));
        c.push(procs);
        Ok(c)
    }
}

#[tokio::test]
async fn lxd_shaped_output_passes_promtool_except_documented_rules() {
    let mut odd = Instance::container("we\"ird\\name\nx", "lxc.payload.weird");
    odd.project = "prod ünïcode".into();
    let vm = Instance::new("vm1", "default", InstanceType::VirtualMachine, "qemu/vm1");
    let engine = RefreshEngine::new(
        Arc::new(StaticDiscovery(vec![
            Instance::container("c1", "lxc.payload.c1"),
            odd,
            vm,
        ])),
        vec![("lxd", Arc::new(LxdShaped))],
        Arc::new(HostPaths::default()),
        Duration::from_secs(5),
        "lxd",
    );
    let service = MetricsService::new(
        MetricsCache::new(Arc::new(engine), Duration::from_secs(8)),
        Arc::new(DaemonTelemetry::default()),
    );
    let response = service
        .scrape(&ScrapeRequest {
            filter: ProjectFilter::All,
            format: Format::PrometheusText,
            encoding: ContentEncoding::Identity,
        })
        .await
        .unwrap();
    let body = String::from_utf8(response.body.into_parts().concat()).unwrap();
    assert!(
        body.contains("lxd_memory_MemAvailable_bytes{"),
        "fixture covers camelCase keys"
    );
    let problems = undocumented_problems(&body);
    assert!(
        problems.is_empty(),
        "promtool problems not in docs/metrics.md:\n{}",
        problems.join("\n")
    );
}

#[tokio::test]
async fn the_running_daemon_passes_promtool() {
    let daemon = Daemon::start(&[]);
    let body = daemon.get("/1.0/metrics").await.1;
    let problems = undocumented_problems(&body);
    assert!(
        problems.is_empty(),
        "promtool problems:\n{}",
        problems.join("\n")
    );
}

#[test]
fn promtool_catches_what_we_would_get_wrong() {
    // Proof the check is live: a body with a real problem is reported.
    let problems = undocumented_problems("# TYPE x counter\nx{a=\"unterminated} 1\n");
    assert!(!problems.is_empty());
}
