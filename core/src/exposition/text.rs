//! The text encoders: Prometheus 0.0.4 and OpenMetrics 1.0, written into one buffer.
//!
//! Both formats share the sample line grammar; they differ in three places: OpenMetrics
//! names a counter family without its `_total` suffix on `# TYPE`/`# HELP`, escapes `"`
//! in help text, and ends with `# EOF` (written by [`finish`]). Series are written in
//! the order collectors produced them, labels as `name,project,type` then the family's
//! own labels in declared order, so output is stable across scrapes. No timestamps.

use lxmetrics_plugin::{Family, Instance, InstanceIndex, MetricKind, Sample};

use super::Format;

/// Escapes a label value into `out` (`\` `"` and newline, the same in both formats).
pub fn escape_label_value(value: &str, out: &mut Vec<u8>) {
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'"' => b"\\\"",
            b'\n' => b"\\n",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

fn escape_help(help: &str, format: Format, out: &mut Vec<u8>) {
    for ch in help.chars() {
        match ch {
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '"' if format == Format::OpenMetrics => out.extend_from_slice(b"\\\""),
            _ => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// The `name="..",project="..",type=".."` label text of an instance, rendered once per
/// refresh and copied into each of its series.
pub fn render_instance_labels(instance: &Instance) -> Box<[u8]> {
    let mut out = Vec::with_capacity(48 + instance.name.len() + instance.project.len());
    out.extend_from_slice(b"name=\"");
    escape_label_value(&instance.name, &mut out);
    out.extend_from_slice(b"\",project=\"");
    escape_label_value(&instance.project, &mut out);
    out.extend_from_slice(b"\",type=\"");
    out.extend_from_slice(instance.kind.as_str().as_bytes());
    out.push(b'"');
    out.into_boxed_slice()
}

/// Writes a sample value: integers exactly, other values in shortest round-trip form,
/// and the special values as `NaN`, `+Inf` and `-Inf`.
pub fn write_value(value: f64, out: &mut Vec<u8>) {
    const EXACT_INT: f64 = 9_007_199_254_740_992.0; // 2^53
    if value.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if value.is_infinite() {
        out.extend_from_slice(if value > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if value.fract() == 0.0 && value.abs() < EXACT_INT {
        // Exact: |value| < 2^53 fits in i64 without rounding.
        out.extend_from_slice(itoa::Buffer::new().format(value as i64).as_bytes());
    } else {
        out.extend_from_slice(ryu::Buffer::new().format_finite(value).as_bytes());
    }
}

/// Everything the encoder needs besides the families.
pub struct EncodeContext<'a> {
    /// Output format.
    pub format: Format,
    /// The configured prefix (`metrics.prefix`).
    pub prefix: &'a str,
    /// Pre-rendered instance labels, indexed by [`InstanceIndex`].
    pub instance_labels: &'a [Box<[u8]>],
    /// Which series to write: `None` instance means a host or daemon series.
    pub visible: &'a dyn Fn(Option<InstanceIndex>) -> bool,
    /// Which projects' host series to write, for host series that carry a `project`
    /// label (the inventory's project families): they follow the project, not `visible`.
    pub project_visible: &'a dyn Fn(&str) -> bool,
}

impl EncodeContext<'_> {
    /// Whether `sample` of a family whose `project` label is at `project_label` is shown.
    fn shows(&self, sample: &Sample, project_label: Option<usize>) -> bool {
        match (sample.instance, project_label) {
            (None, Some(p)) => sample
                .label_values
                .get(p)
                .is_some_and(|project| (self.project_visible)(project)),
            (instance, _) => (self.visible)(instance),
        }
    }
}

/// Where a family's `project` label is, if it has one.
fn project_label(family: &Family) -> Option<usize> {
    family.label_names.iter().position(|l| l == "project")
}

/// Appends the families to `out`. Families with no visible sample are left out entirely.
pub fn encode_families(ctx: &EncodeContext<'_>, families: &[Family], out: &mut Vec<u8>) {
    let mut name = Vec::with_capacity(64);
    for family in families {
        let project = project_label(family);
        let mut visible = family.samples.iter().filter(|s| ctx.shows(s, project));
        let Some(first) = visible.next() else {
            continue;
        };
        family.desc.render_name_into(ctx.prefix, &mut name);
        write_header(ctx.format, family, &name, out);
        if !family.suffixes.is_empty() {
            encode_parts(ctx, family, &name, out);
            continue;
        }
        // Sample lines carry the family's name in both formats (a counter without
        // `_total` is `unknown` in OpenMetrics, see `write_header`).
        let labels = family.label_names.len();
        write_sample(ctx, family, &name, labels, first, out);
        for sample in visible {
            write_sample(ctx, family, &name, labels, sample, out);
        }
    }
}

/// The samples of a histogram or summary: each under its suffixed name, the bound label
/// (`le`, `quantile`) only where it belongs.
fn encode_parts(ctx: &EncodeContext<'_>, family: &Family, name: &[u8], out: &mut Vec<u8>) {
    let mut suffixed = Vec::with_capacity(name.len() + 7);
    let project = project_label(family);
    for (i, sample) in family.samples.iter().enumerate() {
        if !ctx.shows(sample, project) {
            continue;
        }
        suffixed.clear();
        suffixed.extend_from_slice(name);
        suffixed.extend_from_slice(family.suffix(i).as_str().as_bytes());
        write_sample(ctx, family, &suffixed, family.labels_of(i), sample, out);
    }
}

/// Appends the end marker the format needs (`# EOF` for OpenMetrics, nothing for text).
pub fn finish(format: Format, out: &mut Vec<u8>) {
    if format == Format::OpenMetrics {
        out.extend_from_slice(b"# EOF\n");
    }
}

/// Writes `# HELP` and `# TYPE`. OpenMetrics names a counter family without `_total`.
/// A counter whose name does not end in `_total` (LXD's `lxd_uptime_seconds`, a relayed
/// text-format counter) is `unknown` in OpenMetrics, so its series keeps one name in
/// Prometheus whichever format a scraper negotiates.
fn write_header(format: Format, family: &Family, name: &[u8], out: &mut Vec<u8>) {
    let om_counter_named_total = name.ends_with(b"_total");
    let family_name = match (format, family.desc.kind) {
        (Format::OpenMetrics, MetricKind::Counter) => name.strip_suffix(b"_total").unwrap_or(name),
        _ => name,
    };
    out.extend_from_slice(b"# HELP ");
    out.extend_from_slice(family_name);
    out.push(b' ');
    escape_help(&family.desc.help, format, out);
    out.extend_from_slice(b"\n# TYPE ");
    out.extend_from_slice(family_name);
    out.push(b' ');
    let kind = match format {
        Format::OpenMetrics
            if family.desc.kind == MetricKind::Counter && !om_counter_named_total =>
        {
            MetricKind::Untyped.as_openmetrics_str()
        }
        Format::OpenMetrics => family.desc.kind.as_openmetrics_str(),
        Format::PrometheusText => family.desc.kind.as_str(),
    };
    out.extend_from_slice(kind.as_bytes());
    out.push(b'\n');
}

/// Writes one sample line with the first `labels` of the family's own labels.
fn write_sample(
    ctx: &EncodeContext<'_>,
    family: &Family,
    name: &[u8],
    labels: usize,
    sample: &Sample,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(name);
    let instance_labels = sample
        .instance
        .and_then(|i| ctx.instance_labels.get(i as usize));
    if instance_labels.is_some() || labels > 0 {
        out.push(b'{');
        let mut first = true;
        if let Some(labels) = instance_labels {
            out.extend_from_slice(labels);
            first = false;
        }
        for (label, value) in family
            .label_names
            .iter()
            .zip(sample.label_values.iter())
            .take(labels)
        {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(label.as_bytes());
            out.extend_from_slice(b"=\"");
            escape_label_value(value, out);
            out.push(b'"');
        }
        out.push(b'}');
    }
    out.push(b' ');
    write_value(sample.value, out);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use lxmetrics_plugin::{MetricDesc, SeriesOf};

    fn encode(format: Format, families: &[Family], instances: &[Instance]) -> String {
        let labels: Vec<_> = instances.iter().map(render_instance_labels).collect();
        let ctx = EncodeContext {
            format,
            prefix: "lxd",
            instance_labels: &labels,
            visible: &|_| true,
            project_visible: &|_| true,
        };
        let mut out = Vec::new();
        encode_families(&ctx, families, &mut out);
        finish(format, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn histograms_and_summaries_write_each_series_under_its_name() {
        use lxmetrics_plugin::{MetricKind, SeriesSuffix};
        let desc = |name: &'static str, kind| MetricDesc {
            name: name.into(),
            help: "h".into(),
            kind,
            namespace: lxmetrics_plugin::Namespace::Bare,
        };
        let mut h = Family::new(desc("job_seconds", MetricKind::Histogram), &["job", "le"]);
        h.push(
            SeriesOf::instance(0).part(SeriesSuffix::Bucket),
            ["a", "1"],
            2.0,
        );
        h.push(
            SeriesOf::instance(0).part(SeriesSuffix::Bucket),
            ["a", "+Inf"],
            3.0,
        );
        h.push(
            SeriesOf::instance(0).part(SeriesSuffix::Sum),
            ["a", ""],
            4.5,
        );
        h.push(
            SeriesOf::instance(0).part(SeriesSuffix::Count),
            ["a", ""],
            3.0,
        );
        let mut s = Family::new(desc("rpc_seconds", MetricKind::Summary), &["quantile"]);
        s.push(SeriesOf::HOST.part(SeriesSuffix::Plain), ["0.5"], 0.25);
        s.push(SeriesOf::HOST.part(SeriesSuffix::Sum), [""], 10.0);
        s.push(SeriesOf::HOST.part(SeriesSuffix::Count), [""], 40.0);
        let instances = [Instance::container("c1", "c1")];
        let i = "name=\"c1\",project=\"default\",type=\"container\"";
        let want = format!(
            "# HELP job_seconds h\n# TYPE job_seconds histogram\n\
             job_seconds_bucket{{{i},job=\"a\",le=\"1\"}} 2\n\
             job_seconds_bucket{{{i},job=\"a\",le=\"+Inf\"}} 3\n\
             job_seconds_sum{{{i},job=\"a\"}} 4.5\n\
             job_seconds_count{{{i},job=\"a\"}} 3\n\
             # HELP rpc_seconds h\n# TYPE rpc_seconds summary\n\
             rpc_seconds{{quantile=\"0.5\"}} 0.25\n\
             rpc_seconds_sum 10\n\
             rpc_seconds_count 40\n"
        );
        let families = [h, s];
        assert_eq!(encode(Format::PrometheusText, &families, &instances), want);
        assert_eq!(
            encode(Format::OpenMetrics, &families, &instances),
            format!("{want}# EOF\n")
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = Vec::new();
        escape_label_value("a\\b\"c\nd", &mut out);
        assert_eq!(out, b"a\\\\b\\\"c\\nd");
        let mut out = Vec::new();
        escape_label_value("plain ünïcode", &mut out);
        assert_eq!(out, "plain ünïcode".as_bytes());
    }

    #[test]
    fn help_escaping_differs_by_format() {
        let mut text = Vec::new();
        escape_help("say \"hi\"\\\n", Format::PrometheusText, &mut text);
        assert_eq!(text, b"say \"hi\"\\\\\\n");
        let mut om = Vec::new();
        escape_help("say \"hi\"\\\n", Format::OpenMetrics, &mut om);
        assert_eq!(om, b"say \\\"hi\\\"\\\\\\n");
    }

    #[test]
    fn values_are_exact_or_shortest() {
        let cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (42.0, "42"),
            (-7.0, "-7"),
            (0.5, "0.5"),
            (1e300, "1e300"),
            (9_007_199_254_740_993.0, "9007199254740992.0"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (value, expected) in cases {
            let mut out = Vec::new();
            write_value(value, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "value {value}");
        }
    }

    fn sample_families() -> (Vec<Family>, Vec<Instance>) {
        let mut web = Instance::container("web \"1\"", "lxc.payload.web");
        web.project = "prod".into();
        let mut cpu = Family::new(
            MetricDesc::counter("cpu_seconds_total", "CPU time"),
            &["cpu", "mode"],
        );
        cpu.push(0, ["0", "user"], 1.5);
        let mut procs = Family::new(MetricDesc::gauge("procs_total", "Processes"), &[]);
        procs.push(0, (), 3.0);
        let mut start = Family::new(
            MetricDesc::gauge("process_start_time_seconds", "Start").bare(),
            &[],
        );
        start.push(SeriesOf::HOST, (), 1700000000.0);
        (vec![cpu, procs, start], vec![web])
    }

    #[test]
    fn prometheus_text_layout() {
        let (families, instances) = sample_families();
        assert_eq!(
            encode(Format::PrometheusText, &families, &instances),
            "# HELP lxd_cpu_seconds_total CPU time\n\
             # TYPE lxd_cpu_seconds_total counter\n\
             lxd_cpu_seconds_total{name=\"web \\\"1\\\"\",project=\"prod\",type=\"container\",cpu=\"0\",mode=\"user\"} 1.5\n\
             # HELP lxd_procs_total Processes\n\
             # TYPE lxd_procs_total gauge\n\
             lxd_procs_total{name=\"web \\\"1\\\"\",project=\"prod\",type=\"container\"} 3\n\
             # HELP process_start_time_seconds Start\n\
             # TYPE process_start_time_seconds gauge\n\
             process_start_time_seconds 1700000000\n"
        );
    }

    #[test]
    fn openmetrics_layout() {
        let (families, instances) = sample_families();
        let out = encode(Format::OpenMetrics, &families, &instances);
        assert!(out.starts_with(
            "# HELP lxd_cpu_seconds CPU time\n# TYPE lxd_cpu_seconds counter\nlxd_cpu_seconds_total{"
        ));
        // A gauge keeps its name even when it ends in _total (LXD's lxd_procs_total).
        assert!(out.contains("# TYPE lxd_procs_total gauge\nlxd_procs_total{"));
        assert!(out.ends_with("process_start_time_seconds 1700000000\n# EOF\n"));
    }

    #[test]
    fn a_counter_without_total_keeps_its_name_in_openmetrics() {
        let mut f = Family::new(MetricDesc::counter("uptime_seconds", "h"), &[]);
        f.push(SeriesOf::HOST, (), 1.0);
        let out = encode(Format::OpenMetrics, &[f], &[]);
        assert_eq!(
            out,
            "# HELP lxd_uptime_seconds h\n# TYPE lxd_uptime_seconds unknown\nlxd_uptime_seconds 1\n# EOF\n"
        );
    }

    #[test]
    fn untyped_is_unknown_in_openmetrics() {
        let desc = MetricDesc {
            kind: MetricKind::Untyped,
            ..MetricDesc::gauge("relayed", "h").bare()
        };
        let mut f = Family::new(desc, &[]);
        f.push(SeriesOf::HOST, (), 2.0);
        let families = [f];
        let text = encode(Format::PrometheusText, &families, &[]);
        assert_eq!(
            text,
            "# HELP relayed h\n# TYPE relayed untyped\nrelayed 2\n"
        );
        let om = encode(Format::OpenMetrics, &families, &[]);
        assert_eq!(
            om,
            "# HELP relayed h\n# TYPE relayed unknown\nrelayed 2\n# EOF\n"
        );
    }

    #[test]
    fn invisible_samples_and_empty_families_are_left_out() {
        let (families, instances) = sample_families();
        let labels: Vec<_> = instances.iter().map(render_instance_labels).collect();
        let ctx = EncodeContext {
            format: Format::PrometheusText,
            prefix: "lxd",
            instance_labels: &labels,
            visible: &|i| i.is_none(),
            project_visible: &|_| true,
        };
        let mut out = Vec::new();
        encode_families(&ctx, &families, &mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("cpu_seconds"), "{out}");
        assert!(out.contains("process_start_time_seconds 1700000000"));
    }

    #[test]
    fn host_series_with_a_project_label_follow_the_project() {
        let mut limits = Family::new(
            MetricDesc::gauge("project_limit", "h"),
            &["project", "resource"],
        );
        limits.push(SeriesOf::HOST, ["prod", "instances"], 10.0);
        limits.push(SeriesOf::HOST, ["dev", "instances"], -1.0);
        let mut pools = Family::new(MetricDesc::gauge("storage_pool_size_bytes", "h"), &["pool"]);
        pools.push(SeriesOf::HOST, ["default"], 1e9);
        let ctx = EncodeContext {
            format: Format::PrometheusText,
            prefix: "lxd",
            instance_labels: &[],
            visible: &|i| i.is_some(), // a caller limited to projects
            project_visible: &|p| p == "prod",
        };
        let mut out = Vec::new();
        encode_families(&ctx, &[limits, pools], &mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("lxd_project_limit{project=\"prod\",resource=\"instances\"} 10"));
        assert!(!out.contains("dev"), "{out}");
        assert!(
            !out.contains("storage_pool"),
            "host series without a project: {out}"
        );
    }
}
