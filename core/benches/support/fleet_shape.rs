//! The series shape both encoding benchmarks measure (`core/benches/exposition.rs`,
//! `server/benches/remote_write.rs`), so their figures compare: 60 series per instance
//! like the built-in collectors make, a cpu family with `cpu`/`mode` labels (2 cpus x 2
//! modes), 8 network families with a `device` label (2 devices), 40 plain gauges.

use lxmetrics_plugin::{Family, InstanceIndex, MetricDesc, MetricKind, Namespace};

/// Series per instance.
pub const SERIES_PER_INSTANCE: usize = 60;

/// The families for these instances.
pub fn families(instances: impl Iterator<Item = InstanceIndex>) -> Vec<Family> {
    let desc = |name: String, help: &'static str, kind| MetricDesc {
        name: name.into(),
        help: help.into(),
        kind,
        namespace: Namespace::Prefixed,
    };
    let mut cpu = Family::new(
        MetricDesc::counter("cpu_seconds_total", "CPU"),
        &["cpu", "mode"],
    );
    let mut net: Vec<Family> = (0..8)
        .map(|i| {
            let name = format!("network_counter_{i}_total");
            Family::new(desc(name, "net", MetricKind::Counter), &["device"])
        })
        .collect();
    let mut plain: Vec<Family> = (0..SERIES_PER_INSTANCE - 4 - 16)
        .map(|i| {
            let name = format!("memory_key_{i}_bytes");
            Family::new(desc(name, "mem", MetricKind::Gauge), &[])
        })
        .collect();
    for i in instances {
        for cpu_n in ["0", "1"] {
            for mode in ["user", "system"] {
                cpu.push(i, [cpu_n, mode], 123_456.789);
            }
        }
        for f in &mut net {
            f.push(i, ["eth0"], 98_765_432.0);
            f.push(i, ["lo"], 1_234.0);
        }
        for f in &mut plain {
            f.push(i, (), 4_294_967_296.0);
        }
    }
    std::iter::once(cpu).chain(net).chain(plain).collect()
}
