//! Instance discovery: which instances run on this host right now.
//!
//! The refresh engine asks discovery once per refresh and hands the result to every
//! collector. The cgroup-based implementation lives in `lxmetrics-plugins`; core only
//! defines the seam and a fixed list of instances (`StaticDiscovery`) for tests and
//! embedders.

use async_trait::async_trait;

use lxmetrics_plugin::{Family, HostPaths, Instance};

/// Discovery failed as a whole (a single vanished instance is not a failure).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DiscoveryError(pub String);

/// Finds the running instances.
#[async_trait]
pub trait Discovery: Send + Sync + 'static {
    /// The instances running now. Must not block the runtime: do file system walks on
    /// the blocking pool ([`run_blocking`](lxmetrics_plugin::run_blocking)).
    async fn discover(&self, host: &HostPaths) -> Result<Vec<Instance>, DiscoveryError>;

    /// Host and project families the inventory source knows beyond instances (LXD's
    /// storage pools and project limits), as of the last [`Discovery::discover`]. They
    /// may carry a `project` label: a caller limited to projects sees its projects' series.
    fn families(&self) -> Vec<Family> {
        Vec::new()
    }
}

/// A fixed list of instances: for tests, benchmarks and embedding.
#[derive(Clone, Debug, Default)]
pub struct StaticDiscovery(pub Vec<Instance>);

#[async_trait]
impl Discovery for StaticDiscovery {
    async fn discover(&self, _host: &HostPaths) -> Result<Vec<Instance>, DiscoveryError> {
        Ok(self.0.clone())
    }
}
