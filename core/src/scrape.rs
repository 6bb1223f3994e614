//! Serving one `/1.0/metrics` request: cached instance body + fresh daemon metrics.
//!
//! The instance part of a response depends only on the snapshot, the project filter, the
//! format and the compression, so it is encoded once per snapshot and key and then served
//! as shared bytes. The daemon part (a few dozen series) is encoded per request and
//! appended; with gzip the cached part is already-compressed deflate blocks and only the
//! tail is compressed per request (see [`GzipPrefix`]).

use std::sync::Arc;

use bytes::Bytes;

use crate::body_cache::BodyCache;
use crate::cache::{MetricsCache, RefreshFailed};
use crate::daemon_metrics::DaemonTelemetry;
use crate::exposition::compress::GzipPrefix;
use crate::exposition::text::{encode_families, finish, EncodeContext};
use crate::exposition::{ContentEncoding, EncodedBody, Format};
use crate::project_filter::ProjectFilter;
use crate::snapshot::Snapshot;
use lxmetrics_plugin::InstanceIndex;

/// What the caller asked for, already negotiated and authorized.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScrapeRequest {
    /// The projects the caller may and wants to see.
    pub filter: ProjectFilter,
    /// Response format.
    pub format: Format,
    /// Response compression.
    pub encoding: ContentEncoding,
}

/// A response body in parts sent back to back: the cached instance part is shared with
/// every other response of the cache window, not copied.
#[derive(Clone, Debug, Default)]
pub struct ScrapeBody {
    parts: Vec<Bytes>,
}

impl ScrapeBody {
    /// Hands over the parts.
    pub fn into_parts(self) -> Vec<Bytes> {
        self.parts
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole body in one buffer (copies; for callers that need contiguous bytes).
    #[cfg(test)]
    pub(crate) fn to_bytes(&self) -> Bytes {
        match self.parts.as_slice() {
            [one] => one.clone(),
            parts => Bytes::from(parts.concat()),
        }
    }
}

/// A finished metrics response body with its headers.
#[derive(Clone, Debug)]
pub struct ScrapeResponse {
    /// The body, compressed when `content_encoding` says so.
    pub body: ScrapeBody,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// `Content-Encoding`, if any.
    pub content_encoding: Option<&'static str>,
}

/// Everything a metrics request needs; cheap to clone.
#[derive(Clone)]
pub struct MetricsService {
    cache: Arc<MetricsCache>,
    telemetry: Arc<DaemonTelemetry>,
    prefix: Arc<str>,
    encoders: Arc<tokio::sync::Semaphore>,
    uncached: Arc<tokio::sync::Semaphore>,
    bodies: Arc<BodyCache>,
}

impl MetricsService {
    /// A service over the cache and the daemon counters, serving names under the
    /// engine's prefix (one setting, so validation and encoding agree).
    pub fn new(cache: Arc<MetricsCache>, telemetry: Arc<DaemonTelemetry>) -> Self {
        let prefix = cache.engine().metric_prefix().clone();
        MetricsService {
            cache,
            telemetry,
            prefix,
            encoders: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_ENCODINGS)),
            uncached: Arc::new(tokio::sync::Semaphore::new(MAX_UNCACHED_BODIES)),
            bodies: Arc::default(),
        }
    }

    /// The daemon counters, for the server to update.
    pub fn telemetry(&self) -> &Arc<DaemonTelemetry> {
        &self.telemetry
    }

    /// The configured metric prefix (`metrics.prefix`).
    pub fn prefix(&self) -> &Arc<str> {
        &self.prefix
    }

    /// The cache, for endpoints that list instances.
    pub fn cache(&self) -> &Arc<MetricsCache> {
        &self.cache
    }

    /// Builds the response for one request.
    pub async fn scrape(&self, request: &ScrapeRequest) -> Result<ScrapeResponse, RefreshFailed> {
        let snapshot = self.cache.snapshot().await?;
        let instance_part = self.instance_body(&snapshot, request).await;

        let daemon =
            self.telemetry
                .families(&snapshot, self.cache.engine().refreshes(), &request.filter);
        let mut tail = Vec::with_capacity(4096);
        let ctx = EncodeContext {
            format: request.format,
            prefix: &self.prefix,
            instance_labels: &[],
            visible: &|_| true,
            project_visible: &|_| true,
        };
        encode_families(&ctx, &daemon, &mut tail);
        finish(request.format, &mut tail);
        let parts = match &*instance_part {
            EncodedBody::Identity(instances) => vec![instances.clone(), Bytes::from(tail)],
            EncodedBody::Gzip(prefix) => prefix.finish_parts(&tail).to_vec(),
        };
        let body = ScrapeBody { parts };
        Ok(ScrapeResponse {
            body,
            content_type: request.format.content_type(),
            content_encoding: request.encoding.header_value(),
        })
    }

    /// The instance series for this filter, format and encoding: encoded once per
    /// snapshot and key (concurrent requests wait for that one encoding), on a blocking
    /// thread (a gzip body of 1,000 instances takes ~25 ms; async workers must stay free
    /// for handshakes and cache hits), at most [`MAX_CONCURRENT_ENCODINGS`] at a time.
    ///
    /// Keys come from clients (`?project=`), so only keys that select instances take a
    /// cache slot: the filter is first narrowed to the projects this snapshot has, and a
    /// filter that selects none gets an empty body without encoding or caching.
    async fn instance_body(
        &self,
        snapshot: &Arc<Snapshot>,
        request: &ScrapeRequest,
    ) -> Arc<EncodedBody> {
        let filter = match &request.filter {
            ProjectFilter::All => ProjectFilter::All,
            ProjectFilter::Only(projects) => {
                let present = ProjectFilter::only(
                    projects.iter().filter(|p| snapshot.has_project(p)).cloned(),
                );
                if present == ProjectFilter::only([]) {
                    return Arc::new(match request.encoding {
                        ContentEncoding::Identity => EncodedBody::Identity(Bytes::new()),
                        ContentEncoding::Gzip => EncodedBody::Gzip(GzipPrefix::new(&[])),
                    });
                }
                present
            }
        };
        let request = &ScrapeRequest {
            filter,
            ..request.clone()
        };
        match self.bodies.slot(snapshot, request) {
            Some(slot) => slot
                .get_or_init(|| self.encode_off_worker(snapshot, request))
                .await
                .clone(),
            None => {
                // An uncached body lives as long as its response is being sent, which a
                // slow reader can make forever: at most MAX_UNCACHED_BODIES exist at a
                // time, each holding its permit in its bytes; more requests wait.
                let permit = self.uncached.clone().acquire_owned().await.ok();
                let body = self.encode_off_worker(snapshot, request).await;
                match (Arc::try_unwrap(body), permit) {
                    (Ok(body), Some(permit)) => Arc::new(holding(body, permit)),
                    (Ok(body), None) => Arc::new(body),
                    (Err(shared), _) => shared,
                }
            }
        }
    }

    async fn encode_off_worker(
        &self,
        snapshot: &Arc<Snapshot>,
        request: &ScrapeRequest,
    ) -> Arc<EncodedBody> {
        // The semaphore is never closed, so acquiring fails only if it were; encode anyway.
        let _permit = self.encoders.acquire().await.ok();
        let (snapshot, prefix, request) = (snapshot.clone(), self.prefix.clone(), request.clone());
        let encode = move || encode_body(&snapshot, &prefix, &request);
        match tokio::task::spawn_blocking(encode.clone()).await {
            Ok(body) => body,
            // The runtime is shutting down (or the encoder panicked, a bug that would
            // panic here again and end only this request): encode in place.
            Err(_) => encode(),
        }
    }
}

/// At most this many bodies that no cache slot holds are in flight (being encoded or
/// sent) at once.
const MAX_UNCACHED_BODIES: usize = 8;

/// The body's bytes, holding `permit` until the last response sending them is done.
fn holding(body: EncodedBody, permit: tokio::sync::OwnedSemaphorePermit) -> EncodedBody {
    struct Held {
        bytes: Bytes,
        _permit: tokio::sync::OwnedSemaphorePermit,
    }
    impl AsRef<[u8]> for Held {
        fn as_ref(&self) -> &[u8] {
            &self.bytes
        }
    }
    let hold = |bytes: Bytes| {
        Bytes::from_owner(Held {
            bytes,
            _permit: permit,
        })
    };
    match body {
        EncodedBody::Identity(bytes) => EncodedBody::Identity(hold(bytes)),
        EncodedBody::Gzip(prefix) => EncodedBody::Gzip(prefix.map_head(hold)),
    }
}

/// At most this many bodies are encoded at once (distinct `?project=` filters beyond the
/// cache are encoded per request): more would only queue for the same cores.
const MAX_CONCURRENT_ENCODINGS: usize = 4;

/// Encodes and, if asked, compresses the instance part of a body.
fn encode_body(snapshot: &Snapshot, prefix: &str, request: &ScrapeRequest) -> Arc<EncodedBody> {
    let text = encode_instances(snapshot, prefix, request);
    Arc::new(match request.encoding {
        ContentEncoding::Identity => EncodedBody::Identity(Bytes::from(text)),
        ContentEncoding::Gzip => EncodedBody::Gzip(GzipPrefix::new(&text)),
    })
}

/// Encodes a snapshot's families for one filter and format (no daemon metrics, no end
/// marker).
pub fn encode_instances(snapshot: &Snapshot, prefix: &str, request: &ScrapeRequest) -> Vec<u8> {
    let visible_instances: Vec<bool> = snapshot
        .instances()
        .iter()
        .map(|i| request.filter.allows(Some(&i.project)))
        .collect();
    let no_instance_visible = request.filter == ProjectFilter::All;
    let visible = |i: Option<InstanceIndex>| match i {
        Some(i) => visible_instances.get(i as usize).copied().unwrap_or(false),
        None => no_instance_visible,
    };
    let ctx = EncodeContext {
        format: request.format,
        prefix,
        instance_labels: snapshot.instance_labels(),
        visible: &visible,
        project_visible: &|project| request.filter.allows(Some(project)),
    };
    let mut out = Vec::with_capacity(64 * 1024);
    encode_families(&ctx, snapshot.families(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::StaticDiscovery;
    use crate::engine::RefreshEngine;
    use lxmetrics_plugin::Instance;
    use lxmetrics_plugin::{CollectError, Collection, Collector, HostPaths, Scope};
    use lxmetrics_plugin::{Family, MetricDesc};
    use std::io::Read;
    use std::time::Duration;

    struct Procs;

    #[async_trait::async_trait]
    impl Collector for Procs {
        async fn collect(&self, scope: &Scope) -> Result<Collection, CollectError> {
            let mut f = Family::new(MetricDesc::gauge("procs_total", "Processes"), &[]);
            for (i, _) in scope.indexed_instances() {
                f.push(i, (), f64::from(i + 1));
            }
            Ok(Collection {
                families: vec![f],
                ..Default::default()
            })
        }
    }

    fn service() -> MetricsService {
        service_with_prefix(crate::config::DEFAULT_METRIC_PREFIX)
    }

    fn service_with_prefix(prefix: &str) -> MetricsService {
        let mut other = Instance::container("db", "lxc.payload.other_db");
        other.project = "other".into();
        let engine = RefreshEngine::new(
            Arc::new(StaticDiscovery(vec![
                Instance::container("web", "lxc.payload.web"),
                other,
            ])),
            vec![("processes", Arc::new(Procs))],
            Arc::new(HostPaths::default()),
            Duration::from_secs(5),
            prefix,
        );
        let cache = MetricsCache::new(Arc::new(engine), Duration::from_secs(8));
        MetricsService::new(cache, Arc::new(DaemonTelemetry::default()))
    }

    fn request(filter: ProjectFilter, format: Format, encoding: ContentEncoding) -> ScrapeRequest {
        ScrapeRequest {
            filter,
            format,
            encoding,
        }
    }

    fn text(resp: &ScrapeResponse) -> String {
        match resp.content_encoding {
            None => String::from_utf8(resp.body.to_bytes().to_vec()).unwrap(),
            Some(_) => {
                let mut out = String::new();
                flate2::read::GzDecoder::new(&resp.body.to_bytes()[..])
                    .read_to_string(&mut out)
                    .unwrap();
                out
            }
        }
    }

    #[tokio::test]
    async fn the_engine_prefix_names_collector_and_daemon_series() {
        let svc = service_with_prefix("incus");
        let req = request(
            ProjectFilter::All,
            Format::PrometheusText,
            ContentEncoding::Identity,
        );
        let body = text(&svc.scrape(&req).await.unwrap());
        assert!(body.contains("\nincus_procs_total{name=\"web\""), "{body}");
        assert!(body.contains("\nincus_uptime_seconds "), "{body}");
        assert!(!body.contains("lxd_"), "{body}");
    }

    #[tokio::test]
    async fn gzip_and_identity_carry_the_same_series() {
        let svc = service();
        let plain = svc
            .scrape(&request(
                ProjectFilter::All,
                Format::OpenMetrics,
                ContentEncoding::Identity,
            ))
            .await
            .unwrap();
        let gz = svc
            .scrape(&request(
                ProjectFilter::All,
                Format::OpenMetrics,
                ContentEncoding::Gzip,
            ))
            .await
            .unwrap();
        assert_eq!(gz.content_encoding, Some("gzip"));
        let (plain, gz) = (text(&plain), text(&gz));
        let instance_lines = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| l.starts_with("lxd_procs"))
                .map(String::from)
                .collect()
        };
        assert_eq!(instance_lines(&plain), instance_lines(&gz));
        assert_eq!(instance_lines(&plain).len(), 2);
        assert!(gz.ends_with("# EOF\n") && plain.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn project_filter_hides_other_projects() {
        let svc = service();
        let resp = svc
            .scrape(&request(
                ProjectFilter::only(["other".to_string()]),
                Format::PrometheusText,
                ContentEncoding::Identity,
            ))
            .await
            .unwrap();
        let body = text(&resp);
        assert!(
            body.contains("lxd_procs_total{name=\"db\",project=\"other\",type=\"container\"} 2")
        );
        assert!(!body.contains("name=\"web\""), "{body}");
        assert!(body.contains("lxd_instances{project=\"other\",type=\"container\"} 1"));
        assert!(!body.contains("project=\"default\""), "{body}");
    }

    #[tokio::test]
    async fn projects_without_instances_take_no_cache_slot() {
        let svc = service();
        let req = |filter| request(filter, Format::PrometheusText, ContentEncoding::Identity);
        // Clients flood ?project= with names that select nothing.
        for i in 0..100 {
            let resp = svc
                .scrape(&req(ProjectFilter::only([format!("nope{i}")])))
                .await
                .unwrap();
            assert!(!text(&resp).contains("lxd_procs_total{"));
        }
        let snapshot = svc.cache().snapshot().await.unwrap();
        assert_eq!(svc.bodies.len(&snapshot), 0);
        // The normal scrape still gets its slot; a filter naming a present project and an
        // absent one shares the slot of the present one alone.
        let _ = svc.scrape(&req(ProjectFilter::All)).await.unwrap();
        let _ = svc
            .scrape(&req(ProjectFilter::only(["other".into(), "nope".into()])))
            .await
            .unwrap();
        let _ = svc
            .scrape(&req(ProjectFilter::only(["other".into()])))
            .await
            .unwrap();
        assert_eq!(svc.bodies.len(&snapshot), 2);
    }

    #[tokio::test]
    async fn uncached_bodies_in_flight_are_bounded() {
        let svc = service();
        let snapshot = svc.cache().snapshot().await.unwrap();
        // Fill every cache slot with other keys so the next ones go uncached.
        for i in 0..64u32 {
            let key = request(
                ProjectFilter::only([format!("k{i}")]),
                Format::PrometheusText,
                ContentEncoding::Identity,
            );
            let _ = svc.bodies.slot(&snapshot, &key);
        }
        let req = request(
            ProjectFilter::only(["other".to_string()]),
            Format::PrometheusText,
            ContentEncoding::Gzip,
        );
        let mut held = Vec::new();
        for _ in 0..MAX_UNCACHED_BODIES {
            held.push(svc.scrape(&req).await.unwrap());
        }
        assert_eq!(svc.uncached.available_permits(), 0);
        // One more waits while the others' bodies are still being sent...
        let waiting = tokio::time::timeout(Duration::from_millis(200), svc.scrape(&req)).await;
        assert!(waiting.is_err(), "a ninth uncached body was made");
        // ...and is served once one of them is done.
        held.pop();
        let resp = tokio::time::timeout(Duration::from_secs(5), svc.scrape(&req))
            .await
            .expect("served after a body was released")
            .unwrap();
        assert!(text(&resp).contains("project=\"other\""));
    }

    #[tokio::test]
    async fn cache_hits_reuse_the_encoded_body_and_refresh_daemon_metrics() {
        let svc = service();
        let req = request(
            ProjectFilter::All,
            Format::PrometheusText,
            ContentEncoding::Identity,
        );
        let _ = svc.scrape(&req).await.unwrap();
        let snapshot = svc.cache().snapshot().await.unwrap();
        let cached_body = || {
            svc.bodies
                .slot(&snapshot, &req)
                .and_then(|slot| slot.get().cloned())
        };
        let cached = cached_body().expect("body cached after first scrape");
        let _ = svc.scrape(&req).await.unwrap();
        assert!(Arc::ptr_eq(&cached, &cached_body().unwrap()));
        assert_eq!(svc.cache().engine().refreshes(), 1);

        svc.telemetry().request_completed(
            crate::daemon_metrics::EntityType::of_path("/1.0/metrics"),
            crate::daemon_metrics::RequestResult::Succeeded,
        );
        let body = text(&svc.scrape(&req).await.unwrap());
        assert!(body.contains(
            "lxd_api_requests_completed_total{entity_type=\"server\",result=\"succeeded\"} 1"
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_one_encoding() {
        let svc = service();
        let _ = svc.cache().snapshot().await.unwrap();
        let req = request(
            ProjectFilter::All,
            Format::OpenMetrics,
            ContentEncoding::Identity,
        );
        let scrapes: Vec<_> = (0..32)
            .map(|_| {
                let (svc, req) = (svc.clone(), req.clone());
                tokio::spawn(async move { svc.scrape(&req).await.unwrap() })
            })
            .collect();
        let mut first_parts = Vec::new();
        for scrape in scrapes {
            let parts = scrape.await.unwrap().body.into_parts();
            first_parts.push(parts[0].clone());
        }
        // One encoding: every response's instance part is the same shared buffer.
        let cached = first_parts[0].as_ptr();
        assert!(!first_parts[0].is_empty());
        assert!(first_parts.iter().all(|p| p.as_ptr() == cached));
    }
}
