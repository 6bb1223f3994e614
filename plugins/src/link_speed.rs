//! Link speeds per interface inside each instance's network namespace, through the
//! kernel's ethtool netlink interface (the `ethtool` crate).
//!
//! A netlink socket belongs to the network namespace of the thread that created it, so a
//! dedicated thread enters each instance's namespace (`<proc_root>/<pid>/ns/net`),
//! creates the socket, and returns to its own namespace; the queries then run on the
//! async runtime. A namespace is queried once, for the instance that reports it (see
//! [`crate::network`]; none for the host's namespace). Interfaces whose driver
//! reports no speed (EOPNOTSUPP, `lo`, speed unknown) get no series; errors are logged and
//! never turn into zeros.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use ethtool::{EthtoolAttr, EthtoolHandle, EthtoolHeader, EthtoolLinkModeAttr};
use futures_util::StreamExt;
use lxmetrics_plugin::{InstanceIndex, Scope};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

/// Speeds in megabits per second by interface name.
pub type Speeds = Vec<(String, u32)>;

/// The kernel's "speed unknown" (SPEED_UNKNOWN is -1 as u32).
const SPEED_UNKNOWN: u32 = u32::MAX;

/// Link speeds for every instance whose namespace could be entered, within `timeout`.
pub async fn link_speeds(scope: &Scope, timeout: Duration) -> Vec<(InstanceIndex, Speeds)> {
    // One query per namespace, for the instance that reports it (none for the host's).
    let by_namespace: Vec<(std::path::PathBuf, Vec<InstanceIndex>)> =
        crate::network::namespace_owners(scope)
            .into_iter()
            .map(|(index, (_, path))| (path, vec![index]))
            .collect();
    if by_namespace.is_empty() {
        return Vec::new();
    }
    let runtime = tokio::runtime::Handle::current();
    let groups = by_namespace;
    let paths: Vec<std::path::PathBuf> = groups.iter().map(|(p, _)| p.clone()).collect();
    // Socket creation happens on a fresh thread of our own, never a pool thread: a
    // thread that moved between namespaces is discarded afterwards.
    let opened = tokio::task::spawn_blocking(move || {
        std::thread::Builder::new()
            .name("lxmetrics-netns".into())
            .spawn(move || open_in_namespaces(&paths, &runtime))
            .map_err(|e| e.to_string())?
            .join()
            .map_err(|_| "the namespace thread panicked".to_owned())
    })
    .await;
    let handles = match opened {
        Ok(Ok(handles)) => handles,
        Ok(Err(e)) => {
            tracing::warn!("link speeds unavailable: {e}");
            return Vec::new();
        }
        Err(e) => {
            tracing::warn!("link speeds unavailable: {e}");
            return Vec::new();
        }
    };
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
    match tokio::time::timeout(timeout, all).await {
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
