//! `lxmetrics daemon`: wires configuration, collectors, the cache and the listeners
//! together and runs until SIGTERM or SIGINT.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use lxmetrics_core::cache::MetricsCache;
use lxmetrics_core::config::{self, Config, ConfigFile, ListenAddress};
use lxmetrics_core::daemon_metrics::DaemonTelemetry;
use lxmetrics_core::engine::RefreshEngine;
use lxmetrics_core::registry;
use lxmetrics_core::scrape::MetricsService;
use tokio::sync::watch;

use crate::cli::DaemonArgs;
use crate::listener::HttpListener;
use crate::pki::Pki;
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
pub async fn run(config: Config, state_dir: &Path) -> anyhow::Result<()> {
    let identity = server_cert::load_or_generate(state_dir)?;
    let trust = Arc::new(
        TrustStore::open(&state_dir.join("trust.db"))
            .with_context(|| "cannot open the trust store".to_owned())?,
    );
    let tls = tls_config::server_config(&identity).context("TLS configuration")?;
    let pki = match config.core.trust_ca_certificates {
        true => Some(Arc::new(Pki::load(state_dir)?)),
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
    let collectors = registry::build_enabled(&config.collectors, &host)?;
    tracing::info!(
        collectors = %collectors.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(","),
        "collectors enabled"
    );
    let engine = RefreshEngine::new(
        discovery(&config),
        collectors,
        host,
        config.metrics.collector_timeout,
    );
    let cache = MetricsCache::new(Arc::new(engine), config.metrics.cache_ttl);
    let telemetry = Arc::new(DaemonTelemetry::default());
    let state = AppState {
        metrics: MetricsService::new(cache, telemetry.clone(), config.metrics.prefix.as_str()),
        trust,
        metrics_authentication: config.core.metrics_authentication,
        server_fingerprint: identity.fingerprint.as_str().into(),
        pki,
    };

    let mut listeners = vec![bind_tls(
        config.core.https_address,
        "core.https_address",
        &tls,
        routes(state.clone(), ListenerScope::Full),
        &telemetry,
    )?];
    if let Some(addr) = config.core.metrics_address {
        listeners.push(bind_tls(
            addr,
            "core.metrics_address",
            &tls,
            routes(state.clone(), ListenerScope::MetricsOnly),
            &telemetry,
        )?);
    }
    let socket = state_dir.join("unix.socket");
    listeners.push(
        HttpListener::bind_unix(
            &socket,
            routes(state.clone(), ListenerScope::Full),
            telemetry.clone(),
        )
        .with_context(|| format!("cannot listen on {}", socket.display()))?,
    );
    println!("lxmetrics listening on unix:{}", socket.display());

    let (stop, stopped) = watch::channel(false);
    let tasks: Vec<_> = listeners
        .into_iter()
        .map(|l| tokio::spawn(l.serve(stopped.clone())))
        .collect();

    wait_for_signal().await?;
    tracing::info!("shutting down");
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

/// Instance discovery from the cgroup tree, by the `[[instances.source]]` rules.
fn discovery(config: &Config) -> Arc<dyn lxmetrics_core::discovery::Discovery> {
    Arc::new(lxmetrics_plugins::CgroupDiscovery::new(
        &config.instances.source,
    ))
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

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
