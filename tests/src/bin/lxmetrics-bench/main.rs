//! The fleet-density bench (docs/performance.md).
//!
//! - `lxmetrics-bench` (or `lxmetrics-bench fleet`): every target of the performance
//!   issue in one run, printed as one table with PASS/FAIL: refresh cost against a raw
//!   read at 100, 1,000 and 5,000 instances, coalescing of 256 scrapers, cache-hit
//!   latency, throughput and CPU per series against node_exporter, memory, start-up and
//!   response size.
//! - `lxmetrics-bench refresh [N...]`: only the refresh comparison.
//!
//! The bench creates `lxc.payload.bench-<i>` in the v1 controllers (or v2) with a `sleep`
//! process in each, and removes everything afterwards. Needs root; node_exporter comes
//! from the Debian package `prometheus-node-exporter`. Loopback only.
//!
//! Run: `cargo run --release -p lxmetrics-tests --bin lxmetrics-bench`

mod report;
mod served;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cgroups_rs::fs::Cgroup;
use cgroups_rs::CgroupPid;
use lxmetrics_core::config::{CollectorsConfig, InstancesConfig};
use lxmetrics_core::engine::RefreshEngine;
use lxmetrics_core::registry;
use lxmetrics_plugin::HostPaths;
use lxmetrics_plugins as _;
use lxmetrics_plugins::CgroupDiscovery;
use lxmetrics_tests::real_cgroup::{create_lxc_cgroup, delete_cgroup};

const ROUNDS: usize = 9;

/// The cgroups and processes of one run; removed on drop.
struct Fleet {
    members: Vec<(Cgroup, Child)>,
}

impl Fleet {
    fn create(n: usize) -> Fleet {
        let mut fleet = Fleet {
            members: Vec::with_capacity(n),
        };
        fleet.grow_to(n);
        fleet
    }

    /// Adds instances until there are `n`.
    fn grow_to(&mut self, n: usize) {
        let members = &mut self.members;
        for i in members.len()..n {
            let cg = create_lxc_cgroup(&format!("bench-{i:05}"));
            let child = Command::new("sleep")
                .arg("3600")
                .spawn()
                .expect("spawn sleep");
            cg.add_task_by_tgid(CgroupPid::from(u64::from(child.id())))
                .expect("move process into cgroup");
            members.push((cg, child));
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (cg, child) in &mut self.members {
            let _ = child.kill();
            let _ = child.wait();
            delete_cgroup(cg);
        }
    }
}

/// Every file a refresh reads, for the raw-read baseline (found by the same rules the
/// collectors use, outside the timed loop).
fn files_read(host: &HostPaths, instances: &[lxmetrics_plugin::Instance]) -> Vec<PathBuf> {
    let root = &host.cgroup_root;
    let v2 = root.join("cgroup.controllers").is_file();
    let dir = |controller: &str, rel: &str| -> PathBuf {
        if v2 {
            root.join(rel)
        } else {
            let candidates = [controller.to_owned(), format!("cpu,{controller}")];
            candidates
                .iter()
                .map(|c| root.join(c))
                .find(|p| p.is_dir())
                .unwrap_or_else(|| root.join(controller))
                .join(rel)
        }
    };
    let mut files = vec![host.proc_root.join("meminfo"), host.proc_root.join("stat")];
    for i in instances {
        let rel = &i.cgroup;
        let pid = i.pid.expect("running instance has a pid").to_string();
        let mut candidates: Vec<PathBuf> = if v2 {
            [
                "cgroup.procs",
                "cpu.stat",
                "cpuset.cpus.effective",
                "memory.stat",
                "memory.current",
                "memory.max",
                "memory.events",
                "memory.swap.current",
                "pids.current",
                "io.stat",
                "cpu.max",
                "cpu.pressure",
                "memory.pressure",
                "io.pressure",
            ]
            .iter()
            .map(|f| root.join(rel).join(f))
            .collect()
        } else {
            vec![
                dir("pids", rel).join("cgroup.procs"),
                dir("cpuacct", rel).join("cpuacct.usage_all"),
                dir("cpuset", rel).join("cpuset.effective_cpus"),
                dir("memory", rel).join("memory.stat"),
                dir("memory", rel).join("memory.usage_in_bytes"),
                dir("memory", rel).join("memory.limit_in_bytes"),
                dir("memory", rel).join("memory.memsw.usage_in_bytes"),
                dir("memory", rel).join("memory.oom_control"),
                dir("pids", rel).join("pids.current"),
                dir("blkio", rel).join("blkio.throttle.io_service_bytes_recursive"),
                dir("blkio", rel).join("blkio.throttle.io_serviced_recursive"),
                dir("memory", rel).join("memory.failcnt"),
                dir("cpu", rel).join("cpu.cfs_quota_us"),
                dir("cpu", rel).join("cpu.cfs_period_us"),
                dir("cpu", rel).join("cpu.stat"),
                root.join("unified").join(rel).join("cpu.pressure"),
                root.join("unified").join(rel).join("memory.pressure"),
                root.join("unified").join(rel).join("io.pressure"),
            ]
        };
        candidates.push(host.proc_root.join(&pid).join("stat"));
        candidates.push(host.proc_root.join(&pid).join("net/dev"));
        candidates.push(host.proc_root.join(&pid).join("mountinfo"));
        files.extend(candidates.into_iter().filter(|p| p.exists()));
    }
    files
}

fn raw_read(files: &[PathBuf], buffer: &mut Vec<u8>) -> usize {
    let mut total = 0;
    for path in files {
        buffer.clear();
        if let Ok(mut f) = std::fs::File::open(path) {
            total += f.read_to_end(buffer).unwrap_or(0);
        }
    }
    total
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// One refresh comparison.
struct RefreshFigures {
    instances: usize,
    files: usize,
    refresh: Duration,
    raw: Duration,
}

impl RefreshFigures {
    fn ratio(&self) -> f64 {
        self.refresh.as_secs_f64() / self.raw.as_secs_f64()
    }

    fn per_instance(&self) -> Duration {
        self.refresh / self.instances as u32
    }
}

fn refresh_bench(sizes: &[usize]) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("| instances | files | full refresh (median of {ROUNDS}) | raw read of the same files | ratio | refresh per instance |");
    println!("|---|---|---|---|---|---|");
    let mut fleet = Fleet::create(0);
    for &n in sizes {
        fleet.grow_to(n);
        let f = measure_refresh(&runtime, n);
        println!(
            "| {n} | {} | {:.1} ms | {:.1} ms | {:.2}x | {:.1} µs |",
            f.files,
            f.refresh.as_secs_f64() * 1e3,
            f.raw.as_secs_f64() * 1e3,
            f.ratio(),
            f.per_instance().as_secs_f64() * 1e6,
        );
    }
}

/// Times a full in-process refresh over the `n` bench instances against a raw read.
fn measure_refresh(runtime: &tokio::runtime::Runtime, n: usize) -> RefreshFigures {
    let host = Arc::new(HostPaths::default());
    {
        let collectors = registry::build_enabled(
            &CollectorsConfig::default(),
            &lxmetrics_core::config::MetricsConfig::default(),
            &host,
        )
        .unwrap();
        // The bench fleet is cgroups only: a real LXD, Docker or Podman on the bench
        // machine is not asked (the LXD API's cost is measured on its own,
        // docs/performance.md).
        let mut instances = InstancesConfig::default();
        instances.lxd.socket = Some(std::path::PathBuf::new());
        instances.incus.socket = Some(std::path::PathBuf::new());
        instances.docker.socket = Some(std::path::PathBuf::new());
        instances.podman.socket = Some(std::path::PathBuf::new());
        let discovery = Arc::new(CgroupDiscovery::new(&instances));
        let engine = RefreshEngine::new(
            discovery,
            collectors,
            host.clone(),
            Duration::from_secs(60),
            "lxd",
        );
        let warm = runtime.block_on(engine.refresh());
        let found = warm
            .instances()
            .iter()
            .filter(|i| i.name.starts_with("bench-"))
            .count();
        assert_eq!(found, n, "discovery found {found} of {n} bench instances");
        for s in warm.statuses() {
            assert!(s.success && s.failed_instances == 0, "{s:?}");
        }
        let files = files_read(&host, warm.instances());
        let mut buffer = Vec::with_capacity(64 * 1024);
        raw_read(&files, &mut buffer);
        let (mut refresh, mut raw) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let t = Instant::now();
            std::hint::black_box(raw_read(&files, &mut buffer));
            raw.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(runtime.block_on(engine.refresh()));
            refresh.push(t.elapsed());
        }
        RefreshFigures {
            instances: n,
            files: files.len(),
            refresh: median(refresh),
            raw: median(raw),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("refresh") => {
            let sizes: Vec<usize> = args[1..]
                .iter()
                .map(|a| a.parse().expect("N is a number"))
                .collect();
            refresh_bench(if sizes.is_empty() {
                &[100, 1000]
            } else {
                &sizes
            });
        }
        None | Some("fleet") => {
            if !fleet_bench() {
                std::process::exit(1);
            }
        }
        _ => {
            eprintln!("usage: lxmetrics-bench [fleet] | lxmetrics-bench refresh [N...]");
            std::process::exit(2);
        }
    }
}

/// Every target in one run; true when all pass.
fn fleet_bench() -> bool {
    lxmetrics_tests::raise_fd_limit();
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut report = report::Report::default();
    let mut fleet = Fleet::create(0);
    let mut per_instance = Vec::new();

    // LXMETRICS_BENCH_SIZES=100 runs only the first stage (quick checks).
    let sizes: Vec<usize> = std::env::var("LXMETRICS_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1000, 5000]);
    for &n in &sizes {
        eprintln!("[{:>5.1}s] {n} instances", started.elapsed().as_secs_f64());
        fleet.grow_to(n);
        let f = measure_refresh(&runtime, n);
        report.row(
            &format!("refresh at {n} instances vs raw read of {} files", f.files),
            format!(
                "{:.1} ms vs {:.1} ms = {:.2}x",
                f.refresh.as_secs_f64() * 1e3,
                f.raw.as_secs_f64() * 1e3,
                f.ratio()
            ),
            "<= 1.5x",
            f.ratio() <= 1.5,
        );
        per_instance.push((n, f.per_instance()));
        match n {
            100 => runtime.block_on(served::at_100(&mut report)),
            1000 => runtime.block_on(served::at_1000(&mut report, n)),
            5000 => runtime.block_on(served::at_5000(&mut report, n)),
            _ => {}
        }
    }
    let (small, large) = (per_instance[0].1, per_instance[per_instance.len() - 1].1);
    let growth = large.as_secs_f64() / small.as_secs_f64();
    report.row(
        "refresh cost per instance (linear in N)",
        per_instance
            .iter()
            .map(|(n, d)| format!("{n}: {:.0} µs", d.as_secs_f64() * 1e6))
            .collect::<Vec<_>>()
            .join(", "),
        "5,000 within 1.5x of 100",
        growth <= 1.5,
    );
    drop(fleet);
    report.print(started.elapsed())
}
