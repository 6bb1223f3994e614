//! Soak run: the real daemon under many concurrent scrapers and instance churn (real
//! cgroups) for a bounded time, reporting its resident memory, open descriptors and
//! threads at the start, the peak and the end. Exits 1 when a scrape failed or a resource
//! grew past its allowance.
//!
//! ```text
//! cargo run --release -p lxmetrics-tests --bin lxmetrics-soak -- --duration 10m --scrapers 50
//! ```
//!
//! Needs root (cgroups). Loopback only; everything it creates is removed at the end.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lxmetrics_tests::churn::Churned;
use lxmetrics_tests::{proc_status_value, raise_fd_limit, Daemon};

/// What may grow between the start (after warm-up) and the end.
const RSS_ALLOWANCE_KIB: u64 = 16 * 1024;
const FD_ALLOWANCE: u64 = 32;
const THREAD_ALLOWANCE: u64 = 8;

struct Options {
    duration: Duration,
    scrapers: usize,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        duration: Duration::from_secs(600),
        scrapers: 50,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--duration" => {
                options.duration = humantime::parse_duration(&value)
                    .map_err(|e| format!("--duration {value}: {e}"))?
            }
            "--scrapers" => {
                options.scrapers = value
                    .parse()
                    .map_err(|e| format!("--scrapers {value}: {e}"))?
            }
            other => return Err(format!("unknown option {other} (--duration, --scrapers)")),
        }
    }
    Ok(options)
}

#[derive(Clone, Copy)]
struct Resources {
    rss_kib: u64,
    fds: u64,
    threads: u64,
}

/// Descriptors of the daemon, without the cgroup files its collectors keep open between
/// refreshes: those follow the live instances (bounded at 2,048, closed when an instance
/// is gone, plugin/src/kept_files.rs), and this soak creates and destroys instances all
/// the time; a leak would show in the rest.
fn resources(pid: u32) -> Resources {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| {
        d.flatten()
            .filter(|e| {
                !std::fs::read_link(e.path())
                    .is_ok_and(|target| target.starts_with("/sys/fs/cgroup"))
            })
            .count() as u64
    });
    Resources {
        rss_kib: proc_status_value(pid, "VmRSS:"),
        fds,
        threads: proc_status_value(pid, "Threads:"),
    }
}

fn main() {
    let options = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("lxmetrics-soak: {e}");
            std::process::exit(2);
        }
    };
    if !rustix::process::geteuid().is_root() {
        eprintln!("lxmetrics-soak: needs root to create cgroups for instance churn");
        std::process::exit(2);
    }
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ok = runtime.block_on(soak(options));
    std::process::exit(if ok { 0 } else { 1 });
}

async fn soak(options: Options) -> bool {
    let daemon = Daemon::start(&[]);
    let pid = daemon.pid();
    let url = format!("{}/1.0/metrics", daemon.url);
    let stop = Arc::new(AtomicBool::new(false));
    let (scrapes, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));

    let churner = {
        let stop = stop.clone();
        let tag = format!("soak{:x}", std::process::id());
        std::thread::spawn(move || {
            let mut alive = VecDeque::new();
            let mut created = 0u64;
            while !stop.load(Ordering::Relaxed) {
                alive.push_back(Churned::start(&format!("{tag}-{created}")));
                created += 1;
                if alive.len() > 20 {
                    alive.pop_front();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            created
        })
    };

    let mut tasks = Vec::new();
    for _ in 0..options.scrapers {
        // One client each: every scraper holds its own keep-alive connection.
        let client = daemon.client();
        let (url, stop, scrapes, failures) =
            (url.clone(), stop.clone(), scrapes.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                    _ => false,
                };
                let counter = if ok { &scrapes } else { &failures };
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(5)).await;
    let start = resources(pid);
    let mut peak = start;
    let started = Instant::now();
    let mut last_report = Instant::now();
    println!("elapsed  scrapes  failures  rss_kib  fds  threads");
    while started.elapsed() < options.duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = resources(pid);
        peak.rss_kib = peak.rss_kib.max(now.rss_kib);
        peak.fds = peak.fds.max(now.fds);
        peak.threads = peak.threads.max(now.threads);
        if last_report.elapsed() >= Duration::from_secs(30) || started.elapsed() >= options.duration
        {
            last_report = Instant::now();
            println!(
                "{:>6.0}s  {:>7}  {:>8}  {:>7}  {:>3}  {:>7}",
                started.elapsed().as_secs_f64(),
                scrapes.load(Ordering::Relaxed),
                failures.load(Ordering::Relaxed),
                now.rss_kib,
                now.fds,
                now.threads
            );
        }
    }
    // The end figure is taken with the load still on, like the start one.
    let end = resources(pid);
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let churned = churner.join().unwrap_or(0);

    let scrapes = scrapes.load(Ordering::Relaxed);
    let failures = failures.load(Ordering::Relaxed);
    println!();
    println!(
        "{} scrapers, {churned} instances churned, {scrapes} scrapes, {failures} failed",
        options.scrapers
    );
    println!("            start      peak       end");
    println!(
        "rss_kib  {:>8}  {:>8}  {:>8}",
        start.rss_kib, peak.rss_kib, end.rss_kib
    );
    println!("fds      {:>8}  {:>8}  {:>8}", start.fds, peak.fds, end.fds);
    println!(
        "threads  {:>8}  {:>8}  {:>8}",
        start.threads, peak.threads, end.threads
    );

    let mut ok = true;
    let mut check = |what: &str, grew: u64, allowance: u64| {
        let pass = grew <= allowance;
        println!(
            "{} {what} grew by {grew} (allowed {allowance})",
            if pass { "PASS" } else { "FAIL" }
        );
        ok &= pass;
    };
    check(
        "rss_kib",
        end.rss_kib.saturating_sub(start.rss_kib),
        RSS_ALLOWANCE_KIB,
    );
    check("fds", end.fds.saturating_sub(start.fds), FD_ALLOWANCE);
    check(
        "threads",
        end.threads.saturating_sub(start.threads),
        THREAD_ALLOWANCE,
    );
    check("failed scrapes", failures, 0);
    ok && scrapes > 0
}
