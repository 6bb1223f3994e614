//! The `lxmetrics` binary.
//!
//! Every plugin crate must be named here: `inventory` registrations in a crate the binary
//! never mentions are dropped by the linker.

use std::process::ExitCode;

use lxmetrics_plugins as _;

fn main() -> ExitCode {
    lxmetrics_server::main()
}
