//! The example third-party plugin (`examples/example-plugin`, depending only on
//! lxmetrics-core) linked into a custom daemon (`examples/custom-daemon`): it shows up in
//! `collectors` and its metric in `/1.0/metrics`, next to the built-ins.

use lxmetrics_tests::{custom_daemon_bin, fixture_state_dir, Daemon};

#[tokio::test]
async fn custom_daemon_serves_the_plugin_next_to_the_builtins() {
    let state = fixture_state_dir("v2", "");
    let daemon = Daemon::start_program(
        custom_daemon_bin(),
        state,
        &["--https-address", "127.0.0.1:0"],
    );

    let listing = String::from_utf8(daemon.cli(&["collectors"]).stdout).unwrap();
    for name in ["example", "cpu", "memory"] {
        let row = listing
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{listing}"));
        assert_eq!(row.split_whitespace().nth(1), Some("yes"), "{row}");
    }

    let (status, body) = daemon.get("/1.0/metrics").await;
    assert_eq!(status, 200);
    // The v2 fixture's web instance runs pid 101 (in its init.scope).
    assert!(
        body.contains(
            "lxd_example_init_pid{name=\"web\",project=\"default\",type=\"container\"} 101\n"
        ),
        "{body}"
    );
    assert!(body.contains("lxd_metrics_collector_success{collector=\"example\"} 1"));
    assert!(
        body.contains("lxd_cpu_seconds_total{"),
        "built-ins still there"
    );
}
