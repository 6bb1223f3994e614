//! Authorization: what a caller may do, from its connection and the trust store.
//!
//! | caller | access |
//! |---|---|
//! | unix socket | client |
//! | certificate in the trust store as `client` (valid dates) | client |
//! | certificate in the trust store as `metrics` (valid dates) | metrics, maybe restricted to projects |
//! | PKI mode: certificate chaining to `server.ca`, valid, not in `ca.crl` | client |
//! | anything else (no certificate, unknown, expired, not yet valid) | untrusted |

use std::sync::Arc;

use crate::caller::{Caller, PeerCertificate};
use crate::pki::Pki;
use crate::trust::store::{CertificateType, TrustSnapshot};

/// What one request may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Public information only; `/1.0/metrics` only when authentication is off.
    Untrusted,
    /// The whole API.
    Client,
    /// `/1.0` and `/1.0/metrics` only; `Some(projects)` when restricted.
    Metrics(Option<Arc<[String]>>),
}

impl Access {
    /// The `auth` word of `GET /1.0`.
    pub fn auth_word(&self) -> &'static str {
        match self {
            Access::Untrusted => "untrusted",
            Access::Client | Access::Metrics(_) => "trusted",
        }
    }

    /// The certificate type for `GET /1.0`, if trusted.
    pub fn certificate_type(&self) -> Option<&'static str> {
        match self {
            Access::Untrusted => None,
            Access::Client => Some("client"),
            Access::Metrics(_) => Some("metrics"),
        }
    }
}

/// Decides the access of a caller against the current trust snapshot and, in PKI mode,
/// the CA.
pub fn access(caller: &Caller, trust: &TrustSnapshot, pki: Option<&Pki>) -> Access {
    match caller {
        Caller::UnixSocket => Access::Client,
        Caller::Tls(None) => Access::Untrusted,
        Caller::Tls(Some(peer)) => certificate_access(peer, trust, pki),
    }
}

fn certificate_access(peer: &PeerCertificate, trust: &TrustSnapshot, pki: Option<&Pki>) -> Access {
    let Some(entry) = trust.get(&peer.fingerprint) else {
        return match pki {
            Some(pki) if pki.trusts(&peer.der) => Access::Client,
            _ => Access::Untrusted,
        };
    };
    if !currently_valid(&peer.der) {
        return Access::Untrusted;
    }
    match entry.kind {
        CertificateType::Client => Access::Client,
        CertificateType::Metrics if entry.restricted => {
            Access::Metrics(Some(entry.projects.clone().into()))
        }
        CertificateType::Metrics => Access::Metrics(None),
    }
}

/// Whether now is inside the certificate's validity period (unparsable means no).
pub fn currently_valid(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert.validity().is_valid())
        .unwrap_or(false)
}
