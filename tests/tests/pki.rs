//! PKI mode: with `core.trust_ca_certificates = true` and `server.ca` in the state
//! directory, certificates signed by that CA are trusted as `client` without `trust add`;
//! `ca.crl` revokes them; expired ones are refused; a self-signed stranger still is not.

use lxmetrics_tests::{workspace_root, ClientCert, Daemon};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SerialNumber, PKCS_ECDSA_P384_SHA384,
};

fn this_year() -> i32 {
    1970 + (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 31_556_952) as i32
}

fn signed(issuer: &Issuer<'_, KeyPair>, name: &str, serial: u64, years: (i32, i32)) -> ClientCert {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.serial_number = Some(SerialNumber::from(serial));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(this_year() + years.0, 1, 1);
    params.not_after = rcgen::date_time_ymd(this_year() + years.1, 1, 1);
    let cert = params.signed_by(&key, issuer).unwrap();
    ClientCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

#[tokio::test]
async fn ca_signed_certificates_are_trusted_revoked_ones_are_not() {
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "lxmetrics test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let good = signed(&issuer, "good.local", 10, (-1, 5));
    let revoked = signed(&issuer, "revoked.local", 11, (-1, 5));
    let expired = signed(&issuer, "expired.local", 12, (-3, -1));
    let crl = CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(this_year(), 1, 1),
        next_update: rcgen::date_time_ymd(this_year() + 1, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(11u64),
            revocation_time: rcgen::date_time_ymd(this_year(), 1, 1),
            reason_code: Some(RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .unwrap();

    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("server.ca"), ca_cert.pem()).unwrap();
    std::fs::write(state.path().join("ca.crl"), crl.pem().unwrap()).unwrap();
    let fixture = workspace_root().join("plugins/tests/fixtures/v2");
    std::fs::write(
        state.path().join("config.toml"),
        format!(
            "[core]\ntrust_ca_certificates = true\n[host]\ncgroup_root = \"{}/cgroup\"\n",
            fixture.display()
        ),
    )
    .unwrap();
    let daemon = Daemon::start_in(state, &["--metrics-address", "127.0.0.1:0"]);
    let metrics_url = daemon.metrics_url.clone().unwrap();

    for (who, cert, trusted) in [
        ("CA-signed", good, true),
        ("revoked", revoked, false),
        ("expired CA-signed", expired, false),
        (
            "self-signed stranger",
            ClientCert::generate("stranger.local"),
            false,
        ),
    ] {
        let client = daemon.client_with(Some(&cert));
        for (listener, base) in [("https", &daemon.url), ("metrics", &metrics_url)] {
            for path in [
                "/1.0",
                "/1.0/metrics",
                "/1.0/instances",
                "/1.0/certificates",
            ] {
                let resp = client.get(format!("{base}{path}")).send().await.unwrap();
                let status = resp.status().as_u16();
                let expected = match (path, listener, trusted) {
                    ("/1.0", _, _) => 200,
                    (_, "metrics", _) if path != "/1.0/metrics" => 404,
                    (_, _, true) => 200,
                    (_, _, false) => 403,
                };
                assert_eq!(status, expected, "{who} {listener} {path}");
                if path == "/1.0" {
                    let info: serde_json::Value = resp.json().await.unwrap();
                    let auth = if trusted { "trusted" } else { "untrusted" };
                    assert_eq!(info["metadata"]["auth"], auth, "{who} {listener}");
                }
            }
        }
    }
}

#[test]
fn pki_mode_without_a_ca_file_fails_with_one_line() {
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        state.path().join("config.toml"),
        "[core]\ntrust_ca_certificates = true\n",
    )
    .unwrap();
    let out = lxmetrics_tests::lxmetrics(state.path())
        .args(["daemon", "--https-address", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("lxmetrics: ") && last.contains("server.ca"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}
