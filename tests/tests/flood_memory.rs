//! The review's memory attack: at 1,000 instances, 40 requests with random `?project=`
//! values (once enough to fill every body-cache slot), then 100 scrapes on connections
//! that never read their response. Memory must stay bounded by design: keys that select
//! no instance take no cache slot, the normal scrape always has its slot, and a slow
//! reader holds a shared body plus a bounded send buffer. The figure itself (peak RSS and
//! the latency of a concurrent scrape) is the bench's (docs/performance.md).

use std::time::Duration;

use lxmetrics_tests::synthetic_fleet::SyntheticFleet;
use lxmetrics_tests::{proc_status_value, raise_fd_limit, state_with_config, Daemon};

/// The review's target for this attack.
const PEAK_RSS_LIMIT_KIB: u64 = 128 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_project_keys_and_unread_scrapes_keep_memory_bounded() {
    raise_fd_limit();
    let fleet = SyntheticFleet::create(1_000, 10);
    let state = state_with_config(format!(
        "[metrics]\ncache_ttl = \"600s\"\ncollector_timeout = \"30s\"\n{}",
        fleet.config()
    ));
    let daemon = Daemon::start_in(state, &[]);
    let client = daemon.client_with(Some(&daemon.client_cert));
    let url = format!("{}/1.0/metrics", daemon.url);

    for key in daemon.random_project_urls(40) {
        let resp = client.get(key).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let _ = resp.bytes().await.unwrap();
    }
    let unread = daemon.unread_scrapes(100).await;
    // Let the daemon answer them all (into their full socket buffers).
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A normal scrape is still answered in full.
    let resp = tokio::time::timeout(Duration::from_secs(20), client.get(&url).send())
        .await
        .expect("a normal scrape during the attack")
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let series = body
        .lines()
        .filter(|l| l.starts_with("lxd_procs_total{"))
        .count();
    assert_eq!(series, 1_000, "every instance is served");

    let peak = proc_status_value(daemon.pid(), "VmHWM:");
    eprintln!("peak RSS under the flood: {peak} KiB");
    assert!(
        peak <= PEAK_RSS_LIMIT_KIB,
        "peak RSS {peak} KiB under the flood (limit {PEAK_RSS_LIMIT_KIB} KiB)"
    );
    drop(unread);
}
