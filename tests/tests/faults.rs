//! Fault injection against the real daemon: a full disk under the state directory,
//! SIGTERM in the middle of a burst of scrapes, and instances (real cgroups) created and
//! destroyed at a high rate while refreshes run.
//!
//! Needs root (to mount a tmpfs and create cgroups).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lxmetrics_tests::churn::Churned;
use lxmetrics_tests::{state_with_config, ClientCert, Daemon};

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (to mount a tmpfs or create cgroups)"
    );
}

/// A small tmpfs mounted over a directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(ok.success(), "mounting a tmpfs on {} failed", dir.display());
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes until the file system says it is full; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("create filler");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = file.write_all(&chunk).and_then(|()| file.sync_all()) {
            assert_eq!(
                e.raw_os_error(),
                Some(rustix::io::Errno::NOSPC.raw_os_error()),
                "filling the tmpfs: {e}"
            );
            return path;
        }
    }
}

/// `trust add` of `cert`, whose PEM is written to `dir` (not the full state directory).
fn trust_add(daemon: &Daemon, dir: &Path, cert: &ClientCert, stem: &str) -> std::process::Output {
    let path = dir.join(format!("{stem}.crt"));
    std::fs::write(&path, &cert.cert_pem).expect("write certificate");
    daemon.cli(&[
        "trust",
        "add",
        path.to_str().expect("utf-8 path"),
        "--type=metrics",
    ])
}

fn listed_fingerprints(daemon: &Daemon) -> Vec<String> {
    let out = daemon.cli(&["trust", "list", "--format=json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    list.as_array()
        .expect("array")
        .iter()
        .map(|c| c["fingerprint"].as_str().expect("fingerprint").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_trust_add_clearly_and_loses_nothing() {
    require_root();
    // The tmpfs is mounted before the daemon writes anything into its state directory.
    let state = tempfile::tempdir().expect("tempdir");
    let mount = Tmpfs::mount(state.path(), "4m");
    let daemon = Daemon::start_in(state, &[]);
    let certs = tempfile::tempdir().expect("tempdir for certificate files");

    let kept = ClientCert::generate("kept.local");
    let out = trust_add(&daemon, certs.path(), &kept, "kept");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kept_fingerprint = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let before = listed_fingerprints(&daemon);
    assert!(before.contains(&kept_fingerprint));

    let filler = fill(daemon.state_dir.path());
    // Enough certificates to need new database pages.
    let mut refused = 0;
    let mut acknowledged = before.clone();
    for i in 0..20 {
        let cert = ClientCert::generate(&format!("too-many-{i}.local"));
        let out = trust_add(&daemon, certs.path(), &cert, &format!("full-{i}"));
        if !out.status.success() {
            refused += 1;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("full") || stderr.contains("space"),
                "trust add on a full disk must say so: {stderr}"
            );
            assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        } else {
            acknowledged.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        }
    }
    assert!(refused > 0, "no trust add failed on a full disk");

    // Still serving, to the trusted client and to the certificate stored before.
    let (status, _) = daemon.get("/1.0/metrics").await;
    assert_eq!(status, 200);

    std::fs::remove_file(filler).expect("free the disk");
    // Everything acknowledged (before and during the fault) is there, now and after a
    // crash and restart.
    let after = listed_fingerprints(&daemon);
    for fingerprint in &acknowledged {
        assert!(after.contains(fingerprint), "{fingerprint} was lost");
    }
    let state = daemon.kill9();
    let restarted = Daemon::start_in(state, &[]);
    let listed = listed_fingerprints(&restarted);
    for fingerprint in &acknowledged {
        assert!(
            listed.contains(fingerprint),
            "{fingerprint} lost on restart"
        );
    }
    drop(restarted);
    drop(mount);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_scrape_burst_finishes_in_flight_requests_and_exits_0() {
    let mut daemon = Daemon::start(&[]);
    let client = daemon.client();
    let url = format!("{}/1.0/metrics", daemon.url);
    let _ = client.get(&url).send().await.expect("warm-up scrape");

    let stop = Arc::new(AtomicBool::new(false));
    let mut scrapers = Vec::new();
    for _ in 0..32 {
        let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
        scrapers.push(tokio::spawn(async move {
            let (mut complete, mut refused) = (0u32, 0u32);
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    // Once the headers came, the body must come whole.
                    Ok(response) => {
                        assert_eq!(response.status(), 200);
                        let body = response.text().await.expect("a started response was cut");
                        assert!(body.contains("lxd_uptime_seconds"), "truncated body");
                        complete += 1;
                    }
                    Err(_) => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (complete, refused)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = Instant::now();
    let status = tokio::task::block_in_place(|| daemon.terminate(Duration::from_secs(5)))
        .expect("the daemon did not exit within 5 s of SIGTERM");
    let took = signalled.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut complete = 0;
    for scraper in scrapers {
        let (c, _) = scraper.await.expect("a scraper saw a cut response");
        complete += c;
    }
    assert!(status.success(), "exit status {status:?} after {took:?}");
    assert!(
        complete > 32,
        "the burst never got going ({complete} responses)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_churning_during_refreshes_never_break_a_scrape() {
    require_root();
    assert!(
        Path::new("/sys/fs/cgroup/pids").is_dir()
            || Path::new("/sys/fs/cgroup/cgroup.controllers").is_file(),
        "no cgroup hierarchy at /sys/fs/cgroup"
    );
    let state = state_with_config("[metrics]\ncache_ttl = \"0s\"\n");
    let daemon = Daemon::start_in(state, &[]);
    let tag = format!("churn{:x}", std::process::id());

    let stop = Arc::new(AtomicBool::new(false));
    let churner = {
        let (stop, tag) = (stop.clone(), tag.clone());
        std::thread::spawn(move || {
            let mut alive = std::collections::VecDeque::new();
            let mut created = 0u32;
            while !stop.load(Ordering::Relaxed) {
                alive.push_back(Churned::start(&format!("{tag}-{created}")));
                created += 1;
                if alive.len() > 8 {
                    alive.pop_front(); // destroyed: process killed, cgroup removed
                }
                std::thread::sleep(Duration::from_millis(15));
            }
            drop(alive);
            created
        })
    };

    let client = daemon.client();
    let url = format!("{}/1.0/metrics", daemon.url);
    let mut scrapes = 0;
    let mut saw_churned = false;
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline {
        let response = client.get(&url).send().await.expect("scrape");
        assert_eq!(response.status(), 200);
        let body = response.text().await.expect("body");
        saw_churned |= body.contains(&format!("name=\"{tag}-"));
        for line in body
            .lines()
            .filter(|l| l.starts_with("lxd_metrics_collector_success{"))
        {
            assert!(
                line.ends_with(" 1"),
                "a collector failed under churn: {line}"
            );
        }
        scrapes += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let created = churner.join().expect("churner");
    assert!(created > 50, "only {created} instances were churned");
    assert!(
        saw_churned,
        "no churned instance was ever seen in {scrapes} scrapes"
    );

    // Everything is gone: the next refresh has no series for any of them.
    let (_, body) = daemon.get("/1.0/metrics").await;
    assert!(
        !body.contains(&format!("name=\"{tag}-")),
        "series of destroyed instances are still served"
    );
}
