//! The authorization matrix over real mTLS: {client, metrics, restricted metrics,
//! untrusted, no certificate, expired} x {/1.0, /1.0/metrics, /1.0/instances,
//! /1.0/certificates} x {core.https_address, core.metrics_address, unix socket}. Each cell
//! asserts the status code and, for metrics, which projects appear. The daemon reads the
//! v2 fixture tree, whose instances are in projects `default` and `prod`.

use lxmetrics_tests::{fixture_state_dir, projects_in, ClientCert, Daemon};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Client,
    Metrics,
    Restricted,
    Untrusted,
    NoCert,
    Expired,
}

#[tokio::test]
async fn authorization_matrix() {
    let daemon = Daemon::start_in(
        fixture_state_dir("v2", ""),
        &["--metrics-address", "127.0.0.1:0"],
    );
    let metrics = ClientCert::generate("metrics.local");
    let restricted = ClientCert::generate("restricted.local");
    let untrusted = ClientCert::generate("stranger.local");
    let expired = ClientCert::generate_valid("expired.local", -3, -1);
    daemon.trust_with(&metrics, "metrics", &["--type=metrics"]);
    daemon.trust_with(
        &restricted,
        "restricted",
        &["--type=metrics", "--restricted", "--projects", "prod"],
    );
    daemon.trust_with(&expired, "expired", &["--type=client"]);

    let cert_of = |who: Who| match who {
        Who::Client => Some(daemon.client_cert.clone()),
        Who::Metrics => Some(metrics.clone()),
        Who::Restricted => Some(restricted.clone()),
        Who::Untrusted => Some(untrusted.clone()),
        Who::Expired => Some(expired.clone()),
        Who::NoCert => None,
    };
    let metrics_url = daemon.metrics_url.clone().expect("metrics listener");
    let everyone = [
        Who::Client,
        Who::Metrics,
        Who::Restricted,
        Who::Untrusted,
        Who::NoCert,
        Who::Expired,
    ];
    let mut checked = 0;
    for who in everyone {
        let client = daemon.client_with(cert_of(who).as_ref());
        let trusted = matches!(who, Who::Client | Who::Metrics | Who::Restricted);
        for (listener, base) in [("https", &daemon.url), ("metrics", &metrics_url)] {
            let get = |path: &str| client.get(format!("{base}{path}")).send();

            // GET /1.0: always answers; auth says whether the certificate is trusted.
            let info: serde_json::Value = get("/1.0").await.unwrap().json().await.unwrap();
            let auth = if trusted { "trusted" } else { "untrusted" };
            assert_eq!(info["metadata"]["auth"], auth, "{who:?} {listener} /1.0");
            if who == Who::Metrics {
                assert_eq!(info["metadata"]["auth_certificate_type"], "metrics");
            }

            // GET /1.0/metrics
            let resp = get("/1.0/metrics").await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            match who {
                Who::Client | Who::Metrics => {
                    assert_eq!(status, 200, "{who:?} {listener}");
                    assert_eq!(
                        projects_in(&body),
                        ["default", "prod"],
                        "{who:?} {listener}"
                    );
                }
                Who::Restricted => {
                    assert_eq!(status, 200);
                    assert_eq!(projects_in(&body), ["prod"], "{listener}");
                    assert!(!body.contains("project=\"default\""), "{body}");
                }
                _ => assert_eq!(status, 403, "{who:?} {listener} /1.0/metrics"),
            }

            // The full API: client certificates on the full listener only.
            for path in ["/1.0/instances", "/1.0/certificates"] {
                let status = get(path).await.unwrap().status().as_u16();
                let expected = match (listener, who) {
                    ("metrics", _) => 404,
                    (_, Who::Client) => 200,
                    _ => 403,
                };
                assert_eq!(status, expected, "{who:?} {listener} {path}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, everyone.len() * 2 * 2);

    // The metrics-only listener has no landing page either.
    let anonymous = daemon.client_with(None);
    let status = anonymous
        .get(format!("{metrics_url}/"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);

    // A restricted certificate asking for another project is refused, as LXD refuses it.
    let client = daemon.client_with(Some(&restricted));
    let resp = client
        .get(format!("{}/1.0/metrics?project=default", daemon.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(projects_in(&resp.text().await.unwrap()).is_empty());

    // The unix socket is trusted as client for everything.
    for path in [
        "/1.0",
        "/1.0/metrics",
        "/1.0/instances",
        "/1.0/certificates",
    ] {
        let out = daemon.cli(&["query", path]);
        assert!(
            out.status.success(),
            "unix {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let instances: serde_json::Value =
        serde_json::from_slice(&daemon.cli(&["query", "/1.0/instances"]).stdout).unwrap();
    assert_eq!(instances["metadata"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn metrics_without_authentication_when_configured() {
    let daemon = Daemon::start_in(
        fixture_state_dir("v2", "[core]\nmetrics_authentication = false\n"),
        &[],
    );
    let anonymous = daemon.client_with(None);
    let resp = anonymous
        .get(format!("{}/1.0/metrics", daemon.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        projects_in(&resp.text().await.unwrap()),
        ["default", "prod"]
    );
    // Only metrics opened up: the rest of the API still refuses.
    let resp = anonymous
        .get(format!("{}/1.0/certificates", daemon.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn trust_changes_apply_to_the_next_request_without_restart() {
    let daemon = Daemon::start_in(fixture_state_dir("v2", ""), &[]);
    let newcomer = ClientCert::generate("late.local");
    let client = daemon.client_with(Some(&newcomer));
    let url = format!("{}/1.0/metrics", daemon.url);
    assert_eq!(client.get(&url).send().await.unwrap().status(), 403);
    daemon.trust_with(&newcomer, "late", &["--type=metrics"]);
    // Same client, same connection pool: allowed now.
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    let list = daemon.cli(&["trust", "list", "--format=json"]);
    let parsed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let fingerprint = parsed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "metrics")
        .unwrap()["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = daemon.cli(&["trust", "remove", &fingerprint]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(client.get(&url).send().await.unwrap().status(), 403);
}
