//! Link speeds per interface inside each instance's network namespace, through the
//! kernel's ethtool netlink interface (the `ethtool` crate).
//!
//! A netlink socket belongs to the network namespace of the thread that created it, so a
//! dedicated thread enters each instance's namespace (`<proc_root>/<pid>/ns/net`),
//! creates the socket, and returns to its own namespace; the queries then run on the
//! async runtime. A namespace is queried once, for the instance that reports its
//! counters (see [`crate::network`]; none for the host's namespace), and its answer reused for
//! [`SPEED_MAX_AGE`] ([`LinkSpeedCache`]). Interfaces whose driver
//! reports no speed (EOPNOTSUPP, `lo`, speed unknown) get no series; errors are logged and
//! never turn into zeros.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ethtool::{EthtoolAttr, EthtoolHandle, EthtoolHeader, EthtoolLinkModeAttr};
use futures_util::StreamExt;
use lxmetrics_plugin::{InstanceIndex, Scope};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

/// Speeds in megabits per second by interface name.
pub type Speeds = Vec<(String, u32)>;

/// The kernel's "speed unknown" (SPEED_UNKNOWN is -1 as u32).
const SPEED_UNKNOWN: u32 = u32::MAX;

/// How long a namespace's link speeds are reused before they are asked again: speeds
/// change only when a link renegotiates, and asking means entering the namespace.
const SPEED_MAX_AGE: Duration = Duration::from_secs(60);

/// The link speeds of each instance's namespace as last asked. A refresh never waits for
/// netlink: it serves what is known and, when namespaces are new or their speeds older
/// than [`SPEED_MAX_AGE`], asks for those in the background (one ask at a time), so their
/// speeds appear in a later refresh. Until then a new namespace has no speed series
/// (absent, never zero).
#[derive(Default)]
pub(crate) struct LinkSpeedCache {
    /// By the reporting instance's cgroup and process.
    known: Arc<Mutex<HashMap<SpeedKey, (Instant, Speeds)>>>,
    /// A background ask is running.
    asking: Arc<AtomicBool>,
}

/// Clears the "asking" flag when a background ask ends, however it ends.
struct AskDone(Arc<AtomicBool>);

impl Drop for AskDone {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The instance's cgroup and process: a restarted instance (a new process, so a new
/// namespace) is asked again.
type SpeedKey = (String, u32);

impl LinkSpeedCache {
    /// The known speeds of the namespaces of `reporting` (the instances that report their
    /// namespace's counters in this refresh: one per namespace, none for the host's);
    /// asks in the background, within `timeout`, for those not known or too old.
    pub(crate) fn speeds(
        &self,
        scope: &Scope,
        reporting: impl IntoIterator<Item = InstanceIndex>,
        timeout: Duration,
    ) -> Vec<(InstanceIndex, Speeds)> {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut ask: Vec<(std::path::PathBuf, SpeedKey)> = Vec::new();
        let mut live = std::collections::HashSet::new();
        {
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            for index in reporting {
                let Some(instance) = scope.instances.get(index as usize) else {
                    continue;
                };
                let Some(pid) = instance.pid else { continue };
                let key = (instance.cgroup.clone(), pid);
                match known.get(&key) {
                    Some((at, speeds)) => {
                        out.push((index, speeds.clone()));
                        if now.duration_since(*at) >= SPEED_MAX_AGE {
                            ask.push((ns_path(scope, pid), key.clone()));
                        }
                    }
                    None => ask.push((ns_path(scope, pid), key.clone())),
                }
                live.insert(key);
            }
            // Namespaces no longer reporting are forgotten.
            known.retain(|key, _| live.contains(key));
        }
        if !ask.is_empty() && !self.asking.swap(true, Ordering::AcqRel) {
            let (known, asking) = (self.known.clone(), self.asking.clone());
            tokio::spawn(async move {
                let _done = AskDone(asking);
                let keys: Vec<SpeedKey> = ask.iter().map(|(_, key)| key.clone()).collect();
                let by_namespace = ask
                    .into_iter()
                    .enumerate()
                    .map(|(i, (path, _))| (path, vec![i as InstanceIndex]))
                    .collect();
                let asked = link_speeds(by_namespace, timeout).await;
                let at = Instant::now();
                let mut known = known.lock().unwrap_or_else(|p| p.into_inner());
                for (i, speeds) in asked {
                    if let Some(key) = keys.get(i as usize) {
                        known.insert(key.clone(), (at, speeds));
                    }
                }
            });
        }
        out
    }
}

/// The nice value of the thread that enters each namespace (the lowest priority).
const BACKGROUND_NICE: i32 = 19;

/// The network namespace link of process `pid`.
fn ns_path(scope: &Scope, pid: u32) -> std::path::PathBuf {
    scope.host.proc_root.join(pid.to_string()).join("ns/net")
}

/// Namespaces asked at once: each holds a netlink socket and its buffers until answered,
/// so thousands of containers are asked in groups of this many (bounded memory and file
/// descriptors), one group after the other.
const NAMESPACES_AT_ONCE: usize = 64;

/// Link speeds for each namespace path's instances, within `timeout` per group of
/// [`NAMESPACES_AT_ONCE`] namespaces.
///
/// The whole pass runs on a fresh thread of our own, at the lowest priority, with its
/// own single-threaded runtime: entering namespaces must not happen on a pool thread (a
/// thread that moved between namespaces is discarded afterwards), and reading thousands
/// of answers must not take the serving runtime's workers from the scrapes.
async fn link_speeds(
    by_namespace: Vec<(std::path::PathBuf, Vec<InstanceIndex>)>,
    timeout: Duration,
) -> Vec<(InstanceIndex, Speeds)> {
    if by_namespace.is_empty() {
        return Vec::new();
    }
    // The thread answers over a channel: nothing of the serving runtime waits on it.
    let (answer, answered) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("lxmetrics-netns".into())
        .spawn(move || {
            // Nice is per thread on Linux; failing to lower it only costs that.
            let _ = rustix::process::setpriority_process(None, BACKGROUND_NICE);
            let pass = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|runtime| {
                    let mut out = Vec::new();
                    let mut rest = by_namespace.into_iter().peekable();
                    while rest.peek().is_some() {
                        let group: Vec<_> = rest.by_ref().take(NAMESPACES_AT_ONCE).collect();
                        out.extend(speeds_of_group(group, timeout, &runtime));
                    }
                    out
                })
                .map_err(|e| format!("runtime: {e}"));
            let _ = answer.send(pass);
        });
    let pass = match spawned {
        Ok(_) => answered
            .await
            .unwrap_or_else(|_| Err("the namespace thread panicked".to_owned())),
        Err(e) => Err(format!("namespace thread: {e}")),
    };
    pass.unwrap_or_else(|e| {
        tracing::warn!("link speeds unavailable: {e}");
        Vec::new()
    })
}

/// One group of [`link_speeds`]: a connection opened in each namespace, then all asked
/// concurrently on `runtime`.
fn speeds_of_group(
    groups: Vec<(std::path::PathBuf, Vec<InstanceIndex>)>,
    timeout: Duration,
    runtime: &tokio::runtime::Runtime,
) -> Vec<(InstanceIndex, Speeds)> {
    let paths: Vec<std::path::PathBuf> = groups.iter().map(|(p, _)| p.clone()).collect();
    let handles = open_in_namespaces(&paths, runtime.handle());
    let queries = groups
        .into_iter()
        .zip(handles)
        .filter_map(|((path, members), handle)| {
            let handle = handle
                .map_err(|e| tracing::debug!("{}: {e}", path.display()))
                .ok()?;
            Some(async move { (members, query(handle).await) })
        });
    let mut out = Vec::new();
    let all = futures_util::future::join_all(queries);
    match runtime.block_on(async { tokio::time::timeout(timeout, all).await }) {
        Ok(results) => {
            for (members, speeds) in results {
                for index in members {
                    out.push((index, speeds.clone()));
                }
            }
        }
        Err(_) => tracing::warn!("link speed queries did not finish within {timeout:?}"),
    }
    out
}

/// Opens one ethtool netlink connection per namespace, returning to our own namespace
/// after each.
fn open_in_namespaces(
    paths: &[std::path::PathBuf],
    runtime: &tokio::runtime::Handle,
) -> Vec<Result<EthtoolHandle, String>> {
    let _enter = runtime.enter();
    let own = match File::open("/proc/thread-self/ns/net") {
        Ok(f) => f,
        Err(e) => {
            return paths
                .iter()
                .map(|_| Err(format!("own namespace: {e}")))
                .collect()
        }
    };
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        match open_one(path, &own) {
            Ok(result) => out.push(result),
            Err(stranded) => {
                // Stuck in a foreign namespace: open nothing more from this thread.
                tracing::warn!("{stranded}");
                break;
            }
        }
    }
    out.resize_with(paths.len(), || Err("not attempted".to_owned()));
    out
}

/// Opens a connection inside `path`'s namespace. The outer error means the thread could
/// not return to its own namespace.
fn open_one(path: &Path, own: &File) -> Result<Result<EthtoolHandle, String>, String> {
    let ns = match File::open(path) {
        Ok(ns) => ns,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if let Err(e) = move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network)) {
        return Ok(Err(format!("setns: {e}")));
    }
    let created = ethtool::new_connection();
    move_into_link_name_space(own.as_fd(), Some(LinkNameSpaceType::Network))
        .map_err(|e| format!("cannot return to the daemon's network namespace: {e}"))?;
    Ok(match created {
        Ok((connection, handle, _)) => {
            tokio::spawn(connection);
            Ok(handle)
        }
        Err(e) => Err(format!("netlink: {e}")),
    })
}

/// Dumps link modes of every interface in the namespace.
async fn query(mut handle: EthtoolHandle) -> Speeds {
    let mut speeds = Vec::new();
    let mut stream = match handle.link_mode().get(None).execute().await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("ethtool link mode dump: {e}");
            return speeds;
        }
    };
    while let Some(message) = stream.next().await {
        let Ok(message) = message else {
            continue; // EOPNOTSUPP and friends: no speed for that interface
        };
        let (mut name, mut speed) = (None, None);
        for attr in &message.payload.nlas {
            if let EthtoolAttr::LinkMode(attr) = attr {
                match attr {
                    EthtoolLinkModeAttr::Header(headers) => {
                        for h in headers {
                            if let EthtoolHeader::DevName(n) = h {
                                name = Some(n.clone());
                            }
                        }
                    }
                    EthtoolLinkModeAttr::Speed(s) => speed = Some(*s),
                    _ => {}
                }
            }
        }
        if let (Some(name), Some(speed)) = (name, speed) {
            if speed != SPEED_UNKNOWN && speed != 0 {
                speeds.push((name, speed));
            }
        }
    }
    speeds
}
