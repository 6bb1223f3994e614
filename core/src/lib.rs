//! # lxmetrics-core
//!
//! The framework behind the lxmetrics daemon: everything between "which instances run
//! here" and "the bytes a Prometheus scrape receives", with no knowledge of HTTP or of
//! particular host files.
//!
//! Data flows one way:
//! [`discovery`] → instances → [`collector`]s (concurrently, in the [`engine`]) →
//! [`snapshot`] → [`cache`] → project filter → [`exposition`] → response ([`scrape`]).
//!
//! Plugin authors need [`collector`], [`metric`] and [`register_collector!`]; see
//! `docs/plugins.md`.

pub mod cache;
pub mod cgroup_pattern;
pub mod collector;
pub mod config;
pub mod daemon_metrics;
pub mod discovery;
pub mod engine;
pub mod exposition;
pub mod fleet_config;
pub mod instance;
pub mod metric;
pub mod process;
pub mod registry;
pub mod scrape;
pub mod snapshot;

/// Re-exported so [`register_collector!`] works in crates that do not depend on inventory.
#[doc(hidden)]
pub use inventory;

/// Re-exported so plugin crates implement [`collector::Collector`] with the same macro
/// version.
pub use async_trait::async_trait;
