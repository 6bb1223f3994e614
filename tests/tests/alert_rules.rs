//! The shipped rules (`examples/prometheus-rules/`): `promtool check rules` accepts them,
//! `promtool test rules` runs a firing and a quiet case for every alert, and every metric
//! they use is one the daemon emits.

use std::process::Command;

use lxmetrics_tests::real_lxd::ensure_lxd;
use lxmetrics_tests::{
    emits, fixture_state_dir, metric_names_in, require_program, state_with_config, workspace_root,
    Daemon,
};

fn promtool(args: &[&str]) -> String {
    let promtool = require_program("promtool", "prometheus");
    let out = Command::new(promtool)
        .args(args)
        .current_dir(workspace_root().join("examples/prometheus-rules"))
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    let checked = promtool(&["check", "rules", "lxmetrics.rules.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "lxmetrics.rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Every alert has a test in which it fires.
    let rules = std::fs::read_to_string(
        workspace_root().join("examples/prometheus-rules/lxmetrics.rules.yml"),
    )
    .unwrap();
    let tests = std::fs::read_to_string(
        workspace_root().join("examples/prometheus-rules/lxmetrics.rules.test.yml"),
    )
    .unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 7, "{alerts:?}");
    for alert in alerts {
        let tested = tests
            .split("alertname: ")
            .skip(1)
            .any(|block| block.starts_with(alert) && block.contains("exp_labels"));
        assert!(tested, "{alert} has no firing test");
    }
}

#[tokio::test]
async fn every_metric_the_rules_use_is_emitted() {
    let rules = std::fs::read_to_string(
        workspace_root().join("examples/prometheus-rules/lxmetrics.rules.yml"),
    )
    .unwrap();
    let names = metric_names_in(rules.lines().filter(|l| !l.trim_start().starts_with('#')));
    assert!(names.len() >= 10, "{names:?}");
    let daemon = Daemon::start_in(fixture_state_dir("v2", ""), &[]);
    let (status, body) = daemon.get("/1.0/metrics").await;
    assert_eq!(status, 200);
    // Storage pools and projects come from the LXD API: asked of a daemon on this host,
    // next to the real LXD.
    // They are fetched in the background (no refresh waits for them): asked until they
    // are there.
    ensure_lxd();
    let state = state_with_config("[metrics]\ncache_ttl = \"100ms\"\n");
    let on_lxd = Daemon::start_in(state, &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let lxd_body = loop {
        let (status, lxd_body) = on_lxd.get("/1.0/metrics").await;
        assert_eq!(status, 200);
        if lxd_body.contains("lxd_project_limit{") || std::time::Instant::now() > deadline {
            break lxd_body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    for name in &names {
        let from_api = name.starts_with("lxd_storage_pool_") || name.starts_with("lxd_project_");
        let body = if from_api { &lxd_body } else { &body };
        assert!(
            emits(body, name),
            "the rules use {name}, which the daemon does not emit"
        );
    }
}
