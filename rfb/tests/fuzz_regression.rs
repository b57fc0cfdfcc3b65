//! Replays every input kept under `tests/data/fuzz_regression/<target>/` (crashes
//! found by the fuzzers, and hand-made seeds) through its oracle, on every test run.
//! Every target must have at least one input, so the replay can't silently run nothing.

use std::path::Path;

#[test]
fn replay_fuzz_regressions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz_regression");
    let mut empty = Vec::new();
    for (name, oracle) in rfb::fuzzing::TARGETS {
        let dir = root.join(name);
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        paths.sort();
        for path in &paths {
            let data = std::fs::read(path).expect("readable regression input");
            eprintln!("replaying {}", path.display());
            oracle(&data);
        }
        if paths.is_empty() {
            empty.push(*name);
        }
        println!("{name}: replayed {} inputs", paths.len());
    }
    assert!(
        empty.is_empty(),
        "no inputs under {} for {empty:?}",
        root.display()
    );
}

#[test]
fn every_kept_input_belongs_to_a_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz_regression");
    for entry in std::fs::read_dir(&root)
        .expect("the regression directory")
        .flatten()
    {
        let name = entry.file_name();
        assert!(
            rfb::fuzzing::TARGETS.iter().any(|(n, _)| *n == name),
            "{} is not a fuzz target",
            entry.path().display()
        );
    }
}
