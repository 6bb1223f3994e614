//! Configuration: defaults < `config.toml` < `LXMETRICS_*` environment < command-line flags.
//!
//! The structs here are the single source of truth for every key: `docs/configuration.md`
//! documents them and a test checks that every key appears there. Unknown keys and bad
//! values fail start-up with one line naming the key and where it came from, e.g.
//! `/var/lib/lxmetrics/config.toml: metrics.cache_ttl: expected a duration like "8s"`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::{Figment, Metadata, Source};
use serde::{Deserialize, Serialize};

pub use crate::fleet_config::{ClusterConfig, ClusterMember, RemoteWriteConfig};
use lxmetrics_plugin::{is_valid_label_name, HostPaths, InstanceType};

/// Environment variables starting with this configure the daemon (`__` between levels).
pub const ENV_PREFIX: &str = "LXMETRICS_";

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listeners and authentication.
    pub core: CoreConfig,
    /// The refresh and the exposition.
    pub metrics: MetricsConfig,
    /// Which collectors run, and their own settings.
    pub collectors: CollectorsConfig,
    /// Where host files are read.
    pub host: HostPaths,
    /// How cgroups map to instances.
    pub instances: InstancesConfig,
    /// The daemons listed for Prometheus service discovery.
    pub cluster: ClusterConfig,
    /// Pushing to a remote-write receiver.
    pub remote_write: RemoteWriteConfig,
}

/// `[core]`: listeners and authentication.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoreConfig {
    /// Full API listener (TLS). `:8443` means all addresses.
    pub https_address: ListenAddress,
    /// Extra listener serving only `/1.0/metrics` and `/1.0`; a bare host means port
    /// 9100, as LXD (`HTTPSMetricsDefaultPort`).
    #[serde(deserialize_with = "metrics_address")]
    pub metrics_address: Option<ListenAddress>,
    /// `false`: `/1.0/metrics` needs no client certificate.
    pub metrics_authentication: bool,
    /// PKI mode: certificates signed by `server.ca` are trusted as `client`.
    pub trust_ca_certificates: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            https_address: ListenAddress {
                ip: Some(IpAddr::from([127, 0, 0, 1])),
                port: HTTPS_DEFAULT_PORT,
            },
            metrics_address: None,
            metrics_authentication: true,
            trust_ca_certificates: false,
        }
    }
}

/// `[metrics]`: the refresh and the exposition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// The coalescing window: a collection is reused for this long after it completes.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// A collector that has not finished by then is reported failed for this refresh.
    #[serde(with = "humantime_serde")]
    pub collector_timeout: Duration,
    /// Metric name prefix (`lxd`, `incus`, ...).
    pub prefix: MetricPrefix,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            cache_ttl: Duration::from_secs(8),
            collector_timeout: Duration::from_secs(5),
            prefix: MetricPrefix(DEFAULT_METRIC_PREFIX.into()),
        }
    }
}

/// `[collectors]`: which collectors run. Enabled = (default-enabled ∪ `enable`) ∖ `disable`.
/// Any other key is a collector's own section, `[collectors.<name>]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CollectorsConfig {
    /// Collectors to switch on in addition to the default ones.
    pub enable: Vec<String>,
    /// Collectors to switch off.
    pub disable: Vec<String>,
    /// Per-collector settings, keyed by collector name; checked against the registered
    /// collectors at start-up.
    #[serde(flatten)]
    pub settings: Dict,
}

/// `[instances]`: how cgroups map to instances.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstancesConfig {
    /// Rules tried in order; the first that matches a cgroup names the instance.
    pub source: Vec<InstanceSource>,
    /// `[instances.lxd]`: the LXD daemon of this host, if any.
    pub lxd: DaemonSocket,
    /// `[instances.incus]`: the Incus daemon of this host, if any.
    pub incus: DaemonSocket,
    /// `[instances.docker]`: the Docker engine of this host, if any.
    pub docker: EngineSocket,
    /// `[instances.podman]`: the Podman engine of this host, if any.
    pub podman: EngineSocket,
}

impl Default for InstancesConfig {
    fn default() -> Self {
        InstancesConfig {
            source: Preset::ALL
                .iter()
                .map(|p| InstanceSource::preset(*p))
                .collect(),
            lxd: DaemonSocket::default(),
            incus: DaemonSocket::default(),
            docker: EngineSocket::default(),
            podman: EngineSocket::default(),
        }
    }
}

/// Where LXD looks for its API socket when `instances.lxd.socket` is not set.
pub const LXD_SOCKETS: [&str; 2] = [
    "/var/snap/lxd/common/lxd/unix.socket",
    "/var/lib/lxd/unix.socket",
];
/// Where Incus looks for its API socket when `instances.incus.socket` is not set.
pub const INCUS_SOCKETS: [&str; 1] = ["/var/lib/incus/unix.socket"];
/// Where Docker's API socket is when `instances.docker.socket` is not set.
pub const DOCKER_SOCKETS: [&str; 1] = ["/var/run/docker.sock"];
/// Where rootful Podman's API socket is when `instances.podman.socket` is not set.
pub const PODMAN_SOCKETS: [&str; 1] = ["/run/podman/podman.sock"];

/// The unix socket of a container manager's API (`instances.lxd.socket`,
/// `instances.incus.socket`). A host where it exists is that manager's host: its cgroup
/// names carry projects (`lxc.payload.<project>_<name>`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSocket {
    /// The socket path; unset means the manager's usual paths, `""` turns it off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
}

impl DaemonSocket {
    /// The paths to look at, in order: the configured one, or `defaults`.
    pub fn candidates(&self, defaults: &[&str]) -> Vec<PathBuf> {
        socket_candidates(self.socket.as_deref(), defaults)
    }
}

/// A container engine's API (`[instances.docker]`, `[instances.podman]`): where its
/// socket is, and which of its container labels `instance_info` carries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSocket {
    /// The socket path; unset means the engine's usual path, `""` turns it off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// Container labels copied into `instance_info` as `label_<name>` (characters other
    /// than letters, digits and `_` become `_`); none by default, so a label's values
    /// never reach Prometheus unless chosen.
    pub labels: Vec<String>,
}

impl EngineSocket {
    /// The paths to look at, in order: the configured one, or `defaults`.
    pub fn candidates(&self, defaults: &[&str]) -> Vec<PathBuf> {
        socket_candidates(self.socket.as_deref(), defaults)
    }
}

/// The configured socket (none when it is `""`), or `defaults`.
fn socket_candidates(configured: Option<&Path>, defaults: &[&str]) -> Vec<PathBuf> {
    match configured {
        Some(path) if path.as_os_str().is_empty() => Vec::new(),
        Some(path) => vec![path.to_owned()],
        None => defaults.iter().map(PathBuf::from).collect(),
    }
}

/// Built-in cgroup naming rules for common runtimes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// LXC and LXD: `lxc.payload.<name>`, LXD's `<project>_<name>`.
    Lxc,
    /// Docker: `docker-<id>.scope`, `docker/<id>`.
    Docker,
    /// Podman: `libpod-<id>.scope`.
    Podman,
    /// systemd-nspawn: `machine-<name>.scope`.
    SystemdNspawn,
    /// libvirt and QEMU virtual machines.
    Libvirt,
}

impl Preset {
    /// Every preset, in the default order.
    pub const ALL: [Preset; 5] = [
        Preset::Lxc,
        Preset::Docker,
        Preset::Podman,
        Preset::SystemdNspawn,
        Preset::Libvirt,
    ];
}

/// One `[[instances.source]]` rule: either a preset or a custom pattern.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstanceSource {
    /// Use a built-in rule set (`lxc`, `docker`, `podman`, `systemd-nspawn`, `libvirt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// A cgroup path pattern with `{name}` and optionally `{project}`, e.g.
    /// `machine.slice/machine-{name}.scope`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Instance type for matches of a pattern (default `container`).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<InstanceType>,
    /// Project for matches of a pattern without `{project}` (default `default`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

impl InstanceSource {
    /// A rule that uses a preset.
    pub fn preset(preset: Preset) -> Self {
        InstanceSource {
            preset: Some(preset),
            ..Default::default()
        }
    }

    fn validate(&self) -> Result<(), String> {
        match (&self.preset, &self.pattern) {
            (Some(_), Some(_)) => Err("give either preset or pattern, not both".into()),
            (None, None) => Err("needs a preset or a pattern".into()),
            (Some(_), None) if self.kind.is_some() || self.project.is_some() => {
                Err("type and project apply to patterns, not presets".into())
            }
            (Some(_), None) => Ok(()),
            (None, Some(pattern)) => validate_pattern(pattern),
        }
    }
}

fn validate_pattern(pattern: &str) -> Result<(), String> {
    crate::cgroup_pattern::CgroupPattern::parse(pattern).map(|_| ())
}

/// The port of `core.https_address` given as a bare host (LXD's `HTTPSDefaultPort`).
const HTTPS_DEFAULT_PORT: u16 = 8443;
/// The port of `core.metrics_address` given as a bare host (LXD's `HTTPSMetricsDefaultPort`).
const METRICS_DEFAULT_PORT: u16 = 9100;

fn metrics_address<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<ListenAddress>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| ListenAddress::parse(&t, METRICS_DEFAULT_PORT))
        .transpose()
        .map_err(serde::de::Error::custom)
}

/// A listen address: `:PORT` (all addresses), `IP:PORT`, `[IPv6]:PORT`, or a bare IP
/// (port 8443 for `core.https_address`, 9100 for `core.metrics_address`, as LXD).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenAddress {
    /// `None` means every address (IPv6 and IPv4).
    pub ip: Option<IpAddr>,
    /// TCP port; 0 lets the kernel pick (tests).
    pub port: u16,
}

impl ListenAddress {
    /// The socket address to bind; "all addresses" is `[::]`, dual-stack.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip.unwrap_or(IpAddr::from([0u16; 8])), self.port)
    }
}

impl FromStr for ListenAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ListenAddress::parse(s, HTTPS_DEFAULT_PORT)
    }
}

impl ListenAddress {
    /// Parses `s`; a bare IP gets `default_port`.
    fn parse(s: &str, default_port: u16) -> Result<Self, String> {
        let s = s.trim();
        let bad = || {
            format!(
                "\"{s}\" is not an address like \":8443\", \"127.0.0.1:8443\" or \"[::1]:8443\""
            )
        };
        if let Some(port) = s.strip_prefix(':') {
            let port = port.parse().map_err(|_| bad())?;
            return Ok(ListenAddress { ip: None, port });
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(ListenAddress {
                ip: Some(addr.ip()),
                port: addr.port(),
            });
        }
        let bare = s.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(ListenAddress {
                ip: Some(ip),
                port: default_port,
            });
        }
        Err(bad())
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            None => write!(f, ":{}", self.port),
            Some(ip) => write!(f, "{}", SocketAddr::new(ip, self.port)),
        }
    }
}

impl Serialize for ListenAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `metrics.prefix` when not configured: LXD's own.
pub const DEFAULT_METRIC_PREFIX: &str = "lxd";

/// A metric name prefix: a valid label-like name, or empty for no prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MetricPrefix(String);

impl MetricPrefix {
    /// The prefix text (without the joining `_`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MetricPrefix {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        if value.is_empty() || is_valid_label_name(&value) {
            Ok(MetricPrefix(value))
        } else {
            Err(format!(
                "\"{value}\" is not a valid metric prefix (letters, digits and _, not starting with a digit)"
            ))
        }
    }
}

impl From<MetricPrefix> for String {
    fn from(p: MetricPrefix) -> String {
        p.0
    }
}

/// Which configuration file to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigFile {
    /// `<state-dir>/config.toml`: read if it exists.
    Optional(PathBuf),
    /// Given with `--config`: must exist.
    Required(PathBuf),
}

/// A configuration problem, in one line: where, which key, what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file, environment variable or flag the bad value came from.
    pub origin: String,
    /// The dotted key, empty when the problem is not about one key (a syntax error).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key.is_empty() {
            true => write!(f, "{}: {}", self.origin, self.message),
            false => write!(f, "{}: {}: {}", self.origin, self.key, self.message),
        }
    }
}

/// Every configuration key, dotted (`core.https_address`), flattened from the defaults
/// plus the keys that are unset by default. Tables of free-form settings
/// (`collectors.<name>`, `remote_write.external_labels`) count as one key.
pub fn known_keys() -> Vec<String> {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Dict(_, dict) if !dict.is_empty() => {
                for (k, v) in dict {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut keys = Vec::new();
    if let Ok(value) = Value::serialize(Config::default()) {
        walk("", &value, &mut keys);
    }
    // None by default, so not serialized (their tables show up empty).
    keys.retain(|k| k != "instances.lxd" && k != "instances.incus");
    keys.extend(
        [
            "core.metrics_address",
            "instances.lxd.socket",
            "instances.incus.socket",
            "instances.docker.socket",
            "instances.podman.socket",
        ]
        .map(String::from),
    );
    keys
}

/// The dotted keys whose values differ between two configurations (a table of free-form
/// settings counts as one key), for saying what a reload did not apply.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    fn flatten(prefix: &str, value: &Value, out: &mut std::collections::BTreeMap<String, String>) {
        match value {
            Value::Dict(_, dict) if !dict.is_empty() && !prefix.starts_with("collectors.") => {
                for (k, v) in dict {
                    let key = match prefix {
                        "" => k.clone(),
                        p => format!("{p}.{k}"),
                    };
                    flatten(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_owned(), format!("{other:?}"));
            }
        }
    }
    let (mut a, mut b) = Default::default();
    if let Ok(value) = Value::serialize(old) {
        flatten("", &value, &mut a);
    }
    if let Ok(value) = Value::serialize(new) {
        flatten("", &value, &mut b);
    }
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The environment variable that sets a dotted key: `LXMETRICS_CORE__HTTPS_ADDRESS`.
pub fn env_var_of(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.replace('.', "__").to_ascii_uppercase()
    )
}

/// `LXMETRICS_*` variables among `names` that set no configuration key (and are not
/// one of `options`, the command-line options' variables), each with the closest
/// variable that does: such a variable is otherwise ignored without a word.
pub fn unused_env_vars<'a>(
    names: impl IntoIterator<Item = &'a str>,
    options: &[&str],
) -> Vec<(String, Option<String>)> {
    let keys = known_keys();
    let mut known: Vec<String> = keys.iter().map(|k| env_var_of(k)).collect();
    known.extend(options.iter().map(|o| o.to_string()));
    names
        .into_iter()
        .filter(|name| name.starts_with(ENV_PREFIX) && !options.contains(name))
        .filter(|name| {
            // A variable under a known key's table (collector settings, labels) is used.
            !known.iter().any(|k| {
                *name == k.as_str()
                    || (name.starts_with(k.as_str()) && name[k.len()..].starts_with("__"))
                    || name.starts_with(&format!("{ENV_PREFIX}COLLECTORS__"))
            })
        })
        .map(|name| {
            let closest = known
                .iter()
                .map(|k| (strsim::levenshtein(name, k), k))
                .filter(|(distance, _)| *distance <= 4)
                .min()
                .map(|(_, k)| k.clone());
            (name.to_owned(), closest)
        })
        .collect()
}

/// Loads the configuration from defaults, the file, the environment and `overrides`
/// (command-line flags as dotted key and value, applied last).
pub fn load(file: &ConfigFile, overrides: &[(&str, Value)]) -> Result<Config, ConfigError> {
    load_checked(file, overrides, &|_| Ok(()))
}

/// A check the loader cannot make alone (e.g. collector names against the linked
/// collectors): `Err((dotted key, message))`, reported like the loader's own errors, with
/// where the key was set.
pub type ExtraCheck<'a> = &'a dyn Fn(&Config) -> Result<(), (String, String)>;

/// [`load`], then `check`.
pub fn load_checked(
    file: &ConfigFile,
    overrides: &[(&str, Value)],
    check: ExtraCheck<'_>,
) -> Result<Config, ConfigError> {
    load_described(file, overrides, check).map(|loaded| loaded.config)
}

/// A loaded configuration that can say where each value came from, for start-up output.
#[derive(Debug)]
pub struct LoadedConfig {
    /// The configuration.
    pub config: Config,
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    figment: Figment,
}

impl LoadedConfig {
    /// Where `key`'s value came from: `default`, the file, `environment variable ...` or
    /// `command line`.
    pub fn origin(&self, key: &str) -> String {
        let parts: Vec<String> = key.split('.').map(str::to_owned).collect();
        origin_of(self.figment.find_metadata(key), &parts).unwrap_or_else(|| "default".to_owned())
    }
}

/// [`load_checked`], keeping where each value came from.
pub fn load_described(
    file: &ConfigFile,
    overrides: &[(&str, Value)],
    check: ExtraCheck<'_>,
) -> Result<LoadedConfig, ConfigError> {
    let path = match file {
        ConfigFile::Optional(path) => path.is_file().then_some(path.as_path()),
        ConfigFile::Required(path) => {
            check_readable(path)?;
            Some(path.as_path())
        }
    };
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = path {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(
        Env::prefixed(ENV_PREFIX)
            // Variables without `__` (LXMETRICS_STATE_DIR, ...) are command-line options.
            .filter(|key| key.as_str().contains("__"))
            .split("__"),
    );
    for (key, value) in overrides {
        figment = figment.merge(Serialized::global(key, value).profile(figment::Profile::Default));
    }
    let config: Config = figment.extract().map_err(|e| from_figment(e, path))?;
    validate(&config, &figment)?;
    check(&config).map_err(|(key, message)| {
        let parts: Vec<String> = key.split('.').map(str::to_owned).collect();
        ConfigError {
            origin: origin_of(figment.find_metadata(&key), &parts)
                .unwrap_or_else(|| "configuration".to_owned()),
            key,
            message,
        }
    })?;
    Ok(LoadedConfig {
        config,
        file: path.map(Path::to_owned),
        figment,
    })
}

fn check_readable(path: &Path) -> Result<(), ConfigError> {
    std::fs::metadata(path)
        .and_then(|m| {
            if m.is_file() {
                Ok(())
            } else {
                Err(std::io::Error::other("not a regular file"))
            }
        })
        .map_err(|e| ConfigError {
            origin: path.display().to_string(),
            key: String::new(),
            message: format!("cannot read configuration file: {e}"),
        })
}

/// Turns figment's error into our one-line form.
fn from_figment(error: figment::Error, file: Option<&Path>) -> ConfigError {
    use figment::error::Kind;
    let mut path = error.path.clone();
    let message = match &error.kind {
        Kind::UnknownField(field, expected) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            if expected.is_empty() {
                "unknown key".to_owned()
            } else {
                format!("unknown key (known keys here: {})", expected.join(", "))
            }
        }
        Kind::UnknownVariant(found, expected) => format!(
            "unknown value \"{found}\" (one of: {})",
            expected.join(", ")
        ),
        Kind::InvalidType(_, expected) => {
            let hint = if expected.contains("sequence") {
                format!(
                    " (a list such as [\"disk\"]; in the environment {}='[\"disk\"]')",
                    env_var_of(&path.join("."))
                )
            } else if expected.contains("duration") {
                " (a string such as \"8s\", \"500ms\" or \"1m 30s\")".to_owned()
            } else {
                String::new()
            };
            format!("{}{hint}", one_line(&error.kind.to_string()))
        }
        kind => one_line(&kind.to_string()),
    };
    let origin = origin_of(error.metadata.as_ref(), &path)
        .or_else(|| file.map(|f| f.display().to_string()))
        .unwrap_or_else(|| "configuration".to_owned());
    // A list entry is named by its place, counted from 1 ("rule 2: preset: ..."), as
    // the checks after loading name it, never by a 0-based index inside the key.
    match path.iter().position(|p| p.parse::<usize>().is_ok()) {
        Some(at) => {
            let n = path[at].parse::<usize>().map(|n| n + 1).unwrap_or(1);
            let word = if path[..at].join(".") == "instances.source" {
                "rule"
            } else {
                "entry"
            };
            let inner = path[at + 1..].join(".");
            let message = match inner.is_empty() {
                true => format!("{word} {n}: {message}"),
                false => format!("{word} {n}: {inner}: {message}"),
            };
            ConfigError {
                origin,
                key: path[..at].join("."),
                message,
            }
        }
        None => ConfigError {
            origin,
            key: path.join("."),
            message,
        },
    }
}

/// Folds a multi-line parser message (TOML errors quote the offending line with a caret)
/// into one line, keeping the words and dropping the drawing.
fn one_line(message: &str) -> String {
    message
        .lines()
        .filter(|line| {
            let drawing = line.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
            !drawing.starts_with('|') && !line.trim().is_empty()
        })
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(": ")
}

fn origin_of(metadata: Option<&Metadata>, path: &[String]) -> Option<String> {
    let metadata = metadata?;
    match &metadata.source {
        Some(Source::File(file)) => Some(file.display().to_string()),
        _ if metadata.name.contains("environment") => Some(format!(
            "environment variable {ENV_PREFIX}{}",
            path.join("__").to_ascii_uppercase()
        )),
        // Serialized providers are named after the type they serialize: the defaults are a
        // `Config`, the command-line overrides are single values. Never show a type name.
        _ if metadata.name.ends_with("Config") => Some("default".to_owned()),
        _ => Some("command line".to_owned()),
    }
}

/// Checks that need the whole configuration; errors name the key and where it was set.
fn validate(config: &Config, figment: &Figment) -> Result<(), ConfigError> {
    let fail = |key: &str, message: String| {
        let path: Vec<String> = key.split('.').map(str::to_owned).collect();
        ConfigError {
            origin: origin_of(figment.find_metadata(key), &path)
                .unwrap_or_else(|| "configuration".to_owned()),
            key: key.to_owned(),
            message,
        }
    };
    if config.metrics.collector_timeout.is_zero() {
        return Err(fail(
            "metrics.collector_timeout",
            "must be greater than zero".into(),
        ));
    }
    for (i, source) in config.instances.source.iter().enumerate() {
        source
            .validate()
            .map_err(|m| fail("instances.source", format!("rule {}: {m}", i + 1)))?;
    }
    config
        .cluster
        .validate()
        .map_err(|m| fail("cluster.members", m))?;
    config
        .remote_write
        .validate()
        .map_err(|(key, m)| fail(key, m))?;
    for (name, value) in &config.collectors.settings {
        if !matches!(value, Value::Dict(..)) {
            return Err(fail(
                &format!("collectors.{name}"),
                "unknown key (collector settings go in a [collectors.<name>] table)".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail fixes the closure's error type.
mod tests {
    use super::*;
    use figment::Jail;

    fn load_in(jail: &Jail, file: Option<&str>) -> Result<Config, ConfigError> {
        let path = jail.directory().join("config.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        load(&ConfigFile::Optional(path), &[])
    }

    #[test]
    fn defaults_match_the_design() {
        Jail::expect_with(|jail| {
            let c = load_in(jail, None).unwrap();
            assert_eq!(c.core.https_address.to_string(), "127.0.0.1:8443");
            assert_eq!(c.core.metrics_address, None);
            assert!(c.core.metrics_authentication);
            assert!(!c.core.trust_ca_certificates);
            assert_eq!(c.metrics.cache_ttl, Duration::from_secs(8));
            assert_eq!(c.metrics.collector_timeout, Duration::from_secs(5));
            assert_eq!(c.metrics.prefix.as_str(), "lxd");
            assert_eq!(c.host.proc_root, PathBuf::from("/proc"));
            assert_eq!(c.instances.source.len(), 5);
            Ok(())
        });
    }

    #[test]
    fn file_then_env_then_flags() {
        Jail::expect_with(|jail| {
            jail.set_env("LXMETRICS_METRICS__CACHE_TTL", "20s");
            jail.set_env("LXMETRICS_CORE__METRICS_ADDRESS", "[::1]:9100");
            jail.set_env("LXMETRICS_STATE_DIR", "/ignored/by/config");
            let file = "[metrics]\ncache_ttl = \"10s\"\nprefix = \"incus\"\n\
                        [core]\nhttps_address = \":8443\"\n";
            std::fs::write(jail.directory().join("c.toml"), file).unwrap();
            let c = load(
                &ConfigFile::Required(jail.directory().join("c.toml")),
                &[("core.https_address", Value::from("127.0.0.1:0"))],
            )
            .unwrap();
            assert_eq!(c.metrics.cache_ttl, Duration::from_secs(20));
            assert_eq!(c.metrics.prefix.as_str(), "incus");
            assert_eq!(c.core.metrics_address.unwrap().to_string(), "[::1]:9100");
            assert_eq!(c.core.https_address.to_string(), "127.0.0.1:0");
            Ok(())
        });
    }

    #[test]
    fn a_bare_metrics_host_listens_on_9100_as_lxd() {
        Jail::expect_with(|jail| {
            let file = "[core]\nmetrics_address = \"127.0.0.1\"\nhttps_address = \"127.0.0.1\"\n";
            std::fs::write(jail.directory().join("c.toml"), file).unwrap();
            let c = load(&ConfigFile::Required(jail.directory().join("c.toml")), &[]).unwrap();
            assert_eq!(
                c.core.metrics_address.unwrap().to_string(),
                "127.0.0.1:9100"
            );
            assert_eq!(c.core.https_address.to_string(), "127.0.0.1:8443");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_name_the_key_and_file() {
        Jail::expect_with(|jail| {
            let e = load_in(jail, Some("[metrics]\ncache_tll = \"8s\"\n")).unwrap_err();
            assert_eq!(e.key, "metrics.cache_tll");
            assert!(e.origin.ends_with("config.toml"), "{e}");
            assert!(e.to_string().contains("unknown key"), "{e}");
            assert_eq!(e.to_string().lines().count(), 1);

            let e = load_in(jail, Some("[nonsense]\nx = 1\n")).unwrap_err();
            assert_eq!(e.key, "nonsense");
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_key_and_origin() {
        Jail::expect_with(|jail| {
            let e = load_in(jail, Some("[metrics]\ncache_ttl = \"soon\"\n")).unwrap_err();
            assert_eq!(e.key, "metrics.cache_ttl");
            assert!(e.origin.ends_with("config.toml"));

            let e = load_in(jail, Some("[core]\nhttps_address = \"localhost\"\n")).unwrap_err();
            assert_eq!(e.key, "core.https_address");
            assert!(e.message.contains("not an address"), "{e}");

            let e = load_in(jail, Some("[metrics]\nprefix = \"my-fleet\"\n")).unwrap_err();
            assert_eq!(e.key, "metrics.prefix");

            let e = load_in(jail, Some("[metrics]\ncollector_timeout = \"0s\"\n")).unwrap_err();
            assert_eq!(e.key, "metrics.collector_timeout");
            assert!(e.origin.ends_with("config.toml"), "{e}");

            let e =
                load_in(jail, Some("[core]\nmetrics_authentication = \"maybe\"\n")).unwrap_err();
            assert_eq!(e.key, "core.metrics_authentication");

            std::fs::remove_file(jail.directory().join("config.toml")).unwrap();
            jail.set_env("LXMETRICS_METRICS__CACHE_TTL", "later");
            let e = load_in(jail, None).unwrap_err();
            assert_eq!(
                e.origin,
                "environment variable LXMETRICS_METRICS__CACHE_TTL"
            );
            Ok(())
        });
    }

    #[test]
    fn syntax_errors_name_the_file() {
        Jail::expect_with(|jail| {
            let e = load_in(jail, Some("[metrics\n")).unwrap_err();
            assert!(e.to_string().contains("config.toml"), "{e}");
            assert_eq!(e.to_string().lines().count(), 1, "{e}");
            Ok(())
        });
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        Jail::expect_with(|jail| {
            let missing = jail.directory().join("nope.toml");
            let e = load(&ConfigFile::Required(missing), &[]).unwrap_err();
            assert!(e.to_string().contains("nope.toml"));
            assert!(e.message.contains("cannot read"));
            Ok(())
        });
    }

    #[test]
    fn instance_sources() {
        Jail::expect_with(|jail| {
            let c = load_in(
                jail,
                Some(
                    "[[instances.source]]\npreset = \"lxc\"\n\
                     [[instances.source]]\npattern = \"vms/{project}/{name}\"\ntype = \"virtual-machine\"\n",
                ),
            )
            .unwrap();
            assert_eq!(c.instances.source.len(), 2);
            assert_eq!(
                c.instances.source[1].kind,
                Some(InstanceType::VirtualMachine)
            );

            for bad in [
                "[[instances.source]]\npattern = \"no-placeholder\"\n",
                "[[instances.source]]\npattern = \"{name}/{oops}\"\n",
                "[[instances.source]]\npreset = \"lxc\"\npattern = \"{name}\"\n",
                "[[instances.source]]\nproject = \"x\"\n",
            ] {
                let e = load_in(jail, Some(bad)).unwrap_err();
                assert_eq!(e.key, "instances.source", "{bad}: {e}");
            }
            let e = load_in(
                jail,
                Some("[[instances.source]]\npreset = \"kubernetes\"\n"),
            )
            .unwrap_err();
            assert!(e.key.starts_with("instances.source"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn collector_sections_are_kept_for_their_collector() {
        Jail::expect_with(|jail| {
            let c = load_in(
                jail,
                Some("[collectors]\ndisable = [\"disk\"]\n[collectors.textfile]\ndirectory = \"/x\"\n"),
            )
            .unwrap();
            assert_eq!(c.collectors.disable, ["disk"]);
            assert!(c.collectors.settings.contains_key("textfile"));
            let e = load_in(jail, Some("[collectors]\ndisabel = [\"disk\"]\n")).unwrap_err();
            assert_eq!(e.key, "collectors.disabel");
            Ok(())
        });
    }

    #[test]
    fn listen_addresses() {
        let ok = [
            (":8443", None, 8443),
            ("127.0.0.1:9000", Some("127.0.0.1"), 9000),
            ("[::1]:8443", Some("::1"), 8443),
            ("10.0.0.1", Some("10.0.0.1"), 8443),
            ("[::1]", Some("::1"), 8443),
        ];
        for (text, ip, port) in ok {
            let a: ListenAddress = text.parse().unwrap();
            assert_eq!(a.ip, ip.map(|i| i.parse().unwrap()), "{text}");
            assert_eq!(a.port, port, "{text}");
        }
        let metrics = ListenAddress::parse("127.0.0.1", METRICS_DEFAULT_PORT).unwrap();
        assert_eq!(metrics.to_string(), "127.0.0.1:9100");
        for bad in ["", ":", ":99999", "localhost:80", "1.2.3.4:x"] {
            assert!(bad.parse::<ListenAddress>().is_err(), "{bad}");
        }
        assert_eq!(
            ":8443"
                .parse::<ListenAddress>()
                .unwrap()
                .socket_addr()
                .to_string(),
            "[::]:8443"
        );
    }

    #[test]
    fn an_environment_variable_that_sets_nothing_is_named_with_the_closest() {
        let unused = unused_env_vars(
            [
                "LXMETRICS_CORE_HTTPS_ADDRESS",
                "LXMETRICS_CORE__HTTPS_ADDRESS",
                "LXMETRICS_STATE_DIR",
                "LXMETRICS_COLLECTORS__TEXTFILE__DIRECTORY",
                "LXMETRICS_REMOTE_WRITE__EXTERNAL_LABELS__DC",
                "LXMETRICS_WHATEVER",
                "PATH",
            ],
            &[
                "LXMETRICS_STATE_DIR",
                "LXMETRICS_CONFIG",
                "LXMETRICS_LOG_LEVEL",
            ],
        );
        assert_eq!(
            unused,
            [
                (
                    "LXMETRICS_CORE_HTTPS_ADDRESS".to_owned(),
                    Some("LXMETRICS_CORE__HTTPS_ADDRESS".to_owned())
                ),
                ("LXMETRICS_WHATEVER".to_owned(), None),
            ]
        );
    }

    #[test]
    fn changed_keys_name_what_differs() {
        let old = Config::default();
        let mut new = old.clone();
        new.metrics.cache_ttl = Duration::from_secs(3);
        new.collectors.disable = vec!["disk".into()];
        assert_eq!(
            changed_keys(&old, &new),
            ["collectors.disable", "metrics.cache_ttl"]
        );
        assert!(changed_keys(&old, &old).is_empty());
    }

    #[test]
    fn every_key_is_documented() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/configuration.md"
        ))
        .expect("docs/configuration.md exists");
        let keys = known_keys();
        assert!(keys.len() >= 13, "{keys:?}");
        assert!(keys.contains(&"instances.source".to_string()), "{keys:?}");
        for key in keys {
            assert!(
                doc.contains(&format!("`{key}`")),
                "docs/configuration.md does not document `{key}`"
            );
        }
    }

    #[test]
    fn the_example_file_loads_and_its_uncommented_form_too() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/config.toml");
        Jail::expect_with(|jail| {
            let c = load(&ConfigFile::Required(path.into()), &[]).unwrap();
            assert_eq!(c, Config::default());
            // Uncommenting every setting must also load (the example stays valid).
            let text = std::fs::read_to_string(path).unwrap();
            let uncommented: String = text
                .lines()
                .map(|l| {
                    l.strip_prefix('#')
                        .filter(|r| !r.starts_with(' '))
                        .unwrap_or(l)
                })
                .collect::<Vec<_>>()
                .join("\n");
            let c = load_in(jail, Some(&uncommented)).unwrap();
            assert_eq!(c.instances.source.len(), 6);
            Ok(())
        });
    }
}
