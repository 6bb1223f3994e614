//! Keeps the soak run (`lxmetrics-soak`, documented in docs/reliability.md) working: a
//! short run with fewer scrapers must pass its own checks.

use std::process::Command;

#[test]
fn a_short_soak_passes() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the soak run needs root to churn cgroups"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_lxmetrics-soak"))
        .args(["--duration", "10s", "--scrapers", "10"])
        .output()
        .expect("run lxmetrics-soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "PASS rss_kib",
        "PASS fds",
        "PASS threads",
        "PASS failed scrapes",
    ] {
        assert!(stdout.contains(line), "{line} missing:\n{stdout}");
    }
}
