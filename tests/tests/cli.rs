//! The command line: bad input exits non-zero with one clear line, never a panic.

use std::process::Output;

use lxmetrics_tests::lxmetrics;

fn assert_one_line_error(output: &Output, must_contain: &[&str]) {
    assert!(
        !output.status.success(),
        "expected failure, got {:?}",
        output.status
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got:\n{stderr}"
    );
    assert!(lines[0].starts_with("lxmetrics: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for needle in must_contain {
        assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
    }
}

#[test]
fn unknown_config_key_names_key_and_file() {
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("config.toml");
    std::fs::write(&config, "[metrics]\ncache_tll = \"8s\"\n").unwrap();
    let out = lxmetrics(state.path()).arg("daemon").output().unwrap();
    assert_one_line_error(
        &out,
        &[
            "metrics.cache_tll",
            &config.display().to_string(),
            "unknown key",
        ],
    );
}

#[test]
fn bad_value_names_key_and_file() {
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("custom.toml");
    std::fs::write(&config, "[core]\nhttps_address = \"nowhere\"\n").unwrap();
    let out = lxmetrics(state.path())
        .arg("--config")
        .arg(&config)
        .arg("daemon")
        .output()
        .unwrap();
    assert_one_line_error(&out, &["core.https_address", "custom.toml"]);
}

#[test]
fn bad_environment_value_names_the_variable() {
    let state = tempfile::tempdir().unwrap();
    let out = lxmetrics(state.path())
        .env("LXMETRICS_METRICS__COLLECTOR_TIMEOUT", "forever")
        .arg("daemon")
        .output()
        .unwrap();
    assert_one_line_error(&out, &["LXMETRICS_METRICS__COLLECTOR_TIMEOUT"]);
}

#[test]
fn missing_explicit_config_file_is_an_error() {
    let state = tempfile::tempdir().unwrap();
    let out = lxmetrics(state.path())
        .args(["--config", "/nonexistent/lxmetrics.toml", "daemon"])
        .output()
        .unwrap();
    assert_one_line_error(&out, &["/nonexistent/lxmetrics.toml"]);
}

#[test]
fn unknown_collector_is_an_error() {
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        state.path().join("config.toml"),
        "[collectors]\ndisable = [\"nope\"]\n",
    )
    .unwrap();
    let out = lxmetrics(state.path())
        .args(["daemon", "--https-address", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_one_line_error(&out, &["collectors.disable", "nope"]);
}

#[test]
fn trust_add_refuses_keys_unknown_types_and_duplicates_in_one_line() {
    let state = tempfile::tempdir().unwrap();
    let cert = lxmetrics_tests::ClientCert::generate("x");
    let crt = cert.write(state.path(), "x");
    let key = state.path().join("x.key");
    let out = lxmetrics(state.path())
        .args(["trust", "add"])
        .arg(&key)
        .output()
        .unwrap();
    assert_one_line_error(&out, &["x.key", "private key"]);
    let out = lxmetrics(state.path())
        .args(["trust", "add"])
        .arg(&crt)
        .arg("--type=admin")
        .output()
        .unwrap();
    assert_one_line_error(&out, &["--type", "admin"]);
    let out = lxmetrics(state.path())
        .args(["trust", "add"])
        .arg(state.path().join("missing.crt"))
        .output()
        .unwrap();
    assert_one_line_error(&out, &["missing.crt"]);
    let ok = lxmetrics(state.path())
        .args(["trust", "add"])
        .arg(&crt)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let out = lxmetrics(state.path())
        .args(["trust", "add"])
        .arg(&crt)
        .output()
        .unwrap();
    assert_one_line_error(&out, &["already trusted"]);
    let list = lxmetrics(state.path())
        .args(["trust", "list", "--format=json"])
        .output()
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(parsed.as_array().unwrap().len(), 1);
    assert_eq!(parsed[0]["type"], "client");
}

#[test]
fn collectors_command_lists_a_table() {
    let state = tempfile::tempdir().unwrap();
    let out = lxmetrics(state.path()).arg("collectors").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("NAME"), "{stdout}");
    assert!(stdout.lines().next().unwrap().contains("ENABLED"));
    for builtin in [
        "cpu",
        "disk",
        "filesystem",
        "memory",
        "network",
        "processes",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(builtin))
            .unwrap_or_else(|| panic!("{builtin} not listed:\n{stdout}"));
        assert_eq!(row.split_whitespace().nth(1), Some("yes"), "{row}");
    }
}

#[test]
fn collectors_disable_is_reflected_in_the_listing() {
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        state.path().join("config.toml"),
        "[collectors]\ndisable = [\"disk\"]\n",
    )
    .unwrap();
    let out = lxmetrics(state.path()).arg("collectors").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = stdout.lines().find(|l| l.starts_with("disk ")).unwrap();
    assert_eq!(row.split_whitespace().nth(1), Some("no"), "{row}");
}
