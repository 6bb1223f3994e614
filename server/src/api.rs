//! LXD's response envelopes: every JSON answer and every error looks like LXD's, so LXD
//! clients and scripts can read ours.

use serde::Serialize;
use serde_json::Value;
use warp::http::StatusCode;
use warp::reply::{self, Reply, Response};

/// LXD's error body: `{"type":"error","status":"","status_code":0,"operation":"",
/// "error_code":403,"error":"<reason>","metadata":null}`.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    status: &'static str,
    status_code: u16,
    operation: &'static str,
    error_code: u16,
    error: &'a str,
    metadata: Option<()>,
}

/// An error response in LXD's shape.
pub fn error(status: StatusCode, reason: &str) -> Response {
    let body = ErrorBody {
        kind: "error",
        status: "",
        status_code: 0,
        operation: "",
        error_code: status.as_u16(),
        error: reason,
        metadata: None,
    };
    reply::with_status(reply::json(&body), status).into_response()
}

/// LXD's synchronous success body with `metadata`.
pub fn sync(metadata: Value) -> Response {
    let body = serde_json::json!({
        "type": "sync",
        "status": "Success",
        "status_code": 200,
        "operation": "",
        "error_code": 0,
        "error": "",
        "metadata": metadata,
    });
    reply::json(&body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn error_body_has_lxd_shape() {
        let resp = error(StatusCode::FORBIDDEN, "not authorized");
        assert_eq!(resp.status(), 403);
        let bytes = http_body_util_collect(resp).await;
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"error","status":"","status_code":0,"operation":"",
                "error_code":403,"error":"not authorized","metadata":null})
        );
    }

    async fn http_body_util_collect(resp: Response) -> bytes::Bytes {
        use http_body_util::BodyExt;
        resp.into_body().collect().await.unwrap().to_bytes()
    }
}
