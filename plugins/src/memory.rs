//! `memory`: the `lxd_memory_<Key>_bytes` family with LXD's key names, and OOM kills.
//!
//! Keys come from `memory.stat` (v1 uses the hierarchical `total_*` keys). `MemTotal` is
//! the cgroup's limit, or the host's `MemTotal` when unlimited (or above it);
//! `MemFree = MemTotal - usage`; `MemAvailable = MemFree + Inactive_file`. `Swap` is
//! present where the kernel accounts swap for the cgroup.
//!
//! `lxd_memory_events_total{event}` counts how often the instance hit its memory
//! boundaries: v2 `memory.events` (`low`, `high`, `max`, `oom`, `oom_kill`), v1
//! `memory.failcnt` as `event="max"`.

use lxmetrics_plugin::{
    optional, BuildContext, BuildError, Collection, Controller, Family, Hierarchy, Instance,
    InstanceIndex, InstanceReader, MetricDesc, MetricKind, Namespace, PerInstanceCollector,
    ReadContext, ReadError,
};

use crate::cgroupfs as parse;
use crate::hostfs::HostFigures;

lxmetrics_plugin::register_collector!(
    "memory",
    "Memory usage by kind, limit-derived totals, swap and OOM kills (cgroup memory)",
    build
);

/// The LXD key names in output order, each with its v2 and v1 `memory.stat` sources
/// (summed when there are several).
const STAT_KEYS: [(&str, &[&str], &[&str]); 11] = [
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
];
const MORE_STAT_KEYS: [(&str, &[&str], &[&str]); 2] = [
    ("Unevictable", &["unevictable"], &["total_unevictable"]),
    ("Writeback", &["file_writeback"], &["total_writeback"]),
];

/// Every LXD key the reader reports, in any order: the stat keys, then the derived ones.
const ALL_KEYS: [&str; 17] = [
    "Active",
    "Active_anon",
    "Active_file",
    "Cached",
    "Dirty",
    "Inactive",
    "Inactive_anon",
    "Inactive_file",
    "Mapped",
    "RSS",
    "Shmem",
    "Unevictable",
    "Writeback",
    "MemFree",
    "MemAvailable",
    "MemTotal",
    "Swap",
];

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

/// One instance's memory values, in the order of [`key_names`].
pub struct MemoryValues {
    /// (LXD key, bytes); absent keys are left out.
    keys: Vec<(&'static str, u64)>,
    oom_kills: Option<u64>,
    /// (event, count) of the events the host counts.
    events: Vec<(&'static str, u64)>,
}

/// The per-instance reader.
pub(crate) struct MemoryReader;

fn stat_value(stat: &[(&str, u64)], sources: &[&str]) -> Option<u64> {
    let mut sum = 0u64;
    for source in sources {
        sum = sum.saturating_add(stat.iter().find(|(k, _)| k == source)?.1);
    }
    Some(sum)
}

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
                keys: Vec::new(),
                oom_kills: None,
                events: Vec::new(),
            });
        };
        let v1 = matches!(hierarchy, Hierarchy::V1(_));
        let dir = hierarchy.dir(&instance.cgroup);

        let stat: Vec<(String, u64)> = ctx.files.parse(&dir.join("memory.stat"), |text| {
            let mut pairs = Vec::with_capacity(48);
            parse::flat_keyed(text, |k, v| pairs.push((k.to_owned(), v)))?;
            Ok(pairs)
        })?;
        let stat: Vec<(&str, u64)> = stat.iter().map(|(k, v)| (k.as_str(), *v)).collect();

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

        let mut keys = Vec::with_capacity(16);
        for (name, v2_sources, v1_sources) in STAT_KEYS.iter().chain(&MORE_STAT_KEYS) {
            let sources = if v1 { v1_sources } else { v2_sources };
            if let Some(value) = stat_value(&stat, sources) {
                keys.push((*name, value));
            }
        }
        let inactive_file = keys
            .iter()
            .find(|(k, _)| *k == "Inactive_file")
            .map(|(_, v)| *v);
        keys.push(("MemFree", free));
        if let Some(inactive_file) = inactive_file {
            keys.push((
                "MemAvailable",
                free.saturating_add(inactive_file).min(total),
            ));
        }
        keys.push(("MemTotal", total));
        if let Some(swap) = swap_usage(ctx, &dir, v1, usage)? {
            keys.push(("Swap", swap));
        }

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

    fn emit(&self, values: Vec<(InstanceIndex, MemoryValues)>, out: &mut Collection) {
        // One slot per key, found by its place in the fixed key list (no per-sample
        // name building or search among families).
        let mut families: Vec<Option<Family>> = std::iter::repeat_with(|| None)
            .take(ALL_KEYS.len())
            .collect();
        let mut oom = Family::new(OOM_KILLS, &[]);
        let mut events = Family::new(EVENTS, &["event"]);
        for (index, v) in values {
            for (event, count) in &v.events {
                events.push(index, [*event], *count as f64);
            }
            for (key, value) in v.keys {
                let Some(slot) = ALL_KEYS.iter().position(|k| *k == key) else {
                    continue; // every key the reader makes is listed; see the unit test
                };
                families[slot]
                    .get_or_insert_with(|| Family::new(key_desc(key), &[]))
                    .push(index, (), value as f64);
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

fn key_family_name(key: &str) -> String {
    format!("memory_{key}_bytes")
}

fn key_desc(key: &str) -> MetricDesc {
    MetricDesc {
        name: key_family_name(key).into(),
        help: format!("The amount of {key} memory in bytes.").into(),
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
    fn every_key_has_a_slot() {
        for (key, _, _) in STAT_KEYS.iter().chain(&MORE_STAT_KEYS) {
            assert!(ALL_KEYS.contains(key), "{key}");
        }
        assert_eq!(ALL_KEYS.len(), STAT_KEYS.len() + MORE_STAT_KEYS.len() + 4);
    }
}
