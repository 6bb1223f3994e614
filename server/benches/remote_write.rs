//! Encoding one remote-write push of 1,000 instances x 60 series: protobuf per series,
//! snappy per request of 2,000 series. It runs once per `remote_write.interval`, off the
//! scrape path; this says what that costs.
//!
//! Run: `cargo bench -p lxmetrics-server --bench remote_write`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lxmetrics_core::instance::Instance;
use lxmetrics_core::metric::{Family, MetricDesc, MetricKind, Namespace};
use lxmetrics_server::remote_write::proto::{encode_batches, PushContext};

const INSTANCES: u32 = 1_000;

/// 60 series per instance shaped like the built-in collectors: 4 cpu series with two
/// labels, 16 network series with a device label, 40 unlabelled gauges.
fn families() -> Vec<Family> {
    let desc = |name: String, kind| MetricDesc {
        name: name.into(),
        help: "h".into(),
        kind,
        namespace: Namespace::Prefixed,
    };
    let mut cpu = Family::new(
        MetricDesc::counter("cpu_seconds_total", "CPU"),
        &["cpu", "mode"],
    );
    let mut net: Vec<Family> = (0..8)
        .map(|i| {
            Family::new(
                desc(format!("network_counter_{i}_total"), MetricKind::Counter),
                &["device"],
            )
        })
        .collect();
    let mut plain: Vec<Family> = (0..40)
        .map(|i| {
            Family::new(
                desc(format!("memory_key_{i}_bytes"), MetricKind::Gauge),
                &[],
            )
        })
        .collect();
    for i in 0..INSTANCES {
        for cpu_n in ["0", "1"] {
            for mode in ["user", "system"] {
                cpu.push(i, [cpu_n, mode], 123_456.789);
            }
        }
        for f in &mut net {
            f.push(i, ["eth0"], 98_765_432.0);
            f.push(i, ["lo"], 1_234.0);
        }
        for f in &mut plain {
            f.push(i, [""; 0], 4_294_967_296.0);
        }
    }
    std::iter::once(cpu).chain(net).chain(plain).collect()
}

fn remote_write_push(c: &mut Criterion) {
    let instances: Vec<Instance> = (0..INSTANCES)
        .map(|i| {
            Instance::container(
                format!("instance-{i:04}"),
                format!("lxc.payload.instance-{i:04}"),
            )
        })
        .collect();
    let families = families();
    let refs: Vec<&Family> = families.iter().collect();
    let series: usize = families.iter().map(|f| f.samples.len()).sum();
    let external = vec![("host".to_owned(), "node-1".to_owned())];
    let context = PushContext {
        prefix: "lxd",
        instances: &instances,
        external_labels: &external,
        timestamp_ms: 1_790_000_000_000,
    };
    let bytes: usize = encode_batches(&context, &refs).iter().map(Vec::len).sum();
    println!("remote_write_1000x60: {series} series, {bytes} bytes compressed in all");

    let mut group = c.benchmark_group("remote_write_1000x60");
    group.throughput(Throughput::Elements(series as u64));
    group.bench_function("encode_batches", |b| {
        b.iter(|| black_box(encode_batches(&context, &refs)))
    });
    group.finish();
}

criterion_group!(benches, remote_write_push);
criterion_main!(benches);
