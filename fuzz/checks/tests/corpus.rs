//! Replays the committed fuzz corpus and every crash found so far through the checks, on
//! stable: a parser change that breaks an input the fuzzer once reached fails CI.

use std::path::Path;

#[test]
fn every_corpus_and_regression_input_passes_its_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut replayed = 0;
    for (target, check) in livegate_fuzz_checks::TARGETS {
        for folder in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(folder).join(target)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                check(&std::fs::read(&path).unwrap());
                replayed += 1;
            }
        }
    }
    assert!(
        replayed >= livegate_fuzz_checks::TARGETS.len(),
        "the corpus is missing: {replayed} inputs"
    );
}
