//! The Debian package recipe (`packaging/build-deb.sh`, dpkg-deb only) produces a package
//! that installs, ships the systemd unit and a configuration that loads, and whose binary
//! runs `lxmetrics daemon --help`. The package is removed again afterwards.

use std::path::Path;
use std::process::Command;

use lxmetrics_tests::{lxmetrics_bin, require_program, workspace_root};

/// Removes the package even when an assertion fails.
struct Remove;

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "lxmetrics"]).output();
    }
}

#[test]
fn deb_installs_and_runs() {
    require_program("dpkg-deb", "dpkg");
    require_program("dpkg", "dpkg");
    assert!(
        rustix::process::geteuid().is_root(),
        "installing a package needs root"
    );
    let out_dir = tempfile::tempdir().unwrap();
    let built = Command::new("bash")
        .arg(workspace_root().join("packaging/build-deb.sh"))
        .arg(lxmetrics_bin())
        .arg(out_dir.path())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = String::from_utf8(built.stdout).unwrap().trim().to_owned();
    assert!(deb.ends_with(".deb") && Path::new(&deb).is_file(), "{deb}");

    let _remove = Remove;
    let installed = Command::new("dpkg").args(["-i", &deb]).output().unwrap();
    assert!(
        installed.status.success(),
        "{}",
        String::from_utf8_lossy(&installed.stderr)
    );

    let help = Command::new("/usr/bin/lxmetrics")
        .args(["daemon", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--https-address"));

    let unit = std::fs::read_to_string("/lib/systemd/system/lxmetrics.service").unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/lxmetrics daemon"));
    let state = tempfile::tempdir().unwrap();
    let listed = Command::new("/usr/bin/lxmetrics")
        .arg("--state-dir")
        .arg(state.path())
        .args(["--config", "/etc/lxmetrics/config.toml", "collectors"])
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "the shipped config loads: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
}
