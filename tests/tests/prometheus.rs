//! A real Prometheus (Debian package `prometheus`) scrapes the daemon with the product
//! note's configuration: `scheme: https`, `metrics_path: /1.0/metrics`, `tls_config` with
//! `ca_file`, `cert_file`, `key_file`, and a `server_name` that differs from the target
//! host (the target is 127.0.0.1, the name is the host name in the certificate's SANs).
//! Asserted through Prometheus' HTTP API: `up == 1` and an `lxd_` series arrived.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lxmetrics_tests::{require_program, ClientCert, Daemon};

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn query(client: &reqwest::Client, prometheus: &str, expr: &str) -> serde_json::Value {
    client
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map(|r| r.json::<serde_json::Value>())
        .expect("Prometheus query")
        .await
        .unwrap_or_default()
}

#[tokio::test]
async fn prometheus_scrapes_over_mtls_with_server_name() {
    let prometheus = require_program("prometheus", "prometheus");
    let daemon = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    std::fs::write(tls.join("server.crt"), daemon.server_cert_pem()).unwrap();
    let metrics = ClientCert::generate("metrics.local");
    let cert = metrics.write(&tls, "metrics");
    let added = daemon.cli(&["trust", "add", cert.to_str().unwrap(), "--type=metrics"]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );

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
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let _server = KillOnDrop(
        Command::new(prometheus)
            .current_dir(dir.path())
            .arg("--config.file=prometheus.yml")
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let api = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if Instant::now() > deadline {
            let targets = client.get(format!("{api}/api/v1/targets")).send().await;
            let detail = match targets {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            panic!("Prometheus never scraped the daemon successfully: {detail}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        if client.get(format!("{api}/-/ready")).send().await.is_err() {
            continue;
        }
        let up = query(&client, &api, "up{job=\"lxd\"}").await;
        let uptime = query(&client, &api, "lxd_uptime_seconds").await;
        let up_value = up["data"]["result"][0]["value"][1]
            .as_str()
            .map(str::to_owned);
        let has_uptime = uptime["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty());
        if up_value.as_deref() == Some("1") && has_uptime {
            break;
        }
    }
}

/// The host name the daemon put in its certificate's DNS SAN.
fn lxmetrics_server_host_name() -> String {
    let out = Command::new("uname").arg("-n").output().expect("uname");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
