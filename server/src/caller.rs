//! Who is calling: put into every request's extensions by the listener that accepted it,
//! read by the routes to authorize.

/// The caller of one request, as established by the connection it came on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A plain-HTTP loopback connection (the pre-TLS skeleton listener): may read metrics
    /// and public server information only.
    PlainLoopback,
}

impl Caller {
    /// Whether this caller may read `/1.0/metrics`.
    pub fn may_read_metrics(&self) -> bool {
        match self {
            Caller::PlainLoopback => true,
        }
    }

    /// The `auth` field of `GET /1.0`.
    pub fn auth_word(&self) -> &'static str {
        match self {
            Caller::PlainLoopback => "untrusted",
        }
    }
}
