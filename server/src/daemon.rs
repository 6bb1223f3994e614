//! `lxmetrics daemon`: wires configuration, collectors, the cache and the listeners
//! together and runs until SIGTERM or SIGINT.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use lxmetrics_core::cache::MetricsCache;
use lxmetrics_core::config::{self, Config, ConfigFile, ListenAddress};
use lxmetrics_core::daemon_metrics::DaemonTelemetry;
use lxmetrics_core::engine::RefreshEngine;
use lxmetrics_core::registry;
use lxmetrics_core::scrape::MetricsService;
use tokio::sync::watch;

use crate::cli::DaemonArgs;
use crate::listener::HttpListener;
use crate::routes::{routes, AppState, ListenerScope};

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
pub async fn run(config: Config) -> anyhow::Result<()> {
    check_plain_http_address(config.core.https_address, "core.https_address")?;
    if let Some(addr) = config.core.metrics_address {
        check_plain_http_address(addr, "core.metrics_address")?;
    }
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
    };

    let mut listeners = vec![bind(
        config.core.https_address,
        "core.https_address",
        routes(state.clone(), ListenerScope::Full),
        &telemetry,
    )?];
    if let Some(addr) = config.core.metrics_address {
        listeners.push(bind(
            addr,
            "core.metrics_address",
            routes(state.clone(), ListenerScope::MetricsOnly),
            &telemetry,
        )?);
    }

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

/// Until TLS lands the listeners speak plain HTTP, so they may only bind loopback
/// addresses.
fn check_plain_http_address(addr: ListenAddress, key: &str) -> anyhow::Result<()> {
    if !addr.ip.is_some_and(|ip| ip.is_loopback()) {
        bail!(
            "{key}: \"{addr}\" is not a loopback address; this build serves plain HTTP \
             (TLS is not implemented yet), so it only listens on 127.0.0.1 or ::1"
        );
    }
    Ok(())
}

/// Binds one listener and prints its address.
fn bind(
    addr: ListenAddress,
    key: &str,
    routes: warp::filters::BoxedFilter<(warp::reply::Response,)>,
    telemetry: &Arc<DaemonTelemetry>,
) -> anyhow::Result<HttpListener> {
    let listener = HttpListener::bind(addr.socket_addr(), routes, telemetry.clone())
        .with_context(|| format!("{key}: cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    println!("lxmetrics listening on http://{local} ({key}, plain HTTP until TLS lands)");
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
