//! Every metric `examples/grafana-dashboard.json` queries is one the daemon emits: the
//! dashboard's expressions (panels and template variables) are scanned for `lxd_` names and
//! each must appear in a scrape of a daemon reading the v2 fixture tree.

use lxmetrics_tests::{emits, fixture_state_dir, metric_names_in, workspace_root, Daemon};

fn queried_metrics(dashboard: &serde_json::Value) -> Vec<String> {
    let mut expressions = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        for target in panel["targets"].as_array().expect("targets") {
            expressions.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if let Some(q) = variable["query"]["query"].as_str() {
            expressions.push(q.to_owned());
        }
    }
    metric_names_in(expressions.iter().map(String::as_str))
}

#[tokio::test]
async fn every_dashboard_metric_is_emitted() {
    let text =
        std::fs::read_to_string(workspace_root().join("examples/grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let names = queried_metrics(&dashboard);
    for area in [
        "cpu",
        "memory",
        "network",
        "disk",
        "filesystem",
        "procs",
        "cpu_throttled",
        "pressure",
        "cpu_limit",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(&format!("lxd_{area}"))),
            "no {area} panel: {names:?}"
        );
    }

    let state = fixture_state_dir("v2", "");
    let daemon = Daemon::start_in(state, &[]);
    let (status, body) = daemon.get("/1.0/metrics").await;
    assert_eq!(status, 200);
    for name in &names {
        assert!(
            emits(&body, name),
            "the dashboard queries {name}, which the daemon does not emit"
        );
    }
}
