//! # lxmetrics-server
//!
//! The daemon around `lxmetrics-core`: HTTP routes (warp), the accept loop (hyper-util on
//! our own listener), and the `lxmetrics` command line. The binary in `main.rs` only
//! names the plugin crates and calls [`run`].

pub(crate) mod admin_client;
pub(crate) mod api;
pub(crate) mod auth;
pub(crate) mod caller;
mod change_watch;
pub(crate) mod cli;
pub mod config;
pub(crate) mod daemon;
pub(crate) mod fd_limit;
mod fleet_config;
mod lingering_close;
pub(crate) mod listener;
pub(crate) mod memory;
pub(crate) mod pki;
pub mod remote_write;
pub(crate) mod routes;
pub(crate) mod state_dir;
pub(crate) mod tls;
pub mod trust;
pub(crate) mod trust_cli;

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;

use crate::cli::{Cli, Command, LogFormat};

/// The whole `lxmetrics` program: runs the command line and turns an error into one line
/// on stderr and a failing exit code. Custom daemons call this from their `main`.
pub fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One line: the error and its causes, joined.
            eprintln!("lxmetrics: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Parses the command line and runs the chosen subcommand.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_level, cli.log_format)?;
    warn_unused_env_vars();
    let state_dir = cli
        .state_dir
        .clone()
        .unwrap_or_else(state_dir::default_state_dir);
    match &cli.command {
        Command::Daemon(args) => {
            // Before anything is read from it: a state directory another user can write
            // could hold a planted trust store or configuration.
            state_dir::check_private(&state_dir)?;
            let config =
                daemon::load_config(&state_dir, cli.config.as_deref(), &daemon::overrides(args))?;
            memory::limit_arenas();
            // Before the runtime's threads exist (fd_limit.rs says why).
            match fd_limit::raise() {
                Ok(limit) => tracing::debug!(limit, "open-file limit"),
                Err(e) => tracing::warn!("{e}"),
            }
            match fd_limit::presize_table() {
                Ok(slots) => tracing::debug!(slots, "descriptor table"),
                Err(e) => tracing::warn!("{e}"),
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads(64)
                .thread_name("lxmetrics")
                .build()
                .context("cannot start the async runtime")?;
            let reload =
                || daemon::load_config(&state_dir, cli.config.as_deref(), &daemon::overrides(args));
            let result = runtime.block_on(daemon::run(config, &state_dir, reload));
            // A collector stuck in a system call (statvfs on a dead NFS server) holds a
            // blocking thread that will never return; dropping the runtime would wait for
            // it forever and turn SIGTERM into a hang. Give threads a moment, then go.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            result
        }
        Command::Collectors => {
            let loaded = daemon::load_config(&state_dir, cli.config.as_deref(), &[])?;
            // The same checks as the daemon's, collector settings included.
            daemon::build_collectors(&loaded)?;
            print_collectors(&loaded.config)
        }
        Command::Config(cli::ConfigCommand::Check) => {
            let loaded = daemon::load_config(&state_dir, cli.config.as_deref(), &[])?;
            // Building the collectors checks their settings; nothing is started.
            daemon::build_collectors(&loaded)?;
            match &loaded.file {
                Some(file) => println!("{}: configuration OK", file.display()),
                None => println!("no configuration file; defaults and environment OK"),
            }
            Ok(())
        }
        Command::Trust(command) => small_runtime()?.block_on(trust_cli::run(command, &state_dir)),
        Command::Query { path } => small_runtime()?.block_on(trust_cli::query(path, &state_dir)),
    }
}

/// Logs each `LXMETRICS_*` variable that sets nothing (a typo such as one `_` where
/// `__` separates levels), naming the closest one that would.
fn warn_unused_env_vars() {
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .collect();
    let unused = lxmetrics_core::config::unused_env_vars::<config::ServerSections>(
        names.iter().map(String::as_str),
        &cli::ENV_OPTIONS,
    );
    for (name, closest) in unused {
        match closest {
            Some(closest) => tracing::warn!(
                "environment variable {name} sets nothing and is ignored; did you mean {closest}?"
            ),
            None => tracing::warn!(
                "environment variable {name} sets nothing and is ignored (see docs/configuration.md)"
            ),
        }
    }
}

/// A runtime for the short-lived client commands.
fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn print_collectors(config: &config::DaemonConfig) -> anyhow::Result<()> {
    let all = lxmetrics_core::registry::registered();
    let selection = lxmetrics_core::registry::select(
        &all,
        &config.collectors.enable,
        &config.collectors.disable,
    )?;
    let width = all.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    println!("{:width$}  ENABLED  DESCRIPTION", "NAME");
    for (registration, enabled) in selection {
        println!(
            "{:width$}  {:7}  {}",
            registration.name,
            if enabled { "yes" } else { "no" },
            registration.help
        );
        for setting in lxmetrics_core::registry::settings_of(registration) {
            let default = setting.default.as_deref().unwrap_or("(none)");
            println!(
                "{:width$}  {:7}    {} = {default}  # {}",
                "", "", setting.key, setting.help
            );
        }
    }
    Ok(())
}

/// The words `--log-level` takes alone; anything else must be `target=level` directives.
const LOG_LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// Parses `--log-level`. A bare word that is not a level is an error, not a filter for a
/// target of that name (which would silence every log line, warnings and errors too).
fn log_filter(level: &str) -> anyhow::Result<tracing_subscriber::EnvFilter> {
    let usage = "use error, warn, info, debug, trace or off, or directives such as \
                 info,lxmetrics_server=debug";
    for part in level.split(',').map(str::trim) {
        let bare_level = LOG_LEVELS.contains(&part.to_ascii_lowercase().as_str());
        if !part.contains('=') && !bare_level {
            anyhow::bail!("--log-level: \"{part}\" is not a log level ({usage})");
        }
    }
    // One line: the parser's reason once, not again as a cause.
    tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| anyhow::anyhow!("--log-level: \"{level}\": {e} ({usage})"))
}

fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = log_filter(level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_are_levels_or_directives() {
        for good in [
            "info",
            "DEBUG",
            "off",
            "warn,lxmetrics_server=debug",
            "h2=info",
        ] {
            assert!(log_filter(good).is_ok(), "{good}");
        }
        for bad in ["debgu", "info,verbose", "foo=bar=baz", ""] {
            let e = log_filter(bad).unwrap_err().to_string();
            assert!(e.starts_with("--log-level: "), "{bad}: {e}");
            assert_eq!(e.matches("--log-level").count(), 1, "{e}");
        }
    }
}
