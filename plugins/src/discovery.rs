//! Instance discovery from cgroups: `[[instances.source]]` rules (presets and custom
//! patterns) matched against the cgroup tree, walking only the directories a pattern can
//! reach. An instance is running when its cgroup (or a descendant) holds a process.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lxmetrics_core::cgroup_pattern::{CgroupPattern, PatternPiece};
use lxmetrics_core::config::{
    InstanceSource, InstancesConfig, Preset, DOCKER_SOCKETS, INCUS_SOCKETS, LXD_SOCKETS,
    PODMAN_SOCKETS,
};
use lxmetrics_core::discovery::{Discovery, DiscoveryError};
use lxmetrics_plugin::{
    run_blocking, Family, FileReader, HostPaths, Instance, InstanceStatus, InstanceType, KeptFiles,
    Layout, MetricDesc, SeriesOf,
};

use crate::cgroupfs as parse;
use crate::engine_api::{EngineApi, EngineContainer};
use crate::manager_api::{ManagedInstance, ManagerApi, ManagerFigures};
use crate::unix_http::ApiError;

/// How deep below an instance cgroup to look for a process (systemd inside a container
/// puts them in `init.scope`, `system.slice/x.service`, ...).
const PID_SEARCH_DEPTH: usize = 4;

/// A compiled rule.
#[derive(Clone, Debug)]
struct Rule {
    components: Vec<Vec<PatternPiece>>,
    kind: InstanceType,
    project: String,
    /// LXD names cgroups `lxc.payload.<project>_<name>` outside the default project.
    lxd_project_prefix: bool,
    /// The runtime a preset stands for (the `engine` fact of `instance_info`).
    engine: Option<&'static str>,
    /// Literal characters: the more, the more specific the rule.
    specificity: usize,
    /// Which `[[instances.source]]` entry it comes from (index in the configuration).
    source: usize,
}

/// A rule from a pattern the configuration check accepted (or a preset's).
fn compile(pattern: &str, kind: InstanceType, project: &str, lxd: bool) -> Rule {
    // Presets are constants that parse (a unit test checks), and configured patterns
    // were checked when the configuration loaded: a parse error here matches nothing.
    let pattern = CgroupPattern::parse(pattern).unwrap_or(CgroupPattern {
        components: Vec::new(),
    });
    Rule {
        specificity: pattern.specificity(),
        components: pattern.components,
        kind,
        project: project.to_owned(),
        lxd_project_prefix: lxd,
        engine: None,
        source: 0,
    }
}

/// The rules a preset stands for.
fn preset_rules(preset: Preset) -> Vec<Rule> {
    let engine = match preset {
        Preset::Lxc => "lxc",
        Preset::Docker => "docker",
        Preset::Podman => "podman",
        Preset::SystemdNspawn => "systemd-nspawn",
        Preset::Libvirt => "libvirt",
    };
    let mut rules = preset_patterns(preset);
    for rule in &mut rules {
        rule.engine = Some(engine);
    }
    rules
}

fn preset_patterns(preset: Preset) -> Vec<Rule> {
    use InstanceType::{Container, VirtualMachine};
    let c = |p: &str| compile(p, Container, "default", false);
    match preset {
        Preset::Lxc => vec![compile("lxc.payload.{name}", Container, "default", true)],
        Preset::Docker => vec![c("system.slice/docker-{name}.scope"), c("docker/{name}")],
        Preset::Podman => vec![
            c("machine.slice/libpod-{name}.scope"),
            c("libpod_parent/libpod-{name}"),
        ],
        Preset::SystemdNspawn => vec![c("machine.slice/machine-{name}.scope")],
        Preset::Libvirt => vec![
            compile(
                "machine.slice/machine-qemu\\x2d{_}\\x2d{name}.scope",
                VirtualMachine,
                "default",
                false,
            ),
            compile(
                "machine/qemu-{_}-{name}.libvirt-qemu",
                VirtualMachine,
                "default",
                false,
            ),
        ],
    }
}

/// Matches one path component against pattern pieces, filling captures.
fn match_component<'a>(
    pieces: &[PatternPiece],
    text: &'a str,
    name: &mut Option<&'a str>,
    project: &mut Option<&'a str>,
) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return text.is_empty();
    };
    match first {
        PatternPiece::Literal(lit) => text
            .strip_prefix(lit.as_str())
            .is_some_and(|t| match_component(rest, t, name, project)),
        capture => {
            // Try every non-empty split; components are short, patterns have few pieces.
            for end in (1..=text.len()).filter(|e| text.is_char_boundary(*e)) {
                let (value, tail) = text.split_at(end);
                let (mut n, mut p) = (*name, *project);
                match capture {
                    PatternPiece::Name => n = Some(value),
                    PatternPiece::Project => p = Some(value),
                    _ => {}
                }
                if match_component(rest, tail, &mut n, &mut p) {
                    *name = n;
                    *project = p;
                    return true;
                }
            }
            false
        }
    }
}

/// Undoes systemd's unit name escaping (`\x2d` is `-`).
fn systemd_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("\\x") {
        out.push_str(&rest[..i]);
        let hex = rest
            .get(i + 2..i + 4)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) if b.is_ascii() => {
                out.push(char::from(b));
                rest = &rest[i + 4..];
            }
            _ => {
                out.push_str("\\x");
                rest = &rest[i + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Finds instances in the cgroup tree, named by the LXD, Incus, Docker and Podman APIs
/// where they run here.
#[derive(Clone, Debug)]
pub struct CgroupDiscovery {
    rules: Vec<Rule>,
    /// The LXD and Incus APIs: while one answers, it names the `lxc.payload.*` cgroups
    /// and adds the instances that are not running.
    managers: Arc<[ManagerApi]>,
    /// The Podman and Docker APIs: while one answers, it names its containers' cgroups
    /// (by container id), finds those under other cgroup parents and pods, and adds the
    /// containers that are not running.
    engines: Arc<[EngineApi]>,
    /// How each API answered lately (`metrics_instance_source_up`): the managers', then
    /// the engines'.
    health: Arc<Mutex<Vec<SourceHealth>>>,
    /// Where each engine container's cgroup is (relative to the discovery root), learnt
    /// from a process of it; `None` once looked for in vain, until the next asked view.
    container_cgroups: Arc<Mutex<HashMap<String, Option<String>>>>,
    /// Cgroups not served in the last refresh because another cgroup maps to the same
    /// project and name (`metrics_instance_conflicts`).
    last_conflicts: Arc<AtomicUsize>,
    /// Conflicting cgroup pairs already logged, so each is reported once.
    conflicts: Arc<Mutex<HashSet<(String, String)>>>,
    /// The last view every manager answered, and when.
    kept_view: Arc<Mutex<Option<KeptView>>>,
    /// The managers' storage pools and project limits, and when they were fetched (on
    /// their own, slower schedule: [`FIGURES_MAX_AGE`]).
    figures: Arc<Mutex<Option<KeptFigures>>>,
    /// A background fetch of the figures is running.
    fetching_figures: Arc<std::sync::atomic::AtomicBool>,
    /// The `cgroup.procs` files read for instances' pids, kept open between walks.
    kept_files: Arc<KeptFiles>,
}

/// What one manager's API did lately.
#[derive(Clone, Debug)]
struct SourceHealth {
    engine: &'static str,
    /// Its socket was here when discovery last looked (before asking). The health
    /// families, made for every request, show what that look found rather than look
    /// again (a path walk per candidate socket).
    present: bool,
    /// The last refresh got its instance list.
    up: bool,
    /// Refreshes that fell back to cgroup names because it did not answer.
    fallbacks: u64,
    /// After a failure the API is not asked again before this, so a hung daemon costs
    /// one timeout per [`RETRY_AFTER`], not one per refresh.
    retry_at: Option<std::time::Instant>,
}

/// How long discovery names instances from cgroups after the API failed, before asking
/// it again.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

impl SourceHealth {
    /// Whether it failed less than [`RETRY_AFTER`] ago, so it is not asked yet.
    fn backing_off(&self, now: std::time::Instant) -> bool {
        self.retry_at.is_some_and(|at| now < at)
    }

    /// Records how the source answered: `Ok(Some(n))` with `n` instances, `Ok(None)` not
    /// here (no socket), `Err(Some(e))` failed now (logged; not asked again before
    /// [`RETRY_AFTER`]), `Err(None)` still waiting to be asked again. Returns whether it
    /// answered, `None` when it is not here.
    fn record(
        &mut self,
        now: std::time::Instant,
        answer: Result<Option<usize>, Option<&ApiError>>,
    ) -> Option<bool> {
        match answer {
            Ok(None) => {
                self.up = false;
                None
            }
            Ok(Some(listed)) => {
                if !self.up {
                    tracing::info!(
                        source = self.engine,
                        instances = listed,
                        "instances named by the API"
                    );
                }
                self.up = true;
                self.retry_at = None;
                Some(true)
            }
            Err(error) => {
                if let Some(e) = error {
                    tracing::warn!(
                        source = self.engine,
                        "API not usable, naming instances from cgroups for {RETRY_AFTER:?}: {e}"
                    );
                    self.retry_at = Some(now + RETRY_AFTER);
                }
                self.up = false;
                self.fallbacks += 1;
                Some(false)
            }
        }
    }
}

/// What the runtimes' APIs said.
#[derive(Debug, Default)]
struct ManagerView {
    /// The managers' instances by cgroup name (`lxc.payload.<this>`).
    claims: HashMap<String, ManagedInstance>,
    /// The engines' containers by container id.
    containers: HashMap<String, EngineContainer>,
    /// A manager runs here but did not answer: LXD's `<project>_<name>` cgroup names are
    /// split by guess this refresh.
    guess_projects: bool,
    /// A manager answered: an `lxc.payload.*` cgroup it does not claim is either plain
    /// LXC or new since the answer.
    managers_answered: bool,
    /// The sources (managers and engines) that answered. A cgroup of an engine's with an
    /// id it did not list is new since the answer; a source that did not answer keeps
    /// the view current while it still does not ([`CgroupDiscovery::still_current`]).
    answered: Vec<&'static str>,
    /// `lxc.payload.*` cgroups no manager claimed when the view was fetched: plain LXC
    /// containers, which do not make the view out of date.
    plain: HashSet<String>,
}

/// Storage pools and project limits are fetched again after this long. A project's
/// state makes LXD measure every instance of the project (390 ms of LXD's CPU for a
/// project of 100 containers on a `dir` pool, docs/performance.md), and limits and pool
/// use change slowly.
const FIGURES_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(300);

/// A kept view is reused as it is for at most this long; sooner when the cgroups
/// disagree with it (an instance started or stopped). Asking LXD for the full list costs
/// it about 0.4 ms of CPU per instance (docs/performance.md), too much for every
/// refresh.
const VIEW_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30);

/// After [`VIEW_MAX_AGE`] the view is checked with the cheap questions (the managers'
/// instance names, the engines' container lists) and kept another [`VIEW_MAX_AGE`] when
/// nothing changed; it is fetched in full after this long regardless (disks added to a
/// running instance, image descriptions).
const VIEW_FULL_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(300);

/// The managers' figures and when they were asked for.
type KeptFigures = (std::time::Instant, Vec<ManagerFigures>);

/// An answered view and when it was fetched.
type KeptView = (std::time::Instant, Arc<ManagerView>);

/// One walk of the cgroup tree under a view.
struct Walk {
    /// The instances, each with the index of the source entry whose rule matched it
    /// (`usize::MAX` for the APIs' instances no rule matched).
    instances: Vec<(Instance, usize)>,
    /// The cgroups disagree with an answered view: a `lxc.payload.*` cgroup it does not
    /// claim, a container it calls stopped that runs, or one it calls running that
    /// has no cgroup. The view is out of date.
    stale: bool,
    /// The `lxc.payload.*` cgroup names no manager claims.
    unclaimed: Vec<String>,
    /// Running engine containers whose cgroup is not where their engine puts it by
    /// default and whose process is not known yet (Docker's list has no pids).
    unresolved: Vec<String>,
    /// Cgroups not served because another maps to the same project and name.
    conflicts: usize,
}

const POOL_SIZE: MetricDesc = MetricDesc::gauge(
    "storage_pool_size_bytes",
    "Size of the storage pool in bytes, from the LXD/Incus API.",
);
const POOL_USED: MetricDesc = MetricDesc::gauge(
    "storage_pool_used_bytes",
    "Used space of the storage pool in bytes, from the LXD/Incus API.",
);
const PROJECT_LIMIT: MetricDesc = MetricDesc::gauge(
    "project_limit",
    "The project's limit of the resource (-1 when unlimited), from the LXD/Incus API.",
);
const PROJECT_USAGE: MetricDesc = MetricDesc::gauge(
    "project_usage",
    "The project's usage of the resource, from the LXD/Incus API.",
);

const PROJECT_RESOURCES: MetricDesc = MetricDesc::gauge(
    "project_resources_total",
    "How many resources of each kind (instances, profiles, images, networks, ...) the project holds, from the LXD/Incus API.",
);

const SOURCE_UP: MetricDesc = MetricDesc::gauge(
    "metrics_instance_source_up",
    "Whether the runtime's API answered in the last refresh (1) or instances were named from cgroups (0)",
);
const SOURCE_FALLBACKS: MetricDesc = MetricDesc::counter(
    "metrics_instance_source_fallbacks_total",
    "Refreshes that named instances from cgroups because the runtime's API did not answer",
);
const CONFLICTS: MetricDesc = MetricDesc::gauge(
    "metrics_instance_conflicts",
    "Cgroups not served in the last refresh because another cgroup maps to the same project and name (each pair is logged once)",
);

impl CgroupDiscovery {
    /// Discovery for the configured `[instances]`: the `[[instances.source]]` rules
    /// (validated by the config) and the LXD, Incus, Podman and Docker sockets.
    pub fn new(instances: &InstancesConfig) -> Self {
        let managers: Arc<[ManagerApi]> = [
            ManagerApi::new("lxd", instances.lxd.candidates(&LXD_SOCKETS)),
            ManagerApi::new("incus", instances.incus.candidates(&INCUS_SOCKETS)),
        ]
        .into();
        // Podman before Docker: a Docker socket that is Podman's (podman-docker) is one
        // engine, asked once.
        let engines: Arc<[EngineApi]> = [
            EngineApi::new(
                "podman",
                instances.podman.candidates(&PODMAN_SOCKETS),
                &instances.podman.labels,
            ),
            EngineApi::new(
                "docker",
                instances.docker.candidates(&DOCKER_SOCKETS),
                &instances.docker.labels,
            ),
        ]
        .into();
        let health = managers
            .iter()
            .map(|m| m.engine)
            .chain(engines.iter().map(|e| e.engine))
            .map(|engine| SourceHealth {
                engine,
                present: false,
                up: false,
                fallbacks: 0,
                retry_at: None,
            })
            .collect();
        CgroupDiscovery {
            rules: Self::rules(&instances.source),
            managers,
            engines,
            health: Arc::new(Mutex::new(health)),
            container_cgroups: Arc::default(),
            last_conflicts: Arc::default(),
            conflicts: Arc::default(),
            kept_view: Arc::default(),
            figures: Arc::default(),
            fetching_figures: Arc::default(),
            kept_files: Arc::default(),
        }
    }

    /// Each API's socket here, in health order (managers, then engines); a socket that
    /// is the same file as an earlier one (Docker's socket pointing at Podman's) is
    /// left out, so one engine is not asked and counted twice. Records in each source's
    /// health whether its socket is here, for the health families.
    fn sockets(&self) -> Vec<(&'static str, Option<PathBuf>)> {
        let mut seen: Vec<PathBuf> = Vec::new();
        let sockets: Vec<(&'static str, Option<PathBuf>)> = self
            .managers
            .iter()
            .map(|m| (m.engine, m.socket()))
            .chain(self.engines.iter().map(|e| (e.engine, e.socket())))
            .map(|(engine, socket)| {
                let socket = socket.filter(|s| {
                    let same = std::fs::canonicalize(s).unwrap_or_else(|_| s.to_path_buf());
                    let new = !seen.contains(&same);
                    seen.push(same);
                    new
                });
                (engine, socket.map(Path::to_owned))
            })
            .collect();
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        for (h, (_, socket)) in health.iter_mut().zip(&sockets) {
            h.present = socket.is_some();
        }
        sockets
    }

    /// `storage_pool_{size,used}_bytes{pool,driver}`,
    /// `project_{limit,usage}{project,resource}` and
    /// `project_resources_total{project,resource}` as the LXD/Incus API last gave them
    /// (absent while no manager answers).
    fn figure_families(&self) -> Vec<Family> {
        let answering = {
            let kept = self.kept_view.lock().unwrap_or_else(|p| p.into_inner());
            kept.as_ref()
                .is_some_and(|(_, view)| view.managers_answered)
        };
        let figures = self.figures.lock().unwrap_or_else(|p| p.into_inner());
        let Some((_, figures)) = figures.as_ref().filter(|_| answering) else {
            return Vec::new();
        };
        let mut size = Family::new(POOL_SIZE, &["pool", "driver"]);
        let mut used = Family::new(POOL_USED, &["pool", "driver"]);
        let mut limit = Family::new(PROJECT_LIMIT, &["project", "resource"]);
        let mut usage = Family::new(PROJECT_USAGE, &["project", "resource"]);
        let mut totals = Family::new(PROJECT_RESOURCES, &["project", "resource"]);
        for figures in figures {
            for pool in &figures.pools {
                let labels = [pool.name.as_str(), pool.driver.as_str()];
                size.push(SeriesOf::HOST, labels, pool.size as f64);
                used.push(SeriesOf::HOST, labels, pool.used as f64);
            }
            for r in &figures.projects {
                let labels = [r.project.as_str(), r.resource.as_str()];
                limit.push(SeriesOf::HOST, labels, r.limit as f64);
                usage.push(SeriesOf::HOST, labels, r.usage as f64);
            }
            for (project, kind, n) in &figures.counts {
                totals.push(SeriesOf::HOST, [project.as_str(), kind.as_str()], *n as f64);
            }
        }
        vec![size, used, limit, usage, totals]
    }

    /// The LXD, Incus, Podman and Docker API sockets present on this host, by engine.
    pub fn manager_sockets(&self) -> Vec<(&'static str, PathBuf)> {
        self.sockets()
            .into_iter()
            .filter_map(|(engine, socket)| socket.map(|s| (engine, s)))
            .collect()
    }

    /// `metrics_instance_source_up{source}` and `..._fallbacks_total{source}` for each
    /// runtime API whose socket was here when discovery last looked (or that fell back),
    /// and `metrics_instance_conflicts` (daemon series, for the unrestricted view).
    pub fn health_families(&self) -> Vec<Family> {
        let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let mut up = Family::new(SOURCE_UP, &["source"]);
        let mut fallbacks = Family::new(SOURCE_FALLBACKS, &["source"]);
        for h in health.iter() {
            if h.present || h.fallbacks > 0 {
                up.push(SeriesOf::HOST, [h.engine], if h.up { 1.0 } else { 0.0 });
                fallbacks.push(SeriesOf::HOST, [h.engine], h.fallbacks as f64);
            }
        }
        let mut conflicts = Family::new(CONFLICTS, &[]);
        let last = self.last_conflicts.load(Ordering::Relaxed);
        conflicts.push(SeriesOf::HOST, (), last as f64);
        vec![up, fallbacks, conflicts]
    }

    /// Asks every runtime API with a socket here for its instances (concurrently, each
    /// bounded by the API timeout); one that does not answer is logged and counted, and
    /// its cgroups are named from cgroups (LXD's by guess).
    async fn ask_sources(&self) -> ManagerView {
        let now = std::time::Instant::now();
        let sockets = self.sockets();
        let waiting: Vec<bool> = {
            let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
            health.iter().map(|h| h.backing_off(now)).collect()
        };
        let asked = |index: usize| -> Result<(), Option<ApiError>> {
            match (
                sockets.get(index).and_then(|(_, s)| s.as_ref()),
                waiting.get(index),
            ) {
                (None, _) => Err(None),
                (Some(_), Some(true)) => Err(None),
                _ => Ok(()),
            }
        };
        let want_figures = {
            let figures = self.figures.lock().unwrap_or_else(|p| p.into_inner());
            figures
                .as_ref()
                .is_none_or(|(at, _)| now.duration_since(*at) >= FIGURES_MAX_AGE)
        };
        let manager_asks = self.managers.iter().enumerate().map(|(i, m)| {
            let go = asked(i);
            let present = sockets.get(i).is_some_and(|(_, s)| s.is_some());
            async move {
                if !present {
                    return Ok(None);
                }
                go?;
                match m.instances().await {
                    Ok(Some(listed)) => Ok(Some(listed)),
                    Ok(None) => Ok(None),
                    Err(e) => Err(Some(e)),
                }
            }
        });
        let first_engine = self.managers.len();
        let engine_asks = self.engines.iter().enumerate().map(|(j, e)| {
            let go = asked(first_engine + j);
            let present = sockets
                .get(first_engine + j)
                .is_some_and(|(_, s)| s.is_some());
            async move {
                if !present {
                    return Ok(None);
                }
                go?;
                e.containers().await.map_err(Some)
            }
        });
        let (manager_answers, engine_answers) = futures_util::future::join(
            futures_util::future::join_all(manager_asks),
            futures_util::future::join_all(engine_asks),
        )
        .await;
        let mut view = ManagerView::default();
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let (manager_health, engine_health) = health.split_at_mut(first_engine);
        for (answer, h) in manager_answers.into_iter().zip(manager_health) {
            let count = answer.as_ref().map(|a| a.as_ref().map(Vec::len));
            match h.record(now, count.map_err(Option::as_ref)) {
                Some(true) => {
                    view.managers_answered = true;
                    view.answered.push(h.engine);
                }
                Some(false) => view.guess_projects = true,
                None => {}
            }
            if let Ok(Some(listed)) = answer {
                for managed in listed {
                    view.claims.insert(managed.cgroup_name.clone(), managed);
                }
            }
        }
        for ((answer, h), engine) in engine_answers
            .into_iter()
            .zip(engine_health)
            .zip(self.engines.iter())
        {
            let count = answer.as_ref().map(|a| a.as_ref().map(Vec::len));
            if h.record(now, count.map_err(Option::as_ref)) == Some(true) {
                view.answered.push(engine.engine);
            }
            if let Ok(Some(listed)) = answer {
                for container in listed {
                    view.containers.insert(container.id.clone(), container);
                }
            }
        }
        drop(health);
        if want_figures && view.managers_answered {
            self.fetch_figures(now);
        }
        view
    }

    fn rules(sources: &[InstanceSource]) -> Vec<Rule> {
        sources
            .iter()
            .enumerate()
            .flat_map(|(index, s)| {
                let mut rules = Self::source_rules(s);
                for rule in &mut rules {
                    rule.source = index;
                }
                rules
            })
            .collect()
    }

    fn source_rules(s: &InstanceSource) -> Vec<Rule> {
        {
            match (s.preset, &s.pattern) {
                (Some(preset), _) => preset_rules(preset),
                (None, Some(pattern)) => vec![compile(
                    pattern,
                    s.kind.unwrap_or(InstanceType::Container),
                    s.project.as_deref().unwrap_or("default"),
                    false,
                )],
                (None, None) => Vec::new(),
            }
        }
    }

    /// The view without asking any API: LXD's `<project>_<name>` split by guess where a
    /// socket exists.
    fn offline_view(&self) -> ManagerView {
        ManagerView {
            guess_projects: self.managers.iter().any(|m| m.socket().is_some()),
            ..ManagerView::default()
        }
    }

    /// Walks the tree under `cgroup_root`'s discovery hierarchy (blocking), without
    /// asking the LXD/Incus API: where a socket exists, LXD's `<project>_<name>` cgroup
    /// names are split by guess (only LXD and Incus forbid `_` in names).
    pub fn discover_blocking(&self, host: &HostPaths) -> Result<Vec<Instance>, DiscoveryError> {
        let view = self.offline_view();
        Ok(self
            .discover_with_sources(host, &view, &HashMap::new())?
            .instances
            .into_iter()
            .map(|(instance, _)| instance)
            .collect())
    }

    /// How many running instances each `[[instances.source]]` entry finds now, in
    /// configuration order (for the start-up output).
    pub fn instances_per_source(&self, host: &HostPaths) -> Result<Vec<usize>, DiscoveryError> {
        let sources = self.rules.iter().map(|r| r.source + 1).max().unwrap_or(0);
        let mut counts = vec![0; sources];
        let view = self.offline_view();
        for (instance, source) in self
            .discover_with_sources(host, &view, &HashMap::new())?
            .instances
        {
            if let Some(count) = counts.get_mut(source) {
                *count += usize::from(instance.is_readable());
            }
        }
        Ok(counts)
    }

    /// Walks the cgroup tree naming what it finds with `view`; `pids` are processes of
    /// engine containers learnt since the view was fetched (Docker's inspect).
    fn discover_with_sources(
        &self,
        host: &HostPaths,
        view: &ManagerView,
        pids: &HashMap<String, u32>,
    ) -> Result<Walk, DiscoveryError> {
        let layout =
            Layout::detect(&host.cgroup_root).map_err(|e| DiscoveryError(e.to_string()))?;
        let root = layout.discovery_root();
        // On hybrid hosts, the v2 hierarchy beside the v1 one walked.
        let unified = layout.unified().filter(|u| *u != root);
        let mut claimed: HashSet<&str> = HashSet::new();
        let mut claimed_ids: HashSet<&str> = HashSet::new();
        let mut known = self
            .container_cgroups
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut conflicts = 0;
        let mut stale = false;
        let mut unclaimed_names = Vec::new();
        let mut found: Vec<(usize, usize, Instance)> = Vec::new();
        let mut reader = FileReader::keeping(&self.kept_files, &host.cgroup_root);
        for rule in &self.rules {
            let mut matches = Vec::new();
            walk(
                &root,
                &rule.components,
                String::new(),
                None,
                None,
                &mut matches,
            );
            for (relative, name, project) in matches {
                let Some(pid) = first_pid(&root.join(&relative), PID_SEARCH_DEPTH, |d| {
                    listed_pid(&mut reader, &root, unified, d)
                }) else {
                    continue; // not running
                };
                let name = systemd_unescape(&name);
                let engine_container = rule
                    .engine
                    .filter(|e| ENGINES_BY_ID.contains(e))
                    .map(|e| (e, view.containers.get_key_value(name.as_str())));
                let instance = if rule.lxd_project_prefix {
                    if !view.claims.contains_key(&name) {
                        stale |= view.managers_answered && !view.plain.contains(&name);
                        unclaimed_names.push(name.clone());
                    }
                    let mut instance = lxc_instance(rule, name, view, &mut claimed);
                    stale |= view.managers_answered && instance.status != InstanceStatus::Running;
                    instance.status = InstanceStatus::Running; // its cgroup holds a process
                    instance
                } else if let Some((_, Some((id, container)))) = engine_container {
                    claimed_ids.insert(id);
                    known.insert(id.clone(), Some(relative.clone()));
                    let mut instance = container.instance.clone();
                    stale |= instance.status != InstanceStatus::Running;
                    instance.status = InstanceStatus::Running; // its cgroup holds a process
                    instance
                } else {
                    // A container its engine did not list is new since the view.
                    stale |=
                        engine_container.is_some_and(|(engine, _)| view.answered.contains(&engine));
                    let project = project.unwrap_or_else(|| rule.project.clone());
                    Instance::new(name, project, rule.kind, "")
                };
                let mut instance = instance.with_pid(pid);
                instance.cgroup = relative;
                if instance.info.is_empty() {
                    if let Some(engine) = rule.engine {
                        instance.info = vec![("engine".to_owned(), engine.to_owned())];
                    }
                }
                found.push((rule.specificity, rule.source, instance));
            }
        }
        // A cgroup matched by several rules belongs to the most specific one.
        found.sort_by_key(|(specificity, _, _)| std::cmp::Reverse(*specificity));
        let mut cgroups = HashSet::new();
        let mut names: HashMap<(String, String), String> = HashMap::new();
        let mut instances = Vec::with_capacity(found.len());
        for (_, source, instance) in found {
            if !cgroups.insert(instance.cgroup.clone()) {
                continue;
            }
            let key = (instance.project.clone(), instance.name.clone());
            if let Some(kept) = names.get(&key) {
                self.report_conflict(kept, &instance);
                conflicts += 1;
                continue;
            }
            names.insert(key, instance.cgroup.clone());
            instances.push((instance, source));
        }
        // Running engine containers no rule found: in a pod, under a custom cgroup
        // parent. A process of theirs says where the cgroup is.
        let mut unresolved = Vec::new();
        {
            let mut elsewhere: Vec<(&String, &EngineContainer)> = view
                .containers
                .iter()
                .filter(|(id, c)| {
                    !claimed_ids.contains(id.as_str())
                        && c.instance.status == InstanceStatus::Running
                })
                .collect();
            elsewhere.sort_by(|a, b| a.0.cmp(b.0));
            for (id, container) in elsewhere {
                let relative = match known.get(id) {
                    Some(known) => known.clone(),
                    None => match pids.get(id).copied().or(container.pid) {
                        Some(pid) => {
                            let found = container_cgroup(&host.proc_root, pid, &root, id);
                            known.insert(id.clone(), found.clone());
                            found
                        }
                        None => {
                            unresolved.push(id.clone());
                            None
                        }
                    },
                };
                let Some(relative) = relative else { continue };
                let Some(pid) = first_pid(&root.join(&relative), PID_SEARCH_DEPTH, |d| {
                    listed_pid(&mut reader, &root, unified, d)
                }) else {
                    continue; // not running now
                };
                if !cgroups.insert(relative.clone()) {
                    continue;
                }
                let mut instance = container.instance.clone().with_pid(pid);
                instance.cgroup = relative;
                let key = (instance.project.clone(), instance.name.clone());
                if let Some(kept) = names.get(&key) {
                    self.report_conflict(kept, &instance);
                    conflicts += 1;
                    continue;
                }
                claimed_ids.insert(id);
                names.insert(key, instance.cgroup.clone());
                instances.push((instance, usize::MAX));
            }
        }
        // What the managers know that is not running here (stopped, or a VM whose
        // cgroup was not found): counted and described, never read.
        let mut idle: Vec<&ManagedInstance> = view
            .claims
            .iter()
            .filter(|(cgroup_name, _)| !claimed.contains(cgroup_name.as_str()))
            .map(|(_, managed)| managed)
            .collect();
        idle.sort_by(|a, b| {
            (&a.instance.project, &a.instance.name).cmp(&(&b.instance.project, &b.instance.name))
        });
        // A container the view calls running without a running cgroup has stopped since.
        stale |= view.managers_answered
            && idle.iter().any(|m| {
                m.instance.status == InstanceStatus::Running
                    && m.instance.kind == InstanceType::Container
            });
        let mut idle_containers: Vec<&EngineContainer> = view
            .containers
            .iter()
            .filter(|(id, _)| !claimed_ids.contains(id.as_str()))
            .map(|(_, c)| c)
            .collect();
        idle_containers.sort_by(|a, b| a.id.cmp(&b.id));
        // One the view calls running that ran at a known cgroup has stopped since (one
        // whose cgroup was never found stays as the view says until the view expires).
        stale |= idle_containers.iter().any(|c| {
            c.instance.status == InstanceStatus::Running
                && known.get(&c.id).is_some_and(Option::is_some)
        });
        drop(known);
        let idle_instances = idle
            .into_iter()
            .map(|m| &m.instance)
            .chain(idle_containers.into_iter().map(|c| &c.instance));
        for instance in idle_instances {
            let key = (instance.project.clone(), instance.name.clone());
            if let Some(kept) = names.get(&key) {
                self.report_conflict(kept, instance);
                conflicts += 1;
                continue;
            }
            names.insert(key, String::new());
            instances.push((instance.clone(), usize::MAX));
        }
        instances.sort_by(|(a, _), (b, _)| (&a.project, &a.name).cmp(&(&b.project, &b.name)));
        Ok(Walk {
            instances,
            stale,
            unclaimed: unclaimed_names,
            unresolved,
            conflicts,
        })
    }
}

/// The instance an `lxc.payload.<name>` cgroup is: the one the LXD/Incus API names so;
/// else, while a manager runs here but did not answer, LXD's `<project>_<name>` split
/// by guess; else a plain LXC container, its whole name in the rule's project.
fn lxc_instance<'v>(
    rule: &Rule,
    name: String,
    view: &'v ManagerView,
    claimed: &mut HashSet<&'v str>,
) -> Instance {
    if let Some((cgroup_name, managed)) = view.claims.get_key_value(name.as_str()) {
        claimed.insert(cgroup_name);
        return managed.instance.clone();
    }
    if view.guess_projects {
        if let Some((p, n)) = name.split_once('_') {
            if !p.is_empty() && !n.is_empty() {
                return Instance::new(n, p, rule.kind, "");
            }
        }
    }
    Instance::new(name, rule.project.clone(), rule.kind, "")
}

/// The engines whose preset rules capture the container id as `{name}`.
const ENGINES_BY_ID: [&str; 2] = ["docker", "podman"];

/// The cgroup (relative to the discovery root `root`) of engine container `id`, from
/// `/proc/<pid>/cgroup` of a process of it: the first listed path that exists under
/// `root` and whose last component names the id (`<id>`, `docker-<id>.scope`,
/// `libpod-<id>`), so a pid reused by another process is never taken for the container.
fn container_cgroup(proc_root: &Path, pid: u32, root: &Path, id: &str) -> Option<String> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    text.lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .map(|path| path.trim_start_matches('/'))
        .find(|relative| {
            !relative.is_empty()
                && relative
                    .rsplit('/')
                    .next()
                    .is_some_and(|last| last.contains(id))
                && root.join(relative).is_dir()
        })
        .map(str::to_owned)
}

impl CgroupDiscovery {
    /// Two cgroups map to one project and name: the first (most specific rule) is
    /// served; the other is logged once per pair, never dropped silently.
    fn report_conflict(&self, kept: &str, dropped: &Instance) {
        let kept = if kept.is_empty() {
            "(not running)"
        } else {
            kept
        };
        let pair = (kept.to_owned(), dropped.cgroup.clone());
        let mut logged = self.conflicts.lock().unwrap_or_else(|p| p.into_inner());
        if logged.len() < MAX_LOGGED_CONFLICTS && logged.insert(pair) {
            tracing::warn!(
                project = %dropped.project,
                name = %dropped.name,
                served = kept,
                skipped = %dropped.cgroup,
                "two cgroups map to the same instance; serving the first"
            );
        }
    }
}

impl CgroupDiscovery {
    /// One walk on the blocking pool; when it finds running engine containers whose
    /// cgroup is not known, their engine is asked for their processes (once per
    /// container) and the tree walked again.
    async fn walk(&self, host: &HostPaths, view: Arc<ManagerView>) -> Result<Walk, DiscoveryError> {
        let walk = self.walk_once(host, view.clone(), HashMap::new()).await?;
        if walk.unresolved.is_empty() {
            return Ok(walk);
        }
        let mut pids = HashMap::new();
        for engine in self.engines.iter() {
            let ids: Vec<String> = walk
                .unresolved
                .iter()
                .filter(|id| {
                    view.containers
                        .get(*id)
                        .is_some_and(|c| c.engine == engine.engine)
                })
                .cloned()
                .collect();
            if ids.is_empty() {
                continue;
            }
            let answers = engine.pids(&ids).await;
            // What was asked and could not be learnt is not asked again until the next
            // asked view; what was not asked yet is asked at the next refresh.
            let mut known = self
                .container_cgroups
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for (id, pid) in answers {
                match pid {
                    Some(pid) => {
                        pids.insert(id, pid);
                    }
                    None => {
                        known.insert(id, None);
                    }
                }
            }
        }
        self.walk_once(host, view, pids).await
    }

    async fn walk_once(
        &self,
        host: &HostPaths,
        view: Arc<ManagerView>,
        pids: HashMap<String, u32>,
    ) -> Result<Walk, DiscoveryError> {
        let this = self.clone();
        let host = host.clone();
        run_blocking(move || this.discover_with_sources(&host, &view, &pids))
            .await
            .map_err(|e| DiscoveryError(e.to_string()))?
    }

    /// Fetches the managers' storage pools and project figures in the background (one
    /// fetch at a time): they cost LXD far more than the instance list, and no refresh
    /// waits for them. A manager whose figures fail is left out until the next fetch.
    fn fetch_figures(&self, asked_at: std::time::Instant) {
        if self.fetching_figures.swap(true, Ordering::AcqRel) {
            return;
        }
        let (managers, store) = (self.managers.clone(), self.figures.clone());
        let fetching = self.fetching_figures.clone();
        tokio::spawn(async move {
            let mut fetched = Vec::new();
            for manager in managers.iter() {
                if manager.socket().is_none() {
                    continue;
                }
                match manager.figures().await {
                    Ok(figures) => fetched.push(figures),
                    Err(e) => {
                        tracing::debug!(source = manager.engine, "storage pools and projects: {e}")
                    }
                }
            }
            *store.lock().unwrap_or_else(|p| p.into_inner()) = Some((asked_at, fetched));
            fetching.store(false, Ordering::Release);
        });
    }

    /// Whether the runtimes still list what `view` holds, asked the cheap way: the
    /// managers' instance names (not their configuration), the engines' container lists.
    /// Any failure or difference means no: the view is then fetched in full.
    ///
    /// A source that did not answer when the view was fetched (a Docker socket left by
    /// a stopped daemon next to a running LXD) is asked again here once its back-off is
    /// over, not by fetching everything: the view stays current while it still does not
    /// answer. Before, such a socket made every confirmation a full fetch from LXD
    /// (25 to 44 ms of LXD's CPU for 100 containers, every 30 s).
    async fn still_current(&self, view: &ManagerView) -> bool {
        if view.guess_projects {
            return false;
        }
        let sockets = self.sockets();
        let mut listed = Vec::new();
        for (i, (manager, (_, socket))) in self.managers.iter().zip(&sockets).enumerate() {
            if socket.is_none() {
                continue;
            }
            if !view.answered.contains(&manager.engine) {
                if !self.still_silent(i, manager.names()).await {
                    return false;
                }
                continue;
            }
            match manager.names().await {
                Ok(Some(names)) => listed.extend(names),
                _ => return false,
            }
        }
        listed.sort();
        let mut known: Vec<(String, String)> = view
            .claims
            .values()
            .map(|m| (m.instance.project.clone(), m.instance.name.clone()))
            .collect();
        known.sort();
        if listed != known {
            return false;
        }
        let first_engine = self.managers.len();
        let engine_sockets = sockets.iter().skip(first_engine);
        for (j, (engine, (_, socket))) in self.engines.iter().zip(engine_sockets).enumerate() {
            if socket.is_none() {
                continue;
            }
            if !view.answered.contains(&engine.engine) {
                if !self
                    .still_silent(first_engine + j, engine.containers())
                    .await
                {
                    return false;
                }
                continue;
            }
            let Ok(Some(containers)) = engine.containers().await else {
                return false;
            };
            let summary = |c: &EngineContainer| {
                (
                    c.id.clone(),
                    c.instance.name.clone(),
                    c.instance.project.clone(),
                    c.instance.status,
                )
            };
            let mut now: Vec<_> = containers.iter().map(summary).collect();
            let mut then: Vec<_> = view
                .containers
                .values()
                .filter(|c| c.engine == engine.engine)
                .map(summary)
                .collect();
            now.sort_by(|a, b| a.0.cmp(&b.0));
            then.sort_by(|a, b| a.0.cmp(&b.0));
            if now != then {
                return false;
            }
        }
        true
    }

    /// Whether source `index`, which did not answer when the view was fetched, still
    /// does not: not asked during its back-off; asked after it, and a failure is
    /// recorded (logged, counted, backed off again) as when the view is fetched.
    async fn still_silent<T>(
        &self,
        index: usize,
        ask: impl std::future::Future<Output = Result<Option<T>, ApiError>>,
    ) -> bool {
        let now = std::time::Instant::now();
        let waiting = {
            let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
            health.get(index).is_some_and(|h| h.backing_off(now))
        };
        if waiting {
            return true;
        }
        match ask.await {
            Ok(Some(_)) => false,
            Ok(None) => true,
            Err(e) => {
                let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(h) = health.get_mut(index) {
                    h.record(now, Err(Some(&e)));
                }
                true
            }
        }
    }

    /// Records the walk's conflicts and hands out its instances.
    fn finish(&self, walk: Walk) -> Vec<Instance> {
        self.last_conflicts.store(walk.conflicts, Ordering::Relaxed);
        walk.instances.into_iter().map(|(i, _)| i).collect()
    }
}

/// Conflict pairs remembered for log-once; beyond this they are no longer logged.
const MAX_LOGGED_CONFLICTS: usize = 1024;

#[async_trait]
impl Discovery for CgroupDiscovery {
    async fn discover(&self, host: &HostPaths) -> Result<Vec<Instance>, DiscoveryError> {
        let kept = {
            let kept = self.kept_view.lock().unwrap_or_else(|p| p.into_inner());
            kept.as_ref().map(|(at, view)| (*at, view.clone()))
        };
        let fresh = match kept {
            Some((at, view)) if at.elapsed() < VIEW_MAX_AGE => Some(view),
            Some((at, view))
                if at.elapsed() < VIEW_FULL_MAX_AGE && self.still_current(&view).await =>
            {
                let mut kept = self.kept_view.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((at, held)) = kept.as_mut() {
                    if Arc::ptr_eq(held, &view) {
                        *at = std::time::Instant::now();
                    }
                }
                Some(view)
            }
            _ => None,
        };
        if let Some(view) = fresh {
            let walk = self.walk(host, view).await?;
            if !walk.stale {
                return Ok(self.finish(walk));
            }
        }
        let fetched = std::time::Instant::now();
        let view = Arc::new(self.ask_sources().await);
        {
            // Containers gone from the engines are forgotten; those not found before are
            // looked for again.
            let mut known = self
                .container_cgroups
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            known.retain(|id, cgroup| cgroup.is_some() && view.containers.contains_key(id));
        }
        let walk = self.walk(host, view.clone()).await?;
        // Keep an answered view, with the plain LXC cgroups seen now, for later refreshes.
        let kept = match Arc::try_unwrap(view) {
            Ok(mut view) if !view.answered.is_empty() => {
                view.plain = walk.unclaimed.iter().cloned().collect();
                Some((fetched, Arc::new(view)))
            }
            _ => None,
        };
        *self.kept_view.lock().unwrap_or_else(|p| p.into_inner()) = kept;
        Ok(self.finish(walk))
    }

    fn families(&self) -> Vec<Family> {
        self.figure_families()
    }
}

/// Expands the pattern component by component; literal components cost a `stat`, only
/// components with placeholders list a directory.
fn walk(
    dir: &Path,
    components: &[Vec<PatternPiece>],
    relative: String,
    name: Option<String>,
    project: Option<String>,
    out: &mut Vec<(String, String, Option<String>)>,
) {
    let Some((component, rest)) = components.split_first() else {
        if let Some(name) = name {
            out.push((relative, name, project));
        }
        return;
    };
    let join = |child: &str| {
        if relative.is_empty() {
            child.to_owned()
        } else {
            format!("{relative}/{child}")
        }
    };
    if let [PatternPiece::Literal(literal)] = component.as_slice() {
        let next = dir.join(literal);
        if next.is_dir() {
            walk(&next, rest, join(literal), name, project, out);
        }
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let file_name = entry.file_name();
        let Some(child) = file_name.to_str() else {
            continue;
        };
        let (mut n, mut p) = (None, None);
        if match_component(component, child, &mut n, &mut p) {
            walk(
                &entry.path(),
                rest,
                join(child),
                n.map(str::to_owned).or_else(|| name.clone()),
                p.map(str::to_owned).or_else(|| project.clone()),
                out,
            );
        }
    }
}

/// The first pid in the cgroup or its descendants: the cgroup itself, then systemd's
/// `init.scope`, then breadth first. The search below an instance cgroup is bounded in
/// depth and in directories visited, because that tree belongs to the tenant: 5,000
/// empty child cgroups must cost discovery no more than a few (such an instance may be
/// reported as not running; other instances are not affected).
fn first_pid(
    dir: &Path,
    depth: usize,
    mut pid_of: impl FnMut(&Path) -> Option<u32>,
) -> Option<u32> {
    let mut budget = PID_SEARCH_BUDGET;
    let mut pid_in = |d: &Path, budget: &mut usize| -> Option<u32> {
        *budget = budget.checked_sub(1)?;
        pid_of(d)
    };
    if let Some(pid) = pid_in(dir, &mut budget) {
        return Some(pid);
    }
    if let Some(pid) = pid_in(&dir.join("init.scope"), &mut budget) {
        return Some(pid);
    }
    let mut level: Vec<PathBuf> = vec![dir.to_path_buf()];
    for _ in 0..depth {
        let mut next = Vec::new();
        for d in &level {
            let Ok(entries) = std::fs::read_dir(d) else {
                continue;
            };
            // read_dir is lazy: taking at most the budget bounds the listing too.
            for entry in entries.flatten().take(budget) {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let path = entry.path();
                    if let Some(pid) = pid_in(&path, &mut budget) {
                        return Some(pid);
                    }
                    next.push(path);
                }
                if budget == 0 {
                    return None;
                }
            }
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    None
}

/// The first pid cgroup `dir` (below `root`) lists. On hybrid hosts the same cgroup's
/// list in the v2 hierarchy is read first: the reader keeps that file open between
/// refreshes, which a v1 pid list cannot be (`plugin/src/kept_files.rs`). The v1 list
/// is read when the v2 cgroup is missing or lists no process.
fn listed_pid(
    reader: &mut FileReader,
    root: &Path,
    unified: Option<&Path>,
    dir: &Path,
) -> Option<u32> {
    let v2 = unified.and_then(|u| Some(u.join(dir.strip_prefix(root).ok()?)));
    let mut first_in = |d: &Path| {
        let pids = reader.parse(&d.join("cgroup.procs"), parse::pid_list);
        pids.map(|pids| pids.first().copied())
    };
    match v2.map(|d| first_in(&d)) {
        Some(Ok(Some(pid))) => Some(pid),
        _ => first_in(dir).ok().flatten(),
    }
}

/// How many cgroups one instance's pid search may look into.
const PID_SEARCH_BUDGET: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, text: &str) -> Option<(Option<String>, Option<String>)> {
        let rule = compile(pattern, InstanceType::Container, "default", false);
        let comps: Vec<&str> = text.split('/').collect();
        if comps.len() != rule.components.len() {
            return None;
        }
        let (mut name, mut project) = (None, None);
        for (pieces, comp) in rule.components.iter().zip(comps) {
            if !match_component(pieces, comp, &mut name, &mut project) {
                return None;
            }
        }
        Some((name.map(String::from), project.map(String::from)))
    }

    #[test]
    fn patterns_capture_name_and_project() {
        assert_eq!(
            matches("lxc.payload.{name}", "lxc.payload.web"),
            Some((Some("web".into()), None))
        );
        assert_eq!(matches("lxc.payload.{name}", "lxc.monitor.web"), None);
        assert_eq!(
            matches("vms/{project}/{name}", "vms/prod/db"),
            Some((Some("db".into()), Some("prod".into())))
        );
        assert_eq!(
            matches(
                "machine.slice/machine-qemu\\x2d{_}\\x2d{name}.scope",
                "machine.slice/machine-qemu\\x2d3\\x2dwin\\x2d11.scope"
            ),
            Some((Some("win\\x2d11".into()), None))
        );
        assert_eq!(matches("docker/{name}", "docker/"), None);
    }

    #[test]
    fn systemd_escapes_are_undone() {
        assert_eq!(systemd_unescape("win\\x2d11"), "win-11");
        assert_eq!(systemd_unescape("plain"), "plain");
        assert_eq!(systemd_unescape("bad\\xzz"), "bad\\xzz");
        assert_eq!(systemd_unescape("end\\x"), "end\\x");
    }

    #[test]
    fn the_pid_search_below_an_instance_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let instance = dir.path().join("lxc.payload.tenant");
        for i in 0..5_000 {
            std::fs::create_dir_all(instance.join(format!("c{i:04}"))).unwrap();
        }
        let deep = instance.join("c4999/x");
        std::fs::create_dir_all(&deep).unwrap();
        let mut looked = 0;
        let found = first_pid(&instance, PID_SEARCH_DEPTH, |d| {
            looked += 1;
            (d == deep).then_some(42)
        });
        assert_eq!(found, None, "5,000 empty cgroups are not all searched");
        assert!(looked <= PID_SEARCH_BUDGET, "{looked} cgroups looked into");

        // The usual places are found at once: the cgroup itself, systemd's init.scope.
        let mut looked = 0;
        let own = first_pid(&instance, PID_SEARCH_DEPTH, |d| {
            looked += 1;
            (d == instance).then_some(7)
        });
        assert_eq!((own, looked), (Some(7), 1));
        let init = instance.join("init.scope");
        let scoped = first_pid(&instance, PID_SEARCH_DEPTH, |d| (d == init).then_some(9));
        assert_eq!(scoped, Some(9));
    }

    #[test]
    fn plain_lxc_names_keep_their_underscore_off_lxd_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = dir.path().join("cgroup");
        for name in ["prod_web", "web", "default_web"] {
            let c = cgroup.join(format!("lxc.payload.{name}"));
            std::fs::create_dir_all(&c).unwrap();
            std::fs::write(c.join("cgroup.procs"), "1\n").unwrap();
        }
        std::fs::write(cgroup.join("cgroup.controllers"), "cpu memory\n").unwrap();
        let host = HostPaths {
            cgroup_root: cgroup,
            ..HostPaths::default()
        };
        let socket = dir.path().join("lxd.socket");
        let config = |socket: &Path| InstancesConfig {
            source: vec![InstanceSource::preset(Preset::Lxc)],
            lxd: lxmetrics_core::config::DaemonSocket {
                socket: Some(socket.to_owned()),
            },
            incus: lxmetrics_core::config::DaemonSocket {
                socket: Some(PathBuf::new()),
            },
            ..no_apis()
        };
        let names = |found: Vec<Instance>| -> Vec<(String, String)> {
            found.into_iter().map(|i| (i.project, i.name)).collect()
        };

        // Plain LXC: whole names in project default, nothing dropped.
        let plain = CgroupDiscovery::new(&config(&socket));
        let found = names(plain.discover_blocking(&host).unwrap());
        let expected = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(p, n)| (p.to_string(), n.to_string()))
                .collect()
        };
        assert_eq!(
            found,
            expected(&[
                ("default", "default_web"),
                ("default", "prod_web"),
                ("default", "web")
            ])
        );

        // Once the LXD socket exists, LXD's <project>_<name> is split; default_web and web
        // then map to one instance: one is served, the other logged, not both lost.
        std::fs::write(&socket, "").unwrap();
        let lxd = CgroupDiscovery::new(&config(&socket));
        let found = names(lxd.discover_blocking(&host).unwrap());
        assert_eq!(found, expected(&[("default", "web"), ("prod", "web")]));
        assert_eq!(lxd.conflicts.lock().unwrap().len(), 1);
        let walk = lxd
            .discover_with_sources(&host, &lxd.offline_view(), &HashMap::new())
            .unwrap();
        assert_eq!(walk.conflicts, 1, "the dropped cgroup is counted");
    }

    /// On a hybrid host an instance's pid is read from its v2 cgroup, whose list can be
    /// kept open, and from its v1 cgroup when the v2 one is missing or empty.
    #[test]
    fn hybrid_hosts_take_the_pid_from_the_v2_list_when_it_has_one() {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = dir.path().join("cgroup");
        for (name, v1, v2) in [
            ("a", "11\n", Some("21\n")),
            ("b", "12\n", None),
            ("c", "13\n", Some("")),
        ] {
            let c = cgroup.join("pids").join(format!("lxc.payload.{name}"));
            std::fs::create_dir_all(&c).unwrap();
            std::fs::write(c.join("cgroup.procs"), v1).unwrap();
            if let Some(v2) = v2 {
                let c = cgroup.join("unified").join(format!("lxc.payload.{name}"));
                std::fs::create_dir_all(&c).unwrap();
                std::fs::write(c.join("cgroup.procs"), v2).unwrap();
            }
        }
        std::fs::write(cgroup.join("unified/cgroup.controllers"), "").unwrap();
        let host = HostPaths {
            cgroup_root: cgroup,
            ..HostPaths::default()
        };
        let discovery = CgroupDiscovery::new(&InstancesConfig {
            source: vec![InstanceSource::preset(Preset::Lxc)],
            ..no_apis()
        });
        for _ in 0..2 {
            let pids: Vec<(String, Option<u32>)> = discovery
                .discover_blocking(&host)
                .unwrap()
                .into_iter()
                .map(|i| (i.name, i.pid))
                .collect();
            let expected = [("a", 21), ("b", 12), ("c", 13)].map(|(n, p)| (n.to_owned(), Some(p)));
            assert_eq!(
                pids, expected,
                "the same when read again through kept files"
            );
        }
        // Kept: with its file gone by path, a's v2 list is still read through the open
        // descriptor (on cgroupfs a removed cgroup's file answers ENODEV instead, and is
        // opened again); a reader that opened it anew would fall back to v1's 11.
        std::fs::remove_file(host.cgroup_root.join("unified/lxc.payload.a/cgroup.procs")).unwrap();
        let a = discovery.discover_blocking(&host).unwrap();
        assert_eq!((a[0].name.as_str(), a[0].pid), ("a", Some(21)));
    }

    /// With the API's answer: its instances keep their exact identity (a VM whose cgroup
    /// is not found and a stopped container are listed, not readable); a cgroup it does
    /// not claim is a plain LXC container named in full, even with a `_`.
    #[test]
    fn the_api_names_claimed_cgroups_and_adds_what_does_not_run() {
        use lxmetrics_plugin::InstanceStatus;
        let dir = tempfile::tempdir().unwrap();
        let cgroup = dir.path().join("cgroup");
        for name in ["c1", "foo_c3", "plain_web"] {
            let c = cgroup.join(format!("lxc.payload.{name}"));
            std::fs::create_dir_all(&c).unwrap();
            std::fs::write(c.join("cgroup.procs"), "7\n").unwrap();
        }
        std::fs::write(cgroup.join("cgroup.controllers"), "cpu memory\n").unwrap();
        let host = HostPaths {
            cgroup_root: cgroup,
            ..HostPaths::default()
        };
        let managed = |name: &str, project: &str, kind, status, cgroup_name: &str| {
            let mut instance = Instance::new(name, project, kind, "");
            instance.status = status;
            instance.mounts = vec!["/mnt/data".into()];
            instance.info = vec![("engine".into(), "lxd".into())];
            (
                cgroup_name.to_owned(),
                ManagedInstance {
                    instance,
                    cgroup_name: cgroup_name.to_owned(),
                },
            )
        };
        use InstanceStatus::{Running, Stopped};
        use InstanceType::{Container, VirtualMachine};
        let view = ManagerView {
            claims: HashMap::from([
                managed("c1", "default", Container, Running, "c1"),
                managed("c2", "default", Container, Stopped, "c2"),
                managed("c3", "foo", Container, Running, "foo_c3"),
                managed("vm1", "foo", VirtualMachine, Running, "foo_vm1"),
            ]),
            managers_answered: true,
            ..ManagerView::default()
        };
        let discovery = CgroupDiscovery::new(&InstancesConfig {
            source: vec![InstanceSource::preset(Preset::Lxc)],
            ..no_apis()
        });
        let none = HashMap::new();
        let walk = discovery
            .discover_with_sources(&host, &view, &none)
            .unwrap();
        // plain_web is not the API's: the view is out of date (LXD may have just made
        // it), unless plain_web was already there, unclaimed, when the view was fetched.
        assert!(walk.stale);
        assert_eq!(walk.unclaimed, ["plain_web"]);
        let kept = ManagerView {
            plain: HashSet::from(["plain_web".to_owned()]),
            claims: view.claims.clone(),
            ..ManagerView {
                managers_answered: true,
                ..ManagerView::default()
            }
        };
        assert!(
            !discovery
                .discover_with_sources(&host, &kept, &none)
                .unwrap()
                .stale
        );
        // c1 stops: its cgroup goes while the kept view still calls it running.
        let mut stopped = kept;
        stopped.claims.remove("c1");
        stopped
            .claims
            .extend([managed("c9", "default", Container, Running, "c9")]);
        assert!(
            discovery
                .discover_with_sources(&host, &stopped, &none)
                .unwrap()
                .stale
        );
        let found: Vec<Instance> = walk.instances.into_iter().map(|(i, _)| i).collect();
        let summary: Vec<(&str, &str, bool, &str)> = found
            .iter()
            .map(|i| {
                let engine = i
                    .info
                    .iter()
                    .find(|(k, _)| k == "engine")
                    .map(|(_, v)| v.as_str());
                (
                    i.project.as_str(),
                    i.name.as_str(),
                    i.is_readable(),
                    engine.unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("default", "c1", true, "lxd"),
                ("default", "c2", false, "lxd"),
                ("default", "plain_web", true, "lxc"),
                ("foo", "c3", true, "lxd"),
                ("foo", "vm1", false, "lxd"),
            ]
        );
        let c3 = found.iter().find(|i| i.name == "c3").unwrap();
        assert_eq!(c3.cgroup, "lxc.payload.foo_c3");
        assert_eq!(c3.pid, Some(7));
        assert_eq!(c3.mounts, ["/mnt/data"]);
        let vm = found.iter().find(|i| i.name == "vm1").unwrap();
        assert_eq!((vm.status, vm.kind), (Running, VirtualMachine));
    }

    /// `[instances]` with the default rules and no runtime API asked, whatever runs on
    /// the machine the tests run on.
    fn no_apis() -> InstancesConfig {
        let mut config = InstancesConfig::default();
        for socket in [
            &mut config.lxd.socket,
            &mut config.incus.socket,
            &mut config.docker.socket,
            &mut config.podman.socket,
        ] {
            *socket = Some(PathBuf::new());
        }
        config
    }

    /// An engine container as its API lists it.
    fn listed(
        engine: &'static str,
        id: &str,
        name: &str,
        project: &str,
        running: bool,
    ) -> (String, EngineContainer) {
        let mut instance = Instance::new(name, project, InstanceType::Container, "");
        instance.status = if running {
            InstanceStatus::Running
        } else {
            InstanceStatus::Stopped
        };
        instance.info = vec![("engine".into(), engine.into())];
        let container = EngineContainer {
            engine,
            instance,
            id: id.to_owned(),
            pid: None,
        };
        (id.to_owned(), container)
    }

    /// With the engines' answers: containers at their default cgroups, in a pod and
    /// under a custom parent (found through a process of theirs) get their engine names
    /// and projects; a stopped one is listed, not read; an unlisted id makes the view
    /// stale; so does a listed container whose known cgroup stopped.
    #[test]
    fn engine_containers_are_named_by_their_engine_wherever_their_cgroup_is() {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = dir.path().join("cgroup");
        let proc_root = dir.path().join("proc");
        let (web, pod_member, custom, stopped) = (
            "a".repeat(64),
            "b".repeat(64),
            "c".repeat(64),
            "d".repeat(64),
        );
        let places = [
            (format!("docker/{web}"), 11),
            (
                format!("libpod_parent/{}/libpod-{pod_member}", "e".repeat(64)),
                12,
            ),
            (format!("myapps/{custom}"), 13),
        ];
        for (place, pid) in &places {
            let c = cgroup.join(place);
            std::fs::create_dir_all(&c).unwrap();
            std::fs::write(c.join("cgroup.procs"), format!("{pid}\n")).unwrap();
            let p = proc_root.join(pid.to_string());
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("cgroup"), format!("0::/{place}\n")).unwrap();
        }
        std::fs::write(cgroup.join("cgroup.controllers"), "cpu memory\n").unwrap();
        let host = HostPaths {
            cgroup_root: cgroup.clone(),
            proc_root,
            ..HostPaths::default()
        };
        let mut member = listed("podman", &pod_member, "pa", "shoppod", true);
        member.1.pid = Some(12);
        let view = ManagerView {
            containers: HashMap::from([
                listed("docker", &web, "web1", "default", true),
                member,
                listed("docker", &custom, "custom", "shop", true),
                listed("docker", &stopped, "old", "default", false),
            ]),
            answered: vec!["docker", "podman"],
            ..ManagerView::default()
        };
        let discovery = CgroupDiscovery::new(&no_apis());
        // Docker's list has no pid: the custom-parent container is left for an inspect.
        let walk = discovery
            .discover_with_sources(&host, &view, &HashMap::new())
            .unwrap();
        assert_eq!(walk.unresolved, std::slice::from_ref(&custom));
        assert!(!walk.stale);
        let inspected = HashMap::from([(custom.clone(), 13)]);
        let walk = discovery
            .discover_with_sources(&host, &view, &inspected)
            .unwrap();
        assert!(walk.unresolved.is_empty());
        let summary: Vec<(String, String, bool, String)> = walk
            .instances
            .iter()
            .map(|(i, _)| {
                (
                    i.project.clone(),
                    i.name.clone(),
                    i.is_readable(),
                    i.cgroup.clone(),
                )
            })
            .collect();
        let row =
            |p: &str, n: &str, r: bool, c: &str| (p.to_owned(), n.to_owned(), r, c.to_owned());
        assert_eq!(
            summary,
            [
                row("default", "old", false, ""),
                row("default", "web1", true, &places[0].0),
                row("shop", "custom", true, &places[2].0),
                row("shoppod", "pa", true, &places[1].0),
            ]
        );
        // Learnt once: later walks of this view need no pids.
        let again = discovery
            .discover_with_sources(&host, &view, &HashMap::new())
            .unwrap();
        assert!(
            again.unresolved.is_empty()
                && again
                    .instances
                    .iter()
                    .all(|(i, _)| i.name != "custom" || i.is_readable())
        );

        // A container started since the view (an id its engine did not list).
        let mut newer = view;
        newer.containers.remove(&web);
        assert!(
            discovery
                .discover_with_sources(&host, &newer, &HashMap::new())
                .unwrap()
                .stale
        );
        // A container the view calls running whose known cgroup no longer runs.
        std::fs::write(cgroup.join(&places[2].0).join("cgroup.procs"), "").unwrap();
        newer
            .containers
            .extend([listed("docker", &web, "web1", "default", true)]);
        assert!(
            discovery
                .discover_with_sources(&host, &newer, &HashMap::new())
                .unwrap()
                .stale
        );
    }

    /// systemd's cgroup driver (these test machines have no systemd): the presets find
    /// `docker-<id>.scope` and `libpod-<id>.scope`, and the engines name them.
    #[test]
    fn systemd_scopes_of_docker_and_podman_are_named_by_their_engine() {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = dir.path().join("cgroup");
        let (docker, podman) = ("1".repeat(64), "2".repeat(64));
        for place in [
            format!("system.slice/docker-{docker}.scope"),
            format!("machine.slice/libpod-{podman}.scope/container"),
        ] {
            let c = cgroup.join(place);
            std::fs::create_dir_all(&c).unwrap();
            std::fs::write(c.join("cgroup.procs"), "21\n").unwrap();
        }
        std::fs::write(cgroup.join("cgroup.controllers"), "cpu memory\n").unwrap();
        let host = HostPaths {
            cgroup_root: cgroup,
            ..HostPaths::default()
        };
        let view = ManagerView {
            containers: HashMap::from([
                listed("docker", &docker, "web", "shop", true),
                listed("podman", &podman, "api", "pod1", true),
            ]),
            answered: vec!["docker", "podman"],
            ..ManagerView::default()
        };
        let walk = CgroupDiscovery::new(&no_apis())
            .discover_with_sources(&host, &view, &HashMap::new())
            .unwrap();
        let found: Vec<(String, String, String)> = walk
            .instances
            .into_iter()
            .map(|(i, _)| (i.project, i.name, i.cgroup))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "pod1".to_owned(),
                    "api".to_owned(),
                    format!("machine.slice/libpod-{podman}.scope")
                ),
                (
                    "shop".to_owned(),
                    "web".to_owned(),
                    format!("system.slice/docker-{docker}.scope")
                ),
            ]
        );
        assert!(!walk.stale);
    }

    #[test]
    fn a_pid_reused_by_another_process_is_not_taken_for_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cgroup");
        std::fs::create_dir_all(root.join("system.slice/cron.service")).unwrap();
        std::fs::create_dir_all(dir.path().join("proc/5")).unwrap();
        std::fs::write(
            dir.path().join("proc/5/cgroup"),
            "0::/system.slice/cron.service\n",
        )
        .unwrap();
        let proc_root = dir.path().join("proc");
        assert_eq!(
            container_cgroup(&proc_root, 5, &root, &"f".repeat(64)),
            None
        );
        assert_eq!(
            container_cgroup(&proc_root, 6, &root, "x"),
            None,
            "no such process"
        );
    }

    /// A fake LXD on a unix socket that answers every request with `body`, counting
    /// the requests.
    fn fake_lxd(socket: &Path, body: &'static str) -> Arc<std::sync::atomic::AtomicUsize> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = asked.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        asked
    }

    /// The cheap check after VIEW_MAX_AGE: the same instance names keep the view; any
    /// other list, or no answer, does not.
    #[tokio::test]
    async fn a_view_is_confirmed_by_the_names_alone() {
        let dir = tempfile::tempdir().unwrap();
        let config = |socket: &Path| InstancesConfig {
            lxd: lxmetrics_core::config::DaemonSocket {
                socket: Some(socket.to_owned()),
            },
            ..no_apis()
        };
        let view = |names: &[(&str, &str)]| ManagerView {
            claims: names
                .iter()
                .map(|(project, name)| {
                    let instance = Instance::new(*name, *project, InstanceType::Container, "");
                    let cgroup_name = format!("{project}_{name}");
                    (
                        cgroup_name.clone(),
                        ManagedInstance {
                            instance,
                            cgroup_name,
                        },
                    )
                })
                .collect(),
            managers_answered: true,
            answered: vec!["lxd"],
            ..ManagerView::default()
        };
        let same = dir.path().join("same.socket");
        let asked = fake_lxd(
            &same,
            r#"{"type":"sync","metadata":["/1.0/instances/c1","/1.0/instances/c3?project=foo"]}"#,
        );
        let discovery = CgroupDiscovery::new(&config(&same));
        assert!(
            discovery
                .still_current(&view(&[("default", "c1"), ("foo", "c3")]))
                .await
        );
        assert_eq!(asked.load(Ordering::Relaxed), 1, "one cheap request");
        assert!(
            !discovery.still_current(&view(&[("default", "c1")])).await,
            "c3 is new"
        );
        let mut guessed = view(&[("default", "c1"), ("foo", "c3")]);
        guessed.guess_projects = true;
        assert!(
            !discovery.still_current(&guessed).await,
            "a failed manager is asked in full"
        );

        let silent = dir.path().join("silent.socket");
        let _listener = std::os::unix::net::UnixListener::bind(&silent).unwrap();
        let discovery = CgroupDiscovery::new(&config(&silent));
        let started = std::time::Instant::now();
        assert!(!discovery.still_current(&view(&[("default", "c1")])).await);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    /// A Docker socket left by a stopped daemon, next to a running LXD: the view stays
    /// current on LXD's names alone while Docker still does not answer (it used to be
    /// fetched in full from LXD at every confirmation), and not once Docker answers.
    #[tokio::test]
    async fn a_source_silent_since_the_view_keeps_it_current_until_it_answers() {
        let dir = tempfile::tempdir().unwrap();
        let (lxd, docker) = (
            dir.path().join("lxd.socket"),
            dir.path().join("docker.sock"),
        );
        let lxd_asked = fake_lxd(&lxd, r#"{"type":"sync","metadata":["/1.0/instances/c1"]}"#);
        // A socket file nobody listens on: connection refused, as after `dockerd` exits.
        drop(std::os::unix::net::UnixListener::bind(&docker).unwrap());
        let mut config = no_apis();
        config.lxd.socket = Some(lxd.clone());
        config.docker.socket = Some(docker.clone());
        let discovery = CgroupDiscovery::new(&config);
        // The view a fetch made when LXD answered with c1 and Docker did not.
        let view = ManagerView {
            claims: HashMap::from([(
                "c1".to_owned(),
                ManagedInstance {
                    instance: Instance::new("c1", "default", InstanceType::Container, ""),
                    cgroup_name: "c1".to_owned(),
                },
            )]),
            managers_answered: true,
            answered: vec!["lxd"],
            ..ManagerView::default()
        };
        assert!(discovery.still_current(&view).await, "docker still silent");
        let docker_health = |d: &CgroupDiscovery| {
            let health = d.health.lock().unwrap();
            let h = health.iter().find(|h| h.engine == "docker").unwrap();
            (h.retry_at.is_some(), h.fallbacks)
        };
        assert_eq!(
            docker_health(&discovery),
            (true, 1),
            "asked, failed, backed off"
        );
        assert!(
            discovery.still_current(&view).await,
            "within docker's back-off"
        );
        assert_eq!(docker_health(&discovery), (true, 1), "not asked again");
        assert_eq!(lxd_asked.load(Ordering::Relaxed), 2, "two names checks");

        // Docker is back (and its back-off over): the view is fetched in full.
        std::fs::remove_file(&docker).unwrap();
        let docker_asked = fake_lxd(&docker, "[]");
        for h in discovery.health.lock().unwrap().iter_mut() {
            h.retry_at = None;
        }
        assert!(
            !discovery.still_current(&view).await,
            "docker answers again"
        );
        assert_eq!(docker_asked.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn every_preset_pattern_parses() {
        for preset in Preset::ALL {
            for rule in preset_rules(preset) {
                assert!(!rule.components.is_empty(), "{preset:?}");
            }
        }
    }

    #[test]
    fn more_literal_rules_are_more_specific() {
        let nspawn = &preset_rules(Preset::SystemdNspawn)[0];
        let libvirt = &preset_rules(Preset::Libvirt)[0];
        assert!(libvirt.specificity > nspawn.specificity);
    }
}
