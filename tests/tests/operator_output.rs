//! What the daemon tells an operator: where its configuration came from at start, what a
//! SIGHUP did not apply, and a failing collector once (not on every refresh) and its
//! recovery once.

use std::time::{Duration, Instant};

use lxmetrics_tests::{fixture_state_dir, Daemon};

/// Waits up to 10 s for a stderr line containing `needle`; returns every line read.
fn wait_for_stderr(daemon: &Daemon, seen: &mut Vec<String>, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.iter().any(|l| l.contains(needle)) {
        assert!(
            Instant::now() < deadline,
            "no `{needle}` in the daemon's log:\n{}",
            seen.join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
        seen.extend(daemon.stderr_lines());
    }
}

#[test]
fn start_up_says_where_everything_came_from() {
    let state = fixture_state_dir("v2", "[core]\nmetrics_address = \"127.0.0.1:0\"\n");
    let config = state.path().join("config.toml");
    let dir = state.path().to_owned();
    let daemon = Daemon::start_in(state, &[]);
    let out = daemon.startup_output.join("\n");
    let expect = |needle: String| assert!(out.contains(&needle), "`{needle}` not in:\n{out}");
    expect(format!("lxmetrics configuration: {}", config.display()));
    expect(format!("lxmetrics state directory: {}", dir.display()));
    expect("lxmetrics instances: 5 running under".to_owned());
    expect("(lxc: 3, docker: 1, podman: 0, systemd-nspawn: 0, libvirt: 1)".to_owned());
    expect("(core.https_address, from command line)".to_owned());
    expect(format!("(core.metrics_address, from {})", config.display()));
}

#[tokio::test]
async fn sighup_names_the_changes_that_wait_for_a_restart() {
    let state = fixture_state_dir("v2", "");
    let config = state.path().join("config.toml");
    let daemon = Daemon::start_in(state, &[]);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[collectors]\ndisable = [\"disk\"]\n[metrics]\ncache_ttl = \"3s\"\n");
    std::fs::write(&config, text).unwrap();
    daemon.signal(rustix::process::Signal::HUP);
    let mut seen = Vec::new();
    wait_for_stderr(
        &daemon,
        &mut seen,
        "collectors.disable, metrics.cache_ttl changed; these apply at the next start",
    );
}

#[tokio::test]
async fn a_failing_collector_is_logged_once_and_its_recovery_once() {
    let textfiles = tempfile::tempdir().unwrap();
    let directory = textfiles.path().join("not-yet");
    let state = fixture_state_dir(
        "v2",
        &format!(
            "[metrics]\ncache_ttl = \"0s\"\n[collectors]\nenable = [\"textfile\"]\n\
             [collectors.textfile]\ndirectory = \"{}\"\n",
            directory.display()
        ),
    );
    let daemon = Daemon::start_in(state, &[]);
    let mut seen = daemon.stderr_lines();
    assert_eq!(
        seen.iter()
            .filter(|l| l.contains("does not exist (yet)"))
            .count(),
        1,
        "said once at start: {seen:?}"
    );
    for _ in 0..4 {
        let (status, _) = daemon.get("/1.0/metrics").await;
        assert_eq!(status, 200);
    }
    std::thread::sleep(Duration::from_millis(200));
    seen.extend(daemon.stderr_lines());
    let failures = seen
        .iter()
        .filter(|l| l.contains("collector failed"))
        .count();
    assert_eq!(
        failures, 1,
        "one line for four failing refreshes: {seen:#?}"
    );

    std::fs::create_dir(&directory).unwrap();
    let (status, _) = daemon.get("/1.0/metrics").await;
    assert_eq!(status, 200);
    wait_for_stderr(&daemon, &mut seen, "collector recovered");
}

#[tokio::test]
async fn a_refused_certificate_is_logged_at_debug_with_the_reason() {
    let daemon = Daemon::start_in(
        fixture_state_dir("v2", ""),
        &["--log-level", "info,lxmetrics_server=debug"],
    );
    let expired = lxmetrics_tests::ClientCert::generate_valid("old.local", -3, -1);
    daemon.trust_with(&expired, "old", &["--type=metrics", "--name", "old-cert"]);
    let stranger = lxmetrics_tests::ClientCert::generate("stranger.local");
    for cert in [&expired, &stranger] {
        assert_eq!(daemon.get_as(Some(cert), "/1.0/metrics").await.0, 403);
    }
    let mut seen = Vec::new();
    wait_for_stderr(&daemon, &mut seen, "outside its validity period");
    wait_for_stderr(&daemon, &mut seen, "certificate not trusted");
    assert!(
        seen.iter().any(|l| l.contains("old-cert")),
        "the log names the trusted certificate: {seen:#?}"
    );
}
