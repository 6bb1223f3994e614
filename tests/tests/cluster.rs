//! Cluster discovery end to end: daemon A lists itself and daemon B in `cluster.members`;
//! a real Prometheus with `http_sd_configs` pointed at A's `/1.0/metrics/targets` finds
//! both and scrapes both over mTLS (`up == 1` for each member).

use std::time::Duration;

use lxmetrics_tests::prometheus::Prometheus;
use lxmetrics_tests::{free_port, state_with_config, ClientCert, Daemon};

#[tokio::test]
async fn prometheus_discovers_and_scrapes_every_member() {
    let b = Daemon::start(&[]);
    let b_address = b.address();
    let a_address = format!("127.0.0.1:{}", free_port());
    let state = state_with_config(format!(
        "[[cluster.members]]\nname = \"node-a\"\naddress = \"{a_address}\"\n\n\
         [[cluster.members]]\nname = \"node-b\"\naddress = \"{b_address}\"\n"
    ));
    let a = Daemon::start_raw(state, &["--https-address", &a_address]);

    // The endpoint: http_sd JSON for a trusted certificate, 403 without one.
    let (status, body) = a.get("/1.0/metrics/targets").await;
    assert_eq!(status, 200, "{body}");
    let groups: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        groups,
        serde_json::json!([
            {"targets": [a_address], "labels": {"__meta_lxmetrics_member": "node-a"}},
            {"targets": [b_address], "labels": {"__meta_lxmetrics_member": "node-b"}},
        ])
    );
    let untrusted = a
        .client_with(None)
        .get(format!("{}/1.0/metrics/targets", a.url))
        .send()
        .await
        .expect("request");
    assert_eq!(untrusted.status(), 403);

    // One metrics certificate, trusted by both; one CA bundle with both server certs.
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).expect("mkdir tls");
    let metrics = ClientCert::generate("prometheus.local");
    let cert = metrics.write(&tls, "metrics");
    a.trust_metrics(&cert);
    b.trust_metrics(&cert);
    let bundle = [a.server_cert_pem(), b.server_cert_pem()].concat();
    std::fs::write(tls.join("servers.crt"), bundle).expect("CA bundle");

    let config = format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: lxmetrics
    scheme: https
    metrics_path: /1.0/metrics
    tls_config: &tls
      ca_file: tls/servers.crt
      cert_file: tls/metrics.crt
      key_file: tls/metrics.key
    http_sd_configs:
      - url: https://{a_address}/1.0/metrics/targets
        refresh_interval: 1s
        tls_config: *tls
    relabel_configs:
      - source_labels: [__meta_lxmetrics_member]
        target_label: member
"#
    );
    let prometheus = Prometheus::start(dir.path(), &config, &[]);
    let up = prometheus
        .wait_for("up{job=\"lxmetrics\"} == 1", Duration::from_secs(60), |r| {
            r.len() == 2
        })
        .await;
    let mut members: Vec<&str> = up
        .iter()
        .map(|s| s["metric"]["member"].as_str().unwrap_or_default())
        .collect();
    members.sort_unstable();
    assert_eq!(members, ["node-a", "node-b"]);
    // Both daemons' own series arrived, labelled by member.
    prometheus
        .wait_for(
            "count by (member) (lxd_uptime_seconds)",
            Duration::from_secs(30),
            |r| r.len() == 2,
        )
        .await;
}

/// A node joins the cluster without a restart: the operator edits `cluster.members` and
/// sends SIGHUP; a broken edit is refused and the old list stays.
#[tokio::test]
async fn sighup_reloads_cluster_members() {
    let state = tempfile::tempdir().expect("tempdir");
    let config = state.path().join("config.toml");
    let member = |name: &str, address: &str| {
        format!("[[cluster.members]]\nname = \"{name}\"\naddress = \"{address}\"\n\n")
    };
    std::fs::write(&config, member("node-a", "127.0.0.1:8444")).expect("config.toml");
    let daemon = Daemon::start_raw(state, &[]);
    let targets = |body: &str| -> serde_json::Value { serde_json::from_str(body).expect("JSON") };
    let (status, body) = daemon.get("/1.0/metrics/targets").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(targets(&body).as_array().map(Vec::len), Some(1), "{body}");

    let two = format!(
        "{}{}",
        member("node-a", "127.0.0.1:8444"),
        member("node-b", "[::1]:8444")
    );
    std::fs::write(&config, &two).expect("config.toml");
    daemon.signal(rustix::process::Signal::HUP);
    let want = serde_json::json!([
        {"targets": ["127.0.0.1:8444"], "labels": {"__meta_lxmetrics_member": "node-a"}},
        {"targets": ["[::1]:8444"], "labels": {"__meta_lxmetrics_member": "node-b"}},
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = daemon.get("/1.0/metrics/targets").await;
        assert_eq!(status, 200, "{body}");
        if targets(&body) == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload the members: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Two members with one name: refused, logged, the two-member list stays.
    std::fs::write(
        &config,
        format!("{two}{}", member("node-b", "127.0.0.2:8444")),
    )
    .expect("config.toml");
    daemon.signal(rustix::process::Signal::HUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !daemon
        .stderr_lines()
        .iter()
        .any(|l| l.contains("not reloaded"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the refused reload is not logged: {:?}",
            daemon.stderr_lines()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, body) = daemon.get("/1.0/metrics/targets").await;
    assert_eq!(targets(&body), want);
}
