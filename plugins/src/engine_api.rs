//! The Docker and Podman APIs over their unix sockets: which containers exist, running or
//! not, under which name and project, from which image, with which volumes. Identity
//! comes from here on a Docker or Podman host; numbers still come from cgroups and
//! `/proc`.
//!
//! One list per asked view (`GET /containers/json?all=1` for Docker, Podman's
//! `/libpod/containers/json?all=true`, which adds each container's pid and pod). Docker's
//! list has no pid, so a running container whose cgroup is not where Docker puts it by
//! default (`--cgroup-parent`) is inspected once to learn it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lxmetrics_plugin::{Instance, InstanceStatus, InstanceType};
use serde::Deserialize;

use crate::unix_http::{first_existing, get, get_within, url_segment, ApiError, API_TIMEOUT};

/// Docker's compose project label; Podman's compose tool sets its own.
const PROJECT_LABELS: [&str; 2] = ["com.docker.compose.project", "io.podman.compose.project"];

/// Containers inspected at most per refresh (Docker only, custom cgroup parents).
const MAX_INSPECTS: usize = 64;

/// A container engine with a Docker-style API: Docker or Podman.
#[derive(Clone, Debug)]
pub(crate) struct EngineApi {
    /// `docker` or `podman`: the `engine` fact of its containers.
    pub(crate) engine: &'static str,
    /// The sockets to try, in order; the first that exists is used.
    candidates: Vec<PathBuf>,
    /// Container labels copied into `instance_info` (`instances.<engine>.labels`).
    labels: Arc<[String]>,
}

/// One container as its engine reports it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct EngineContainer {
    /// `docker` or `podman`.
    pub(crate) engine: &'static str,
    /// The instance, without cgroup or process yet (discovery adds them when it finds the
    /// cgroup running).
    pub(crate) instance: Instance,
    /// The full container id: the name of its cgroup (`docker/<id>`, `libpod-<id>`).
    pub(crate) id: String,
    /// A process of the container when the list gave one (Podman), which tells where its
    /// cgroup is.
    pub(crate) pid: Option<u32>,
}

impl EngineApi {
    pub(crate) fn new(engine: &'static str, candidates: Vec<PathBuf>, labels: &[String]) -> Self {
        EngineApi {
            engine,
            candidates,
            labels: labels.into(),
        }
    }

    /// The socket of an engine running here, if any.
    pub(crate) fn socket(&self) -> Option<&Path> {
        first_existing(&self.candidates)
    }

    /// Every container the engine knows, or why it could not say. `Ok(None)`: no
    /// socket, so no such engine on this host.
    pub(crate) async fn containers(&self) -> Result<Option<Vec<EngineContainer>>, ApiError> {
        let Some(socket) = self.socket() else {
            return Ok(None);
        };
        let path = match self.engine {
            "podman" => "/v4.0.0/libpod/containers/json?all=true",
            _ => "/containers/json?all=1",
        };
        let body = get_within(socket, path).await?;
        let listed: Vec<ListedContainer> = serde_json::from_slice(&body)
            .map_err(|e| ApiError::answer(socket, format!("{path}: not the API's shape: {e}")))?;
        Ok(Some(
            listed
                .into_iter()
                .filter_map(|c| self.container(c))
                .collect(),
        ))
    }

    /// The main process of each of these containers (Docker's inspect), for finding the
    /// cgroups of containers under custom parents: the first [`MAX_INSPECTS`] are asked,
    /// all within one [`API_TIMEOUT`]; each asked id comes back with its pid, or `None`
    /// when it had none or no answer came in time.
    pub(crate) async fn pids(&self, ids: &[String]) -> Vec<(String, Option<u32>)> {
        let asked = &ids[..ids.len().min(MAX_INSPECTS)];
        let Some(socket) = self.socket() else {
            return asked.iter().map(|id| (id.clone(), None)).collect();
        };
        let asks = asked.iter().map(|id| async move {
            let path = format!("/containers/{}/json", url_segment(id));
            let body = get(socket, &path).await.ok()?;
            let inspected: Inspected = serde_json::from_slice(&body).ok()?;
            inspected.state.pid.filter(|p| *p > 0)
        });
        let answers =
            match tokio::time::timeout(API_TIMEOUT, futures_util::future::join_all(asks)).await {
                Ok(answers) => answers,
                Err(_) => {
                    tracing::debug!(engine = self.engine, "container inspects timed out");
                    vec![None; asked.len()]
                }
            };
        asked.iter().cloned().zip(answers).collect()
    }

    /// The instance a listed container is (`None` for an entry without an id).
    fn container(&self, listed: ListedContainer) -> Option<EngineContainer> {
        if listed.id.is_empty() {
            return None;
        }
        let labels = listed.labels.unwrap_or_default();
        // Docker lists `/name` plus `/other/alias` for links: the name is the one
        // without a second `/`.
        let name = listed
            .names
            .unwrap_or_default()
            .iter()
            .map(|n| n.strip_prefix('/').unwrap_or(n))
            .find(|n| !n.contains('/'))
            .map_or_else(|| short_id(&listed.id).to_owned(), str::to_owned);
        let project = PROJECT_LABELS
            .iter()
            .find_map(|key| labels.get(*key).filter(|v| !v.is_empty()))
            .or(listed.pod_name.as_ref().filter(|p| !p.is_empty()))
            .map_or("default", String::as_str)
            .to_owned();
        let mut instance = Instance::new(name, project, InstanceType::Container, "");
        // A paused container keeps its processes and cgroup: still read.
        instance.status = match listed.state.as_str() {
            "running" | "paused" => InstanceStatus::Running,
            _ => InstanceStatus::Stopped,
        };
        let mut mounts: Vec<String> = listed
            .mounts
            .unwrap_or_default()
            .into_iter()
            .map(ListedMount::destination)
            .filter(|p| p.starts_with('/') && p != "/")
            .collect();
        mounts.sort();
        mounts.dedup();
        instance.mounts = mounts;
        let mut info = vec![
            ("engine".to_owned(), self.engine.to_owned()),
            ("id".to_owned(), short_id(&listed.id).to_owned()),
        ];
        if !listed.image.is_empty() {
            info.push(("image".to_owned(), listed.image));
        }
        for key in self.labels.iter() {
            if let Some(value) = labels.get(key) {
                info.push((label_name(key), value.clone()));
            }
        }
        instance.info = info;
        Some(EngineContainer {
            engine: self.engine,
            instance,
            pid: listed.pid.filter(|p| *p > 0),
            id: listed.id,
        })
    }
}

/// The first 12 characters of an id, as `docker ps` and `podman ps` show it.
fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The `instance_info` label an engine label becomes: `label_` and the key with every
/// character other than ASCII letters, digits and `_` turned into `_`.
fn label_name(key: &str) -> String {
    let mut name = String::with_capacity(6 + key.len());
    name.push_str("label_");
    name.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    name
}

/// The fields of a listed container this daemon uses, in Docker's and Podman's list
/// shapes; everything else is skipped unread.
#[derive(Debug, Deserialize)]
struct ListedContainer {
    #[serde(rename = "Id", default)]
    id: String,
    #[serde(rename = "Names", default)]
    names: Option<Vec<String>>,
    #[serde(rename = "Image", default)]
    image: String,
    #[serde(rename = "Labels", default)]
    labels: Option<HashMap<String, String>>,
    #[serde(rename = "State", default)]
    state: String,
    #[serde(rename = "Mounts", default)]
    mounts: Option<Vec<ListedMount>>,
    /// Podman only.
    #[serde(rename = "Pid", default)]
    pid: Option<u32>,
    /// Podman only.
    #[serde(rename = "PodName", default)]
    pod_name: Option<String>,
}

/// A mount as Docker lists it (an object) or Podman does (the destination).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ListedMount {
    Docker {
        #[serde(rename = "Destination", default)]
        destination: String,
    },
    Podman(String),
}

impl ListedMount {
    fn destination(self) -> String {
        match self {
            ListedMount::Docker { destination } | ListedMount::Podman(destination) => destination,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Inspected {
    #[serde(rename = "State")]
    state: InspectedState,
}

#[derive(Debug, Deserialize)]
struct InspectedState {
    #[serde(rename = "Pid", default)]
    pid: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GET /containers/json?all=1` recorded from Debian's docker.io 20.10.24: a named
    /// container, one in compose project `shop` with a volume, a stopped one, one on the
    /// host network.
    const DOCKER_20_10: &str = include_str!("../tests/fixtures/api/docker-20.10-containers.json");
    /// `GET /v4.0.0/libpod/containers/json?all=true` recorded from Debian's podman 4.3.1:
    /// a container and a pod of two with its infra container.
    const PODMAN_4_3: &str = include_str!("../tests/fixtures/api/podman-4.3-containers.json");

    fn parse(engine: &'static str, labels: &[&str], body: &str) -> Vec<EngineContainer> {
        let labels: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        let api = EngineApi::new(engine, Vec::new(), &labels);
        let listed: Vec<ListedContainer> = serde_json::from_str(body).unwrap();
        listed
            .into_iter()
            .filter_map(|c| api.container(c))
            .collect()
    }

    fn fact<'a>(c: &'a EngineContainer, key: &str) -> Option<&'a str> {
        c.instance
            .info
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn docker_containers_get_their_names_compose_projects_and_facts() {
        let listed = parse("docker", &["team"], DOCKER_20_10);
        let web = listed.iter().find(|c| c.instance.name == "web1").unwrap();
        assert_eq!(web.instance.project, "default");
        assert_eq!(web.instance.status, InstanceStatus::Running);
        assert_eq!(fact(web, "engine"), Some("docker"));
        assert_eq!(fact(web, "image"), Some("lxmetrics-busybox"));
        assert_eq!(fact(web, "id"), Some(&web.id[..12]));
        assert_eq!(web.pid, None, "Docker's list has no pid");
        let db = listed
            .iter()
            .find(|c| c.instance.name == "shop_db")
            .unwrap();
        assert_eq!(db.instance.project, "shop");
        assert_eq!(fact(db, "label_team"), Some("blue"));
        assert_eq!(db.instance.mounts, ["/data"]);
        let stopped = listed
            .iter()
            .find(|c| c.instance.name == "stopped1")
            .unwrap();
        assert_eq!(stopped.instance.status, InstanceStatus::Stopped);
        // Labels not on the allow-list stay out.
        assert!(listed
            .iter()
            .all(|c| c.instance.info.iter().all(|(k, _)| !k.contains("compose"))));
    }

    #[test]
    fn podman_containers_get_pods_as_projects_and_their_pids() {
        let listed = parse("podman", &[], PODMAN_4_3);
        let web = listed.iter().find(|c| c.instance.name == "pweb").unwrap();
        assert_eq!(web.instance.project, "default");
        assert!(web.pid.is_some());
        let members: Vec<&EngineContainer> = listed
            .iter()
            .filter(|c| c.instance.project == "shoppod")
            .collect();
        assert_eq!(members.len(), 2, "a member and the pod's infra container");
        // The compose label wins over the pod.
        let pb = listed.iter().find(|c| c.instance.name == "pb").unwrap();
        assert_eq!(pb.instance.project, "xx");
        assert!(listed.iter().all(|c| fact(c, "engine") == Some("podman")));
    }

    #[test]
    fn label_names_are_valid_prometheus_label_names() {
        assert_eq!(label_name("team"), "label_team");
        assert_eq!(
            label_name("com.example/owner-team"),
            "label_com_example_owner_team"
        );
        assert_eq!(label_name("ünï"), "label__n_");
    }

    #[test]
    fn other_shapes_are_refused_and_odd_entries_survive() {
        assert!(serde_json::from_str::<Vec<ListedContainer>>(r#"{"message":"x"}"#).is_err());
        let listed = parse(
            "docker",
            &[],
            r#"[{"Id":""},{"Id":"0123456789abcdef","Names":null,"State":"exited"}]"#,
        );
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].instance.name, "0123456789ab");
    }
}
