//! The instance model: what a container or virtual machine looks like to collectors.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Whether an instance is a container or a virtual machine; rendered as the `type` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceType {
    /// A system or application container (LXC, Docker, Podman, systemd-nspawn).
    Container,
    /// A virtual machine (QEMU under LXD or libvirt).
    VirtualMachine,
}

impl InstanceType {
    /// The label value LXD uses for this type.
    pub const fn as_str(self) -> &'static str {
        match self {
            InstanceType::Container => "container",
            InstanceType::VirtualMachine => "virtual-machine",
        }
    }
}

impl fmt::Display for InstanceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an instance runs, as the runtime that owns it says (LXD's words).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[non_exhaustive]
pub enum InstanceStatus {
    /// Running: its cgroup holds processes.
    #[default]
    Running,
    /// Known to its runtime but not running (stopped, exited, created).
    Stopped,
}

impl InstanceStatus {
    /// The label value (`status` of `instance_info`), as LXD spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Running => "Running",
            InstanceStatus::Stopped => "Stopped",
        }
    }
}

/// One instance found by discovery: the unit every instance series is labelled with.
///
/// Collectors receive the running instances whose cgroup was found, in a slice, and
/// refer to them by [`InstanceIndex`], so a sample carries a 4-byte index instead of
/// three label strings. Instances a runtime's API reports that are not running (or whose
/// cgroup cannot be read) are counted and described but never given to collectors.
///
/// More facts may be added, so it is built with [`Instance::new`] or
/// [`Instance::container`], not a struct literal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Instance {
    /// Instance name (the `name` label).
    pub name: String,
    /// Project the instance belongs to (the `project` label).
    pub project: String,
    /// Container or virtual machine (the `type` label).
    #[serde(rename = "type")]
    pub kind: InstanceType,
    /// The instance's cgroup, relative to each hierarchy's mount point
    /// (for example `lxc.payload.web` or `system.slice/docker-0123.scope`).
    pub cgroup: String,
    /// A process inside the instance, used to enter its namespaces and root file system.
    /// `None` when discovery found the cgroup but could not read a process from it.
    pub pid: Option<u32>,
    /// Running or not, as its runtime says.
    #[serde(default)]
    pub status: InstanceStatus,
    /// Paths inside the instance where further disks are mounted (LXD/Incus `disk`
    /// devices, engine volumes), besides `/`; the filesystem collector reports each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<String>,
    /// What the runtime knows about it beyond name, project and type (for example
    /// `image`, `architecture`, `location`), served as labels of `instance_info`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub info: Vec<(String, String)>,
}

impl Instance {
    /// An instance with no known process.
    pub fn new(
        name: impl Into<String>,
        project: impl Into<String>,
        kind: InstanceType,
        cgroup: impl Into<String>,
    ) -> Self {
        Instance {
            name: name.into(),
            project: project.into(),
            kind,
            cgroup: cgroup.into(),
            pid: None,
            status: InstanceStatus::Running,
            mounts: Vec::new(),
            info: Vec::new(),
        }
    }

    /// Whether collectors read it: running, with a cgroup discovery found.
    pub fn is_readable(&self) -> bool {
        self.status == InstanceStatus::Running && !self.cgroup.is_empty()
    }

    /// The same instance with `pid` as its known process.
    pub fn with_pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }

    /// A container in project `default` with no known process: handy for tests and plugins.
    pub fn container(name: impl Into<String>, cgroup: impl Into<String>) -> Self {
        Instance::new(name, "default", InstanceType::Container, cgroup)
    }
}

/// Position of an instance in the refresh's instance slice.
pub type InstanceIndex = u32;
