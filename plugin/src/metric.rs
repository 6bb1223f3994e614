//! The metric model: families of samples as collectors produce them.
//!
//! A [`Family`] is one metric name with its help text, type and the names of its extra
//! labels. Each [`Sample`] names the instance it belongs to by index (the `name`,
//! `project` and `type` labels are rendered once per instance by the encoder) and holds
//! the values of the extra labels in the family's order, in a [`LabelList`] that keeps up
//! to two values of up to 24 bytes inline, so a typical sample (`cpu="3"`,
//! `mode="user"`) costs no heap allocation.

use std::borrow::Cow;
use std::fmt;

use compact_str::CompactString;
use smallvec::SmallVec;

use crate::instance::InstanceIndex;

/// Prometheus metric type of a family. More kinds may come (native histograms), so
/// matches need a wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MetricKind {
    /// A value that only goes up (and resets to zero on restart).
    Counter,
    /// A value that can go up and down.
    Gauge,
    /// A value whose kind its source did not say: series relayed from textfiles or
    /// commands without a `# TYPE` line. Rendered `untyped` (text) or `unknown`
    /// (OpenMetrics).
    Untyped,
    /// Cumulative buckets with their `_sum` and `_count`. The family's last label is
    /// `le`, and [`Family::suffixes`] says which series each sample is.
    Histogram,
    /// Quantiles with their `_sum` and `_count`. The family's last label is `quantile`,
    /// and [`Family::suffixes`] says which series each sample is.
    Summary,
}

impl MetricKind {
    /// The word used on Prometheus text `# TYPE` lines.
    pub const fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Untyped => "untyped",
            MetricKind::Histogram => "histogram",
            MetricKind::Summary => "summary",
        }
    }

    /// The suffixed names a family of this kind writes besides its own name: `_bucket`,
    /// `_sum`, `_count` for a histogram, `_sum`, `_count` for a summary.
    pub const fn suffixes(self) -> &'static [SeriesSuffix] {
        match self {
            MetricKind::Histogram => {
                &[SeriesSuffix::Bucket, SeriesSuffix::Sum, SeriesSuffix::Count]
            }
            MetricKind::Summary => &[SeriesSuffix::Sum, SeriesSuffix::Count],
            _ => &[],
        }
    }

    /// Every name the sample lines of a `name` family of this kind use: `name` itself and
    /// its suffixed names. Collisions are judged on these (a gauge `x_sum` and a summary
    /// `x` cannot both be served).
    pub fn served_names(self, name: &str) -> Vec<String> {
        std::iter::once(name.to_owned())
            .chain(
                self.suffixes()
                    .iter()
                    .map(|s| format!("{name}{}", s.as_str())),
            )
            .collect()
    }

    /// For a histogram or summary, the label that only its buckets or quantiles carry
    /// (`le`, `quantile`): it is the family's last label name.
    pub const fn bound_label(self) -> Option<&'static str> {
        match self {
            MetricKind::Histogram => Some("le"),
            MetricKind::Summary => Some("quantile"),
            _ => None,
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
/// use lxmetrics_plugin::MetricDesc;
/// const PROCS: MetricDesc = MetricDesc::gauge("procs_total", "Number of running processes");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MetricDesc {
    /// Name without the prefix, e.g. `cpu_seconds_total`.
    pub name: Cow<'static, str>,
    /// One line of help text.
    pub help: Cow<'static, str>,
    /// The Prometheus type.
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
        let mut name = Vec::with_capacity(prefix.len() + 1 + self.name.len());
        self.render_name_into(prefix, &mut name);
        String::from_utf8(name).unwrap_or_default()
    }

    /// Writes [`MetricDesc::rendered_name`] into `out` (cleared first): the one place the
    /// prefix is put in front of a name, for the text encoders and remote write alike.
    pub fn render_name_into(&self, prefix: &str, out: &mut Vec<u8>) {
        out.clear();
        if self.namespace == Namespace::Prefixed && !prefix.is_empty() {
            out.extend_from_slice(prefix.as_bytes());
            out.push(b'_');
        }
        out.extend_from_slice(self.name.as_bytes());
    }
}

/// Which series of a histogram or summary a sample is. Kept per family
/// ([`Family::suffixes`]), not per sample, so counters and gauges pay nothing for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SeriesSuffix {
    /// The family's own name: a summary's quantiles.
    #[default]
    Plain,
    /// `<name>_bucket`: a histogram bucket.
    Bucket,
    /// `<name>_sum`.
    Sum,
    /// `<name>_count`.
    Count,
}

impl SeriesSuffix {
    /// What is appended to the family name on the sample line.
    pub const fn as_str(self) -> &'static str {
        match self {
            SeriesSuffix::Plain => "",
            SeriesSuffix::Bucket => "_bucket",
            SeriesSuffix::Sum => "_sum",
            SeriesSuffix::Count => "_count",
        }
    }

    /// Whether a sample of a `kind` family with this suffix carries the bound label
    /// (`le` on buckets, `quantile` on quantiles); `_sum` and `_count` do not.
    pub const fn carries_bound_label(self, kind: MetricKind) -> bool {
        matches!(
            (kind, self),
            (MetricKind::Histogram, SeriesSuffix::Bucket)
                | (MetricKind::Summary, SeriesSuffix::Plain)
        )
    }
}

/// An ordered list of label names or values.
///
/// Opaque on purpose: how the strings are stored (today inline up to 24 bytes, two per
/// list without a heap allocation) is not part of the plugin contract. Build one with
/// [`Labels`] (what [`Family::push`] takes) or `collect()`; read it as `&str`s.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelList(SmallVec<[CompactString; 2]>);

/// The label values of one sample, in the order of its family's label names.
pub type LabelValues = LabelList;

impl LabelList {
    /// How many entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Entry `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<&str> {
        self.0.get(index).map(CompactString::as_str)
    }

    /// The entries in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + DoubleEndedIterator + Clone {
        self.0.iter().map(CompactString::as_str)
    }

    /// The last entry, if any.
    pub fn last(&self) -> Option<&str> {
        self.0.last().map(CompactString::as_str)
    }
}

impl std::ops::Index<usize> for LabelList {
    type Output = str;

    fn index(&self, index: usize) -> &str {
        self.0[index].as_str()
    }
}

impl<S: AsRef<str>, const N: usize> PartialEq<[S; N]> for LabelList {
    fn eq(&self, other: &[S; N]) -> bool {
        self.iter().eq(other.iter().map(AsRef::as_ref))
    }
}

impl fmt::Debug for LabelList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<S: AsRef<str>> FromIterator<S> for LabelList {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        LabelList(
            iter.into_iter()
                .map(|s| CompactString::from(s.as_ref()))
                .collect(),
        )
    }
}

/// The label values a sample is pushed with: `()` for none, an array, a slice or a `Vec`
/// of strings, or a ready [`LabelList`].
pub trait Labels {
    /// The values as a list.
    fn into_label_list(self) -> LabelList;
}

impl Labels for () {
    fn into_label_list(self) -> LabelList {
        LabelList::default()
    }
}

impl Labels for LabelList {
    fn into_label_list(self) -> LabelList {
        self
    }
}

impl<S: AsRef<str>, const N: usize> Labels for [S; N] {
    fn into_label_list(self) -> LabelList {
        self.iter().collect()
    }
}

impl<S: AsRef<str>> Labels for &[S] {
    fn into_label_list(self) -> LabelList {
        self.iter().collect()
    }
}

impl<S: AsRef<str>> Labels for Vec<S> {
    fn into_label_list(self) -> LabelList {
        self.iter().collect()
    }
}

/// Whom a sample belongs to and, for a histogram or summary, which of its series it is:
/// the first argument of [`Family::push`]. An [`InstanceIndex`] converts into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeriesOf {
    instance: Option<InstanceIndex>,
    suffix: SeriesSuffix,
}

impl SeriesOf {
    /// A series about the host or the daemon, not about one instance.
    pub const HOST: SeriesOf = SeriesOf {
        instance: None,
        suffix: SeriesSuffix::Plain,
    };

    /// A series of instance `index`.
    pub const fn instance(index: InstanceIndex) -> Self {
        SeriesOf {
            instance: Some(index),
            suffix: SeriesSuffix::Plain,
        }
    }

    /// The same owner, for the `suffix` series of a histogram or summary (its label
    /// values then end with the bound label's value, empty for `_sum` and `_count`).
    pub const fn part(mut self, suffix: SeriesSuffix) -> Self {
        self.suffix = suffix;
        self
    }
}

impl From<InstanceIndex> for SeriesOf {
    fn from(index: InstanceIndex) -> Self {
        SeriesOf::instance(index)
    }
}

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
    pub label_names: LabelList,
    /// The series.
    pub samples: Vec<Sample>,
    /// For histograms and summaries, which series each sample is (same length as
    /// `samples`); empty for every other kind. A `_sum` or `_count` sample holds an empty
    /// value for the bound label, which is not written.
    pub suffixes: Vec<SeriesSuffix>,
}

impl Family {
    /// An empty family with the given extra label names.
    pub fn new(desc: MetricDesc, label_names: &[&str]) -> Self {
        Family {
            desc,
            label_names: label_names.iter().collect(),
            samples: Vec::new(),
            suffixes: Vec::new(),
        }
    }

    /// The suffix of sample `index` (`Plain` for families without suffixes).
    pub fn suffix(&self, index: usize) -> SeriesSuffix {
        self.suffixes.get(index).copied().unwrap_or_default()
    }

    /// How many of the label names sample `index` carries: all, or all but the bound
    /// label for a histogram's or summary's `_sum` and `_count`.
    pub fn labels_of(&self, index: usize) -> usize {
        let all = self.label_names.len();
        match self.desc.kind.bound_label() {
            Some(_) if !self.suffix(index).carries_bound_label(self.desc.kind) => {
                all.saturating_sub(1)
            }
            _ => all,
        }
    }

    /// Keeps the samples (and their suffixes) for which `keep` is true.
    pub fn retain_samples(&mut self, mut keep: impl FnMut(&Sample, SeriesSuffix) -> bool) {
        if self.suffixes.is_empty() {
            self.samples.retain(|s| keep(s, SeriesSuffix::Plain));
            return;
        }
        let mut suffixes = std::mem::take(&mut self.suffixes).into_iter();
        let mut kept = Vec::with_capacity(suffixes.len());
        self.samples.retain(|s| {
            let suffix = suffixes.next().unwrap_or_default();
            let k = keep(s, suffix);
            if k {
                kept.push(suffix);
            }
            k
        });
        self.suffixes = kept;
    }

    /// Adds a series: `of` is an instance index, [`SeriesOf::HOST`], or either with
    /// [`SeriesOf::part`] for a histogram's or summary's series; `labels` are the values
    /// of [`Family::label_names`] in order (`()` for none). A length mismatch is caught
    /// when the snapshot is assembled and drops the family, never served half-labelled.
    pub fn push(&mut self, of: impl Into<SeriesOf>, labels: impl Labels, value: f64) {
        let of = of.into();
        self.samples.push(Sample {
            instance: of.instance,
            label_values: labels.into_label_list(),
            value,
        });
        if !self.desc.kind.suffixes().is_empty() || of.suffix != SeriesSuffix::Plain {
            self.suffixes
                .resize(self.samples.len() - 1, SeriesSuffix::Plain);
            self.suffixes.push(of.suffix);
        }
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
            .0
            .iter()
            .all(|v| !v.is_heap_allocated()));
        assert!(!f.samples[0].label_values.0.spilled());
    }
}
