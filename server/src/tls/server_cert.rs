//! The server certificate: generated on first start (ECDSA P-384, self-signed, SANs host
//! name, `127.0.0.1`, `::1`), never overwritten afterwards.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DnType, KeyPair, SanType, PKCS_ECDSA_P384_SHA384};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::trust::certificate::fingerprint;

/// A server certificate problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ServerCertError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a usable certificate or key.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Only one of the pair exists; we never overwrite the other.
    #[error(
        "{present} exists but {missing} does not; restore it or remove both to generate a new pair"
    )]
    HalfPair {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// Generating the certificate failed.
    #[error("cannot generate the server certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The server's certificate chain and key, loaded from the state directory.
pub struct ServerIdentity {
    /// The certificate (one, self-signed).
    pub certificates: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 fingerprint of the certificate, lower-case hex.
    pub fingerprint: String,
    /// Whether this start generated it.
    pub generated: bool,
}

/// Loads `server.crt`/`server.key` from `dir`, generating them first if neither exists.
pub fn load_or_generate(dir: &Path) -> Result<ServerIdentity, ServerCertError> {
    let cert_path = crate::state_dir::StateDir(dir).server_cert();
    let key_path = crate::state_dir::StateDir(dir).server_key();
    let generated = match (cert_path.exists(), key_path.exists()) {
        (true, true) => false,
        (false, false) => {
            generate(&cert_path, &key_path)?;
            true
        }
        (true, false) => {
            return Err(ServerCertError::HalfPair {
                present: cert_path,
                missing: key_path,
            })
        }
        (false, true) => {
            return Err(ServerCertError::HalfPair {
                present: key_path,
                missing: cert_path,
            })
        }
    };
    let invalid = |path: &Path, message: String| ServerCertError::Invalid {
        path: path.to_owned(),
        message,
    };
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| invalid(&cert_path, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(&cert_path, e.to_string()))?;
    let first = certificates
        .first()
        .ok_or_else(|| invalid(&cert_path, "no certificate in the file".into()))?;
    let key =
        PrivateKeyDer::from_pem_file(&key_path).map_err(|e| invalid(&key_path, e.to_string()))?;
    Ok(ServerIdentity {
        fingerprint: fingerprint(first),
        certificates,
        key,
        generated,
    })
}

/// The host name for the certificate's DNS SAN.
pub fn host_name() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().into_owned();
    if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    }
}

fn generate(cert_path: &Path, key_path: &Path) -> Result<(), ServerCertError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
    let host = host_name();
    let mut params = CertificateParams::new(vec![host.clone()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("root@{host}"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "lxmetrics");
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::from([
            0u16, 0, 0, 0, 0, 0, 0, 1,
        ])));
    // Valid from the start of this year for ten years, like LXD's server certificates.
    let year = current_year();
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let cert = params.self_signed(&key)?;
    // Key first: a crash between the two writes leaves a key without a certificate,
    // which the next start reports instead of silently replacing.
    write_new(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

/// The current calendar year (UTC), from the system clock.
fn current_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Days since the epoch to a civil year (Howard Hinnant's algorithm, year part only).
    let days = (secs / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let year = year_of_era + era * 400 + i64::from(month_index >= 10);
    i32::try_from(year).unwrap_or(2026)
}

/// Writes a file that must not exist yet: temporary file, fsync, rename.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), ServerCertError> {
    let io = |source| ServerCertError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_once_then_loaded_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_generate(dir.path()).unwrap();
        assert!(first.generated);
        let mode = fs::metadata(dir.path().join("server.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_generate(dir.path()).unwrap();
        assert!(!again.generated);
        assert_eq!(again.fingerprint, first.fingerprint);

        let text = fs::read_to_string(dir.path().join("server.crt")).unwrap();
        let der = CertificateDer::from_pem_slice(text.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .clone();
        use x509_parser::extensions::GeneralName;
        let host = host_name();
        assert!(sans
            .iter()
            .any(|n| matches!(n, GeneralName::DNSName(d) if *d == host)));
        assert!(sans
            .iter()
            .any(|n| matches!(n, GeneralName::IPAddress(ip) if *ip == [127, 0, 0, 1])));
        let v6_loopback = std::net::Ipv6Addr::LOCALHOST.octets();
        assert!(sans
            .iter()
            .any(|n| matches!(n, GeneralName::IPAddress(ip) if *ip == v6_loopback)));
        assert!(cert.validity().is_valid());
        let key_oid = cert
            .public_key()
            .algorithm
            .parameters
            .as_ref()
            .unwrap()
            .as_oid()
            .unwrap();
        assert_eq!(key_oid.to_id_string(), "1.3.132.0.34", "secp384r1");
    }

    #[test]
    fn a_half_pair_is_an_error_not_a_regeneration() {
        let dir = tempfile::tempdir().unwrap();
        load_or_generate(dir.path()).unwrap();
        fs::remove_file(dir.path().join("server.key")).unwrap();
        let before = fs::read(dir.path().join("server.crt")).unwrap();
        let err = load_or_generate(dir.path()).err().unwrap();
        assert!(matches!(err, ServerCertError::HalfPair { .. }), "{err}");
        assert_eq!(fs::read(dir.path().join("server.crt")).unwrap(), before);
    }

    #[test]
    fn the_year_is_plausible() {
        assert!((2024..2200).contains(&current_year()));
    }
}
