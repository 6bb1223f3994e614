//! A plugin written against the paths DESIGN.md gives (`lxmetrics_core::collector`,
//! `metric`, `registry`, `register_collector!`) still compiles, registers and collects:
//! the contract moved to `lxmetrics-plugin`, these stay as its re-exports.

use std::sync::Arc;
use std::time::Duration;

use lxmetrics_core::collector::{CollectError, Collection, Collector, HostPaths, Scope};
use lxmetrics_core::instance::Instance;
use lxmetrics_core::metric::{Family, MetricDesc};
use lxmetrics_core::registry::{self, BuildContext, BuildError};

struct Old;

#[lxmetrics_core::async_trait]
impl Collector for Old {
    async fn collect(&self, scope: &Scope) -> Result<Collection, CollectError> {
        let mut family = Family::new(MetricDesc::gauge("old_path_info", "h"), &[]);
        for (index, _) in scope.indexed_instances() {
            family.push(index, (), 1.0);
        }
        let mut out = Collection::new();
        out.push(family);
        Ok(out)
    }
}

fn build(_: &BuildContext<'_>) -> Result<Old, BuildError> {
    Ok(Old)
}

lxmetrics_core::register_collector!("old_paths", "Registered through core's paths", build);

#[tokio::test]
async fn a_plugin_on_cores_paths_registers_and_collects() {
    let reg = registry::registered()
        .into_iter()
        .find(|r| r.name == "old_paths")
        .expect("registered through lxmetrics_core::register_collector!");
    let host = Arc::new(HostPaths::default());
    let collector = (reg.build)(&BuildContext::new(
        reg.name,
        &host,
        "lxd",
        Duration::from_secs(1),
    ))
    .expect("builds");
    let scope = Scope::new(vec![Instance::container("c1", "lxc.payload.c1")], host);
    let out = collector.collect(&scope).await.expect("collects");
    assert_eq!(out.families[0].samples.len(), 1);
    assert_eq!(out.families[0].samples[0].value, 1.0);
}
