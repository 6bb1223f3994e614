//! # lxmetrics-plugins
//!
//! The built-in collectors and the cgroup-based instance discovery. Each collector lives
//! in its own module and registers itself with `register_collector!`; the file formats
//! they read are parsed in [`cgroupfs`] and [`hostfs`] by pure functions that are
//! unit-tested on their own.

pub mod cgroupfs;
pub mod cpu;
pub mod discovery;
pub mod disk;
pub mod exec;
pub mod filesystem;
pub mod hostfs;
pub mod link_speed;
pub mod memory;
pub mod network;
pub mod per_instance;
pub mod pressure;
pub mod problem_log;
pub mod processes;
pub mod prom_text;
pub mod relay;
pub mod textfile;

pub use discovery::CgroupDiscovery;
