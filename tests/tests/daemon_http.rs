//! The real daemon over HTTP: the metrics endpoint, negotiation, coalescing across
//! concurrent scrapers, LXD error bodies, and shutdown.

use std::io::Read;
use std::time::Duration;

use lxmetrics_tests::{sample_value, state_with_config, Daemon};

#[tokio::test]
async fn metrics_endpoint_serves_daemon_metrics_as_prometheus_text() {
    let daemon = Daemon::start(&[]);
    let resp = daemon
        .client()
        .get(format!("{}/1.0/metrics", daemon.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let body = resp.text().await.unwrap();
    for family in [
        "lxd_uptime_seconds",
        "lxd_api_requests_ongoing",
        "lxd_metrics_refreshes_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{body}"
        );
    }
    assert!(!body.contains("# EOF"));
    assert!(body.contains("lxd_metrics_collector_success{collector=\"discovery\"} 1"));
}

#[tokio::test]
async fn openmetrics_and_gzip_are_negotiated() {
    let daemon = Daemon::start(&[]);
    let resp = daemon
        .client()
        .get(format!("{}/1.0/metrics", daemon.url))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3",
        )
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    // The body goes out in parts (the cached part is not copied) with an exact length.
    let length: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let compressed = resp.bytes().await.unwrap();
    assert_eq!(compressed.len(), length);
    // One gzip member: a decoder that stops after the first member (as curl's does)
    // must still see the whole body.
    let mut body = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut body)
        .unwrap();
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(body.contains("# TYPE lxd_metrics_refreshes counter\nlxd_metrics_refreshes_total "));

    let refused = daemon
        .client()
        .get(format!("{}/1.0/metrics", daemon.url))
        .header("accept-encoding", "gzip;q=0, identity")
        .send()
        .await
        .unwrap();
    assert!(refused.headers().get("content-encoding").is_none());
}

#[tokio::test]
async fn concurrent_scrapers_share_one_refresh() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    let scrapes: Vec<_> = (0..64)
        .map(|_| {
            let client = client.clone();
            let url = format!("{}/1.0/metrics", daemon.url);
            tokio::spawn(async move {
                client
                    .get(url)
                    .send()
                    .await?
                    .error_for_status()?
                    .text()
                    .await
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for s in scrapes {
        bodies.push(s.await.unwrap().expect("every scrape succeeds"));
    }
    // Every response, and a later one inside the 8 s window, reports a single refresh.
    for body in &bodies {
        assert_eq!(
            sample_value(body, "lxd_metrics_refreshes_total"),
            Some(1.0),
            "{body}"
        );
    }
    let later = client
        .get(format!("{}/1.0/metrics", daemon.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        sample_value(&later, "lxd_metrics_refreshes_total"),
        Some(1.0)
    );
    // Daemon metrics are per request, not cached: the request counter moved.
    assert!(
        later.contains(
            "lxd_api_requests_completed_total{entity_type=\"server\",result=\"succeeded\"} 64"
        ),
        "{later}"
    );
}

#[tokio::test]
async fn cache_ttl_from_config_expires_the_snapshot() {
    let state = state_with_config("[metrics]\ncache_ttl = \"300ms\"\n");
    let daemon = Daemon::start_in(state, &[]);
    let first = daemon.get("/1.0/metrics").await.1;
    assert_eq!(
        sample_value(&first, "lxd_metrics_refreshes_total"),
        Some(1.0)
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let second = daemon.get("/1.0/metrics").await.1;
    assert_eq!(
        sample_value(&second, "lxd_metrics_refreshes_total"),
        Some(2.0)
    );
}

#[tokio::test]
async fn unknown_paths_and_methods_get_lxd_errors() {
    let daemon = Daemon::start(&[]);
    let resp = daemon
        .client()
        .get(format!("{}/1.0/nothing", daemon.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"type":"error","status":"","status_code":0,"operation":"",
            "error_code":404,"error":"not found","metadata":null})
    );
    let resp = daemon
        .client()
        .delete(format!("{}/1.0/metrics", daemon.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error_code"], 405);

    let info: serde_json::Value = daemon
        .client()
        .get(format!("{}/1.0", daemon.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["type"], "sync");
    assert_eq!(info["metadata"]["api_version"], "1.0");
}

#[tokio::test]
async fn sigterm_exits_cleanly() {
    let mut daemon = Daemon::start(&[]);
    let _ = daemon
        .client()
        .get(format!("{}/1.0/metrics", daemon.url))
        .send()
        .await
        .unwrap();
    let status = daemon
        .terminate(Duration::from_secs(5))
        .expect("daemon exits within 5 s of SIGTERM");
    assert!(
        status.success(),
        "exit status {status:?}: {:?}",
        daemon.stderr_lines()
    );
}

#[tokio::test]
async fn landing_page_names_the_product_and_links_metrics() {
    let daemon = Daemon::start(&[]);
    // Public: no client certificate needed.
    let resp = daemon
        .client_with(None)
        .get(format!("{}/", daemon.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = resp.text().await.unwrap();
    assert!(page.contains("<h1>lxmetrics "), "{page}");
    assert!(page.contains("href=\"/1.0/metrics\""), "{page}");
    assert!(!page.contains("lxd_"), "no metric data on the public page");
}
