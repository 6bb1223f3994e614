//! Runs a `tests/setup/<name>` script (idempotent, as root) once per test process, so a
//! test that needs a real runtime has it or fails with the script's message saying what
//! is missing. It never skips.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;

use crate::workspace_root;

/// Runs `tests/setup/<script>` the first time it is asked for in this process; panics
/// with its output (and `needs`, what the tests need it for) when it fails.
pub fn ensure_setup(script: &str, needs: &str) {
    static DONE: Mutex<Option<HashMap<String, Result<(), String>>>> = Mutex::new(None);
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    let results = done.get_or_insert_with(HashMap::new);
    let result = results
        .entry(script.to_owned())
        .or_insert_with(|| run(script, needs))
        .clone();
    drop(done);
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn run(script: &str, needs: &str) -> Result<(), String> {
    let path = workspace_root().join("tests/setup").join(script);
    let out = Command::new(&path)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed ({needs}):\n{}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
