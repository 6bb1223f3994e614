//! Remote-write push end to end, into a real Prometheus with its remote-write receiver
//! (`--web.enable-remote-write-receiver`): the pushed series are queryable with the
//! external labels; and when the receiver goes away the daemon keeps pushing into a
//! bounded queue, its memory stays bounded, and it resumes when the receiver is back.

use std::time::Duration;

use lxmetrics_tests::prometheus::Prometheus;
use lxmetrics_tests::{fixture_state_dir, sample_value, ClientCert, Daemon};

const RECEIVER: &[&str] = &["--web.enable-remote-write-receiver"];
const NO_SCRAPES: &str = "global:\n  scrape_interval: 1m\n";

fn value(result: &[serde_json::Value]) -> f64 {
    result
        .first()
        .and_then(|s| s["value"][1].as_str())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn push_config(port: u16, interval: &str) -> String {
    format!(
        "[remote_write]\nurl = \"http://127.0.0.1:{port}/api/v1/write\"\ninterval = \"{interval}\"\n\
         timeout = \"2s\"\nmax_queue_bytes = 1048576\n\
         [remote_write.external_labels]\nhost = \"e2e-host\"\n"
    )
}

#[tokio::test]
async fn pushed_series_are_queryable_in_prometheus() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prometheus = Prometheus::start(dir.path(), NO_SCRAPES, RECEIVER);
    let daemon = Daemon::start_in(
        fixture_state_dir("v2", &push_config(prometheus.port, "1s")),
        &[],
    );

    // An instance series of the fixture, with the external and default labels.
    let procs = prometheus
        .wait_for(
            "lxd_procs_total{name=\"web\",project=\"default\",type=\"container\",host=\"e2e-host\",job=\"lxmetrics\"}",
            Duration::from_secs(60),
            |r| !r.is_empty(),
        )
        .await;
    assert!(value(&procs) >= 1.0, "{procs:?}");
    // And the daemon's own metrics.
    prometheus
        .wait_for(
            "lxd_metrics_collector_success{collector=\"cpu\"}",
            Duration::from_secs(30),
            |r| value(r) == 1.0,
        )
        .await;
    drop(daemon);
}

#[tokio::test]
async fn a_receiver_outage_costs_bounded_memory_and_pushing_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prometheus = Prometheus::start(dir.path(), NO_SCRAPES, RECEIVER);
    let port = prometheus.port;
    let daemon = Daemon::start_in(fixture_state_dir("v2", &push_config(port, "200ms")), &[]);
    let before = prometheus
        .wait_for(
            "lxd_uptime_seconds{host=\"e2e-host\"}",
            Duration::from_secs(60),
            |r| !r.is_empty(),
        )
        .await;
    let uptime_before = value(&before);

    // The receiver goes away; the daemon keeps taking snapshots every 200 ms.
    prometheus.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_early = daemon.rss_kib();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let outage_middle = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_late = daemon.rss_kib();
    assert!(
        rss_late.saturating_sub(rss_early) < 8 * 1024,
        "RSS grew from {rss_early} KiB to {rss_late} KiB while the receiver was down"
    );
    let log = daemon.stderr_lines().join("\n");
    assert!(log.contains("remote write failed, retrying"), "{log}");
    // Logged when the problem started, not on every attempt.
    assert!(log.matches("remote write failed").count() <= 3, "{log}");

    // Back on the same port and data: new samples arrive again.
    let restarted = Prometheus::start_on(dir.path(), port, RECEIVER);
    let after = restarted
        .wait_for(
            "lxd_uptime_seconds{host=\"e2e-host\"}",
            Duration::from_secs(90),
            |r| value(r) > uptime_before + 8.0,
        )
        .await;
    assert!(value(&after) > uptime_before, "{after:?}");
    // What was queued during the outage was delivered too: samples taken (every 200 ms)
    // while no receiver was listening are in the database.
    let during = restarted
        .query_at(
            "count_over_time(lxd_uptime_seconds{host=\"e2e-host\"}[2s])",
            outage_middle,
        )
        .await;
    assert!(
        value(&during) >= 5.0,
        "queued samples from the outage are missing: {during:?}"
    );
    let log = daemon.stderr_lines().join("\n");
    assert!(log.contains("reachable again"), "{log}");

    // The daemon's own metrics tell the story.
    let (_, body) = daemon.get("/1.0/metrics").await;
    let metric = |series: &str| sample_value(&body, series).unwrap_or(f64::NAN);
    assert!(
        metric("lxd_metrics_remote_write_retries_total") >= 1.0,
        "{body}"
    );
    assert!(metric("lxd_metrics_remote_write_batches_total{result=\"sent\"}") >= 10.0);
    assert_eq!(
        metric("lxd_metrics_remote_write_batches_total{result=\"dropped\"}"),
        0.0
    );
    assert!(metric("lxd_metrics_remote_write_last_success_timestamp_seconds") > 1.7e9);
}

/// bcrypt of "push-secret" (made with Python's bcrypt.hashpw, cost 10), for Prometheus'
/// `basic_auth_users`.
const PASSWORD_HASH: &str = "$2b$10$PB2hcm1Qms/tItBTsiL1MucuxmhK8rl0w.0abdf9oWQvIzTAN35x.";
/// `Authorization` for tenant:push-secret.
const BASIC: &str = "Basic dGVuYW50OnB1c2gtc2VjcmV0";

#[tokio::test]
async fn pushes_over_mutual_tls_with_basic_auth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // The receiver's server certificate (IP SAN 127.0.0.1) and the daemon's push identity.
    let receiver = ClientCert::generate("127.0.0.1");
    receiver.write(d, "receiver");
    let push = ClientCert::generate("push.local");
    push.write(d, "push");
    std::fs::write(d.join("password"), "push-secret\n").expect("password file");
    std::fs::write(
        d.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: receiver.crt\n  key_file: receiver.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: push.crt\n\
             basic_auth_users:\n  tenant: '{PASSWORD_HASH}'\n"
        ),
    )
    .expect("web.yml");
    let prometheus = Prometheus::start(
        d,
        NO_SCRAPES,
        &[
            "--web.enable-remote-write-receiver",
            "--web.config.file=web.yml",
        ],
    );
    let port = prometheus.port;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_static(BASIC),
    );
    let api_client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(receiver.cert_pem.as_bytes()).expect("receiver cert"),
        )
        .identity(
            reqwest::Identity::from_pem(format!("{}{}", push.cert_pem, push.key_pem).as_bytes())
                .expect("identity"),
        )
        .default_headers(headers)
        .build()
        .expect("client");
    let prometheus = prometheus.with_api(format!("https://127.0.0.1:{port}"), api_client);

    let config = |password_file: &str| {
        format!(
            "[remote_write]\nurl = \"https://127.0.0.1:{port}/api/v1/write\"\ninterval = \"500ms\"\n\
             [remote_write.external_labels]\nhost = \"tls-host\"\n\
             [remote_write.tls]\nca_file = \"{d}/receiver.crt\"\ncert_file = \"{d}/push.crt\"\nkey_file = \"{d}/push.key\"\n\
             [remote_write.basic_auth]\nusername = \"tenant\"\npassword_file = \"{password_file}\"\n",
            d = d.display()
        )
    };
    let daemon = Daemon::start_in(
        fixture_state_dir("v2", &config(&format!("{}/password", d.display()))),
        &[],
    );
    prometheus
        .wait_for(
            "lxd_uptime_seconds{host=\"tls-host\"}",
            Duration::from_secs(60),
            |r| !r.is_empty(),
        )
        .await;

    // A wrong password is refused for good: counted, not retried forever.
    std::fs::write(d.join("wrong"), "not-the-password\n").expect("wrong password file");
    let wrong = Daemon::start_in(
        fixture_state_dir("v2", &config(&format!("{}/wrong", d.display()))),
        &[],
    );
    let mut refused = 0.0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (_, body) = wrong.get("/1.0/metrics").await;
        refused = sample_value(
            &body,
            "lxd_metrics_remote_write_batches_total{result=\"refused\"}",
        )
        .unwrap_or(0.0);
        if refused >= 1.0 {
            break;
        }
    }
    assert!(refused >= 1.0, "a 401 was not counted as refused");
    drop(daemon);
}
