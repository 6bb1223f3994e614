//! Encoding one remote-write push of 1,000 instances x 60 series (the shape
//! `core/benches/exposition.rs` encodes as text): protobuf per series,
//! snappy per request of 2,000 series. It runs once per `remote_write.interval`, off the
//! scrape path; this says what that costs.
//!
//! Run: `cargo bench -p lxmetrics-server --bench remote_write`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lxmetrics_plugin::{Family, Instance};
use lxmetrics_server::remote_write::proto::{encode_batches, PushContext};

#[path = "../../core/benches/support/fleet_shape.rs"]
mod fleet_shape;

const INSTANCES: u32 = 1_000;

fn remote_write_push(c: &mut Criterion) {
    let instances: Vec<Instance> = (0..INSTANCES)
        .map(|i| {
            Instance::container(
                format!("instance-{i:04}"),
                format!("lxc.payload.instance-{i:04}"),
            )
        })
        .collect();
    let families = fleet_shape::families(0..INSTANCES);
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
