//! A strict parser for the Prometheus text format (0.0.4), for series relayed from
//! textfiles and commands.
//!
//! Strict on purpose: out-of-process plugins are served only when their whole output is
//! right, so every problem is an error naming the line, never a skipped line. All five
//! types are understood. A histogram's series (`_bucket` with `le`, `_sum`, `_count`) and
//! a summary's (quantiles with `quantile`, `_sum`, `_count`) are checked the way
//! OpenMetrics requires, since the daemon may serve them in that format: numeric bounds,
//! buckets in increasing `le` order ending with `+Inf`, cumulative counts, `_count` equal
//! to the `+Inf` bucket. Their series are regrouped so each label set's series are
//! together. Client-side timestamps are refused (the daemon serves none).

use std::collections::{HashMap, HashSet};

use lxmetrics_plugin::{MetricKind, SeriesSuffix};

/// One series: its labels in the order they were written, and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedSample {
    /// Which series of a histogram or summary this is (`Plain` for other kinds).
    pub suffix: SeriesSuffix,
    /// Label names and (unescaped) values.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// One metric family as written: every sample of a name, with its help and type.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedFamily {
    /// The metric name.
    pub name: String,
    /// The `# HELP` text, unescaped.
    pub help: Option<String>,
    /// The declared type (untyped when there was no `# TYPE` line).
    pub kind: MetricKind,
    /// The series, in input order.
    pub samples: Vec<ParsedSample>,
}

/// Why an input was refused: the 1-based line and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, in one sentence.
    pub message: String,
}

/// Parses a whole exposition. Any error refuses the whole input.
pub fn parse(input: &str) -> Result<Vec<ParsedFamily>, ParseError> {
    let mut parser = Parser::default();
    for (i, line) in input.lines().enumerate() {
        parser.line_number = i + 1;
        parser
            .line(line.trim_end_matches('\r'))
            .map_err(|message| ParseError {
                line: i + 1,
                message,
            })?;
    }
    parser.finish_family().map_err(|message| ParseError {
        line: parser.family_line,
        message,
    })?;
    Ok(parser.families)
}

#[derive(Default)]
struct Parser {
    families: Vec<ParsedFamily>,
    /// Names of families that are finished (another family started after them).
    closed: HashSet<String>,
    /// Label sets (with the series suffix) already seen in the current family, to refuse
    /// duplicate series.
    series: HashSet<(SeriesSuffix, Vec<(String, String)>)>,
    /// The line being read, and the line the current family started on.
    line_number: usize,
    family_line: usize,
}

impl Parser {
    fn line(&mut self, line: &str) -> Result<(), String> {
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            return Ok(());
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            return self.comment(comment);
        }
        self.sample(trimmed)
    }

    fn comment(&mut self, comment: &str) -> Result<(), String> {
        let mut words = comment.trim_start().splitn(3, [' ', '\t']);
        let keyword = words.next().unwrap_or_default();
        if keyword != "HELP" && keyword != "TYPE" {
            return Ok(()); // an ordinary comment
        }
        let name = words.next().unwrap_or_default();
        if !lxmetrics_plugin::is_valid_metric_name(name) {
            return Err(format!(
                "# {keyword}: \"{name}\" is not a valid metric name"
            ));
        }
        let rest = words.next().unwrap_or_default();
        let index = self.family_for(name)?;
        let family = &mut self.families[index];
        if keyword == "HELP" {
            if family.help.is_some() {
                return Err(format!("second # HELP for {name}"));
            }
            family.help = Some(unescape_help(rest)?);
            return Ok(());
        }
        if !family.samples.is_empty() {
            return Err(format!("# TYPE for {name} comes after its samples"));
        }
        if family.kind != MetricKind::Untyped {
            return Err(format!("second # TYPE for {name}"));
        }
        family.kind = match rest.trim() {
            "counter" => MetricKind::Counter,
            "gauge" => MetricKind::Gauge,
            "untyped" => MetricKind::Untyped,
            "histogram" => MetricKind::Histogram,
            "summary" => MetricKind::Summary,
            other => return Err(format!("unknown type \"{other}\" for {name}")),
        };
        Ok(())
    }

    /// The family a sample line belongs to, and which of its series it is: a name with a
    /// suffix belongs to the current histogram or summary of the base name.
    fn family_for_sample(&mut self, name: &str) -> Result<(usize, SeriesSuffix), String> {
        if let Some(current) = self.families.last() {
            for suffix in current.kind.suffixes() {
                if name.strip_suffix(suffix.as_str()) == Some(current.name.as_str()) {
                    return Ok((self.families.len() - 1, *suffix));
                }
            }
        }
        let index = self.family_for(name)?;
        let family = &self.families[index];
        if family.kind == MetricKind::Histogram {
            return Err(format!(
                "{name} is a histogram: its series are {name}_bucket, {name}_sum and {name}_count"
            ));
        }
        Ok((index, SeriesSuffix::Plain))
    }

    fn sample(&mut self, line: &str) -> Result<(), String> {
        let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
        let name = &line[..name_end];
        if !lxmetrics_plugin::is_valid_metric_name(name) {
            return Err(format!("\"{name}\" is not a valid metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after_brace) = rest.strip_prefix('{') {
            rest = parse_labels(after_brace, &mut labels)?;
        }
        let mut fields = rest.split_ascii_whitespace();
        let value_text = fields
            .next()
            .ok_or_else(|| format!("{name} has no value"))?;
        let value =
            parse_value(value_text).ok_or_else(|| format!("\"{value_text}\" is not a number"))?;
        if fields.next().is_some() {
            return Err(format!(
                "{name} carries a timestamp (or trailing text); relayed series must not have timestamps"
            ));
        }
        let mut names: Vec<&str> = labels.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!("{name} repeats a label name"));
        }
        let (index, suffix) = self.family_for_sample(name)?;
        let mut key = labels.clone();
        key.sort();
        if !self.series.insert((suffix, key)) {
            return Err(format!("duplicate series for {name}"));
        }
        let family = &mut self.families[index];
        let bound = family.kind.bound_label();
        if let Some(bound) = bound {
            check_bound_label(family.kind, suffix, bound, name, &labels)?;
            names.retain(|n| *n != bound);
        }
        if let Some(first) = family.samples.first() {
            let mut expected: Vec<&str> = first
                .labels
                .iter()
                .map(|(n, _)| n.as_str())
                .filter(|n| Some(*n) != bound)
                .collect();
            expected.sort_unstable();
            if expected != names {
                return Err(format!(
                    "{name} has labels {{{}}} but earlier series had {{{}}}",
                    names.join(","),
                    expected.join(",")
                ));
            }
        }
        family.samples.push(ParsedSample {
            suffix,
            labels,
            value,
        });
        Ok(())
    }

    /// Checks the family that just ended: a histogram's or summary's series make sense
    /// together and are regrouped per label set.
    fn finish_family(&mut self) -> Result<(), String> {
        let line = self.family_line;
        let Some(family) = self.families.last_mut() else {
            return Ok(());
        };
        if family.kind.bound_label().is_none() {
            return Ok(());
        }
        group_by_label_set(family);
        check_composite(family).map_err(|e| format!("{e} (the family from line {line})"))
    }

    /// The index of the family `name` refers to: the current one, or a new one when `name` has not been
    /// seen. A name that comes back after another family started is an error, as the
    /// format requires each family to be one group.
    fn family_for(&mut self, name: &str) -> Result<usize, String> {
        let is_current = self.families.last().is_some_and(|f| f.name == name);
        if !is_current {
            if self.closed.contains(name) {
                return Err(format!("{name} appears again after other families"));
            }
            for suffix in [SeriesSuffix::Bucket, SeriesSuffix::Sum, SeriesSuffix::Count] {
                if let Some(base) = name.strip_suffix(suffix.as_str()) {
                    if self.closed.contains(base) {
                        return Err(format!("{name} appears again after other families"));
                    }
                }
            }
            self.finish_family()?;
            if let Some(last) = self.families.last() {
                self.closed.insert(last.name.clone());
            }
            self.family_line = self.line_number;
            self.series.clear();
            self.families.push(ParsedFamily {
                name: name.to_owned(),
                help: None,
                kind: MetricKind::Untyped,
                samples: Vec::new(),
            });
        }
        Ok(self.families.len() - 1)
    }
}

/// A bucket carries a numeric `le`, a quantile a `quantile` in [0, 1]; `_sum` and
/// `_count` carry neither.
fn check_bound_label(
    kind: MetricKind,
    suffix: SeriesSuffix,
    bound: &str,
    name: &str,
    labels: &[(String, String)],
) -> Result<(), String> {
    let value = labels.iter().find(|(n, _)| n == bound).map(|(_, v)| v);
    match (suffix.carries_bound_label(kind), value) {
        (true, None) => Err(format!("{name} has no \"{bound}\" label")),
        (false, Some(_)) => Err(format!("{name} must not have a \"{bound}\" label")),
        (true, Some(v)) => match parse_value(v) {
            Some(q) if bound == "quantile" && !(0.0..=1.0).contains(&q) => {
                Err(format!("{name}: quantile=\"{v}\" is not between 0 and 1"))
            }
            Some(b) if !b.is_nan() => Ok(()),
            _ => Err(format!("{name}: {bound}=\"{v}\" is not a number")),
        },
        (false, None) => Ok(()),
    }
}

/// The label set of a series without its bound label, sorted: what identifies one
/// histogram or summary among the family's.
fn label_set(labels: &[(String, String)], bound: &str) -> Vec<(String, String)> {
    let mut set: Vec<(String, String)> =
        labels.iter().filter(|(n, _)| n != bound).cloned().collect();
    set.sort();
    set
}

/// Puts each label set's series together (OpenMetrics requires it; the text format
/// allows them interleaved), in order of first appearance, keeping their order within.
fn group_by_label_set(family: &mut ParsedFamily) {
    let Some(bound) = family.kind.bound_label() else {
        return;
    };
    let mut first_seen: HashMap<Vec<(String, String)>, usize> = HashMap::new();
    let mut keyed: Vec<(usize, ParsedSample)> = std::mem::take(&mut family.samples)
        .into_iter()
        .map(|s| {
            let next = first_seen.len();
            let group = *first_seen
                .entry(label_set(&s.labels, bound))
                .or_insert(next);
            (group, s)
        })
        .collect();
    keyed.sort_by_key(|(group, _)| *group); // stable
    family.samples = keyed.into_iter().map(|(_, s)| s).collect();
}

/// Per label set of a histogram: buckets in increasing `le` order, cumulative, ending
/// with `+Inf`, and `_count` equal to the `+Inf` bucket. Samples are grouped already.
fn check_composite(family: &ParsedFamily) -> Result<(), String> {
    if family.kind != MetricKind::Histogram {
        return Ok(());
    }
    let name = &family.name;
    let mut start = 0;
    while start < family.samples.len() {
        let set = label_set(&family.samples[start].labels, "le");
        let end = family.samples[start..]
            .iter()
            .position(|s| label_set(&s.labels, "le") != set)
            .map_or(family.samples.len(), |n| start + n);
        let group = &family.samples[start..end];
        let mut previous: Option<(f64, f64)> = None;
        let mut count = None;
        for sample in group {
            match sample.suffix {
                SeriesSuffix::Bucket => {
                    let le = sample
                        .labels
                        .iter()
                        .find(|(n, _)| n == "le")
                        .and_then(|(_, v)| parse_value(v))
                        .unwrap_or(f64::NAN);
                    if let Some((last_le, last_value)) = previous {
                        if le <= last_le {
                            return Err(format!("{name}_bucket: le bounds must increase"));
                        }
                        if sample.value < last_value {
                            return Err(format!("{name}_bucket: bucket counts must be cumulative"));
                        }
                    }
                    previous = Some((le, sample.value));
                }
                SeriesSuffix::Count => count = Some(sample.value),
                _ => {}
            }
        }
        match previous {
            Some((le, inf)) if le == f64::INFINITY => {
                if count.is_some_and(|c| c != inf) {
                    return Err(format!("{name}_count differs from its +Inf bucket"));
                }
            }
            _ => return Err(format!("{name} has a series without a +Inf bucket")),
        }
        start = end;
    }
    Ok(())
}

/// Parses `name="value",...}` and returns what follows the closing brace.
fn parse_labels<'a>(
    mut input: &'a str,
    labels: &mut Vec<(String, String)>,
) -> Result<&'a str, String> {
    loop {
        input = input.trim_start();
        if let Some(rest) = input.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = input
            .find('=')
            .ok_or_else(|| "a label has no '='".to_owned())?;
        let label = input[..eq].trim();
        if !lxmetrics_plugin::is_valid_label_name(label) {
            return Err(format!("\"{label}\" is not a valid label name"));
        }
        let after = input[eq + 1..].trim_start();
        let quoted = after
            .strip_prefix('"')
            .ok_or_else(|| format!("the value of label {label} is not quoted"))?;
        let (value, rest) = unescape_label_value(quoted)?;
        labels.push((label.to_owned(), value));
        input = rest.trim_start();
        if let Some(rest) = input.strip_prefix(',') {
            input = rest;
        } else if !input.starts_with('}') {
            return Err(format!("expected ',' or '}}' after label {label}"));
        }
    }
}

/// Reads a label value up to its closing quote; returns it and the text after the quote.
fn unescape_label_value(input: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = input.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &input[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                Some((_, other)) => {
                    return Err(format!("unknown escape \\{other} in a label value"))
                }
                None => break,
            },
            c => value.push(c),
        }
    }
    Err("a label value is not closed".to_owned())
}

fn unescape_help(input: &str) -> Result<String, String> {
    let mut help = String::with_capacity(input.len());
    let mut chars = input.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            help.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => help.push('\\'),
            Some('n') => help.push('\n'),
            Some(other) => {
                // The format leaves other escapes undefined; keep them as written.
                help.push('\\');
                help.push(other);
            }
            None => help.push('\\'),
        }
    }
    Ok(help)
}

/// A sample value as Prometheus writes it: a float, or `+Inf`, `-Inf`, `NaN`.
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if text
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            text.parse().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_families_with_help_type_and_escapes() {
        let input = "# HELP app_requests_total Requests \\\\ served\\nsince start\n\
                     # TYPE app_requests_total counter\n\
                     app_requests_total{code=\"200\",path=\"/a\\\"b\"} 10\n\
                     app_requests_total{path=\"/\",code=\"500\"} 1e3\n\
                     # a comment\n\
                     \n\
                     app_up 1\r\n\
                     app_temp{zone=\"x\\ny\"} -Inf\n";
        let families = parse(input).unwrap();
        assert_eq!(families.len(), 3);
        let requests = &families[0];
        assert_eq!(requests.kind, MetricKind::Counter);
        assert_eq!(
            requests.help.as_deref(),
            Some("Requests \\ served\nsince start")
        );
        assert_eq!(
            requests.samples[0].labels,
            vec![
                ("code".into(), "200".into()),
                ("path".into(), "/a\"b".into())
            ]
        );
        assert_eq!(requests.samples[1].value, 1000.0);
        assert_eq!(families[1].kind, MetricKind::Untyped);
        assert_eq!(families[1].samples[0].value, 1.0);
        assert_eq!(families[2].samples[0].labels[0].1, "x\ny");
        assert_eq!(families[2].samples[0].value, f64::NEG_INFINITY);
    }

    #[test]
    fn a_type_line_may_come_before_help_and_samples_follow() {
        let families = parse("# TYPE a gauge\n# HELP a h\na 1\n# HELP b hb\nb 2\n").unwrap();
        assert_eq!(families.len(), 2);
        assert_eq!(families[0].kind, MetricKind::Gauge);
        assert_eq!(families[1].help.as_deref(), Some("hb"));
    }

    #[test]
    fn every_problem_names_its_line() {
        let cases = [
            ("a 1\nb{x=\"1\" 2\n", 2, "expected ','"),
            ("1a 1\n", 1, "not a valid metric name"),
            ("a{__x=\"1\"} 1\n", 1, "not a valid label name"),
            ("a{x=1} 1\n", 1, "not quoted"),
            ("a{x=\"1} 1\n", 1, "not closed"),
            ("a{x=\"\\t\"} 1\n", 1, "unknown escape"),
            ("a one\n", 1, "not a number"),
            ("a 0x10\n", 1, "not a number"),
            ("a\n", 1, "has no value"),
            ("a 1 1700000000000\n", 1, "timestamp"),
            ("a{x=\"1\",x=\"2\"} 1\n", 1, "repeats a label"),
            ("a{x=\"1\"} 1\na{x=\"1\"} 2\n", 2, "duplicate series"),
            ("a{x=\"1\"} 1\na{y=\"1\"} 2\n", 2, "earlier series had"),
            ("a 1\nb 1\na 2\n", 3, "appears again"),
            ("a 1\n# TYPE a gauge\n", 2, "after its samples"),
            ("# TYPE a gauge\n# TYPE a counter\n", 2, "second # TYPE"),
            ("# HELP a x\n# HELP a y\n", 2, "second # HELP"),
            ("# TYPE h histogram\nh 1\n", 2, "its series are h_bucket"),
            ("# TYPE h histogram\nh_bucket 1\n", 2, "no \"le\" label"),
            ("# TYPE h histogram\nh_bucket{le=\"x\"} 1\n", 2, "not a number"),
            ("# TYPE h histogram\nh_sum{le=\"1\"} 1\n", 2, "must not have"),
            ("# TYPE s summary\ns 1\n", 2, "no \"quantile\" label"),
            ("# TYPE s summary\ns{quantile=\"2\"} 1\n", 2, "between 0 and 1"),
            ("# TYPE h histogram\nh_bucket{le=\"1\"} 1\n", 1, "without a +Inf bucket"),
            (
                "# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\n",
                1,
                "must increase",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n",
                1,
                "cumulative",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\nx 1\n",
                4,
                "differs from its +Inf bucket",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nx 1\nh_sum 3\n",
                4,
                "appears again",
            ),
            ("# TYPE h histogram\nh_sum 1\nh_sum 2\n", 3, "duplicate series"),
            ("# TYPE a gauges\n", 1, "unknown type"),
        ];
        for (input, line, needle) in cases {
            let err = parse(input).expect_err(input);
            assert_eq!(err.line, line, "{input:?}: {err}");
            assert!(err.message.contains(needle), "{input:?}: {err}");
        }
    }

    #[test]
    fn histograms_and_summaries_parse_and_are_grouped_per_label_set() {
        // Interleaved as the text format allows; grouped as OpenMetrics requires.
        let input = "# HELP job_seconds How long jobs take\n\
                     # TYPE job_seconds histogram\n\
                     job_seconds_bucket{job=\"a\",le=\"1\"} 1\n\
                     job_seconds_bucket{job=\"b\",le=\"1\"} 0\n\
                     job_seconds_bucket{job=\"a\",le=\"+Inf\"} 2\n\
                     job_seconds_bucket{le=\"+Inf\",job=\"b\"} 1\n\
                     job_seconds_sum{job=\"a\"} 2.5\n\
                     job_seconds_count{job=\"a\"} 2\n\
                     job_seconds_sum{job=\"b\"} 9\n\
                     job_seconds_count{job=\"b\"} 1\n\
                     # TYPE rpc_seconds summary\n\
                     rpc_seconds{quantile=\"0.5\"} 0.1\n\
                     rpc_seconds{quantile=\"0.99\"} 0.4\n\
                     rpc_seconds_sum 12\n\
                     rpc_seconds_count 70\n";
        let families = parse(input).unwrap();
        assert_eq!(families.len(), 2);
        let h = &families[0];
        assert_eq!(h.kind, MetricKind::Histogram);
        let order: Vec<(SeriesSuffix, &str, f64)> = h
            .samples
            .iter()
            .map(|s| {
                let job = s.labels.iter().find(|(n, _)| n == "job").unwrap();
                (s.suffix, job.1.as_str(), s.value)
            })
            .collect();
        assert_eq!(
            order,
            [
                (SeriesSuffix::Bucket, "a", 1.0),
                (SeriesSuffix::Bucket, "a", 2.0),
                (SeriesSuffix::Sum, "a", 2.5),
                (SeriesSuffix::Count, "a", 2.0),
                (SeriesSuffix::Bucket, "b", 0.0),
                (SeriesSuffix::Bucket, "b", 1.0),
                (SeriesSuffix::Sum, "b", 9.0),
                (SeriesSuffix::Count, "b", 1.0),
            ]
        );
        let s = &families[1];
        assert_eq!(s.kind, MetricKind::Summary);
        let suffixes: Vec<SeriesSuffix> = s.samples.iter().map(|s| s.suffix).collect();
        assert_eq!(
            suffixes,
            [
                SeriesSuffix::Plain,
                SeriesSuffix::Plain,
                SeriesSuffix::Sum,
                SeriesSuffix::Count
            ]
        );
    }

    #[test]
    fn special_values_parse() {
        let families = parse("a{k=\"1\"} NaN\na{k=\"2\"} +Inf\na{k=\"3\"} -0.5e-3\n").unwrap();
        let values: Vec<f64> = families[0].samples.iter().map(|s| s.value).collect();
        assert!(values[0].is_nan());
        assert_eq!(values[1], f64::INFINITY);
        assert_eq!(values[2], -0.0005);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix and a few mutations of a valid input.
        let valid =
            "# HELP a_total h\\n\n# TYPE a_total counter\na_total{x=\"\\\"y\\\\\"} 1.5\nb 2\n";
        for end in 0..=valid.len() {
            if valid.is_char_boundary(end) {
                let _ = parse(&valid[..end]);
            }
        }
        let mut bytes = valid.as_bytes().to_vec();
        for i in 0..bytes.len() {
            let saved = bytes[i];
            for b in [b'{', b'}', b'"', b'\\', b'\n', b' ', b'=', b',', 0xff] {
                bytes[i] = b;
                let _ = parse(&String::from_utf8_lossy(&bytes));
            }
            bytes[i] = saved;
        }
    }
}
