//! The HTTP API as warp filters. Routes only translate HTTP to calls on core, the trust
//! store and authorization, and back; they never parse host files.
//!
//! | endpoint | client | restricted client | metrics (restricted or not) | untrusted |
//! |---|---|---|---|---|
//! | `GET /1.0` | trusted info | trusted info | trusted info, type metrics | public info |
//! | `GET /1.0/metrics[?project=P]` | all | its projects | all, or its projects | 403, or all when `core.metrics_authentication=false` |
//! | `GET /1.0/metrics/targets` | yes | yes | yes | as `/1.0/metrics` |
//! | `GET /1.0/instances` | list | its projects' | 403 | 403 |
//! | `GET/POST /1.0/certificates`, `GET/DELETE /1.0/certificates/{fp}` | yes | 403 | 403 | 403 |
//!
//! `?project=P` for a project the caller does not hold is 403, as in LXD. Which caller
//! gets which access is decided in [`crate::auth`] only. The metrics-only listener serves
//! `/1.0` and `/1.0/metrics`; everything else is 404.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use crate::config::ClusterMember;
use arc_swap::ArcSwap;
use base64::Engine;
use lxmetrics_core::exposition::negotiate::{encoding_from_accept_encoding, format_from_accept};
use lxmetrics_core::scrape::{MetricsService, ScrapeRequest};
use serde::Deserialize;
use warp::filters::BoxedFilter;
use warp::http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, VARY,
};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::api;
use crate::auth::{access, Access};
use crate::caller::Caller;
use crate::trust::certificate;
use crate::trust::store::{CertificateType, NewCertificate, TrustStore, TrustStoreError};

/// What every route needs.
#[derive(Clone)]
pub struct AppState {
    /// The metrics pipeline.
    pub metrics: MetricsService,
    /// Trusted certificates.
    pub trust: Arc<TrustStore>,
    /// `core.metrics_authentication`.
    pub metrics_authentication: bool,
    /// The server certificate's fingerprint, shown on `GET /1.0`.
    pub server_fingerprint: Arc<str>,
    /// PKI mode's CA and revocation list, when enabled (reloaded on change).
    pub pki: Option<Arc<crate::pki::PkiFiles>>,
    /// `cluster.members`, listed on `GET /1.0/metrics/targets`; replaced on SIGHUP.
    pub cluster: Arc<ArcSwap<Vec<ClusterMember>>>,
}

/// Which endpoints a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerScope {
    /// The full API (`core.https_address`, the unix socket).
    Full,
    /// Only `/1.0/metrics` and `/1.0` (`core.metrics_address`).
    MetricsOnly,
}

/// The caller's access for this request, from the current trust snapshot.
fn access_filter(state: AppState) -> impl Filter<Extract = (Access,), Error = Infallible> + Clone {
    warp::ext::optional::<Caller>().map(move |caller: Option<Caller>| {
        let caller = caller.unwrap_or(Caller::Tls(None));
        let pki = state.pki.as_ref().map(|files| files.current());
        access(
            &caller,
            &state.trust.snapshot(),
            pki.as_ref().map(|p| &***p),
        )
    })
}

fn with_state(state: AppState) -> impl Filter<Extract = (AppState,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// All routes of a listener.
pub fn routes(state: AppState, scope: ListenerScope) -> BoxedFilter<(Response,)> {
    let access = access_filter(state.clone());
    let server_info = warp::path!("1.0")
        .and(warp::get())
        .and(access.clone())
        .and(with_state(state.clone()))
        .map(|access: Access, state: AppState| server_info(&access, &state));

    let metrics = warp::path!("1.0" / "metrics")
        .and(warp::get())
        .and(access.clone())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("accept"))
        .and(warp::header::optional::<String>("accept-encoding"))
        .and(with_state(state.clone()))
        .then(metrics_handler);

    let targets = warp::path!("1.0" / "metrics" / "targets")
        .and(warp::get())
        .and(access.clone())
        .and(with_state(state.clone()))
        .map(|access: Access, state: AppState| cluster_targets(&access, &state));

    let common = server_info.or(metrics).unify().or(targets).unify();
    let all = match scope {
        ListenerScope::MetricsOnly => common.boxed(),
        ListenerScope::Full => common.or(full_api(state, access)).unify().boxed(),
    };
    all.recover(rejection_to_error).unify().boxed()
}

/// The endpoints only the full listeners serve: the public landing page, and the API
/// parts that need a client certificate.
fn full_api(
    state: AppState,
    access: impl Filter<Extract = (Access,), Error = Infallible> + Clone + Send + Sync + 'static,
) -> BoxedFilter<(Response,)> {
    let instances = warp::path!("1.0" / "instances")
        .and(warp::get())
        .and(access.clone())
        .and(with_state(state.clone()))
        .then(|access: Access, state: AppState| async move {
            if access.client_only().is_err() {
                return forbidden();
            }
            let Ok(visible) = access.visible(state.metrics_authentication) else {
                return forbidden();
            };
            match state.metrics.cache().snapshot().await {
                Ok(snapshot) => {
                    let listed: Vec<_> = snapshot
                        .instances()
                        .iter()
                        .filter(|i| visible.allows(Some(&i.project)))
                        .collect();
                    api::sync(serde_json::to_value(listed).unwrap_or_default())
                }
                Err(e) => api::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        });

    let list = warp::path!("1.0" / "certificates")
        .and(warp::get())
        .and(access.clone())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state(state.clone()))
        .then(
            |access: Access, query: HashMap<String, String>, state: AppState| async move {
                if access.may_administer().is_err() {
                    return forbidden();
                }
                let recursion = query.get("recursion").is_some_and(|r| r != "0");
                trust_call(state, move |trust| trust.list())
                    .await
                    .map(|certs| {
                        let value = if recursion {
                            serde_json::to_value(certs).unwrap_or_default()
                        } else {
                            certs
                                .iter()
                                .map(|c| format!("/1.0/certificates/{}", c.fingerprint))
                                .collect::<Vec<_>>()
                                .into()
                        };
                        api::sync(value)
                    })
                    .unwrap_or_else(trust_error)
            },
        );

    let add =
        warp::path!("1.0" / "certificates")
            .and(warp::post())
            .and(access.clone())
            .and(warp::header::optional::<String>("content-type"))
            .and(warp::body::content_length_limit(1 << 20))
            .and(warp::body::bytes())
            .and(with_state(state.clone()))
            .then(
                |access: Access,
                 content_type: Option<String>,
                 body: bytes::Bytes,
                 state: AppState| async move {
                    // Authorization first: a caller that may not add learns nothing about
                    // what a valid request would look like.
                    if access.may_administer().is_err() {
                        return forbidden();
                    }
                    let post = match CertificatePost::from_request(content_type.as_deref(), &body) {
                        Ok(post) => post,
                        Err((status, message)) => return api::error(status, &message),
                    };
                    let new = match post.into_new() {
                        Ok(n) => n,
                        Err(message) => return api::error(StatusCode::BAD_REQUEST, &message),
                    };
                    trust_call(state, move |trust| trust.add(new))
                        .await
                        .map(|c| api::sync(serde_json::to_value(c).unwrap_or_default()))
                        .unwrap_or_else(trust_error)
                },
            );

    let one =
        warp::path!("1.0" / "certificates" / String)
            .and(warp::get().or(warp::delete()).unify())
            .and(warp::method())
            .and(access)
            .and(with_state(state))
            .then(
                |fingerprint: String,
                 method: warp::http::Method,
                 access: Access,
                 state: AppState| async move {
                    if access.may_administer().is_err() {
                        return forbidden();
                    }
                    let delete = method == warp::http::Method::DELETE;
                    trust_call(state, move |trust| {
                        if delete {
                            trust.remove(&fingerprint)
                        } else {
                            trust.find(&fingerprint)
                        }
                    })
                    .await
                    .map(|c| {
                        api::sync(if delete {
                            serde_json::Value::Null
                        } else {
                            serde_json::to_value(c).unwrap_or_default()
                        })
                    })
                    .unwrap_or_else(trust_error)
                },
            );

    let landing = warp::path::end().and(warp::get()).map(landing_page);

    landing
        .or(instances)
        .unify()
        .or(list)
        .unify()
        .or(add)
        .unify()
        .or(one)
        .unify()
        .boxed()
}

/// `POST /1.0/certificates` body, as LXD takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificatePost {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: String,
    /// Base64 DER (as LXD sends it) or PEM.
    certificate: String,
    #[serde(default)]
    restricted: bool,
    #[serde(default)]
    projects: Vec<String>,
    /// LXD's token/password fields are not supported; refuse rather than ignore.
    #[serde(default)]
    password: Option<String>,
}

impl CertificatePost {
    /// Reads the body as LXD clients send it: JSON, said so in `Content-Type`.
    fn from_request(
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<CertificatePost, (StatusCode, String)> {
        let media_type = content_type
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase());
        if media_type.as_deref() != Some("application/json") {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the certificate as JSON with Content-Type: application/json".into(),
            ));
        }
        serde_json::from_slice(body)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("request body: {e}")))
    }

    fn into_new(self) -> Result<NewCertificate, String> {
        if self.password.is_some() {
            return Err("password-based trust is not supported; send the certificate".into());
        }
        let kind: CertificateType = self
            .kind
            .parse()
            .map_err(|e: TrustStoreError| e.to_string())?;
        let bytes = if self.certificate.contains("-----BEGIN") {
            self.certificate.into_bytes()
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(self.certificate.trim())
                .map_err(|_| "certificate: neither PEM nor base64 DER".to_owned())?
        };
        let certificate = certificate::parse(&bytes).map_err(|e| format!("certificate: {e}"))?;
        Ok(NewCertificate {
            certificate,
            kind,
            name: self.name,
            restricted: self.restricted,
            projects: self.projects,
        })
    }
}

/// Runs a trust store call (SQLite, fsync) on the blocking pool.
async fn trust_call<T: Send + 'static>(
    state: AppState,
    call: impl FnOnce(&TrustStore) -> Result<T, TrustStoreError> + Send + 'static,
) -> Result<T, TrustStoreError> {
    let trust = state.trust.clone();
    match tokio::task::spawn_blocking(move || call(&trust)).await {
        Ok(result) => result,
        Err(e) => Err(TrustStoreError::Interrupted(e.to_string())),
    }
}

fn trust_error(error: TrustStoreError) -> Response {
    let status = match &error {
        TrustStoreError::NotFound(_) => StatusCode::NOT_FOUND,
        TrustStoreError::AlreadyTrusted(_) => StatusCode::CONFLICT,
        TrustStoreError::UnknownType(_)
        | TrustStoreError::Ambiguous(_)
        | TrustStoreError::BadRestriction
        | TrustStoreError::BadProjectName { .. } => StatusCode::BAD_REQUEST,
        TrustStoreError::Database { .. } | TrustStoreError::Interrupted(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    api::error(status, &error.to_string())
}

/// `GET /1.0/metrics/targets`: the cluster's daemons as Prometheus `http_sd_configs`
/// JSON, one target group per member. Authorized like `/1.0/metrics` (a metrics
/// certificate may read it: Prometheus discovers with the certificate it scrapes with).
fn cluster_targets(access: &Access, state: &AppState) -> Response {
    // The member list names daemons, not instances: any caller that may scrape may
    // discover where to scrape (a restricted one still sees only its projects there).
    if access.visible(state.metrics_authentication).is_err() {
        return forbidden();
    }
    let groups: Vec<serde_json::Value> = state
        .cluster
        .load()
        .iter()
        .map(|member| {
            serde_json::json!({
                "targets": [member.address],
                "labels": { "__meta_lxmetrics_member": member.name },
            })
        })
        .collect();
    warp::reply::json(&groups).into_response()
}

fn forbidden() -> Response {
    api::error(StatusCode::FORBIDDEN, "not authorized")
}

/// `GET /`: a small page naming the product, as node_exporter has. Public, no data.
fn landing_page() -> Response {
    const PAGE: &str = concat!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>lxmetrics</title></head>\n",
        "<body>\n<h1>lxmetrics ",
        env!("CARGO_PKG_VERSION"),
        "</h1>\n<p>LXD-compatible per-instance metrics for Prometheus.</p>\n<ul>\n",
        "<li><a href=\"/1.0/metrics\">/1.0/metrics</a> (needs a trusted client or metrics certificate)</li>\n",
        "<li><a href=\"/1.0\">/1.0</a> (server information)</li>\n",
        "<li>Documentation: docs/ in the source tree (quick start, configuration, metrics, security)</li>\n",
        "</ul>\n</body>\n</html>\n"
    );
    warp::reply::html(PAGE).into_response()
}

fn server_info(access: &Access, state: &AppState) -> Response {
    let mut info = serde_json::json!({
        "api_extensions": ["metrics"],
        "api_status": "stable",
        "api_version": "1.0",
        "auth": access.auth_word(),
        "public": false,
        "auth_methods": ["tls"],
    });
    if let Some(kind) = access.certificate_type() {
        info["auth_certificate_type"] = kind.into();
        info["environment"] = serde_json::json!({
            "server": "lxmetrics",
            "server_version": env!("CARGO_PKG_VERSION"),
            "certificate_fingerprint": &*state.server_fingerprint,
        });
    }
    api::sync(info)
}

async fn metrics_handler(
    access: Access,
    query: HashMap<String, String>,
    accept: Option<String>,
    accept_encoding: Option<String>,
    state: AppState,
) -> Response {
    let filter = match access.visible_for(
        state.metrics_authentication,
        query.get("project").map(String::as_str),
    ) {
        Ok(filter) => filter,
        Err(_) => return forbidden(),
    };
    let request = ScrapeRequest {
        filter,
        format: format_from_accept(accept.as_deref()),
        encoding: encoding_from_accept_encoding(accept_encoding.as_deref()),
    };
    match state.metrics.scrape(&request).await {
        Ok(scrape) => {
            // The parts go out as they are, one frame each: the cached part is shared,
            // never copied. A stream has no size of its own, so the length is said.
            let parts = scrape.body.into_parts();
            let length: u64 = parts.iter().map(|part| part.len() as u64).sum();
            let frames = parts.into_iter().map(Ok::<bytes::Bytes, Infallible>);
            let mut response =
                warp::reply::stream(futures_util::stream::iter(frames)).into_response();
            let headers = response.headers_mut();
            headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(scrape.content_type));
            if let Some(encoding) = scrape.content_encoding {
                headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding));
            }
            headers.insert(VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => api::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn rejection_to_error(rejection: Rejection) -> Result<Response, Infallible> {
    let (status, reason) = if rejection.is_not_found() {
        (StatusCode::NOT_FOUND, "not found")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        (StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        (StatusCode::BAD_REQUEST, "invalid query string")
    } else if rejection.find::<warp::reject::InvalidHeader>().is_some() {
        (StatusCode::BAD_REQUEST, "invalid header")
    } else {
        (StatusCode::BAD_REQUEST, "bad request")
    };
    Ok(api::error(status, reason))
}
