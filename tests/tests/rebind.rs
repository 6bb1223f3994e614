//! Changing `core.https_address` or `core.metrics_address` in the configuration and
//! sending SIGHUP re-binds the listeners without a restart; a broken configuration on
//! SIGHUP is reported and the daemon keeps serving where it was.

use std::time::{Duration, Instant};

use lxmetrics_tests::{free_port, Daemon};

async fn status(client: &reqwest::Client, url: &str) -> Option<u16> {
    client
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

async fn wait_for(client: &reqwest::Client, url: &str, want: Option<u16>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = status(client, url).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url}: wanted {want:?}, got {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sighup_rebinds_changed_addresses() {
    let (first, second, metrics) = (free_port(), free_port(), free_port());
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[core]\nhttps_address = \"127.0.0.1:{first}\"\n"),
    )
    .unwrap();
    let daemon = Daemon::start_raw(state, &[]);
    assert_eq!(daemon.url, format!("https://127.0.0.1:{first}"));
    let client = daemon.client();
    assert_eq!(
        status(&client, &format!("{}/1.0", daemon.url)).await,
        Some(200)
    );

    std::fs::write(
        &config,
        format!("[core]\nhttps_address = \"[::1]:{second}\"\nmetrics_address = \"127.0.0.1:{metrics}\"\n"),
    )
    .unwrap();
    daemon.signal(rustix::process::Signal::HUP);

    // The server certificate covers ::1, so the new address verifies too.
    wait_for(
        &client,
        &format!("https://[::1]:{second}/1.0/certificates"),
        Some(200),
    )
    .await;
    wait_for(
        &client,
        &format!("https://127.0.0.1:{metrics}/1.0/metrics"),
        Some(200),
    )
    .await;
    assert_eq!(
        status(
            &client,
            &format!("https://127.0.0.1:{metrics}/1.0/certificates")
        )
        .await,
        Some(404)
    );
    wait_for(&client, &format!("https://127.0.0.1:{first}/1.0"), None).await;

    // A broken configuration is refused; the daemon keeps serving.
    std::fs::write(&config, "[core]\nhttps_address = \"nowhere\"\n").unwrap();
    daemon.signal(rustix::process::Signal::HUP);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        status(&client, &format!("https://[::1]:{second}/1.0")).await,
        Some(200)
    );
    assert!(
        daemon
            .stderr_lines()
            .iter()
            .any(|l| l.contains("not reloaded") && l.contains("core.https_address")),
        "the refusal is logged"
    );
}
