//! A collector registered from another crate (this integration test is compiled as its
//! own crate) is found by core's registry without core knowing about it.

use lxmetrics_core::collector::{CollectError, Collection, Collector, Scope};
use lxmetrics_core::metric::{Family, MetricDesc};
use lxmetrics_core::registry::{self, BuildContext, BuildError};

struct Greeter {
    greeting: String,
}

#[lxmetrics_core::async_trait]
impl Collector for Greeter {
    async fn collect(&self, scope: &Scope) -> Result<Collection, CollectError> {
        let mut family = Family::new(MetricDesc::gauge("greeting_info", "A greeting"), &["text"]);
        for (index, _) in scope.indexed_instances() {
            family.push(index, [self.greeting.as_str()], 1.0);
        }
        let mut collection = Collection::new();
        collection.push(family);
        Ok(collection)
    }
}

#[derive(Default, serde::Deserialize)]
struct GreeterSettings {
    greeting: Option<String>,
}

fn build(ctx: &BuildContext<'_>) -> Result<Greeter, BuildError> {
    let settings: GreeterSettings = ctx.settings()?;
    Ok(Greeter {
        greeting: settings.greeting.unwrap_or_else(|| "hello".into()),
    })
}

lxmetrics_core::register_collector!("greeter", "Greets every instance", build);
lxmetrics_core::register_collector!("quiet", "Off unless enabled", build, enabled = false);

#[test]
fn collectors_from_another_crate_are_registered() {
    let all = registry::registered();
    let greeter = all
        .iter()
        .find(|r| r.name == "greeter")
        .expect("greeter registered");
    assert!(greeter.default_enabled);
    assert_eq!(greeter.help, "Greets every instance");
    let quiet = all
        .iter()
        .find(|r| r.name == "quiet")
        .expect("quiet registered");
    assert!(!quiet.default_enabled);
}

#[tokio::test]
async fn a_registered_collector_builds_with_its_settings_and_collects() {
    use std::sync::Arc;
    let reg = registry::registered()
        .into_iter()
        .find(|r| r.name == "greeter")
        .unwrap();
    let host = Arc::new(lxmetrics_core::collector::HostPaths::default());
    let settings = figment::value::Value::from(figment::value::Dict::from([(
        "greeting".to_string(),
        "hi".into(),
    )]));
    let collector = (reg.build)(&BuildContext {
        name: reg.name,
        host: &host,
        settings: Some(&settings),
        metric_prefix: "lxd",
        collector_timeout: std::time::Duration::from_secs(5),
    })
    .unwrap();
    let scope = Scope {
        instances: vec![lxmetrics_core::instance::Instance::container(
            "c1",
            "lxc.payload.c1",
        )]
        .into(),
        host,
    };
    let collection = collector.collect(&scope).await.unwrap();
    assert_eq!(collection.families[0].samples[0].label_values[0], "hi");
}

#[test]
fn bad_settings_name_the_key() {
    let reg = registry::registered()
        .into_iter()
        .find(|r| r.name == "greeter")
        .unwrap();
    let host = std::sync::Arc::new(lxmetrics_core::collector::HostPaths::default());
    let settings = figment::value::Value::from(figment::value::Dict::from([(
        "greeting".to_string(),
        figment::value::Value::from(42),
    )]));
    let err = (reg.build)(&BuildContext {
        name: reg.name,
        host: &host,
        settings: Some(&settings),
        metric_prefix: "lxd",
        collector_timeout: std::time::Duration::from_secs(5),
    })
    .err()
    .expect("a number is not a greeting");
    assert!(
        err.to_string().starts_with("collectors.greeter.greeting:"),
        "{err}"
    );
}
