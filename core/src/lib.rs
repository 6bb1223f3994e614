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
//! `lxmetrics-plugin`, the stable contract, and nothing here is promised to them.

pub mod cache;
pub mod cgroup_pattern;
pub mod config;
pub mod daemon_metrics;
pub mod discovery;
pub mod engine;
pub mod exposition;
pub mod family_rules;
pub mod fleet_config;
pub mod process;
pub mod project_filter;
pub mod registry;
pub mod scrape;
pub mod snapshot;
