//! The `lxmetrics` command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The environment variables of command-line options (not configuration keys).
pub const ENV_OPTIONS: [&str; 3] = [
    "LXMETRICS_STATE_DIR",
    "LXMETRICS_CONFIG",
    "LXMETRICS_LOG_LEVEL",
];

/// Per-instance metrics for containers and VMs, LXD-compatible, for Prometheus.
#[derive(Debug, Parser)]
#[command(name = "lxmetrics", version, about, propagate_version = true)]
pub struct Cli {
    /// State directory (server certificate, trust store, socket, config.toml).
    #[arg(long, global = true, env = "LXMETRICS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Configuration file; default `<state-dir>/config.toml`, else
    /// `/etc/lxmetrics/config.toml`, if one exists.
    #[arg(long, global = true, env = "LXMETRICS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log level: error, warn, info, debug or trace (or a tracing filter directive).
    #[arg(
        long,
        global = true,
        env = "LXMETRICS_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,

    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground.
    Daemon(DaemonArgs),
    /// List the registered collectors and whether each is enabled.
    Collectors,
    /// Work with the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage trusted client certificates.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Print the body of `GET PATH` from the running daemon (over its unix socket).
    Query {
        /// The path, e.g. `/1.0/metrics`.
        path: String,
    },
}

/// `lxmetrics config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the configuration completely (file, environment, collector settings, instance
    /// sources, listener addresses) without starting anything or writing to the state
    /// directory; exits 0 when it is valid, 1 with one line saying what is wrong.
    Check,
}

/// `lxmetrics trust ...`
#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Trust a certificate file.
    Add {
        /// PEM or DER certificate file.
        file: std::path::PathBuf,
        /// `client` (the full API) or `metrics` (`/1.0/metrics` and `/1.0` only). Without
        /// it the certificate is trusted as `client`, as `lxc config trust add` does.
        #[arg(long = "type", value_name = "TYPE", default_value = "client")]
        kind: String,
        /// A name for the certificate; without it, the first 12 characters of its
        /// fingerprint.
        #[arg(long)]
        name: Option<String>,
        /// Limit the certificate to `--projects`.
        #[arg(long)]
        restricted: bool,
        /// Comma-separated projects a restricted certificate may see.
        #[arg(long, value_delimiter = ',')]
        projects: Vec<String>,
    },
    /// List trusted certificates.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Stop trusting a certificate, given by fingerprint (a unique prefix is enough) or
    /// name.
    Remove {
        /// The certificate's fingerprint, a unique prefix of it, or its name.
        fingerprint: String,
    },
}

/// How `trust list` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// Aligned columns.
    Table,
    /// A JSON array.
    Json,
}

/// Flags of `lxmetrics daemon`; they override the configuration file and environment.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Overrides `core.https_address` (e.g. `:8443`, `127.0.0.1:8443`, `[::1]:8443`).
    #[arg(long, value_name = "ADDRESS")]
    pub https_address: Option<String>,

    /// Overrides `core.metrics_address`.
    #[arg(long, value_name = "ADDRESS")]
    pub metrics_address: Option<String>,
}
