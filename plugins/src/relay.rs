//! Relaying series from out-of-process plugins (textfiles, commands) into the snapshot,
//! under the rules that keep each plugin in its lane.
//!
//! A plugin's output is one *source* (a file, or one run of a command). A source is
//! merged whole or not at all, so a consumer never sees half of a file. The rules:
//! - the `name`, `project` and `type` labels are the daemon's: a source that sets any of
//!   them is refused, so no plugin can label a series as another instance's. A source
//!   speaks for one instance (its series get that instance's labels) or for the host;
//! - names under the daemon's prefix (`lxd_` by default) and the `process_` names belong
//!   to the daemon and its built-in collectors and are refused;
//! - a family relayed by several sources must have the same type and label names in
//!   each, and no series may come from two sources.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use lxmetrics_core::family_rules::{self, INSTANCE_LABELS};
use lxmetrics_plugin::{
    Family, InstanceIndex, LabelValues, MetricDesc, MetricKind, Namespace, Sample, SeriesSuffix,
};

use crate::prom_text::ParsedFamily;

/// The families relayed so far in one refresh, merged across sources.
#[derive(Debug)]
pub struct RelayedFamilies {
    /// `metrics.prefix`.
    metric_prefix: String,
    /// `<metric_prefix>_`, or empty without a prefix.
    reserved_prefix: String,
    default_help: &'static str,
    families: Vec<Family>,
    by_name: HashMap<String, usize>,
    /// Every name the relayed families' sample lines use (with `_bucket`, `_sum`, ...).
    served: HashSet<String>,
    series: HashSet<(usize, Option<InstanceIndex>, SeriesSuffix, LabelValues)>,
}

/// One family of a source, checked and ready to merge.
struct Checked {
    /// Index of the family it joins, or `None` for a new family.
    existing: Option<usize>,
    family: Family,
    /// The sources disagree on counter, gauge or untyped: the merged family is served
    /// untyped, so no source can get another's series refused by declaring a type first.
    untyped: bool,
}

/// Names Prometheus gives its own series for every target (`up`, the `scrape_*` names)
/// and its alert state: a relayed `up 0` would fire "target down" alerts.
const PROMETHEUS_NAMES: [&str; 3] = ["up", "ALERTS", "ALERTS_FOR_STATE"];
/// Prefix of Prometheus' per-scrape series (`scrape_duration_seconds`, ...).
const PROMETHEUS_SCRAPE_PREFIX: &str = "scrape_";
/// The built-in collectors' families (`cpu_seconds_total`, `memory_MemFree_bytes`,
/// `procs_total`, ...). With `metrics.prefix = ""` their names are bare, and a plugin
/// that used one would replace a built-in family, so these namespaces stay reserved
/// whatever the prefix.
const BUILT_IN_NAMESPACES: [&str; 6] = [
    "cpu_",
    "disk_",
    "filesystem_",
    "memory_",
    "network_",
    "procs_",
];

impl RelayedFamilies {
    /// An empty set; `metric_prefix` is the daemon's (`metrics.prefix`), `default_help`
    /// the help text of a family whose source gave none. It names no source: a help text
    /// is shown to every viewer of the family, and a source's path names an instance.
    pub fn new(metric_prefix: &str, default_help: &'static str) -> Self {
        RelayedFamilies {
            metric_prefix: metric_prefix.to_owned(),
            default_help,
            reserved_prefix: if metric_prefix.is_empty() {
                String::new()
            } else {
                format!("{metric_prefix}_")
            },
            families: Vec::new(),
            by_name: HashMap::new(),
            served: HashSet::new(),
            series: HashSet::new(),
        }
    }

    /// Merges one source's families, all or nothing. `instance` is the instance the
    /// source speaks for (`None` for the host).
    pub fn add(
        &mut self,
        parsed: Vec<ParsedFamily>,
        instance: Option<InstanceIndex>,
    ) -> Result<(), String> {
        let mut checked = Vec::with_capacity(parsed.len());
        let mut new_series = HashSet::new();
        let mut new_names = HashSet::new();
        for family in parsed.into_iter().filter(|f| !f.samples.is_empty()) {
            let family = self.check(family, instance)?;
            if family.existing.is_none() {
                let desc = &family.family.desc;
                for served in desc.kind.served_names(&desc.name) {
                    if self.served.contains(&served) || !new_names.insert(served.clone()) {
                        return Err(format!(
                            "{served}: the name is already served by another family"
                        ));
                    }
                }
            }
            let slot = family.existing.unwrap_or(usize::MAX - checked.len());
            for (i, sample) in family.family.samples.iter().enumerate() {
                let suffix = family.family.suffix(i);
                let key = (slot, sample.instance, suffix, sample.label_values.clone());
                if self.series.contains(&key) || !new_series.insert(key) {
                    return Err(format!(
                        "a series of {} is already relayed by another source",
                        family.family.desc.name
                    ));
                }
            }
            checked.push(family);
        }
        self.served.extend(new_names);
        for Checked {
            existing,
            family,
            untyped,
        } in checked
        {
            let (index, first_new) = match existing {
                Some(index) => {
                    let merged = &mut self.families[index];
                    let first_new = merged.samples.len();
                    merged.samples.extend(family.samples);
                    merged.suffixes.extend(family.suffixes);
                    if untyped {
                        merged.desc.kind = MetricKind::Untyped;
                    }
                    // Sources that describe a family differently get the neutral text:
                    // a help text is shown to every viewer of the family, also to a
                    // certificate restricted to another source's project.
                    if merged.desc.help != family.desc.help {
                        merged.desc.help = Cow::Borrowed(self.default_help);
                    }
                    (index, first_new)
                }
                None => {
                    self.by_name
                        .insert(family.desc.name.to_string(), self.families.len());
                    self.families.push(family);
                    (self.families.len() - 1, 0)
                }
            };
            // Only this source's samples are new: a family merged from many sources
            // (every instance's app.prom) costs linear, not quadratic, time.
            let merged = &self.families[index];
            for (i, sample) in merged.samples.iter().enumerate().skip(first_new) {
                self.series.insert((
                    index,
                    sample.instance,
                    merged.suffix(i),
                    sample.label_values.clone(),
                ));
            }
        }
        Ok(())
    }

    /// The merged families, for a [`Collection`](lxmetrics_plugin::Collection).
    pub fn into_families(self) -> Vec<Family> {
        self.families
    }

    fn check(
        &self,
        parsed: ParsedFamily,
        instance: Option<InstanceIndex>,
    ) -> Result<Checked, String> {
        let name = parsed.name;
        let kind = parsed.kind;
        let desc = MetricDesc {
            help: Cow::Owned(parsed.help.unwrap_or_else(|| self.default_help.to_owned())),
            kind,
            namespace: Namespace::Bare,
            name: Cow::Owned(name),
        };
        let name = desc.name.as_ref();
        if !self.reserved_prefix.is_empty() && name.starts_with(&self.reserved_prefix) {
            return Err(format!(
                "{name}: names starting with {} belong to the daemon",
                self.reserved_prefix
            ));
        }
        if kind
            .served_names(name)
            .iter()
            .any(|served| family_rules::is_reserved(served, &self.metric_prefix))
        {
            return Err(format!("{name}: the name belongs to the daemon"));
        }
        if PROMETHEUS_NAMES.contains(&name) || name.starts_with(PROMETHEUS_SCRAPE_PREFIX) {
            return Err(format!("{name}: the name belongs to Prometheus"));
        }
        if self.reserved_prefix.is_empty()
            && BUILT_IN_NAMESPACES.iter().any(|ns| name.starts_with(ns))
        {
            return Err(format!(
                "{name}: cpu_, disk_, filesystem_, memory_, network_ and procs_ names belong \
                 to the built-in collectors"
            ));
        }
        // The parser guarantees every sample of a family has the same label names (but
        // for the bound label of a histogram or summary, which goes last).
        let bound = kind.bound_label();
        let mut label_names: Vec<String> = parsed.samples[0]
            .labels
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| Some(n.as_str()) != bound)
            .collect();
        label_names.extend(bound.map(String::from));
        if let Some(label) = label_names
            .iter()
            .find(|l| INSTANCE_LABELS.contains(&l.as_str()))
        {
            return Err(format!(
                "{name}: the \"{label}\" label is set by the daemon from the instance; \
                 a plugin cannot set it (put per-instance files under <project>/<name>/)"
            ));
        }
        let existing = self.by_name.get(name).copied();
        let mut untyped = false;
        let order: Vec<String> = match existing {
            Some(index) => {
                let have = &self.families[index];
                let mut theirs: Vec<&str> = have.label_names.iter().collect();
                let mut ours: Vec<&str> = label_names.iter().map(String::as_str).collect();
                theirs.sort_unstable();
                ours.sort_unstable();
                let scalar = |k: MetricKind| {
                    matches!(
                        k,
                        MetricKind::Counter | MetricKind::Gauge | MetricKind::Untyped
                    )
                };
                if have.desc.kind != kind && scalar(have.desc.kind) && scalar(kind) {
                    untyped = true;
                } else if have.desc.kind != kind || theirs != ours {
                    return Err(format!(
                        "{name}: another source relays it with a different type or labels"
                    ));
                }
                have.label_names.iter().map(|l| l.to_string()).collect()
            }
            None => label_names,
        };
        let mut family = Family::new(desc, &order.iter().map(String::as_str).collect::<Vec<_>>());
        if bound.is_some() {
            family.suffixes = parsed.samples.iter().map(|s| s.suffix).collect();
        }
        family.samples = parsed
            .samples
            .into_iter()
            .map(|sample| Sample {
                instance,
                label_values: order
                    .iter()
                    .map(|label| {
                        // A `_sum` or `_count` has no bound label: an empty value, not
                        // written.
                        sample
                            .labels
                            .iter()
                            .find(|(n, _)| n == label)
                            .map(|(_, v)| v.as_str())
                            .unwrap_or_default()
                    })
                    .collect(),
                value: sample.value,
            })
            .collect();
        Ok(Checked {
            existing,
            family,
            untyped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prom_text::parse;

    #[test]
    fn one_tenant_cannot_remove_or_probe_another_tenants_family() {
        // Tenant 0 declares the name a gauge first; tenant 1's counter is still served,
        // and neither learns of the other: the family goes out untyped.
        let (relayed, results) = relay(&[
            (
                "# HELP app_requests_total secret of tenant zero
# TYPE app_requests_total gauge
app_requests_total 1
",
                Some(0),
            ),
            (
                "# HELP app_requests_total Requests.
# TYPE app_requests_total counter
app_requests_total 7
",
                Some(1),
            ),
        ]);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let families = relayed.into_families();
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].desc.kind, MetricKind::Untyped);
        assert_eq!(families[0].samples.len(), 2);
        // Tenant one's viewers do not see tenant zero's help text.
        assert_eq!(families[0].desc.help, "Relayed in a test");
    }

    #[test]
    fn prometheus_and_built_in_names_are_refused() {
        for name in [
            "up",
            "scrape_duration_seconds",
            "scrape_series_added",
            "ALERTS",
        ] {
            let (_, results) = relay(&[(&format!("{name} 0\n"), None)]);
            assert!(
                results[0].as_ref().is_err_and(|e| e.contains("Prometheus")),
                "{name}: {results:?}"
            );
        }
        // With an empty prefix the built-in collectors' names are still theirs.
        let mut bare = RelayedFamilies::new("", "Relayed in a test");
        for name in ["procs_total", "cpu_seconds_total", "memory_MemFree_bytes"] {
            let result = bare.add(parse(&format!("{name} 999\n")).unwrap(), Some(0));
            assert!(
                result.as_ref().is_err_and(|e| e.contains("built-in")),
                "{name}: {result:?}"
            );
        }
        assert!(bare.add(parse("app_up 1\n").unwrap(), Some(0)).is_ok());
    }

    fn relay(sources: &[(&str, Option<u32>)]) -> (RelayedFamilies, Vec<Result<(), String>>) {
        let mut relayed = RelayedFamilies::new("lxd", "Relayed in a test");
        let results = sources
            .iter()
            .map(|(text, instance)| relayed.add(parse(text).unwrap(), *instance))
            .collect();
        (relayed, results)
    }

    #[test]
    fn sources_merge_into_one_family_per_name() {
        let (relayed, results) = relay(&[
            ("# TYPE app_up gauge\napp_up{b=\"1\",a=\"2\"} 1\n", Some(0)),
            ("# TYPE app_up gauge\napp_up{a=\"3\",b=\"4\"} 0\n", None),
        ]);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let families = relayed.into_families();
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].label_names, ["b", "a"]);
        assert_eq!(families[0].samples[1].label_values, ["4", "3"]);
        assert_eq!(families[0].samples[0].instance, Some(0));
        assert_eq!(families[0].samples[1].instance, None);
        assert_eq!(families[0].desc.namespace, Namespace::Bare);
    }

    #[test]
    fn histograms_merge_across_sources_with_le_last() {
        let text = "# TYPE job_seconds histogram\n\
                    job_seconds_bucket{le=\"1\",job=\"x\"} 1\n\
                    job_seconds_bucket{le=\"+Inf\",job=\"x\"} 2\n\
                    job_seconds_sum{job=\"x\"} 1.5\n\
                    job_seconds_count{job=\"x\"} 2\n";
        let (relayed, results) = relay(&[(text, Some(0)), (text, Some(1))]);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let families = relayed.into_families();
        assert_eq!(families.len(), 1);
        let f = &families[0];
        assert_eq!(f.desc.kind, MetricKind::Histogram);
        assert_eq!(f.label_names, ["job", "le"]);
        assert_eq!(f.suffixes.len(), 8);
        assert_eq!(f.samples[0].label_values, ["x", "1"]);
        // `_sum` and `_count` keep an empty, unwritten `le`; they are not duplicates.
        assert_eq!(f.samples[2].label_values, ["x", ""]);
        assert_eq!(f.suffix(2), SeriesSuffix::Sum);
        assert_eq!(f.suffix(3), SeriesSuffix::Count);
        assert_eq!(f.samples[4].instance, Some(1));
    }

    #[test]
    fn a_name_one_family_serves_is_refused_for_another() {
        let summary = "# TYPE rpc_seconds summary\nrpc_seconds_sum 1\nrpc_seconds_count 1\n";
        let (relayed, results) = relay(&[(summary, None), ("rpc_seconds_sum 3\n", Some(0))]);
        assert!(results[0].is_ok());
        let err = results[1].as_ref().unwrap_err();
        assert!(err.contains("already served"), "{err}");
        assert_eq!(relayed.into_families().len(), 1);
        // Within one source too.
        let (_, results) = relay(&[(&format!("rpc_seconds_count 1\n{summary}"), None)]);
        assert!(results[0].is_err());
    }

    #[test]
    fn instance_labels_are_refused() {
        for label in INSTANCE_LABELS {
            let text = format!("app_up{{{label}=\"other\"}} 1\n");
            let (relayed, results) = relay(&[(&text, Some(0))]);
            let err = results[0].as_ref().unwrap_err();
            assert!(err.contains("set by the daemon"), "{err}");
            assert!(relayed.into_families().is_empty());
        }
    }

    #[test]
    fn daemon_names_are_refused() {
        for text in ["lxd_cpu_seconds_total 1\n", "process_cpu_seconds_total 1\n"] {
            let (_, results) = relay(&[(text, None)]);
            assert!(
                results[0].as_ref().unwrap_err().contains("belong"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_refused_source_leaves_nothing_behind() {
        let (relayed, results) = relay(&[
            ("a 1\n", None),
            // b is fine, but a repeats a series of the first source: the whole source goes.
            ("b 1\na 2\n", None),
            ("a{x=\"1\"} 1\n", Some(1)),
        ]);
        assert!(results[0].is_ok());
        assert!(results[1].as_ref().unwrap_err().contains("already relayed"));
        assert!(results[2]
            .as_ref()
            .unwrap_err()
            .contains("different type or labels"));
        let families = relayed.into_families();
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].samples.len(), 1);
    }

    #[test]
    fn the_same_series_for_two_instances_is_fine() {
        let (relayed, results) = relay(&[("a 1\n", Some(0)), ("a 2\n", Some(1))]);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(relayed.into_families()[0].samples.len(), 2);
    }
}
