//! Replays every kept corpus file of `fuzz/corpus/<target>/` through its target, so CI checks
//! the inputs the fuzzer found (including any that once crashed) as an ordinary `cargo test`.

use std::fs;
use std::path::PathBuf;

use tresor_fuzz::TARGETS;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

#[test]
fn every_kept_corpus_input_passes_its_target() {
    let mut failures = Vec::new();
    for (name, target) in TARGETS {
        let dir = corpus_dir(name);
        let entries = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus directory {} is missing: {e}", dir.display()));
        let mut files: Vec<PathBuf> = entries
            .map(|entry| entry.expect("a readable corpus entry").path())
            .filter(|path| path.is_file())
            .collect();
        files.sort();
        assert!(
            !files.is_empty(),
            "corpus directory {} is empty",
            dir.display()
        );
        for file in &files {
            let data = fs::read(file).expect("a readable corpus file");
            let outcome = std::panic::catch_unwind(|| target(&data));
            if outcome.is_err() {
                failures.push(file.display().to_string());
            }
        }
        eprintln!("{name}: {} inputs replayed", files.len());
    }
    assert!(failures.is_empty(), "inputs that fail: {failures:#?}");
}

#[test]
fn every_target_has_a_fuzz_target_file() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/fuzz_targets");
    for (name, _) in TARGETS {
        let file = dir.join(format!("{name}.rs"));
        assert!(file.is_file(), "{} is missing", file.display());
    }
}
