//! `processes`: `lxd_procs_total` from `pids.current`, or by counting `cgroup.procs` in
//! the instance's cgroup and its descendants when the pids controller is absent; and
//! `lxd_boot_time_seconds`, when the instance started (its init process's `starttime`
//! in `/proc/<pid>/stat` after the host's `btime`), as Incus' `incus_boot_time_seconds`.

use std::path::Path;

use lxmetrics_plugin::{
    optional, BuildContext, BuildError, Collection, Controller, Family, FileReader, Instance,
    InstanceIndex, InstanceReader, MetricDesc, PerInstanceCollector, ReadContext, ReadError,
};

use crate::cgroupfs as parse;
use crate::hostfs::HostFigures;
use crate::pid_facts::PidFacts;

lxmetrics_plugin::register_collector!(
    "processes",
    "Number of processes per instance (cgroup pids)",
    build
);

const PROCS: MetricDesc = MetricDesc::gauge("procs_total", "The number of running processes.");
const BOOT_TIME: MetricDesc = MetricDesc::gauge(
    "boot_time_seconds",
    "When the instance started, in seconds since the epoch.",
);

/// Cgroup depth the fallback count descends to.
const MAX_DEPTH: usize = 16;

/// The collector: the reader below, run over every instance.
pub type ProcessesCollector = PerInstanceCollector<ProcessesReader>;

fn build(_: &BuildContext<'_>) -> Result<ProcessesCollector, BuildError> {
    Ok(PerInstanceCollector::new(ProcessesReader::default()))
}

/// The per-instance reader.
#[derive(Default)]
pub(crate) struct ProcessesReader {
    /// When each instance's init process started (clock ticks after boot), kept between
    /// refreshes.
    started: PidFacts<u64>,
}

impl InstanceReader for ProcessesReader {
    /// The process count, and the boot time when it could be read.
    type Values = (u64, Option<f64>);
    type State = HostFigures;

    fn read(
        &self,
        ctx: &mut ReadContext<'_>,
        host: &mut HostFigures,
        instance: &Instance,
    ) -> Result<Self::Values, ReadError> {
        let count = procs(ctx, instance)?;
        Ok((count, boot_time(ctx, host, instance, &self.started)?))
    }

    fn emit(
        &self,
        values: Vec<(InstanceIndex, Self::Values)>,
        _: Self::State,
        out: &mut Collection,
    ) {
        self.started.forget_old();
        let mut procs = Family::new(PROCS, &[]);
        let mut boot = Family::new(BOOT_TIME, &[]);
        for (index, (count, booted)) in values {
            procs.push(index, (), count as f64);
            if let Some(booted) = booted {
                boot.push(index, (), booted);
            }
        }
        out.push(procs);
        out.push(boot);
    }
}

fn procs(ctx: &mut ReadContext<'_>, instance: &Instance) -> Result<u64, ReadError> {
    if let Some(h) = ctx.layout.hierarchy(Controller::Pids) {
        let current = ctx.files.parse(
            &h.dir(&instance.cgroup).join("pids.current"),
            parse::single_value,
        );
        if let Some(count) = optional(current)? {
            return Ok(count);
        }
    }
    let dir = ctx.layout.discovery_root().join(&instance.cgroup);
    count_procs(&dir, &mut ctx.files, MAX_DEPTH)
}

/// When the instance's init process started: absent when the host or the process does
/// not say (no `btime`, the process gone, a fixture without `/proc/<pid>/stat`).
fn boot_time(
    ctx: &mut ReadContext<'_>,
    host: &mut HostFigures,
    instance: &Instance,
    started: &PidFacts<u64>,
) -> Result<Option<f64>, ReadError> {
    let Some(pid) = instance.pid else {
        return Ok(None);
    };
    let Some(booted) = optional(host.boot_time(ctx))? else {
        return Ok(None);
    };
    let stat = ctx.host.proc_root.join(pid.to_string()).join("stat");
    let ticks = started.get(pid, &instance.cgroup, || {
        optional(ctx.files.parse(&stat, crate::hostfs::process_start_ticks))?.ok_or(None)
    });
    let ticks = match ticks {
        Ok(ticks) => ticks,
        Err(None) => return Ok(None),
        Err(Some(e)) => return Err(e),
    };
    let per_second = rustix::param::clock_ticks_per_second().max(1) as f64;
    Ok(Some(booted as f64 + ticks as f64 / per_second))
}

fn count_procs(dir: &Path, files: &mut FileReader, depth: usize) -> Result<u64, ReadError> {
    let mut count = files
        .parse(&dir.join("cgroup.procs"), parse::pid_list)?
        .len() as u64;
    if depth == 0 {
        return Ok(count);
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                match count_procs(&entry.path(), files, depth - 1) {
                    Ok(n) => count += n,
                    Err(e) if e.is_not_found() => {} // a child cgroup removed meanwhile
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(count)
}
