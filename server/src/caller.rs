//! Who is calling: put into every request's extensions by the listener that accepted it.
//! What the caller may do is decided per request by [`crate::auth`], so trust store
//! changes apply to the next request without reconnecting.

use std::sync::Arc;

use crate::trust::certificate::fingerprint;

/// The client certificate a TLS peer presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate {
    /// DER bytes.
    pub der: Arc<[u8]>,
    /// SHA-256 fingerprint, lower-case hex.
    pub fingerprint: String,
}

impl PeerCertificate {
    /// Wraps the DER certificate a TLS session presented.
    pub fn new(der: &[u8]) -> Self {
        PeerCertificate {
            fingerprint: fingerprint(der),
            der: der.into(),
        }
    }
}

/// The caller of one request, as established by the connection it came on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The unix socket: local and already authorized by file permissions (0660).
    UnixSocket,
    /// A TLS connection, with the client certificate if one was presented.
    Tls(Option<PeerCertificate>),
}
