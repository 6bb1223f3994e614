//! The loop every cgroup collector shares (and plugin crates may reuse): on one blocking thread, detect the layout,
//! then read each instance's values into a plain struct and hand complete structs to the
//! collector's emitter. An instance whose cgroup vanished mid-refresh is dropped silently;
//! one whose files are broken is reported with the reason.

use std::sync::Arc;

use lxmetrics_core::collector::{
    run_blocking, CollectError, Collection, Collector, HostPaths, Scope,
};
use lxmetrics_core::instance::{Instance, InstanceIndex};

use crate::cgroupfs::{FileReader, Layout, ReadError};

/// What a collector reads per instance.
pub trait InstanceReader: Send + Sync + 'static {
    /// One instance's values.
    type Values: Send;

    /// Reads one instance. Errors drop the instance from this collector for this refresh.
    fn read(
        &self,
        ctx: &mut ReadContext<'_>,
        instance: &Instance,
    ) -> Result<Self::Values, ReadError>;

    /// Turns every instance's values into families.
    fn emit(&self, values: Vec<(InstanceIndex, Self::Values)>, out: &mut Collection);
}

/// Per-refresh state handed to [`InstanceReader::read`].
pub struct ReadContext<'a> {
    /// The detected cgroup layout.
    pub layout: &'a Layout,
    /// Host roots.
    pub host: &'a HostPaths,
    /// A reused buffer.
    pub files: FileReader,
    host_memory: Option<u64>,
    online_cpus: Option<u64>,
    boot_time: Option<u64>,
}

impl ReadContext<'_> {
    /// The host's `MemTotal`, read once per refresh.
    pub fn host_memory(&mut self) -> Result<u64, ReadError> {
        if let Some(v) = self.host_memory {
            return Ok(v);
        }
        let path = self.host.proc_root.join("meminfo");
        let v = self.files.parse(&path, crate::hostfs::meminfo_total)?;
        self.host_memory = Some(v);
        Ok(v)
    }

    /// When the host booted (`btime` of `/proc/stat`), read once per refresh.
    pub(crate) fn boot_time(&mut self) -> Result<u64, ReadError> {
        if let Some(v) = self.boot_time {
            return Ok(v);
        }
        let path = self.host.proc_root.join("stat");
        let v = self.files.parse(&path, crate::hostfs::boot_time)?;
        self.boot_time = Some(v);
        Ok(v)
    }

    /// The number of online CPUs, read once per refresh.
    pub fn online_cpus(&mut self) -> Result<u64, ReadError> {
        if let Some(v) = self.online_cpus {
            return Ok(v);
        }
        let path = self.host.sys_root.join("devices/system/cpu/online");
        let v = self
            .files
            .parse(&path, crate::cgroupfs::parse::cpu_list_len)?;
        self.online_cpus = Some(v);
        Ok(v)
    }
}

/// Runs `reader` over every instance on the blocking pool.
pub async fn collect<R: InstanceReader>(
    reader: &Arc<R>,
    scope: &Scope,
) -> Result<Collection, CollectError> {
    let reader = reader.clone();
    let instances = scope.instances.clone();
    let host = scope.host.clone();
    run_blocking(move || collect_blocking(&*reader, &instances, &host)).await?
}

/// The same, on the calling thread (tests, benchmarks).
fn collect_blocking<R: InstanceReader>(
    reader: &R,
    instances: &[Instance],
    host: &HostPaths,
) -> Result<Collection, CollectError> {
    let layout =
        Layout::detect(&host.cgroup_root).map_err(|e| CollectError::Other(e.to_string()))?;
    let mut ctx = ReadContext {
        layout: &layout,
        host,
        files: FileReader::new(),
        host_memory: None,
        online_cpus: None,
        boot_time: None,
    };
    let mut out = Collection::new();
    let mut values = Vec::with_capacity(instances.len());
    let mut slowest: Option<(InstanceIndex, std::time::Duration)> = None;
    for (index, instance) in (0..).zip(instances) {
        let started = std::time::Instant::now();
        let result = reader.read(&mut ctx, instance);
        let took = started.elapsed();
        if slowest.is_none_or(|(_, longest)| took > longest) {
            slowest = Some((index, took));
        }
        match result {
            Ok(v) => values.push((index, v)),
            Err(e) if e.is_not_found() && vanished(&layout, instance) => {}
            Err(e) => out.instance_failed(index, e.to_string()),
        }
    }
    reader.emit(values, &mut out);
    out.slowest_instance = slowest;
    Ok(out)
}

/// True when the instance's cgroup no longer exists (it stopped during the refresh).
fn vanished(layout: &Layout, instance: &Instance) -> bool {
    !layout.discovery_root().join(&instance.cgroup).is_dir()
}

/// A collector made of an [`InstanceReader`]: every cgroup collector has this shape.
pub struct PerInstanceCollector<R>(Arc<R>);

impl<R: InstanceReader> PerInstanceCollector<R> {
    /// Wraps a reader.
    pub fn new(reader: R) -> Self {
        PerInstanceCollector(Arc::new(reader))
    }
}

#[async_trait::async_trait]
impl<R: InstanceReader> Collector for PerInstanceCollector<R> {
    async fn collect(&self, scope: &Scope) -> Result<Collection, CollectError> {
        collect(&self.0, scope).await
    }
}
