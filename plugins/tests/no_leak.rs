//! A leak check: the full refresh path (discovery and every built-in collector over the
//! hybrid fixture, then scrapes in text and gzip through the metrics service) must not
//! hold on to memory from one refresh to the next. Live heap bytes are counted by a
//! counting allocator, so the check is exact, unlike resident memory (see the bench for
//! that).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lxmetrics_core::cache::MetricsCache;
use lxmetrics_core::config::{CollectorsConfig, InstancesConfig, MetricsConfig};
use lxmetrics_core::daemon_metrics::DaemonTelemetry;
use lxmetrics_core::engine::RefreshEngine;
use lxmetrics_core::exposition::{ContentEncoding, Format};
use lxmetrics_core::project_filter::ProjectFilter;
use lxmetrics_core::registry;
use lxmetrics_core::scrape::{MetricsService, ScrapeRequest};
use lxmetrics_plugin::HostPaths;
use lxmetrics_plugins::CgroupDiscovery;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_thousand_refreshes_hold_no_more_memory_than_ten() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hybrid");
    let host = Arc::new(HostPaths::under(root));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let live = runtime.block_on(async {
        let collectors = registry::build_enabled(
            &CollectorsConfig::default(),
            &MetricsConfig::default(),
            &host,
        )
        .expect("collectors");
        // The fixture's instances only, whatever runtimes this machine has.
        let mut instances = InstancesConfig::default();
        for socket in [
            &mut instances.lxd.socket,
            &mut instances.incus.socket,
            &mut instances.docker.socket,
            &mut instances.podman.socket,
        ] {
            *socket = Some(std::path::PathBuf::new());
        }
        let discovery = Arc::new(CgroupDiscovery::new(&instances));
        let engine = RefreshEngine::new(
            discovery,
            collectors,
            host.clone(),
            Duration::from_secs(10),
            "lxd",
        );
        // A zero window: every scrape is a refresh.
        let cache = MetricsCache::new(Arc::new(engine), Duration::ZERO);
        let service = MetricsService::new(cache, Arc::new(DaemonTelemetry::default()));
        let mut live = Vec::new();
        for round in 0..1010 {
            for encoding in [ContentEncoding::Identity, ContentEncoding::Gzip] {
                let request = ScrapeRequest {
                    filter: ProjectFilter::All,
                    format: Format::PrometheusText,
                    encoding,
                };
                let response = service.scrape(&request).await.expect("scrape");
                assert!(!response.body.is_empty());
            }
            if round == 10 || round == 1009 {
                // Let blocking-pool work from this refresh finish before counting.
                tokio::time::sleep(Duration::from_millis(50)).await;
                live.push(LIVE.load(Ordering::Relaxed));
            }
        }
        live
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    let grew = live[1] - live[0];
    assert!(
        grew < 64 * 1024,
        "live heap grew by {grew} bytes from refresh 10 to refresh 1009 ({} -> {})",
        live[0],
        live[1]
    );
}
