//! `processes`: `lxd_procs_total` from `pids.current`, or by counting `cgroup.procs` in
//! the instance's cgroup and its descendants when the pids controller is absent.

use std::path::Path;

use lxmetrics_core::collector::Collection;
use lxmetrics_core::instance::{Instance, InstanceIndex};
use lxmetrics_core::metric::{Family, MetricDesc};
use lxmetrics_core::registry::{BuildContext, BuildError};

use crate::cgroupfs::{parse, Controller, FileReader, ReadError};
use crate::per_instance::{InstanceReader, PerInstanceCollector, ReadContext};

lxmetrics_core::register_collector!(
    "processes",
    "Number of processes per instance (cgroup pids)",
    build
);

const PROCS: MetricDesc = MetricDesc::gauge("procs_total", "The number of running processes.");

/// Cgroup depth the fallback count descends to.
const MAX_DEPTH: usize = 16;

/// The collector: the reader below, run over every instance.
pub type ProcessesCollector = PerInstanceCollector<ProcessesReader>;

fn build(_: &BuildContext<'_>) -> Result<ProcessesCollector, BuildError> {
    Ok(PerInstanceCollector::new(ProcessesReader))
}

/// The per-instance reader.
pub struct ProcessesReader;

impl InstanceReader for ProcessesReader {
    type Values = u64;

    fn read(&self, ctx: &mut ReadContext<'_>, instance: &Instance) -> Result<u64, ReadError> {
        if let Some(h) = ctx.layout.hierarchy(Controller::Pids) {
            match ctx.files.parse(
                &h.dir(&instance.cgroup).join("pids.current"),
                parse::single_value,
            ) {
                Err(e) if e.is_not_found() => {}
                other => return other,
            }
        }
        let dir = ctx.layout.discovery_root().join(&instance.cgroup);
        count_procs(&dir, &mut ctx.files, MAX_DEPTH)
    }

    fn emit(&self, values: Vec<(InstanceIndex, u64)>, out: &mut Collection) {
        let mut procs = Family::new(PROCS, &[]);
        for (index, count) in values {
            procs.push(index, [""; 0], count as f64);
        }
        out.push(procs);
    }
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
