//! `lxmetrics daemon`: wires configuration, collectors, the cache and the listeners
//! together and runs until SIGTERM or SIGINT.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use lxmetrics_core::cache::MetricsCache;
use lxmetrics_core::config::{self as core_config, ConfigFile};

use crate::config::{
    DaemonConfig, ListenAddress, ListenersConfig, LoadedDaemonConfig, ServerSections,
};
use lxmetrics_core::daemon_metrics::DaemonTelemetry;
use lxmetrics_core::engine::RefreshEngine;
use lxmetrics_core::registry;
use lxmetrics_core::scrape::MetricsService;
use lxmetrics_plugin::HostPaths;
use tokio::sync::watch;

use lxmetrics_plugins::CgroupDiscovery;

use crate::cli::DaemonArgs;
use crate::listener::HttpListener;
use crate::pki::PkiFiles;
use crate::routes::{routes, AppState, ListenerScope};
use crate::state_dir::StateDir;
use crate::tls::config as tls_config;
use crate::tls::server_cert;
use crate::trust::store::TrustStore;

/// The system-wide configuration file, read when the state directory has none (the
/// Debian package installs it).
pub const SYSTEM_CONFIG: &str = "/etc/lxmetrics/config.toml";

/// Which configuration file a command reads: `--config FILE` (must exist), else
/// `<state-dir>/config.toml`, else [`SYSTEM_CONFIG`], else none.
pub fn config_file(state_dir: &Path, explicit: Option<&Path>) -> ConfigFile {
    config_file_among(state_dir, explicit, Path::new(SYSTEM_CONFIG))
}

fn config_file_among(state_dir: &Path, explicit: Option<&Path>, system: &Path) -> ConfigFile {
    match explicit {
        Some(path) => ConfigFile::Required(path.to_owned()),
        None => {
            let candidates = [StateDir(state_dir).config(), system.to_owned()];
            let found = candidates.iter().find(|p| p.is_file());
            ConfigFile::Optional(found.unwrap_or(&candidates[0]).clone())
        }
    }
}

/// Loads the configuration the way every subcommand does, with the checks only the
/// linked collectors can make (their names).
pub fn load_config(
    state_dir: &Path,
    explicit: Option<&Path>,
    overrides: &[(&str, figment::value::Value)],
) -> anyhow::Result<LoadedDaemonConfig> {
    Ok(core_config::load_described(
        &config_file(state_dir, explicit),
        overrides,
        &registry::check_selection,
    )?)
}

/// Builds the enabled collectors, checking each one's settings; an error names the file
/// the settings came from.
pub fn build_collectors(
    loaded: &LoadedDaemonConfig,
) -> anyhow::Result<Vec<(&'static str, Arc<dyn lxmetrics_plugin::Collector>)>> {
    let config = &loaded.config;
    let host = Arc::new(config.host.clone());
    registry::build_enabled(&config.collectors, &config.metrics, &host).map_err(|e| {
        match &loaded.file {
            Some(file) => anyhow::anyhow!("{}: {e}", file.display()),
            None => anyhow::anyhow!("{e}"),
        }
    })
}

/// The flags of `lxmetrics daemon` as configuration overrides.
pub fn overrides(args: &DaemonArgs) -> Vec<(&'static str, figment::value::Value)> {
    let mut out = Vec::new();
    if let Some(a) = &args.https_address {
        out.push(("core.https_address", a.as_str().into()));
    }
    if let Some(a) = &args.metrics_address {
        out.push(("core.metrics_address", a.as_str().into()));
    }
    out
}

/// Runs the daemon until a termination signal.
///
/// `reload` re-reads the configuration on SIGHUP (with the same sources and flags).
pub async fn run(
    loaded: LoadedDaemonConfig,
    state_dir: &Path,
    reload: impl Fn() -> anyhow::Result<LoadedDaemonConfig>,
) -> anyhow::Result<()> {
    let config = &loaded.config;
    // Handlers first: a SIGHUP sent as soon as the listeners are announced must reload,
    // not end the daemon (the default action of an unhandled SIGHUP).
    let mut signals = Signals::new()?;
    // Every collector's settings are checked before anything is written to the state
    // directory: a configuration error leaves no half-initialized state behind.
    let collectors = build_collectors(&loaded)?;
    let host = Arc::new(config.host.clone());
    crate::state_dir::ensure(state_dir)
        .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
    let identity = server_cert::load_or_generate(state_dir)?;
    let trust = Arc::new(
        TrustStore::open(&StateDir(state_dir).trust_db())
            .with_context(|| "cannot open the trust store".to_owned())?,
    );
    let tls = tls_config::server_config(&identity).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => anyhow::anyhow!(
            "{} and {} do not belong together (the key is not the certificate's): put \
             back the matching pair, or move both away to have a new pair generated \
             (clients then need the new certificate)",
            StateDir(state_dir).server_cert().display(),
            StateDir(state_dir).server_key().display()
        ),
        other => anyhow::anyhow!(
            "TLS configuration of {}: {other}",
            StateDir(state_dir).server_cert().display()
        ),
    })?;
    let pki = match config.sections.core.trust_ca_certificates {
        true => Some(PkiFiles::load(state_dir)?),
        false => None,
    };
    match &loaded.file {
        Some(file) => println!("lxmetrics configuration: {}", file.display()),
        None => println!(
            "lxmetrics configuration: no file (defaults, environment and flags; \
             looked for {} and {SYSTEM_CONFIG})",
            StateDir(state_dir).config().display()
        ),
    }
    println!("lxmetrics state directory: {}", state_dir.display());
    println!(
        "lxmetrics server certificate fingerprint: {}{}",
        identity.fingerprint,
        if identity.generated {
            " (generated)"
        } else {
            ""
        }
    );

    tracing::info!(
        collectors = %collectors.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(","),
        "collectors enabled"
    );
    let discovery = CgroupDiscovery::new(&config.instances);
    print_instance_sources(config, &discovery, &host);
    let source_health = discovery.clone();
    let engine = RefreshEngine::new(
        Arc::new(discovery),
        collectors,
        host,
        config.metrics.collector_timeout,
        config.metrics.prefix.as_str(),
    )
    .with_slow_refresh_warning(config.metrics.cache_ttl / 2)
    .with_after_refresh(Arc::new(crate::memory::release_free_memory));
    let cache = MetricsCache::new(Arc::new(engine), config.metrics.cache_ttl);
    let telemetry = Arc::new(DaemonTelemetry::default());
    telemetry.add_source(Arc::new(move || source_health.health_families()));
    let state = AppState {
        cluster: Arc::new(ArcSwap::from_pointee(
            config.sections.cluster.members.clone(),
        )),
        metrics: MetricsService::new(cache, telemetry.clone()),
        trust,
        metrics_authentication: config.sections.core.metrics_authentication,
        server_fingerprint: identity.fingerprint.as_str().into(),
        pki,
    };

    let (stop_pushing, pushing_stopped) = watch::channel(false);
    let trust_watch = tokio::spawn(state.trust.clone().watch(pushing_stopped.clone()));
    let pki_watch = state
        .pki
        .clone()
        .map(|files| tokio::spawn(files.watch(pushing_stopped.clone())));
    let pusher = crate::remote_write::RemoteWriter::from_config(
        &config.sections.remote_write,
        state.metrics.clone(),
    )?
    .map(|writer| tokio::spawn(writer.run(pushing_stopped)));

    let mut listeners = Listeners {
        tls,
        state: state.clone(),
        telemetry: telemetry.clone(),
        https: None,
        metrics: None,
    };
    listeners
        .reconcile(&config.sections.core, &|key| loaded.origin(key), true)
        .await?;
    let socket = StateDir(state_dir).socket();
    let unix = start(
        HttpListener::bind_unix(
            &socket,
            routes(state.clone(), ListenerScope::Full),
            telemetry.clone(),
        )
        .with_context(|| format!("cannot listen on {}", socket.display()))?,
        None,
    );
    println!("lxmetrics listening on unix:{}", socket.display());

    // What the running daemon applies; SIGHUP says which other changes wait for a restart.
    let mut applied = config.clone();
    loop {
        match signals.next().await {
            Signal::Terminate => break,
            Signal::Hangup => {
                // The revocation list first: it must apply even if the configuration
                // file is broken.
                if let Some(files) = &state.pki {
                    let files = files.clone();
                    match tokio::task::spawn_blocking(move || files.reload()).await {
                        Ok(Ok(())) => tracing::info!("SIGHUP: CA and revocation list reloaded"),
                        Ok(Err(e)) => tracing::error!(
                            "SIGHUP: {e}; the previous CA and revocation list stay in force"
                        ),
                        Err(e) => tracing::error!("SIGHUP: PKI reload interrupted: {e}"),
                    }
                }
                // Re-read the configuration; re-bind listeners whose address changed. The
                // new socket is bound before the old one stops, so a failed bind keeps
                // the old listener serving.
                let reloaded = match reload() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!("SIGHUP: configuration not reloaded: {e:#}");
                        continue;
                    }
                };
                let new = &reloaded.config;
                let waiting: Vec<String> = core_config::changed_keys(&applied, new)
                    .into_iter()
                    .filter(|k| !RELOADED_KEYS.iter().any(|r| k.starts_with(r)))
                    .collect();
                if !waiting.is_empty() {
                    tracing::warn!(
                        "SIGHUP: {} changed; these apply at the next start (restart the \
                         daemon), the rest of the configuration was reloaded",
                        waiting.join(", ")
                    );
                }
                applied.sections = ServerSections {
                    core: reloaded_core(&applied.sections.core, &new.sections.core),
                    cluster: new.sections.cluster.clone(),
                    ..applied.sections
                };
                let members = &new.sections.cluster.members;
                if **state.cluster.load() != *members {
                    tracing::info!(members = members.len(), "SIGHUP: cluster members reloaded");
                    state.cluster.store(Arc::new(members.clone()));
                }
                listeners
                    .reconcile(&new.sections.core, &|key| reloaded.origin(key), false)
                    .await?;
            }
        }
    }
    tracing::info!("shutting down");
    let _ = stop_pushing.send(true);
    let _ = trust_watch.await;
    if let Some(watch) = pki_watch {
        let _ = watch.await;
    }
    if let Some(pusher) = pusher {
        let _ = tokio::time::timeout(Duration::from_secs(2), pusher).await;
    }
    let mut stopping = vec![unix.stop()];
    stopping.extend(listeners.https.take().map(Running::stop));
    stopping.extend(listeners.metrics.take().map(Running::stop));
    futures_util::future::join_all(stopping).await;
    Ok(())
}

/// The keys SIGHUP applies; changes to any other key wait for a restart.
const RELOADED_KEYS: [&str; 3] = [
    "core.https_address",
    "core.metrics_address",
    "cluster.members",
];

/// `applied`'s `[core]` with the listener addresses SIGHUP applies taken from `new`.
fn reloaded_core(applied: &ListenersConfig, new: &ListenersConfig) -> ListenersConfig {
    ListenersConfig {
        https_address: new.https_address,
        metrics_address: new.metrics_address,
        ..applied.clone()
    }
}

/// The TCP listeners and what binding them needs.
struct Listeners {
    tls: Arc<rustls::ServerConfig>,
    state: AppState,
    telemetry: Arc<DaemonTelemetry>,
    https: Option<Running>,
    metrics: Option<Running>,
}

impl Listeners {
    /// Brings the listeners to `core`'s addresses, at start and on SIGHUP alike: a
    /// listener whose address changed is bound anew first and the old one stops after its
    /// in-flight requests; one no longer configured stops. `origin` says where each
    /// address came from. At start a bind error is returned; on SIGHUP it is logged and
    /// the old listener keeps serving.
    async fn reconcile(
        &mut self,
        core: &ListenersConfig,
        origin: &dyn Fn(&str) -> String,
        at_start: bool,
    ) -> anyhow::Result<()> {
        let wanted = [
            (
                "core.https_address",
                Some(core.https_address),
                ListenerScope::Full,
            ),
            (
                "core.metrics_address",
                core.metrics_address,
                ListenerScope::MetricsOnly,
            ),
        ];
        for (key, address, scope) in wanted {
            let slot = match scope {
                ListenerScope::Full => &mut self.https,
                ListenerScope::MetricsOnly => &mut self.metrics,
            };
            if address == slot.as_ref().and_then(|r| r.address) {
                continue;
            }
            let Some(address) = address else {
                if let Some(old) = slot.take() {
                    old.stop().await;
                }
                continue;
            };
            let routes = routes(self.state.clone(), scope);
            match bind_tls(
                address,
                key,
                &self.tls,
                routes,
                &self.telemetry,
                &origin(key),
            ) {
                Ok(listener) => {
                    if let Some(old) = slot.replace(start(listener, Some(address))) {
                        old.stop().await;
                    }
                }
                Err(e) if at_start => return Err(e),
                Err(e) => tracing::error!("SIGHUP: {e:#}; keeping the old listener"),
            }
        }
        Ok(())
    }
}

/// A serving listener and how to stop it.
struct Running {
    /// The configured address of a TCP listener (`None` for the unix socket).
    address: Option<ListenAddress>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, and waits.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn start(listener: HttpListener, address: Option<ListenAddress>) -> Running {
    let (stop, stopped) = watch::channel(false);
    Running {
        address,
        stop,
        task: tokio::spawn(listener.serve(stopped)),
    }
}

enum Signal {
    Terminate,
    Hangup,
}

/// SIGTERM/SIGINT end the daemon; SIGHUP reloads the listener addresses and the
/// cluster members.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Terminate,
            _ = self.int.recv() => Signal::Terminate,
            _ = self.hup.recv() => Signal::Hangup,
        }
    }
}

/// Prints the instance sources in use and how many running instances each finds now,
/// so a host where nothing matches is noticed at start rather than from an empty graph.
fn print_instance_sources(config: &DaemonConfig, discovery: &CgroupDiscovery, host: &HostPaths) {
    let labels = config
        .instances
        .source
        .iter()
        .map(|s| match (&s.preset, &s.pattern) {
            (Some(preset), _) => serde_json::to_value(preset)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            (None, Some(pattern)) => format!("pattern {pattern}"),
            (None, None) => "none".to_owned(),
        });
    match discovery.instances_per_source(host) {
        Ok(counts) => {
            let total: usize = counts.iter().sum();
            let per_source: Vec<String> = labels
                .zip(counts.iter().copied().chain(std::iter::repeat(0)))
                .map(|(label, n)| format!("{label}: {n}"))
                .collect();
            println!(
                "lxmetrics instances: {total} running under {} ({})",
                host.cgroup_root.display(),
                per_source.join(", ")
            );
        }
        Err(e) => println!("lxmetrics instances: discovery failed: {e}"),
    }
    for (engine, socket) in discovery.manager_sockets() {
        println!(
            "lxmetrics instances: named by the {engine} API at {} (running and stopped)",
            socket.display()
        );
    }
}

/// Binds one TLS listener and prints its address, the key and where its value came from.
fn bind_tls(
    addr: ListenAddress,
    key: &str,
    tls: &Arc<rustls::ServerConfig>,
    routes: warp::filters::BoxedFilter<(warp::reply::Response,)>,
    telemetry: &Arc<DaemonTelemetry>,
    origin: &str,
) -> anyhow::Result<HttpListener> {
    let listener =
        HttpListener::bind_tls(addr.socket_addr(), tls.clone(), routes, telemetry.clone())
            .with_context(|| format!("{key}: cannot listen on {addr}"))?;
    if let Some(local) = listener.local_addr() {
        println!("lxmetrics listening on https://{local} ({key}, from {origin})");
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_file_is_the_flag_then_the_state_directory_then_etc() {
        let dir = tempfile::tempdir().unwrap();
        let (state, etc) = (dir.path().join("state"), dir.path().join("etc.toml"));
        std::fs::create_dir(&state).unwrap();
        let own = state.join("config.toml");
        let pick = |explicit: Option<&Path>| config_file_among(&state, explicit, &etc);
        // None exists: the state directory's is named (and optional).
        assert_eq!(pick(None), ConfigFile::Optional(own.clone()));
        std::fs::write(&etc, "").unwrap();
        assert_eq!(pick(None), ConfigFile::Optional(etc.clone()));
        std::fs::write(&own, "").unwrap();
        assert_eq!(pick(None), ConfigFile::Optional(own.clone()));
        let flag = dir.path().join("flag.toml");
        assert_eq!(pick(Some(&flag)), ConfigFile::Required(flag.clone()));
    }
}
