//! PKI mode: with `core.trust_ca_certificates = true` and `<state-dir>/server.ca`, client
//! certificates that chain to that CA are trusted as `client` without being added one by
//! one; `<state-dir>/ca.crl` revokes them. Verified with rustls-webpki, with the same
//! signature algorithms as the TLS stack, for the client-auth usage, at the current time
//! (so expired and not-yet-valid certificates fail).
//!
//! As in LXD, the revocation list also applies to certificates of that CA that are in the
//! trust store ([`Pki::revokes`]). The files are re-read on SIGHUP and when they change
//! ([`PkiFiles`]); a broken new file keeps the previous CA and list in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use webpki::{CertRevocationList, EndEntityCert, KeyUsage, OwnedCertRevocationList};

use crate::state_dir::StateDir;

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
        let ca_path = StateDir(state_dir).ca();
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
        let crl_path = StateDir(state_dir).crl();
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

    /// Whether the revocation list names this certificate: issued by the list's issuer
    /// with a listed serial. Used for trust-store certificates, which do not need to
    /// chain to the CA to be trusted but must not outlive their revocation.
    pub fn revokes(&self, end_entity: &[u8]) -> bool {
        let Some(crl) = &self.crl else {
            return false;
        };
        let der = CertificateDer::from(end_entity);
        let Ok(cert) = EndEntityCert::try_from(&der) else {
            return false;
        };
        cert.issuer() == crl.issuer() && !matches!(crl.find_serial(cert.serial()), Ok(None))
    }
}

/// The PKI files of a state directory, re-read on SIGHUP and when they change, so a new
/// `ca.crl` revokes without a restart.
pub struct PkiFiles {
    state_dir: PathBuf,
    current: ArcSwap<Pki>,
    stamp: std::sync::Mutex<FilesStamp>,
}

/// What identifies a version of the files: size and modification time of each.
type FilesStamp = [Option<(u64, SystemTime)>; 2];

impl PkiFiles {
    /// Loads the files; an error here stops the daemon from starting.
    pub fn load(state_dir: &Path) -> Result<Arc<PkiFiles>, PkiError> {
        let stamp = stamp(state_dir);
        let pki = Pki::load(state_dir)?;
        Ok(Arc::new(PkiFiles {
            state_dir: state_dir.to_owned(),
            current: ArcSwap::from_pointee(pki),
            stamp: std::sync::Mutex::new(stamp),
        }))
    }

    /// The CA and list in force.
    pub fn current(&self) -> arc_swap::Guard<Arc<Pki>> {
        self.current.load()
    }

    /// Re-reads both files now. On error the previous version stays in force.
    pub fn reload(&self) -> Result<(), PkiError> {
        let stamp = stamp(&self.state_dir);
        let pki = Pki::load(&self.state_dir)?;
        self.current.store(Arc::new(pki));
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
        Ok(())
    }

    /// Re-reads the files if their size or modification time changed since the last
    /// load; returns whether it did.
    fn reload_if_changed(&self) -> Result<bool, PkiError> {
        let now = stamp(&self.state_dir);
        if *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) == now {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// Watches the files until `stop` turns true, reloading on change; a new file that
    /// does not load is logged once and the previous CA and list stay in force.
    pub async fn watch(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        crate::change_watch::poll(
            stop,
            "PKI files changed: CA and revocation list reloaded",
            move || {
                self.reload_if_changed()
                    .map_err(|e| format!("{e}; the previous CA and revocation list stay in force"))
            },
        )
        .await
    }
}

fn stamp(state_dir: &Path) -> FilesStamp {
    let one = |path: PathBuf| {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.len(), meta.modified().ok()?))
    };
    let files = StateDir(state_dir);
    [one(files.ca()), one(files.crl())]
}
