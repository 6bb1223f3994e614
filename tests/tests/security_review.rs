//! Regression tests for the hostile security review (docs/security.md, "Threat model"):
//! each test is one finding, run against the real binary over real mutual TLS. The
//! daemon reads the v2 fixture tree (an LXD host), whose instances are in projects
//! `default` and `prod`.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use base64::Engine;
use lxmetrics_tests::{fixture_state_dir, projects_in, ClientCert, Daemon};

fn der_base64(cert: &ClientCert) -> String {
    let der = pem::parse(&cert.cert_pem).unwrap();
    base64::engine::general_purpose::STANDARD.encode(der.contents())
}

/// HIGH: a restricted client certificate was a full admin (read every project, mint an
/// unrestricted client). Now: its projects only on every route, and no trust store.
#[tokio::test]
async fn a_restricted_client_certificate_is_not_an_admin() {
    let daemon = Daemon::start_in(fixture_state_dir("v2", ""), &[]);
    let tenant = ClientCert::generate("tenant.local");
    daemon.trust_with(
        &tenant,
        "tenant",
        &["--type=client", "--restricted", "--projects", "prod"],
    );
    let client = daemon.client_with(Some(&tenant));
    let get = |path: &str| client.get(format!("{}{path}", daemon.url)).send();

    // /1.0: trusted, a client certificate.
    let info: serde_json::Value = get("/1.0").await.unwrap().json().await.unwrap();
    assert_eq!(info["metadata"]["auth"], "trusted");
    assert_eq!(info["metadata"]["auth_certificate_type"], "client");

    // Metrics: its project only, and none of the daemon's internal series.
    let resp = get("/1.0/metrics").await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    assert_eq!(projects_in(&body), ["prod"], "{body}");
    assert!(body.contains("lxd_procs_total{"), "{body}");
    assert!(!body.contains("lxd_metrics_"), "{body}");
    assert_eq!(
        get("/1.0/metrics?project=default").await.unwrap().status(),
        403,
        "another project's metrics"
    );
    assert_eq!(
        get("/1.0/metrics?project=prod").await.unwrap().status(),
        200
    );

    // Instances: its project's only.
    let instances: serde_json::Value = get("/1.0/instances").await.unwrap().json().await.unwrap();
    let listed = instances["metadata"].as_array().unwrap();
    assert!(!listed.is_empty());
    assert!(listed.iter().all(|i| i["project"] == "prod"), "{instances}");

    // The trust store: neither read nor changed.
    assert_eq!(get("/1.0/certificates").await.unwrap().status(), 403);
    let own = pem::parse(&tenant.cert_pem).unwrap();
    let fingerprint = lxmetrics_server_fingerprint(own.contents());
    assert_eq!(
        get(&format!("/1.0/certificates/{fingerprint}"))
            .await
            .unwrap()
            .status(),
        403
    );
    let minted = ClientCert::generate("minted.local");
    let post = client
        .post(format!("{}/1.0/certificates", daemon.url))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"type": "client", "name": "x", "certificate": der_base64(&minted)})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        post.status(),
        403,
        "a restricted client may not add certificates"
    );
    let delete = client
        .delete(format!(
            "{}/1.0/certificates/{}",
            daemon.url,
            lxmetrics_server_fingerprint(
                pem::parse(&daemon.client_cert.cert_pem).unwrap().contents()
            )
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 403, "nor remove them");
    // The certificate it tried to add is not trusted.
    assert_eq!(daemon.get_as(Some(&minted), "/1.0/metrics").await.0, 403);
    // The unrestricted client still administers.
    let admin = daemon.client_with(Some(&daemon.client_cert));
    let listed = admin
        .get(format!("{}/1.0/certificates", daemon.url))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
}

/// SHA-256 of DER, lower-case hex: the trust store's fingerprint.
fn lxmetrics_server_fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// LOW 6a: a project named with a comma through the API is one project, not two.
#[tokio::test]
async fn a_comma_in_a_project_name_does_not_open_two_projects() {
    let daemon = Daemon::start_in(fixture_state_dir("v2", ""), &[]);
    let admin = daemon.client_with(Some(&daemon.client_cert));
    let sneaky = ClientCert::generate("sneaky.local");
    let post = admin
        .post(format!("{}/1.0/certificates", daemon.url))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"type": "metrics", "certificate": der_base64(&sneaky),
                "restricted": true, "projects": ["default,prod"]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200, "{}", post.text().await.unwrap());
    let (status, body) = daemon.get_as(Some(&sneaky), "/1.0/metrics").await;
    assert_eq!(status, 200);
    assert!(projects_in(&body).is_empty(), "{body}");

    // Names LXD refuses are refused, with the reason.
    let bad = admin
        .post(format!("{}/1.0/certificates", daemon.url))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"type": "metrics",
                "certificate": der_base64(&ClientCert::generate("bad.local")),
                "restricted": true, "projects": ["a_b"]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("underscores"));
}

/// LOW 10: HEAD over HTTP/2 sent a body (curl: PROTOCOL_ERROR); POST without a JSON
/// content type answered 405.
#[tokio::test]
async fn head_has_no_body_on_http2_and_post_needs_json() {
    let daemon = Daemon::start_in(fixture_state_dir("v2", ""), &[]);
    let admin = daemon.client_with(Some(&daemon.client_cert));
    for path in ["/1.0", "/1.0/metrics", "/no/such/path"] {
        let resp = admin
            .head(format!("{}{path}", daemon.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("HEAD {path}: {e:?}"));
        assert_eq!(resp.version(), reqwest::Version::HTTP_2, "ALPN picks h2");
        let status = resp.status().as_u16();
        assert_eq!(status, if path == "/no/such/path" { 404 } else { 200 });
        assert!(resp.bytes().await.unwrap().is_empty(), "HEAD {path}");
    }
    let resp = admin
        .post(format!("{}/1.0/certificates", daemon.url))
        .body("type=client")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    assert!(resp.text().await.unwrap().contains("application/json"));
    let resp = admin
        .post(format!("{}/1.0/certificates", daemon.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

/// LOW 6b: `trust remove` that cannot reach the daemon writes the database directly; the
/// running daemon must stop trusting the certificate, not keep it until a restart.
#[tokio::test]
async fn a_removal_made_without_the_daemon_takes_effect() {
    let daemon = Daemon::start_in(fixture_state_dir("v2", ""), &[]);
    let metrics = ClientCert::generate("metrics.local");
    daemon.trust_with(&metrics, "metrics", &["--type=metrics"]);
    let client = daemon.client_with(Some(&metrics));
    let url = format!("{}/1.0/metrics", daemon.url);
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);

    // Hide the socket so the CLI finds no daemon and edits trust.db itself.
    let socket = daemon.state_dir.path().join("unix.socket");
    let hidden = daemon.state_dir.path().join("unix.socket.hidden");
    std::fs::rename(&socket, &hidden).unwrap();
    let fingerprint =
        lxmetrics_server_fingerprint(pem::parse(&metrics.cert_pem).unwrap().contents());
    let out = daemon.cli(&["trust", "remove", &fingerprint]);
    std::fs::rename(&hidden, &socket).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = client.get(&url).send().await.unwrap().status();
        if status == 403 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still trusted 10 s after its removal"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// LOW 7: a state directory others can write is refused before anything is read from it;
/// the socket is 0660 from the start and nothing at its path is followed.
#[test]
fn the_state_directory_must_be_private() {
    let state = tempfile::tempdir().unwrap();
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = lxmetrics_tests::lxmetrics(state.path())
        .args(["daemon", "--https-address", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("writable by group or others") && stderr.contains("chmod go-w"),
        "{stderr}"
    );
    assert!(!state.path().join("server.crt").exists(), "nothing written");
    let out = lxmetrics_tests::lxmetrics(state.path())
        .args(["trust", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the CLI refuses it too");
    assert!(!state.path().join("trust.db").exists());

    // A symlink planted at the socket's path is neither followed nor removed.
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let target = state.path().join("target");
    std::fs::write(&target, "precious").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&target, state.path().join("unix.socket")).unwrap();
    let out = lxmetrics_tests::lxmetrics(state.path())
        .args(["daemon", "--https-address", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a socket"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
}

#[test]
fn the_admin_socket_is_created_0660() {
    let daemon = Daemon::start(&[]);
    let meta = std::fs::symlink_metadata(daemon.state_dir.path().join("unix.socket")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
}
