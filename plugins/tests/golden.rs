//! Golden tests: discovery and every built-in collector run over fixture trees of a
//! cgroup v2, v1 and hybrid host; the full encoded output plus each collector's status is
//! compared with `fixtures/<layout>/expected.prom`. A changed metric is a reviewed diff of
//! that file: run with `LXMETRICS_BLESS=1` to rewrite it, then read the diff.
//!
//! Each fixture has a `broken` instance (truncated line, non-number, number too large,
//! missing file) whose bad files must fail only that instance in only that collector.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lxmetrics_core::config::{CollectorsConfig, InstancesConfig};
use lxmetrics_core::discovery::Discovery;
use lxmetrics_core::engine::RefreshEngine;
use lxmetrics_core::exposition::{ContentEncoding, Format};
use lxmetrics_core::project_filter::ProjectFilter;
use lxmetrics_core::registry;
use lxmetrics_core::scrape::{encode_instances, ScrapeRequest};
use lxmetrics_core::snapshot::Snapshot;
use lxmetrics_plugin::HostPaths;
use lxmetrics_plugins::CgroupDiscovery;

fn fixture(layout: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(layout)
}

fn host(layout: &str) -> HostPaths {
    let root = fixture(layout);
    HostPaths::under(root)
}

/// The default instance sources on a fixture host that is an LXD host (its `lxd.socket`
/// marker exists), so `lxc.payload.prod_db` is `prod`/`db`.
fn lxd_host(layout: &str) -> InstancesConfig {
    let mut config = InstancesConfig::default();
    config.lxd.socket = Some(fixture(layout).join("lxd.socket"));
    config.incus.socket = Some(PathBuf::new());
    // The engines of the machine the tests run on are not the fixture's.
    config.docker.socket = Some(PathBuf::new());
    config.podman.socket = Some(PathBuf::new());
    config
}

async fn refresh(layout: &str) -> Snapshot {
    let host = Arc::new(host(layout));
    let collectors = registry::build_enabled(
        &CollectorsConfig::default(),
        &lxmetrics_core::config::MetricsConfig::default(),
        &host,
    )
    .unwrap();
    let discovery = CgroupDiscovery::new(&lxd_host(layout));
    let engine = RefreshEngine::new(
        Arc::new(discovery),
        collectors,
        host,
        Duration::from_secs(10),
        "lxd",
    );
    engine.refresh().await
}

fn render(snapshot: &Snapshot) -> String {
    let request = ScrapeRequest {
        filter: ProjectFilter::All,
        format: Format::PrometheusText,
        encoding: ContentEncoding::Identity,
    };
    let text = String::from_utf8(encode_instances(snapshot, "lxd", &request)).unwrap();
    // statvfs values come from the machine running the test (the fixture's root
    // directories are real directories): the golden file keeps their labels only.
    let mut out: String = text
        .lines()
        .map(|l| match l.starts_with("lxd_filesystem_") {
            true => format!("{} <statvfs>\n", l.rsplit_once(' ').unwrap().0),
            false => format!("{l}\n"),
        })
        .collect();
    out.push_str("# --- collector statuses (not part of the exposition) ---\n");
    for s in snapshot.statuses() {
        out.push_str(&format!(
            "# {} success={} failed_instances={}\n",
            s.name, s.success as u8, s.failed_instances
        ));
    }
    out
}

async fn check(layout: &str) -> Snapshot {
    let snapshot = refresh(layout).await;
    let actual = render(&snapshot);
    let expected_path = fixture(layout).join("expected.prom");
    if std::env::var_os("LXMETRICS_BLESS").is_some() {
        std::fs::write(&expected_path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
        panic!(
            "{} missing: run with LXMETRICS_BLESS=1",
            expected_path.display()
        )
    });
    if actual != expected {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .filter(|(e, a)| e != a)
            .take(10)
            .map(|(e, a)| format!("- {e}\n+ {a}"))
            .collect();
        panic!(
            "{layout}: output differs from {} ({} vs {} lines):\n{}",
            expected_path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
    snapshot
}

fn names(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .instances()
        .iter()
        .map(|i| format!("{}/{}/{}", i.project, i.name, i.kind))
        .collect()
}

fn failed(snapshot: &Snapshot, collector: &str) -> u32 {
    snapshot
        .statuses()
        .iter()
        .find(|s| s.name == collector)
        .unwrap()
        .failed_instances
}

#[tokio::test]
async fn cgroup_v2_golden() {
    let s = check("v2").await;
    // Sorted by project then name; the stopped instance (no process) is not running.
    assert_eq!(
        names(&s),
        [
            "default/0123abcd/container",
            "default/broken/container",
            "default/web/container",
            "default/win-11/virtual-machine",
            "prod/db/container",
        ]
    );
    for c in ["cpu", "memory", "disk"] {
        assert_eq!(failed(&s, c), 1, "{c} fails for the broken instance only");
    }
    assert_eq!(
        failed(&s, "processes"),
        0,
        "pids.current missing falls back to cgroup.procs"
    );
}

#[tokio::test]
async fn cgroup_v1_golden() {
    let s = check("v1").await;
    assert_eq!(
        names(&s),
        [
            "default/broken/container",
            "default/fedcba987654/container",
            "default/vm1/virtual-machine",
            "default/web/container",
            "dev/api/container",
        ]
    );
    for c in ["cpu", "memory", "disk", "filesystem"] {
        assert_eq!(failed(&s, c), 1, "{c} fails for the broken instance only");
    }
}

#[tokio::test]
async fn hybrid_golden() {
    let s = check("hybrid").await;
    assert_eq!(
        names(&s),
        [
            "default/5e5e5e5e/container",
            "default/box/container",
            "default/c1/container",
        ]
    );
    for c in [
        "cpu",
        "memory",
        "disk",
        "processes",
        "network",
        "filesystem",
    ] {
        assert_eq!(failed(&s, c), 0, "{c}");
    }
}

/// Values checked against the fixture files directly, so the golden files are not the
/// only witness: CPU seconds from usage_all nanoseconds, MemTotal from the limit or the
/// host, MemFree as total minus usage.
#[tokio::test]
async fn values_follow_the_fixture_files() {
    let s = refresh("v1").await;
    let text = render(&s);
    let web = "name=\"web\",project=\"default\",type=\"container\"";
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .map(|v| v.trim().parse::<f64>().unwrap())
            })
            .unwrap_or_else(|| panic!("{series} missing"))
    };
    // cpuacct.usage_all: cpu 0 user 1_500_000_000 ns.
    assert_eq!(
        value(&format!(
            "lxd_cpu_seconds_total{{{web},cpu=\"0\",mode=\"user\"}}"
        )),
        1.5
    );
    // limit 268435456 is below the host's 8000000 kB, usage 150000000.
    assert_eq!(
        value(&format!("lxd_memory_MemTotal_bytes{{{web}}}")),
        268435456.0
    );
    assert_eq!(
        value(&format!("lxd_memory_MemFree_bytes{{{web}}}")),
        (268435456 - 150000000) as f64
    );
    // memsw 151048576 - usage 150000000.
    assert_eq!(value(&format!("lxd_memory_Swap_bytes{{{web}}}")), 1048576.0);
    // Device 259:65535 is named from its uevent file.
    assert_eq!(
        value(&format!(
            "lxd_disk_read_bytes_total{{{web},device=\"nvme0n1p7\"}}"
        )),
        512.0
    );
    // The unlimited v1 instance gets the host's MemTotal.
    let api = "name=\"api\",project=\"dev\",type=\"container\"";
    assert_eq!(
        value(&format!("lxd_memory_MemTotal_bytes{{{api}}}")),
        8000000.0 * 1024.0
    );
    // The broken instance has no series from the collectors that failed on it.
    assert!(!text.contains("lxd_memory_MemTotal_bytes{name=\"broken\""));
    assert!(!text.contains("lxd_cpu_seconds_total{name=\"broken\""));
    assert!(text.contains("lxd_procs_total{name=\"broken\""));
}

#[tokio::test]
async fn discovery_alone_skips_instances_without_processes() {
    let discovery = CgroupDiscovery::new(&lxd_host("v2"));
    let found = discovery.discover(&host("v2")).await.unwrap();
    assert!(found.iter().all(|i| i.name != "stopped"));
    let web = found.iter().find(|i| i.name == "web").unwrap();
    assert_eq!(web.pid, Some(101), "pid found in the init.scope child");
    assert_eq!(web.cgroup, "lxc.payload.web");
}

#[tokio::test]
async fn filesystem_values_are_statvfs_of_the_instance_root() {
    let s = refresh("v2").await;
    let text = String::from_utf8(encode_instances(
        &s,
        "lxd",
        &ScrapeRequest {
            filter: ProjectFilter::All,
            format: Format::PrometheusText,
            encoding: ContentEncoding::Identity,
        },
    ))
    .unwrap();
    let root = fixture("v2").join("proc/101/root");
    let stat = rustix::fs::statvfs(&root).unwrap();
    let series = "lxd_filesystem_size_bytes{name=\"web\",project=\"default\",type=\"container\",device=\"/dev/sda1\",fstype=\"ext4\",mountpoint=\"/\"} ";
    let line = text
        .lines()
        .find(|l| l.starts_with(series))
        .expect("size series");
    let size: f64 = line[series.len()..].parse().unwrap();
    assert_eq!(size, (stat.f_blocks * stat.f_frsize) as f64);
    assert!(size > 0.0);
}

#[tokio::test]
async fn network_counters_come_from_the_instance_pid() {
    let s = refresh("v1").await;
    let text = render(&s);
    // pid 201 (dev/api) has n = 2 in its net/dev: eth0 received 2 * 123456 bytes.
    assert!(text.contains(
        "lxd_network_receive_bytes_total{name=\"api\",project=\"dev\",type=\"container\",device=\"eth0\"} 246912\n"
    ), "{text}");
    assert!(text.contains("device=\"lo\""));
}

/// An instance whose cgroup is removed between discovery and collection (it stopped)
/// drops out of that refresh silently: no series, and not counted as a failure.
#[tokio::test]
async fn a_vanished_instance_drops_out_silently() {
    use lxmetrics_core::discovery::StaticDiscovery;
    use lxmetrics_plugin::Instance;
    let host = Arc::new(host("v2"));
    let mut web = Instance::container("web", "lxc.payload.web");
    web.pid = Some(101);
    let mut gone = Instance::container("gone", "lxc.payload.gone");
    gone.pid = Some(999_999);
    let collectors = registry::build_enabled(
        &CollectorsConfig::default(),
        &lxmetrics_core::config::MetricsConfig::default(),
        &host,
    )
    .unwrap();
    let engine = RefreshEngine::new(
        Arc::new(StaticDiscovery(vec![web, gone])),
        collectors,
        host,
        Duration::from_secs(10),
        "lxd",
    );
    let s = engine.refresh().await;
    let text = render(&s);
    assert!(text.contains("name=\"web\""));
    // Discovery still describes it (instance_info); no collector serves a series of it.
    let measured = |l: &&str| !l.starts_with("lxd_instance_info");
    assert!(
        !text
            .lines()
            .filter(measured)
            .any(|l| l.contains("name=\"gone\"")),
        "{text}"
    );
    for status in s.statuses() {
        assert_eq!(status.failed_instances, 0, "{status:?}");
    }
}

/// Custom `[[instances.source]]` rules: `{project}` captured from the path, fixed type and
/// project for a pattern without it, and only configured rules apply.
#[tokio::test]
async fn custom_patterns_replace_the_presets() {
    use lxmetrics_core::config::InstanceSource;
    use lxmetrics_plugin::InstanceType;
    let sources = vec![
        InstanceSource {
            pattern: Some("system.slice/docker-{name}.scope".into()),
            kind: Some(InstanceType::VirtualMachine),
            project: Some("apps".into()),
            ..Default::default()
        },
        InstanceSource {
            pattern: Some("lxc.payload.{project}_{name}".into()),
            ..Default::default()
        },
    ];
    let found = CgroupDiscovery::new(&InstancesConfig {
        source: sources,
        ..lxd_host("v2")
    })
    .discover(&host("v2"))
    .await
    .unwrap();
    let summary: Vec<String> = found
        .iter()
        .map(|i| format!("{}/{}/{}", i.project, i.name, i.kind))
        .collect();
    assert_eq!(
        summary,
        ["apps/0123abcd/virtual-machine", "prod/db/container"]
    );
}
