//! Replays every fuzz seed and every input a fuzzer ever crashed on
//! (`fuzz/seeds/<target>/`, `fuzz/regressions/<target>/`) through the fuzz target bodies,
//! so `cargo test` keeps the fixes. The fuzzers themselves run with `fuzz/run`.

use lxmetrics_tests::fuzz_entry::{run, TARGETS};
use lxmetrics_tests::workspace_root;

#[test]
fn every_target_has_a_cargo_fuzz_binary_and_seeds() {
    let fuzz = workspace_root().join("fuzz");
    for target in TARGETS {
        let binary = fuzz.join("fuzz_targets").join(format!("{target}.rs"));
        let source = std::fs::read_to_string(&binary)
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        assert!(
            source.contains(&format!("run(\"{target}\"")),
            "{}",
            binary.display()
        );
        let seeds = fuzz.join("seeds").join(target);
        let count = std::fs::read_dir(&seeds)
            .unwrap_or_else(|e| panic!("{}: {e}", seeds.display()))
            .count();
        assert!(count > 0, "{} is empty", seeds.display());
    }
}

#[test]
fn seeds_and_past_crashes_replay_cleanly() {
    let fuzz = workspace_root().join("fuzz");
    let mut replayed = 0;
    for target in TARGETS {
        for kind in ["seeds", "regressions"] {
            let dir = fuzz.join(kind).join(target);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue; // no crash ever found for this target
            };
            for entry in entries {
                let path = entry.expect("directory entry").path();
                let data = std::fs::read(&path).expect("read input");
                let outcome = std::panic::catch_unwind(|| run(target, &data));
                assert!(outcome.is_ok(), "{target} panics on {}", path.display());
                replayed += 1;
            }
        }
    }
    assert!(replayed >= TARGETS.len(), "only {replayed} inputs replayed");
}
