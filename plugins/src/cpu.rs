//! `cpu`: CPU time per mode (`lxd_cpu_seconds_total{cpu,mode}`) and effective CPUs
//! (`lxd_cpu_effective_total`).
//!
//! v1 gives per-CPU user and system time in `cpuacct.usage_all` (falling back to
//! `cpuacct.stat`, in clock ticks, without a per-CPU split); v2 gives totals in
//! `cpu.stat`. Without a per-CPU split the totals are reported as `cpu="0"`, as LXD does.

use lxmetrics_core::collector::Collection;
use lxmetrics_core::instance::{Instance, InstanceIndex};
use lxmetrics_core::metric::{Family, MetricDesc};
use lxmetrics_core::registry::{BuildContext, BuildError};

use crate::cgroupfs::{parse, Controller, Hierarchy, ReadError};
use crate::per_instance::{InstanceReader, PerInstanceCollector, ReadContext};

lxmetrics_core::register_collector!(
    "cpu",
    "CPU time per mode and effective CPUs (cgroup cpu/cpuacct, cpuset)",
    build
);

const SECONDS: MetricDesc = MetricDesc::counter(
    "cpu_seconds_total",
    "The total number of CPU time used in seconds.",
);
const EFFECTIVE: MetricDesc =
    MetricDesc::gauge("cpu_effective_total", "The total number of effective CPUs.");

/// The collector: the reader below, run over every instance.
pub type CpuCollector = PerInstanceCollector<CpuReader>;

fn build(_: &BuildContext<'_>) -> Result<CpuCollector, BuildError> {
    Ok(PerInstanceCollector::new(CpuReader))
}

/// CPU values of one instance.
pub struct CpuValues {
    /// (cpu, user seconds, system seconds).
    per_cpu: Vec<(u32, f64, f64)>,
    effective: u64,
}

/// The per-instance reader.
pub struct CpuReader;

impl InstanceReader for CpuReader {
    type Values = CpuValues;

    fn read(&self, ctx: &mut ReadContext<'_>, instance: &Instance) -> Result<CpuValues, ReadError> {
        let per_cpu = match ctx.layout.hierarchy(Controller::Cpuacct) {
            Some(Hierarchy::V1(root)) => {
                let dir = root.join(&instance.cgroup);
                match ctx
                    .files
                    .parse(&dir.join("cpuacct.usage_all"), parse::cpuacct_usage_all)
                {
                    Ok(usage) => usage
                        .iter()
                        .map(|u| (u.cpu, u.user_ns as f64 / 1e9, u.system_ns as f64 / 1e9))
                        .collect(),
                    Err(e) if e.is_not_found() => {
                        let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
                        let (user, system) = ctx.files.parse(&dir.join("cpuacct.stat"), |t| {
                            user_system(t, "user", "system")
                        })?;
                        vec![(0, user as f64 / ticks, system as f64 / ticks)]
                    }
                    Err(e) => return Err(e),
                }
            }
            Some(Hierarchy::V2(root)) => {
                let path = root.join(&instance.cgroup).join("cpu.stat");
                let (user, system) = ctx
                    .files
                    .parse(&path, |t| user_system(t, "user_usec", "system_usec"))?;
                vec![(0, user as f64 / 1e6, system as f64 / 1e6)]
            }
            None => Vec::new(),
        };
        let effective = effective_cpus(ctx, instance)?;
        Ok(CpuValues { per_cpu, effective })
    }

    fn emit(&self, values: Vec<(InstanceIndex, CpuValues)>, out: &mut Collection) {
        let mut seconds = Family::new(SECONDS, &["cpu", "mode"]);
        let mut effective = Family::new(EFFECTIVE, &[]);
        let mut cpu_label = itoa::Buffer::new();
        for (index, v) in values {
            for (cpu, user, system) in v.per_cpu {
                let cpu = cpu_label.format(cpu);
                seconds.push(index, [cpu, "user"], user);
                seconds.push(index, [cpu, "system"], system);
            }
            effective.push(index, [""; 0], v.effective as f64);
        }
        out.push(seconds);
        out.push(effective);
    }
}

fn user_system(
    text: &str,
    user_key: &str,
    system_key: &str,
) -> Result<(u64, u64), parse::ParseError> {
    let (mut user, mut system) = (None, None);
    parse::flat_keyed(text, |k, v| {
        if k == user_key {
            user = Some(v);
        } else if k == system_key {
            system = Some(v);
        }
    })?;
    match (user, system) {
        (Some(u), Some(s)) => Ok((u, s)),
        _ => Err(parse::ParseError {
            line: 0,
            message: format!("missing {user_key} or {system_key}"),
        }),
    }
}

/// Effective CPUs from cpuset; when the cgroup has no cpuset files (v2 without the
/// controller enabled), every online CPU is effective.
fn effective_cpus(ctx: &mut ReadContext<'_>, instance: &Instance) -> Result<u64, ReadError> {
    let path = match ctx.layout.hierarchy(Controller::Cpuset) {
        Some(Hierarchy::V1(root)) => {
            Some(root.join(&instance.cgroup).join("cpuset.effective_cpus"))
        }
        Some(Hierarchy::V2(root)) => {
            Some(root.join(&instance.cgroup).join("cpuset.cpus.effective"))
        }
        None => None,
    };
    if let Some(path) = path {
        match ctx.files.parse(&path, parse::cpu_list_len) {
            Err(e) if e.is_not_found() => {}
            other => return other,
        }
    }
    ctx.online_cpus()
}
