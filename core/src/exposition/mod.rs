//! Exposition: turning families into the bytes a scraper receives.
//!
//! - [`negotiate`] picks the format from `Accept` and the compression from
//!   `Accept-Encoding`, parsing q-values the way RFC 9110 describes;
//! - [`text`] writes Prometheus text 0.0.4 and OpenMetrics 1.0 straight into one buffer;
//! - [`compress`] gzips a finished body.

use bytes::Bytes;

pub mod compress;
pub mod negotiate;
pub mod text;

/// The wire format of a metrics response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Prometheus text format 0.0.4, the default.
    PrometheusText,
    /// OpenMetrics 1.0 text, when the `Accept` header prefers it.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub const fn content_type(self) -> &'static str {
        match self {
            Format::PrometheusText => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The `Content-Encoding` of a metrics response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentEncoding {
    /// Uncompressed.
    Identity,
    /// gzip, when `Accept-Encoding` allows it.
    Gzip,
}

impl ContentEncoding {
    /// The `Content-Encoding` header value, or `None` for identity.
    pub const fn header_value(self) -> Option<&'static str> {
        match self {
            ContentEncoding::Identity => None,
            ContentEncoding::Gzip => Some("gzip"),
        }
    }
}

/// The instance part of a response, encoded once per snapshot and key and then shared.
#[derive(Clone, Debug)]
pub enum EncodedBody {
    /// Uncompressed text, sent as is.
    Identity(Bytes),
    /// Compressed deflate blocks, completed per request with the daemon part.
    Gzip(compress::GzipPrefix),
}
