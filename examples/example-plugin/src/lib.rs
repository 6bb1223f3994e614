//! An example third-party collector: `lxd_example_init_pid` reports the pid of the
//! process discovery found in each instance. It shows the whole plugin contract in one
//! file: register with one line, build from the collector's own config section, never
//! block the runtime, report what could not be read instead of zeros. It depends on
//! `lxmetrics-plugin` alone.
//!
//! A daemon picks it up by linking the crate (`use lxmetrics_example_plugin as _;`); see
//! `examples/custom-daemon`.

use lxmetrics_plugin::{
    async_trait, register_collector, BuildContext, BuildError, CollectError, Collection, Collector,
    Family, MetricDesc, Scope,
};

register_collector!(
    "example",
    "Example plugin: the pid of each instance's representative process",
    ExampleCollector::build
);

const INIT_PID: MetricDesc = MetricDesc::gauge(
    "example_init_pid",
    "Pid of the process discovery found in the instance.",
);

/// The collector. Settings come from `[collectors.example]` (none are needed here).
pub struct ExampleCollector;

impl ExampleCollector {
    fn build(_ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        Ok(ExampleCollector)
    }
}

#[async_trait]
impl Collector for ExampleCollector {
    async fn collect(&self, scope: &Scope) -> Result<Collection, CollectError> {
        // Nothing here touches the disk; a collector that reads files would wrap the
        // whole loop in `lxmetrics_plugin::run_blocking`.
        let mut family = Family::new(INIT_PID, &[]);
        let mut collection = Collection::new();
        for (index, instance) in scope.indexed_instances() {
            match instance.pid {
                Some(pid) => family.push(index, (), f64::from(pid)),
                None => collection.instance_failed(index, "no process known"),
            }
        }
        collection.push(family);
        Ok(collection)
    }
}
