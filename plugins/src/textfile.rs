//! `textfile`: series from `*.prom` files that other programs write, as node_exporter's
//! textfile collector does, with instance scoping.
//!
//! Layout of `collectors.textfile.directory`:
//! - `<directory>/*.prom`: host series (no instance labels);
//! - `<directory>/<project>/<name>/*.prom`: series of that instance, which get its
//!   `name`, `project` and `type` labels; read only while the instance runs.
//!
//! Writers follow the atomic-rename convention: write `x.prom.tmp` (or any name not
//! ending in `.prom`, or starting with `.`), then rename it to `x.prom`, so a reader
//! sees the old file or the new one, never half of one. A file with any error is
//! skipped whole, logged once, and reported as `lxd_textfile_scrape_error{file} 1`.
//! Symbolic links are not followed and only regular files are read, so an instance
//! that can write its own directory cannot make the daemon read anything else (or block
//! on a FIFO).

use std::collections::{HashMap, HashSet};
use std::fs::{File, Metadata};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use lxmetrics_plugin::{
    run_blocking, BuildContext, BuildError, CollectError, Collection, Collector, CollectorSettings,
    Family, Instance, InstanceIndex, MetricDesc, Scope, SeriesOf, Setting,
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::problem_log::ProblemLog;
use crate::prom_text;
use crate::relay::RelayedFamilies;

lxmetrics_plugin::register_collector!(
    "textfile",
    "Series from *.prom files in collectors.textfile.directory (per instance under <project>/<name>/)",
    TextfileCollector::build,
    settings = Settings,
    enabled = false
);

const SCRAPE_ERROR: MetricDesc = MetricDesc::gauge(
    "textfile_scrape_error",
    "1 if the textfile could not be read or parsed and was skipped, 0 if it was served",
);
const MTIME: MetricDesc = MetricDesc::gauge(
    "textfile_mtime_seconds",
    "Modification time of a textfile that was served, in seconds since the epoch",
);

/// `[collectors.textfile]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    /// Where the `*.prom` files are.
    directory: Option<PathBuf>,
    /// A larger file is refused whole.
    max_file_bytes: u64,
    /// Bytes read per refresh from one instance's directory: one tenant's files cannot
    /// make the refresh slow for everyone; a file past it is refused whole.
    max_instance_bytes: u64,
    /// Bytes read per refresh in all: the memory a refresh may spend on textfiles.
    max_refresh_bytes: u64,
}

impl CollectorSettings for Settings {
    const KEYS: &'static [Setting] = &[
        Setting {
            key: "directory",
            help:
                "Where the *.prom files are (host files at the top, <project>/<name>/ per instance)",
        },
        Setting {
            key: "max_file_bytes",
            help: "A larger file is refused whole",
        },
        Setting {
            key: "max_instance_bytes",
            help: "Bytes read per refresh from one instance's directory; later files are refused",
        },
        Setting {
            key: "max_refresh_bytes",
            help: "Bytes read per refresh in all",
        },
    ];
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            directory: None,
            max_file_bytes: 4 * 1024 * 1024,
            max_instance_bytes: 4 * 1024 * 1024,
            max_refresh_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The byte budgets of one refresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ByteBudgets {
    /// `collectors.textfile.max_file_bytes`.
    pub(crate) file: u64,
    /// `collectors.textfile.max_instance_bytes`.
    pub(crate) instance: u64,
    /// `collectors.textfile.max_refresh_bytes`.
    pub(crate) refresh: u64,
}

impl Default for ByteBudgets {
    fn default() -> Self {
        let s = Settings::default();
        ByteBudgets {
            file: s.max_file_bytes,
            instance: s.max_instance_bytes,
            refresh: s.max_refresh_bytes,
        }
    }
}

/// What is left of the budgets while a refresh reads.
struct Remaining {
    refresh: u64,
    instance: u64,
}

impl Remaining {
    /// The most a file may have here, and the setting that says so.
    fn limit(&self, budgets: &ByteBudgets, per_instance: bool) -> (u64, &'static str) {
        let mut limit = (budgets.file, "collectors.textfile.max_file_bytes");
        if per_instance && self.instance < limit.0 {
            limit = (self.instance, "collectors.textfile.max_instance_bytes");
        }
        if self.refresh < limit.0 {
            limit = (self.refresh, "collectors.textfile.max_refresh_bytes");
        }
        limit
    }

    fn spend(&mut self, bytes: u64) {
        self.refresh = self.refresh.saturating_sub(bytes);
        self.instance = self.instance.saturating_sub(bytes);
    }
}

/// Reads `*.prom` files each refresh.
#[derive(Debug)]
pub struct TextfileCollector {
    directory: PathBuf,
    budgets: ByteBudgets,
    metric_prefix: String,
    problems: Arc<ProblemLog>,
}

impl TextfileCollector {
    fn build(ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        let settings: Settings = ctx.settings()?;
        let directory = settings.directory.ok_or(
            "collectors.textfile.directory: required when the textfile collector is enabled",
        )?;
        if !directory.is_absolute() {
            return Err(format!(
                "collectors.textfile.directory: \"{}\" is not an absolute path",
                directory.display()
            )
            .into());
        }
        if !directory.is_dir() {
            tracing::warn!(
                "collectors.textfile.directory {} does not exist (yet): the textfile \
                 collector reports failure until it does",
                directory.display()
            );
        }
        Ok(TextfileCollector::new(
            directory,
            ByteBudgets {
                file: settings.max_file_bytes,
                instance: settings.max_instance_bytes,
                refresh: settings.max_refresh_bytes,
            },
            ctx.metric_prefix,
        ))
    }

    /// A collector reading `directory` within `budgets`; `metric_prefix` is the daemon's,
    /// which textfiles may not use.
    pub(crate) fn new(directory: PathBuf, budgets: ByteBudgets, metric_prefix: &str) -> Self {
        TextfileCollector {
            directory,
            budgets,
            metric_prefix: metric_prefix.to_owned(),
            problems: Arc::new(ProblemLog::new("textfile")),
        }
    }
}

#[async_trait]
impl Collector for TextfileCollector {
    async fn collect(&self, scope: &Scope) -> Result<Collection, CollectError> {
        let reader = Reader {
            directory: self.directory.clone(),
            budgets: self.budgets,
            metric_prefix: self.metric_prefix.clone(),
            problems: self.problems.clone(),
        };
        let instances = scope.instances.clone();
        run_blocking(move || reader.read_all(&instances)).await?
    }
}

/// The blocking part of a refresh.
struct Reader {
    directory: PathBuf,
    budgets: ByteBudgets,
    metric_prefix: String,
    problems: Arc<ProblemLog>,
}

/// The files of one refresh: their outcomes, and every source seen (for the problem
/// log).
#[derive(Default)]
struct Statuses {
    list: Vec<FileStatus>,
    seen: HashSet<String>,
}

impl Statuses {
    fn add(&mut self, source: String, status: FileStatus) {
        self.seen.insert(source);
        self.list.push(status);
    }
}

/// The outcome of each file, for the status families.
struct FileStatus {
    instance: Option<InstanceIndex>,
    file: String,
    served: bool,
    mtime: Option<f64>,
}

impl Reader {
    fn read_all(&self, instances: &[Instance]) -> Result<Collection, CollectError> {
        let mut relayed = RelayedFamilies::new(&self.metric_prefix, "Metric read from a textfile");
        let mut statuses = Statuses::default();
        let mut remaining = Remaining {
            refresh: self.budgets.refresh,
            instance: self.budgets.instance,
        };
        let by_project_name: HashMap<(&str, &str), InstanceIndex> = (0..)
            .zip(instances)
            .map(|(i, inst)| ((inst.project.as_str(), inst.name.as_str()), i))
            .collect();

        for entry in self.sorted_entries(&self.directory)? {
            let (path, file_type) = entry;
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if file_type.is_dir() {
                self.read_project(
                    &path,
                    file_name,
                    &by_project_name,
                    &mut relayed,
                    &mut statuses,
                    &mut remaining,
                );
            } else if is_textfile_name(file_name) {
                let source = file_name.to_owned();
                let status = self.read_source(&path, &source, None, &mut relayed, &mut remaining);
                statuses.add(source, status);
            }
        }
        self.problems.retain(&statuses.seen);

        let mut collection = Collection::new();
        collection.families = relayed.into_families();
        let mut errors = Family::new(SCRAPE_ERROR, &["file"]);
        let mut mtimes = Family::new(MTIME, &["file"]);
        for status in statuses.list {
            push(
                &mut errors,
                status.instance,
                &status.file,
                f64::from(u8::from(!status.served)),
            );
            if let Some(mtime) = status.mtime {
                push(&mut mtimes, status.instance, &status.file, mtime);
            }
        }
        collection.push(errors);
        collection.push(mtimes);
        Ok(collection)
    }

    /// `<directory>/<project>/`: each subdirectory named after a running instance.
    fn read_project(
        &self,
        dir: &Path,
        project: &str,
        instances: &HashMap<(&str, &str), InstanceIndex>,
        relayed: &mut RelayedFamilies,
        statuses: &mut Statuses,
        remaining: &mut Remaining,
    ) {
        let Ok(entries) = self.sorted_entries(dir) else {
            return;
        };
        for (path, file_type) in entries {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(&instance) = instances.get(&(project, name)) else {
                continue; // not running (or not an instance): its files wait
            };
            if !file_type.is_dir() {
                continue;
            }
            let Ok(files) = self.sorted_entries(&path) else {
                continue;
            };
            remaining.instance = self.budgets.instance;
            for (file, _) in files {
                let Some(file_name) = file.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if !is_textfile_name(file_name) {
                    continue;
                }
                let source = format!("{project}/{name}/{file_name}");
                let mut status =
                    self.read_source(&file, &source, Some(instance), relayed, remaining);
                status.file = file_name.to_owned();
                statuses.add(source, status);
            }
        }
    }

    /// Reads, parses and relays one file; logs a problem once.
    fn read_source(
        &self,
        path: &Path,
        source: &str,
        instance: Option<InstanceIndex>,
        relayed: &mut RelayedFamilies,
        remaining: &mut Remaining,
    ) -> FileStatus {
        let limit = remaining.limit(&self.budgets, instance.is_some());
        let read = read_textfile(path, limit);
        if let Ok((text, _)) = &read {
            remaining.spend(text.len() as u64);
        }
        let outcome = read.and_then(|(text, metadata)| {
            let families = prom_text::parse(&text).map_err(|e| e.to_string())?;
            relayed.add(families, instance)?;
            // A modification time the file system cannot give is left out, not sent as 0.
            Ok(metadata
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64()))
        });
        self.problems
            .record(source, outcome.as_ref().map(|_| ()).map_err(String::as_str));
        FileStatus {
            instance,
            file: source.to_owned(),
            served: outcome.is_ok(),
            mtime: outcome.ok().flatten(),
        }
    }

    /// A directory's entries with their types (symlinks not followed), sorted by name so
    /// the output order is stable.
    fn sorted_entries(
        &self,
        dir: &Path,
    ) -> Result<Vec<(PathBuf, std::fs::FileType)>, CollectError> {
        let io = |source| CollectError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            if let Ok(file_type) = entry.file_type() {
                entries.push((entry.path(), file_type));
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }
}

/// `*.prom`, not hidden: the names a writer renames finished files to.
fn is_textfile_name(name: &str) -> bool {
    name.ends_with(".prom") && !name.starts_with('.') && name.len() > ".prom".len()
}

fn push(family: &mut Family, instance: Option<InstanceIndex>, file: &str, value: f64) {
    match instance {
        Some(i) => family.push(i, [file], value),
        None => family.push(SeriesOf::HOST, [file], value),
    }
}

/// Reads a whole textfile: a regular file, not through a symlink, at most `limit.0`
/// bytes (the budget named `limit.1`), UTF-8. Opened non-blocking so a FIFO put in its
/// place cannot stall the refresh.
fn read_textfile(path: &Path, limit: (u64, &str)) -> Result<(String, Metadata), String> {
    let (max, setting) = limit;
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = File::options()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(code) if code == rustix::io::Errno::LOOP.raw_os_error() => {
                "symbolic links are not followed".to_owned()
            }
            _ => format!("cannot open: {e}"),
        })?;
    let metadata = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !metadata.is_file() {
        return Err("not a regular file".to_owned());
    }
    if metadata.len() > max {
        return Err(format!(
            "{} bytes is over what {setting} leaves ({max})",
            metadata.len()
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    lxmetrics_plugin::read_capped(file, max, &mut bytes).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => format!("over what {setting} leaves ({max})"),
        _ => format!("cannot read: {e}"),
    })?;
    String::from_utf8(bytes)
        .map_err(|_| "not UTF-8".to_owned())
        .map(|text| (text, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(name: &str, project: &str) -> Instance {
        let mut instance = Instance::container(name, format!("lxc.payload.{name}"));
        instance.project = project.into();
        instance
    }

    fn write(dir: &Path, rel: &str, text: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const SMALL: ByteBudgets = ByteBudgets {
        file: 1024,
        instance: 4096,
        refresh: 1 << 20,
    };

    fn collect(dir: &Path, instances: Vec<Instance>) -> Collection {
        collect_within(dir, instances, SMALL)
    }

    fn collect_within(dir: &Path, instances: Vec<Instance>, budgets: ByteBudgets) -> Collection {
        let reader = Reader {
            directory: dir.to_owned(),
            budgets,
            metric_prefix: "lxd".into(),
            problems: Arc::new(ProblemLog::new("textfile")),
        };
        reader.read_all(&instances).unwrap()
    }

    /// A file of `series` lines of family `name`, about 30 bytes a line.
    fn lines(name: &str, series: usize) -> String {
        (0..series)
            .map(|i| format!("{name}{{i=\"{i}\"}} {i}\n"))
            .collect()
    }

    #[test]
    fn one_tenant_over_its_budget_loses_only_its_own_files() {
        let dir = tempfile::tempdir().unwrap();
        // The greedy tenant: ten files of about 900 bytes, each under the file limit.
        for f in 0..10 {
            write(
                dir.path(),
                &format!("a/greedy/f{f}.prom"),
                &lines(&format!("g{f}"), 60),
            );
        }
        write(dir.path(), "b/quiet/app.prom", &lines("quiet", 3));
        write(dir.path(), "host.prom", &lines("host", 3));
        let c = collect(
            dir.path(),
            vec![instance("greedy", "a"), instance("quiet", "b")],
        );
        // The greedy tenant's first files fit its 4 KiB; the rest are refused, reported.
        let served: Vec<f64> = (0..10)
            .map(|f| status(&c, Some(0), &format!("f{f}.prom")).unwrap())
            .collect();
        assert_eq!(
            served.iter().filter(|s| **s == 0.0).count(),
            4,
            "{served:?}"
        );
        assert_eq!(served[9], 1.0);
        // Everyone else is served.
        assert_eq!(status(&c, Some(1), "app.prom"), Some(0.0));
        assert_eq!(status(&c, None, "host.prom"), Some(0.0));
        assert_eq!(find(&c, "quiet").samples.len(), 3);
        assert_eq!(find(&c, "host").samples.len(), 3);

        // The refresh budget caps the whole read: memory is bounded by it.
        let tight = ByteBudgets {
            refresh: 2048,
            ..SMALL
        };
        let c = collect_within(
            dir.path(),
            vec![instance("greedy", "a"), instance("quiet", "b")],
            tight,
        );
        let read: usize = c
            .families
            .iter()
            .filter(|f| {
                f.desc.name != "textfile_scrape_error" && f.desc.name != "textfile_mtime_seconds"
            })
            .map(|f| f.samples.len())
            .sum();
        // No series line is shorter than 12 bytes.
        assert!(
            read > 0 && read <= 2048 / 12,
            "{read} series from a 2 KiB budget"
        );
    }

    fn find<'a>(c: &'a Collection, name: &str) -> &'a Family {
        c.families
            .iter()
            .find(|f| f.desc.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    fn status(c: &Collection, instance: Option<u32>, file: &str) -> Option<f64> {
        find(c, "textfile_scrape_error")
            .samples
            .iter()
            .find(|s| s.instance == instance && &s.label_values[0] == file)
            .map(|s| s.value)
    }

    #[test]
    fn host_and_instance_files_are_served_with_their_scope() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "backup.prom",
            "# TYPE backup_age_seconds gauge\nbackup_age_seconds 42\n",
        );
        write(
            dir.path(),
            "default/web/app.prom",
            "app_requests_total{code=\"200\"} 7\n",
        );
        write(
            dir.path(),
            "prod/db/app.prom",
            "app_requests_total{code=\"200\"} 9\n",
        );
        write(
            dir.path(),
            "default/stopped/app.prom",
            "app_requests_total{code=\"200\"} 1\n",
        );
        write(dir.path(), "default/web/app.prom.tmp", "half");
        write(dir.path(), ".hidden.prom", "half");
        let c = collect(
            dir.path(),
            vec![instance("web", "default"), instance("db", "prod")],
        );

        let backup = find(&c, "backup_age_seconds");
        assert_eq!(backup.samples[0].instance, None);
        let requests = find(&c, "app_requests_total");
        let got: Vec<_> = requests
            .samples
            .iter()
            .map(|s| (s.instance, s.value))
            .collect();
        assert_eq!(got, vec![(Some(0), 7.0), (Some(1), 9.0)]);
        assert_eq!(status(&c, None, "backup.prom"), Some(0.0));
        assert_eq!(status(&c, Some(0), "app.prom"), Some(0.0));
        assert_eq!(find(&c, "textfile_scrape_error").samples.len(), 3);
        assert_eq!(find(&c, "textfile_mtime_seconds").samples.len(), 3);
    }

    #[test]
    fn a_malformed_file_is_skipped_whole_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "good.prom", "good_metric 1\n");
        write(dir.path(), "bad.prom", "half_metric 1\nbroken{ 2\n");
        let c = collect(dir.path(), vec![]);
        assert!(c.families.iter().all(|f| f.desc.name != "half_metric"));
        assert_eq!(find(&c, "good_metric").samples.len(), 1);
        assert_eq!(status(&c, None, "bad.prom"), Some(1.0));
        assert_eq!(status(&c, None, "good.prom"), Some(0.0));
        let mtimes = find(&c, "textfile_mtime_seconds");
        assert!(mtimes
            .samples
            .iter()
            .all(|s| &s.label_values[0] != "bad.prom"));
    }

    #[test]
    fn an_instance_file_cannot_speak_for_another_instance() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "default/evil/x.prom",
            "fake_metric{name=\"victim\",project=\"default\",type=\"container\"} 1\n",
        );
        let c = collect(
            dir.path(),
            vec![instance("evil", "default"), instance("victim", "default")],
        );
        assert!(c.families.iter().all(|f| f.desc.name != "fake_metric"));
        assert_eq!(status(&c, Some(0), "x.prom"), Some(1.0));
    }

    #[test]
    fn symlinks_fifos_and_big_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "secret_metric 1\n").unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("link.prom")).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            dir.path().join("fifo.prom"),
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        write(dir.path(), "big.prom", &"a 1\n".repeat(300));
        let c = collect(dir.path(), vec![]);
        for file in ["link.prom", "fifo.prom", "big.prom"] {
            assert_eq!(status(&c, None, file), Some(1.0), "{file}");
        }
        assert!(c.families.iter().all(|f| f.desc.name != "secret_metric"));
    }

    #[test]
    fn a_missing_directory_fails_the_collector() {
        let dir = tempfile::tempdir().unwrap();
        let reader = Reader {
            directory: dir.path().join("absent"),
            budgets: SMALL,
            metric_prefix: "lxd".into(),
            problems: Arc::new(ProblemLog::new("textfile")),
        };
        assert!(reader.read_all(&[]).is_err());
    }
}
