//! `lxmetrics-bench refresh [N...]`: one full refresh (discovery + all six built-in
//! collectors) over N real cgroups, next to the time a plain loop needs to open and read
//! the same files with no parsing, measured in the same run.
//!
//! The bench creates `lxc.payload.bench-<i>` in the v1 controllers (or v2) with a `sleep`
//! process in each, and removes everything afterwards. Needs root.
//!
//! Run: `cargo run --release -p lxmetrics-tests --bin lxmetrics-bench -- refresh 100 1000`

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cgroups_rs::fs::{hierarchies, Cgroup};
use cgroups_rs::CgroupPid;
use lxmetrics_core::collector::HostPaths;
use lxmetrics_core::config::{CollectorsConfig, InstancesConfig};
use lxmetrics_core::engine::RefreshEngine;
use lxmetrics_core::registry;
use lxmetrics_plugins as _;
use lxmetrics_plugins::CgroupDiscovery;

const ROUNDS: usize = 9;

/// The cgroups and processes of one run; removed on drop.
struct Fleet {
    members: Vec<(Cgroup, Child)>,
}

impl Fleet {
    fn create(n: usize) -> Fleet {
        let controllers: Vec<String> = ["cpuacct", "cpu", "cpuset", "memory", "pids", "blkio"]
            .map(String::from)
            .to_vec();
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let cg = Cgroup::new_with_specified_controllers(
                hierarchies::auto(),
                format!("lxc.payload.bench-{i:05}"),
                Some(controllers.clone()),
            )
            .expect("create cgroup (needs root)");
            let child = Command::new("sleep")
                .arg("3600")
                .spawn()
                .expect("spawn sleep");
            cg.add_task_by_tgid(CgroupPid::from(u64::from(child.id())))
                .expect("move process into cgroup");
            members.push((cg, child));
        }
        Fleet { members }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (cg, child) in &mut self.members {
            let _ = child.kill();
            let _ = child.wait();
            let _ = cg.delete();
        }
    }
}

/// Every file a refresh reads, for the raw-read baseline (found by the same rules the
/// collectors use, outside the timed loop).
fn files_read(host: &HostPaths, instances: &[lxmetrics_core::instance::Instance]) -> Vec<PathBuf> {
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
    let mut files = vec![host.proc_root.join("meminfo")];
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
            ]
        };
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

fn refresh_bench(sizes: &[usize]) {
    let host = Arc::new(HostPaths::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("| instances | files | full refresh (median of {ROUNDS}) | raw read of the same files | ratio | refresh per instance |");
    println!("|---|---|---|---|---|---|");
    for &n in sizes {
        let fleet = Fleet::create(n);
        let collectors = registry::build_enabled(
            &CollectorsConfig::default(),
            &lxmetrics_core::config::MetricsConfig::default(),
            &host,
        )
        .unwrap();
        let discovery = Arc::new(CgroupDiscovery::new(&InstancesConfig::default().source));
        let engine =
            RefreshEngine::new(discovery, collectors, host.clone(), Duration::from_secs(60));
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
        let (refresh, raw) = (median(refresh), median(raw));
        println!(
            "| {n} | {} | {:.1} ms | {:.1} ms | {:.2}x | {:.1} µs |",
            files.len(),
            refresh.as_secs_f64() * 1e3,
            raw.as_secs_f64() * 1e3,
            refresh.as_secs_f64() / raw.as_secs_f64(),
            refresh.as_secs_f64() * 1e6 / n as f64,
        );
        drop(fleet);
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
        _ => {
            eprintln!("usage: lxmetrics-bench refresh [N...]");
            std::process::exit(2);
        }
    }
}
