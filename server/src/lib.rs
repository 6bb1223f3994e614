//! # lxmetrics-server
//!
//! The daemon around `lxmetrics-core`: HTTP routes (warp), the accept loop (hyper-util on
//! our own listener), and the `lxmetrics` command line. The binary in `main.rs` only
//! names the plugin crates and calls [`run`].

pub mod admin_client;
pub mod api;
pub mod auth;
pub mod body;
pub mod caller;
pub mod cli;
pub mod daemon;
pub mod fd_limit;
pub mod listener;
pub mod memory;
pub mod pki;
pub mod remote_write;
pub mod routes;
pub mod state_dir;
pub mod tls;
pub mod trust;
pub mod trust_cli;

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
            state_dir::ensure(&state_dir).with_context(|| {
                format!("cannot create state directory {}", state_dir.display())
            })?;
            memory::limit_arenas();
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
            let config = daemon::load_config(&state_dir, cli.config.as_deref(), &[])?;
            print_collectors(&config)
        }
        Command::Trust(command) => small_runtime()?.block_on(trust_cli::run(command, &state_dir)),
        Command::Query { path } => small_runtime()?.block_on(trust_cli::query(path, &state_dir)),
    }
}

/// A runtime for the short-lived client commands.
fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn print_collectors(config: &lxmetrics_core::config::Config) -> anyhow::Result<()> {
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
    }
    Ok(())
}

fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("--log-level: \"{level}\" is not a log level"))?;
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
