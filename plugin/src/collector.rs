//! The collector plugin API: what a collector is given and what it returns.
//!
//! A collector turns host files into [`Family`]s for a set of instances. The refresh
//! engine runs every enabled collector concurrently, each under the
//! `metrics.collector_timeout` deadline, and isolates failures: a collector that errors,
//! panics or runs late loses only its own series for that refresh, and an instance that
//! fails inside a collector loses only its own series from that collector.
//!
//! Contract for implementors:
//! - never block the async runtime: wrap file reads in [`run_blocking`] (one call per
//!   refresh that walks all instances, not one per file);
//! - report a value you could not read by leaving its series out and calling
//!   [`Collection::instance_failed`], never by emitting 0;
//! - do not emit the `name`, `project` or `type` labels yourself: give the instance index.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::instance::{Instance, InstanceIndex};
use crate::metric::Family;

/// Where host files are read from; tests point these at fixture trees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostPaths {
    /// The proc file system (`host.proc_root`, default `/proc`).
    pub proc_root: PathBuf,
    /// The sys file system (`host.sys_root`, default `/sys`).
    pub sys_root: PathBuf,
    /// Where cgroup hierarchies are mounted (`host.cgroup_root`, default `/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

impl HostPaths {
    /// `proc/`, `sys/` and `cgroup/` under `root`: the layout of a fixture host, so a
    /// plugin's tests read a directory they ship instead of this machine.
    pub fn under(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref();
        HostPaths {
            proc_root: root.join("proc"),
            sys_root: root.join("sys"),
            cgroup_root: root.join("cgroup"),
        }
    }
}

/// Everything a collector is given for one refresh. More may be added, so it is built
/// with [`Scope::new`], not a struct literal.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Scope {
    /// The running instances found by discovery for this refresh.
    pub instances: Arc<[Instance]>,
    /// Where host files live.
    pub host: Arc<HostPaths>,
}

impl Scope {
    /// A refresh over `instances` reading host files under `host` (tests build one for a
    /// fixture tree with [`HostPaths::under`]).
    pub fn new(instances: impl Into<Arc<[Instance]>>, host: impl Into<Arc<HostPaths>>) -> Self {
        Scope {
            instances: instances.into(),
            host: host.into(),
        }
    }

    /// The instances with their indexes, for building samples.
    pub fn indexed_instances(&self) -> impl Iterator<Item = (InstanceIndex, &Instance)> {
        (0..).zip(self.instances.iter())
    }
}

/// Why one instance's series are missing from a collector's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceFailure {
    /// Which instance.
    pub instance: InstanceIndex,
    /// What went wrong, for the log (e.g. `memory.stat: line 3: "abc" is not a number`).
    pub reason: String,
}

/// What a collector returns: its families and the instances it could not read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Collection {
    /// The families produced.
    pub families: Vec<Family>,
    /// Instances whose series from this collector must be dropped for this refresh.
    pub failures: Vec<InstanceFailure>,
    /// The instance that took longest to read, if the collector measured it; named in the
    /// slow-refresh warning.
    pub slowest_instance: Option<(InstanceIndex, std::time::Duration)>,
}

impl Collection {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a family.
    pub fn push(&mut self, family: Family) {
        self.families.push(family);
    }

    /// Records that `instance` could not be read. Any series the collector already pushed
    /// for it are removed when the snapshot is assembled, so a half-read instance is never
    /// served.
    pub fn instance_failed(&mut self, instance: InstanceIndex, reason: impl Into<String>) {
        self.failures.push(InstanceFailure {
            instance,
            reason: reason.into(),
        });
    }
}

/// A whole collector failed for this refresh.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// A host file or directory the collector depends on could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The blocking work panicked or was cancelled.
    #[error("blocking task failed: {0}")]
    Blocking(String),
    /// Anything else, in one sentence.
    #[error("{0}")]
    Other(String),
}

/// Runs blocking file reads on tokio's blocking pool so they do not stall the runtime.
///
/// Use one call per refresh that does all the work for every instance: a thread hop per
/// file would cost more than the read.
pub async fn run_blocking<T, F>(work: F) -> Result<T, CollectError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| CollectError::Blocking(e.to_string()))
}

/// A source of instance metrics. Implement it, then register it with
/// [`register_collector!`](crate::register_collector).
///
/// `#[async_trait]` is re-exported as [`crate::async_trait`].
#[async_trait]
pub trait Collector: Send + Sync + 'static {
    /// Collects families for the instances in `scope`.
    ///
    /// Return `Err` only when nothing could be collected at all; per-instance problems go
    /// into [`Collection::instance_failed`].
    async fn collect(&self, scope: &Scope) -> Result<Collection, CollectError>;
}
