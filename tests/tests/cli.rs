//! The command line: bad input exits non-zero with one clear line, never a panic.

use std::process::Output;

use lxmetrics_tests::lxmetrics;
use lxmetrics_tests::state_with_config;

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
    let state = state_with_config("[collectors]\ndisable = [\"nope\"]\n");
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

/// What `lxmetrics collectors` prints with no configuration.
fn collectors_listing() -> String {
    let state = tempfile::tempdir().unwrap();
    let out = lxmetrics(state.path()).arg("collectors").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn collectors_command_lists_a_table() {
    let stdout = collectors_listing();
    assert!(stdout.starts_with("NAME"), "{stdout}");
    assert!(stdout.lines().next().unwrap().contains("ENABLED"));
    for builtin in [
        "cpu",
        "disk",
        "filesystem",
        "memory",
        "network",
        "pressure",
        "processes",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(builtin))
            .unwrap_or_else(|| panic!("{builtin} not listed:\n{stdout}"));
        assert_eq!(row.split_whitespace().nth(1), Some("yes"), "{row}");
    }
}

/// Every setting a linked collector registered is listed under it with its default, and
/// docs/configuration.md documents it: the operator sees `collectors.filesystem.timeout`
/// without reading the source.
#[test]
fn collectors_command_lists_each_collectors_settings_and_the_docs_have_them() {
    use lxmetrics_plugins as _;
    let settings: Vec<_> = lxmetrics_core::registry::registered()
        .into_iter()
        .flat_map(lxmetrics_core::registry::settings_of)
        .collect();
    let keys: Vec<&str> = settings.iter().map(|s| s.key.as_str()).collect();
    for expected in [
        "collectors.filesystem.timeout",
        "collectors.textfile.directory",
        "collectors.textfile.max_instance_bytes",
        "collectors.exec.commands",
        "collectors.exec.concurrency",
    ] {
        assert!(
            keys.contains(&expected),
            "{expected} not registered: {keys:?}"
        );
    }
    let stdout = collectors_listing();
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    for setting in &settings {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(setting.key.as_str()))
            .unwrap_or_else(|| panic!("{} not listed:\n{stdout}", setting.key));
        if let Some(default) = &setting.default {
            assert!(line.contains(&format!("= {default}")), "{line}");
        }
        assert!(line.contains(setting.help), "{line}");
        assert!(
            docs.contains(&format!("`{}`", setting.key)),
            "docs/configuration.md does not document `{}`",
            setting.key
        );
    }
    let timeout = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("collectors.filesystem.timeout"))
        .unwrap();
    assert!(timeout.contains("= \"3s\""), "{timeout}");
}

#[test]
fn collectors_disable_is_reflected_in_the_listing() {
    let state = state_with_config("[collectors]\ndisable = [\"disk\"]\n");
    let out = lxmetrics(state.path()).arg("collectors").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = stdout.lines().find(|l| l.starts_with("disk ")).unwrap();
    assert_eq!(row.split_whitespace().nth(1), Some("no"), "{row}");
}

#[test]
fn a_log_level_typo_is_an_error_not_silence() {
    let state = tempfile::tempdir().unwrap();
    for level in ["debgu", "info,verbose"] {
        let out = lxmetrics(state.path())
            .args(["--log-level", level, "collectors"])
            .output()
            .unwrap();
        assert_one_line_error(&out, &["--log-level", "is not a log level", "debug"]);
    }
    // A malformed directive: its reason once, in one line.
    let out = lxmetrics(state.path())
        .args(["--log-level", "foo=bar=baz", "collectors"])
        .output()
        .unwrap();
    assert_one_line_error(&out, &["--log-level", "foo=bar=baz"]);
    // Levels and directives still work.
    for level in ["warn", "info,lxmetrics_server=debug", "OFF"] {
        let out = lxmetrics(state.path())
            .args(["--log-level", level, "collectors"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{level}: {out:?}");
    }
}

#[test]
fn an_environment_variable_that_sets_nothing_is_named() {
    let state = tempfile::tempdir().unwrap();
    let out = lxmetrics(state.path())
        .env("LXMETRICS_CORE_HTTPS_ADDRESS", "127.0.0.1:1")
        .arg("collectors")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("LXMETRICS_CORE_HTTPS_ADDRESS")
            && stderr.contains("did you mean LXMETRICS_CORE__HTTPS_ADDRESS"),
        "{stderr}"
    );
    assert!(stderr.contains("WARN"), "{stderr}");
}

/// Runs `lxmetrics ARGS` on `state`.
fn run(state: &std::path::Path, args: &[&str]) -> Output {
    lxmetrics(state).args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_trust_cli_never_creates_a_state_directory_and_says_which_store_it_used() {
    let parent = tempfile::tempdir().unwrap();
    let typo = parent.path().join("lxmetircs");
    for args in [&["trust", "list"][..], &["trust", "remove", "abc"][..]] {
        let out = run(&typo, args);
        assert_one_line_error(&out, &["does not exist", "--state-dir"]);
    }
    assert!(!typo.exists(), "the CLI created {}", typo.display());

    let state = tempfile::tempdir().unwrap();
    let out = run(state.path(), &["trust", "list"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains(&state.path().join("trust.db").display().to_string()),
        "{}",
        stderr(&out)
    );
}

#[test]
fn trust_add_warns_about_an_expired_certificate_and_cleans_project_names() {
    let state = tempfile::tempdir().unwrap();
    let expired = lxmetrics_tests::ClientCert::generate_valid("old", -3, -1);
    let path = expired.write(state.path(), "old");
    let out = run(state.path(), &["trust", "add", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("not valid now"), "{}", stderr(&out));

    let cert = lxmetrics_tests::ClientCert::generate("spaced");
    let path = cert.write(state.path(), "spaced");
    let path = path.to_str().unwrap();
    let out = run(
        state.path(),
        &[
            "trust",
            "add",
            path,
            "--type=metrics",
            "--restricted",
            "--projects",
            " a , b ",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let list = run(state.path(), &["trust", "list", "--format=json"]);
    let parsed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let spaced = parsed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "metrics")
        .unwrap();
    assert_eq!(spaced["projects"], serde_json::json!(["a", "b"]));

    let other = lxmetrics_tests::ClientCert::generate("under");
    let path = other.write(state.path(), "under");
    let out = run(
        state.path(),
        &[
            "trust",
            "add",
            path.to_str().unwrap(),
            "--type=metrics",
            "--restricted",
            "--projects",
            "a_b",
        ],
    );
    assert_one_line_error(&out, &["a_b", "underscores"]);
}

#[test]
fn trust_remove_takes_a_fingerprint_or_a_name_and_says_what_it_wants() {
    let state = tempfile::tempdir().unwrap();
    let cert = lxmetrics_tests::ClientCert::generate("prom");
    let path = cert.write(state.path(), "prom");
    let out = run(
        state.path(),
        &["trust", "add", path.to_str().unwrap(), "--name", "prom-r"],
    );
    assert!(out.status.success(), "{out:?}");
    let out = run(state.path(), &["trust", "remove", ""]);
    assert_one_line_error(&out, &["neither a fingerprint", "name"]);
    let out = run(state.path(), &["trust", "remove", "prom r"]);
    assert_one_line_error(&out, &["neither a fingerprint"]);
    let out = run(state.path(), &["trust", "remove", "promr"]);
    assert_one_line_error(&out, &["\"promr\""]);
    let out = run(state.path(), &["trust", "remove", "prom-r"]);
    assert!(out.status.success(), "{out:?}");
    let list = run(state.path(), &["trust", "list", "--format=json"]);
    let parsed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(parsed.as_array().unwrap().is_empty());

    // --help says what the defaults are.
    let help = run(state.path(), &["trust", "add", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(!help.contains("[default: ]"), "{help}");
    assert!(help.contains("trusted as `client`"), "{help}");
}

#[test]
fn configuration_errors_say_where_and_how_and_nothing_is_written() {
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("config.toml");
    let file = config.display().to_string();
    let cases: [(&str, &[&str]); 4] = [
        (
            "[collectors]\ndisable = [\"dsk\"]\n",
            &[&file, "collectors.disable", "dsk"],
        ),
        (
            "[collectors.filesystem]\ntimeout = \"10s\"\n",
            &[
                &file,
                "collectors.filesystem.timeout",
                "metrics.collector_timeout",
            ],
        ),
        (
            "[[instances.source]]\npreset = \"lxd\"\n",
            &[
                "instances.source: rule 1: preset: unknown value \"lxd\"",
                "lxc",
            ],
        ),
        (
            "[metrics]\ncache_ttl = 8\n",
            &["metrics.cache_ttl", "\"8s\""],
        ),
    ];
    for (text, needles) in cases {
        std::fs::write(&config, text).unwrap();
        for args in [
            &["daemon", "--https-address", "127.0.0.1:0"][..],
            &["config", "check"][..],
            &["collectors"][..],
        ] {
            let out = run(state.path(), args);
            assert_one_line_error(&out, needles);
        }
        assert!(
            !state.path().join("server.crt").exists(),
            "{text}: the state directory was written before the configuration was checked"
        );
    }
    std::fs::remove_file(&config).unwrap();

    let out = lxmetrics(state.path())
        .env("LXMETRICS_COLLECTORS__DISABLE", "disk")
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_one_line_error(&out, &["LXMETRICS_COLLECTORS__DISABLE='[\"disk\"]'"]);

    let out = run(state.path(), &["daemon", "--https-address", "nowhere"]);
    assert_one_line_error(&out, &["command line: core.https_address", "nowhere"]);
    assert!(!stderr(&out).contains("figment"), "{}", stderr(&out));

    let ok = run(state.path(), &["config", "check"]);
    assert!(ok.status.success(), "{ok:?}");
}

#[test]
fn a_server_key_that_does_not_match_its_certificate_names_both_files() {
    let state = tempfile::tempdir().unwrap();
    let a = lxmetrics_tests::ClientCert::generate("a");
    let b = lxmetrics_tests::ClientCert::generate("b");
    std::fs::write(state.path().join("server.crt"), &a.cert_pem).unwrap();
    std::fs::write(state.path().join("server.key"), &b.key_pem).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        state.path().join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let out = run(state.path(), &["daemon", "--https-address", "127.0.0.1:0"]);
    assert_one_line_error(
        &out,
        &["server.crt", "server.key", "do not belong together"],
    );
}
