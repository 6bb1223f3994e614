#![no_main]
//! Fuzz target `accept`: see tests/src/fuzz_entry.rs for what it feeds and checks.

#[allow(dead_code)]
#[path = "../../tests/src/fuzz_entry.rs"]
mod fuzz_entry;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_entry::run("accept", data));
