//! The bodies of the fuzz targets, shared by `fuzz/` (cargo fuzz, libFuzzer) and by
//! `tests/tests/fuzz_regressions.rs`, which replays every seed and every saved crash
//! under `cargo test`, so a crash found once stays fixed.
//!
//! Each body feeds arbitrary bytes to one parser of untrusted input and checks the
//! invariants that are cheap to state; a panic anywhere is a finding.

use lxmetrics_core::exposition::negotiate;
use lxmetrics_plugins::cgroupfs as parse;
use lxmetrics_plugins::{hostfs, prom_text};

/// Every target name; `fuzz/fuzz_targets/<name>.rs` exists for each.
pub const TARGETS: &[&str] = &[
    "cgroup_keyed",
    "cpuacct",
    "io_stat",
    "blkio",
    "cpu_list",
    "net_dev",
    "mountinfo",
    "uevent",
    "accept",
    "config",
    "certificate",
    "prom_text",
];

/// Runs target `name` on `data`. Unknown names panic (a typo in a target file).
pub fn run(name: &str, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    match name {
        // cpu.stat, memory.stat, memory.events, memory.oom_control, io.pressure-like files,
        // and the single-value files (pids.current, memory.max, usage_in_bytes).
        "cgroup_keyed" => {
            let mut keys = 0usize;
            let _ = parse::flat_keyed(text, |_, _| keys += 1);
            assert!(keys <= text.lines().count());
            let _ = parse::flat_keyed_get(text, "user_usec");
            let _ = parse::single_value(text);
            let _ = parse::limit_value(text);
            let _ = parse::parse_u64(text, 1);
            let _ = parse::pressure_totals(text);
            let _ = parse::cpu_max(text);
        }
        "cpuacct" => {
            let _ = parse::cpuacct_usage_all(text);
        }
        "io_stat" => {
            let _ = parse::io_stat(text);
        }
        "blkio" => {
            let _ = parse::blkio_throttle(text);
        }
        "cpu_list" => {
            if let Ok(n) = parse::cpu_list_len(text) {
                // A list cannot name more CPUs than the kernel allows.
                assert!(n <= 1 << 22, "{n} CPUs from {text:?}");
            }
            let _ = parse::pid_list(text);
        }
        "net_dev" => {
            if let Ok(interfaces) = hostfs::net_dev(text) {
                assert!(interfaces.len() <= text.lines().count());
            }
        }
        "mountinfo" => {
            let _ = hostfs::mountinfo_root(text);
        }
        "uevent" => {
            let _ = hostfs::uevent_devname(text);
            let _ = hostfs::meminfo_total(text);
            let _ = hostfs::boot_time(text);
            let _ = hostfs::process_start_ticks(text);
        }
        "accept" => {
            let _ = negotiate::format_from_accept(Some(text));
            let _ = negotiate::encoding_from_accept_encoding(Some(text));
        }
        "config" => config(data),
        "certificate" => {
            if let Ok(parsed) = lxmetrics_server::trust::certificate::parse(data) {
                assert_eq!(parsed.fingerprint.len(), 64);
            }
        }
        "prom_text" => {
            if let Ok(families) = prom_text::parse(text) {
                for family in &families {
                    assert!(lxmetrics_plugin::is_valid_metric_name(&family.name));
                    for sample in &family.samples {
                        for (label, _) in &sample.labels {
                            assert!(lxmetrics_plugin::is_valid_label_name(label));
                        }
                    }
                }
                let mut relayed = lxmetrics_plugins::relay::RelayedFamilies::new("lxd", "fuzz");
                let _ = relayed.add(families, Some(0));
            }
        }
        other => panic!("unknown fuzz target {other}"),
    }
}

/// The config loader reads a file: write the input to a per-process scratch file.
fn config(data: &[u8]) {
    use lxmetrics_core::config::{load, ConfigFile};
    let dir = std::env::temp_dir();
    let path = dir.join(format!("lxmetrics-fuzz-config-{}.toml", std::process::id()));
    if std::fs::write(&path, data).is_ok() {
        let file = ConfigFile::Required(path.clone());
        if let Err(e) = load::<lxmetrics_server::config::ServerSections>(&file, &[]) {
            // Errors are one line, as start-up prints them.
            assert!(!e.to_string().contains('\n'), "multi-line error: {e}");
        }
    }
}
