//! Property tests of the exposition encoders, checked by parsing their output with the
//! strict text-format parser (`prom_text`, which follows the Prometheus 0.0.4 grammar and
//! refuses duplicate series):
//! - any label value, instance name and project (any Unicode, quotes, backslashes,
//!   newlines) comes back exactly as it went in, in both formats;
//! - whatever collectors produce (duplicates included), the output never holds the same
//!   series twice.

use std::sync::Arc;

use lxmetrics_core::exposition::{ContentEncoding, Format};
use lxmetrics_core::project_filter::ProjectFilter;
use lxmetrics_core::scrape::{encode_instances, ScrapeRequest};
use lxmetrics_core::snapshot::SnapshotBuilder;
use lxmetrics_plugin::{Collection, Family, Instance, InstanceType, MetricDesc};
use lxmetrics_plugins::prom_text::parse;
use proptest::prelude::*;

fn encode(builder: SnapshotBuilder, format: Format) -> String {
    let snapshot = builder.finish();
    let request = ScrapeRequest {
        filter: ProjectFilter::All,
        format,
        encoding: ContentEncoding::Identity,
    };
    String::from_utf8(encode_instances(&snapshot, "lxd", &request)).expect("UTF-8 output")
}

fn instance(name: String, project: String) -> Instance {
    Instance::new(name, project, InstanceType::Container, "x")
}

/// Any string, with the characters that need escaping made likely.
fn nasty_string() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just('\\'),
            Just('"'),
            Just('\n'),
            Just('{'),
            Just('}'),
            Just(','),
            Just('='),
            Just(' '),
            any::<char>(),
        ],
        0..24,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn label_values_round_trip(
        value in nasty_string(),
        name in nasty_string(),
        project in nasty_string(),
        help in nasty_string(),
        openmetrics in any::<bool>(),
    ) {
        let instances: Arc<[Instance]> = vec![instance(name.clone(), project.clone())].into();
        let mut builder = SnapshotBuilder::new(instances, "lxd");
        let desc = MetricDesc {
            help: help.into(),
            ..MetricDesc::gauge("probe", "")
        };
        let mut family = Family::new(desc, &["device"]);
        family.push(0, [value.as_str()], 1.5);
        let mut collection = Collection::new();
        collection.push(family);
        builder.add_collection("probe", std::time::Duration::ZERO, collection);
        let format = if openmetrics { Format::OpenMetrics } else { Format::PrometheusText };

        let text = encode(builder, format);
        let families = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(families.len(), 1);
        let labels = &families[0].samples[0].labels;
        let get = |key: &str| labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        prop_assert_eq!(get("name"), Some(name));
        prop_assert_eq!(get("project"), Some(project));
        prop_assert_eq!(get("type"), Some("container".to_owned()));
        prop_assert_eq!(get("device"), Some(value));
        prop_assert_eq!(families[0].samples[0].value, 1.5);
    }

    #[test]
    fn output_never_repeats_a_series(
        samples in prop::collection::vec(
            (0u32..3, 0usize..3, prop::sample::select(vec!["a", "b", "c"]), any::<i32>()),
            0..60,
        ),
    ) {
        let instances: Arc<[Instance]> = (0..3)
            .map(|i| instance(format!("c{i}"), "default".into()))
            .collect::<Vec<_>>()
            .into();
        let mut builder = SnapshotBuilder::new(instances, "lxd");
        // Three collectors; the same family name from two of them must not double up.
        for collector in 0..3usize {
            let mut family = Family::new(MetricDesc::gauge("shared", "h"), &["k"]);
            let mut own = Family::new(MetricDesc::gauge("own", "h"), &["k"]);
            for (instance, owner, key, value) in &samples {
                if *owner == collector {
                    family.push(*instance, [*key], f64::from(*value));
                    own.push(*instance, [*key], f64::from(*value));
                }
            }
            let mut collection = Collection::new();
            collection.push(family);
            if collector == 0 {
                collection.push(own);
            }
            builder.add_collection(["x", "y", "z"][collector], std::time::Duration::ZERO, collection);
        }
        let text = encode(builder, Format::PrometheusText);
        // The parser refuses a repeated series and a family that appears twice.
        let parsed = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let mut seen = std::collections::HashSet::new();
        for family in &parsed {
            prop_assert!(seen.insert(family.name.clone()), "family {} twice", family.name);
        }
    }
}
