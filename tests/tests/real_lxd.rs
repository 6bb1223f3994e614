//! lxmetrics on a real LXD (Debian's lxd 5.0.2, set up by `tests/setup/lxd`):
//!
//! - LXD's own `test/suites/metrics.sh` (canonical/lxd), ported step by step: the same
//!   projects, running and stopped containers, certificates restricted and not, both
//!   listeners, `metrics_authentication` on and off, and the same assertions, with
//!   lxmetrics' CLI where the suite uses `lxc config`. Instance names carry an `lxmt-`
//!   prefix so the test never touches an operator's instances.
//! - The inventory from LXD's API: stopped instances, exact projects, disk devices,
//!   `lxd_instance_info`, and the fallback to cgroup names when the API does not answer.
//!
//! The value parity with LXD's own endpoint is in `lxd_parity.rs`.

use std::time::{Duration, Instant};

use lxmetrics_tests::real_lxd::{ensure_lxd, fresh_projects, lxc, lxd_instance_count};
use lxmetrics_tests::{free_port, sample_value, ClientCert, Daemon};

const FOO: &str = "lxmt-foo";
const FOO2: &str = "lxmt-foo2";
const C1: &str = "lxmt-c1";
const C2: &str = "lxmt-c2";
const C3: &str = "lxmt-c3";
const C4: &str = "lxmt-c4";

/// A daemon with a metrics listener, over a state directory with `config` added.
fn daemon_with(config: &str) -> Daemon {
    let state = tempfile::tempdir().expect("state dir");
    let port = free_port();
    std::fs::write(
        state.path().join("config.toml"),
        format!("[core]\nmetrics_address = \"127.0.0.1:{port}\"\n{config}"),
    )
    .expect("config.toml");
    Daemon::start_in(state, &[])
}

/// `GET base+path` presenting `cert` (or none): status and body.
async fn get(daemon: &Daemon, base: &str, cert: Option<&ClientCert>, path: &str) -> (u16, String) {
    let response = daemon
        .client_with(cert)
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("request to the daemon");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// The body of `lxmetrics query PATH` over the unix socket (LXD's `lxc query`).
fn query(daemon: &Daemon, path: &str) -> String {
    let out = daemon.cli(&["query", path]);
    assert!(
        out.status.success(),
        "query {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether any series other than `lxd_instance_info` names `name`: the suite's "metrics
/// of c2 are not shown" (a stopped instance is described by `lxd_instance_info` only).
fn measures(body: &str, name: &str) -> bool {
    let label = format!("name=\"{name}\"");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("lxd_instance_info"))
        .any(|l| l.contains(&label))
}

/// The trust store entry named `name`, from `lxmetrics trust list --format=json` (as
/// `lxc config trust show`).
fn trusted(daemon: &Daemon, name: &str) -> serde_json::Value {
    let listed = daemon.cli(&["trust", "list", "--format=json"]);
    let listed: serde_json::Value =
        serde_json::from_slice(&listed.stdout).expect("trust list json");
    listed
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("{name} not in the trust list: {listed}"))
}

fn shows(body: &str, name: &str) -> bool {
    body.contains(&format!("name=\"{name}\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lxds_own_metrics_suite_passes() {
    ensure_lxd();
    fresh_projects(
        &[("default", C1), ("default", C2), (FOO, C3), (FOO2, C4)],
        &[FOO, FOO2],
    );
    // lxc launch testimage c1; lxc init c2; c3 running in foo; c4 stopped in foo2.
    lxc(&["launch", "busybox", C1]);
    lxc(&["init", "busybox", C2]);
    lxc(&["launch", "busybox", C3, "--project", FOO]);
    lxc(&["init", "busybox", C4, "--project", FOO2]);

    // No configuration for LXD: the daemon finds its socket by itself.
    let daemon = daemon_with("[metrics]\ncache_ttl = \"1s\"\n");
    let https = daemon.url.clone();
    let metrics = daemon.metrics_url.clone().expect("metrics listener");
    assert!(
        daemon
            .startup_output
            .iter()
            .any(|l| l.contains("named by the lxd API")),
        "{:?}",
        daemon.startup_output
    );

    // ==> c1 metrics should show as the container is running
    let all = query(&daemon, "/1.0/metrics");
    assert!(measures(&all, C1), "{all}");
    assert!(measures(
        &query(&daemon, "/1.0/metrics?project=default"),
        C1
    ));
    // ==> c2 metrics should not be shown as the container is stopped
    assert!(!measures(&all, C2), "{all}");
    assert!(!measures(
        &query(&daemon, "/1.0/metrics?project=default"),
        C2
    ));

    // ==> Check that we can get the count of existing instances (LXD counts the
    // default project's instances itself; it may hold an operator's too).
    let expect = |project: &str, kind: &str, n: usize| {
        format!("lxd_instances{{project=\"{project}\",type=\"{kind}\"}} {n}")
    };
    let count_lines = |body: &str| {
        for (project, kind, n) in [
            (
                "default",
                "container",
                lxd_instance_count("default", "container"),
            ),
            (FOO, "container", 1),
            (FOO2, "container", 1),
            (
                "default",
                "virtual-machine",
                lxd_instance_count("default", "virtual-machine"),
            ),
            (FOO, "virtual-machine", 0),
            (FOO2, "virtual-machine", 0),
        ] {
            let line = expect(project, kind, n);
            assert!(body.lines().any(|l| l == line), "{line} missing:\n{body}");
        }
    };
    count_lines(&all);

    // ==> c3 metrics from another project also show up for non metrics unrestricted certificate
    assert!(measures(&all, C3));
    assert!(measures(
        &query(&daemon, &format!("/1.0/metrics?project={FOO}")),
        C3
    ));

    // ==> create new certificate; this should fail as the certificate is not trusted yet
    let metrics_cert = ClientCert::generate("metrics.local");
    let (status, body) = get(&daemon, &https, Some(&metrics_cert), "/1.0/metrics").await;
    assert_eq!(status, 403);
    assert!(body.contains("\"error_code\":403"), "{body}");

    // ==> trust newly created certificate for metrics only
    daemon.trust_with(
        &metrics_cert,
        "metrics",
        &["--type=metrics", "--name", "metrics"],
    );
    assert_eq!(trusted(&daemon, "metrics")["restricted"], false);

    let as_metrics = |base: String, path: &'static str| {
        let daemon = &daemon;
        let cert = &metrics_cert;
        async move {
            let (status, body) = get(daemon, &base, Some(cert), path).await;
            assert_eq!(status, 200, "{base}{path}: {body}");
            body
        }
    };
    for base in [https.clone(), metrics.clone()] {
        // ==> c1 metrics should show as the container is running
        let body = as_metrics(base.clone(), "/1.0/metrics").await;
        assert!(measures(&body, C1));
        assert!(measures(
            &as_metrics(base.clone(), "/1.0/metrics?project=default").await,
            C1
        ));
        // ==> c2 metrics should not be shown as the container is stopped
        assert!(!measures(&body, C2));
        // ==> c3 metrics from another project should be shown for unrestricted certificate
        assert!(measures(&body, C3));
        assert!(measures(
            &as_metrics(base.clone(), "/1.0/metrics?project=lxmt-foo").await,
            C3
        ));
        // (lxd_warnings_total is LXD's own warning store: lxmetrics has none; the
        // daemon series shown to an unrestricted certificate are checked instead.)
        assert!(body.contains("\nlxd_uptime_seconds "), "{body}");
    }
    // ==> make sure nothing else can be done with this certificate
    let (status, body) = get(&daemon, &https, Some(&metrics_cert), "/1.0/instances").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"error_code\":403"), "{body}");
    // ==> make sure no other endpoint is available (on the metrics listener)
    let (status, body) = get(&daemon, &metrics, Some(&metrics_cert), "/1.0/instances").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"error_code\":404"), "{body}");

    // ==> create new (restricted) certificate for the foo project
    let restricted = ClientCert::generate("metrics-restricted.local");
    daemon.trust_with(
        &restricted,
        "metrics-restricted",
        &[
            "--type=metrics",
            "--name",
            "metrics-restricted",
            "--restricted",
            "--projects",
            FOO,
        ],
    );
    assert_eq!(trusted(&daemon, "metrics-restricted")["restricted"], true);
    // ==> c3 metrics should be shown, with and without ?project
    let (status, body) = get(
        &daemon,
        &https,
        Some(&restricted),
        &format!("/1.0/metrics?project={FOO}"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(measures(&body, C3));
    let (_, body) = get(&daemon, &https, Some(&restricted), "/1.0/metrics").await;
    assert!(measures(&body, C3), "{body}");
    // ==> other projects metrics aren't visible: 403
    for project in ["default", FOO2] {
        let path = format!("/1.0/metrics?project={project}");
        let (status, _) = get(&daemon, &https, Some(&restricted), &path).await;
        assert_eq!(status, 403, "{path}");
    }
    // Beyond LXD 5.0 (as Incus): storage pools for the unrestricted, project limits and
    // usage per project, each shown only to callers who may see the project.
    let pool: serde_json::Value =
        serde_json::from_str(&lxc(&["query", "/1.0/storage-pools/default/resources"]))
            .expect("pool resources");
    // Fetched in the background, so a refresh never waits for them: asked until there.
    let deadline = Instant::now() + Duration::from_secs(20);
    let all = loop {
        let (_, all) = get(&daemon, &https, Some(&metrics_cert), "/1.0/metrics").await;
        if all.contains("lxd_project_usage{") || Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let size = sample_value(
        &all,
        "lxd_storage_pool_size_bytes{pool=\"default\",driver=\"dir\"}",
    );
    assert_eq!(size, pool["space"]["total"].as_f64(), "{all}");
    for (project, n) in [(FOO, 1.0), (FOO2, 1.0)] {
        let usage = format!("lxd_project_usage{{project=\"{project}\",resource=\"containers\"}}");
        let limit = format!("lxd_project_limit{{project=\"{project}\",resource=\"containers\"}}");
        assert_eq!(sample_value(&all, &usage), Some(n), "{usage}");
        assert_eq!(sample_value(&all, &limit), Some(-1.0), "{limit}: unlimited");
        let held =
            format!("lxd_project_resources_total{{project=\"{project}\",resource=\"instances\"}}");
        assert_eq!(sample_value(&all, &held), Some(n), "{held}");
    }
    let (_, own) = get(&daemon, &https, Some(&restricted), "/1.0/metrics").await;
    assert!(
        own.contains(&format!("lxd_project_usage{{project=\"{FOO}\"")),
        "{own}"
    );
    assert!(!own.contains(&format!("project=\"{FOO2}\"")), "{own}");
    assert!(
        !own.contains("lxd_storage_pool_"),
        "pools are the host's: {own}"
    );

    // ==> c1 and c2 metrics are not visible as they are in another project
    let (_, body) = get(
        &daemon,
        &metrics,
        Some(&restricted),
        &format!("/1.0/metrics?project={FOO}"),
    )
    .await;
    assert!(!shows(&body, C1) && !shows(&body, C2), "{body}");

    // ==> count of existing containers, then again after the cache has expired
    let (_, body) = get(&daemon, &metrics, Some(&metrics_cert), "/1.0/metrics").await;
    count_lines(&body);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, body) = get(&daemon, &metrics, Some(&metrics_cert), "/1.0/metrics").await;
    count_lines(&body);

    // ==> test unauthenticated connections
    let (status, body) = get(&daemon, &metrics, None, "/1.0/metrics").await;
    assert_eq!(status, 403);
    assert!(!shows(&body, C1));
    let (_, body) = get(&daemon, &metrics, None, "/1.0/metrics?project=default").await;
    assert!(!shows(&body, C1));

    // ==> API requests metrics should be included
    let (_, body) = get(&daemon, &metrics, Some(&metrics_cert), "/1.0/metrics").await;
    for needle in [
        "lxd_api_requests_completed_total{entity_type=\"server\",result=\"succeeded\"}",
        "lxd_api_requests_ongoing{entity_type=\"server\"}",
        "lxd_api_requests_ongoing{entity_type=\"instance\"}",
    ] {
        assert!(body.contains(needle), "{needle} missing");
    }
    // ==> lxd_api_requests_completed_total increments with different results
    let completed = |body: &str, entity: &str, result: &str| {
        sample_value(
            body,
            &format!(
                "lxd_api_requests_completed_total{{entity_type=\"{entity}\",result=\"{result}\"}}"
            ),
        )
        .expect("pre-filled series")
    };
    let before = query(&daemon, "/1.0/metrics");
    query(&daemon, "/1.0/instances"); // what `lxc list` asks
    let after = query(&daemon, "/1.0/metrics");
    assert_eq!(
        completed(&after, "instance", "succeeded"),
        completed(&before, "instance", "succeeded") + 1.0
    );
    let before = query(&daemon, "/1.0/metrics");
    assert!(!daemon.cli(&["query", "/not/an/endpoint"]).status.success());
    let after = query(&daemon, "/1.0/metrics");
    assert_eq!(
        completed(&after, "server", "error_client"),
        completed(&before, "server", "error_client") + 1.0,
        "a 404 is a client error of entity type server"
    );
    drop(daemon);

    // ==> lxc config set core.metrics_authentication=false (a restart here)
    let open = daemon_with("metrics_authentication = false\n");
    let open_metrics = open.metrics_url.clone().expect("metrics listener");
    let (status, body) = get(&open, &open_metrics, None, "/1.0/metrics").await;
    assert_eq!(status, 200);
    assert!(measures(&body, C1));
    let (_, body) = get(&open, &open_metrics, None, "/1.0/metrics?project=default").await;
    assert!(measures(&body, C1));
    // ==> Filesystem metrics should contain instance type
    assert!(body
        .lines()
        .any(|l| l.starts_with("lxd_filesystem_avail_bytes") && l.contains("type=\"container\"")));

    for (project, name) in [("default", C1), ("default", C2), (FOO, C3), (FOO2, C4)] {
        lxc(&["delete", "-f", name, "--project", project]);
    }
    lxc(&["project", "delete", FOO]);
    lxc(&["project", "delete", FOO2]);
}

const INV: &str = "lxmt-inv";
const RUNNING: &str = "lxmt-run";
const STOPPED: &str = "lxmt-stop";

/// What the API adds to cgroup discovery: exact projects (a `-` and a `_`-free name
/// split by nobody), stopped instances described, every disk device measured, facts for
/// joins, and how the source is doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_names_every_instance_and_its_disks() {
    ensure_lxd();
    fresh_projects(&[(INV, RUNNING), (INV, STOPPED)], &[INV]);
    let data = tempfile::tempdir().expect("data dir");
    lxc(&["launch", "busybox", RUNNING, "--project", INV]);
    lxc(&["init", "busybox", STOPPED, "--project", INV]);
    let source = format!("source={}", data.path().display());
    lxc(&[
        "config",
        "device",
        "add",
        RUNNING,
        "data",
        "disk",
        &source,
        "path=/mnt/data",
        "--project",
        INV,
    ]);

    let daemon = daemon_with("[metrics]\ncache_ttl = \"1s\"\n");
    let body = query(&daemon, "/1.0/metrics");
    let info = |name: &str, status: &str| {
        format!(
            "lxd_instance_info{{name=\"{name}\",project=\"{INV}\",type=\"container\",status=\"{status}\",architecture=\"{}\",engine=\"lxd\",image=\"busybox (lxmetrics tests)\",location=\"none\"}} 1",
            std::env::consts::ARCH
        )
    };
    for line in [info(RUNNING, "Running"), info(STOPPED, "Stopped")] {
        assert!(body.lines().any(|l| l == line), "{line} missing:\n{body}");
    }
    for mountpoint in ["/", "/mnt/data"] {
        let found = body.lines().any(|l| {
            l.starts_with("lxd_filesystem_size_bytes")
                && l.contains(&format!("name=\"{RUNNING}\""))
                && l.contains(&format!("mountpoint=\"{mountpoint}\""))
        });
        assert!(found, "no file system series for {mountpoint}:\n{body}");
    }
    assert_eq!(
        sample_value(&body, "lxd_metrics_instance_source_up{source=\"lxd\"}"),
        Some(1.0)
    );
    // /1.0/instances lists both, with their status.
    let listed: serde_json::Value =
        serde_json::from_str(&query(&daemon, "/1.0/instances")).expect("json");
    let status_of = |name: &str| {
        listed["metadata"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == name && i["project"] == INV))
            .map(|i| i["status"].clone())
    };
    assert_eq!(status_of(RUNNING), Some("Running".into()), "{listed}");
    assert_eq!(status_of(STOPPED), Some("Stopped".into()), "{listed}");

    // The daemon keeps LXD's answer between refreshes (asking costs LXD CPU), but a
    // start or stop shows at the very next refresh: the cgroups disagree with it.
    lxc(&["stop", "--force", RUNNING, "--project", INV]);
    lxc(&["start", STOPPED, "--project", INV]);
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the 1 s cache window
    let body = query(&daemon, "/1.0/metrics");
    for line in [info(RUNNING, "Stopped"), info(STOPPED, "Running")] {
        assert!(body.lines().any(|l| l == line), "{line} missing:\n{body}");
    }
    assert!(!measures(&body, RUNNING) && measures(&body, STOPPED));

    lxc(&["delete", "-f", RUNNING, STOPPED, "--project", INV]);
    lxc(&["project", "delete", INV]);
}

/// An LXD socket that accepts but never answers: every refresh still serves within its
/// deadline, instances are named from cgroups (LXD's `<project>_<name>` split), and the
/// fallback is reported, not hidden.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_api_falls_back_to_cgroup_names_and_says_so() {
    ensure_lxd();
    const PROJECT: &str = "lxmt-fall";
    const NAME: &str = "lxmt-fb";
    fresh_projects(&[(PROJECT, NAME)], &[PROJECT]);
    lxc(&["launch", "busybox", NAME, "--project", PROJECT]);

    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("silent.socket");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    // Accept and hold connections without answering.
    let _holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let daemon = daemon_with(&format!(
        "[instances.lxd]\nsocket = \"{}\"\n",
        socket.display()
    ));
    let started = Instant::now();
    let body = query(&daemon, "/1.0/metrics");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "scrape took {took:?}");
    let label = format!("name=\"{NAME}\",project=\"{PROJECT}\"");
    assert!(
        body.lines()
            .any(|l| l.starts_with("lxd_cpu_seconds_total") && l.contains(&label)),
        "{label} not named from its cgroup:\n{body}"
    );
    assert_eq!(
        sample_value(&body, "lxd_metrics_instance_source_up{source=\"lxd\"}"),
        Some(0.0)
    );
    assert!(sample_value(
        &body,
        "lxd_metrics_instance_source_fallbacks_total{source=\"lxd\"}"
    )
    .is_some_and(|n| n >= 1.0));
    assert!(
        daemon
            .stderr_lines()
            .iter()
            .any(|l| l.contains("naming instances from cgroups")),
        "the fallback is logged"
    );
    lxc(&["delete", "-f", NAME, "--project", PROJECT]);
    lxc(&["project", "delete", PROJECT]);
}
