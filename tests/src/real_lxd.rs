//! A real LXD for the tests: set up once per test process by `tests/setup/lxd`
//! (Debian's lxd started by hand, a `dir` pool, a bridge, a busybox image), and the
//! `lxc` commands the tests drive it with. A test that needs it fails with the setup's
//! message when it cannot be had; it never skips.

use std::process::Command;

/// Sets LXD up (idempotently) the first time a test asks; panics with what is missing.
pub fn ensure_lxd() {
    crate::setup::ensure_setup("lxd", "a real LXD is needed: root, Debian's lxd package");
}

/// Runs `lxc ARGS` and returns its standard output; panics with its error otherwise.
pub fn lxc(args: &[&str]) -> String {
    let out = Command::new("lxc")
        .args(args)
        .output()
        .expect("run lxc (Debian package lxd-client)");
    assert!(
        out.status.success(),
        "lxc {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `lxc ARGS`, ignoring failure (clean-up of what an earlier run may have left).
pub fn lxc_quiet(args: &[&str]) {
    let _ = Command::new("lxc").args(args).output();
}

/// Removes instances and projects an earlier run may have left, then creates the
/// projects (sharing the default project's images and profiles, as LXD's own test does).
pub fn fresh_projects(instances: &[(&str, &str)], projects: &[&str]) {
    for (project, name) in instances {
        lxc_quiet(&["delete", "-f", name, "--project", project]);
    }
    for project in projects {
        lxc_quiet(&["project", "delete", project]);
        lxc(&[
            "project",
            "create",
            project,
            "-c",
            "features.images=false",
            "-c",
            "features.profiles=false",
        ]);
    }
}

/// How many instances of `kind` (`container` or `virtual-machine`) LXD itself lists in
/// `project`.
pub fn lxd_instance_count(project: &str, kind: &str) -> usize {
    let listed = lxc(&["list", "--project", project, "--format", "csv", "-c", "t"]);
    let kind = match kind {
        "virtual-machine" => "VIRTUAL-MACHINE",
        _ => "CONTAINER",
    };
    listed.lines().filter(|l| l.trim() == kind).count()
}
