//! Registration: a plugin crate registers a collector with one line
//! ([`register_collector!`](crate::register_collector)) and the daemon that links the crate
//! finds it through `inventory`, without touching the daemon's code.

use std::sync::Arc;
use std::time::Duration;

use figment::value::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::collector::{Collector, HostPaths};

/// What a collector factory may fail with; any error converts into it with `?`.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// What a collector factory is given at start-up. More may be added, so it is built with
/// [`BuildContext::new`], not a struct literal.
#[derive(Debug)]
#[non_exhaustive]
pub struct BuildContext<'a> {
    /// The collector's registered name.
    pub name: &'static str,
    /// Where host files live.
    pub host: &'a Arc<HostPaths>,
    /// The configured metric prefix (`metrics.prefix`): collectors that relay names from
    /// outside (textfile, exec) refuse names under it, which belong to the daemon.
    pub metric_prefix: &'a str,
    /// The per-collector deadline (`metrics.collector_timeout`), so a collector can check
    /// that its own timeouts fit inside it.
    pub collector_timeout: Duration,
    settings: Option<&'a Value>,
}

impl<'a> BuildContext<'a> {
    /// The context of collector `name` with no settings section (tests build their own).
    pub fn new(
        name: &'static str,
        host: &'a Arc<HostPaths>,
        metric_prefix: &'a str,
        collector_timeout: Duration,
    ) -> Self {
        BuildContext {
            name,
            host,
            metric_prefix,
            collector_timeout,
            settings: None,
        }
    }

    /// The same context with the collector's `[collectors.<name>]` section as the
    /// configuration loader parsed it.
    pub fn with_settings(mut self, section: &'a Value) -> Self {
        self.settings = Some(section);
        self
    }

    /// Deserializes the collector's own section (or `T::default()` when absent). Errors
    /// name the key, e.g. `collectors.textfile.directory: invalid type ...`.
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

/// One key of a collector's settings, documented: `lxmetrics collectors` lists it with
/// its default and the configuration check knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The key inside `[collectors.<name>]`, e.g. `timeout`.
    pub key: &'static str,
    /// One line saying what it does.
    pub help: &'static str,
}

/// A collector's typed settings, registered with it
/// (`register_collector!(..., settings = MySettings)`): `[collectors.<name>]`
/// deserializes into it, and `T::default()` gives the documented defaults.
pub trait CollectorSettings: DeserializeOwned + Serialize + Default {
    /// Every key, in the order to show them.
    const KEYS: &'static [Setting];
}

/// Machinery behind [`register_collector!`](crate::register_collector); not for plugin
/// code to use directly.
#[doc(hidden)]
pub mod __private {
    use super::*;

    /// One registered collector, gathered by `inventory` across every linked crate.
    #[derive(Debug)]
    pub struct CollectorRegistration {
        /// Unique name used in configuration and in the `collector` label.
        pub name: &'static str,
        /// One line saying what it collects, shown by `lxmetrics collectors`.
        pub help: &'static str,
        /// Whether it runs when the configuration does not mention it.
        pub default_enabled: bool,
        /// Its documented settings keys (empty without a settings type).
        pub settings: &'static [Setting],
        /// Its settings' defaults, serialized (`None` without a settings type).
        pub defaults: fn() -> Option<Value>,
        /// Builds the collector from the configuration.
        pub build: fn(&BuildContext<'_>) -> Result<Arc<dyn Collector>, BuildError>,
    }

    inventory::collect!(CollectorRegistration);

    /// The serialized defaults of settings type `T`.
    pub fn defaults_of<T: CollectorSettings>() -> Option<Value> {
        Value::serialize(T::default()).ok()
    }

    /// No settings type.
    pub fn no_defaults() -> Option<Value> {
        None
    }

    pub use inventory;

    /// Every collector linked into this binary, sorted by name.
    pub fn registered() -> Vec<&'static CollectorRegistration> {
        let mut all: Vec<_> = inventory::iter::<CollectorRegistration>
            .into_iter()
            .collect();
        all.sort_by_key(|r| r.name);
        all
    }
}

/// Registers a collector: `register_collector!("name", "help", build)` where `build` is a
/// function `fn(&BuildContext) -> Result<C, E>`, `C: Collector` and `E` converts into
/// [`BuildError`]. Optional trailing arguments, in this order:
/// `settings = MySettings` (a [`CollectorSettings`] type, so its keys are listed and
/// checked) and `enabled = false` (a collector the operator must switch on with
/// `collectors.enable`).
#[macro_export]
macro_rules! register_collector {
    ($name:literal, $help:literal, $build:path $(, settings = $settings:ty)? $(, enabled = $enabled:literal)? $(,)?) => {
        $crate::__private::inventory::submit! {
            $crate::__private::CollectorRegistration {
                name: $name,
                help: $help,
                default_enabled: $crate::__enabled!($($enabled)?),
                settings: $crate::__settings_keys!($($settings)?),
                defaults: $crate::__settings_defaults!($($settings)?),
                build: |ctx| {
                    let collector = $build(ctx)?;
                    ::std::result::Result::Ok(::std::sync::Arc::new(collector)
                        as ::std::sync::Arc<dyn $crate::Collector>)
                },
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __enabled {
    () => {
        true
    };
    ($enabled:literal) => {
        $enabled
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __settings_keys {
    () => {
        &[]
    };
    ($settings:ty) => {
        <$settings as $crate::CollectorSettings>::KEYS
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __settings_defaults {
    () => {
        $crate::__private::no_defaults
    };
    ($settings:ty) => {
        $crate::__private::defaults_of::<$settings>
    };
}
