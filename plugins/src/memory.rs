//! `memory`: the `lxd_memory_<Key>_bytes` family with LXD's key names, and OOM kills.
//!
//! Keys come from `memory.stat` (v1 uses the hierarchical `total_*` keys). `MemTotal` is
//! the cgroup's limit, or the host's `MemTotal` when unlimited (or above it);
//! `MemFree = MemTotal - usage`; `MemAvailable = MemFree + Cached + reclaimable slab`
//! (the newest LXD's formula; v1 has no slab figure, so there it is `MemFree + Cached`,
//! as LXD 5.0 computes it everywhere), at most `MemTotal`. `Swap` is present where the
//! kernel accounts swap for the cgroup. HELP texts are LXD's.
//!
//! `lxd_memory_events_total{event}` counts how often the instance hit its memory
//! boundaries: v2 `memory.events` (`low`, `high`, `max`, `oom`, `oom_kill`), v1
//! `memory.failcnt` as `event="max"`.

use lxmetrics_plugin::{
    optional, BuildContext, BuildError, Collection, Controller, Family, Hierarchy, Instance,
    InstanceIndex, InstanceReader, MetricDesc, MetricKind, Namespace, ParseError,
    PerInstanceCollector, ReadContext, ReadError,
};

use crate::cgroupfs as parse;
use crate::hostfs::HostFigures;

lxmetrics_plugin::register_collector!(
    "memory",
    "Memory usage by kind, limit-derived totals, swap and OOM kills (cgroup memory)",
    build
);

/// The LXD key names from `memory.stat`, each with its v2 and v1 sources (summed when
/// there are several; a key whose sources are not all present is left out).
const STAT_KEYS: [(&str, &[&str], &[&str]); 13] = [
    (
        "Active",
        &["active_anon", "active_file"],
        &["total_active_anon", "total_active_file"],
    ),
    ("Active_anon", &["active_anon"], &["total_active_anon"]),
    ("Active_file", &["active_file"], &["total_active_file"]),
    ("Cached", &["file"], &["total_cache"]),
    ("Dirty", &["file_dirty"], &["total_dirty"]),
    (
        "Inactive",
        &["inactive_anon", "inactive_file"],
        &["total_inactive_anon", "total_inactive_file"],
    ),
    (
        "Inactive_anon",
        &["inactive_anon"],
        &["total_inactive_anon"],
    ),
    (
        "Inactive_file",
        &["inactive_file"],
        &["total_inactive_file"],
    ),
    ("Mapped", &["file_mapped"], &["total_mapped_file"]),
    ("RSS", &["anon"], &["total_rss"]),
    ("Shmem", &["shmem"], &["total_shmem"]),
    ("Unevictable", &["unevictable"], &["total_unevictable"]),
    ("Writeback", &["file_writeback"], &["total_writeback"]),
];

/// The keys computed from usage and limits, in their slots after the stat keys.
const DERIVED_KEYS: [&str; 4] = ["MemFree", "MemAvailable", "MemTotal", "Swap"];
const MEM_FREE: usize = STAT_KEYS.len();
const MEM_AVAILABLE: usize = MEM_FREE + 1;
const MEM_TOTAL: usize = MEM_FREE + 2;
const SWAP: usize = MEM_FREE + 3;
/// The slot of `Cached` among the stat keys (MemAvailable needs it).
const CACHED: usize = 3;
/// Every key's slot: the stat keys, then the derived ones.
const KEY_COUNT: usize = STAT_KEYS.len() + DERIVED_KEYS.len();

/// The LXD key name of `slot`.
fn key_name(slot: usize) -> &'static str {
    match STAT_KEYS.get(slot) {
        Some((name, _, _)) => name,
        None => DERIVED_KEYS[slot - STAT_KEYS.len()],
    }
}

const OOM_KILLS: MetricDesc = MetricDesc::counter(
    "memory_OOM_kills_total",
    "The number of out of memory kills.",
);
const EVENTS: MetricDesc = MetricDesc::counter(
    "memory_events_total",
    "The number of times the instance reached a memory boundary, by event.",
);

/// The v2 `memory.events` keys served, in order.
const EVENT_KEYS: [&str; 5] = ["low", "high", "max", "oom", "oom_kill"];

/// The collector: the reader below, run over every instance.
pub type MemoryCollector = PerInstanceCollector<MemoryReader>;

fn build(_: &BuildContext<'_>) -> Result<MemoryCollector, BuildError> {
    Ok(PerInstanceCollector::new(MemoryReader))
}

/// One instance's memory values.
pub struct MemoryValues {
    /// Bytes per key slot ([`key_name`]); `None` where the host has no value.
    keys: [Option<u64>; KEY_COUNT],
    oom_kills: Option<u64>,
    /// (event, count) of the events the host counts.
    events: Vec<(&'static str, u64)>,
}

/// The per-instance reader.
pub(crate) struct MemoryReader;

impl InstanceReader for MemoryReader {
    type Values = MemoryValues;
    type State = HostFigures;

    fn read(
        &self,
        ctx: &mut ReadContext<'_>,
        host: &mut HostFigures,
        instance: &Instance,
    ) -> Result<MemoryValues, ReadError> {
        let Some(hierarchy) = ctx.layout.hierarchy(Controller::Memory) else {
            return Ok(MemoryValues {
                keys: [None; KEY_COUNT],
                oom_kills: None,
                events: Vec::new(),
            });
        };
        let v1 = matches!(hierarchy, Hierarchy::V1(_));
        let dir = hierarchy.dir(&instance.cgroup);

        let (mut keys, slab_reclaimable) = ctx
            .files
            .parse(&dir.join("memory.stat"), |text| stat_keys(text, v1))?;

        let (usage_file, limit_file) = if v1 {
            ("memory.usage_in_bytes", "memory.limit_in_bytes")
        } else {
            ("memory.current", "memory.max")
        };
        let usage = ctx
            .files
            .parse(&dir.join(usage_file), parse::single_value)?;
        let limit = ctx.files.parse(&dir.join(limit_file), parse::limit_value)?;
        let host_total = host.memory(ctx)?;
        let total = limit.filter(|l| *l < host_total).unwrap_or(host_total);
        let free = total.saturating_sub(usage);

        keys[MEM_FREE] = Some(free);
        keys[MEM_AVAILABLE] = keys[CACHED].map(|cached| {
            free.saturating_add(cached)
                .saturating_add(slab_reclaimable.unwrap_or(0))
                .min(total)
        });
        keys[MEM_TOTAL] = Some(total);
        keys[SWAP] = swap_usage(ctx, &dir, v1, usage)?;

        // Kernels before 4.13 have no oom_kill line: the series is then absent.
        let (oom_kills, events) = if v1 {
            let oom_kills = optional(ctx.files.parse(&dir.join("memory.oom_control"), |t| {
                parse::flat_keyed_get(t, "oom_kill")
            }))?
            .flatten();
            let failcnt = optional(
                ctx.files
                    .parse(&dir.join("memory.failcnt"), parse::single_value),
            )?;
            (
                oom_kills,
                failcnt.map(|n| vec![("max", n)]).unwrap_or_default(),
            )
        } else {
            let events = optional(ctx.files.parse(&dir.join("memory.events"), |t| {
                let mut found = Vec::with_capacity(EVENT_KEYS.len());
                parse::flat_keyed(t, |k, v| {
                    if let Some(key) = EVENT_KEYS.iter().find(|e| **e == k) {
                        found.push((*key, v));
                    }
                })?;
                Ok(found)
            }))?
            .unwrap_or_default();
            let oom_kills = events
                .iter()
                .find(|(k, _)| *k == "oom_kill")
                .map(|(_, v)| *v);
            (oom_kills, events)
        };
        Ok(MemoryValues {
            keys,
            oom_kills,
            events,
        })
    }

    fn emit(
        &self,
        values: Vec<(InstanceIndex, MemoryValues)>,
        _: Self::State,
        out: &mut Collection,
    ) {
        // One slot per key, found by its place in the fixed key list (no per-sample
        // name building or search among families).
        let mut families: [Option<Family>; KEY_COUNT] = std::array::from_fn(|_| None);
        let mut oom = Family::new(OOM_KILLS, &[]);
        let mut events = Family::new(EVENTS, &["event"]);
        for (index, v) in values {
            for (event, count) in &v.events {
                events.push(index, [*event], *count as f64);
            }
            for (slot, value) in v.keys.iter().enumerate() {
                if let Some(value) = value {
                    families[slot]
                        .get_or_insert_with(|| Family::new(key_desc(key_name(slot)), &[]))
                        .push(index, (), *value as f64);
                }
            }
            if let Some(kills) = v.oom_kills {
                oom.push(index, (), kills as f64);
            }
        }
        let mut families: Vec<Family> = families.into_iter().flatten().collect();
        families.sort_by(|a, b| a.desc.name.cmp(&b.desc.name));
        for f in families {
            out.push(f);
        }
        out.push(oom);
        out.push(events);
    }
}

/// The stat keys' values from a `memory.stat` text (v1's `total_*` keys when `v1`),
/// summed per key without copying the file's key names, and v2's `slab_reclaimable`.
type StatKeys = ([Option<u64>; KEY_COUNT], Option<u64>);

fn stat_keys(text: &str, v1: bool) -> Result<StatKeys, ParseError> {
    // Per key: the running sum and which of its sources were seen (a repeated line
    // counts once).
    let mut found = [(0u64, 0u8); STAT_KEYS.len()];
    let mut slab_reclaimable = None;
    parse::flat_keyed(text, |k, v| {
        if !v1 && k == "slab_reclaimable" {
            slab_reclaimable = Some(v);
        }
        for (slot, (_, v2_sources, v1_sources)) in STAT_KEYS.iter().enumerate() {
            let sources = if v1 { v1_sources } else { v2_sources };
            if let Some(j) = sources.iter().position(|s| *s == k) {
                let (sum, seen) = &mut found[slot];
                if *seen & (1 << j) == 0 {
                    *seen |= 1 << j;
                    *sum = sum.saturating_add(v);
                }
            }
        }
    })?;
    let mut keys = [None; KEY_COUNT];
    for (slot, (_, v2_sources, v1_sources)) in STAT_KEYS.iter().enumerate() {
        let sources = if v1 { v1_sources } else { v2_sources };
        let (sum, seen) = found[slot];
        if u32::from(seen) == (1u32 << sources.len()) - 1 {
            keys[slot] = Some(sum);
        }
    }
    Ok((keys, slab_reclaimable))
}

fn key_family_name(key: &str) -> String {
    format!("memory_{key}_bytes")
}

/// LXD's HELP text of a key (`lxd/metrics/types.go`, wording kept, "used memory" for
/// MemTotal included).
fn key_help(key: &str) -> &'static str {
    match key {
        "Active" => "The amount of memory on active LRU list.",
        "Active_anon" => "The amount of anonymous memory on active LRU list.",
        "Active_file" => "The amount of file-backed memory on active LRU list.",
        "Cached" => "The amount of cached memory.",
        "Dirty" => "The amount of memory waiting to get written back to the disk.",
        "Inactive" => "The amount of memory on inactive LRU list.",
        "Inactive_anon" => "The amount of anonymous memory on inactive LRU list.",
        "Inactive_file" => "The amount of file-backed memory on inactive LRU list.",
        "Mapped" => "The amount of mapped memory.",
        "RSS" => "The amount of anonymous and swap cache memory.",
        "Shmem" => "The amount of cached filesystem data that is swap-backed.",
        "Unevictable" => "The amount of unevictable memory.",
        "Writeback" => "The amount of memory queued for syncing to disk.",
        "MemFree" => "The amount of free memory.",
        "MemAvailable" => "The amount of available memory.",
        "MemTotal" => "The amount of used memory.",
        "Swap" => "The amount of used swap memory.",
        _ => "The amount of memory of this kind in bytes.",
    }
}

fn key_desc(key: &str) -> MetricDesc {
    MetricDesc {
        name: key_family_name(key).into(),
        help: key_help(key).into(),
        kind: MetricKind::Gauge,
        namespace: Namespace::Prefixed,
    }
}

fn swap_usage(
    ctx: &mut ReadContext<'_>,
    dir: &std::path::Path,
    v1: bool,
    usage: u64,
) -> Result<Option<u64>, ReadError> {
    if v1 {
        let with_swap = optional(ctx.files.parse(
            &dir.join("memory.memsw.usage_in_bytes"),
            parse::single_value,
        ))?;
        Ok(with_swap.map(|total| total.saturating_sub(usage)))
    } else {
        optional(
            ctx.files
                .parse(&dir.join("memory.swap.current"), parse::single_value),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_name_their_keys() {
        assert_eq!(key_name(CACHED), "Cached");
        assert_eq!(key_name(MEM_FREE), "MemFree");
        assert_eq!(key_name(MEM_AVAILABLE), "MemAvailable");
        assert_eq!(key_name(MEM_TOTAL), "MemTotal");
        assert_eq!(key_name(SWAP), "Swap");
        let mut names: Vec<&str> = (0..KEY_COUNT).map(key_name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KEY_COUNT, "a key name is used twice");
    }

    #[test]
    fn stat_keys_sum_their_sources_and_leave_out_incomplete_ones() {
        let v2 = "anon 10\nactive_anon 3\ninactive_anon 2\nactive_file 4\nfile 7\nactive_anon 99\nslab_reclaimable 6\n";
        let (keys, slab) = stat_keys(v2, false).unwrap();
        assert_eq!(slab, Some(6));
        assert_eq!(
            keys[0],
            Some(7),
            "Active = active_anon + active_file, once each"
        );
        assert_eq!(keys[1], Some(3));
        assert_eq!(keys[3], Some(7), "Cached = file");
        assert_eq!(keys[9], Some(10), "RSS = anon");
        assert_eq!(keys[7], None, "no inactive_file line: absent, not 0");
        assert_eq!(
            keys[5], None,
            "Inactive has inactive_anon but not inactive_file"
        );
        assert_eq!(keys[6], Some(2));
        let v1 = "total_rss 5\nrss 1\nslab_reclaimable 3\n";
        let (keys, slab) = stat_keys(v1, true).unwrap();
        assert_eq!(keys[9], Some(5));
        assert_eq!(slab, None, "v1 has no hierarchical slab figure");
    }
}
