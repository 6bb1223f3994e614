//! `cpu`: CPU time per mode (`lxd_cpu_seconds_total{cpu,mode}`) and effective CPUs
//! (`lxd_cpu_effective_total`).
//!
//! v1 gives per-CPU user and system time in `cpuacct.usage_all` (falling back to
//! `cpuacct.stat`, in clock ticks, without a per-CPU split); v2 gives totals in
//! `cpu.stat`. Without a per-CPU split the totals are reported as `cpu="0"`, as LXD does.
//!
//! Saturation, from the `cpu` controller: the CFS quota in cores (`lxd_cpu_limit_cores`,
//! v1 `cpu.cfs_quota_us / cpu.cfs_period_us`, v2 `cpu.max`; absent when unlimited) and
//! throttling (`lxd_cpu_periods_total`, `lxd_cpu_throttled_periods_total`,
//! `lxd_cpu_throttled_seconds_total` from `cpu.stat`: `throttled_time` ns on v1,
//! `throttled_usec` on v2). A file the host does not have leaves its series out.

use lxmetrics_plugin::{
    optional, BuildContext, BuildError, Collection, Controller, Family, Hierarchy, Instance,
    InstanceIndex, InstanceReader, MetricDesc, ParseError, PerInstanceCollector, ReadContext,
    ReadError,
};

use crate::cgroupfs as parse;
use crate::hostfs::HostFigures;

lxmetrics_plugin::register_collector!(
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
const LIMIT: MetricDesc = MetricDesc::gauge(
    "cpu_limit_cores",
    "The CPU quota of the instance in cores (absent when unlimited).",
);
const PERIODS: MetricDesc = MetricDesc::counter(
    "cpu_periods_total",
    "The number of CPU bandwidth enforcement periods that elapsed.",
);
const THROTTLED_PERIODS: MetricDesc = MetricDesc::counter(
    "cpu_throttled_periods_total",
    "The number of enforcement periods in which the instance was throttled.",
);
const THROTTLED_SECONDS: MetricDesc = MetricDesc::counter(
    "cpu_throttled_seconds_total",
    "The total time the instance was throttled, in seconds.",
);

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
    /// The quota in cores; `None` when unlimited or unknown.
    limit_cores: Option<f64>,
    throttling: Option<Throttling>,
}

/// CFS bandwidth statistics of one instance.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Throttling {
    periods: u64,
    throttled_periods: u64,
    throttled_seconds: f64,
}

/// The per-instance reader.
pub(crate) struct CpuReader;

impl InstanceReader for CpuReader {
    type Values = CpuValues;
    type State = HostFigures;

    fn read(
        &self,
        ctx: &mut ReadContext<'_>,
        host: &mut HostFigures,
        instance: &Instance,
    ) -> Result<CpuValues, ReadError> {
        let per_cpu = match ctx.layout.hierarchy(Controller::Cpuacct) {
            Some(Hierarchy::V1(root)) => {
                let dir = root.join(&instance.cgroup);
                let usage_all = ctx
                    .files
                    .parse(&dir.join("cpuacct.usage_all"), parse::cpuacct_usage_all);
                match optional(usage_all)? {
                    Some(usage) => usage
                        .iter()
                        .map(|u| (u.cpu, u.user_ns as f64 / 1e9, u.system_ns as f64 / 1e9))
                        .collect(),
                    None => {
                        let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
                        let (user, system) = ctx.files.parse(&dir.join("cpuacct.stat"), |t| {
                            user_system(t, "user", "system")
                        })?;
                        vec![(0, user as f64 / ticks, system as f64 / ticks)]
                    }
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
        let effective = effective_cpus(ctx, host, instance)?;
        let (limit_cores, throttling) = bandwidth(ctx, instance)?;
        Ok(CpuValues {
            per_cpu,
            effective,
            limit_cores,
            throttling,
        })
    }

    fn emit(&self, values: Vec<(InstanceIndex, CpuValues)>, _: Self::State, out: &mut Collection) {
        let mut seconds = Family::new(SECONDS, &["cpu", "mode"]);
        let mut effective = Family::new(EFFECTIVE, &[]);
        let mut limit = Family::new(LIMIT, &[]);
        let mut periods = Family::new(PERIODS, &[]);
        let mut throttled_periods = Family::new(THROTTLED_PERIODS, &[]);
        let mut throttled_seconds = Family::new(THROTTLED_SECONDS, &[]);
        let mut cpu_label = itoa::Buffer::new();
        for (index, v) in values {
            for (cpu, user, system) in v.per_cpu {
                let cpu = cpu_label.format(cpu);
                seconds.push(index, [cpu, "user"], user);
                seconds.push(index, [cpu, "system"], system);
            }
            effective.push(index, (), v.effective as f64);
            if let Some(cores) = v.limit_cores {
                limit.push(index, (), cores);
            }
            if let Some(t) = v.throttling {
                periods.push(index, (), t.periods as f64);
                throttled_periods.push(index, (), t.throttled_periods as f64);
                throttled_seconds.push(index, (), t.throttled_seconds);
            }
        }
        out.push(seconds);
        out.push(effective);
        out.push(limit);
        out.push(periods);
        out.push(throttled_periods);
        out.push(throttled_seconds);
    }
}

fn user_system(text: &str, user_key: &str, system_key: &str) -> Result<(u64, u64), ParseError> {
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
        _ => Err(ParseError::new(
            0,
            format!("missing {user_key} or {system_key}"),
        )),
    }
}

/// The quota in cores and the throttling statistics from the `cpu` controller; each
/// `None` when the host has no such file (a malformed one is an error).
fn bandwidth(
    ctx: &mut ReadContext<'_>,
    instance: &Instance,
) -> Result<(Option<f64>, Option<Throttling>), ReadError> {
    match ctx.layout.hierarchy(Controller::Cpu) {
        Some(Hierarchy::V1(root)) => {
            let dir = root.join(&instance.cgroup);
            let quota = optional(ctx.files.parse(&dir.join("cpu.cfs_quota_us"), signed))?;
            // The period only matters under a quota (-1 is none): not read otherwise.
            let period = match quota {
                Some(q) if q > 0 => optional(
                    ctx.files
                        .parse(&dir.join("cpu.cfs_period_us"), parse::single_value),
                )?,
                _ => None,
            };
            let limit = match (quota, period) {
                (Some(q), Some(p)) if q > 0 && p > 0 => Some(q as f64 / p as f64),
                _ => None,
            };
            let stat = optional(ctx.files.parse(&dir.join("cpu.stat"), |t| {
                throttling(t, "throttled_time", 1e9)
            }))?
            .flatten();
            Ok((limit, stat))
        }
        Some(Hierarchy::V2(root)) => {
            let dir = root.join(&instance.cgroup);
            let limit = optional(ctx.files.parse(&dir.join("cpu.max"), parse::cpu_max))?.flatten();
            let stat = optional(ctx.files.parse(&dir.join("cpu.stat"), |t| {
                throttling(t, "throttled_usec", 1e6)
            }))?
            .flatten();
            Ok((limit, stat))
        }
        None => Ok((None, None)),
    }
}

/// A file holding one signed integer (`cpu.cfs_quota_us` is -1 when unlimited).
fn signed(text: &str) -> Result<i64, ParseError> {
    text.trim()
        .parse()
        .map_err(|_| ParseError::new(1, format!("not an integer: {:?}", text.trim())))
}

/// `nr_periods`, `nr_throttled` and the throttled time (`time_key`, in units of
/// 1/`per_second`) from a `cpu.stat`; `None` when the kernel does not count them (v2
/// without the cpu controller enabled).
fn throttling(
    text: &str,
    time_key: &str,
    per_second: f64,
) -> Result<Option<Throttling>, ParseError> {
    let (mut periods, mut throttled, mut time) = (None, None, None);
    parse::flat_keyed(text, |k, v| match k {
        "nr_periods" => periods = Some(v),
        "nr_throttled" => throttled = Some(v),
        k if k == time_key => time = Some(v),
        _ => {}
    })?;
    Ok(match (periods, throttled, time) {
        (Some(periods), Some(throttled_periods), Some(time)) => Some(Throttling {
            periods,
            throttled_periods,
            throttled_seconds: time as f64 / per_second,
        }),
        _ => None,
    })
}

/// Effective CPUs from cpuset; when the cgroup has no cpuset files (v2 without the
/// controller enabled), every online CPU is effective.
fn effective_cpus(
    ctx: &mut ReadContext<'_>,
    host: &mut HostFigures,
    instance: &Instance,
) -> Result<u64, ReadError> {
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
        if let Some(cpus) = optional(ctx.files.parse(&path, parse::cpu_list_len))? {
            return Ok(cpus);
        }
    }
    host.online_cpus(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_and_throttling_parse_on_v1_and_v2() {
        assert_eq!(parse::cpu_max("max 100000\n").unwrap(), None);
        assert_eq!(parse::cpu_max("20000 100000\n").unwrap(), Some(0.2));
        assert!(parse::cpu_max("fast\n").is_err());
        assert_eq!(signed("-1\n").unwrap(), -1);
        let v1 = "nr_periods 100\nnr_throttled 30\nthrottled_time 1500000000\n";
        assert_eq!(
            throttling(v1, "throttled_time", 1e9).unwrap(),
            Some(Throttling {
                periods: 100,
                throttled_periods: 30,
                throttled_seconds: 1.5
            })
        );
        let v2 = "usage_usec 1\nnr_periods 7\nnr_throttled 2\nthrottled_usec 250000\n";
        assert_eq!(
            throttling(v2, "throttled_usec", 1e6)
                .unwrap()
                .unwrap()
                .throttled_seconds,
            0.25
        );
        // v2 without the cpu controller: only usage, no throttling series.
        assert_eq!(
            throttling("usage_usec 5\n", "throttled_usec", 1e6).unwrap(),
            None
        );
    }
}
