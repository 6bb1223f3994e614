//! A collector registered from another crate (this integration test is compiled as its
//! own crate) against the plugin contract alone is found by core's registry, built with
//! its settings, and its settings are documented.

use std::sync::Arc;
use std::time::Duration;

use lxmetrics_core::registry;
use lxmetrics_plugin::{
    async_trait, register_collector, BuildContext, BuildError, CollectError, Collection, Collector,
    CollectorSettings, Family, HostPaths, Instance, MetricDesc, Scope, Setting,
};

struct Greeter {
    greeting: String,
}

#[async_trait]
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

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
struct GreeterSettings {
    greeting: String,
}

impl Default for GreeterSettings {
    fn default() -> Self {
        GreeterSettings {
            greeting: "hello".into(),
        }
    }
}

impl CollectorSettings for GreeterSettings {
    const KEYS: &'static [Setting] = &[Setting {
        key: "greeting",
        help: "What to say",
    }];
}

fn build(ctx: &BuildContext<'_>) -> Result<Greeter, BuildError> {
    let settings: GreeterSettings = ctx.settings()?;
    Ok(Greeter {
        greeting: settings.greeting,
    })
}

register_collector!(
    "greeter",
    "Greets every instance",
    build,
    settings = GreeterSettings
);
register_collector!("quiet", "Off unless enabled", build, enabled = false);

fn greeter() -> &'static lxmetrics_plugin::__private::CollectorRegistration {
    registry::registered()
        .into_iter()
        .find(|r| r.name == "greeter")
        .expect("greeter registered")
}

#[test]
fn collectors_from_another_crate_are_registered() {
    let all = registry::registered();
    let greeter = greeter();
    assert!(greeter.default_enabled);
    assert_eq!(greeter.help, "Greets every instance");
    let quiet = all
        .iter()
        .find(|r| r.name == "quiet")
        .expect("quiet registered");
    assert!(!quiet.default_enabled);
}

#[test]
fn registered_settings_are_documented_with_their_defaults() {
    let settings = registry::settings_of(greeter());
    assert_eq!(settings.len(), 1);
    assert_eq!(settings[0].key, "collectors.greeter.greeting");
    assert_eq!(settings[0].default.as_deref(), Some("\"hello\""));
    assert_eq!(settings[0].help, "What to say");
}

#[tokio::test]
async fn a_registered_collector_builds_with_its_settings_and_collects() {
    let reg = greeter();
    let host = Arc::new(HostPaths::default());
    let settings = figment::value::Value::from(figment::value::Dict::from([(
        "greeting".to_string(),
        "hi".into(),
    )]));
    let ctx =
        BuildContext::new(reg.name, &host, "lxd", Duration::from_secs(5)).with_settings(&settings);
    let collector = (reg.build)(&ctx).unwrap();
    let scope = Scope::new(vec![Instance::container("c1", "lxc.payload.c1")], host);
    let collection = collector.collect(&scope).await.unwrap();
    assert_eq!(collection.families[0].samples[0].label_values, ["hi"]);
}

#[test]
fn bad_settings_name_the_key() {
    let reg = greeter();
    let host = Arc::new(HostPaths::default());
    let settings = figment::value::Value::from(figment::value::Dict::from([(
        "greeting".to_string(),
        figment::value::Value::from(42),
    )]));
    let ctx =
        BuildContext::new(reg.name, &host, "lxd", Duration::from_secs(5)).with_settings(&settings);
    let err = (reg.build)(&ctx).err().expect("a number is not a greeting");
    assert!(
        err.to_string().starts_with("collectors.greeter.greeting:"),
        "{err}"
    );
}
