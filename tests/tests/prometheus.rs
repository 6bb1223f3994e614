//! A real Prometheus (Debian package `prometheus`) scrapes the daemon with the product
//! note's configuration: `scheme: https`, `metrics_path: /1.0/metrics`, `tls_config` with
//! `ca_file`, `cert_file`, `key_file`, and a `server_name` that differs from the target
//! host (the target is 127.0.0.1, the name is the host name in the certificate's SANs).
//! Asserted through Prometheus' HTTP API: `up == 1` and an `lxd_` series arrived.

use std::process::Command;
use std::time::Duration;

use lxmetrics_tests::prometheus::Prometheus;
use lxmetrics_tests::Daemon;

#[tokio::test]
async fn prometheus_scrapes_over_mtls_with_server_name() {
    let daemon = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    daemon.write_prometheus_tls(dir.path());

    let target = daemon.url.trim_start_matches("https://").to_owned();
    let host_name = lxmetrics_server_host_name();
    assert_ne!(host_name, "127.0.0.1");
    // examples/prometheus.yml as shipped, with the test's port, a 1 s interval, and the
    // server_name case switched on (the target 127.0.0.1 is not the name we verify).
    let example =
        std::fs::read_to_string(lxmetrics_tests::workspace_root().join("examples/prometheus.yml"))
            .unwrap();
    assert!(example.contains("'127.0.0.1:8443'") && example.contains("# server_name: 'my-host'"));
    let config = example
        .replace("'127.0.0.1:8443'", &format!("'{target}'"))
        .replace(
            "scrape_interval: 15s",
            "scrape_interval: 1s\n  scrape_timeout: 1s",
        )
        .replace(
            "# server_name: 'my-host'",
            &format!("server_name: '{host_name}'"),
        );
    let prometheus = Prometheus::start(dir.path(), &config, &[]);
    prometheus
        .wait_for("up{job=\"lxd\"} == 1", Duration::from_secs(60), |r| {
            !r.is_empty()
        })
        .await;
    prometheus
        .wait_for("lxd_uptime_seconds", Duration::from_secs(30), |r| {
            !r.is_empty()
        })
        .await;
}

/// The host name the daemon put in its certificate's DNS SAN.
fn lxmetrics_server_host_name() -> String {
    let out = Command::new("uname").arg("-n").output().expect("uname");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
