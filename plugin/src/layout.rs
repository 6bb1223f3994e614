//! Which cgroup hierarchies the host has: v2 (unified), v1 (one mount per controller) or
//! hybrid (v1 controllers plus a v2 hierarchy at `unified/`), found from the configured
//! `host.cgroup_root` so fixture trees work the same as the real host.

use std::path::{Path, PathBuf};

/// A cgroup controller whose files the collectors read. More may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Controller {
    /// CPU time (`cpuacct` in v1, `cpu` in v2).
    Cpuacct,
    /// Effective CPUs.
    Cpuset,
    /// Memory.
    Memory,
    /// Process counts.
    Pids,
    /// Block I/O (`blkio` in v1, `io` in v2).
    Blkio,
    /// CPU bandwidth: the CFS quota and throttling (`cpu` in v1 and v2).
    Cpu,
}

impl Controller {
    /// Every controller, in the order tried for discovery.
    const ALL: [Controller; 6] = [
        Controller::Pids,
        Controller::Memory,
        Controller::Cpuacct,
        Controller::Cpuset,
        Controller::Blkio,
        Controller::Cpu,
    ];

    /// Directory names a v1 mount of this controller may have under the cgroup root.
    fn v1_dirs(self) -> &'static [&'static str] {
        match self {
            Controller::Cpuacct => &["cpuacct", "cpu,cpuacct", "cpuacct,cpu"],
            Controller::Cpuset => &["cpuset"],
            Controller::Memory => &["memory"],
            Controller::Pids => &["pids"],
            Controller::Blkio => &["blkio"],
            Controller::Cpu => &["cpu", "cpu,cpuacct", "cpuacct,cpu"],
        }
    }
}

/// Where a controller's files are, and in which format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// A v1 mount of this controller.
    V1(PathBuf),
    /// The v2 unified hierarchy.
    V2(PathBuf),
}

impl Hierarchy {
    /// The directory of cgroup `relative` in this hierarchy.
    pub fn dir(&self, relative: &str) -> PathBuf {
        match self {
            Hierarchy::V1(root) | Hierarchy::V2(root) => root.join(relative),
        }
    }
}

/// The detected layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    v1: Vec<(Controller, PathBuf)>,
    v2: Option<PathBuf>,
}

/// No cgroup hierarchy under the root.
#[derive(Debug, thiserror::Error)]
#[error(
    "no cgroup hierarchy found under {0} (neither cgroup.controllers nor v1 controller mounts)"
)]
pub struct NoCgroups(PathBuf);

impl Layout {
    /// Detects the layout under `root` (normally `/sys/fs/cgroup`).
    pub fn detect(root: &Path) -> Result<Layout, NoCgroups> {
        if root.join("cgroup.controllers").is_file() {
            return Ok(Layout {
                v1: Vec::new(),
                v2: Some(root.to_path_buf()),
            });
        }
        let v1: Vec<(Controller, PathBuf)> = Controller::ALL
            .iter()
            .filter_map(|c| {
                c.v1_dirs()
                    .iter()
                    .map(|d| root.join(d))
                    .find(|p| p.is_dir())
                    .map(|p| (*c, p))
            })
            .collect();
        let unified = root.join("unified");
        let v2 = unified
            .join("cgroup.controllers")
            .is_file()
            .then_some(unified);
        if v1.is_empty() && v2.is_none() {
            return Err(NoCgroups(root.to_path_buf()));
        }
        Ok(Layout { v1, v2 })
    }

    /// Where `controller`'s files are: its v1 mount when it has one, else the v2 hierarchy.
    pub fn hierarchy(&self, controller: Controller) -> Option<Hierarchy> {
        self.v1
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, p)| Hierarchy::V1(p.clone()))
            .or_else(|| self.v2.clone().map(Hierarchy::V2))
    }

    /// The v2 hierarchy, when there is one (v2 hosts, and `unified/` on hybrid hosts):
    /// where pressure (PSI) files are, whatever the v1 controllers.
    pub fn unified(&self) -> Option<&Path> {
        self.v2.as_deref()
    }

    /// The hierarchy discovery walks: the first v1 controller mount (where LXC, Docker
    /// and systemd create their cgroups on v1 and hybrid hosts), else v2.
    pub fn discovery_root(&self) -> PathBuf {
        match self.v1.first() {
            Some((_, path)) => path.clone(),
            None => self.v2.clone().unwrap_or_default(),
        }
    }
}
