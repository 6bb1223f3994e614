//! The shape every cgroup collector has, for plugins too: on one blocking thread, detect
//! the cgroup layout, read each instance's values into a plain struct, and hand the
//! complete structs to the collector's emitter. An instance whose cgroup vanished
//! mid-refresh is dropped silently; one whose files are broken is reported with the
//! reason; a value read once per refresh (a host figure, a device name) lives in the
//! reader's [`InstanceReader::State`], not in a cache of the reader's own.

use std::sync::Arc;

use crate::collector::{run_blocking, CollectError, Collection, Collector, HostPaths, Scope};
use crate::instance::{Instance, InstanceIndex};
use crate::kept_files::KeptFiles;
use crate::layout::Layout;
use crate::read::{FileReader, ReadError};

/// What a collector reads per instance; wrap it in a [`PerInstanceCollector`].
pub trait InstanceReader: Send + Sync + 'static {
    /// One instance's values.
    type Values: Send;

    /// What the reads of one refresh share (host-wide figures read once, names already
    /// resolved): a fresh `Default` at the start of every refresh, `()` when nothing is.
    /// It is handed to [`InstanceReader::emit`] too, so values can refer into it.
    type State: Default;

    /// Reads one instance. Errors drop the instance from this collector for this refresh.
    fn read(
        &self,
        ctx: &mut ReadContext<'_>,
        state: &mut Self::State,
        instance: &Instance,
    ) -> Result<Self::Values, ReadError>;

    /// Turns every instance's values, and the refresh's state, into families.
    fn emit(
        &self,
        values: Vec<(InstanceIndex, Self::Values)>,
        state: Self::State,
        out: &mut Collection,
    );
}

/// What [`InstanceReader::read`] is given besides the instance.
#[non_exhaustive]
pub struct ReadContext<'a> {
    /// The detected cgroup layout.
    pub layout: &'a Layout,
    /// Host roots.
    pub host: &'a HostPaths,
    /// A reader whose buffer is reused across the refresh.
    pub files: FileReader,
}

/// Runs `reader` over every instance on the blocking pool.
async fn collect<R: InstanceReader>(
    reader: &Arc<R>,
    kept: &Arc<KeptFiles>,
    scope: &Scope,
) -> Result<Collection, CollectError> {
    let reader = reader.clone();
    let kept = kept.clone();
    let instances = scope.instances.clone();
    let host = scope.host.clone();
    run_blocking(move || {
        let files = FileReader::keeping(&kept, &host.cgroup_root);
        collect_blocking(&*reader, &instances, &host, files)
    })
    .await?
}

/// The same, on the calling thread.
fn collect_blocking<R: InstanceReader>(
    reader: &R,
    instances: &[Instance],
    host: &HostPaths,
    files: FileReader,
) -> Result<Collection, CollectError> {
    let layout =
        Layout::detect(&host.cgroup_root).map_err(|e| CollectError::Other(e.to_string()))?;
    let mut ctx = ReadContext {
        layout: &layout,
        host,
        files,
    };
    let mut state = R::State::default();
    let mut out = Collection::new();
    let mut values = Vec::with_capacity(instances.len());
    let mut slowest: Option<(InstanceIndex, std::time::Duration)> = None;
    for (index, instance) in (0..).zip(instances) {
        let started = std::time::Instant::now();
        let result = reader.read(&mut ctx, &mut state, instance);
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
    reader.emit(values, state, &mut out);
    out.slowest_instance = slowest;
    Ok(out)
}

/// True when the instance's cgroup no longer exists (it stopped during the refresh).
fn vanished(layout: &Layout, instance: &Instance) -> bool {
    !layout.discovery_root().join(&instance.cgroup).is_dir()
}

/// A collector made of an [`InstanceReader`]: every cgroup collector has this shape.
/// Register its constructor, e.g. `|_| Ok(PerInstanceCollector::new(MyReader))`.
pub struct PerInstanceCollector<R> {
    reader: Arc<R>,
    /// The cgroup files kept open between refreshes.
    kept: Arc<KeptFiles>,
}

impl<R: InstanceReader> PerInstanceCollector<R> {
    /// Wraps a reader.
    pub fn new(reader: R) -> Self {
        PerInstanceCollector {
            reader: Arc::new(reader),
            kept: Arc::default(),
        }
    }
}

#[crate::async_trait]
impl<R: InstanceReader> Collector for PerInstanceCollector<R> {
    async fn collect(&self, scope: &Scope) -> Result<Collection, CollectError> {
        collect(&self.reader, &self.kept, scope).await
    }
}
