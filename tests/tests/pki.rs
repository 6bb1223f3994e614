//! PKI mode: with `core.trust_ca_certificates = true` and `server.ca` in the state
//! directory, certificates signed by that CA are trusted as `client` without `trust add`;
//! `ca.crl` revokes them; expired ones are refused; a self-signed stranger still is not.

use base64::Engine;
use lxmetrics_tests::{state_with_config, workspace_root, ClientCert, Daemon};
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

/// A test CA: its certificate PEM and the issuer that signs with it.
fn test_ca() -> (String, Issuer<'static, KeyPair>) {
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
    (ca_cert.pem(), Issuer::new(ca_params, ca_key))
}

/// A revocation list of `serials`, PEM, numbered `number`.
fn crl_pem(issuer: &Issuer<'_, KeyPair>, number: u64, serials: &[u64]) -> String {
    CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(this_year(), 1, 1),
        next_update: rcgen::date_time_ymd(this_year() + 1, 1, 1),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|serial| RevokedCertParams {
                serial_number: SerialNumber::from(*serial),
                revocation_time: rcgen::date_time_ymd(this_year(), 1, 1),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(issuer)
    .unwrap()
    .pem()
    .unwrap()
}

/// A state directory in PKI mode with this CA and list, reading the v2 fixture.
fn pki_state(ca_pem: &str, crl: &str) -> tempfile::TempDir {
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("server.ca"), ca_pem).unwrap();
    std::fs::write(state.path().join("ca.crl"), crl).unwrap();
    let fixture = workspace_root().join("plugins/tests/fixtures/v2");
    std::fs::write(
        state.path().join("config.toml"),
        format!(
            "[core]\ntrust_ca_certificates = true\n[host]\ncgroup_root = \"{}/cgroup\"\n",
            fixture.display()
        ),
    )
    .unwrap();
    state
}

#[tokio::test]
async fn ca_signed_certificates_are_trusted_revoked_ones_are_not() {
    let (ca_pem, issuer) = test_ca();
    let good = signed(&issuer, "good.local", 10, (-1, 5));
    let revoked = signed(&issuer, "revoked.local", 11, (-1, 5));
    let expired = signed(&issuer, "expired.local", 12, (-3, -1));
    let state = pki_state(&ca_pem, &crl_pem(&issuer, 1, &[11]));
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

/// The review found that a new `ca.crl` needed a restart, and that a CA-signed
/// certificate that had added itself to the trust store kept its access after being
/// revoked, even across a restart. As in LXD, the list now applies to trust-store
/// certificates too, and is re-read when it changes and on SIGHUP.
#[tokio::test]
async fn a_new_revocation_list_applies_without_restart_and_to_the_trust_store() {
    let (ca_pem, issuer) = test_ca();
    let insider = signed(&issuer, "insider.local", 20, (-1, 5));
    let other = signed(&issuer, "other.local", 21, (-1, 5));
    let state = pki_state(&ca_pem, &crl_pem(&issuer, 1, &[]));
    let daemon = Daemon::start_in(state, &[]);
    let status = |cert: &ClientCert| {
        let daemon = &daemon;
        let cert = cert.clone();
        async move { daemon.get_as(Some(&cert), "/1.0/metrics").await.0 }
    };
    assert_eq!(status(&insider).await, 200);

    // The insider adds itself to the trust store, as a CA-trusted client may.
    let der = pem::parse(&insider.cert_pem).unwrap();
    let post = daemon
        .client_with(Some(&insider))
        .post(format!("{}/1.0/certificates", daemon.url))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"type": "client", "name": "insider",
                "certificate": base64::engine::general_purpose::STANDARD.encode(der.contents())})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);

    // Revoked by a new list, noticed without a signal.
    let crl_path = daemon.state_dir.path().join("ca.crl");
    std::fs::write(&crl_path, crl_pem(&issuer, 2, &[20])).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while status(&insider).await != 403 {
        assert!(
            std::time::Instant::now() < deadline,
            "a revoked certificate in the trust store is still trusted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(status(&other).await, 200, "only the revoked one");

    // SIGHUP re-reads it at once too.
    std::fs::write(&crl_path, crl_pem(&issuer, 3, &[20, 21])).unwrap();
    daemon.signal(rustix::process::Signal::HUP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while status(&other).await != 403 {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not revoke"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // And across a restart.
    let state = daemon.kill9();
    let daemon = Daemon::start_in(state, &[]);
    let client = daemon.client_with(Some(&insider));
    let resp = client
        .get(format!("{}/1.0/metrics", daemon.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[test]
fn pki_mode_without_a_ca_file_fails_with_one_line() {
    let state = state_with_config("[core]\ntrust_ca_certificates = true\n");
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
