//! `lxmetrics-custom`: the lxmetrics daemon and CLI with one more plugin linked in.
//!
//! Name every plugin crate here: `inventory` registrations in a crate the binary never
//! mentions are dropped by the linker.

use lxmetrics_example_plugin as _;
use lxmetrics_plugins as _;

fn main() -> std::process::ExitCode {
    lxmetrics_server::main()
}
