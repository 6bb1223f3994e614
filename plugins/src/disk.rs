//! `disk`: per-device bytes and operations (`lxd_disk_{read,written}_bytes_total`,
//! `lxd_disk_{reads,writes}_completed_total`) from v2 `io.stat` or v1
//! `blkio.throttle.io_service_bytes[_recursive]` and `..._io_serviced[_recursive]`.
//! Device names come from `<sys_root>/dev/block/MAJ:MIN/uevent`, resolved once per
//! refresh; a device without a name is labelled `MAJ:MIN`.

use std::collections::HashMap;

use lxmetrics_plugin::{
    optional, BuildContext, BuildError, Collection, Controller, Family, Hierarchy, Instance,
    InstanceIndex, InstanceReader, MetricDesc, PerInstanceCollector, ReadContext, ReadError,
};

use crate::cgroupfs::{self as parse, DeviceIo, DeviceNumber};
use crate::hostfs;

lxmetrics_plugin::register_collector!(
    "disk",
    "Block I/O bytes and operations per device (cgroup io/blkio)",
    build
);

const READ_BYTES: MetricDesc =
    MetricDesc::counter("disk_read_bytes_total", "The total number of bytes read.");
const WRITTEN_BYTES: MetricDesc = MetricDesc::counter(
    "disk_written_bytes_total",
    "The total number of bytes written.",
);
const READS: MetricDesc = MetricDesc::counter(
    "disk_reads_completed_total",
    "The total number of completed reads.",
);
const WRITES: MetricDesc = MetricDesc::counter(
    "disk_writes_completed_total",
    "The total number of completed writes.",
);

fn build(_: &BuildContext<'_>) -> Result<PerInstanceCollector<DiskReader>, BuildError> {
    Ok(PerInstanceCollector::new(DiskReader))
}

/// The per-instance reader.
pub(crate) struct DiskReader;

/// Device names resolved in this refresh: each `uevent` is read once per refresh, and
/// instances keep only the device number, named when the families are built.
#[derive(Default)]
pub(crate) struct DeviceNames(HashMap<DeviceNumber, String>);

impl DeviceNames {
    /// Reads `device`'s name unless this refresh already has it.
    fn resolve(&mut self, ctx: &mut ReadContext<'_>, device: DeviceNumber) {
        self.0.entry(device).or_insert_with(|| {
            let uevent = ctx.host.sys_root.join(format!("dev/block/{device}/uevent"));
            ctx.files
                .read(&uevent)
                .ok()
                .and_then(hostfs::uevent_devname)
                .map_or_else(|| device.to_string(), str::to_owned)
        });
    }
}

impl InstanceReader for DiskReader {
    type Values = Vec<(DeviceNumber, DeviceIo)>;
    type State = DeviceNames;

    fn read(
        &self,
        ctx: &mut ReadContext<'_>,
        names: &mut DeviceNames,
        instance: &Instance,
    ) -> Result<Self::Values, ReadError> {
        let stats = match ctx.layout.hierarchy(Controller::Blkio) {
            Some(Hierarchy::V2(root)) => ctx
                .files
                .parse(&root.join(&instance.cgroup).join("io.stat"), parse::io_stat)?,
            Some(Hierarchy::V1(root)) => {
                let dir = root.join(&instance.cgroup);
                let bytes = read_throttle(ctx, &dir, "blkio.throttle.io_service_bytes")?;
                let ops = read_throttle(ctx, &dir, "blkio.throttle.io_serviced")?;
                // A device missing from one of the two files is left out, not zeroed.
                bytes
                    .into_iter()
                    .filter_map(|(device, read_bytes, written_bytes)| {
                        let (_, reads, writes) = *ops.iter().find(|(d, _, _)| *d == device)?;
                        Some((
                            device,
                            DeviceIo {
                                read_bytes,
                                written_bytes,
                                reads,
                                writes,
                            },
                        ))
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        for (device, _) in &stats {
            names.resolve(ctx, *device);
        }
        Ok(stats)
    }

    fn emit(
        &self,
        values: Vec<(InstanceIndex, Self::Values)>,
        names: DeviceNames,
        out: &mut Collection,
    ) {
        let mut families = [
            Family::new(READ_BYTES, &["device"]),
            Family::new(WRITTEN_BYTES, &["device"]),
            Family::new(READS, &["device"]),
            Family::new(WRITES, &["device"]),
        ];
        for (index, devices) in values {
            for (device, io) in devices {
                let Some(name) = names.0.get(&device) else {
                    continue; // every device was resolved when it was read
                };
                let name = name.as_str();
                families[0].push(index, [name], io.read_bytes as f64);
                families[1].push(index, [name], io.written_bytes as f64);
                families[2].push(index, [name], io.reads as f64);
                families[3].push(index, [name], io.writes as f64);
            }
        }
        for f in families {
            out.push(f);
        }
    }
}

/// Reads the `_recursive` variant (which includes child cgroups) when the kernel has it.
fn read_throttle(
    ctx: &mut ReadContext<'_>,
    dir: &std::path::Path,
    file: &str,
) -> Result<Vec<(DeviceNumber, u64, u64)>, ReadError> {
    let recursive = ctx.files.parse(
        &dir.join(format!("{file}_recursive")),
        parse::blkio_throttle,
    );
    match optional(recursive)? {
        Some(counters) => Ok(counters),
        None => ctx.files.parse(&dir.join(file), parse::blkio_throttle),
    }
}
