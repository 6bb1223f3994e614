//! `filesystem`: size, free and available bytes of each container's root file system
//! (statvfs of `<proc_root>/<pid>/root`) and of every further disk its runtime reports
//! (LXD/Incus `disk` devices: `mountpoint` is the path inside), labelled with the device
//! and type from the container's own `mountinfo`. A further disk is opened inside the
//! container's root (`openat2` with `RESOLVE_IN_ROOT`), so a tenant's symlink cannot
//! point the daemon at a host path. A disk not mounted inside is left out. VMs are
//! skipped: QEMU's root is the host's.
//!
//! A hung file system (a dead NFS server) blocks statvfs in the kernel, uninterruptibly.
//! The calls therefore run on one blocking thread that streams results back; the
//! collector stops waiting when no answer came for `collectors.filesystem.timeout` (a
//! call that long is taken for hung) or, on a host with many containers where the pass
//! is slow but moving, shortly before `metrics.collector_timeout`; it reports the
//! instances it did not hear about as failed, and remembers the path whose call is still
//! in flight. Later refreshes skip that path (one stuck thread, not one per refresh)
//! until the call returns.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lxmetrics_plugin::{
    BuildContext, BuildError, CollectError, Collection, Collector, CollectorSettings, Family,
    FileReader, HostPaths, Instance, InstanceIndex, InstanceType, MetricDesc, Scope, Setting,
};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use serde::{Deserialize, Serialize};

use crate::hostfs::{self, Mount};

lxmetrics_plugin::register_collector!(
    "filesystem",
    "Size, free and available bytes of each instance's root file system (statvfs)",
    FilesystemCollector::build,
    settings = Settings
);

// LXD's HELP texts (lxd/metrics/types.go), wording kept.
const AVAIL: MetricDesc = MetricDesc::gauge(
    "filesystem_avail_bytes",
    "The number of available space in bytes.",
);
const FREE: MetricDesc = MetricDesc::gauge(
    "filesystem_free_bytes",
    "The number of free space in bytes.",
);
const SIZE: MetricDesc = MetricDesc::gauge(
    "filesystem_size_bytes",
    "The size of the filesystem in bytes.",
);

/// `[collectors.filesystem]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    /// How long the collector waits for the next statvfs answer before it takes the
    /// file system for hung (keep it below `metrics.collector_timeout`).
    #[serde(with = "humantime_serde")]
    timeout: Duration,
}

impl CollectorSettings for Settings {
    const KEYS: &'static [Setting] = &[Setting {
        key: "timeout",
        help: "How long the collector waits for the next statvfs answer before it takes the file system for hung; below metrics.collector_timeout",
    }];
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timeout: Duration::from_secs(3),
        }
    }
}

/// Reads root file system usage.
pub struct FilesystemCollector {
    /// The longest silence between two answers.
    timeout: Duration,
    /// The longest wait for the whole pass: just under the engine's deadline, so what was
    /// answered is served rather than lost with the whole collector.
    pass_limit: Duration,
    /// Paths whose statvfs has not returned yet.
    in_flight: Arc<Mutex<HashSet<PathBuf>>>,
    /// What each instance's `mountinfo` said lately.
    mounts: Arc<Mutex<MountCache>>,
}

/// The share of `metrics.collector_timeout` the statvfs pass may take in all.
const PASS_SHARE: f64 = 0.9;

/// How long what a container's `mountinfo` says about its disks (source and type) is
/// reused: the mount table of a container changes when its runtime adds or removes a
/// disk (which changes the instance's disk list, and so the key, at once), and reading
/// `mountinfo` costs more than every other file of a refresh (about 60 µs against 8 to
/// 24). The root's mount does not change while the container's init lives (a restart
/// is a new pid). The usage itself (statvfs) is read on every refresh.
const MOUNTS_MAX_AGE: Duration = Duration::from_secs(300);

/// Per process: when `mountinfo` was read, for which disk list, and the mount of `/` and
/// of each disk.
type MountCache =
    std::collections::HashMap<u32, (std::time::Instant, Vec<String>, Vec<Option<Mount>>)>;

impl FilesystemCollector {
    fn build(ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        let settings: Settings = ctx.settings()?;
        if settings.timeout >= ctx.collector_timeout {
            return Err(format!(
                "collectors.filesystem.timeout ({}) must be below metrics.collector_timeout ({}), \
                 or the whole collector misses its deadline whenever one statvfs hangs",
                humantime::format_duration(settings.timeout),
                humantime::format_duration(ctx.collector_timeout)
            )
            .into());
        }
        let pass_limit = ctx
            .collector_timeout
            .mul_f64(PASS_SHARE)
            .max(settings.timeout);
        Ok(Self::with_limits(settings.timeout, pass_limit))
    }

    /// A collector that waits at most `timeout` for each statvfs answer and `pass_limit`
    /// for them all.
    fn with_limits(timeout: Duration, pass_limit: Duration) -> Self {
        FilesystemCollector {
            timeout,
            pass_limit,
            in_flight: Arc::default(),
            mounts: Arc::default(),
        }
    }
}

/// One file system of an instance: its mount point inside, the mount, the usage.
type FileSystem = (String, Mount, FsUsage);

/// One instance's answer: its file systems; none when its process is gone (the instance
/// stopped) or it is a VM.
type Answer = (InstanceIndex, Result<Vec<FileSystem>, String>);

/// statvfs results in bytes.
#[derive(Clone, Copy, Debug)]
struct FsUsage {
    size: u64,
    free: u64,
    avail: u64,
}

#[lxmetrics_plugin::async_trait]
impl Collector for FilesystemCollector {
    async fn collect(&self, scope: &Scope) -> Result<Collection, CollectError> {
        let (sender, mut answers) = tokio::sync::mpsc::unbounded_channel::<Answer>();
        let instances = scope.instances.clone();
        let host = scope.host.clone();
        let in_flight = self.in_flight.clone();
        let mounts = self.mounts.clone();
        // Detached on purpose: if a call hangs, this thread stays with it.
        drop(tokio::task::spawn_blocking(move || {
            read_all(&instances, &host, &in_flight, &mounts, &sender)
        }));

        let mut out = Collection::new();
        let mut values = Vec::new();
        let mut heard = HashSet::new();
        let (answered, why_not_heard) = gather(&mut answers, self.timeout, self.pass_limit).await;
        for (index, answer) in answered {
            heard.insert(index);
            match answer {
                Ok(v) => values.push((index, v)),
                Err(reason) => out.instance_failed(index, reason),
            }
        }
        for (index, _) in scope.indexed_instances() {
            if !heard.contains(&index) {
                out.instance_failed(index, why_not_heard.clone());
            }
        }
        emit(values, &mut out);
        Ok(out)
    }
}

/// The answers that come before a silence of `timeout` or the end of `pass_limit`, and,
/// when not all came, why.
async fn gather(
    answers: &mut tokio::sync::mpsc::UnboundedReceiver<Answer>,
    timeout: Duration,
    pass_limit: Duration,
) -> (Vec<Answer>, String) {
    let pass_end = tokio::time::Instant::now() + pass_limit;
    let mut answered = Vec::new();
    loop {
        let deadline = (tokio::time::Instant::now() + timeout).min(pass_end);
        match tokio::time::timeout_at(deadline, answers.recv()).await {
            Ok(Some(answer)) => answered.push(answer),
            // The pass ended: every instance answered, unless it stopped early.
            Ok(None) => return (answered, "the statvfs pass ended early".to_owned()),
            Err(_) if deadline == pass_end => {
                let why = format!(
                    "statvfs pass not finished within {pass_limit:?} (collectors.filesystem \
                     stops just before metrics.collector_timeout)"
                );
                return (answered, why);
            }
            Err(_) => {
                let why = format!("no statvfs answer for {timeout:?} (a hung file system?)");
                return (answered, why);
            }
        }
    }
}

fn read_all(
    instances: &[Instance],
    host: &HostPaths,
    in_flight: &Mutex<HashSet<PathBuf>>,
    mounts: &Mutex<MountCache>,
    answers: &tokio::sync::mpsc::UnboundedSender<Answer>,
) {
    let mut files = FileReader::new();
    let now = std::time::Instant::now();
    let mut seen = HashSet::with_capacity(instances.len());
    for (index, instance) in (0..).zip(instances) {
        let answer = match instance.pid {
            Some(pid) if instance.kind == InstanceType::Container => {
                let proc_dir = host.proc_root.join(pid.to_string());
                seen.insert(pid);
                let answer = known_mounts(mounts, pid, &instance.mounts, now)
                    .map(Ok)
                    .unwrap_or_else(|| {
                        let found = mounts_of(&proc_dir, &instance.mounts, &mut files)?;
                        let mut cache = mounts.lock().unwrap_or_else(|p| p.into_inner());
                        cache.insert(pid, (now, instance.mounts.clone(), found.clone()));
                        Ok(found)
                    })
                    .and_then(|found| read_one(&proc_dir, &instance.mounts, found, in_flight));
                match answer {
                    // The container stopped since discovery: nothing to say, no failure.
                    // Asked only then, so a running one costs no extra lookup.
                    Err(_) if !proc_dir.is_dir() => Ok(Vec::new()),
                    answer => answer,
                }
            }
            _ => Ok(Vec::new()),
        };
        if answers.send((index, answer)).is_err() {
            return; // the collector stopped listening
        }
    }
    // Processes gone since are forgotten.
    let mut cache = mounts.lock().unwrap_or_else(|p| p.into_inner());
    cache.retain(|pid, _| seen.contains(pid));
}

/// What `mountinfo` said lately for process `pid` with these disks, if it is recent.
fn known_mounts(
    mounts: &Mutex<MountCache>,
    pid: u32,
    disks: &[String],
    now: std::time::Instant,
) -> Option<Vec<Option<Mount>>> {
    let cache = mounts.lock().unwrap_or_else(|p| p.into_inner());
    cache
        .get(&pid)
        .filter(|(at, said_for, _)| now.duration_since(*at) < MOUNTS_MAX_AGE && said_for == disks)
        .map(|(_, _, found)| found.clone())
}

/// What `<proc_dir>/mountinfo` says is mounted on `/` and on each of `mounts`.
fn mounts_of(
    proc_dir: &std::path::Path,
    mounts: &[String],
    files: &mut FileReader,
) -> Result<Vec<Option<Mount>>, String> {
    let paths: Vec<&str> = std::iter::once("/")
        .chain(mounts.iter().map(String::as_str))
        .collect();
    files
        .parse(&proc_dir.join("mountinfo"), |text| {
            hostfs::mountinfo_at(text, &paths)
        })
        .map_err(|e| e.to_string())
}

/// The root file system and the further `mounts` of one container, whose mounts
/// (`found`, from [`mounts_of`]) are known.
fn read_one(
    proc_dir: &std::path::Path,
    mounts: &[String],
    found: Vec<Option<Mount>>,
    in_flight: &Mutex<HashSet<PathBuf>>,
) -> Result<Vec<FileSystem>, String> {
    let mut found = found.into_iter();
    let root_mount = found
        .next()
        .flatten()
        .ok_or_else(|| format!("{}: no mount on /", proc_dir.join("mountinfo").display()))?;
    let root = proc_dir.join("root");
    let usage = guarded(in_flight, &root, || rustix::fs::statvfs(&root))?;
    let mut out = vec![("/".to_owned(), root_mount, usage)];
    for (path, mount) in mounts.iter().zip(found) {
        let Some(mount) = mount else {
            continue; // configured but not mounted inside: nothing to measure
        };
        let key = root.join(path.trim_start_matches('/'));
        let usage = guarded(in_flight, &key, || {
            let dir = rustix::fs::open(
                &root,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let fd = rustix::fs::openat2(
                &dir,
                path.trim_start_matches('/'),
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            )?;
            rustix::fs::fstatvfs(&fd)
        });
        match usage {
            Ok(usage) => out.push((path.clone(), mount, usage)),
            Err(e) => tracing::debug!("disk left out: {e}"),
        }
    }
    Ok(out)
}

/// Runs one statvfs-like call for `path` unless an earlier call for it is still in
/// flight (a hung file system holds one thread, not one per refresh).
fn guarded(
    in_flight: &Mutex<HashSet<PathBuf>>,
    path: &std::path::Path,
    call: impl FnOnce() -> rustix::io::Result<rustix::fs::StatVfs>,
) -> Result<FsUsage, String> {
    {
        let mut set = in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(path.to_owned()) {
            return Err(format!(
                "{}: skipped, an earlier statvfs has not returned yet",
                path.display()
            ));
        }
    }
    let result = call();
    in_flight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(path);
    let stat = result.map_err(|e| format!("{}: statvfs: {e}", path.display()))?;
    let unit = stat.f_frsize;
    Ok(FsUsage {
        size: stat.f_blocks.saturating_mul(unit),
        free: stat.f_bfree.saturating_mul(unit),
        avail: stat.f_bavail.saturating_mul(unit),
    })
}

fn emit(values: Vec<(InstanceIndex, Vec<FileSystem>)>, out: &mut Collection) {
    let labels = ["device", "fstype", "mountpoint"];
    let mut avail = Family::new(AVAIL, &labels);
    let mut free = Family::new(FREE, &labels);
    let mut size = Family::new(SIZE, &labels);
    for (index, file_systems) in values {
        for (mountpoint, mount, usage) in file_systems {
            let l = [
                mount.device.as_str(),
                mount.fstype.as_str(),
                mountpoint.as_str(),
            ];
            avail.push(index, l, usage.avail as f64);
            free.push(index, l, usage.free as f64);
            size.push(index, l, usage.size as f64);
        }
    }
    out.push(avail);
    out.push(free);
    out.push(size);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn scope() -> Scope {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2");
        let mut web = Instance::container("web", "lxc.payload.web");
        web.pid = Some(101);
        let mut db = Instance::container("db", "lxc.payload.prod_db");
        db.pid = Some(201);
        Scope::new(vec![web, db], HostPaths::under(fixture))
    }

    #[tokio::test]
    async fn a_path_still_in_flight_is_skipped_and_the_rest_served() {
        let scope = scope();
        let collector =
            FilesystemCollector::with_limits(Duration::from_secs(5), Duration::from_secs(5));
        let hung = scope.host.proc_root.join("101/root");
        collector.in_flight.lock().unwrap().insert(hung.clone());
        let out = collector.collect(&scope).await.unwrap();
        assert_eq!(out.failures.len(), 1);
        assert_eq!(out.failures[0].instance, 0);
        assert!(
            out.failures[0].reason.contains("has not returned yet"),
            "{:?}",
            out.failures
        );
        assert_eq!(out.families[2].samples.len(), 1, "db still served");
        // Once the hung call returns (the path leaves the set), the path is read again.
        collector.in_flight.lock().unwrap().remove(&hung);
        let out = collector.collect(&scope).await.unwrap();
        assert!(out.failures.is_empty());
        assert_eq!(out.families[2].samples.len(), 2);
    }

    /// A tenant turns the path of one of its disks into a link to a host path: the link
    /// resolves inside the container's root (where `/proc` is not), so that disk is left
    /// out instead of reporting the host's proc file system; the real disk is served.
    #[test]
    fn a_disk_path_linked_out_of_the_container_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let proc_dir = dir.path().join("4242");
        let root = proc_dir.join("root");
        std::fs::create_dir_all(root.join("mnt/real")).unwrap();
        std::fs::create_dir_all(root.join("mnt")).unwrap();
        std::os::unix::fs::symlink("/proc", root.join("mnt/data")).unwrap();
        std::fs::write(
            proc_dir.join("mountinfo"),
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
             2 1 8:2 / /mnt/data rw - ext4 /dev/sdb1 rw\n\
             3 1 8:3 / /mnt/real rw - xfs /dev/sdc1 rw\n",
        )
        .unwrap();
        let mounts = ["/mnt/data".to_owned(), "/mnt/real".to_owned()];
        let mounted = mounts_of(&proc_dir, &mounts, &mut FileReader::new()).unwrap();
        let found = read_one(&proc_dir, &mounts, mounted, &Mutex::default()).unwrap();
        let points: Vec<&str> = found.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(points, ["/", "/mnt/real"]);
        assert_eq!(found[1].1.fstype, "xfs");
    }

    /// Answers 30 ms apart: a slow pass that keeps moving is waited for past `timeout`;
    /// a silence longer than `timeout`, or the end of the pass limit, stops the wait.
    #[tokio::test]
    async fn a_slow_pass_is_waited_for_while_it_moves() {
        let feed = |gaps: Vec<u64>| {
            let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<Answer>();
            std::thread::spawn(move || {
                for (i, gap) in gaps.into_iter().enumerate() {
                    std::thread::sleep(Duration::from_millis(gap));
                    if sender.send((i as InstanceIndex, Ok(Vec::new()))).is_err() {
                        return;
                    }
                }
            });
            receiver
        };
        let ms = Duration::from_millis;
        let mut moving = feed(vec![30; 6]);
        let (answered, _) = gather(&mut moving, ms(150), ms(5000)).await;
        assert_eq!(answered.len(), 6, "180 ms in all, 30 ms apart");

        let mut stuck = feed(vec![30, 30, 600, 30]);
        let (answered, why) = gather(&mut stuck, ms(150), ms(5000)).await;
        assert_eq!(answered.len(), 2);
        assert!(why.contains("no statvfs answer for 150ms"), "{why}");

        let mut long = feed(vec![30; 40]);
        let (answered, why) = gather(&mut long, ms(150), ms(300)).await;
        assert!((3..=12).contains(&answered.len()), "{}", answered.len());
        assert!(why.contains("pass not finished within 300ms"), "{why}");
    }

    #[tokio::test]
    async fn instances_not_answered_in_time_fail_without_blocking_the_refresh() {
        let scope = scope();
        let collector = FilesystemCollector::with_limits(Duration::ZERO, Duration::from_secs(5));
        let out = collector.collect(&scope).await.unwrap();
        // With no time to wait, nothing counts as answered; nothing is served as zero.
        assert_eq!(out.failures.len() + out.families[0].samples.len(), 2);
        assert!(
            out.families[2].samples.iter().all(|s| s.value > 0.0),
            "sizes are real"
        );
    }
}
