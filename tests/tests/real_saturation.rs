//! Saturation on a real v1 cgroup of this machine: a busy process under a CPU quota of 0.2
//! cores shows `lxd_cpu_limit_cores 0.2`, throttled periods and seconds that grow, and a
//! boot time within a second of when the process started. Everything is removed again.
//!
//! Needs root and a writable cgroup hierarchy.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cgroups_rs::CgroupPid;
use lxmetrics_tests::real_cgroup::{create_lxc_cgroup, CgroupWorkload};
use lxmetrics_tests::{sample_value, state_with_config, Daemon};

#[tokio::test]
async fn a_cpu_quota_and_its_throttling_are_reported() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root to create cgroups"
    );
    let cpu_root = Path::new("/sys/fs/cgroup/cpu");
    assert!(
        cpu_root.join("cpu.cfs_quota_us").is_file() || cpu_root.is_dir(),
        "this test needs the v1 cpu controller at {} (this machine kind is cgroup v1 hybrid)",
        cpu_root.display()
    );
    let name = format!(
        "sat{:x}",
        std::process::id()
            ^ SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
    );
    let mut cleanup = CgroupWorkload {
        child: None,
        cgroup: Some(create_lxc_cgroup(&name)),
    };
    let dir = cpu_root.join(format!("lxc.payload.{name}"));
    std::fs::write(dir.join("cpu.cfs_period_us"), "100000").unwrap();
    std::fs::write(dir.join("cpu.cfs_quota_us"), "20000").unwrap();

    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let child = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .expect("start a busy loop");
    let pid = child.id();
    cleanup.child = Some(child);
    cleanup
        .cgroup
        .as_ref()
        .unwrap()
        .add_task_by_tgid(CgroupPid::from(u64::from(pid)))
        .expect("move the busy loop into the cgroup");

    let state = state_with_config("[metrics]\ncache_ttl = \"0s\"\n");
    let daemon = Daemon::start_in(state, &[]);
    let series = |family: &str| {
        format!("{family}{{name=\"{name}\",project=\"default\",type=\"container\"}}")
    };
    let (status, first) = daemon.get("/1.0/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        sample_value(&first, &series("lxd_cpu_limit_cores")),
        Some(0.2),
        "{first}"
    );
    let boot = sample_value(&first, &series("lxd_boot_time_seconds")).expect("boot time");
    assert!(
        (boot - started).abs() <= 1.0,
        "boot time {boot} vs the process started at {started}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, second) = daemon.get("/1.0/metrics").await;
    for family in [
        "lxd_cpu_periods_total",
        "lxd_cpu_throttled_periods_total",
        "lxd_cpu_throttled_seconds_total",
    ] {
        let (a, b) = (
            sample_value(&first, &series(family)).unwrap_or_else(|| panic!("{family}: {first}")),
            sample_value(&second, &series(family)).unwrap(),
        );
        assert!(b > a, "{family} did not grow: {a} then {b}");
    }
    // At 0.2 cores, a busy loop is throttled in most periods.
    let throttled = sample_value(&second, &series("lxd_cpu_throttled_periods_total")).unwrap();
    let periods = sample_value(&second, &series("lxd_cpu_periods_total")).unwrap();
    assert!(
        throttled / periods > 0.5,
        "{throttled} of {periods} periods"
    );
    // On v1 the memory events are memory.failcnt, as event="max".
    assert!(sample_value(&second, &format!("lxd_memory_events_total{{name=\"{name}\",project=\"default\",type=\"container\",event=\"max\"}}")).is_some(), "{second}");
}
