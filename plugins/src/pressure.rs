//! `pressure`: how long an instance's tasks waited for CPU, memory and I/O, from the
//! cgroup's pressure-stall (PSI) files in the v2 hierarchy (`cpu.pressure`,
//! `memory.pressure`, `io.pressure`; `unified/` on hybrid hosts). Names follow
//! node_exporter's `node_pressure_*`:
//!
//! | family | line |
//! |---|---|
//! | `lxd_pressure_cpu_waiting_seconds_total` | `cpu.pressure` `some total=` |
//! | `lxd_pressure_memory_waiting_seconds_total` | `memory.pressure` `some total=` |
//! | `lxd_pressure_memory_stalled_seconds_total` | `memory.pressure` `full total=` |
//! | `lxd_pressure_io_waiting_seconds_total` | `io.pressure` `some total=` |
//! | `lxd_pressure_io_stalled_seconds_total` | `io.pressure` `full total=` |
//!
//! A host without PSI (kernel without `CONFIG_PSI`, or `psi=0`, or v1 only) has no such
//! files: the series are absent, never zero.

use lxmetrics_plugin::{
    optional, BuildContext, BuildError, Collection, Family, Instance, InstanceIndex,
    InstanceReader, MetricDesc, PerInstanceCollector, ReadContext, ReadError,
};

use crate::cgroupfs as parse;

lxmetrics_plugin::register_collector!(
    "pressure",
    "Time instances waited for CPU, memory and I/O (cgroup v2 pressure stall information)",
    build
);

/// The families in output order, each with its file and line.
const FAMILIES: [(MetricDesc, &str, Line); 5] = [
    (
        MetricDesc::counter(
            "pressure_cpu_waiting_seconds_total",
            "Total time in seconds that some tasks of the instance waited for CPU.",
        ),
        "cpu.pressure",
        Line::Some,
    ),
    (
        MetricDesc::counter(
            "pressure_memory_waiting_seconds_total",
            "Total time in seconds that some tasks of the instance waited for memory.",
        ),
        "memory.pressure",
        Line::Some,
    ),
    (
        MetricDesc::counter(
            "pressure_memory_stalled_seconds_total",
            "Total time in seconds that all tasks of the instance stalled on memory.",
        ),
        "memory.pressure",
        Line::Full,
    ),
    (
        MetricDesc::counter(
            "pressure_io_waiting_seconds_total",
            "Total time in seconds that some tasks of the instance waited for I/O.",
        ),
        "io.pressure",
        Line::Some,
    ),
    (
        MetricDesc::counter(
            "pressure_io_stalled_seconds_total",
            "Total time in seconds that all tasks of the instance stalled on I/O.",
        ),
        "io.pressure",
        Line::Full,
    ),
];

/// Which line of a pressure file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    /// Some tasks were stalled.
    Some,
    /// All non-idle tasks were stalled at once.
    Full,
}

/// The collector: the reader below, run over every instance.
pub type PressureCollector = PerInstanceCollector<PressureReader>;

fn build(_: &BuildContext<'_>) -> Result<PressureCollector, BuildError> {
    Ok(PerInstanceCollector::new(PressureReader))
}

/// The per-instance reader.
pub(crate) struct PressureReader;

impl InstanceReader for PressureReader {
    /// Seconds per family of [`FAMILIES`], `None` where the host has no value.
    type Values = [Option<f64>; 5];
    type State = ();

    fn read(
        &self,
        ctx: &mut ReadContext<'_>,
        _: &mut (),
        instance: &Instance,
    ) -> Result<Self::Values, ReadError> {
        let mut values = [None; 5];
        let Some(unified) = ctx.layout.unified() else {
            return Ok(values);
        };
        let dir = unified.join(&instance.cgroup);
        for file in ["cpu.pressure", "memory.pressure", "io.pressure"] {
            let Some(totals) = optional(ctx.files.parse(&dir.join(file), parse::pressure_totals))?
            else {
                continue;
            };
            for (slot, (_, f, line)) in values.iter_mut().zip(&FAMILIES) {
                if *f == file {
                    *slot = match line {
                        Line::Some => totals.0,
                        Line::Full => totals.1,
                    }
                    .map(|us| us as f64 / 1e6);
                }
            }
        }
        Ok(values)
    }

    fn emit(
        &self,
        values: Vec<(InstanceIndex, Self::Values)>,
        _: Self::State,
        out: &mut Collection,
    ) {
        let mut families: Vec<Family> = FAMILIES
            .iter()
            .map(|(desc, _, _)| Family::new(desc.clone(), &[]))
            .collect();
        for (index, seconds) in values {
            for (family, value) in families.iter_mut().zip(seconds) {
                if let Some(value) = value {
                    family.push(index, (), value);
                }
            }
        }
        for family in families {
            out.push(family);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn some_and_full_totals_are_read() {
        let text = "some avg10=1.93 avg60=3.86 avg300=5.08 total=398835484\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=17\n";
        assert_eq!(
            parse::pressure_totals(text).unwrap(),
            (Some(398_835_484), Some(17))
        );
        // Older kernels have no full line for cpu.
        assert_eq!(
            parse::pressure_totals("some avg10=0 total=5\n").unwrap(),
            (Some(5), None)
        );
        assert!(parse::pressure_totals("some avg10=0 total=x\n").is_err());
        assert!(parse::pressure_totals("full avg10=0\n").is_err());
    }
}
