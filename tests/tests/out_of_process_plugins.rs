//! The out-of-process plugins, end to end: the real daemon with the `textfile` and `exec`
//! collectors switched on in config.toml, over the v2 fixture tree (instances `web` in
//! project default and `db` in project prod).
//!
//! Proves: good files and commands are served with the right instance labels; a
//! malformed file is skipped whole and reported; a hanging command is killed at its
//! timeout without failing the refresh; and neither a file nor a command can set the
//! labels of another instance.

use std::path::Path;
use std::time::{Duration, Instant};

use lxmetrics_tests::{fixture_state_dir, state_with_config, Daemon};

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    std::fs::write(path, text).expect("write textfile");
}

fn config(textfiles: &Path) -> String {
    format!(
        r#"
[collectors]
enable = ["textfile", "exec"]

[collectors.textfile]
directory = "{dir}"

[[collectors.exec.commands]]
name = "inventory"
command = ["/bin/sh", "-c", "echo '# TYPE backup_last_success_seconds gauge'; echo 'backup_last_success_seconds 1700000000'"]

[[collectors.exec.commands]]
name = "per-instance"
scope = "instance"
command = ["/bin/sh", "-c", "echo \"app_sessions{{seen_as=\\\"$LXMETRICS_INSTANCE_PROJECT/$LXMETRICS_INSTANCE_NAME\\\"}} 3\""]

[[collectors.exec.commands]]
name = "hangs"
timeout = "1s"
command = ["/bin/sh", "-c", "echo 'hangs_metric 1'; sleep 600"]

[[collectors.exec.commands]]
name = "impostor"
command = ["/bin/sh", "-c", "echo 'impostor_metric{{name=\"db\",project=\"prod\",type=\"container\"}} 1'"]
"#,
        dir = textfiles.display()
    )
}

#[tokio::test]
async fn textfiles_and_commands_are_relayed_under_the_rules() {
    let textfiles = tempfile::tempdir().expect("tempdir");
    let dir = textfiles.path();
    write(dir, "host.prom", "# HELP host_backup_ok Whether the nightly backup worked\n# TYPE host_backup_ok gauge\nhost_backup_ok 1\n");
    write(
        dir,
        "malformed.prom",
        "half_served_metric 1\nbroken_metric{code=\"200\" 5\n",
    );
    write(
        dir,
        "default/web/app.prom",
        "# TYPE app_requests_total counter\napp_requests_total{code=\"200\"} 12\n",
    );
    write(
        dir,
        "default/web/steal.prom",
        "stolen_metric{name=\"db\",project=\"prod\"} 1\n",
    );
    write(
        dir,
        "prod/db/app.prom",
        "# TYPE app_requests_total counter\napp_requests_total{code=\"200\"} 30\n",
    );
    write(
        dir,
        "default/web/in-progress.prom.tmp",
        "unfinished_metric 1\n",
    );

    let state = fixture_state_dir("v2", &config(dir));
    let daemon = Daemon::start_in(state, &[]);

    let started = Instant::now();
    let (status, body) = daemon.get("/1.0/metrics").await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    // The hanging command's 1 s timeout bounds the refresh; the 5 s collector deadline
    // and the 600 s sleep do not.
    assert!(took < Duration::from_secs(4), "scrape took {took:?}");

    let has = |line: &str| body.lines().any(|l| l == line);
    let lacks = |prefix: &str| !body.lines().any(|l| l.starts_with(prefix));

    // Served, with the scope each source speaks for.
    assert!(has("host_backup_ok 1"), "{body}");
    assert!(has(
        "# HELP host_backup_ok Whether the nightly backup worked"
    ));
    assert!(has("app_requests_total{name=\"web\",project=\"default\",type=\"container\",code=\"200\"} 12"), "{body}");
    assert!(
        has("app_requests_total{name=\"db\",project=\"prod\",type=\"container\",code=\"200\"} 30"),
        "{body}"
    );
    assert!(has("backup_last_success_seconds 1700000000"), "{body}");
    assert!(has("app_sessions{name=\"web\",project=\"default\",type=\"container\",seen_as=\"default/web\"} 3"), "{body}");
    assert!(
        has("app_sessions{name=\"db\",project=\"prod\",type=\"container\",seen_as=\"prod/db\"} 3"),
        "{body}"
    );

    // A malformed file is skipped whole, and reported.
    assert!(
        lacks("half_served_metric") && lacks("broken_metric"),
        "{body}"
    );
    assert!(
        has("lxd_textfile_scrape_error{file=\"malformed.prom\"} 1"),
        "{body}"
    );
    assert!(
        has("lxd_textfile_scrape_error{file=\"host.prom\"} 0"),
        "{body}"
    );
    assert!(
        lacks("unfinished_metric"),
        "a file not yet renamed to *.prom is not read"
    );

    // A hanging command is reported and its partial output dropped.
    assert!(lacks("hangs_metric"), "{body}");
    assert!(
        has("lxd_exec_command_success{command=\"hangs\"} 0"),
        "{body}"
    );
    assert!(
        has("lxd_exec_command_success{command=\"inventory\"} 1"),
        "{body}"
    );

    // Nobody can speak for another instance: the file and the command are refused.
    assert!(lacks("stolen_metric") && lacks("impostor_metric"), "{body}");
    assert!(has("lxd_textfile_scrape_error{name=\"web\",project=\"default\",type=\"container\",file=\"steal.prom\"} 1"), "{body}");
    assert!(
        has("lxd_exec_command_success{command=\"impostor\"} 0"),
        "{body}"
    );

    // Both collectors ran; their sources' failures are not collector failures.
    assert!(
        has("lxd_metrics_collector_success{collector=\"textfile\"} 1"),
        "{body}"
    );
    assert!(
        has("lxd_metrics_collector_success{collector=\"exec\"} 1"),
        "{body}"
    );

    // The problems were logged once each, naming the source.
    let log = daemon.stderr_lines().join("\n");
    for source in [
        "malformed.prom",
        "default/web/steal.prom",
        "hangs",
        "impostor",
    ] {
        assert!(log.contains(source), "{source} not in the log:\n{log}");
    }

    // A project-scoped view shows only that project's relayed series.
    let (_, prod) = daemon.get("/1.0/metrics?project=prod").await;
    assert!(prod.contains("seen_as=\"prod/db\""), "{prod}");
    assert!(
        !prod.contains("default/web") && !prod.contains("host_backup_ok"),
        "{prod}"
    );

    // The relayed output is valid exposition.
    let (code, report) = lxmetrics_tests::promtool_check_metrics(&body);
    assert!(
        !report.contains("parsing error") && code != Some(1),
        "promtool could not parse the output: {report}"
    );
}

#[test]
fn the_collectors_are_listed_and_off_by_default() {
    let daemon = Daemon::start(&[]);
    let listing = String::from_utf8(daemon.cli(&["collectors"]).stdout).expect("utf-8");
    for name in ["textfile", "exec"] {
        let row = listing
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{listing}"));
        assert_eq!(row.split_whitespace().nth(1), Some("no"), "{row}");
    }
}

#[test]
fn enabling_textfile_without_a_directory_fails_start_up_naming_the_key() {
    let state = state_with_config("[collectors]\nenable = [\"textfile\"]\n");
    let out = lxmetrics_tests::lxmetrics(state.path())
        .args(["daemon", "--https-address", "127.0.0.1:0"])
        .output()
        .expect("run lxmetrics");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("collectors.textfile.directory"), "{stderr}");
}

/// Histograms and summaries from textfiles: interleaved label sets as the text format
/// allows, served grouped as OpenMetrics requires, `le` only on buckets, accepted by
/// promtool and ingested by a real Prometheus (which asks for OpenMetrics first).
#[tokio::test]
async fn histograms_and_summaries_are_relayed_and_reach_prometheus() {
    let textfiles = tempfile::tempdir().expect("tempdir");
    let dir = textfiles.path();
    write(
        dir,
        "jobs.prom",
        "# HELP job_seconds How long jobs take\n# TYPE job_seconds histogram\n\
         job_seconds_bucket{task=\"a\",le=\"1\"} 1\n\
         job_seconds_bucket{task=\"b\",le=\"1\"} 0\n\
         job_seconds_bucket{task=\"a\",le=\"+Inf\"} 2\n\
         job_seconds_bucket{task=\"b\",le=\"+Inf\"} 1\n\
         job_seconds_sum{task=\"a\"} 2.5\njob_seconds_count{task=\"a\"} 2\n\
         job_seconds_sum{task=\"b\"} 9\njob_seconds_count{task=\"b\"} 1\n\
         # TYPE rpc_seconds summary\n\
         rpc_seconds{quantile=\"0.5\"} 0.25\nrpc_seconds_sum 12\nrpc_seconds_count 70\n",
    );
    write(
        dir,
        "default/web/latency.prom",
        "# TYPE app_latency_seconds histogram\n\
         app_latency_seconds_bucket{le=\"0.1\"} 3\napp_latency_seconds_bucket{le=\"+Inf\"} 4\n\
         app_latency_seconds_sum 0.9\napp_latency_seconds_count 4\n",
    );
    write(
        dir,
        "bad-histogram.prom",
        "# TYPE broken_seconds histogram\nbroken_seconds_bucket{le=\"1\"} 1\n",
    );
    let state = fixture_state_dir(
        "v2",
        &format!(
            "[metrics]\ncache_ttl = \"1s\"\n\n[collectors]\nenable = [\"textfile\"]\n\n\
             [collectors.textfile]\ndirectory = \"{}\"\n",
            dir.display()
        ),
    );
    let daemon = Daemon::start_in(state, &[]);

    let (status, body) = daemon.get("/1.0/metrics").await;
    assert_eq!(status, 200, "{body}");
    let web = "name=\"web\",project=\"default\",type=\"container\"";
    for line in [
        "# TYPE job_seconds histogram".to_owned(),
        "job_seconds_bucket{task=\"a\",le=\"+Inf\"} 2".to_owned(),
        "job_seconds_sum{task=\"a\"} 2.5".to_owned(),
        "# TYPE rpc_seconds summary".to_owned(),
        "rpc_seconds{quantile=\"0.5\"} 0.25".to_owned(),
        "rpc_seconds_count 70".to_owned(),
        format!("app_latency_seconds_bucket{{{web},le=\"0.1\"}} 3"),
        format!("app_latency_seconds_count{{{web}}} 4"),
        "lxd_textfile_scrape_error{file=\"bad-histogram.prom\"} 1".to_owned(),
    ] {
        assert!(body.lines().any(|l| l == line), "{line} not in:\n{body}");
    }
    assert!(!body.contains("broken_seconds"), "{body}");
    let (code, report) = lxmetrics_tests::promtool_check_metrics(&body);
    assert!(
        !report.contains("parsing error") && code != Some(1),
        "promtool could not parse the output: {report}"
    );

    // OpenMetrics: each label set's series together.
    let openmetrics = daemon
        .client()
        .get(format!("{}/1.0/metrics", daemon.url))
        .header("Accept", "application/openmetrics-text;version=1.0.0")
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    let at = |line: &str| {
        openmetrics
            .lines()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("{line} not in:\n{openmetrics}"))
    };
    assert!(
        at("job_seconds_count{task=\"a\"} 2") < at("job_seconds_bucket{task=\"b\",le=\"1\"} 0"),
        "{openmetrics}"
    );

    // A real Prometheus ingests them.
    let prom_dir = tempfile::tempdir().expect("tempdir");
    let prometheus = lxmetrics_tests::prometheus::Prometheus::scraping(prom_dir.path(), &daemon);
    let median = prometheus
        .wait_for(
            "histogram_quantile(0.5, job_seconds_bucket{task=\"a\"})",
            Duration::from_secs(60),
            |r| !r.is_empty(),
        )
        .await;
    assert_eq!(median[0]["value"][1], "1", "{median:?}");
    for expr in [
        "rpc_seconds{quantile=\"0.5\"}",
        "app_latency_seconds_count{name=\"web\"}",
        "job_seconds_sum{task=\"b\"}",
    ] {
        prometheus
            .wait_for(expr, Duration::from_secs(10), |r| !r.is_empty())
            .await;
    }
}
