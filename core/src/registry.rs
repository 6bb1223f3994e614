//! Collector registration through `inventory`: a plugin crate registers a collector with
//! one line and the daemon that links it finds it without touching core.
//!
//! ```
//! use lxmetrics_core::collector::{Collection, CollectError, Collector, Scope};
//! use lxmetrics_core::registry::{BuildContext, BuildError};
//!
//! struct Hello;
//!
//! #[async_trait::async_trait]
//! impl Collector for Hello {
//!     async fn collect(&self, _scope: &Scope) -> Result<Collection, CollectError> {
//!         Ok(Collection::new())
//!     }
//! }
//!
//! fn build(_ctx: &BuildContext) -> Result<Hello, BuildError> {
//!     Ok(Hello)
//! }
//!
//! lxmetrics_core::register_collector!("hello", "Says hello", build);
//! ```
//!
//! A binary only sees the collectors of crates it links: name every plugin crate in the
//! binary (`use my_plugin as _;`) or the linker drops its registrations.

use std::collections::BTreeSet;
use std::sync::Arc;

use figment::value::Value;
use serde::de::DeserializeOwned;

use crate::collector::{Collector, HostPaths};
use crate::config::{CollectorsConfig, MetricsConfig};

/// What a collector factory may fail with; any error converts into it with `?`.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// What a collector factory is given at start-up.
#[derive(Debug)]
pub struct BuildContext<'a> {
    /// The collector's registered name.
    pub name: &'static str,
    /// Where host files live.
    pub host: &'a Arc<HostPaths>,
    /// The collector's own section `[collectors.<name>]`, if the configuration has one.
    pub settings: Option<&'a Value>,
    /// The configured metric prefix (`metrics.prefix`): collectors that relay names from
    /// outside (textfile, exec) refuse names under it, which belong to the daemon.
    pub metric_prefix: &'a str,
    /// The per-collector deadline (`metrics.collector_timeout`), so a collector can check
    /// that its own timeouts fit inside it.
    pub collector_timeout: std::time::Duration,
}

impl BuildContext<'_> {
    /// Deserializes the collector's own section (or `T::default()` when absent). Errors name
    /// the key, e.g. `collectors.textfile.directory: invalid type ...`.
    pub fn settings<T: DeserializeOwned + Default>(&self) -> Result<T, BuildError> {
        match self.settings {
            None => Ok(T::default()),
            Some(value) => value.deserialize::<T>().map_err(|e| {
                let key = std::iter::once(format!("collectors.{}", self.name))
                    .chain(e.path.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(".");
                format!("{key}: {}", e.kind).into()
            }),
        }
    }
}

/// One registered collector: submitted with [`register_collector!`](crate::register_collector)
/// and gathered by `inventory` across every linked crate.
#[derive(Debug)]
pub struct CollectorRegistration {
    /// Unique name used in configuration and in the `collector` label.
    pub name: &'static str,
    /// One line saying what it collects, shown by `lxmetrics collectors`.
    pub help: &'static str,
    /// Whether it runs when the configuration does not mention it.
    pub default_enabled: bool,
    /// Builds the collector from the configuration.
    pub build: fn(&BuildContext<'_>) -> Result<Arc<dyn Collector>, BuildError>,
}

inventory::collect!(CollectorRegistration);

/// Registers a collector. `$build` is a function `fn(&BuildContext) -> Result<C, E>`
/// where `C: Collector` and `E` converts into [`BuildError`]. Add `, enabled = false` for
/// a collector the operator must switch on with `collectors.enable`.
#[macro_export]
macro_rules! register_collector {
    ($name:literal, $help:literal, $build:path) => {
        $crate::register_collector!($name, $help, $build, enabled = true);
    };
    ($name:literal, $help:literal, $build:path, enabled = $enabled:literal) => {
        $crate::inventory::submit! {
            $crate::registry::CollectorRegistration {
                name: $name,
                help: $help,
                default_enabled: $enabled,
                build: |ctx| {
                    let collector = $build(ctx)?;
                    ::std::result::Result::Ok(::std::sync::Arc::new(collector)
                        as ::std::sync::Arc<dyn $crate::collector::Collector>)
                },
            }
        }
    };
}

/// Every collector linked into this binary, sorted by name.
pub fn registered() -> Vec<&'static CollectorRegistration> {
    let mut all: Vec<_> = inventory::iter::<CollectorRegistration>
        .into_iter()
        .collect();
    all.sort_by_key(|r| r.name);
    all
}

/// A selection problem in `collectors.enable` / `collectors.disable`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectionError {
    /// A name that no linked collector has.
    #[error("collectors.{key}: unknown collector \"{name}\" (known: {known})")]
    Unknown {
        /// `enable` or `disable`.
        key: &'static str,
        /// The name given.
        name: String,
        /// The registered names.
        known: String,
    },
    /// The same name in both lists.
    #[error("collectors: \"{0}\" is in both enable and disable")]
    Both(String),
    /// Two crates registered the same name.
    #[error("collector \"{0}\" is registered twice (two linked crates use the name)")]
    Duplicate(&'static str),
    /// A `[collectors.<name>]` section for a collector that is not linked.
    #[error("collectors.{name}: unknown collector (known: {known})")]
    UnknownSection {
        /// The section name.
        name: String,
        /// The registered names.
        known: String,
    },
    /// A collector's factory refused its settings.
    #[error("{0}")]
    Build(String),
}

/// A built collector with its registered name.
pub type NamedCollector = (&'static str, Arc<dyn Collector>);

/// The collectors to run, built from the configuration, in name order.
pub fn build_enabled(
    config: &CollectorsConfig,
    metrics: &MetricsConfig,
    host: &Arc<HostPaths>,
) -> Result<Vec<NamedCollector>, SelectionError> {
    let all = registered();
    if let Some(name) = config
        .settings
        .keys()
        .find(|name| !all.iter().any(|r| r.name == name.as_str()))
    {
        return Err(SelectionError::UnknownSection {
            name: name.clone(),
            known: all.iter().map(|r| r.name).collect::<Vec<_>>().join(", "),
        });
    }
    let mut built = Vec::new();
    for (registration, enabled) in select(&all, &config.enable, &config.disable)? {
        if !enabled {
            continue;
        }
        let ctx = BuildContext {
            name: registration.name,
            host,
            settings: config.settings.get(registration.name),
            metric_prefix: metrics.prefix.as_str(),
            collector_timeout: metrics.collector_timeout,
        };
        let collector = (registration.build)(&ctx).map_err(|e| {
            let text = e.to_string();
            // Factories using BuildContext::settings already name their key.
            if text.starts_with("collectors.") {
                SelectionError::Build(text)
            } else {
                SelectionError::Build(format!("collectors.{}: {text}", registration.name))
            }
        })?;
        built.push((registration.name, collector));
    }
    Ok(built)
}

/// Checks `collectors.enable` and `collectors.disable` against the linked collectors, for
/// [`crate::config::load_checked`]: the error names the key and leaves where it was set
/// to the loader.
pub fn check_selection(config: &crate::config::Config) -> Result<(), (String, String)> {
    match select(
        &registered(),
        &config.collectors.enable,
        &config.collectors.disable,
    ) {
        Ok(_) => Ok(()),
        Err(SelectionError::Unknown { key, name, known }) => Err((
            format!("collectors.{key}"),
            format!("unknown collector \"{name}\" (known: {known})"),
        )),
        Err(other) => Err(("collectors.enable".to_owned(), other.to_string())),
    }
}

/// Whether each registered collector runs, given the configuration lists.
///
/// Enabled = (default-enabled ∪ `enable`) ∖ `disable`.
pub fn select(
    registered: &[&'static CollectorRegistration],
    enable: &[String],
    disable: &[String],
) -> Result<Vec<(&'static CollectorRegistration, bool)>, SelectionError> {
    let mut seen = BTreeSet::new();
    for r in registered {
        if !seen.insert(r.name) {
            return Err(SelectionError::Duplicate(r.name));
        }
    }
    let known = || seen.iter().copied().collect::<Vec<_>>().join(", ");
    for (key, list) in [("enable", enable), ("disable", disable)] {
        if let Some(name) = list.iter().find(|n| !seen.contains(n.as_str())) {
            return Err(SelectionError::Unknown {
                key,
                name: name.clone(),
                known: known(),
            });
        }
    }
    if let Some(name) = enable.iter().find(|n| disable.contains(n)) {
        return Err(SelectionError::Both(name.clone()));
    }
    Ok(registered
        .iter()
        .map(|r| {
            let on = (r.default_enabled || enable.iter().any(|n| n == r.name))
                && !disable.iter().any(|n| n == r.name);
            (*r, on)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::{CollectError, Collection, Scope};

    struct Nop;

    #[async_trait::async_trait]
    impl Collector for Nop {
        async fn collect(&self, _: &Scope) -> Result<Collection, CollectError> {
            Ok(Collection::new())
        }
    }

    fn build_nop(_: &BuildContext<'_>) -> Result<Arc<dyn Collector>, BuildError> {
        Ok(Arc::new(Nop))
    }

    static A: CollectorRegistration = CollectorRegistration {
        name: "a",
        help: "",
        default_enabled: true,
        build: build_nop,
    };
    static B: CollectorRegistration = CollectorRegistration {
        name: "b",
        help: "",
        default_enabled: false,
        build: build_nop,
    };

    fn names(sel: &[(&CollectorRegistration, bool)]) -> Vec<&'static str> {
        sel.iter()
            .filter(|(_, on)| *on)
            .map(|(r, _)| r.name)
            .collect()
    }

    #[test]
    fn defaults_enable_and_disable_combine() {
        let regs = [&A, &B];
        assert_eq!(names(&select(&regs, &[], &[]).unwrap()), ["a"]);
        assert_eq!(
            names(&select(&regs, &["b".into()], &[]).unwrap()),
            ["a", "b"]
        );
        assert_eq!(
            names(&select(&regs, &[], &["a".into()]).unwrap()),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn unknown_and_conflicting_names_are_errors() {
        let regs = [&A, &B];
        let err = select(&regs, &["zz".into()], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "collectors.enable: unknown collector \"zz\" (known: a, b)"
        );
        assert!(matches!(
            select(&regs, &["a".into()], &["a".into()]),
            Err(SelectionError::Both(_))
        ));
        assert_eq!(
            select(&[&A, &A], &[], &[]).unwrap_err(),
            SelectionError::Duplicate("a")
        );
    }
}
