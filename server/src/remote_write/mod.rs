//! Remote-write push, for hosts Prometheus cannot reach (`[remote_write]`).
//!
//! Every `remote_write.interval` the pusher takes the current snapshot (a fresh refresh
//! when the cache window has passed, shared with scrapers otherwise), encodes it with the
//! daemon's own metrics into remote-write 1.0 requests ([`proto`]) and queues them
//! ([`queue::BatchQueue`], bounded in bytes). It sends the queue oldest first; a receiver
//! that is down or answers 5xx/429 is retried with exponential backoff (0.5 s to 30 s)
//! while new snapshots keep queueing and the oldest are dropped at the bound; a batch
//! refused with another 4xx is dropped and logged. Problems are logged when they start and
//! when the receiver recovers, not on every attempt.

pub mod proto;
pub(crate) mod queue;
pub(crate) mod stats;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::RemoteWriteConfig;
use lxmetrics_core::project_filter::ProjectFilter;
use lxmetrics_core::scrape::MetricsService;
use tokio::sync::watch;

use self::proto::PushContext;
use self::queue::BatchQueue;
use self::stats::PushStats;

/// Why the pusher could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RemoteWriteError {
    /// A TLS or password file could not be read.
    #[error("remote_write: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key did not parse, or the HTTP client could not be built.
    #[error("remote_write: {0}")]
    Client(String),
}

const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(30);

/// The pusher: configuration, HTTP client and the metrics it pushes.
pub(crate) struct RemoteWriter {
    url: String,
    interval: Duration,
    client: reqwest::Client,
    basic_auth: Option<(String, String)>,
    external_labels: Arc<[(String, String)]>,
    metrics: MetricsService,
    max_queue_bytes: u64,
    stats: Arc<PushStats>,
}

/// How a send ended.
enum Sent {
    Accepted,
    /// Worth retrying (connection failed, timeout, 5xx, 429).
    Retry(String),
    /// Refused for good (other 4xx): drop the batch.
    Refused(String),
}

fn read(path: &Path) -> Result<Vec<u8>, RemoteWriteError> {
    std::fs::read(path).map_err(|source| RemoteWriteError::Read {
        path: path.to_owned(),
        source,
    })
}

impl RemoteWriter {
    /// The pusher for `config`, or `None` when `remote_write.url` is unset.
    pub fn from_config(
        config: &RemoteWriteConfig,
        metrics: MetricsService,
    ) -> Result<Option<Self>, RemoteWriteError> {
        let Some(url) = config.url.clone() else {
            return Ok(None);
        };
        let client_error = |e: reqwest::Error| RemoteWriteError::Client(e.to_string());
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(config.timeout)
            .user_agent(concat!("lxmetrics/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.tls.ca_file {
            builder = builder.tls_built_in_root_certs(false);
            for cert in reqwest::Certificate::from_pem_bundle(&read(ca)?).map_err(client_error)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
            let pem = [read(cert)?, read(key)?].concat();
            builder = builder.identity(reqwest::Identity::from_pem(&pem).map_err(client_error)?);
        }
        let basic_auth = match &config.basic_auth {
            None => None,
            Some(auth) => {
                let password = match (&auth.password_file, &auth.password) {
                    (Some(file), _) => String::from_utf8_lossy(&read(file)?)
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    (None, Some(password)) => password.clone(),
                    (None, None) => String::new(),
                };
                Some((auth.username.clone(), password))
            }
        };
        let mut external_labels: Vec<(String, String)> = config
            .external_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !config.external_labels.contains_key("job") {
            external_labels.push(("job".into(), "lxmetrics".into()));
        }
        if !config.external_labels.contains_key("instance") {
            let host = rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned();
            external_labels.push(("instance".into(), host));
        }
        let stats = Arc::new(PushStats::default());
        let source = stats.clone();
        metrics
            .telemetry()
            .add_source(Arc::new(move || source.families()));
        Ok(Some(RemoteWriter {
            stats,
            url,
            interval: config.interval,
            client: builder.build().map_err(client_error)?,
            basic_auth,
            external_labels: external_labels.into(),
            metrics,
            max_queue_bytes: config.max_queue_bytes,
        }))
    }

    /// Pushes until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        tracing::info!(url = %self.url, interval = ?self.interval, "remote write on");
        let mut queue = BatchQueue::new(self.max_queue_bytes);
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut retry_at: Option<Instant> = None;
        let mut delay = FIRST_RETRY;
        let mut failing_since: Option<(Instant, String)> = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            let dropped = self.take_snapshot(&mut queue).await;
            self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    queued_bytes = queue.bytes(),
                    "remote write queue full: oldest batches dropped"
                );
            }
            while let Some(batch) = queue.front() {
                if retry_at.is_some_and(|at| Instant::now() < at) {
                    break;
                }
                match self.send(batch.to_vec()).await {
                    Sent::Accepted => {
                        queue.pop();
                        self.stats.sent.fetch_add(1, Ordering::Relaxed);
                        let now_ms = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                        self.stats.last_success_ms.store(now_ms, Ordering::Relaxed);
                        retry_at = None;
                        delay = FIRST_RETRY;
                        if let Some((since, _)) = failing_since.take() {
                            tracing::info!(
                                after = ?since.elapsed(),
                                dropped_so_far = queue.dropped(),
                                "remote write receiver reachable again"
                            );
                        }
                    }
                    Sent::Retry(why) => {
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        if failing_since.as_ref().is_none_or(|(_, last)| *last != why) {
                            tracing::warn!(url = %self.url, "remote write failed, retrying: {why}");
                        }
                        failing_since
                            .get_or_insert((Instant::now(), String::new()))
                            .1 = why;
                        retry_at = Some(Instant::now() + delay);
                        delay = (delay * 2).min(LAST_RETRY);
                        break;
                    }
                    Sent::Refused(why) => {
                        queue.pop();
                        self.stats.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(url = %self.url, "remote write batch refused, dropped: {why}");
                    }
                }
            }
            self.stats
                .queue_bytes
                .store(queue.bytes(), Ordering::Relaxed);
        }
    }

    /// Encodes the current snapshot into the queue; returns how many batches the bound
    /// dropped.
    async fn take_snapshot(&self, queue: &mut BatchQueue) -> u64 {
        let snapshot = match self.metrics.cache().snapshot().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("remote write: no snapshot: {e}");
                return 0;
            }
        };
        let refreshes = self.metrics.cache().engine().refreshes();
        let daemon = self
            .metrics
            .telemetry()
            .families(&snapshot, refreshes, &ProjectFilter::All);
        let timestamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        // Encoding a large fleet takes tens of milliseconds (docs/performance.md): off the
        // async workers, so scrapes are not held up behind it.
        let prefix = self.metrics.prefix().clone();
        let external_labels = self.external_labels.clone();
        let encoded = tokio::task::spawn_blocking(move || {
            let context = PushContext {
                prefix: &prefix,
                instances: snapshot.instances(),
                external_labels: &external_labels,
                timestamp_ms,
            };
            let families: Vec<_> = snapshot.families().iter().chain(daemon.iter()).collect();
            proto::encode_batches(&context, &families)
        })
        .await;
        match encoded {
            Ok(batches) => batches.into_iter().map(|b| queue.push(b)).sum(),
            Err(e) => {
                tracing::error!("remote write: encoding failed: {e}");
                0
            }
        }
    }

    async fn send(&self, body: Vec<u8>) -> Sent {
        let mut request = self
            .client
            .post(&self.url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body);
        if let Some((user, password)) = &self.basic_auth {
            request = request.basic_auth(user, Some(password));
        }
        match request.send().await {
            Err(e) => Sent::Retry(e.to_string()),
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return Sent::Accepted;
                }
                let text = response.text().await.unwrap_or_default();
                let why = format!("{status}: {}", text.trim());
                if status.is_server_error() || status.as_u16() == 429 {
                    Sent::Retry(why)
                } else {
                    Sent::Refused(why)
                }
            }
        }
    }
}
