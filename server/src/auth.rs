//! Authorization: what a caller may do, from its connection and the trust store. This is
//! the only place that decides it; routes ask [`Access`] and never re-derive a rule.
//!
//! | caller | access |
//! |---|---|
//! | unix socket | client, every project |
//! | certificate in the trust store as `client` (valid dates) | client, maybe restricted to projects |
//! | certificate in the trust store as `metrics` (valid dates) | metrics, maybe restricted to projects |
//! | PKI mode: certificate chaining to `server.ca`, valid, not in `ca.crl` | client, every project |
//! | PKI mode: a trusted certificate revoked by `ca.crl` | untrusted |
//! | anything else (no certificate, unknown, expired, not yet valid) | untrusted |
//!
//! As in LXD, a restricted certificate of either type sees only its projects on every
//! route, and only an unrestricted client (or the unix socket) reads or changes the trust
//! store.

use std::sync::Arc;

use lxmetrics_core::project_filter::ProjectFilter;

use crate::caller::{Caller, PeerCertificate};
use crate::pki::Pki;
use crate::trust::store::{CertificateType, TrustSnapshot};

/// Which projects a trusted caller may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Projects {
    /// Every project, and the host-level series.
    All,
    /// Only these projects (a restricted certificate).
    Only(Arc<[String]>),
}

/// What one request may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Public information only; `/1.0/metrics` only when authentication is off.
    Untrusted,
    /// The API, within its projects; the trust store only when unrestricted.
    Client(Projects),
    /// `/1.0` and `/1.0/metrics` only, within its projects.
    Metrics(Projects),
}

/// Why a request is refused: always answered `403 not authorized`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forbidden;

impl Access {
    /// The `auth` word of `GET /1.0`.
    pub fn auth_word(&self) -> &'static str {
        match self {
            Access::Untrusted => "untrusted",
            Access::Client(_) | Access::Metrics(_) => "trusted",
        }
    }

    /// The certificate type for `GET /1.0`, if trusted.
    pub fn certificate_type(&self) -> Option<&'static str> {
        match self {
            Access::Untrusted => None,
            Access::Client(_) => Some("client"),
            Access::Metrics(_) => Some("metrics"),
        }
    }

    /// The trust store (list, show, add, remove): an unrestricted client only. A
    /// restricted client that could add a certificate could mint an unrestricted one.
    pub fn may_administer(&self) -> Result<(), Forbidden> {
        match self {
            Access::Client(Projects::All) => Ok(()),
            _ => Err(Forbidden),
        }
    }

    /// The API beyond metrics (`/1.0/instances`): client certificates, restricted or
    /// not; what they see there is still [`Access::visible`].
    pub fn client_only(&self) -> Result<(), Forbidden> {
        match self {
            Access::Client(_) => Ok(()),
            _ => Err(Forbidden),
        }
    }

    /// The instance data this caller may see on a route that serves it: everything, its
    /// projects, or nothing (`Err`; with `metrics_authentication` off an untrusted caller
    /// sees everything, as in LXD).
    pub fn visible(&self, metrics_authentication: bool) -> Result<ProjectFilter, Forbidden> {
        match self {
            Access::Client(projects) | Access::Metrics(projects) => Ok(match projects {
                Projects::All => ProjectFilter::All,
                Projects::Only(list) => ProjectFilter::only(list.iter().cloned()),
            }),
            Access::Untrusted if !metrics_authentication => Ok(ProjectFilter::All),
            Access::Untrusted => Err(Forbidden),
        }
    }

    /// What a request for `?project=P` (or none) may see. Asking for a project the
    /// caller does not hold is refused, as LXD refuses it, rather than answered empty.
    pub fn visible_for(
        &self,
        metrics_authentication: bool,
        project: Option<&str>,
    ) -> Result<ProjectFilter, Forbidden> {
        let allowed = self.visible(metrics_authentication)?;
        match project {
            None => Ok(allowed),
            Some(p) if allowed.allows(Some(p)) => Ok(ProjectFilter::only([p.to_owned()])),
            Some(_) => Err(Forbidden),
        }
    }
}

/// Decides the access of a caller against the current trust snapshot and, in PKI mode,
/// the CA and its revocation list.
pub fn access(caller: &Caller, trust: &TrustSnapshot, pki: Option<&Pki>) -> Access {
    match caller {
        Caller::UnixSocket => Access::Client(Projects::All),
        Caller::Tls(None) => Access::Untrusted,
        Caller::Tls(Some(peer)) => certificate_access(peer, trust, pki),
    }
}

fn certificate_access(peer: &PeerCertificate, trust: &TrustSnapshot, pki: Option<&Pki>) -> Access {
    let Some(entry) = trust.get(&peer.fingerprint) else {
        return match pki {
            Some(pki) if pki.trusts(&peer.der) => Access::Client(Projects::All),
            _ => {
                tracing::debug!(fingerprint = %peer.fingerprint, "certificate not trusted");
                Access::Untrusted
            }
        };
    };
    if !currently_valid(&peer.der) {
        tracing::debug!(
            fingerprint = %peer.fingerprint,
            name = %entry.name,
            "trusted certificate refused: outside its validity period"
        );
        return Access::Untrusted;
    }
    // In PKI mode the CA's revocation list applies to every certificate it issued, also
    // to one that was added to the trust store (LXD checks the CRL for those too).
    if pki.is_some_and(|pki| pki.revokes(&peer.der)) {
        tracing::debug!(
            fingerprint = %peer.fingerprint,
            name = %entry.name,
            "trusted certificate refused: revoked by ca.crl"
        );
        return Access::Untrusted;
    }
    let projects = match entry.restricted {
        true => Projects::Only(entry.projects.clone().into()),
        false => Projects::All,
    };
    match entry.kind {
        CertificateType::Client => Access::Client(projects),
        CertificateType::Metrics => Access::Metrics(projects),
    }
}

/// Whether now is inside the certificate's validity period (unparsable means no).
pub fn currently_valid(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert.validity().is_valid())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(p: &[&str]) -> Projects {
        Projects::Only(p.iter().map(|s| s.to_string()).collect::<Vec<_>>().into())
    }

    #[test]
    fn only_an_unrestricted_client_administers() {
        assert_eq!(Access::Client(Projects::All).may_administer(), Ok(()));
        for denied in [
            Access::Client(only(&["a"])),
            Access::Metrics(Projects::All),
            Access::Metrics(only(&["a"])),
            Access::Untrusted,
        ] {
            assert_eq!(denied.may_administer(), Err(Forbidden), "{denied:?}");
        }
    }

    #[test]
    fn restricted_callers_see_their_projects_of_either_type() {
        for access in [Access::Client(only(&["a"])), Access::Metrics(only(&["a"]))] {
            let filter = access.visible(true).unwrap();
            assert!(filter.allows(Some("a")) && !filter.allows(Some("b")));
            assert!(!filter.allows(None), "host series are not a project's");
            assert_eq!(access.visible_for(true, Some("b")), Err(Forbidden));
            assert_eq!(
                access.visible_for(true, Some("a")),
                Ok(ProjectFilter::only(["a".to_owned()]))
            );
        }
        assert_eq!(Access::Metrics(only(&["a"])).client_only(), Err(Forbidden));
        assert_eq!(Access::Client(only(&["a"])).client_only(), Ok(()));
    }

    #[test]
    fn untrusted_sees_metrics_only_without_authentication() {
        assert_eq!(Access::Untrusted.visible(true), Err(Forbidden));
        assert_eq!(Access::Untrusted.visible(false), Ok(ProjectFilter::All));
        assert_eq!(
            Access::Client(Projects::All).visible_for(true, Some("x")),
            Ok(ProjectFilter::only(["x".to_owned()]))
        );
    }
}
