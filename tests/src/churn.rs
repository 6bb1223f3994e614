//! Instance churn on real cgroups: short-lived "instances" (a cgroup named like an LXC
//! container with a sleeping process in it), for fault tests and the soak run.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cgroups_rs::fs::{hierarchies, Cgroup};
use cgroups_rs::CgroupPid;

/// One short-lived instance: a cgroup with a sleeping process in it.
pub struct Churned {
    cgroup: Cgroup,
    child: Child,
}

impl Churned {
    /// Creates `lxc.payload.<name>` in every v1 controller (and v2) with a `sleep` in it.
    pub fn start(name: &str) -> Churned {
        let controllers = ["cpuacct", "cpu", "memory", "pids", "blkio"]
            .map(String::from)
            .to_vec();
        let cgroup = Cgroup::new_with_specified_controllers(
            hierarchies::auto(),
            format!("lxc.payload.{name}"),
            Some(controllers),
        )
        .expect("create a cgroup");
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
        for _ in 0..100 {
            if self.cgroup.delete().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
