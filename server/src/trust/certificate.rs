//! Reading a client certificate file for the trust store: PEM (or DER) in, DER and its
//! SHA-256 fingerprint out. A private key, an empty file or anything that is not a
//! certificate is refused with one clear sentence.

use rustls_pki_types::pem::{PemObject, SectionKind};
use sha2::{Digest, Sha256};

/// Why a file cannot be trusted as a certificate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertificateError {
    /// The file holds a private key (never send those anywhere).
    #[error("this is a private key, not a certificate")]
    PrivateKey,
    /// No PEM certificate block and not DER either.
    #[error("no certificate found (expected a PEM \"BEGIN CERTIFICATE\" block)")]
    NotACertificate,
    /// More than one certificate: which one to trust would be a guess.
    #[error("{0} certificates found; give one certificate per file")]
    Several(usize),
}

/// A certificate as the trust store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedCertificate {
    /// DER bytes.
    pub der: Vec<u8>,
    /// Lower-case hex SHA-256 of the DER bytes (LXD's fingerprint).
    pub fingerprint: String,
}

impl ParsedCertificate {
    /// The certificate re-encoded as PEM.
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.der.clone()))
    }
}

/// The SHA-256 fingerprint of DER bytes, lower-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Parses a certificate file's contents.
pub fn parse(contents: &[u8]) -> Result<ParsedCertificate, CertificateError> {
    let mut certificates = Vec::new();
    let mut saw_pem = false;
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(contents) {
        let Ok((kind, der)) = item else {
            return Err(CertificateError::NotACertificate);
        };
        saw_pem = true;
        match kind {
            SectionKind::Certificate => certificates.push(der),
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                return Err(CertificateError::PrivateKey)
            }
            _ => {}
        }
    }
    if !saw_pem && looks_like_der_certificate(contents) {
        certificates.push(contents.to_vec());
    }
    match certificates.len() {
        0 => Err(CertificateError::NotACertificate),
        1 => {
            let der = certificates.remove(0);
            Ok(ParsedCertificate {
                fingerprint: fingerprint(&der),
                der,
            })
        }
        n => Err(CertificateError::Several(n)),
    }
}

/// A DER certificate starts with a SEQUENCE containing a SEQUENCE (tbsCertificate).
fn looks_like_der_certificate(bytes: &[u8]) -> bool {
    bytes.len() > 16 && bytes[0] == 0x30 && (bytes[1] & 0x80 != 0) && bytes.contains(&0x30)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated() -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["metrics.local".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn pem_and_der_certificates_parse_to_the_same_fingerprint() {
        let (cert_pem, _) = generated();
        let parsed = parse(cert_pem.as_bytes()).unwrap();
        assert_eq!(parsed.fingerprint.len(), 64);
        assert_eq!(parse(&parsed.der).unwrap().fingerprint, parsed.fingerprint);
        assert_eq!(parse(parsed.to_pem().as_bytes()).unwrap(), parsed);
        assert_eq!(parsed.fingerprint, fingerprint(&parsed.der));
    }

    #[test]
    fn keys_garbage_and_bundles_are_refused() {
        let (cert_pem, key_pem) = generated();
        assert_eq!(parse(key_pem.as_bytes()), Err(CertificateError::PrivateKey));
        let both = format!("{cert_pem}{key_pem}");
        assert_eq!(parse(both.as_bytes()), Err(CertificateError::PrivateKey));
        assert_eq!(parse(b"hello"), Err(CertificateError::NotACertificate));
        assert_eq!(parse(b""), Err(CertificateError::NotACertificate));
        let two = format!("{cert_pem}{}", generated().0);
        assert_eq!(parse(two.as_bytes()), Err(CertificateError::Several(2)));
    }
}
