//! lxmetrics on real Docker, Podman and plain LXC engines (Debian's docker.io 20.10,
//! podman 4.3 and lxc 5.0, set up by `tests/setup/engines`), side by side in one run:
//! names, projects, stopped containers, `lxd_instance_info`, pods, custom cgroup parents,
//! host-network containers, plain LXC names with `_`, the numbers against what the
//! engine and the kernel say, and the fallback when an engine's API does not answer.
//!
//! Every container this test makes carries a per-run tag, so it never touches an
//! operator's containers, and is removed at the end (and at the start, if an earlier run
//! was killed).

use std::collections::BTreeSet;
use std::time::Duration;

use lxmetrics_tests::real_engines::{ensure_engines, run, run_quiet, IMAGE};
use lxmetrics_tests::{sample_value, state_with_config, Daemon};

/// Every container and pod of one run, removed when the test ends however it ends.
struct Fleet {
    tag: String,
}

impl Fleet {
    /// A fleet whose names start with `lxmt<pid><test>` (tests of one run in parallel
    /// each have their own).
    fn new(test: &str) -> Fleet {
        let fleet = Fleet {
            tag: format!("lxmt{}{test}", std::process::id()),
        };
        fleet.remove();
        fleet
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.tag)
    }

    fn lxc_name(&self) -> String {
        format!("{}_app", self.tag)
    }

    fn remove(&self) {
        for suffix in ["web", "db", "idle", "custom", "hostnet"] {
            run_quiet("docker", &["rm", "-f", &self.name(suffix)]);
        }
        // `-t 0`: a shell as pid 1 ignores SIGTERM, and podman would wait 10 s each.
        run_quiet("podman", &["pod", "rm", "-f", "-t", "0", &self.name("pod")]);
        run_quiet("podman", &["rm", "-f", "-t", "0", &self.name("pweb")]);
        run_quiet("lxc-stop", &["-k", "-n", &self.lxc_name()]);
        run_quiet("lxc-destroy", &["-n", &self.lxc_name()]);
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A daemon reading fresh on every scrape, with `extra` configuration.
fn daemon(extra: &str) -> Daemon {
    let state = state_with_config(format!("[metrics]\ncache_ttl = \"0s\"\n{extra}"));
    Daemon::start_in(state, &[])
}

async fn scrape(daemon: &Daemon) -> String {
    let (status, body) = daemon.get("/1.0/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The `lxd_instance_info` line of instance `name`.
fn info_line<'a>(body: &'a str, name: &str) -> &'a str {
    body.lines()
        .find(|l| l.starts_with(&format!("lxd_instance_info{{name=\"{name}\",")))
        .unwrap_or_else(|| panic!("no lxd_instance_info for {name}:\n{body}"))
}

/// The names that have at least one series of `family`.
fn names_with(body: &str, family: &str, project: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| l.contains(&format!(",project=\"{project}\",")))
        .filter_map(|l| l.split("name=\"").nth(1)?.split('"').next())
        .map(str::to_owned)
        .collect()
}

/// The full container id Docker or Podman gives `name`.
fn full_id(engine: &str, name: &str) -> String {
    run(engine, &["inspect", "-f", "{{.Id}}", name])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_podman_and_lxc_containers_get_their_engine_identity() {
    ensure_engines();
    let fleet = Fleet::new("e");
    let (web, db, idle) = (fleet.name("web"), fleet.name("db"), fleet.name("idle"));
    let (custom, hostnet) = (fleet.name("custom"), fleet.name("hostnet"));
    let (pod, pweb) = (fleet.name("pod"), fleet.name("pweb"));
    let (pa, pb) = (fleet.name("pa"), fleet.name("pb"));
    let shop = format!("{}shop", fleet.tag);
    let idle_project = format!("{}idle", fleet.tag);
    let sleep = ["sleep", "1000000"];

    // Docker: a plain container, one in a compose project with a label and a volume, a
    // stopped one (in a project of its own, so it can be counted), one under a custom
    // cgroup parent, one on the host's network.
    let mut args = vec!["run", "-d", "--name", &web, IMAGE];
    args.extend(sleep);
    run("docker", &args);
    let compose = format!("com.docker.compose.project={shop}");
    let mut args = vec![
        "run",
        "-d",
        "--name",
        &db,
        "--label",
        &compose,
        "--label",
        "team=blue",
        "-v",
        "/data",
        IMAGE,
    ];
    args.extend(sleep);
    run("docker", &args);
    let idle_compose = format!("com.docker.compose.project={idle_project}");
    let mut args = vec!["create", "--name", &idle, "--label", &idle_compose, IMAGE];
    args.extend(sleep);
    run("docker", &args);
    let parent = format!("/{}apps", fleet.tag);
    let mut args = vec![
        "run",
        "-d",
        "--name",
        &custom,
        "--cgroup-parent",
        &parent,
        IMAGE,
    ];
    args.extend(sleep);
    run("docker", &args);
    let mut args = vec!["run", "-d", "--name", &hostnet, "--network", "host", IMAGE];
    args.extend(sleep);
    run("docker", &args);

    // Podman: a container, and a pod of two (plus its infra container).
    let mut args = vec!["run", "-d", "--name", &pweb, IMAGE];
    args.extend(sleep);
    run("podman", &args);
    run("podman", &["pod", "create", "--name", &pod]);
    for member in [&pa, &pb] {
        let mut args = vec!["run", "-d", "--pod", &pod, "--name", member, IMAGE];
        args.extend(sleep);
        run("podman", &args);
    }

    // Plain LXC, with `_` in its name (no network: the lxc-net bridge is not running).
    let lxc_config = tempfile::NamedTempFile::new().expect("lxc config");
    std::fs::write(lxc_config.path(), "lxc.net.0.type = empty\n").expect("lxc config");
    let config_path = lxc_config.path().to_string_lossy().into_owned();
    let app = fleet.lxc_name();
    run(
        "lxc-create",
        &["-t", "busybox", "-n", &app, "-f", &config_path],
    );
    run("lxc-start", &["-n", &app, "-d"]);

    let daemon = daemon("[instances.docker]\nlabels = [\"team\"]\n");
    let body = scrape(&daemon).await;

    // Names, projects and facts from the engines.
    let web_info = info_line(&body, &web);
    assert!(web_info.contains("project=\"default\""), "{web_info}");
    assert!(web_info.contains("engine=\"docker\""), "{web_info}");
    assert!(web_info.contains("status=\"Running\""), "{web_info}");
    assert!(
        web_info.contains(&format!("image=\"{IMAGE}\"")),
        "{web_info}"
    );
    let web_id = full_id("docker", &web);
    assert!(
        web_info.contains(&format!("id=\"{}\"", &web_id[..12])),
        "{web_info}"
    );
    let db_info = info_line(&body, &db);
    assert!(
        db_info.contains(&format!("project=\"{shop}\"")),
        "{db_info}"
    );
    assert!(db_info.contains("label_team=\"blue\""), "{db_info}");
    assert!(
        !db_info.contains("compose"),
        "labels off the allow-list stay out: {db_info}"
    );
    // The anonymous volume is a filesystem of the container, at its path inside.
    assert!(
        body.lines()
            .any(|l| l.starts_with("lxd_filesystem_size_bytes{")
                && l.contains(&format!("name=\"{db}\""))
                && l.contains("mountpoint=\"/data\"")),
        "no filesystem series for {db}'s volume"
    );
    // The stopped container is described and counted, never read.
    let idle_info = info_line(&body, &idle);
    assert!(idle_info.contains("status=\"Stopped\""), "{idle_info}");
    assert_eq!(
        sample_value(
            &body,
            &format!("lxd_instances{{project=\"{idle_project}\",type=\"container\"}}")
        ),
        Some(1.0)
    );
    assert!(names_with(&body, "lxd_cpu_seconds_total", &idle_project).is_empty());
    // Docker's custom cgroup parent: found through the container's process.
    assert!(
        names_with(&body, "lxd_cpu_seconds_total", "default").contains(&custom),
        "{custom} under {parent} not found"
    );
    // Podman: the pod is the project; all three members are read.
    let pod_cpu = names_with(&body, "lxd_cpu_seconds_total", &pod);
    assert!(
        pod_cpu.contains(&pa) && pod_cpu.contains(&pb) && pod_cpu.len() == 3,
        "pod members (and the infra container) read: {pod_cpu:?}"
    );
    assert_eq!(
        sample_value(
            &body,
            &format!("lxd_instances{{project=\"{pod}\",type=\"container\"}}")
        ),
        Some(3.0)
    );
    assert!(info_line(&body, &pweb).contains("engine=\"podman\""));
    // Plain LXC: the whole name, in project default.
    let app_info = info_line(&body, &app);
    assert!(app_info.contains("project=\"default\""), "{app_info}");
    assert!(
        !body.contains(&format!("name=\"app\",project=\"{}\"", fleet.tag)),
        "{app} split at its `_`"
    );

    // Networks: the pod's shared namespace once; the host's network not at all.
    let pod_net = names_with(&body, "lxd_network_receive_bytes_total", &pod);
    assert_eq!(
        pod_net.len(),
        1,
        "the pod's namespace reported on one member: {pod_net:?}"
    );
    assert_eq!(
        pod_net.iter().next(),
        pod_cpu.iter().next(),
        "on the first member by name"
    );
    let default_net = names_with(&body, "lxd_network_receive_bytes_total", "default");
    assert!(
        !default_net.contains(&hostnet),
        "a host-network container is credited with the host's interfaces"
    );
    assert!(default_net.contains(&web));
    assert!(names_with(&body, "lxd_cpu_seconds_total", "default").contains(&hostnet));

    // The numbers are the engine's and the kernel's: processes as `docker top` lists
    // them, eth0's bytes as the container's own /proc shows them.
    let top = run("docker", &["top", &web]);
    let processes = top.lines().skip(1).filter(|l| !l.trim().is_empty()).count();
    let labels = format!("{{name=\"{web}\",project=\"default\",type=\"container\"");
    assert_eq!(
        sample_value(&body, &format!("lxd_procs_total{labels}}}")),
        Some(processes as f64)
    );
    let pid = run("docker", &["inspect", "-f", "{{.State.Pid}}", &web]);
    let net_dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).expect("net/dev");
    let kernel_rx: f64 = net_dev
        .lines()
        .find_map(|l| l.trim().strip_prefix("eth0:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("eth0 in the container's net/dev");
    let ours = sample_value(
        &body,
        &format!("lxd_network_receive_bytes_total{labels},device=\"eth0\"}}"),
    )
    .expect("eth0 receive bytes");
    assert!(
        (kernel_rx - ours).abs() <= 1024.0,
        "eth0 rx: ours {ours}, the kernel's {kernel_rx}"
    );

    for source in ["docker", "podman"] {
        assert_eq!(
            sample_value(
                &body,
                &format!("lxd_metrics_instance_source_up{{source=\"{source}\"}}")
            ),
            Some(1.0),
            "{source}"
        );
    }

    // A stop shows at the next refresh: the kept view is re-asked when cgroups disagree.
    run("docker", &["stop", "-t", "0", &web]);
    let body = scrape(&daemon).await;
    assert!(
        info_line(&body, &web).contains("status=\"Stopped\""),
        "{web} still running after docker stop"
    );
    drop(fleet);
}

/// An engine socket that accepts and never answers: containers are named by id from
/// their cgroups, the fallback is reported, and the scrape is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_engine_falls_back_to_cgroup_names_and_says_so() {
    ensure_engines();
    let fleet = Fleet::new("f");
    let web = fleet.name("web");
    run(
        "docker",
        &["run", "-d", "--name", &web, IMAGE, "sleep", "1000000"],
    );
    let id = full_id("docker", &web);

    let dir = tempfile::tempdir().expect("socket dir");
    let socket = dir.path().join("docker.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let daemon = daemon(&format!(
        "[instances.docker]\nsocket = \"{}\"\n",
        socket.display()
    ));
    let started = std::time::Instant::now();
    let body = scrape(&daemon).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the scrape waited {:?}",
        started.elapsed()
    );
    assert!(
        body.contains(&format!("name=\"{id}\",project=\"default\"")),
        "{web} not named by its id from its cgroup"
    );
    assert_eq!(
        sample_value(&body, "lxd_metrics_instance_source_up{source=\"docker\"}"),
        Some(0.0)
    );
    assert!(sample_value(
        &body,
        "lxd_metrics_instance_source_fallbacks_total{source=\"docker\"}"
    )
    .is_some_and(|n| n >= 1.0));
    drop(fleet);
}
