//! The pusher's counters, served with the daemon metrics so an operator can alert on a
//! host whose pushes fail (`lxd_metrics_remote_write_*`).

use std::sync::atomic::{AtomicU64, Ordering};

use lxmetrics_plugin::{Family, MetricDesc, SeriesOf};

const BATCHES: MetricDesc = MetricDesc::counter(
    "metrics_remote_write_batches_total",
    "Remote-write batches by outcome: sent, refused by the receiver, dropped from a full queue",
);
const RETRIES: MetricDesc = MetricDesc::counter(
    "metrics_remote_write_retries_total",
    "Remote-write sends that failed and will be retried",
);
const QUEUE: MetricDesc = MetricDesc::gauge(
    "metrics_remote_write_queue_bytes",
    "Compressed bytes waiting for the remote-write receiver",
);
const LAST_SUCCESS: MetricDesc = MetricDesc::gauge(
    "metrics_remote_write_last_success_timestamp_seconds",
    "When the receiver last accepted a batch",
);

/// Counters updated by the pusher, read per scrape.
#[derive(Debug, Default)]
pub struct PushStats {
    /// Batches the receiver accepted.
    pub sent: AtomicU64,
    /// Batches the receiver refused for good.
    pub refused: AtomicU64,
    /// Batches dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Failed sends that are retried.
    pub retries: AtomicU64,
    /// Bytes queued now.
    pub queue_bytes: AtomicU64,
    /// Milliseconds since the epoch of the last accepted batch; 0 before the first.
    pub last_success_ms: AtomicU64,
}

impl PushStats {
    /// The families for the daemon metrics.
    pub fn families(&self) -> Vec<Family> {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let mut batches = Family::new(BATCHES, &["result"]);
        batches.push(SeriesOf::HOST, ["sent"], load(&self.sent));
        batches.push(SeriesOf::HOST, ["refused"], load(&self.refused));
        batches.push(SeriesOf::HOST, ["dropped"], load(&self.dropped));
        let mut retries = Family::new(RETRIES, &[]);
        retries.push(SeriesOf::HOST, (), load(&self.retries));
        let mut queue = Family::new(QUEUE, &[]);
        queue.push(SeriesOf::HOST, (), load(&self.queue_bytes));
        let mut out = vec![batches, retries, queue];
        let last = self.last_success_ms.load(Ordering::Relaxed);
        if last > 0 {
            let mut f = Family::new(LAST_SUCCESS, &[]);
            f.push(SeriesOf::HOST, (), last as f64 / 1000.0);
            out.push(f);
        }
        out
    }
}
