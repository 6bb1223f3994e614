//! Value parity with a real LXD (Debian's lxd 5.0.2), side by side in one run: for the
//! same containers (one busy on CPU, one holding memory and writing to disk, one with an
//! extra disk device), every series LXD serves has a lxmetrics twin with the same
//! labels, and its value agrees: gauges within 5 %, counters as rates over the same
//! interval within 5 %. A small absolute floor per unit keeps figures near zero (an
//! idle container's CPU rate, a few pages of dirty memory) from failing on noise; the
//! floors are in `FLOORS` and printed with every comparison that needed them.
//!
//! Labels are compared as LXD 5.0.2 writes them, except two documented deviations:
//! LXD 5.0.2 has no `type` label on filesystem series (newer LXD has), and its
//! filesystem `device` is the LXD device's `source` (a host path, or empty for the
//! root disk) where lxmetrics reports the mount source from the container's mountinfo.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use lxmetrics_tests::real_lxd::{ensure_lxd, fresh_projects, lxc};
use lxmetrics_tests::state_with_config;
use lxmetrics_tests::Daemon;

const PROJECT: &str = "lxmp";
const CPU: &str = "lxmp-cpu";
const MEM: &str = "lxmp-mem";
const DISK: &str = "lxmp-disk";

/// LXD's metrics cache: a query answered from it holds figures up to this old.
const LXD_CACHE: Duration = Duration::from_secs(8);
/// The interval the counters' rates are taken over.
const INTERVAL: Duration = Duration::from_secs(15);

/// (family name prefix, absolute floor): differences up to the floor always pass.
const FLOORS: [(&str, f64); 6] = [
    ("lxd_cpu_seconds_total", 0.02),       // CPU seconds per second
    ("lxd_memory_", 4.0 * 1048576.0),      // bytes
    ("lxd_network_", 2048.0),              // bytes (or packets) per second
    ("lxd_disk_", 256.0 * 1024.0),         // bytes (or operations) per second
    ("lxd_filesystem_", 64.0 * 1048576.0), // bytes (the host disk is shared and in use)
    ("lxd_procs_total", 1.0),              // processes
];

type Series = BTreeMap<(String, Vec<(String, String)>), f64>;

/// Parses Prometheus text into (name, labels) → value, normalising labels as the module
/// doc says; LXD 5.0.2 repeats some lines, which collapse here.
fn parse(body: &str) -> Series {
    let mut out = Series::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut rest = labels;
        while let Some((key, tail)) = rest.split_once("=\"") {
            let end = tail.find('"').unwrap_or(tail.len());
            pairs.push((
                key.trim_start_matches(',').to_owned(),
                tail[..end].to_owned(),
            ));
            rest = tail.get(end + 1..).unwrap_or("");
        }
        if !pairs.iter().any(|(k, _)| k == "name") {
            continue; // daemon series: not the instance figures compared here
        }
        pairs.retain(|(k, _)| {
            !(name.starts_with("lxd_filesystem_") && (k == "type" || k == "device"))
        });
        pairs.sort();
        if let Ok(value) = value.parse() {
            out.insert((name.to_owned(), pairs), value);
        }
    }
    out
}

fn is_counter(name: &str) -> bool {
    name.ends_with("_total") && name != "lxd_procs_total" && name != "lxd_cpu_effective_total"
}

fn floor(name: &str) -> f64 {
    FLOORS
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map_or(0.0, |(_, f)| *f)
}

/// One reading of both endpoints: LXD's (fresh: its cache had expired) then ours, each
/// with the midpoint of its request.
struct Reading {
    lxd: Series,
    lxd_at: Instant,
    ours: Series,
    ours_at: Instant,
}

fn read_both(daemon: &Daemon) -> Reading {
    let t0 = Instant::now();
    let lxd = lxc(&["query", "/1.0/metrics"]);
    let t1 = Instant::now();
    let ours = daemon.cli(&["query", "/1.0/metrics"]);
    let t2 = Instant::now();
    assert!(ours.status.success());
    Reading {
        lxd: parse(&lxd),
        lxd_at: t0 + (t1 - t0) / 2,
        ours: parse(&String::from_utf8_lossy(&ours.stdout)),
        ours_at: t1 + (t2 - t1) / 2,
    }
}

fn in_container(name: &str, script: &str) {
    // In its own session inside the container, so it outlives `lxc exec`.
    let detached = format!("setsid sh -c '{script}' </dev/null >/dev/null 2>&1 &");
    lxc(&[
        "exec",
        name,
        "--project",
        PROJECT,
        "--",
        "sh",
        "-c",
        &detached,
    ]);
}

#[test]
fn every_lxd_series_has_a_twin_with_the_same_value() {
    ensure_lxd();
    fresh_projects(
        &[(PROJECT, CPU), (PROJECT, MEM), (PROJECT, DISK)],
        &[PROJECT],
    );
    let data = tempfile::tempdir().expect("data dir");
    for name in [CPU, MEM, DISK] {
        lxc(&["init", "busybox", name, "--project", PROJECT]);
        // Without an I/O limit this kernel leaves blkio throttle counters at 0.
        lxc(&[
            "config",
            "device",
            "override",
            name,
            "root",
            "limits.read=500MB",
            "limits.write=500MB",
            "--project",
            PROJECT,
        ]);
    }
    let source = format!("source={}", data.path().display());
    lxc(&[
        "config",
        "device",
        "add",
        DISK,
        "data",
        "disk",
        &source,
        "path=/mnt/data",
        "--project",
        PROJECT,
    ]);
    for name in [CPU, MEM, DISK] {
        lxc(&["start", name, "--project", PROJECT]);
    }
    in_container(CPU, "while :; do :; done");
    // Writes are small and synced (1 MiB a second), so the page cache moves by less than
    // the memory floor between LXD's reading and ours.
    in_container(
        MEM,
        "x=$(head -c 40000000 /dev/zero | tr \"\\0\" a); while :; do dd if=/dev/zero of=/root/fill bs=1M count=1 conv=fsync; sleep 1; done",
    );
    in_container(
        DISK,
        "while :; do dd if=/dev/zero of=/mnt/data/f bs=1M count=1 conv=fsync; sleep 1; done",
    );

    let state = state_with_config("[metrics]\ncache_ttl = \"0s\"\n");
    let daemon = Daemon::start_in(state, &[]);

    // Let the workloads settle and LXD's cache (if anything filled it) expire.
    std::thread::sleep(LXD_CACHE + Duration::from_secs(1));
    let first = read_both(&daemon);
    std::thread::sleep(INTERVAL);
    let second = read_both(&daemon);

    let ours_names: Vec<&String> = second.ours.keys().map(|(n, _)| n).collect();
    let mut compared = 0;
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for ((name, labels), lxd_value) in &second.lxd {
        let project = labels
            .iter()
            .find(|(k, _)| k == "project")
            .map(|(_, v)| v.as_str());
        if project != Some(PROJECT) {
            continue; // an operator's instances are not this test's
        }
        let key = (name.clone(), labels.clone());
        let Some(ours_value) = second.ours.get(&key) else {
            failures.push(format!(
                "no twin for {name}{labels:?} (we serve {} names)",
                ours_names.len()
            ));
            continue;
        };
        let (lxd, ours, what) = if is_counter(name) {
            let (Some(l0), Some(o0)) = (first.lxd.get(&key), first.ours.get(&key)) else {
                continue; // appeared during the interval (a new device)
            };
            let lxd_rate = (lxd_value - l0) / (second.lxd_at - first.lxd_at).as_secs_f64();
            let ours_rate = (ours_value - o0) / (second.ours_at - first.ours_at).as_secs_f64();
            (lxd_rate, ours_rate, "rate")
        } else {
            (*lxd_value, *ours_value, "value")
        };
        compared += 1;
        let difference = (lxd - ours).abs();
        let relative = difference / lxd.abs().max(ours.abs()).max(f64::MIN_POSITIVE);
        let allowed = (0.05 * lxd.abs().max(ours.abs())).max(floor(name));
        let line = format!(
            "{name}{labels:?} {what}: lxd {lxd:.4} lxmetrics {ours:.4} ({:.2} %)",
            relative * 100.0
        );
        if difference > allowed {
            failures.push(line);
        } else if relative > 0.05 {
            report.push(format!("{line} — within the floor {}", floor(name)));
        } else if what == "rate" && lxd != 0.0 {
            report.push(line);
        }
    }
    println!("compared {compared} series of project {PROJECT}");
    for line in &report {
        println!("{line}");
    }

    for name in [CPU, MEM, DISK] {
        lxc(&["delete", "-f", name, "--project", PROJECT]);
    }
    let _ = Command::new("lxc")
        .args(["project", "delete", PROJECT])
        .output();

    assert!(
        compared > 50,
        "only {compared} series compared: LXD served too little"
    );
    let busy = second
        .ours
        .iter()
        .filter(|((n, l), _)| n == "lxd_cpu_seconds_total" && l.iter().any(|(_, v)| v == CPU))
        .count();
    assert!(busy > 0, "the busy container has CPU series");
    assert!(
        failures.is_empty(),
        "{} series disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
