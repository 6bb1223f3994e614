//! The HTTP API as warp filters: `/1.0`, `/1.0/metrics`, and LXD-shaped errors for
//! everything else. Routes only translate HTTP to calls on core and back.

use std::collections::HashMap;
use std::convert::Infallible;

use lxmetrics_core::exposition::negotiate::{encoding_from_accept_encoding, format_from_accept};
use lxmetrics_core::scrape::{MetricsService, ScrapeRequest};
use lxmetrics_core::snapshot::ProjectFilter;
use warp::filters::BoxedFilter;
use warp::http::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::api;
use crate::caller::Caller;

/// What every route needs.
#[derive(Clone)]
pub struct AppState {
    /// The metrics pipeline.
    pub metrics: MetricsService,
}

/// Which endpoints a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerScope {
    /// The full API (`core.https_address`, the unix socket).
    Full,
    /// Only `/1.0/metrics` and `/1.0` (`core.metrics_address`).
    MetricsOnly,
}

/// The entity type of a path for `lxd_api_requests_completed_total` (a fixed word, never
/// client input).
pub fn entity_type(path: &str) -> &'static str {
    let path = path.trim_end_matches('/');
    match path {
        "/1.0/metrics" => "metrics",
        "" | "/1.0" => "server",
        p if p.starts_with("/1.0/instances") => "instances",
        p if p.starts_with("/1.0/certificates") => "certificates",
        _ => "unknown",
    }
}

fn caller() -> impl Filter<Extract = (Caller,), Error = Infallible> + Clone {
    warp::ext::optional::<Caller>().map(|c: Option<Caller>| c.unwrap_or(Caller::PlainLoopback))
}

/// All routes of a listener.
pub fn routes(state: AppState, scope: ListenerScope) -> BoxedFilter<(Response,)> {
    let _ = scope; // Full and MetricsOnly serve the same endpoints until the full API grows.
    let server_info = warp::path!("1.0")
        .and(warp::get())
        .and(caller())
        .map(|caller: Caller| server_info(&caller));

    let metrics = warp::path!("1.0" / "metrics")
        .and(warp::get())
        .and(caller())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("accept"))
        .and(warp::header::optional::<String>("accept-encoding"))
        .and(warp::any().map(move || state.clone()))
        .then(metrics_handler);

    server_info
        .or(metrics)
        .unify()
        .recover(rejection_to_error)
        .unify()
        .boxed()
}

fn server_info(caller: &Caller) -> Response {
    api::sync(serde_json::json!({
        "api_extensions": ["metrics"],
        "api_status": "stable",
        "api_version": "1.0",
        "auth": caller.auth_word(),
        "public": false,
        "auth_methods": ["tls"],
        "environment": {
            "server": "lxmetrics",
            "server_version": env!("CARGO_PKG_VERSION"),
        },
    }))
}

async fn metrics_handler(
    caller: Caller,
    query: HashMap<String, String>,
    accept: Option<String>,
    accept_encoding: Option<String>,
    state: AppState,
) -> Response {
    if !caller.may_read_metrics() {
        return api::error(StatusCode::FORBIDDEN, "not authorized");
    }
    let filter = match query.get("project") {
        Some(project) => ProjectFilter::only([project.clone()]),
        None => ProjectFilter::All,
    };
    let request = ScrapeRequest {
        filter,
        format: format_from_accept(accept.as_deref()),
        encoding: encoding_from_accept_encoding(accept_encoding.as_deref()),
    };
    match state.metrics.scrape(&request).await {
        Ok(scrape) => {
            let mut response = Response::new(scrape.body.into());
            let headers = response.headers_mut();
            headers.insert(
                CONTENT_TYPE,
                scrape.content_type.parse().expect("static header"),
            );
            if let Some(encoding) = scrape.content_encoding {
                headers.insert(CONTENT_ENCODING, encoding.parse().expect("static header"));
            }
            headers.insert(
                VARY,
                "Accept, Accept-Encoding".parse().expect("static header"),
            );
            headers.insert(CACHE_CONTROL, "no-store".parse().expect("static header"));
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
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        (StatusCode::BAD_REQUEST, "invalid query string")
    } else if rejection.find::<warp::reject::InvalidHeader>().is_some() {
        (StatusCode::BAD_REQUEST, "invalid header")
    } else {
        (StatusCode::BAD_REQUEST, "bad request")
    };
    Ok(api::error(status, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_types_are_fixed_words() {
        assert_eq!(entity_type("/1.0/metrics"), "metrics");
        assert_eq!(entity_type("/1.0"), "server");
        assert_eq!(entity_type("/1.0/instances/x"), "instances");
        assert_eq!(entity_type("/1.0/certificates"), "certificates");
        assert_eq!(entity_type("/whatever/../x"), "unknown");
    }
}
