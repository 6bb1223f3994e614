//! Serving one `/1.0/metrics` request: cached instance body + fresh daemon metrics.
//!
//! The instance part of a response depends only on the snapshot, the project filter, the
//! format and the compression, so it is encoded once per snapshot and key and then served
//! as shared bytes. The daemon part (a few dozen series) is encoded per request and
//! appended; with gzip the cached part is already-compressed deflate blocks and only the
//! tail is compressed per request (see [`GzipPrefix`]).

use std::sync::Arc;

use bytes::Bytes;

use crate::cache::{MetricsCache, RefreshFailed};
use crate::daemon_metrics::DaemonTelemetry;
use crate::exposition::compress::GzipPrefix;
use crate::exposition::text::{encode_families, finish, EncodeContext};
use crate::exposition::{ContentEncoding, EncodedBody, Format};
use crate::instance::InstanceIndex;
use crate::snapshot::{BodyKey, ProjectFilter, Snapshot};

/// What the caller asked for, already negotiated and authorized.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    pub fn to_bytes(&self) -> Bytes {
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
}

impl MetricsService {
    /// A service over the cache, the daemon counters and the configured prefix.
    pub fn new(cache: Arc<MetricsCache>, telemetry: Arc<DaemonTelemetry>, prefix: &str) -> Self {
        MetricsService {
            cache,
            telemetry,
            prefix: prefix.into(),
        }
    }

    /// The daemon counters, for the server to update.
    pub fn telemetry(&self) -> &Arc<DaemonTelemetry> {
        &self.telemetry
    }

    /// The configured metric prefix (`metrics.prefix`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The cache, for endpoints that list instances.
    pub fn cache(&self) -> &Arc<MetricsCache> {
        &self.cache
    }

    /// Builds the response for one request.
    pub async fn scrape(&self, request: &ScrapeRequest) -> Result<ScrapeResponse, RefreshFailed> {
        let snapshot = self.cache.snapshot().await?;
        let instance_part = self.instance_body(&snapshot, request);

        let daemon =
            self.telemetry
                .families(&snapshot, self.cache.engine().refreshes(), &request.filter);
        let mut tail = Vec::with_capacity(4096);
        let ctx = EncodeContext {
            format: request.format,
            prefix: &self.prefix,
            instance_labels: &[],
            visible: &|_| true,
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

    /// The instance series for this filter, format and encoding: cached per snapshot.
    fn instance_body(&self, snapshot: &Snapshot, request: &ScrapeRequest) -> Arc<EncodedBody> {
        let key = BodyKey {
            filter: request.filter.clone(),
            format: request.format,
            encoding: request.encoding,
        };
        if let Some(body) = snapshot.cached_body(&key) {
            return body;
        }
        let text = encode_instances(snapshot, &self.prefix, request);
        let body = Arc::new(match request.encoding {
            ContentEncoding::Identity => EncodedBody::Identity(Bytes::from(text)),
            ContentEncoding::Gzip => EncodedBody::Gzip(GzipPrefix::new(&text)),
        });
        snapshot.store_body(key, body.clone());
        body
    }
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
    };
    let mut out = Vec::with_capacity(64 * 1024);
    encode_families(&ctx, snapshot.families(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::{CollectError, Collection, Collector, HostPaths, Scope};
    use crate::discovery::StaticDiscovery;
    use crate::engine::RefreshEngine;
    use crate::instance::Instance;
    use crate::metric::{Family, MetricDesc};
    use std::io::Read;
    use std::time::Duration;

    struct Procs;

    #[async_trait::async_trait]
    impl Collector for Procs {
        async fn collect(&self, scope: &Scope) -> Result<Collection, CollectError> {
            let mut f = Family::new(MetricDesc::gauge("procs_total", "Processes"), &[]);
            for (i, _) in scope.indexed_instances() {
                f.push(i, [""; 0], f64::from(i + 1));
            }
            Ok(Collection {
                families: vec![f],
                ..Default::default()
            })
        }
    }

    fn service() -> MetricsService {
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
        );
        let cache = MetricsCache::new(Arc::new(engine), Duration::from_secs(8));
        MetricsService::new(cache, Arc::new(DaemonTelemetry::default()), "lxd")
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
    async fn cache_hits_reuse_the_encoded_body_and_refresh_daemon_metrics() {
        let svc = service();
        let req = request(
            ProjectFilter::All,
            Format::PrometheusText,
            ContentEncoding::Identity,
        );
        let _ = svc.scrape(&req).await.unwrap();
        let snapshot = svc.cache().snapshot().await.unwrap();
        let key = BodyKey {
            filter: req.filter.clone(),
            format: req.format,
            encoding: req.encoding,
        };
        let cached = snapshot
            .cached_body(&key)
            .expect("body cached after first scrape");
        let _ = svc.scrape(&req).await.unwrap();
        assert!(Arc::ptr_eq(&cached, &snapshot.cached_body(&key).unwrap()));
        assert_eq!(svc.cache().engine().refreshes(), 1);

        svc.telemetry()
            .request_completed("metrics", crate::daemon_metrics::RequestResult::Succeeded);
        let body = text(&svc.scrape(&req).await.unwrap());
        assert!(body.contains(
            "lxd_api_requests_completed_total{entity_type=\"metrics\",result=\"succeeded\"} 1"
        ));
    }
}
