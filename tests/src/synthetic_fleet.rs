//! A host tree with many instances made from the v2 fixture's `web` instance, for tests
//! that need a big fleet without real cgroups: every instance has web's cgroup files and
//! web's process (pid 101 of the fixture's `/proc`), spread over projects as LXD names
//! their cgroups (`lxc.payload.<project>_<name>`; the tree is an LXD host).

use std::path::Path;

use crate::workspace_root;

/// A fleet tree; removed when dropped.
pub struct SyntheticFleet {
    /// The host root, holding `proc`, `sys`, `cgroup` and `lxd.socket`.
    pub root: tempfile::TempDir,
}

impl SyntheticFleet {
    /// `instances` instances over `projects` projects (`default`, `p1`, `p2`, ...).
    pub fn create(instances: usize, projects: usize) -> SyntheticFleet {
        let root = tempfile::tempdir().expect("fleet directory");
        let fixture = workspace_root().join("plugins/tests/fixtures/v2");
        for shared in ["proc", "sys"] {
            std::os::unix::fs::symlink(fixture.join(shared), root.path().join(shared))
                .expect("link fixture tree");
        }
        std::fs::write(root.path().join("lxd.socket"), "").expect("lxd marker");
        let cgroup = root.path().join("cgroup");
        std::fs::create_dir_all(&cgroup).expect("cgroup root");
        std::fs::copy(
            fixture.join("cgroup/cgroup.controllers"),
            cgroup.join("cgroup.controllers"),
        )
        .expect("cgroup.controllers");
        let web = fixture.join("cgroup/lxc.payload.web");
        for i in 0..instances {
            let project = i % projects.max(1);
            let name = match project {
                0 => format!("lxc.payload.c{i}"),
                p => format!("lxc.payload.p{p}_c{i}"),
            };
            copy_tree(&web, &cgroup.join(name));
        }
        SyntheticFleet { root }
    }

    /// The `[host]` and `[instances]` configuration that reads this tree.
    pub fn config(&self) -> String {
        format!(
            "[host]\nproc_root = \"{r}/proc\"\nsys_root = \"{r}/sys\"\ncgroup_root = \"{r}/cgroup\"\n\
             [instances.lxd]\nsocket = \"{r}/lxd.socket\"\n[instances.incus]\nsocket = \"\"\n",
            r = self.root.path().display()
        )
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture").flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy fixture file");
        }
    }
}
