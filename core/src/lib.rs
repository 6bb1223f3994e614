//! # lxmetrics-core
//!
//! The framework behind the lxmetrics daemon: everything between "which instances run
//! here" and "the bytes a Prometheus scrape receives", with no knowledge of HTTP or of
//! particular host files.
//!
//! Data flows one way:
//! [`discovery`] → instances → collectors (concurrently, in the [`engine`]) →
//! [`snapshot`] → [`cache`] → [`project_filter`] → [`exposition`] → response ([`scrape`]).
//!
//! This crate is the daemon's, not a plugin author's: collectors are written against
//! `lxmetrics-plugin`, the stable contract. DESIGN.md names this crate as the home of the
//! `Collector` trait, its registration and the instance and metric models, so those
//! stay reachable here under their earlier paths ([`collector`], [`metric`],
//! [`instance`], [`registry`], [`register_collector!`], [`async_trait`]) as re-exports of
//! the contract, nothing more.

mod body_cache;
pub mod cache;
pub mod cgroup_pattern;
pub mod config;
pub mod daemon_metrics;
pub mod discovery;
pub mod engine;
pub mod exposition;
pub mod family_rules;
mod instance_info;
mod process;
pub mod project_filter;
pub mod registry;
pub mod scrape;
pub mod snapshot;

/// The collector API under its earlier path: re-exports of `lxmetrics-plugin`.
pub mod collector {
    pub use lxmetrics_plugin::{
        run_blocking, CollectError, Collection, Collector, HostPaths, InstanceFailure, Scope,
    };
}

/// The instance model under its earlier path: re-exports of `lxmetrics-plugin`.
pub mod instance {
    pub use lxmetrics_plugin::{Instance, InstanceIndex, InstanceStatus, InstanceType};
}

/// The metric model under its earlier path: re-exports of `lxmetrics-plugin`.
pub mod metric {
    pub use lxmetrics_plugin::{
        is_valid_label_name, is_valid_metric_name, Family, LabelList, LabelValues, Labels,
        MetricDesc, MetricKind, Namespace, Sample, SeriesOf, SeriesSuffix,
    };
}

pub use lxmetrics_plugin::{async_trait, register_collector};
