//! `lxmetrics daemon`: wires configuration, collectors, the cache and the listeners
//! together and runs until SIGTERM or SIGINT.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use lxmetrics_core::cache::MetricsCache;
use lxmetrics_core::config::{self, Config, ConfigFile, ListenAddress};
use lxmetrics_core::daemon_metrics::DaemonTelemetry;
use lxmetrics_core::engine::RefreshEngine;
use lxmetrics_core::registry;
use lxmetrics_core::scrape::MetricsService;
use tokio::sync::watch;

use crate::cli::DaemonArgs;
use crate::listener::HttpListener;
use crate::pki::PkiFiles;
use crate::routes::{routes, AppState, ListenerScope};
use crate::tls::config as tls_config;
use crate::tls::server_cert;
use crate::trust::store::TrustStore;

/// Loads the configuration the way every subcommand does.
pub fn load_config(
    state_dir: &Path,
    explicit: Option<&Path>,
    overrides: &[(&str, figment::value::Value)],
) -> anyhow::Result<Config> {
    let file = match explicit {
        Some(path) => ConfigFile::Required(path.to_owned()),
        None => ConfigFile::Optional(state_dir.join("config.toml")),
    };
    Ok(config::load(&file, overrides)?)
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
    config: Config,
    state_dir: &Path,
    reload: impl Fn() -> anyhow::Result<Config>,
) -> anyhow::Result<()> {
    match crate::fd_limit::raise() {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!("{e}"),
    }
    let identity = server_cert::load_or_generate(state_dir)?;
    let trust = Arc::new(
        TrustStore::open(&state_dir.join("trust.db"))
            .with_context(|| "cannot open the trust store".to_owned())?,
    );
    let tls = tls_config::server_config(&identity).context("TLS configuration")?;
    let pki = match config.core.trust_ca_certificates {
        true => Some(PkiFiles::load(state_dir)?),
        false => None,
    };
    println!(
        "lxmetrics server certificate fingerprint: {}{}",
        identity.fingerprint,
        if identity.generated {
            " (generated)"
        } else {
            ""
        }
    );

    let host = Arc::new(config.host.clone());
    let collectors = registry::build_enabled(&config.collectors, &config.metrics, &host)?;
    tracing::info!(
        collectors = %collectors.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(","),
        "collectors enabled"
    );
    let engine = RefreshEngine::new(
        discovery(&config),
        collectors,
        host,
        config.metrics.collector_timeout,
    )
    .with_metric_prefix(config.metrics.prefix.as_str())
    .with_slow_refresh_warning(config.metrics.cache_ttl / 2)
    .with_after_refresh(Arc::new(crate::memory::release_free_memory));
    let cache = MetricsCache::new(Arc::new(engine), config.metrics.cache_ttl);
    let telemetry = Arc::new(DaemonTelemetry::default());
    let state = AppState {
        cluster: Arc::new(ArcSwap::from_pointee(config.cluster.members.clone())),
        metrics: MetricsService::new(cache, telemetry.clone()),
        trust,
        metrics_authentication: config.core.metrics_authentication,
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
        &config.remote_write,
        state.metrics.clone(),
    )?
    .map(|writer| tokio::spawn(writer.run(pushing_stopped)));

    let mut https = start(
        bind_tls(
            config.core.https_address,
            "core.https_address",
            &tls,
            routes(state.clone(), ListenerScope::Full),
            &telemetry,
        )?,
        Some(config.core.https_address),
    );
    let mut metrics = match config.core.metrics_address {
        Some(addr) => Some(start(
            bind_tls(
                addr,
                "core.metrics_address",
                &tls,
                routes(state.clone(), ListenerScope::MetricsOnly),
                &telemetry,
            )?,
            Some(addr),
        )),
        None => None,
    };
    let socket = state_dir.join("unix.socket");
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

    let mut signals = Signals::new()?;
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
                let new = match reload() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!("SIGHUP: configuration not reloaded: {e:#}");
                        continue;
                    }
                };
                if **state.cluster.load() != new.cluster.members {
                    tracing::info!(
                        members = new.cluster.members.len(),
                        "SIGHUP: cluster members reloaded"
                    );
                    state.cluster.store(Arc::new(new.cluster.members.clone()));
                }
                if Some(new.core.https_address) != https.address {
                    match bind_tls(
                        new.core.https_address,
                        "core.https_address",
                        &tls,
                        routes(state.clone(), ListenerScope::Full),
                        &telemetry,
                    ) {
                        Ok(l) => {
                            std::mem::replace(&mut https, start(l, Some(new.core.https_address)))
                                .stop()
                                .await
                        }
                        Err(e) => tracing::error!("SIGHUP: {e:#}; keeping the old listener"),
                    }
                }
                if new.core.metrics_address != metrics.as_ref().and_then(|m| m.address) {
                    let replacement = match new.core.metrics_address {
                        Some(addr) => match bind_tls(
                            addr,
                            "core.metrics_address",
                            &tls,
                            routes(state.clone(), ListenerScope::MetricsOnly),
                            &telemetry,
                        ) {
                            Ok(l) => Some(start(l, Some(addr))),
                            Err(e) => {
                                tracing::error!("SIGHUP: {e:#}; keeping the old metrics listener");
                                continue;
                            }
                        },
                        None => None,
                    };
                    if let Some(old) = std::mem::replace(&mut metrics, replacement) {
                        old.stop().await;
                    }
                }
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
    let mut stopping = vec![https.stop(), unix.stop()];
    if let Some(m) = metrics {
        stopping.push(m.stop());
    }
    futures_util::future::join_all(stopping).await;
    Ok(())
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

/// Instance discovery from the cgroup tree, by the `[[instances.source]]` rules.
fn discovery(config: &Config) -> Arc<dyn lxmetrics_core::discovery::Discovery> {
    Arc::new(lxmetrics_plugins::CgroupDiscovery::new(&config.instances))
}

/// Binds one TLS listener and prints its address.
fn bind_tls(
    addr: ListenAddress,
    key: &str,
    tls: &Arc<rustls::ServerConfig>,
    routes: warp::filters::BoxedFilter<(warp::reply::Response,)>,
    telemetry: &Arc<DaemonTelemetry>,
) -> anyhow::Result<HttpListener> {
    let listener =
        HttpListener::bind_tls(addr.socket_addr(), tls.clone(), routes, telemetry.clone())
            .with_context(|| format!("{key}: cannot listen on {addr}"))?;
    if let Some(local) = listener.local_addr() {
        println!("lxmetrics listening on https://{local} ({key})");
    }
    Ok(listener)
}
