//! Real cgroups for end-to-end tests, made with cgroups-rs: named as LXC names a
//! container, in the controllers the built-in collectors read.

use std::process::Child;
use std::time::Duration;

use cgroups_rs::fs::{hierarchies, Cgroup};

/// The v1 controllers the collectors read (cgroups-rs uses cgroup2 where that is mounted).
const CONTROLLERS: [&str; 6] = ["cpuacct", "cpu", "cpuset", "memory", "pids", "blkio"];

/// Creates `lxc.payload.<name>` in every controller the collectors read.
pub fn create_lxc_cgroup(name: &str) -> Cgroup {
    Cgroup::new_with_specified_controllers(
        hierarchies::auto(),
        format!("lxc.payload.{name}"),
        Some(CONTROLLERS.map(String::from).to_vec()),
    )
    .unwrap_or_else(|e| panic!("cannot create the cgroup lxc.payload.{name}: {e}"))
}

/// Removes a cgroup once its processes are gone (the kernel refuses while it has any),
/// retrying for up to a second.
pub fn delete_cgroup(cgroup: &Cgroup) {
    for _ in 0..100 {
        if cgroup.delete().is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A test's process and real cgroup, killed and removed when dropped (also when an
/// assertion fails).
#[derive(Default)]
pub struct CgroupWorkload {
    /// The workload, once started.
    pub child: Option<Child>,
    /// Its cgroup, once created.
    pub cgroup: Option<Cgroup>,
}

impl Drop for CgroupWorkload {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.kill();
            delete_cgroup(cg);
        }
    }
}
