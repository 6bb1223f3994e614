//! # lxmetrics-plugins
//!
//! The built-in collectors and the cgroup-based instance discovery. Each collector lives
//! in its own module and registers itself with `register_collector!`; the file formats
//! they read are parsed in [`cgroupfs`] and [`hostfs`] by pure functions that are
//! unit-tested on their own.

pub mod cgroupfs;
mod cpu;
mod discovery;
mod disk;
mod engine_api;
mod exec;
mod filesystem;
pub mod hostfs;
mod link_speed;
mod manager_api;
mod memory;
mod network;
mod pid_facts;
mod pressure;
mod problem_log;
mod processes;
pub mod prom_text;
pub mod relay;
mod textfile;
mod unix_http;

pub use discovery::CgroupDiscovery;
