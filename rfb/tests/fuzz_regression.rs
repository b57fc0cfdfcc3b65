//! Replays every input kept under `tests/data/fuzz_regression/<target>/` (crashes
//! found by the fuzzers, and seeds) through its oracle, on every test run.

use std::path::Path;

#[test]
fn replay_fuzz_regressions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz_regression");
    let mut replayed = 0;
    for (name, oracle) in rfb::fuzzing::TARGETS {
        let dir = root.join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let data = std::fs::read(entry.path()).expect("readable regression input");
            oracle(&data);
            replayed += 1;
        }
    }
    println!("replayed {replayed} fuzz inputs");
}
