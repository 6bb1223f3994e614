//! Configuration: defaults < `config.toml` < `LXMETRICS_*` environment < command-line flags.
//!
//! The structs here are the single source of truth for every key: `docs/configuration.md`
//! documents them and a test checks that every key appears there. Unknown keys and bad
//! values fail start-up with one line naming the key and where it came from, e.g.
//! `/var/lib/lxmetrics/config.toml: metrics.cache_ttl: expected a duration like "8s"`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::{Figment, Metadata, Source};
use serde::{Deserialize, Serialize};

use lxmetrics_plugin::{is_valid_label_name, HostPaths, InstanceType};

/// Environment variables starting with this configure the daemon (`__` between levels).
pub const ENV_PREFIX: &str = "LXMETRICS_";

/// The whole configuration: core's sections, and `S`, the sections of the program that
/// links core (the server's `[core]` listeners, `[cluster]` and `[remote_write]`),
/// declared by their owner.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config<S = NoSections> {
    /// The refresh and the exposition.
    pub metrics: MetricsConfig,
    /// Which collectors run, and their own settings.
    pub collectors: CollectorsConfig,
    /// Where host files are read.
    pub host: HostPaths,
    /// How cgroups map to instances.
    pub instances: InstancesConfig,
    /// The linking program's sections, loaded from the same sources by their own type.
    #[serde(skip)]
    pub sections: S,
}

/// Top-level configuration sections declared outside core by their owner: a struct whose
/// fields are the tables (each with `deny_unknown_fields`), loaded from the same file,
/// environment and flags as core's sections, documented and checked the same way.
pub trait ConfigSections:
    Serialize + serde::de::DeserializeOwned + Default + Clone + fmt::Debug + PartialEq
{
    /// Dotted keys that are unset by default, which the serialized defaults do not show.
    const UNSET_KEYS: &'static [&'static str] = &[];

    /// Checks that need several keys: `Err((dotted key, message))`.
    fn validate(&self) -> Result<(), (String, String)> {
        Ok(())
    }
}

/// No sections beyond core's (a program that only collects, such as the bench).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NoSections {}

impl ConfigSections for NoSections {}

impl<S: ConfigSections> Config<S> {
    /// Every section, core's and the program's, as one table (defaults, documentation,
    /// reload comparison).
    fn to_value(&self) -> Dict {
        let mut all = match Value::serialize(self) {
            Ok(Value::Dict(_, dict)) => dict,
            _ => Dict::new(),
        };
        if let Ok(Value::Dict(_, dict)) = Value::serialize(&self.sections) {
            all.extend(dict);
        }
        all
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

/// Every configuration key, dotted (`metrics.cache_ttl`), core's and `S`'s, flattened
/// from the defaults plus the keys that are unset by default. Tables of free-form
/// settings (`collectors.<name>`, `remote_write.external_labels`) count as one key.
pub fn known_keys<S: ConfigSections>() -> Vec<String> {
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
    for (name, value) in Config::<S>::default().to_value() {
        walk(&name, &value, &mut keys);
    }
    // None by default, so not serialized (their tables show up empty).
    keys.retain(|k| k != "instances.lxd" && k != "instances.incus");
    keys.extend(S::UNSET_KEYS.iter().map(|k| k.to_string()));
    keys.extend(
        [
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
pub fn changed_keys<S: ConfigSections>(old: &Config<S>, new: &Config<S>) -> Vec<String> {
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
    for (name, value) in old.to_value() {
        flatten(&name, &value, &mut a);
    }
    for (name, value) in new.to_value() {
        flatten(&name, &value, &mut b);
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
pub fn unused_env_vars<'a, S: ConfigSections>(
    names: impl IntoIterator<Item = &'a str>,
    options: &[&str],
) -> Vec<(String, Option<String>)> {
    let keys = known_keys::<S>();
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
pub fn load<S: ConfigSections>(
    file: &ConfigFile,
    overrides: &[(&str, Value)],
) -> Result<Config<S>, ConfigError> {
    load_checked(file, overrides, &|_| Ok(()))
}

/// A check the loader cannot make alone (e.g. collector names against the linked
/// collectors): `Err((dotted key, message))`, reported like the loader's own errors, with
/// where the key was set.
pub type ExtraCheck<'a, S> = &'a dyn Fn(&Config<S>) -> Result<(), (String, String)>;

/// [`load`], then `check`.
pub fn load_checked<S: ConfigSections>(
    file: &ConfigFile,
    overrides: &[(&str, Value)],
    check: ExtraCheck<'_, S>,
) -> Result<Config<S>, ConfigError> {
    load_described(file, overrides, check).map(|loaded| loaded.config)
}

/// A loaded configuration that can say where each value came from, for start-up output.
#[derive(Debug)]
pub struct LoadedConfig<S = NoSections> {
    /// The configuration.
    pub config: Config<S>,
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    figment: Figment,
}

impl<S> LoadedConfig<S> {
    /// Where `key`'s value came from: `default`, the file, `environment variable ...` or
    /// `command line`.
    pub fn origin(&self, key: &str) -> String {
        let parts: Vec<String> = key.split('.').map(str::to_owned).collect();
        origin_of(self.figment.find_metadata(key), &parts).unwrap_or_else(|| "default".to_owned())
    }
}

/// The name the defaults provider goes by, so an origin says `default`.
const DEFAULTS_NAME: &str = "default";

/// Every section's defaults as one provider.
struct Defaults(Dict);

impl figment::Provider for Defaults {
    fn metadata(&self) -> Metadata {
        Metadata::named(DEFAULTS_NAME)
    }

    fn data(&self) -> Result<figment::value::Map<figment::Profile, Dict>, figment::Error> {
        Ok(figment::Profile::Default.collect(self.0.clone()))
    }
}

/// [`load_checked`], keeping where each value came from.
pub fn load_described<S: ConfigSections>(
    file: &ConfigFile,
    overrides: &[(&str, Value)],
    check: ExtraCheck<'_, S>,
) -> Result<LoadedConfig<S>, ConfigError> {
    let path = match file {
        ConfigFile::Optional(path) => path.is_file().then_some(path.as_path()),
        ConfigFile::Required(path) => {
            check_readable(path)?;
            Some(path.as_path())
        }
    };
    let defaults = Config::<S>::default().to_value();
    let sections: Vec<String> = defaults.keys().cloned().collect();
    let mut figment = Figment::from(Defaults(defaults));
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
    // Core's sections and the program's are read by their own types; a top-level table
    // that neither declares is an unknown key.
    let all: Dict = figment.extract().map_err(|e| from_figment(e, path))?;
    if let Some(unknown) = all.keys().find(|k| !sections.contains(k)) {
        let key = vec![unknown.clone()];
        return Err(ConfigError {
            origin: origin_of(figment.find_metadata(unknown), &key)
                .or_else(|| path.map(|p| p.display().to_string()))
                .unwrap_or_else(|| "configuration".to_owned()),
            key: unknown.clone(),
            message: format!("unknown key (known keys here: {})", sections.join(", ")),
        });
    }
    let mut config: Config<S> = figment.extract().map_err(|e| from_figment(e, path))?;
    config.sections = figment.extract().map_err(|e| from_figment(e, path))?;
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
        _ if metadata.name == DEFAULTS_NAME => Some("default".to_owned()),
        // The command-line overrides are serialized single values: never show a type name.
        _ => Some("command line".to_owned()),
    }
}

/// Checks that need the whole configuration; errors name the key and where it was set.
fn validate<S: ConfigSections>(config: &Config<S>, figment: &Figment) -> Result<(), ConfigError> {
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
        .sections
        .validate()
        .map_err(|(key, m)| fail(&key, m))?;
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
        load::<NoSections>(&ConfigFile::Optional(path), &[])
    }

    #[test]
    fn defaults_match_the_design() {
        Jail::expect_with(|jail| {
            let c = load_in(jail, None).unwrap();
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
            jail.set_env("LXMETRICS_METRICS__COLLECTOR_TIMEOUT", "3s");
            jail.set_env("LXMETRICS_STATE_DIR", "/ignored/by/config");
            let file = "[metrics]\ncache_ttl = \"10s\"\nprefix = \"incus\"\n\
                        collector_timeout = \"1s\"\n";
            std::fs::write(jail.directory().join("c.toml"), file).unwrap();
            let loaded = load_described::<NoSections>(
                &ConfigFile::Required(jail.directory().join("c.toml")),
                &[("metrics.prefix", Value::from("lxmx"))],
                &|_| Ok(()),
            )
            .unwrap();
            let c = &loaded.config;
            assert_eq!(c.metrics.cache_ttl, Duration::from_secs(20));
            assert_eq!(c.metrics.collector_timeout, Duration::from_secs(3));
            assert_eq!(c.metrics.prefix.as_str(), "lxmx");
            assert_eq!(loaded.origin("metrics.prefix"), "command line");
            assert_eq!(
                loaded.origin("metrics.cache_ttl"),
                "environment variable LXMETRICS_METRICS__CACHE_TTL"
            );
            assert_eq!(loaded.origin("host.proc_root"), "default");
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

            let e = load_in(jail, Some("[metrics]\nprefix = \"my-fleet\"\n")).unwrap_err();
            assert_eq!(e.key, "metrics.prefix");

            let e = load_in(jail, Some("[metrics]\ncollector_timeout = \"0s\"\n")).unwrap_err();
            assert_eq!(e.key, "metrics.collector_timeout");
            assert!(e.origin.ends_with("config.toml"), "{e}");

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
            let e = load::<NoSections>(&ConfigFile::Required(missing), &[]).unwrap_err();
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
    fn changed_keys_name_what_differs() {
        let old = Config::<NoSections>::default();
        let mut new = old.clone();
        new.metrics.cache_ttl = Duration::from_secs(3);
        new.collectors.disable = vec!["disk".into()];
        assert_eq!(
            changed_keys(&old, &new),
            ["collectors.disable", "metrics.cache_ttl"]
        );
        assert!(changed_keys(&old, &old).is_empty());
    }

    /// A program's own sections, as the server declares its listeners.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    struct Web {
        web: WebSection,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct WebSection {
        port: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        banner: Option<String>,
    }

    impl Default for WebSection {
        fn default() -> Self {
            WebSection {
                port: 80,
                banner: None,
            }
        }
    }

    impl ConfigSections for Web {
        const UNSET_KEYS: &'static [&'static str] = &["web.banner"];

        fn validate(&self) -> Result<(), (String, String)> {
            match self.web.port {
                0 => Err(("web.port".into(), "must not be 0".into())),
                _ => Ok(()),
            }
        }
    }

    fn load_web(jail: &Jail, text: &str) -> Result<Config<Web>, ConfigError> {
        let path = jail.directory().join("web.toml");
        std::fs::write(&path, text).unwrap();
        load::<Web>(&ConfigFile::Required(path), &[])
    }

    #[test]
    fn a_programs_sections_load_and_are_checked_like_cores() {
        Jail::expect_with(|jail| {
            let c = load_web(jail, "[web]\nport = 8080\n[metrics]\nprefix = \"x\"\n").unwrap();
            assert_eq!(c.sections.web.port, 8080);
            assert_eq!(c.metrics.prefix.as_str(), "x");
            let e = load_web(jail, "[web]\nprot = 1\n").unwrap_err();
            assert_eq!(e.key, "web.prot", "{e}");
            assert!(e.origin.ends_with("web.toml"), "{e}");
            let e = load_web(jail, "[web]\nport = \"high\"\n").unwrap_err();
            assert_eq!(e.key, "web.port", "{e}");
            let e = load_web(jail, "[web]\nport = 0\n").unwrap_err();
            assert_eq!(
                (e.key.as_str(), e.message.as_str()),
                ("web.port", "must not be 0")
            );
            assert!(e.origin.ends_with("web.toml"), "{e}");

            // A table nobody declares, and one that only another program declares.
            let e = load_web(jail, "[wbe]\nport = 1\n").unwrap_err();
            assert_eq!(e.key, "wbe");
            assert!(e.message.contains("known keys here:"), "{e}");
            assert!(e.message.contains("web"), "{e}");
            let e = load_in(jail, Some("[web]\nport = 1\n")).unwrap_err();
            assert_eq!(e.key, "web");

            jail.set_env("LXMETRICS_WEB__PORT", "81");
            let c = load_web(jail, "").unwrap();
            assert_eq!(c.sections.web.port, 81);
            Ok(())
        });
    }

    #[test]
    fn a_programs_keys_are_known_compared_and_named_in_the_environment() {
        let keys = known_keys::<Web>();
        assert!(keys.contains(&"web.port".to_owned()), "{keys:?}");
        assert!(keys.contains(&"web.banner".to_owned()), "{keys:?}");
        assert!(keys.contains(&"metrics.cache_ttl".to_owned()), "{keys:?}");
        assert!(!known_keys::<NoSections>()
            .iter()
            .any(|k| k.starts_with("web.")));

        let old = Config::<Web>::default();
        let mut new = old.clone();
        new.sections.web.port = 1;
        new.metrics.cache_ttl = Duration::from_secs(1);
        assert_eq!(changed_keys(&old, &new), ["metrics.cache_ttl", "web.port"]);

        let unused = unused_env_vars::<Web>(
            [
                "LXMETRICS_WEB__PORT",
                "LXMETRICS_WEB_PORT",
                "LXMETRICS_METRICS__PREFIX",
            ],
            &[],
        );
        assert_eq!(
            unused,
            [(
                "LXMETRICS_WEB_PORT".to_owned(),
                Some("LXMETRICS_WEB__PORT".to_owned())
            )]
        );
    }
}
