//! A snapshot: the validated result of one refresh, shared by every request in the cache
//! window.
//!
//! Assembly is where collector output is checked once per refresh so that encoding can
//! trust it: names and label names are valid, label counts match, no family name appears
//! twice, no series appears twice, and an instance a collector failed on has none of
//! that collector's series. A family that breaks a rule is dropped and its collector is
//! reported as failed, never served half-right.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use compact_str::CompactString;

use crate::exposition::text::render_instance_labels;
use crate::family_rules;
use lxmetrics_plugin::{
    is_valid_metric_name, Collection, Family, Instance, InstanceIndex, InstanceType, MetricKind,
    SeriesSuffix,
};

/// How one collector (or discovery) did in a refresh.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectorStatus {
    /// Collector name, or `discovery`.
    pub name: CompactString,
    /// False when it errored, panicked, missed its deadline or produced invalid output.
    pub success: bool,
    /// Wall time from start to result (the deadline when it missed it).
    pub duration: Duration,
    /// Instances whose series it could not read this refresh.
    pub failed_instances: u32,
    /// Why it failed, for logs.
    pub error: Option<String>,
    /// The instance that took longest in this collector, when it measured that.
    pub slowest_instance: Option<(String, Duration)>,
}

/// The result of one refresh.
#[derive(Debug)]
pub struct Snapshot {
    instances: Arc<[Instance]>,
    instance_labels: Vec<Box<[u8]>>,
    /// Instances per project (sorted), containers then virtual machines: counted once
    /// here, as every response shows them.
    instance_counts: Vec<(String, [u64; 2])>,
    families: Vec<Family>,
    statuses: Vec<CollectorStatus>,
}

impl Snapshot {
    /// An empty snapshot (before the first refresh, and in tests).
    #[cfg(test)]
    pub(crate) fn empty() -> Self {
        SnapshotBuilder::new(Arc::from(Vec::new()), "lxd").finish()
    }

    /// The instances this refresh saw.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// The instance label text per instance, as the encoder writes it.
    pub fn instance_labels(&self) -> &[Box<[u8]>] {
        &self.instance_labels
    }

    /// Instances per project, sorted by project: containers, then virtual machines.
    pub(crate) fn instance_counts(&self) -> &[(String, [u64; 2])] {
        &self.instance_counts
    }

    /// Whether any instance of this refresh is in `project`.
    pub(crate) fn has_project(&self, project: &str) -> bool {
        self.instance_counts
            .binary_search_by(|(p, _)| p.as_str().cmp(project))
            .is_ok()
    }

    /// The validated families.
    pub fn families(&self) -> &[Family] {
        &self.families
    }

    /// How each collector did.
    pub fn statuses(&self) -> &[CollectorStatus] {
        &self.statuses
    }
}

/// Assembles a [`Snapshot`] from collector results, validating as it goes.
pub struct SnapshotBuilder {
    instances: Arc<[Instance]>,
    families: Vec<Family>,
    /// `metrics.prefix`: names are compared as they will be served.
    prefix: Arc<str>,
    /// Served names of the families taken so far.
    names: HashSet<String>,
    statuses: Vec<CollectorStatus>,
}

impl SnapshotBuilder {
    /// Starts a snapshot over the instances discovery found, to be served under `prefix`
    /// (`metrics.prefix`), so that a bare family spelled with it cannot shadow a prefixed
    /// one or a daemon metric.
    pub fn new(instances: Arc<[Instance]>, prefix: impl Into<Arc<str>>) -> Self {
        SnapshotBuilder {
            instances,
            families: Vec::new(),
            prefix: prefix.into(),
            names: HashSet::new(),
            statuses: Vec::new(),
        }
    }

    /// Records a status without output (discovery, or a collector that failed outright).
    pub fn add_status(&mut self, status: CollectorStatus) {
        self.statuses.push(status);
    }

    /// Adds one collector's output.
    pub fn add_collection(&mut self, name: &str, duration: Duration, collection: Collection) {
        self.add(name, duration, collection, false);
    }

    /// Adds discovery's output (`instance_info`, the inventory source's host and project
    /// families). Unlike a collector's, its host series may carry a `project` label:
    /// the encoder then shows each to the callers who may see that project.
    pub(crate) fn add_inventory(&mut self, duration: Duration, collection: Collection) {
        self.add(crate::engine::DISCOVERY_STATUS, duration, collection, true);
    }

    fn add(&mut self, name: &str, duration: Duration, collection: Collection, project_label: bool) {
        let Collection {
            families,
            failures,
            slowest_instance,
        } = collection;
        let slowest_instance = slowest_instance.and_then(|(i, took)| {
            let instance = self.instances.get(i as usize)?;
            Some((format!("{}/{}", instance.project, instance.name), took))
        });
        let mut failed: Vec<InstanceIndex> = failures.iter().map(|f| f.instance).collect();
        failed.sort_unstable();
        failed.dedup();
        for f in &failures {
            let who = self
                .instances
                .get(f.instance as usize)
                .map_or("?", |i| i.name.as_str());
            tracing::debug!(
                collector = name,
                instance = who,
                "instance not read: {}",
                f.reason
            );
        }
        let mut problems = Vec::new();
        for mut family in families {
            let rendered = family.desc.rendered_name(&self.prefix);
            let served = family.desc.kind.served_names(&rendered);
            if let Err(problem) = self.check_family(&family, &served, project_label) {
                problems.push(format!("{rendered}: {problem}"));
                continue;
            }
            if !failed.is_empty() {
                family.retain_samples(|s, _| {
                    s.instance.is_none_or(|i| failed.binary_search(&i).is_err())
                });
            }
            dedup_samples(&mut family);
            self.names.extend(served);
            self.families.push(family);
        }
        let error = (!problems.is_empty()).then(|| {
            let e = format!("invalid output dropped: {}", problems.join("; "));
            tracing::warn!(collector = name, "{e}");
            e
        });
        self.statuses.push(CollectorStatus {
            name: name.into(),
            success: error.is_none(),
            duration,
            failed_instances: u32::try_from(failed.len()).unwrap_or(u32::MAX),
            error,
            slowest_instance,
        });
    }

    /// Checks a family whose sample lines will use the names `served`. With
    /// `project_label`, a family of host series only may label them with `project`.
    fn check_family(
        &self,
        family: &Family,
        served: &[String],
        project_label: bool,
    ) -> Result<(), String> {
        if !is_valid_metric_name(&family.desc.name) {
            return Err("not a valid metric name".into());
        }
        for served in served {
            if family_rules::is_reserved(served, &self.prefix) {
                return Err("name is reserved for daemon metrics".into());
            }
            if self.names.contains(served) {
                return Err("family already produced by another collector".into());
            }
        }
        check_suffixes(family)?;
        let host_only = family.samples.iter().all(|s| s.instance.is_none());
        let labels = family
            .label_names
            .iter()
            .filter(|l| !(project_label && host_only && *l == "project"));
        family_rules::check_label_names(labels)?;
        let n = self.instances.len();
        for sample in &family.samples {
            if sample.label_values.len() != family.label_names.len() {
                return Err("a sample's label values do not match the label names".into());
            }
            if sample.instance.is_some_and(|i| i as usize >= n) {
                return Err("a sample refers to an instance that does not exist".into());
            }
        }
        Ok(())
    }

    /// The finished snapshot.
    pub fn finish(self) -> Snapshot {
        let instance_labels = self.instances.iter().map(render_instance_labels).collect();
        let mut counts: BTreeMap<&str, [u64; 2]> = BTreeMap::new();
        for i in self.instances.iter() {
            let slot = usize::from(i.kind == InstanceType::VirtualMachine);
            counts.entry(&i.project).or_default()[slot] += 1;
        }
        let instance_counts = counts
            .into_iter()
            .map(|(project, n)| (project.to_owned(), n))
            .collect();
        Snapshot {
            instances: self.instances,
            instance_labels,
            instance_counts,
            families: self.families,
            statuses: self.statuses,
        }
    }
}

/// A histogram or summary needs its bound label last and one suffix per sample, of the
/// kinds its type has; any other family has no suffixes.
fn check_suffixes(family: &Family) -> Result<(), String> {
    let kind = family.desc.kind;
    let Some(bound) = kind.bound_label() else {
        return match family.suffixes.is_empty() {
            true => Ok(()),
            false => Err(format!("a {} family has series suffixes", kind.as_str())),
        };
    };
    if family.label_names.last() != Some(bound) {
        return Err(format!(
            "a {} needs \"{bound}\" as its last label",
            kind.as_str()
        ));
    }
    if family.suffixes.len() != family.samples.len() {
        return Err("series suffixes do not match the samples".into());
    }
    let allowed = |s: SeriesSuffix| match kind {
        MetricKind::Histogram => s != SeriesSuffix::Plain,
        _ => s != SeriesSuffix::Bucket,
    };
    if let Some(bad) = family.suffixes.iter().find(|s| !allowed(**s)) {
        return Err(format!("a {} has no {bad:?} series", kind.as_str()));
    }
    Ok(())
}

/// Removes repeated series (same instance and label values), keeping the first.
fn dedup_samples(family: &mut Family) {
    if family.samples.len() < 2 {
        return;
    }
    let mut seen = HashSet::with_capacity(family.samples.len());
    let duplicates: Vec<usize> = family
        .samples
        .iter()
        .enumerate()
        .filter(|(i, s)| !seen.insert((s.instance, family.suffix(*i), &s.label_values)))
        .map(|(i, _)| i)
        .collect();
    if duplicates.is_empty() {
        return;
    }
    tracing::warn!(
        family = %family.desc.name,
        count = duplicates.len(),
        "duplicate series dropped"
    );
    let mut index = 0;
    family.retain_samples(|_, _| {
        let keep = duplicates.binary_search(&index).is_err();
        index += 1;
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use lxmetrics_plugin::{MetricDesc, SeriesOf};

    fn instances() -> Arc<[Instance]> {
        vec![Instance::container("a", "a"), Instance::container("b", "b")].into()
    }

    fn collection(families: Vec<Family>) -> Collection {
        Collection {
            families,
            ..Default::default()
        }
    }

    fn cpu() -> Family {
        Family::new(MetricDesc::counter("cpu_seconds_total", "h"), &["mode"])
    }

    #[test]
    fn only_the_inventory_may_label_host_series_with_a_project() {
        let family = || {
            let mut f = Family::new(
                MetricDesc::gauge("project_limit", "h"),
                &["project", "resource"],
            );
            f.push(SeriesOf::HOST, ["prod", "instances"], 10.0);
            f
        };
        let collection = |f: Family| {
            let mut c = Collection::new();
            c.push(f);
            c
        };
        let mut b = SnapshotBuilder::new(instances(), "lxd");
        b.add_collection("plugin", Duration::ZERO, collection(family()));
        b.add_inventory(Duration::ZERO, collection(family()));
        let s = b.finish();
        assert!(!s.statuses()[0].success, "a collector may not set project");
        assert!(s.statuses()[1].success);
        assert_eq!(s.families().len(), 1);
        // Not on instance series, even from the inventory.
        let mut on_instance = family();
        on_instance.push(0, ["prod", "memory"], 1.0);
        let mut b = SnapshotBuilder::new(instances(), "lxd");
        b.add_inventory(Duration::ZERO, collection(on_instance));
        assert!(!b.finish().statuses()[0].success);
    }

    #[test]
    fn failed_instances_lose_only_their_series() {
        let mut fam = cpu();
        fam.push(0, ["user"], 1.0);
        fam.push(1, ["user"], 2.0);
        let mut c = Collection::new();
        c.push(fam);
        c.instance_failed(1, "cpu.stat: truncated");
        let mut b = SnapshotBuilder::new(instances(), "lxd");
        b.add_collection("cpu", Duration::ZERO, c);
        let s = b.finish();
        assert_eq!(s.families()[0].samples.len(), 1);
        assert_eq!(s.families()[0].samples[0].instance, Some(0));
        assert_eq!(s.statuses()[0].failed_instances, 1);
        assert!(s.statuses()[0].success);
    }

    #[test]
    fn duplicate_series_are_dropped() {
        let mut fam = cpu();
        fam.push(0, ["user"], 1.0);
        fam.push(0, ["user"], 9.0);
        fam.push(0, ["system"], 2.0);
        let mut b = SnapshotBuilder::new(instances(), "lxd");
        b.add_collection("cpu", Duration::ZERO, collection(vec![fam]));
        let s = b.finish();
        let values: Vec<f64> = s.families()[0].samples.iter().map(|s| s.value).collect();
        assert_eq!(values, [1.0, 2.0]);
    }

    #[test]
    fn invalid_families_are_dropped_and_fail_the_collector() {
        let bad_cases: Vec<Family> = vec![
            Family::new(MetricDesc::gauge("bad-name", "h"), &[]),
            Family::new(MetricDesc::gauge("ok", "h"), &["project"]),
            Family::new(MetricDesc::gauge("ok", "h"), &["a", "a"]),
            Family::new(MetricDesc::gauge("ok", "h"), &["__x"]),
            Family::new(MetricDesc::gauge("uptime_seconds", "h"), &[]),
            {
                let mut f = Family::new(MetricDesc::gauge("ok", "h"), &["a"]);
                f.push(0, ["x", "y"], 1.0);
                f
            },
            {
                let mut f = Family::new(MetricDesc::gauge("ok", "h"), &[]);
                f.push(7, (), 1.0);
                f
            },
        ];
        for fam in bad_cases {
            let desc = format!("{fam:?}");
            let mut b = SnapshotBuilder::new(instances(), "lxd");
            b.add_collection("x", Duration::ZERO, collection(vec![fam]));
            let s = b.finish();
            assert!(s.families().is_empty(), "{desc}");
            assert!(!s.statuses()[0].success, "{desc}");
        }
    }

    #[test]
    fn a_family_name_belongs_to_the_first_collector() {
        let mut b = SnapshotBuilder::new(instances(), "lxd");
        for name in ["one", "two"] {
            let mut fam = cpu();
            fam.push(0, ["user"], 1.0);
            b.add_collection(name, Duration::ZERO, collection(vec![fam]));
        }
        let s = b.finish();
        assert_eq!(s.families().len(), 1);
        assert!(s.statuses()[0].success);
        assert!(!s.statuses()[1].success);
    }

    #[test]
    fn names_collide_as_served() {
        let bare = |name: &'static str| {
            let mut f = Family::new(MetricDesc::gauge(name, "h").bare(), &[]);
            f.push(0, (), 1.0);
            f
        };
        for (prefix, first, second, collide) in [
            ("lxd", cpu(), bare("lxd_cpu_seconds_total"), true),
            ("incus", cpu(), bare("incus_cpu_seconds_total"), true),
            ("incus", cpu(), bare("lxd_cpu_seconds_total"), false),
            ("", cpu(), bare("cpu_seconds_total"), true),
        ] {
            let mut first = first;
            first.push(0, ["user"], 1.0);
            let mut b = SnapshotBuilder::new(instances(), Arc::from(prefix));
            for (name, fam) in [("one", first), ("two", second)] {
                b.add_collection(name, Duration::ZERO, collection(vec![fam]));
            }
            let s = b.finish();
            assert_eq!(s.families().len(), if collide { 1 } else { 2 }, "{prefix}");
            assert_eq!(s.statuses()[1].success, !collide, "{prefix}");
        }
        // A bare name spelled like a daemon metric is refused.
        let mut b = SnapshotBuilder::new(instances(), "lxd");
        b.add_collection(
            "x",
            Duration::ZERO,
            collection(vec![bare("lxd_uptime_seconds")]),
        );
        let s = b.finish();
        assert!(s.families().is_empty());
        let error = s.statuses()[0].error.as_deref().unwrap_or_default();
        assert!(
            error.contains("lxd_uptime_seconds: name is reserved"),
            "{error}"
        );
    }

    #[test]
    fn histograms_are_checked_and_keep_suffixes_in_step() {
        let hist = |labels: &[&str]| {
            Family::new(
                MetricDesc {
                    name: "job_seconds".into(),
                    help: "h".into(),
                    kind: MetricKind::Histogram,
                    namespace: lxmetrics_plugin::Namespace::Bare,
                },
                labels,
            )
        };
        let run = |families: Vec<Family>, failed: Option<InstanceIndex>| {
            let mut c = Collection {
                families,
                ..Default::default()
            };
            if let Some(i) = failed {
                c.instance_failed(i, "gone");
            }
            let mut b = SnapshotBuilder::new(instances(), "lxd");
            b.add_collection("x", Duration::ZERO, c);
            b.finish()
        };
        // Good: two instances, one fails; a repeated bucket is dropped; sum and count,
        // which have the same (empty) le value, are not duplicates of each other.
        let mut good = hist(&["le"]);
        for i in 0..2 {
            good.push(
                SeriesOf::instance(i).part(SeriesSuffix::Bucket),
                ["+Inf"],
                3.0,
            );
            good.push(
                SeriesOf::instance(i).part(SeriesSuffix::Bucket),
                ["+Inf"],
                9.0,
            );
            good.push(SeriesOf::instance(i).part(SeriesSuffix::Sum), [""], 4.5);
            good.push(SeriesOf::instance(i).part(SeriesSuffix::Count), [""], 3.0);
        }
        let s = run(vec![good], Some(1));
        assert!(s.statuses()[0].success, "{:?}", s.statuses()[0].error);
        let f = &s.families()[0];
        assert_eq!(
            f.suffixes,
            [SeriesSuffix::Bucket, SeriesSuffix::Sum, SeriesSuffix::Count]
        );
        assert!(f.samples.iter().all(|s| s.instance == Some(0)));
        assert_eq!(f.samples[0].value, 3.0);

        // Bad: no `le` last; suffixes missing; a quantile in a histogram; a gauge with
        // suffixes; a gauge named like the histogram's `_sum`.
        let mut no_le = hist(&["job"]);
        no_le.push(SeriesOf::HOST.part(SeriesSuffix::Sum), [""], 1.0);
        let mut missing = hist(&["le"]);
        missing.push(SeriesOf::HOST, ["1"], 1.0);
        let mut quantile = hist(&["le"]);
        quantile.push(SeriesOf::HOST.part(SeriesSuffix::Plain), ["1"], 1.0);
        let mut gauge = Family::new(MetricDesc::gauge("g", "h"), &[]);
        gauge.push(SeriesOf::HOST.part(SeriesSuffix::Sum), (), 1.0);
        for bad in [no_le, missing, quantile, gauge] {
            let desc = format!("{bad:?}");
            let s = run(vec![bad], None);
            assert!(s.families().is_empty(), "{desc}");
        }
        let mut sum_gauge = Family::new(MetricDesc::gauge("job_seconds_sum", "h").bare(), &[]);
        sum_gauge.push(SeriesOf::HOST, (), 1.0);
        let mut h = hist(&["le"]);
        h.push(SeriesOf::HOST.part(SeriesSuffix::Sum), [""], 1.0);
        let s = run(vec![sum_gauge, h], None);
        assert_eq!(s.families().len(), 1);
        assert!(!s.statuses()[0].success);
    }
}
