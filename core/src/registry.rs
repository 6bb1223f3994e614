//! Which linked collectors run: `collectors.enable`/`disable` checked against the
//! registrations every linked plugin crate made with `register_collector!`, and the
//! chosen ones built with their settings.

use std::collections::BTreeSet;
use std::sync::Arc;

use lxmetrics_plugin::{__private::CollectorRegistration, Collector, HostPaths};

use crate::config::{CollectorsConfig, MetricsConfig};

pub use lxmetrics_plugin::__private::registered;
/// What a collector factory gets and may fail with, under their earlier path.
pub use lxmetrics_plugin::{BuildContext, BuildError};

/// One documented key of a linked collector's settings, for `lxmetrics collectors`, the
/// configuration check and the configuration docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectorSetting {
    /// The full key, e.g. `collectors.filesystem.timeout`.
    pub key: String,
    /// The default as TOML (`"2s"`, `[]`), when the settings type serializes one.
    pub default: Option<String>,
    /// One line saying what it does.
    pub help: &'static str,
}

/// The documented settings of one collector.
pub fn settings_of(registration: &CollectorRegistration) -> Vec<CollectorSetting> {
    let defaults = (registration.defaults)();
    registration
        .settings
        .iter()
        .map(|setting| CollectorSetting {
            key: format!("collectors.{}.{}", registration.name, setting.key),
            default: defaults
                .as_ref()
                .and_then(|d| d.find_ref(setting.key))
                .and_then(|v| toml::Value::try_from(v).ok())
                .map(|v| v.to_string()),
            help: setting.help,
        })
        .collect()
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
    /// A collector registered a name the daemon uses for its own health series.
    #[error("collector \"{0}\" uses a reserved name (the daemon reports discovery under it)")]
    Reserved(&'static str),
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
        let mut ctx = BuildContext::new(
            registration.name,
            host,
            metrics.prefix.as_str(),
            metrics.collector_timeout,
        );
        if let Some(section) = config.settings.get(registration.name) {
            ctx = ctx.with_settings(section);
        }
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
pub fn check_selection<S>(config: &crate::config::Config<S>) -> Result<(), (String, String)> {
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
        if r.name == crate::engine::DISCOVERY_STATUS {
            return Err(SelectionError::Reserved(r.name));
        }
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
    use lxmetrics_plugin::{BuildError, CollectError, Collection, Scope};

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
        settings: &[],
        defaults: || None,
        build: build_nop,
    };
    static B: CollectorRegistration = CollectorRegistration {
        name: "b",
        help: "",
        default_enabled: false,
        settings: &[],
        defaults: || None,
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
        static DISCOVERY: CollectorRegistration = CollectorRegistration {
            name: "discovery",
            help: "",
            default_enabled: true,
            settings: &[],
            defaults: || None,
            build: build_nop,
        };
        assert_eq!(
            select(&[&A, &DISCOVERY], &[], &[]).unwrap_err(),
            SelectionError::Reserved("discovery")
        );
    }
}
