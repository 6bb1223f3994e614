//! # lxmetrics-plugin
//!
//! The whole contract between lxmetrics and a collector: what a collector is given
//! ([`Scope`], [`BuildContext`]), what it returns ([`Collection`] of [`Family`]s), how it
//! registers ([`register_collector!`]) and the loop every cgroup collector shares
//! ([`InstanceReader`]). A plugin crate depends on this crate only; the daemon's other
//! crates may change freely underneath it. `public-api.txt` next to this crate's
//! `Cargo.toml` lists every public item, and CI fails when it changes unreviewed.
//!
//! ## A collector in 25 lines
//!
//! ```
//! use lxmetrics_plugin::{
//!     async_trait, register_collector, BuildContext, BuildError, CollectError,
//!     Collection, Collector, Family, MetricDesc, Scope,
//! };
//!
//! register_collector!("example", "The pid of each instance's first process", Example::build);
//!
//! const INIT_PID: MetricDesc = MetricDesc::gauge("example_init_pid", "Pid of the first process.");
//!
//! pub struct Example;
//!
//! impl Example {
//!     fn build(_ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
//!         Ok(Example)
//!     }
//! }
//!
//! #[async_trait]
//! impl Collector for Example {
//!     async fn collect(&self, scope: &Scope) -> Result<Collection, CollectError> {
//!         let mut family = Family::new(INIT_PID, &[]);
//!         let mut out = Collection::new();
//!         for (index, instance) in scope.indexed_instances() {
//!             match instance.pid {
//!                 Some(pid) => family.push(index, (), f64::from(pid)),
//!                 None => out.instance_failed(index, "no process known"),
//!             }
//!         }
//!         out.push(family);
//!         Ok(out)
//!     }
//! }
//! ```
//!
//! The daemon serves it as `lxd_example_init_pid{name="web",project="default",type="container"}`:
//! the prefix (`metrics.prefix`) and the instance labels are the daemon's to add.
//!
//! ## The rules
//!
//! - **Names**: family names without the prefix; valid Prometheus names; the daemon's own
//!   families (`uptime_seconds`, `instances`, `api_*`, `metrics_*`, bare `process_*`) are
//!   refused. Never emit `name`, `project` or `type`: push with the instance index.
//! - **Never block the runtime**: file reads and syscalls go inside [`run_blocking`], once
//!   per refresh for all instances; [`PerInstanceCollector`] does that for you.
//! - **Never report a value you could not read as 0**: leave the series out and call
//!   [`Collection::instance_failed`]; return `Err` only when nothing could be collected.
//! - **Deadline**: every collector runs concurrently under `metrics.collector_timeout`; a
//!   late one loses its series for that refresh and is not started again until it returns.
//! - **Settings**: `[collectors.<name>]` deserializes with [`BuildContext::settings`];
//!   register the type (`register_collector!(..., settings = MySettings)`, a
//!   [`CollectorSettings`]) so `lxmetrics collectors` and `lxmetrics config check` know
//!   its keys.
//! - **Linking**: a daemon binary sees the collectors of the crates it names
//!   (`use my_plugin as _;`); see `examples/custom-daemon`.

mod collector;
mod instance;
mod kept_files;
mod layout;
mod metric;
mod per_instance;
mod read;
mod registry;

pub use collector::{
    run_blocking, CollectError, Collection, Collector, HostPaths, InstanceFailure, Scope,
};
pub use instance::{Instance, InstanceIndex, InstanceStatus, InstanceType};
pub use kept_files::KeptFiles;
pub use layout::{Controller, Hierarchy, Layout, NoCgroups};
pub use metric::{
    is_valid_label_name, is_valid_metric_name, Family, LabelList, LabelValues, Labels, MetricDesc,
    MetricKind, Namespace, Sample, SeriesOf, SeriesSuffix,
};
pub use per_instance::{InstanceReader, PerInstanceCollector, ReadContext};
pub use read::{optional, read_capped, FileReader, ParseError, ReadError};
pub use registry::{BuildContext, BuildError, CollectorSettings, Setting};

/// The attribute a [`Collector`] implementation needs (`#[async_trait]`), re-exported so
/// plugins use the same version as the daemon.
pub use async_trait::async_trait;

#[doc(hidden)]
pub use registry::__private;
