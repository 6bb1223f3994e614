//! PKI mode: with `core.trust_ca_certificates = true` and `<state-dir>/server.ca`, client
//! certificates that chain to that CA are trusted as `client` without being added one by
//! one; `<state-dir>/ca.crl` revokes them. Verified with rustls-webpki, with the same
//! signature algorithms as the TLS stack, for the client-auth usage, at the current time
//! (so expired and not-yet-valid certificates fail).

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use webpki::{CertRevocationList, EndEntityCert, KeyUsage, OwnedCertRevocationList};

/// A PKI mode configuration problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// `core.trust_ca_certificates` is on but there is no CA file.
    #[error("core.trust_ca_certificates is true but {0} does not exist")]
    MissingCa(PathBuf),
    /// A file that is not what it should be.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The CA and the optional revocation list.
pub struct Pki {
    ca: CertificateDer<'static>,
    crl: Option<CertRevocationList<'static>>,
}

impl Pki {
    /// Loads `server.ca` (and `ca.crl` if present) from `state_dir`.
    pub fn load(state_dir: &Path) -> Result<Pki, PkiError> {
        let ca_path = state_dir.join("server.ca");
        if !ca_path.exists() {
            return Err(PkiError::MissingCa(ca_path));
        }
        let invalid = |path: &Path, message: String| PkiError::Invalid {
            path: path.to_owned(),
            message,
        };
        let ca = CertificateDer::from_pem_file(&ca_path)
            .map_err(|e| invalid(&ca_path, e.to_string()))?;
        webpki::anchor_from_trusted_cert(&ca)
            .map_err(|e| invalid(&ca_path, format!("not a usable CA: {e}")))?;
        let crl_path = state_dir.join("ca.crl");
        let crl = if crl_path.exists() {
            let der = CertificateRevocationListDer::from_pem_file(&crl_path)
                .map_err(|e| invalid(&crl_path, e.to_string()))?;
            let owned = OwnedCertRevocationList::from_der(&der)
                .map_err(|e| invalid(&crl_path, format!("not a usable CRL: {e}")))?;
            Some(CertRevocationList::from(owned))
        } else {
            None
        };
        Ok(Pki { ca, crl })
    }

    /// Whether `end_entity` chains to the CA, is valid now, is for client auth and is not
    /// revoked.
    pub fn trusts(&self, end_entity: &[u8]) -> bool {
        let der = CertificateDer::from(end_entity);
        let Ok(cert) = EndEntityCert::try_from(&der) else {
            return false;
        };
        let Ok(anchor) = webpki::anchor_from_trusted_cert(&self.ca) else {
            return false;
        };
        let crls: Vec<&CertRevocationList<'_>> = self.crl.iter().collect();
        let revocation = match webpki::RevocationOptionsBuilder::new(&crls) {
            Ok(builder) => Some(
                builder
                    .with_depth(webpki::RevocationCheckDepth::EndEntity)
                    .with_status_policy(webpki::UnknownStatusPolicy::Allow)
                    .build(),
            ),
            Err(_) => None, // no CRL configured
        };
        let algorithms = rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .all;
        cert.verify_for_usage(
            algorithms,
            &[anchor],
            &[],
            UnixTime::now(),
            KeyUsage::client_auth(),
            revocation,
            None,
        )
        .is_ok()
    }
}
