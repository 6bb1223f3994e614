//! The fleet-density bench (docs/performance.md).
//!
//! - `lxmetrics-bench` (or `lxmetrics-bench fleet`): every target of the performance
//!   issue in one run, printed as one table with PASS/FAIL: refresh cost against a raw
//!   read at 100, 1,000 and 5,000 instances, coalescing of 256 scrapers, cache-hit
//!   latency, throughput and CPU per series against node_exporter, memory, start-up and
//!   response size.
//! - `lxmetrics-bench refresh [N...]`: only the refresh comparison.
//! - `lxmetrics-bench versus-lxd`: only the comparison with a real LXD.
//!
//! The bench creates realistic instances: `lxc.payload.bench-<i>` in the v1 controllers
//! (or v2), each an `lxm-instance` with its own network namespace (`lo` with some traffic,
//! an `eth0` veth on a bridge, no IPv6 addresses), its own mount namespace with a tmpfs,
//! three processes and a little direct block I/O; it removes everything afterwards.
//! Where a real LXD answers, it first compares cold scrapes with LXD's own endpoint at 100
//! containers (`LXMETRICS_BENCH_NO_LXD=1` skips that). Needs root; node_exporter comes
//! from the Debian package `prometheus-node-exporter`. Loopback only.
//!
//! Run: `cargo run --release -p lxmetrics-tests --bin lxmetrics-bench`

mod report;
mod served;
mod versus_lxd;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
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

/// Instances on one bridge (the kernel allows 1,024 ports per bridge).
const PER_BRIDGE: usize = 1000;

/// One realistic instance: its cgroup, its `lxm-instance` process (which has its own
/// network and mount namespaces, two more processes, a tmpfs, an `eth0` on a bridge) and
/// the pipe that keeps it alive.
struct Member {
    cgroup: Cgroup,
    child: Child,
    stdin: Option<ChildStdin>,
}

/// The cgroups, processes, namespaces and bridges of one run; removed on drop.
struct Fleet {
    members: Vec<Member>,
    bridges: usize,
}

impl Fleet {
    fn create(n: usize) -> Fleet {
        let mut fleet = Fleet {
            members: Vec::with_capacity(n),
            bridges: 0,
        };
        fleet.grow_to(n);
        fleet
    }

    /// Adds instances until there are `n`: all new ones are started and set up in
    /// parallel, then given their `eth0` in one `ip -batch`.
    ///
    /// Neither end of a veth nor a bridge gets an IPv6 link-local address: each would
    /// send router solicitations and MLD reports that a 1,000-port bridge floods to every
    /// port, which at 5,000 instances kept both cores about half busy in softirq minutes
    /// after the fleet was up (`perf record -a`: `ip6_rcv_finish`, `veth_xmit`, the `mld`
    /// workers), under both the refresh and the floor. That is the bridge's cost, not
    /// the daemon's; the interfaces and their counters are the same.
    fn grow_to(&mut self, n: usize) {
        let first = self.members.len();
        if n <= first {
            return;
        }
        let program = lxmetrics_tests::instance_bin();
        let mut readers = Vec::new();
        for i in first..n {
            let cgroup = create_lxc_cgroup(&format!("bench-{i:05}"));
            let mut child = Command::new(program)
                .arg(i.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
            cgroup
                .add_task_by_tgid(CgroupPid::from(u64::from(child.id())))
                .expect("move the instance into its cgroup");
            let mut stdin = child.stdin.take().expect("stdin");
            writeln!(stdin, "go").expect("start the instance");
            readers.push(BufReader::new(child.stdout.take().expect("stdout")));
            self.members.push(Member {
                cgroup,
                child,
                stdin: Some(stdin),
            });
        }
        for reader in &mut readers {
            expect_ready(reader);
        }
        let mut batch = String::new();
        while self.bridges * PER_BRIDGE < n {
            let bridge = self.bridges;
            batch.push_str(&format!(
                "link add lxmb{bridge} type bridge\n\
                 link set lxmb{bridge} addrgenmode none\nlink set lxmb{bridge} up\n"
            ));
            self.bridges += 1;
        }
        for (i, member) in self.members.iter().enumerate().skip(first) {
            let pid = member.child.id();
            let bridge = i / PER_BRIDGE;
            batch.push_str(&format!(
                "link add lxmv{i} type veth peer name eth0 netns {pid}\n\
                 link set lxmv{i} addrgenmode none\n\
                 link set lxmv{i} master lxmb{bridge}\nlink set lxmv{i} up\n"
            ));
        }
        ip_batch(&batch);
        for member in &mut self.members[first..] {
            if let Some(stdin) = &mut member.stdin {
                writeln!(stdin, "up").expect("bring eth0 up");
            }
        }
        for reader in &mut readers {
            expect_ready(reader);
        }
    }
}

/// Waits for an instance's `ready`.
fn expect_ready(reader: &mut BufReader<std::process::ChildStdout>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read from the instance");
    assert_eq!(line.trim(), "ready", "an instance failed to set up");
}

/// Runs `ip -batch -` with these commands.
fn ip_batch(commands: &str) {
    let mut ip = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run ip (Debian package iproute2)");
    ip.stdin
        .take()
        .expect("stdin")
        .write_all(commands.as_bytes())
        .expect("write to ip");
    assert!(ip.wait().expect("ip").success(), "ip -batch failed");
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // A closed stdin ends an instance and its processes; its namespace takes its
        // veth with it.
        for member in &mut self.members {
            member.stdin = None;
        }
        for member in &mut self.members {
            let _ = member.child.wait();
            // Whatever is left (the instance was killed before it could stop them).
            for pid in member.cgroup.tasks() {
                let _ = Command::new("kill")
                    .args(["-9", &pid.pid.to_string()])
                    .status();
            }
            delete_cgroup(&member.cgroup);
        }
        let bridges: String = (0..self.bridges)
            .map(|b| format!("link del lxmb{b}\n"))
            .collect();
        if !bridges.is_empty() {
            let _ = Command::new("ip")
                .args(["-batch", "-"])
                .stdin(Stdio::piped())
                .spawn()
                .and_then(|mut ip| {
                    if let Some(mut stdin) = ip.stdin.take() {
                        let _ = stdin.write_all(bridges.as_bytes());
                    }
                    ip.wait()
                });
        }
    }
}

/// Everything a refresh must read, for the raw-read floor (found by the same rules the
/// collectors use, outside the timed loop): every file, and per instance its network
/// namespace (a `stat` of `ns/net`, which says whose interfaces it has) and its root
/// file system (a `statvfs` through `/proc/<pid>/root`).
struct Floor {
    files: Vec<PathBuf>,
    namespaces: Vec<PathBuf>,
    roots: Vec<PathBuf>,
}

impl Floor {
    fn of(host: &HostPaths, instances: &[lxmetrics_plugin::Instance]) -> Floor {
        let pid_path = |i: &lxmetrics_plugin::Instance, rest: &str| {
            let pid = i.pid.expect("running instance has a pid");
            host.proc_root.join(pid.to_string()).join(rest)
        };
        Floor {
            files: files_read(host, instances),
            namespaces: instances.iter().map(|i| pid_path(i, "ns/net")).collect(),
            roots: instances.iter().map(|i| pid_path(i, "root")).collect(),
        }
    }

    /// Reads it all once, single-threaded; the bytes read.
    fn read(&self, buffer: &mut Vec<u8>) -> usize {
        let mut total = raw_read(&self.files, buffer);
        for ns in &self.namespaces {
            total += std::fs::metadata(ns).map_or(0, |m| usize::from(m.len() > 0));
        }
        for root in &self.roots {
            total += rustix::fs::statvfs(root).map_or(0, |s| usize::from(s.f_blocks > 0));
        }
        total
    }

    fn operations(&self) -> usize {
        self.files.len() + self.namespaces.len() + self.roots.len()
    }
}

/// Every file a refresh reads.
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
        // Not `mountinfo`: a refresh reads it at most every 30 s per instance (the
        // filesystem collector keeps what it says about the disks).
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

/// One refresh comparison: wall times and CPU, medians of the rounds.
struct RefreshFigures {
    instances: usize,
    files: usize,
    refresh: Duration,
    raw: Duration,
    refresh_cpu: CpuSpent,
    raw_cpu: CpuSpent,
}

impl RefreshFigures {
    fn ratio(&self) -> f64 {
        self.refresh.as_secs_f64() / self.raw.as_secs_f64()
    }

    /// This process's CPU per refresh and instance (median round).
    fn cpu_per_instance(&self) -> Duration {
        self.refresh_cpu.ours() / self.instances as u32
    }

    /// This process's CPU per read of the floor and instance (median round).
    fn floor_cpu_per_instance(&self) -> Duration {
        self.raw_cpu.ours() / self.instances as u32
    }

    fn per_instance(&self) -> Duration {
        self.refresh / self.instances as u32
    }
}

/// The bench process's CPU clock and the machine's busy time, read together.
struct CpuClocks {
    ours: Duration,
    machine: Duration,
}

impl CpuClocks {
    fn now() -> CpuClocks {
        CpuClocks {
            ours: Duration::from_secs_f64(lxmetrics_tests::process_cpu_seconds(std::process::id())),
            machine: machine_busy(),
        }
    }
}

/// CPU spent over timed phases: ours, and what every other process and the kernel's
/// own threads took from the machine meanwhile.
///
/// The second matters on small machines: at 5,000 instances (15,000 processes) the CI
/// machine's own init, `process_api`, keeps one of the two cores busy, so a refresh
/// spread over both cores finds only one, while the single-threaded floor never needed
/// the second (docs/performance.md).
#[derive(Default)]
struct CpuSpent {
    /// Ours, per round.
    ours: Vec<Duration>,
    /// Others', over all rounds.
    others: Duration,
    wall: Duration,
}

impl CpuSpent {
    /// Ours, the median round (like the wall times).
    fn ours(&self) -> Duration {
        median(self.ours.clone())
    }

    fn add(&mut self, since: &CpuClocks, wall: Duration) {
        let now = CpuClocks::now();
        let ours = now.ours.saturating_sub(since.ours);
        self.ours.push(ours);
        self.others += now
            .machine
            .saturating_sub(since.machine)
            .saturating_sub(ours);
        self.wall += wall;
    }

    /// The share of the machine's cores that others took meanwhile.
    fn others_share(&self) -> f64 {
        share_of_cores(self.others, self.wall)
    }
}

/// `cpu` as a share (0 to 1) of all the machine's cores over `wall`.
pub(crate) fn share_of_cores(cpu: Duration, wall: Duration) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cpu.as_secs_f64() / (wall.as_secs_f64() * cores as f64)
}

/// Busy time of all CPUs since boot (`/proc/stat`: user, nice, system, irq, softirq),
/// read in clock ticks.
pub(crate) fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let ticks: u64 = stat
        .lines()
        .next()
        .expect("/proc/stat has a cpu line")
        .split_whitespace()
        .skip(1)
        .enumerate()
        .filter(|(field, _)| matches!(field, 0 | 1 | 2 | 5 | 6))
        .map(|(_, v)| v.parse::<u64>().expect("/proc/stat counts ticks"))
        .sum();
    Duration::from_secs_f64(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// The bench's `metrics.collector_timeout`: long enough for a refresh of 5,000 realistic
/// instances on 2 vCPUs.
const REFRESH_DEADLINE: Duration = Duration::from_secs(60);

fn refresh_bench(sizes: &[usize]) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("| instances | files | full refresh (median of {ROUNDS}) | raw read of the same files | ratio | refresh per instance | CPU per instance, refresh vs raw read | others' share of the cores during the refreshes |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut fleet = Fleet::create(0);
    for &n in sizes {
        fleet.grow_to(n);
        let f = measure_refresh(&runtime, n, KeptBudget::Own);
        println!(
            "| {n} | {} | {:.1} ms | {:.1} ms | {:.2}x | {:.1} µs | {:.1} vs {:.1} µs | {:.0} % |",
            f.files,
            f.refresh.as_secs_f64() * 1e3,
            f.raw.as_secs_f64() * 1e3,
            f.ratio(),
            f.per_instance().as_secs_f64() * 1e6,
            f.cpu_per_instance().as_secs_f64() * 1e6,
            f.floor_cpu_per_instance().as_secs_f64() * 1e6,
            f.refresh_cpu.others_share() * 100.0,
        );
    }
}

/// Who holds the process's budget of cgroup files kept open between refreshes
/// (`plugin/src/kept_files.rs`, 2,048 files) while a refresh is timed.
#[derive(Clone, Copy, PartialEq)]
enum KeptBudget {
    /// The timed engine, as in the daemon: at 100 instances it keeps all its files open.
    Own,
    /// Another engine that read the same fleet first: the timed one opens nearly all its
    /// files, as a refresh of 5,000 instances does for all but about the first hundred.
    HeldElsewhere,
}

/// An engine over the bench fleet with all six collectors, as the daemon builds it.
fn bench_engine(host: &Arc<HostPaths>) -> RefreshEngine {
    // The engine's deadline below, given to the collectors too (the filesystem pass may
    // take up to 90 % of it at 5,000 instances on 2 vCPUs).
    let metrics = lxmetrics_core::config::MetricsConfig {
        collector_timeout: REFRESH_DEADLINE,
        ..Default::default()
    };
    let collectors = registry::build_enabled(&CollectorsConfig::default(), &metrics, host).unwrap();
    // The bench fleet is cgroups only: a real LXD, Docker or Podman on the bench machine
    // is not asked (the LXD API's cost is measured on its own, docs/performance.md).
    let mut instances = InstancesConfig::default();
    instances.lxd.socket = Some(std::path::PathBuf::new());
    instances.incus.socket = Some(std::path::PathBuf::new());
    instances.docker.socket = Some(std::path::PathBuf::new());
    instances.podman.socket = Some(std::path::PathBuf::new());
    let discovery = Arc::new(CgroupDiscovery::new(&instances));
    RefreshEngine::new(discovery, collectors, host.clone(), REFRESH_DEADLINE, "lxd")
}

/// Times a full in-process refresh over the `n` bench instances against a raw read.
fn measure_refresh(
    runtime: &tokio::runtime::Runtime,
    n: usize,
    budget: KeptBudget,
) -> RefreshFigures {
    let host = Arc::new(HostPaths::default());
    {
        let _holder = (budget == KeptBudget::HeldElsewhere).then(|| {
            let holder = bench_engine(&host);
            runtime.block_on(holder.refresh());
            holder
        });
        let engine = bench_engine(&host);
        // The first refreshes of new instances also read what is kept between refreshes
        // (each container's mountinfo) and start the background link-speed queries:
        // measured once a refresh reads every instance (at most five tries).
        let mut warm = runtime.block_on(engine.refresh());
        for _ in 0..4 {
            if warm
                .statuses()
                .iter()
                .all(|s| s.success && s.failed_instances == 0)
            {
                break;
            }
            warm = runtime.block_on(engine.refresh());
        }
        let found = warm
            .instances()
            .iter()
            .filter(|i| i.name.starts_with("bench-"))
            .count();
        assert_eq!(found, n, "discovery found {found} of {n} bench instances");
        for s in warm.statuses() {
            assert!(s.success && s.failed_instances == 0, "{s:?}");
        }
        let readable: Vec<lxmetrics_plugin::Instance> = warm
            .instances()
            .iter()
            .filter(|i| i.is_readable())
            .cloned()
            .collect();
        let floor = Floor::of(&host, &readable);
        let mut buffer = Vec::with_capacity(64 * 1024);
        floor.read(&mut buffer);
        let (mut refresh, mut raw) = (Vec::new(), Vec::new());
        let (mut refresh_cpu, mut raw_cpu) = (CpuSpent::default(), CpuSpent::default());
        for _ in 0..ROUNDS {
            let (t, cpu) = (Instant::now(), CpuClocks::now());
            std::hint::black_box(floor.read(&mut buffer));
            raw.push(t.elapsed());
            raw_cpu.add(&cpu, t.elapsed());
            let (t, cpu) = (Instant::now(), CpuClocks::now());
            std::hint::black_box(runtime.block_on(engine.refresh()));
            refresh.push(t.elapsed());
            refresh_cpu.add(&cpu, t.elapsed());
        }
        RefreshFigures {
            instances: n,
            files: floor.operations(),
            refresh: median(refresh),
            raw: median(raw),
            refresh_cpu,
            raw_cpu,
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
        Some("versus-lxd") => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let mut report = report::Report::default();
            runtime.block_on(versus_lxd::versus_lxd(&mut report));
            if !report.print(Duration::ZERO) {
                std::process::exit(1);
            }
        }
        None | Some("fleet") => {
            if !fleet_bench() {
                std::process::exit(1);
            }
        }
        _ => {
            eprintln!(
                "usage: lxmetrics-bench [fleet] | lxmetrics-bench refresh [N...] | lxmetrics-bench versus-lxd"
            );
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
    // Built before the first phase, so a failed build stops the bench at once.
    lxmetrics_tests::instance_bin();
    let mut fleet = Fleet::create(0);
    let mut per_instance = Vec::new();

    // Against a real LXD first, while no bench instance exists besides its containers.
    if std::env::var_os("LXMETRICS_BENCH_NO_LXD").is_none() {
        eprintln!(
            "[{:>5.1}s] against a real LXD",
            started.elapsed().as_secs_f64()
        );
        runtime.block_on(versus_lxd::versus_lxd(&mut report));
    }

    // LXMETRICS_BENCH_SIZES=100 runs only the first stage (quick checks).
    let sizes: Vec<usize> = std::env::var("LXMETRICS_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1000, 5000]);
    for &n in &sizes {
        eprintln!("[{:>5.1}s] {n} instances", started.elapsed().as_secs_f64());
        fleet.grow_to(n);
        let f = measure_refresh(&runtime, n, KeptBudget::Own);
        report.row(
            &format!(
                "refresh at {n} realistic instances vs the raw-read floor ({} files, namespaces and roots)",
                f.files
            ),
            format!(
                "{:.1} ms vs {:.1} ms = {:.2}x",
                f.refresh.as_secs_f64() * 1e3,
                f.raw.as_secs_f64() * 1e3,
                f.ratio()
            ),
            "<= 1.3x",
            f.ratio() <= 1.3,
        );
        // Like with like: at 100 instances the refresh above keeps all its files open,
        // which no larger fleet can (the budget covers about 100 instances), so the
        // per-instance row also times the first size with the budget held elsewhere.
        let alike = if n == sizes[0] {
            Some(measure_refresh(&runtime, n, KeptBudget::HeldElsewhere))
        } else {
            None
        };
        per_instance.push((f, alike));
        match n {
            100 => runtime.block_on(served::at_100(&mut report)),
            1000 => runtime.block_on(served::at_1000(&mut report, n)),
            5000 => runtime.block_on(served::at_5000(&mut report, n)),
            _ => {}
        }
    }
    // Flat means the refresh's CPU per instance grows no faster than the floor's: the
    // kernel's own cost per file grows with the number of cgroups on the host (dentry
    // and kernfs lookups, caches), which no reader of those files can avoid. CPU, not
    // wall time: the refresh spreads over the cores, so its wall time also depends on
    // what else the machine runs, and that grows with the fleet (`others` below).
    let (first, first_alike) = &per_instance[0];
    let small = first_alike.as_ref().unwrap_or(first);
    let large = &per_instance[per_instance.len() - 1].0;
    let growth =
        |of: fn(&RefreshFigures) -> Duration| of(large).as_secs_f64() / of(small).as_secs_f64();
    let (ours, floor) = (
        growth(RefreshFigures::cpu_per_instance),
        growth(RefreshFigures::floor_cpu_per_instance),
    );
    let micros = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
    let sizes_of = |of: fn(&RefreshFigures) -> Duration, kept: bool| {
        per_instance
            .iter()
            .map(|(f, alike)| {
                let at = micros(of(alike.as_ref().unwrap_or(f)));
                match alike {
                    Some(_) if kept => format!(
                        "{}: {at} ({} with its files kept open)",
                        f.instances,
                        micros(of(f))
                    ),
                    _ => format!("{}: {at}", f.instances),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let others = per_instance
        .iter()
        .map(|(f, _)| format!("{:.0} %", f.refresh_cpu.others_share() * 100.0))
        .collect::<Vec<_>>()
        .join(" / ");
    report.row(
        "refresh CPU per instance (linear in N), against the floor's",
        format!(
            "{} = {ours:.2}x; the floor {} = {floor:.2}x; ratio to the floor grew {:.2}x \
             (wall time per instance {}; other processes took {others} of the cores meanwhile)",
            sizes_of(RefreshFigures::cpu_per_instance, true),
            sizes_of(RefreshFigures::floor_cpu_per_instance, false),
            ours / floor,
            sizes_of(RefreshFigures::per_instance, false),
        ),
        "growth from the first to the last size within 1.5x of the floor's (files opened at both)",
        ours / floor <= 1.5,
    );
    drop(fleet);
    report.print(started.elapsed())
}
