//! The daemon against real cgroups on this machine: a cgroup `lxc.payload.<random>` is
//! created with cgroups-rs in the v1 controllers (and v2 where mounted), a workload runs
//! in it inside a fresh network namespace with traffic on its loopback, and the daemon's
//! output must show CPU seconds growing, the real task count, the cgroup's memory usage
//! and at least the bytes sent. Everything is removed again, also when an assertion fails.
//!
//! Needs root, a writable cgroup hierarchy and `ip netns` (package iproute2).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::time::Duration;

use cgroups_rs::CgroupPid;
use lxmetrics_tests::real_cgroup::{create_lxc_cgroup, CgroupWorkload};
use lxmetrics_tests::{require_program, state_with_config, Daemon};

/// Removes what the test created, whatever happens: the network namespace here, the
/// workload and its cgroup when `workload` drops.
struct Cleanup {
    workload: CgroupWorkload,
    netns: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .status();
    }
}

fn value(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .reduce(|a, b| a + b)
}

async fn scrape(daemon: &Daemon) -> String {
    daemon.get("/1.0/metrics").await.1
}

fn read_line(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> String {
    lines
        .next()
        .expect("workload output")
        .expect("workload stdout")
}

#[tokio::test]
async fn real_cgroup_instance_is_measured() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root to create cgroups and network namespaces"
    );
    assert!(
        Path::new("/sys/fs/cgroup/pids").is_dir()
            || Path::new("/sys/fs/cgroup/cgroup.controllers").is_file(),
        "no cgroup hierarchy at /sys/fs/cgroup"
    );
    require_program("ip", "iproute2");
    let suffix = format!(
        "{:x}",
        std::process::id()
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos())
    );
    let name = format!("e2e{suffix}");
    let mut cleanup = Cleanup {
        workload: CgroupWorkload::default(),
        netns: format!("lxm-{suffix}"),
    };

    let ok = Command::new("ip")
        .args(["netns", "add", &cleanup.netns])
        .status()
        .unwrap();
    assert!(ok.success(), "ip netns add failed");
    let ok = Command::new("ip")
        .args([
            "netns",
            "exec",
            &cleanup.netns,
            "ip",
            "link",
            "set",
            "lo",
            "up",
        ])
        .status()
        .unwrap();
    assert!(ok.success(), "bringing up lo in the namespace failed");
    // A veth pair: its inner end has a speed the driver reports through ethtool.
    let (outer, inner) = (format!("lxv{suffix}"), format!("lxp{suffix}"));
    let (outer, inner) = (&outer[..outer.len().min(15)], &inner[..inner.len().min(15)]);
    for args in [
        vec!["link", "add", outer, "type", "veth", "peer", "name", inner],
        vec!["link", "set", inner, "netns", &cleanup.netns],
        vec![
            "netns",
            "exec",
            &cleanup.netns,
            "ip",
            "link",
            "set",
            inner,
            "up",
        ],
    ] {
        let ok = Command::new("ip").args(&args).status().unwrap();
        assert!(ok.success(), "ip {args:?} failed");
    }
    let kernel_mbps: f64 = String::from_utf8(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &cleanup.netns,
                "cat",
                &format!("/sys/class/net/{inner}/speed"),
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .expect("the kernel reports a veth speed");

    let cgroup = create_lxc_cgroup(&name);
    cleanup.workload.cgroup = Some(cgroup.clone());

    // `sh` waits for a line, is moved into the cgroup, then execs the workload inside the
    // namespace, so every process of the workload starts in the cgroup.
    let workload = env!("CARGO_BIN_EXE_lxm-workload");
    let mut child = Command::new("sh")
        .args([
            "-c",
            &format!("read go; exec ip netns exec {} {workload}", cleanup.netns),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    cgroup
        .add_task_by_tgid(CgroupPid::from(u64::from(pid)))
        .expect("move the workload into the cgroup");
    let mut stdin: ChildStdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    cleanup.workload.child = Some(child);
    writeln!(stdin, "go").unwrap();
    assert_eq!(read_line(&mut lines), "ready");

    let state = state_with_config("[metrics]\ncache_ttl = \"50ms\"\n");
    let daemon = Daemon::start_in(state, &[]);
    let labels = format!("{{name=\"{name}\",project=\"default\",type=\"container\"");

    let first = scrape(&daemon).await;
    assert!(
        first.contains(&labels),
        "instance {name} not in the output:\n{first}"
    );
    let cpu_before = value(&first, &format!("lxd_cpu_seconds_total{labels}")).expect("cpu seconds");
    let lo = format!("lxd_network_receive_bytes_total{labels},device=\"lo\"}}");
    let lo_tx = format!("lxd_network_transmit_bytes_total{labels},device=\"lo\"}}");
    let rx_before = value(&first, &lo).expect("lo receive bytes");
    let tx_before = value(&first, &lo_tx).expect("lo transmit bytes");

    writeln!(stdin, "send").unwrap();
    let sent: f64 = read_line(&mut lines)
        .strip_prefix("sent ")
        .expect("sent line")
        .parse()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let second = scrape(&daemon).await;
    let cpu_after = value(&second, &format!("lxd_cpu_seconds_total{labels}")).unwrap();
    assert!(
        cpu_after > cpu_before,
        "CPU seconds did not grow: {cpu_before} -> {cpu_after}"
    );
    let rx_after = value(&second, &lo).unwrap();
    let tx_after = value(&second, &lo_tx).unwrap();
    assert!(
        rx_after - rx_before >= sent,
        "lo rx grew {} < sent {sent}",
        rx_after - rx_before
    );
    assert!(
        tx_after - tx_before >= sent,
        "lo tx grew {} < sent {sent}",
        tx_after - tx_before
    );

    // Link speed from ethtool netlink inside the instance's namespace, in bytes/s.
    let speed = value(
        &second,
        &format!("lxd_network_speed_bytes{labels},device=\"{inner}\"}}"),
    )
    .unwrap_or_else(|| panic!("no speed for {inner}:\n{second}"));
    assert_eq!(speed, kernel_mbps * 1e6 / 8.0);
    assert!(
        !second.contains(&format!("lxd_network_speed_bytes{labels},device=\"lo\"}}")),
        "lo reports no speed, so it has no series"
    );

    // The real task count, read from the same cgroup by the test.
    let pids_dir = Path::new("/sys/fs/cgroup/pids").join(format!("lxc.payload.{name}"));
    let pids_file = if pids_dir.is_dir() {
        pids_dir.join("pids.current")
    } else {
        Path::new("/sys/fs/cgroup").join(format!("lxc.payload.{name}/pids.current"))
    };
    let real: f64 = std::fs::read_to_string(&pids_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let procs = value(&second, &format!("lxd_procs_total{labels}")).unwrap();
    assert_eq!(procs, real, "lxd_procs_total vs {}", pids_file.display());

    // Memory: MemTotal - MemFree is the usage the daemon read; compare with the file now.
    let usage_file = Path::new("/sys/fs/cgroup/memory")
        .join(format!("lxc.payload.{name}/memory.usage_in_bytes"));
    let usage_file = if usage_file.is_file() {
        usage_file
    } else {
        Path::new("/sys/fs/cgroup").join(format!("lxc.payload.{name}/memory.current"))
    };
    let real_usage: f64 = std::fs::read_to_string(&usage_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let total = value(&second, &format!("lxd_memory_MemTotal_bytes{labels}}}")).unwrap();
    let free = value(&second, &format!("lxd_memory_MemFree_bytes{labels}}}")).unwrap();
    let reported = total - free;
    assert!(
        real_usage > 30.0 * 1024.0 * 1024.0,
        "workload touched 32 MiB, cgroup says {real_usage}"
    );
    assert!(
        (reported - real_usage).abs() <= real_usage * 0.1,
        "memory usage reported {reported}, cgroup file {real_usage}"
    );
    drop(cleanup);
    assert!(
        !Path::new("/sys/fs/cgroup/pids")
            .join(format!("lxc.payload.{name}"))
            .exists(),
        "cgroup removed"
    );
}

/// `sleep`s moved into `cgroup`, killed when the workload drops.
fn sleepers(cgroup: &cgroups_rs::fs::Cgroup, count: usize) -> Vec<std::process::Child> {
    (0..count)
        .map(|_| {
            let child = Command::new("sleep").arg("600").spawn().expect("sleep");
            cgroup
                .add_task_by_tgid(CgroupPid::from(u64::from(child.id())))
                .expect("move the sleep into its cgroup");
            child
        })
        .collect()
}

/// The collectors keep cgroup files open between refreshes (plugin/src/kept_files.rs). A
/// container restarted between two scrapes has a new cgroup at the same path: its files
/// must be read anew, never the removed cgroup's, and the instance must not fail.
#[tokio::test]
async fn a_restarted_containers_new_cgroup_is_read_not_the_old_one() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root to create cgroups"
    );
    let name = format!("e2ekept{:x}", std::process::id());
    let state = state_with_config("[metrics]\ncache_ttl = \"0s\"\n[instances.lxd]\nsocket = \"\"\n[instances.incus]\nsocket = \"\"\n");
    let daemon = Daemon::start_in(state, &[]);
    let labels = format!("{{name=\"{name}\",project=\"default\",type=\"container\"}}");
    let procs = |body: &str| value(body, &format!("lxd_procs_total{labels}"));

    let mut first = CgroupWorkload::default();
    let cgroup = create_lxc_cgroup(&name);
    first.cgroup = Some(cgroup.clone());
    let mut children = sleepers(&cgroup, 1);
    first.child = children.pop();
    for _ in 0..3 {
        assert_eq!(procs(&scrape(&daemon).await), Some(1.0));
    }

    drop(first); // the container stops: its processes end, its cgroup is removed
    let mut second = CgroupWorkload::default();
    let cgroup = create_lxc_cgroup(&name);
    second.cgroup = Some(cgroup.clone());
    let children = sleepers(&cgroup, 2);
    let body = scrape(&daemon).await;
    assert_eq!(procs(&body), Some(2.0), "the new cgroup's pids.current");
    let failed = body
        .lines()
        .filter(|l| l.starts_with("lxd_metrics_collector_failed_instances") && !l.ends_with(" 0"))
        .collect::<Vec<_>>();
    assert!(failed.is_empty(), "no instance failed: {failed:?}");
    assert!(
        value(&body, &format!("lxd_memory_MemTotal_bytes{labels}")).is_some(),
        "memory read from the new cgroup"
    );
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A cgroup made for one test by `mkdir` in a real hierarchy, removed when dropped with
/// the processes moved into it.
struct ScratchCgroup {
    dir: std::path::PathBuf,
    children: Vec<std::process::Child>,
}

impl ScratchCgroup {
    /// Starts a `sleep` in the cgroup; its pid.
    fn add_sleeper(&mut self) -> u32 {
        let child = Command::new("sleep").arg("600").spawn().expect("sleep");
        let pid = child.id();
        self.children.push(child);
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.dir.display()));
        pid
    }

    /// Ends the `sleep` started `index`-th.
    fn end_sleeper(&mut self, index: usize) {
        let child = &mut self.children[index];
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Discovery and the process count read `cgroup.procs` through a reader that keeps cgroup
/// files open. v1 hands a kept pid list back unchanged while it is read more often than
/// once a second, so such a list must not be kept; v2 lists anew on every read. On each
/// hierarchy this host has, a process that joins or ends shows in the next read at once.
#[test]
fn a_kept_readers_pid_lists_follow_processes_at_once_on_v1_and_v2() {
    use lxmetrics_plugin::{FileReader, KeptFiles};
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root to create cgroups"
    );
    let root = Path::new("/sys/fs/cgroup");
    let hierarchies: Vec<std::path::PathBuf> =
        [root.join("pids"), root.join("unified"), root.to_path_buf()]
            .into_iter()
            .filter(|h| {
                h.join("cgroup.procs").is_file()
                    && h.join("tasks").is_file() != h.join("cgroup.controllers").is_file()
            })
            .collect();
    assert!(
        !hierarchies.is_empty(),
        "no v1 pids or v2 hierarchy under {}",
        root.display()
    );
    for hierarchy in hierarchies {
        let dir = hierarchy.join(format!("lxmkept{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let mut cgroup = ScratchCgroup {
            dir,
            children: Vec::new(),
        };
        let kept = std::sync::Arc::new(KeptFiles::default());
        let procs = cgroup.dir.join("cgroup.procs");
        let listed = || -> Vec<u32> {
            let mut files = FileReader::keeping(&kept, root);
            let text = files.read(&procs).expect("cgroup.procs").to_owned();
            let mut pids: Vec<u32> = text.lines().map(|l| l.parse().expect("a pid")).collect();
            pids.sort_unstable();
            pids
        };
        let first = cgroup.add_sleeper();
        assert_eq!(listed(), [first], "{}", hierarchy.display());
        let second = cgroup.add_sleeper();
        let mut both = vec![first, second];
        both.sort_unstable();
        assert_eq!(
            listed(),
            both,
            "a process that joined, in {}",
            hierarchy.display()
        );
        cgroup.end_sleeper(0);
        assert_eq!(
            listed(),
            [second],
            "a process that ended, in {}",
            hierarchy.display()
        );
    }
}
