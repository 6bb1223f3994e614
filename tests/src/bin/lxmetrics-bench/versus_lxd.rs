//! The bench phase against a real LXD, when this machine has one (`tests/setup/lxd`):
//! 100 running busybox containers in project `lxmbench` (each with its own network
//! namespace, veth and root file system), LXD's own `/1.0/metrics` on
//! `core.metrics_address`, and this daemon over the same containers, scraped cold (a new
//! TLS connection, a full refresh, an encode) one after the other in one run. The CPU of
//! each is read from its CPU-time clock from before its scrape until 1.5 s after the
//! answer (what it does after answering counts); ours includes what LXD spent answering
//! our inventory requests during our scrape. LXD's scrapes are 8.5 s apart, past its
//! own 8 s metrics cache, so both sides are measured cold. The comparison starts once
//! LXD idles after starting the containers: its CPU during our scrapes counts as ours.

use std::process::Command;
use std::time::{Duration, Instant};

use lxmetrics_tests::{free_port, process_cpu_seconds, Daemon};

use crate::report::Report;

/// The containers compared on (started for the phase, stopped after it).
const CONTAINERS: usize = 100;
/// The project they live in (made by the bench, kept for later runs).
const PROJECT: &str = "lxmbench";
/// Scrapes of each, interleaved.
const ROUNDS: usize = 9;
/// LXD 5.0 keeps its metrics for 8 s ("cached for 8s to handle multiple scrapers",
/// doc/metrics.md): its scrapes are spaced wider, so every one is cold.
const LXD_CACHE: Duration = Duration::from_millis(8500);
/// How long after its answer each daemon's CPU is still counted to its scrape.
const LXD_SETTLE: Duration = Duration::from_millis(1500);

/// LXD counts as idle when it spends less than this share of one core.
const LXD_IDLE_SHARE: f64 = 0.02;
/// How long to wait for LXD to idle before comparing anyway.
const LXD_IDLE_WAIT: Duration = Duration::from_secs(120);

/// Waits until LXD has spent under [`LXD_IDLE_SHARE`] of a core for three seconds in a
/// row, or [`LXD_IDLE_WAIT`]; says how long that took and LXD's last rate.
async fn settle(lxd: u32) -> String {
    let started = Instant::now();
    let (mut quiet_seconds, mut share) = (0, 0.0);
    while quiet_seconds < 3 && started.elapsed() < LXD_IDLE_WAIT {
        let before = process_cpu_seconds(lxd);
        tokio::time::sleep(Duration::from_secs(1)).await;
        share = process_cpu_seconds(lxd) - before;
        quiet_seconds = if share < LXD_IDLE_SHARE {
            quiet_seconds + 1
        } else {
            0
        };
    }
    let waited = started.elapsed().as_secs_f64();
    if quiet_seconds < 3 {
        format!("still {:.1} % of a core after {waited:.0} s", share * 100.0)
    } else {
        format!("{:.1} % of a core, after {waited:.0} s", share * 100.0)
    }
}

/// `lxc ARGS`: its output, or its error.
fn lxc(args: &[&str]) -> Result<String, String> {
    let out = Command::new("lxc")
        .args(args)
        .output()
        .map_err(|e| format!("lxc: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "lxc {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The pid of the LXD daemon, if one answers here.
fn lxd_pid() -> Option<u32> {
    lxc(&["query", "/1.0"]).ok()?;
    let out = Command::new("pgrep")
        .args(["-o", "-x", "lxd"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Makes sure `CONTAINERS` containers run in `PROJECT`.
fn ensure_containers() -> Result<(), String> {
    if lxc(&["project", "show", PROJECT]).is_err() {
        lxc(&[
            "project",
            "create",
            PROJECT,
            "-c",
            "features.images=false",
            "-c",
            "features.profiles=false",
        ])?;
    }
    let listed = lxc(&["list", "--project", PROJECT, "--format", "csv", "-c", "ns"])?;
    let states: std::collections::HashMap<String, String> = listed
        .lines()
        .filter_map(|l| l.split_once(','))
        .map(|(n, s)| (n.to_owned(), s.to_owned()))
        .collect();
    for i in 0..CONTAINERS {
        let name = format!("b{i:03}");
        if !states.contains_key(&name) {
            lxc(&["launch", "busybox", &name, "--project", PROJECT])?;
        }
    }
    // All at once: LXD starts them in parallel (about 11 s for 100 here, against 270 s
    // one `lxc start` at a time).
    if states.values().any(|state| state != "RUNNING") {
        lxc(&["start", "--all", "--project", PROJECT])?;
    }
    Ok(())
}

/// LXD's metrics listener, and the metrics certificate trusted for it, for the phase;
/// put back as they were when dropped.
struct LxdMetrics {
    address: String,
    previous_address: String,
    fingerprint: Option<String>,
}

impl LxdMetrics {
    fn open(cert_pem: &str) -> Result<LxdMetrics, String> {
        let previous_address = lxc(&["config", "get", "core.metrics_address"])?;
        let address = format!("127.0.0.1:{}", free_port());
        lxc(&["config", "set", "core.metrics_address", &address])?;
        let mut metrics = LxdMetrics {
            address,
            previous_address,
            fingerprint: None,
        };
        let file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        std::fs::write(file.path(), cert_pem).map_err(|e| e.to_string())?;
        let before = lxc(&["config", "trust", "list", "--format", "csv"])?;
        lxc(&[
            "config",
            "trust",
            "add",
            &file.path().to_string_lossy(),
            "--type",
            "metrics",
            "--name",
            "lxmetrics-bench",
        ])?;
        let after = lxc(&["config", "trust", "list", "--format", "csv"])?;
        metrics.fingerprint = after
            .lines()
            .find(|l| !before.contains(*l) && l.contains("lxmetrics-bench"))
            .and_then(|l| l.split(',').find(|f| f.len() == 12).map(str::to_owned));
        Ok(metrics)
    }
}

impl Drop for LxdMetrics {
    fn drop(&mut self) {
        if let Some(fingerprint) = &self.fingerprint {
            let _ = lxc(&["config", "trust", "remove", fingerprint]);
        }
        let _ = if self.previous_address.is_empty() {
            lxc(&["config", "unset", "core.metrics_address"])
        } else {
            lxc(&[
                "config",
                "set",
                "core.metrics_address",
                &self.previous_address,
            ])
        };
    }
}

/// One cold scrape: a client that keeps no connection, so each request does the TLS
/// handshake; the time until the whole body arrived, and the body's series count.
async fn cold_scrape(client: &reqwest::Client, url: &str) -> (Duration, usize) {
    let started = Instant::now();
    let response = client.get(url).send().await.expect("cold scrape");
    assert_eq!(response.status(), 200, "{url}");
    let body = response.text().await.expect("body");
    let took = started.elapsed();
    let series = body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    (took, series)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The phase: adds its rows, or one row saying why it could not run.
pub async fn versus_lxd(report: &mut Report) {
    let Some(lxd) = lxd_pid() else {
        report.info(
            "against a real LXD at 100 containers",
            "not measured: no LXD answers here (tests/setup/lxd sets one up)".to_owned(),
        );
        return;
    };
    if let Err(e) = ensure_containers() {
        report.row(
            "against a real LXD at 100 containers",
            format!("could not set up: {e}"),
            "runs",
            false,
        );
        return;
    }
    // Starting 100 containers keeps LXD busy for a while after the last `lxc start`
    // returns. That work is not either scrape's, and LXD's CPU during our scrapes is
    // counted as ours: the comparison starts once LXD idles.
    let idle = settle(lxd).await;
    let state = tempfile::tempdir().expect("state directory");
    std::fs::write(
        state.path().join("config.toml"),
        "[metrics]\ncache_ttl = \"0s\"\ncollector_timeout = \"30s\"\n",
    )
    .expect("config.toml");
    let ours = Daemon::start_in(state, &[]);
    let lxd_metrics = match LxdMetrics::open(&ours.client_cert.cert_pem) {
        Ok(m) => m,
        Err(e) => {
            report.row(
                "against a real LXD at 100 containers",
                format!("LXD's metrics listener: {e}"),
                "runs",
                false,
            );
            return;
        }
    };
    let identity = reqwest::Identity::from_pem(
        format!("{}{}", ours.client_cert.cert_pem, ours.client_cert.key_pem).as_bytes(),
    )
    .expect("identity");
    // LXD's self-signed server certificate is not ours to pin: loopback only.
    let lxd_client = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .identity(identity)
        .pool_max_idle_per_host(0)
        .no_gzip()
        .build()
        .expect("client");
    let our_client = {
        let root = reqwest::Certificate::from_pem(&ours.server_cert_pem()).expect("server.crt");
        let identity = reqwest::Identity::from_pem(
            format!("{}{}", ours.client_cert.cert_pem, ours.client_cert.key_pem).as_bytes(),
        )
        .expect("identity");
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(root)
            .identity(identity)
            .pool_max_idle_per_host(0)
            .no_gzip()
            .build()
            .expect("client")
    };
    let lxd_url = format!("https://{}/1.0/metrics", lxd_metrics.address);
    let our_url = format!("{}/1.0/metrics", ours.url);
    let our_pid = ours.pid();
    // Warm both (LXD's listener, our kept view of LXD's API, our link speeds).
    for _ in 0..2 {
        cold_scrape(&lxd_client, &lxd_url).await;
        cold_scrape(&our_client, &our_url).await;
    }
    let (mut lxd_times, mut our_times) = (Vec::new(), Vec::new());
    let (mut lxd_cpu, mut our_cpu, mut lxd_for_us, mut lxd_quiet) = (0.0, 0.0, 0.0, 0.0);
    let (mut lxd_series, mut our_series) = (0, 0);
    for _ in 0..ROUNDS {
        tokio::time::sleep(LXD_CACHE).await;
        let before = process_cpu_seconds(lxd);
        let (took, series) = cold_scrape(&lxd_client, &lxd_url).await;
        // What LXD does after answering (its Go garbage collection) is its scrape's.
        tokio::time::sleep(LXD_SETTLE).await;
        lxd_cpu += process_cpu_seconds(lxd) - before;
        lxd_times.push(took);
        lxd_series = series;

        // LXD's CPU over as long a window without any scrape, just before ours.
        let window = our_times
            .last()
            .copied()
            .unwrap_or(Duration::from_millis(30));
        let quiet_before = process_cpu_seconds(lxd);
        tokio::time::sleep(window).await;
        lxd_quiet += process_cpu_seconds(lxd) - quiet_before;

        let (before, lxd_before) = (process_cpu_seconds(our_pid), process_cpu_seconds(lxd));
        let (took, series) = cold_scrape(&our_client, &our_url).await;
        lxd_for_us += process_cpu_seconds(lxd) - lxd_before;
        // What ours does after answering (returning memory, closing the connection) is
        // its scrape's too, counted over the same time as LXD's.
        tokio::time::sleep(LXD_SETTLE).await;
        our_cpu += process_cpu_seconds(our_pid) - before;
        our_times.push(took);
        our_series = series;
    }
    drop(lxd_metrics);
    drop(ours);
    // The later phases measure the bench fleet alone.
    if let Err(e) = lxc(&["stop", "--all", "--force", "--project", PROJECT]) {
        eprintln!("  (could not stop the LXD containers: {e})");
    }
    let (lxd_time, our_time) = (median(lxd_times), median(our_times));
    let speedup = lxd_time.as_secs_f64() / our_time.as_secs_f64();
    report.row(
        &format!("cold scrape at {CONTAINERS} real LXD containers (new TLS connection, refresh, encode; median of {ROUNDS} interleaved)"),
        format!(
            "ours {:.1} ms ({our_series} series) vs LXD 5.0.2 {:.1} ms ({lxd_series} series) = {speedup:.1}x faster",
            our_time.as_secs_f64() * 1e3,
            lxd_time.as_secs_f64() * 1e3,
        ),
        ">= 10x faster",
        speedup >= 10.0,
    );
    let rounds = ROUNDS as f64;
    let ours_per_scrape = (our_cpu + lxd_for_us) / rounds;
    let lxd_per_scrape = lxd_cpu / rounds;
    let share = lxd_per_scrape / ours_per_scrape.max(1e-9);
    report.row(
        &format!("daemon CPU per cold scrape at {CONTAINERS} real LXD containers"),
        format!(
            "ours {:.1} ms (of which LXD's CPU meanwhile {:.1} ms; in as long a window \
             without a scrape just before: {:.1} ms) vs LXD {:.1} ms = 1/{share:.1} \
             (LXD idle before: {idle})",
            ours_per_scrape * 1e3,
            lxd_for_us / rounds * 1e3,
            lxd_quiet / rounds * 1e3,
            lxd_per_scrape * 1e3,
        ),
        "<= 1/10 of LXD's",
        share >= 10.0,
    );
}
