//! Instance churn on real cgroups: short-lived "instances" (a cgroup named like an LXC
//! container with a sleeping process in it), for fault tests and the soak run.

use std::process::{Child, Command, Stdio};

use cgroups_rs::fs::Cgroup;
use cgroups_rs::CgroupPid;

use crate::real_cgroup::{create_lxc_cgroup, delete_cgroup};

/// One short-lived instance: a cgroup with a sleeping process in it.
pub struct Churned {
    cgroup: Cgroup,
    child: Child,
}

impl Churned {
    /// Creates `lxc.payload.<name>` in every v1 controller (and v2) with a `sleep` in it.
    pub fn start(name: &str) -> Churned {
        let cgroup = create_lxc_cgroup(name);
        let child = Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .spawn()
            .expect("start sleep");
        cgroup
            .add_task_by_tgid(CgroupPid::from(u64::from(child.id())))
            .expect("move the process into the cgroup");
        Churned { cgroup, child }
    }
}

impl Drop for Churned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        delete_cgroup(&self.cgroup);
    }
}
