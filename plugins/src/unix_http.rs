//! One bounded `GET` over a unix socket: how discovery asks the APIs of the runtimes on
//! this host (LXD, Incus, Docker, Podman), each over its own socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

/// The longest a refresh waits for an API before falling back to cgroup names.
pub(crate) const API_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest answer read (about 4 KiB per instance: room for 16,000 instances).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Why an API could not be used this refresh.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// Connecting, sending or reading failed.
    #[error("{path}: {reason}")]
    Transport {
        /// The socket.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// No answer within [`API_TIMEOUT`].
    #[error("{0}: no answer within {API_TIMEOUT:?}")]
    Timeout(PathBuf),
    /// The daemon answered with an error or a body that is not its API's shape.
    #[error("{path}: {reason}")]
    Answer {
        /// The socket.
        path: PathBuf,
        /// What the answer was.
        reason: String,
    },
}

impl ApiError {
    /// An answer that is not what the API should have said.
    pub(crate) fn answer(socket: &Path, reason: String) -> Self {
        ApiError::Answer {
            path: socket.to_owned(),
            reason,
        }
    }
}

/// `GET path` on the socket (one connection, HTTP/1.1, at most [`MAX_RESPONSE_BYTES`]);
/// the body of a 2xx answer, else the API's error text (LXD's `error`, Docker's and
/// Podman's `message`). The caller bounds the time.
pub(crate) async fn get(socket: &Path, path: &str) -> Result<Bytes, ApiError> {
    let transport = |reason: String| ApiError::Transport {
        path: socket.to_owned(),
        reason,
    };
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| transport(e.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| transport(e.to_string()))?;
    let connection = tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, "localhost")
        .header(http::header::USER_AGENT, "lxmetrics")
        .body(Empty::<Bytes>::new())
        .map_err(|e| transport(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| transport(e.to_string()))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| transport(format!("reading the answer: {e}")))?
        .to_bytes();
    connection.abort();
    if !status.is_success() {
        let reason = serde_json::from_slice::<ErrorAnswer>(&body)
            .map(|e| {
                if e.error.is_empty() {
                    e.message
                } else {
                    e.error
                }
            })
            .unwrap_or_default();
        return Err(ApiError::answer(
            socket,
            format!("{path}: {status} {reason}"),
        ));
    }
    Ok(body)
}

/// [`get`] bounded by [`API_TIMEOUT`].
pub(crate) async fn get_within(socket: &Path, path: &str) -> Result<Bytes, ApiError> {
    tokio::time::timeout(API_TIMEOUT, get(socket, path))
        .await
        .map_err(|_| ApiError::Timeout(socket.to_owned()))?
}

/// The first of a runtime's candidate sockets that exists here: the runtime's socket,
/// if it runs on this host.
pub(crate) fn first_existing(candidates: &[PathBuf]) -> Option<&Path> {
    candidates.iter().map(PathBuf::as_path).find(|p| p.exists())
}

/// A name or id as one URL path segment (whatever an API answered, it cannot add a
/// path component or a query).
pub(crate) fn url_segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The error text of a failed answer, in LXD's or Docker's shape.
#[derive(Deserialize)]
struct ErrorAnswer {
    #[serde(default)]
    error: String,
    #[serde(default)]
    message: String,
}
