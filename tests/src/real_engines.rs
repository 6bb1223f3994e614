//! Real Docker, Podman and plain LXC for the tests: set up once per test process by
//! `tests/setup/engines` (dockerd and `podman system service` started by hand, a
//! `lxmetrics-busybox` image imported into both), and the commands the tests drive them
//! with. A test that needs them fails with the setup's message when they cannot be had.

use std::process::Command;

/// The image `tests/setup/engines` imports into Docker and Podman.
pub const IMAGE: &str = "lxmetrics-busybox";

/// Sets the engines up (idempotently) the first time a test asks; panics with what is
/// missing.
pub fn ensure_engines() {
    crate::setup::ensure_setup(
        "engines",
        "real container engines are needed: root, Debian's docker.io, podman, catatonit and lxc",
    );
}

/// Debian's docker client (another `docker` earlier in PATH may be newer than the
/// daemon).
fn docker_program() -> &'static str {
    if std::path::Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

/// Runs `program ARGS` and returns its trimmed standard output; panics with its error
/// otherwise.
pub fn run(program: &str, args: &[&str]) -> String {
    let program = if program == "docker" {
        docker_program()
    } else {
        program
    };
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs `program ARGS`, ignoring failure (clean-up of what an earlier run may have left).
pub fn run_quiet(program: &str, args: &[&str]) {
    let program = if program == "docker" {
        docker_program()
    } else {
        program
    };
    let _ = Command::new(program).args(args).output();
}
