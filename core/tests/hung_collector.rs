//! Fault injection: collectors that hang and ignore cancellation, on a real multi-thread
//! runtime with real time. Refreshes must keep ending at the deadline, the hung work must
//! not be started again on every refresh, and the thread count must stay bounded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lxmetrics_core::discovery::StaticDiscovery;
use lxmetrics_core::engine::RefreshEngine;
use lxmetrics_plugin::{
    run_blocking, CollectError, Collection, Collector, Family, HostPaths, Instance, MetricDesc,
    Scope,
};

/// Parks a blocking-pool thread forever: cancellation cannot reach it.
struct ParksABlockingThread(Arc<AtomicUsize>);

#[async_trait]
impl Collector for ParksABlockingThread {
    async fn collect(&self, _: &Scope) -> Result<Collection, CollectError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        run_blocking(|| loop {
            std::thread::park();
        })
        .await
    }
}

/// Blocks the async worker it runs on (a plugin bug the engine must survive).
struct BlocksItsWorker(Arc<AtomicUsize>);

#[async_trait]
impl Collector for BlocksItsWorker {
    async fn collect(&self, _: &Scope) -> Result<Collection, CollectError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(3600));
        Ok(Collection::new())
    }
}

struct Healthy;

#[async_trait]
impl Collector for Healthy {
    async fn collect(&self, scope: &Scope) -> Result<Collection, CollectError> {
        let mut f = Family::new(MetricDesc::gauge("healthy", "h"), &[]);
        for (i, _) in scope.indexed_instances() {
            f.push(i, (), 1.0);
        }
        let mut c = Collection::new();
        c.push(f);
        Ok(c)
    }
}

fn threads() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads: line")
}

#[test]
fn hung_collectors_cost_one_thread_each_and_never_stall_a_refresh() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(refresh_rounds());
    // The hung threads never end; do not wait for them (the daemon does the same).
    runtime.shutdown_background();
}

async fn refresh_rounds() {
    let parked = Arc::new(AtomicUsize::new(0));
    let blocking = Arc::new(AtomicUsize::new(0));
    let deadline = Duration::from_millis(300);
    let engine = RefreshEngine::new(
        Arc::new(StaticDiscovery(vec![Instance::container(
            "c1",
            "lxc.payload.c1",
        )])),
        vec![
            (
                "blocks-worker",
                Arc::new(BlocksItsWorker(blocking.clone())) as Arc<dyn Collector>,
            ),
            ("healthy", Arc::new(Healthy)),
            ("parks", Arc::new(ParksABlockingThread(parked.clone()))),
        ],
        Arc::new(HostPaths::default()),
        deadline,
        "lxd",
    );

    let mut thread_counts = Vec::new();
    for round in 0..20 {
        let started = Instant::now();
        let snapshot = engine.refresh().await;
        let took = started.elapsed();
        assert!(
            took < deadline + Duration::from_millis(500),
            "refresh {round} took {took:?}"
        );
        let status = |name: &str| {
            snapshot
                .statuses()
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("{name} has no status"))
                .clone()
        };
        assert!(status("healthy").success, "round {round}");
        assert!(!status("parks").success && !status("blocks-worker").success);
        let collected: Vec<&str> = snapshot
            .families()
            .iter()
            .map(|f| &*f.desc.name)
            .filter(|name| *name != "instance_info")
            .collect();
        assert_eq!(collected, ["healthy"], "only the healthy family is served");
        thread_counts.push(threads());
    }
    assert_eq!(
        parked.load(Ordering::SeqCst),
        1,
        "the parked run was restarted"
    );
    assert_eq!(
        blocking.load(Ordering::SeqCst),
        1,
        "the blocking run was restarted"
    );
    // After the first round the hung work holds its threads and no more are added.
    let (first, last) = (thread_counts[1], thread_counts[thread_counts.len() - 1]);
    assert!(
        last <= first,
        "threads grew from {first} to {last}: {thread_counts:?}"
    );
}
