//! The metric model: families of samples as collectors produce them.
//!
//! A [`Family`] is one metric name with its help text, type and the names of its extra
//! labels. Each [`Sample`] names the instance it belongs to by index (the `name`,
//! `project` and `type` labels are rendered once per instance by the encoder) and holds
//! the values of the extra labels in the family's order. Label values are
//! [`CompactString`]s, which keep values up to 24 bytes inline, so a typical sample
//! (`cpu="3"`, `mode="user"`) costs no heap allocation.

use std::borrow::Cow;

use compact_str::CompactString;
use smallvec::SmallVec;

use crate::instance::InstanceIndex;

/// Prometheus metric type of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// A value that only goes up (and resets to zero on restart).
    Counter,
    /// A value that can go up and down.
    Gauge,
    /// A value whose kind its source did not say: series relayed from textfiles or
    /// commands without a `# TYPE` line. Rendered `untyped` (text) or `unknown`
    /// (OpenMetrics).
    Untyped,
}

impl MetricKind {
    /// The word used on Prometheus text `# TYPE` lines.
    pub const fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Untyped => "untyped",
        }
    }

    /// The word used on OpenMetrics `# TYPE` lines.
    pub const fn as_openmetrics_str(self) -> &'static str {
        match self {
            MetricKind::Untyped => "unknown",
            other => other.as_str(),
        }
    }
}

/// Whether a family name gets the configured prefix (`metrics.prefix`, `lxd` by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// Rendered as `<prefix>_<name>`: every instance metric and most daemon metrics.
    Prefixed,
    /// Rendered as `<name>`: the standard `process_*` metrics.
    Bare,
}

/// The static description of a family: name, help text, type.
///
/// Collectors usually declare these as constants:
/// ```
/// use lxmetrics_core::metric::MetricDesc;
/// const PROCS: MetricDesc = MetricDesc::gauge("procs_total", "Number of running processes");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MetricDesc {
    /// Name without the prefix, e.g. `cpu_seconds_total`.
    pub name: Cow<'static, str>,
    /// One line of help text.
    pub help: Cow<'static, str>,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// Whether the configured prefix is prepended.
    pub namespace: Namespace,
}

impl MetricDesc {
    /// A prefixed counter; counter names should end in `_total`.
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        MetricDesc {
            name: Cow::Borrowed(name),
            help: Cow::Borrowed(help),
            kind: MetricKind::Counter,
            namespace: Namespace::Prefixed,
        }
    }

    /// A prefixed gauge.
    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        MetricDesc {
            name: Cow::Borrowed(name),
            help: Cow::Borrowed(help),
            kind: MetricKind::Gauge,
            namespace: Namespace::Prefixed,
        }
    }

    /// The same description without the prefix (for standard names like `process_*`).
    pub const fn bare(mut self) -> Self {
        self.namespace = Namespace::Bare;
        self
    }

    /// The name as Prometheus sees it under `prefix` (`metrics.prefix`): collisions are
    /// judged on this, so a bare `lxd_cpu_seconds_total` and a prefixed
    /// `cpu_seconds_total` are the same family.
    pub fn rendered_name(&self, prefix: &str) -> String {
        match self.namespace {
            Namespace::Prefixed if !prefix.is_empty() => format!("{prefix}_{}", self.name),
            _ => self.name.to_string(),
        }
    }
}

/// Label values of one sample, in the order of its family's label names.
pub type LabelValues = SmallVec<[CompactString; 2]>;

/// One series value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The instance this series belongs to, or `None` for a series about the host or daemon.
    pub instance: Option<InstanceIndex>,
    /// Values of the family's extra labels, same order and count as [`Family::label_names`].
    pub label_values: LabelValues,
    /// The value. NaN and infinities are encoded as Prometheus spells them.
    pub value: f64,
}

/// One metric family: a description, its extra label names and its samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// Name, help and type.
    pub desc: MetricDesc,
    /// Names of the labels each sample carries besides `name`, `project` and `type`.
    pub label_names: SmallVec<[CompactString; 2]>,
    /// The series.
    pub samples: Vec<Sample>,
}

impl Family {
    /// An empty family with the given extra label names.
    pub fn new(desc: MetricDesc, label_names: &[&str]) -> Self {
        Family {
            desc,
            label_names: label_names
                .iter()
                .map(|n| CompactString::from(*n))
                .collect(),
            samples: Vec::new(),
        }
    }

    /// Adds a series for an instance. `label_values` must match [`Family::label_names`]
    /// in length; a mismatch is caught when the snapshot is assembled and drops the family.
    pub fn push<I, V>(&mut self, instance: InstanceIndex, label_values: I, value: f64)
    where
        I: IntoIterator<Item = V>,
        V: Into<CompactString>,
    {
        self.samples.push(Sample {
            instance: Some(instance),
            label_values: label_values.into_iter().map(Into::into).collect(),
            value,
        });
    }

    /// Adds a series that belongs to no instance (host or daemon level).
    pub fn push_unscoped<I, V>(&mut self, label_values: I, value: f64)
    where
        I: IntoIterator<Item = V>,
        V: Into<CompactString>,
    {
        self.samples.push(Sample {
            instance: None,
            label_values: label_values.into_iter().map(Into::into).collect(),
            value,
        });
    }
}

/// True when `name` is a valid Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// True when `name` is a valid Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`, not `__*`).
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.starts_with("__")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_follow_prometheus_grammar() {
        assert!(is_valid_metric_name("lxd_memory_Active_anon_bytes"));
        assert!(is_valid_metric_name("a:b_c"));
        assert!(!is_valid_metric_name(""));
        assert!(!is_valid_metric_name("1abc"));
        assert!(!is_valid_metric_name("a-b"));
        assert!(!is_valid_metric_name("ä"));
    }

    #[test]
    fn label_names_follow_prometheus_grammar() {
        assert!(is_valid_label_name("device"));
        assert!(is_valid_label_name("_x1"));
        assert!(!is_valid_label_name("__name__"));
        assert!(!is_valid_label_name("a:b"));
        assert!(!is_valid_label_name("9"));
    }

    #[test]
    fn short_label_values_stay_inline() {
        let mut f = Family::new(
            MetricDesc::counter("cpu_seconds_total", "h"),
            &["cpu", "mode"],
        );
        f.push(0, ["12", "system"], 1.0);
        assert!(f.samples[0]
            .label_values
            .iter()
            .all(|v| !v.is_heap_allocated()));
        assert!(!f.samples[0].label_values.spilled());
    }
}
