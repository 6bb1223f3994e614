//! The LXD and Incus REST API over their unix sockets: which instances exist, running or
//! not, in which project, of which type, with which disk devices. Identity comes from
//! here on an LXD/Incus host; numbers still come from cgroups and `/proc`.
//!
//! One `GET /1.0/instances?recursion=1&all-projects=true` per refresh (no per-instance
//! state calls, which are what make LXD's own endpoint slow), bounded in time and size.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lxmetrics_plugin::{Instance, InstanceStatus, InstanceType};
use serde::Deserialize;

use crate::unix_http::{first_existing, get, get_within, url_segment, ApiError, API_TIMEOUT};

/// The one request per refresh: every instance of every project, with its expanded
/// configuration and devices, but not its state.
const INSTANCES_PATH: &str = "/1.0/instances?recursion=1&all-projects=true";

/// A container manager with LXD's API: LXD itself or Incus.
#[derive(Clone, Debug)]
pub(crate) struct ManagerApi {
    /// `lxd` or `incus`: the `engine` fact of its instances.
    pub(crate) engine: &'static str,
    /// The sockets to try, in order; the first that exists is used.
    candidates: Vec<PathBuf>,
}

impl ManagerApi {
    pub(crate) fn new(engine: &'static str, candidates: Vec<PathBuf>) -> Self {
        ManagerApi { engine, candidates }
    }

    /// The socket of a manager running here, if any.
    pub(crate) fn socket(&self) -> Option<&Path> {
        first_existing(&self.candidates)
    }

    /// Every instance the manager knows, or why it could not say. `Ok(None)`: no
    /// socket, so no manager on this host.
    pub(crate) async fn instances(&self) -> Result<Option<Vec<ManagedInstance>>, ApiError> {
        let Some(socket) = self.socket() else {
            return Ok(None);
        };
        let body = get_within(socket, INSTANCES_PATH).await?;
        let listed = parse_instances(&body).map_err(|reason| ApiError::Answer {
            path: socket.to_owned(),
            reason,
        })?;
        Ok(Some(
            listed
                .into_iter()
                .map(|i| ManagedInstance::from_api(i, self.engine))
                .collect(),
        ))
    }
}

/// The cheap question: only the instances' URLs (no configuration, devices or state),
/// about a seventh of the full list's cost to LXD.
const NAMES_PATH: &str = "/1.0/instances?all-projects=true";

impl ManagerApi {
    /// The (project, name) of every instance the manager knows, sorted, or why it could
    /// not say. `Ok(None)`: no socket here.
    pub(crate) async fn names(&self) -> Result<Option<Vec<(String, String)>>, ApiError> {
        let Some(socket) = self.socket() else {
            return Ok(None);
        };
        let body = get_within(socket, NAMES_PATH).await?;
        let urls: Vec<String> = sync_answer(&body)
            .map(Option::unwrap_or_default)
            .map_err(|reason| ApiError::answer(socket, format!("{NAMES_PATH}: {reason}")))?;
        let mut names: Vec<(String, String)> =
            urls.iter().filter_map(|u| instance_of_url(u)).collect();
        names.sort();
        Ok(Some(names))
    }
}

/// The (project, name) an instance URL names: `/1.0/instances/<name>[?project=<p>]`
/// (percent-encoded; no project means `default`).
fn instance_of_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("/1.0/instances/")?;
    let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    let project = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("project="))
        .and_then(decode)
        .unwrap_or_else(|| "default".to_owned());
    Some((project, decode(name)?))
}

/// A storage pool's size and use (`/1.0/storage-pools/<name>/resources`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PoolFigures {
    pub(crate) name: String,
    pub(crate) driver: String,
    pub(crate) size: u64,
    pub(crate) used: u64,
}

/// One resource of a project: its limit (-1 unlimited) and usage
/// (`/1.0/projects/<name>/state`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ProjectResource {
    pub(crate) project: String,
    pub(crate) resource: String,
    pub(crate) limit: i64,
    pub(crate) usage: i64,
}

/// The manager's storage pools and project limits, for the host and project families.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ManagerFigures {
    pub(crate) pools: Vec<PoolFigures>,
    pub(crate) projects: Vec<ProjectResource>,
    /// (project, resource kind, how many): the project's `used_by` counted by kind
    /// (`instances`, `profiles`, `images`, `networks`, ...).
    pub(crate) counts: Vec<(String, String, u64)>,
}

impl ManagerApi {
    /// Storage pools with their space, and every project's resource limits and usage:
    /// `2 + pools + projects` requests, all within one [`API_TIMEOUT`]. A pool or project
    /// whose figures cannot be had is left out (logged at debug level).
    pub(crate) async fn figures(&self) -> Result<ManagerFigures, ApiError> {
        let Some(socket) = self.socket() else {
            return Ok(ManagerFigures::default());
        };
        tokio::time::timeout(API_TIMEOUT, figures(socket))
            .await
            .map_err(|_| ApiError::Timeout(socket.to_owned()))?
    }
}

/// `GET path` and the `metadata` of its `sync` answer as a `T`.
async fn get_metadata<T: serde::de::DeserializeOwned>(
    socket: &Path,
    path: &str,
) -> Result<T, ApiError> {
    let body = get(socket, path).await?;
    sync_metadata(&body).map_err(|reason| ApiError::Answer {
        path: socket.to_owned(),
        reason: format!("{path}: {reason}"),
    })
}

async fn figures(socket: &Path) -> Result<ManagerFigures, ApiError> {
    let mut out = ManagerFigures::default();
    let pools: Vec<ApiPool> = get_metadata(socket, "/1.0/storage-pools?recursion=1").await?;
    for pool in pools {
        let path = format!("/1.0/storage-pools/{}/resources", url_segment(&pool.name));
        match get_metadata::<ApiPoolResources>(socket, &path).await {
            Ok(r) => out.pools.push(PoolFigures {
                name: pool.name,
                driver: pool.driver,
                size: r.space.total,
                used: r.space.used,
            }),
            Err(e) => tracing::debug!("{path}: left out: {e}"),
        }
    }
    let projects: Vec<ApiProject> = get_metadata(socket, "/1.0/projects?recursion=1").await?;
    for project in projects {
        for (kind, n) in count_by_kind(&project.used_by) {
            out.counts.push((project.name.clone(), kind, n));
        }
        let path = format!("/1.0/projects/{}/state", url_segment(&project.name));
        match get_metadata::<ApiProjectState>(socket, &path).await {
            Ok(state) => {
                let mut resources: Vec<_> = state.resources.into_iter().collect();
                resources.sort_by(|a, b| a.0.cmp(&b.0));
                for (resource, figures) in resources {
                    out.projects.push(ProjectResource {
                        project: project.name.clone(),
                        resource,
                        limit: figures.limit,
                        usage: figures.usage,
                    });
                }
            }
            Err(e) => tracing::debug!("{path}: left out: {e}"),
        }
    }
    Ok(out)
}

/// The `metadata` of a `sync` answer.
fn sync_metadata<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    sync_answer(body)?.ok_or_else(|| "no metadata".to_owned())
}

/// The `metadata` of a `sync` answer, `None` when it is `null` (Go writes an empty list
/// that way).
fn sync_answer<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Option<T>, String> {
    #[derive(Deserialize)]
    struct Envelope<T> {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        error: String,
        metadata: Option<T>,
    }
    let answer: Envelope<T> =
        serde_json::from_slice(body).map_err(|e| format!("not the API's shape: {e}"))?;
    if answer.kind != "sync" {
        return Err(format!(
            "answer of type {:?}: {}",
            answer.kind, answer.error
        ));
    }
    Ok(answer.metadata)
}

#[derive(Deserialize)]
struct ApiPool {
    name: String,
    #[serde(default)]
    driver: String,
}

#[derive(Deserialize)]
struct ApiPoolResources {
    space: ApiSpace,
}

#[derive(Deserialize)]
struct ApiSpace {
    used: u64,
    total: u64,
}

#[derive(Deserialize)]
struct ApiProject {
    name: String,
    #[serde(default)]
    used_by: Vec<String>,
}

/// Counts `used_by` URLs (`/1.0/instances/c1?project=foo`) by their kind.
fn count_by_kind(used_by: &[String]) -> Vec<(String, u64)> {
    let mut counts: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for url in used_by {
        if let Some(kind) = url
            .strip_prefix("/1.0/")
            .and_then(|r| r.split(['/', '?']).next())
        {
            if !kind.is_empty() {
                *counts.entry(kind).or_default() += 1;
            }
        }
    }
    counts.into_iter().map(|(k, n)| (k.to_owned(), n)).collect()
}

#[derive(Deserialize)]
struct ApiProjectState {
    #[serde(default)]
    resources: HashMap<String, ApiProjectResource>,
}

#[derive(Deserialize)]
struct ApiProjectResource {
    #[serde(rename = "Limit")]
    limit: i64,
    #[serde(rename = "Usage")]
    usage: i64,
}

/// The fields of an instance this daemon uses; everything else is skipped unread.
#[derive(Debug, Deserialize)]
struct ApiInstance {
    name: String,
    #[serde(default = "default_project")]
    project: String,
    #[serde(rename = "type", default)]
    kind: String,
    status: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    expanded_config: ApiConfig,
    #[serde(default)]
    expanded_devices: HashMap<String, ApiDevice>,
}

fn default_project() -> String {
    "default".into()
}

#[derive(Debug, Default, Deserialize)]
struct ApiConfig {
    #[serde(rename = "image.description")]
    image_description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiDevice {
    #[serde(rename = "type", default)]
    kind: String,
    path: Option<String>,
}

fn parse_instances(body: &[u8]) -> Result<Vec<ApiInstance>, String> {
    sync_answer(body).map(Option::unwrap_or_default)
}

/// One instance as its manager reports it, and the cgroup name it runs under.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ManagedInstance {
    /// The instance, without cgroup or process yet (discovery adds them when it finds the
    /// cgroup running).
    pub(crate) instance: Instance,
    /// The name LXC gives its cgroup (`lxc.payload.<this>`): the name in project
    /// `default`, `<project>_<name>` elsewhere.
    pub(crate) cgroup_name: String,
}

impl ManagedInstance {
    fn from_api(api: ApiInstance, engine: &'static str) -> Self {
        let kind = match api.kind.as_str() {
            "virtual-machine" => InstanceType::VirtualMachine,
            _ => InstanceType::Container,
        };
        let cgroup_name = if api.project == "default" {
            api.name.clone()
        } else {
            format!("{}_{}", api.project, api.name)
        };
        let mut instance = Instance::new(api.name, api.project, kind, "");
        // Frozen instances keep their processes and cgroup: still read.
        instance.status = match api.status.as_str() {
            "Running" | "Frozen" => InstanceStatus::Running,
            _ => InstanceStatus::Stopped,
        };
        let mut mounts: Vec<String> = api
            .expanded_devices
            .into_values()
            .filter(|d| d.kind == "disk")
            .filter_map(|d| d.path)
            .filter(|p| p.starts_with('/') && p != "/")
            .collect();
        mounts.sort();
        mounts.dedup();
        instance.mounts = mounts;
        let mut info = vec![("engine".to_owned(), engine.to_owned())];
        let mut fact = |key: &str, value: String| {
            if !value.is_empty() {
                info.push((key.to_owned(), value));
            }
        };
        fact("architecture", api.architecture);
        fact(
            "image",
            api.expanded_config.image_description.unwrap_or_default(),
        );
        fact("location", api.location);
        instance.info = info;
        ManagedInstance {
            instance,
            cgroup_name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer recorded from Debian's LXD 5.0.2 (trimmed of idmap keys), with a
    /// stopped instance in a second project and a disk device.
    const LXD_5_0_2: &str = include_str!("../tests/fixtures/api/lxd-5.0.2-instances.json");
    /// Incus 6's shape, written from its documented instance object (no Incus package
    /// exists for this Debian, so it could not be recorded here).
    const INCUS_6: &str = include_str!("../tests/fixtures/api/incus-6-instances.json");

    #[test]
    fn lxd_answers_give_exact_identity_devices_and_facts() {
        let listed: Vec<ManagedInstance> = parse_instances(LXD_5_0_2.as_bytes())
            .unwrap()
            .into_iter()
            .map(|i| ManagedInstance::from_api(i, "lxd"))
            .collect();
        let c1 = listed.iter().find(|m| m.instance.name == "c1").unwrap();
        assert_eq!(c1.cgroup_name, "c1");
        assert_eq!(c1.instance.project, "default");
        assert_eq!(c1.instance.status, InstanceStatus::Running);
        assert_eq!(c1.instance.mounts, ["/mnt/data"]);
        assert!(c1
            .instance
            .info
            .contains(&("image".into(), "busybox (lxmetrics tests)".into())));
        let c4 = listed.iter().find(|m| m.instance.name == "c4").unwrap();
        assert_eq!(c4.cgroup_name, "foo2_c4");
        assert_eq!(c4.instance.project, "foo2");
        assert_eq!(c4.instance.status, InstanceStatus::Stopped);
        assert!(c4.instance.mounts.is_empty());
    }

    #[test]
    fn incus_answers_have_the_same_shape() {
        let listed: Vec<ManagedInstance> = parse_instances(INCUS_6.as_bytes())
            .unwrap()
            .into_iter()
            .map(|i| ManagedInstance::from_api(i, "incus"))
            .collect();
        assert!(!listed.is_empty());
        let vm = listed
            .iter()
            .find(|m| m.instance.kind == InstanceType::VirtualMachine)
            .expect("the recording has a VM");
        assert!(vm
            .instance
            .info
            .contains(&("engine".into(), "incus".into())));
    }

    #[test]
    fn pool_and_project_answers_parse_as_lxd_writes_them() {
        // Recorded from Debian's LXD 5.0.2.
        let resources = br#"{"type":"sync","status":"Success","status_code":200,"operation":"","error_code":0,"error":"","metadata":{"space":{"used":25492897792,"total":270553174016},"inodes":{"used":474178,"total":16777216}}}"#;
        let r: ApiPoolResources = sync_metadata(resources).unwrap();
        assert_eq!(
            (r.space.used, r.space.total),
            (25_492_897_792, 270_553_174_016)
        );
        let state = br#"{"type":"sync","status":"Success","status_code":200,"operation":"","error_code":0,"error":"","metadata":{"resources":{"containers":{"Limit":-1,"Usage":102},"memory":{"Limit":1073741824,"Usage":0}}}}"#;
        let s: ApiProjectState = sync_metadata(state).unwrap();
        assert_eq!(s.resources["containers"].limit, -1);
        assert_eq!(s.resources["containers"].usage, 102);
        assert_eq!(s.resources["memory"].limit, 1_073_741_824);
        assert_eq!(url_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(url_segment("default"), "default");
        let used_by = [
            "/1.0/instances/c1".to_owned(),
            "/1.0/instances/c3?project=foo".to_owned(),
            "/1.0/profiles/default".to_owned(),
            "garbage".to_owned(),
        ];
        assert_eq!(
            count_by_kind(&used_by),
            [("instances".to_owned(), 2), ("profiles".to_owned(), 1)]
        );
    }

    #[test]
    fn instance_urls_give_project_and_name() {
        assert_eq!(
            instance_of_url("/1.0/instances/c1"),
            Some(("default".into(), "c1".into()))
        );
        assert_eq!(
            instance_of_url("/1.0/instances/c%203?project=foo%2Dbar"),
            Some(("foo-bar".into(), "c 3".into()))
        );
        assert_eq!(instance_of_url("/1.0/profiles/default"), None);
    }

    #[test]
    fn errors_and_other_shapes_are_refused_not_guessed() {
        let error =
            br#"{"type":"error","error":"not authorized","error_code":403,"metadata":null}"#;
        assert!(parse_instances(error)
            .unwrap_err()
            .contains("not authorized"));
        assert!(parse_instances(b"<html>").is_err());
        assert!(parse_instances(br#"{"type":"sync","metadata":{"a":1}}"#).is_err());
        let empty = br#"{"type":"sync","metadata":[]}"#;
        assert!(parse_instances(empty).unwrap().is_empty());
        let null = br#"{"type":"sync","metadata":null}"#;
        assert!(parse_instances(null).unwrap().is_empty());
        // A pool answer without its used bytes is refused, not read as 0.
        let no_used = br#"{"type":"sync","metadata":{"space":{"total":10}}}"#;
        assert!(sync_metadata::<ApiPoolResources>(no_used).is_err());
    }
}
