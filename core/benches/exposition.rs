//! Encoding a snapshot of 1,000 instances x 60 series, and serving a cache hit.
//!
//! Run: `cargo bench -p lxmetrics-core --bench exposition`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lxmetrics_core::cache::MetricsCache;
use lxmetrics_core::daemon_metrics::DaemonTelemetry;
use lxmetrics_core::discovery::StaticDiscovery;
use lxmetrics_core::engine::RefreshEngine;
use lxmetrics_core::exposition::{ContentEncoding, Format};
use lxmetrics_core::project_filter::ProjectFilter;
use lxmetrics_core::scrape::{encode_instances, MetricsService, ScrapeRequest};
use lxmetrics_plugin::{CollectError, Collection, Collector, HostPaths, Instance, Scope};

#[path = "support/fleet_shape.rs"]
mod fleet_shape;

use fleet_shape::SERIES_PER_INSTANCE;

const INSTANCES: usize = 1_000;

/// Serves the shared benchmark shape for every instance.
struct Synthetic;

#[async_trait::async_trait]
impl Collector for Synthetic {
    async fn collect(&self, scope: &Scope) -> Result<Collection, CollectError> {
        let mut c = Collection::new();
        fleet_shape::families(scope.indexed_instances().map(|(i, _)| i))
            .into_iter()
            .for_each(|f| c.push(f));
        Ok(c)
    }
}

fn service(runtime: &tokio::runtime::Runtime) -> MetricsService {
    let instances = (0..INSTANCES)
        .map(|i| {
            Instance::container(
                format!("instance-{i:04}"),
                format!("lxc.payload.instance-{i:04}"),
            )
        })
        .collect();
    let engine = RefreshEngine::new(
        Arc::new(StaticDiscovery(instances)),
        vec![("synthetic", Arc::new(Synthetic))],
        Arc::new(HostPaths::default()),
        Duration::from_secs(30),
        "lxd",
    );
    let svc = MetricsService::new(
        MetricsCache::new(Arc::new(engine), Duration::from_secs(3600)),
        Arc::new(DaemonTelemetry::default()),
    );
    // Warm the cache so the benchmarks measure encoding and hits, not the refresh.
    runtime.block_on(svc.cache().snapshot()).unwrap();
    svc
}

fn request(format: Format, encoding: ContentEncoding) -> ScrapeRequest {
    ScrapeRequest {
        filter: ProjectFilter::All,
        format,
        encoding,
    }
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let svc = service(&runtime);
    let snapshot = runtime.block_on(svc.cache().snapshot()).unwrap();
    let series: usize = snapshot.families().iter().map(|f| f.samples.len()).sum();
    // The shape's series, and discovery's `instance_info` for each instance.
    assert_eq!(series, INSTANCES * (SERIES_PER_INSTANCE + 1));

    let mut group = c.benchmark_group("encode_1000x60");
    group.throughput(Throughput::Elements(series as u64));
    group.bench_function("prometheus_text", |b| {
        let req = request(Format::PrometheusText, ContentEncoding::Identity);
        b.iter(|| black_box(encode_instances(&snapshot, "lxd", &req)))
    });
    group.bench_function("openmetrics", |b| {
        let req = request(Format::OpenMetrics, ContentEncoding::Identity);
        b.iter(|| black_box(encode_instances(&snapshot, "lxd", &req)))
    });
    group.bench_function("prometheus_text_gzip", |b| {
        let req = request(Format::PrometheusText, ContentEncoding::Identity);
        b.iter(|| {
            let text = encode_instances(&snapshot, "lxd", &req);
            black_box(lxmetrics_core::exposition::compress::GzipPrefix::new(&text))
        })
    });
    group.finish();

    let mut group = c.benchmark_group("cache_hit_1000x60");
    group.throughput(Throughput::Elements(series as u64));
    for (name, encoding) in [
        ("identity", ContentEncoding::Identity),
        ("gzip", ContentEncoding::Gzip),
    ] {
        let req = request(Format::PrometheusText, encoding);
        runtime.block_on(svc.scrape(&req)).unwrap(); // fills the body cache
        group.bench_function(name, |b| {
            b.to_async(&runtime)
                .iter(|| async { black_box(svc.scrape(&req).await.unwrap()) })
        });
    }
    group.finish();

    let text = encode_instances(
        &snapshot,
        "lxd",
        &request(Format::PrometheusText, ContentEncoding::Identity),
    );
    let gz = lxmetrics_core::exposition::compress::GzipPrefix::new(&text);
    eprintln!(
        "body size for {series} series: {} bytes text ({:.1} B/series), {} bytes gzip ({:.1} B/series)",
        text.len(),
        text.len() as f64 / series as f64,
        gz.compressed_len(),
        gz.compressed_len() as f64 / series as f64
    );
}

criterion_group! {
    name = exposition;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(4));
    targets = benches
}
criterion_main!(exposition);
