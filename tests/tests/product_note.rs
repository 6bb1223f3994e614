//! The product note's own steps: make the metrics certificate with the exact `openssl`
//! command, trust it with `lxmetrics trust add metrics.crt --type=metrics`, scrape with
//! `curl --cert metrics.crt --key metrics.key --cacert server.crt`.

use std::process::Command;

use lxmetrics_tests::{require_program, Daemon};

#[test]
fn openssl_certificate_trusted_and_scraped_with_curl() {
    let openssl = require_program("openssl", "openssl");
    let curl = require_program("curl", "curl");
    let daemon = Daemon::start(&[]);
    let dir = daemon.state_dir.path();
    let status = Command::new(openssl)
        .current_dir(dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:secp384r1",
            "-sha384",
            "-keyout",
            "metrics.key",
            "-nodes",
            "-out",
            "metrics.crt",
            "-days",
            "3650",
            "-subj",
            "/CN=metrics.local",
        ])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    let curl_metrics = || {
        Command::new(&curl)
            .current_dir(dir)
            .args([
                "--silent",
                "--show-error",
                "--cert",
                "metrics.crt",
                "--key",
                "metrics.key",
            ])
            .args(["--cacert", "server.crt", "--write-out", "\n%{http_code}"])
            .arg(format!("{}/1.0/metrics", daemon.url))
            .output()
            .unwrap()
    };
    let before = String::from_utf8(curl_metrics().stdout).unwrap();
    assert!(before.ends_with("\n403"), "not trusted yet: {before}");

    let added = daemon.cli(&[
        "trust",
        "add",
        dir.join("metrics.crt").to_str().unwrap(),
        "--type=metrics",
    ]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );

    let out = curl_metrics();
    let body = String::from_utf8(out.stdout).unwrap();
    assert!(
        body.ends_with("\n200"),
        "{body}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(body.contains("# TYPE lxd_uptime_seconds counter"));

    // The metrics certificate reaches nothing else.
    let out = Command::new(&curl)
        .current_dir(dir)
        .args([
            "--silent",
            "--cert",
            "metrics.crt",
            "--key",
            "metrics.key",
            "--cacert",
            "server.crt",
        ])
        .args(["--output", "/dev/null", "--write-out", "%{http_code}"])
        .arg(format!("{}/1.0/certificates", daemon.url))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "403");
}
