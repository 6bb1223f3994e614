//! The Prometheus remote-write 1.0 wire format: protobuf `WriteRequest` messages,
//! snappy block-compressed. The messages are declared here with prost's derive (no
//! protoc), field numbers as in Prometheus' `prompb/types.proto` and `remote.proto`.
//!
//! A snapshot is encoded series by series into requests of at most [`MAX_SERIES`]
//! series, so the uncompressed buffer stays small at any fleet size.

use lxmetrics_plugin::{Family, Instance, Sample};
use prost::Message;

/// Series per request, as Prometheus' own `max_samples_per_send` default.
pub const MAX_SERIES: usize = 2000;

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, Message)]
pub struct WireSample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Sorted by name, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// One sample per push.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<WireSample>,
}

/// `prometheus.WriteRequest` (only the field we send).
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// What every series of one push shares.
pub struct PushContext<'a> {
    /// `metrics.prefix`.
    pub prefix: &'a str,
    /// The snapshot's instances, by index.
    pub instances: &'a [Instance],
    /// Added to every series unless the series has that label already.
    pub external_labels: &'a [(String, String)],
    /// The samples' timestamp.
    pub timestamp_ms: i64,
}

/// Encodes `families` into snappy-compressed `WriteRequest` bodies of at most
/// [`MAX_SERIES`] series each.
pub fn encode_batches(context: &PushContext<'_>, families: &[&Family]) -> Vec<Vec<u8>> {
    let mut batches = Vec::new();
    let mut buffer = Vec::with_capacity(256 * 1024);
    let mut in_buffer = 0;
    let mut series = TimeSeries::default();
    let mut pool = Vec::new();
    for family in families {
        let name = family.desc.rendered_name(context.prefix);
        let mut suffixed = String::with_capacity(name.len() + 7);
        for (i, sample) in family.samples.iter().enumerate() {
            // A histogram's or summary's series each have their own name.
            let name = match family.suffix(i).as_str() {
                "" => name.as_str(),
                suffix => {
                    suffixed.clear();
                    suffixed.push_str(&name);
                    suffixed.push_str(suffix);
                    suffixed.as_str()
                }
            };
            let labels = family.labels_of(i);
            fill(
                &mut series,
                &mut pool,
                context,
                name,
                family,
                labels,
                sample,
            );
            // Field 1 of WriteRequest, length-delimited: requests concatenate.
            prost::encoding::message::encode(1, &series, &mut buffer);
            in_buffer += 1;
            if in_buffer == MAX_SERIES {
                batches.push(compress(&buffer));
                buffer.clear();
                in_buffer = 0;
            }
        }
    }
    if in_buffer > 0 {
        batches.push(compress(&buffer));
    }
    batches
}

/// Fills `series` for one sample with the first `own_labels` of the family's labels.
/// Label strings come back through `pool` after each series, so once the buffers have
/// grown there is no allocation per sample.
fn fill(
    series: &mut TimeSeries,
    pool: &mut Vec<Label>,
    context: &PushContext<'_>,
    name: &str,
    family: &Family,
    own_labels: usize,
    sample: &Sample,
) {
    pool.append(&mut series.labels);
    let labels = &mut series.labels;
    let mut push = |labels: &mut Vec<Label>, name: &str, value: &str| {
        let mut label = pool.pop().unwrap_or_default();
        label.name.clear();
        label.name.push_str(name);
        label.value.clear();
        label.value.push_str(value);
        labels.push(label);
    };
    push(labels, "__name__", name);
    if let Some(instance) = sample
        .instance
        .and_then(|i| context.instances.get(i as usize))
    {
        push(labels, "name", &instance.name);
        push(labels, "project", &instance.project);
        push(labels, "type", instance.kind.as_str());
    }
    for (label, value) in family
        .label_names
        .iter()
        .zip(sample.label_values.iter())
        .take(own_labels)
    {
        push(labels, label, value);
    }
    let own = labels.len();
    for (label, value) in context.external_labels {
        // A series' own label wins over an external one of the same name.
        if !labels[..own].iter().any(|l| &l.name == label) {
            push(labels, label, value);
        }
    }
    labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    series.samples.clear();
    series.samples.push(WireSample {
        value: sample.value,
        timestamp: context.timestamp_ms,
    });
}

fn compress(protobuf: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(protobuf)
        .unwrap_or_default()
}

/// Decodes a body back (tests and debugging).
pub fn decode(body: &[u8]) -> Result<WriteRequest, String> {
    let protobuf = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| e.to_string())?;
    WriteRequest::decode(protobuf.as_slice()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lxmetrics_plugin::{MetricDesc, Namespace, SeriesOf};

    #[test]
    fn series_carry_sorted_labels_and_are_split_into_batches() {
        let instances = vec![Instance::container("web", "lxc.payload.web")];
        let mut family = Family::new(MetricDesc::counter("cpu_seconds_total", "h"), &["mode"]);
        for i in 0..(MAX_SERIES + 5) {
            family.push(0, [format!("m{i}")], i as f64);
        }
        let mut uptime = Family::new(MetricDesc::gauge("uptime_seconds", "h"), &[]);
        uptime.push(SeriesOf::HOST, (), 7.0);
        let external = [
            ("job".to_owned(), "lxmetrics".to_owned()),
            ("mode".to_owned(), "ignored".to_owned()),
        ];
        let context = PushContext {
            prefix: "lxd",
            instances: &instances,
            external_labels: &external,
            timestamp_ms: 1_700_000_000_000,
        };
        let batches = encode_batches(&context, &[&family, &uptime]);
        assert_eq!(batches.len(), 2);
        let first = decode(&batches[0]).unwrap();
        assert_eq!(first.timeseries.len(), MAX_SERIES);
        let labels: Vec<(&str, &str)> = first.timeseries[0]
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("__name__", "lxd_cpu_seconds_total"),
                ("job", "lxmetrics"),
                ("mode", "m0"),
                ("name", "web"),
                ("project", "default"),
                ("type", "container"),
            ]
        );
        let second = decode(&batches[1]).unwrap();
        assert_eq!(second.timeseries.len(), 6);
        let last = second.timeseries.last().unwrap();
        assert_eq!(last.labels[0].value, "lxd_uptime_seconds");
        assert_eq!(
            last.samples,
            vec![WireSample {
                value: 7.0,
                timestamp: 1_700_000_000_000
            }]
        );
    }

    #[test]
    fn histogram_series_have_their_own_names_and_le_only_on_buckets() {
        use lxmetrics_plugin::{MetricKind, SeriesSuffix};
        let mut family = Family::new(
            MetricDesc {
                name: "job_seconds".into(),
                help: "h".into(),
                kind: MetricKind::Histogram,
                namespace: Namespace::Bare,
            },
            &["le"],
        );
        family.push(SeriesOf::HOST.part(SeriesSuffix::Bucket), ["+Inf"], 3.0);
        family.push(SeriesOf::HOST.part(SeriesSuffix::Sum), [""], 4.5);
        family.push(SeriesOf::HOST.part(SeriesSuffix::Count), [""], 3.0);
        let context = PushContext {
            prefix: "lxd",
            instances: &[],
            external_labels: &[],
            timestamp_ms: 0,
        };
        let request = decode(&encode_batches(&context, &[&family])[0]).unwrap();
        let series: Vec<Vec<(&str, &str)>> = request
            .timeseries
            .iter()
            .map(|t| {
                t.labels
                    .iter()
                    .map(|l| (l.name.as_str(), l.value.as_str()))
                    .collect()
            })
            .collect();
        assert_eq!(
            series,
            [
                vec![("__name__", "job_seconds_bucket"), ("le", "+Inf")],
                vec![("__name__", "job_seconds_sum")],
                vec![("__name__", "job_seconds_count")],
            ]
        );
    }
}
