//! Every input a fuzz target ever crashed on (`fuzz/regressions/<target>/`), replayed through the
//! same code the target runs (`webhook_operator::fuzzing`), on stable, in every test run.
use std::path::Path;

#[test]
fn every_kept_crash_input_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for (target, run) in webhook_operator::fuzzing::TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n == "README.md") {
                continue;
            }
            let input = std::fs::read(&path).unwrap();
            run(&input);
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} kept crash inputs");
}

#[test]
fn seeds_run_through_every_target() {
    // The seed corpora the fuzzers start from are valid inputs: each runs without a panic.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for (target, run) in webhook_operator::fuzzing::TARGETS {
        let entries: Vec<_> = std::fs::read_dir(root.join(target))
            .unwrap_or_else(|e| panic!("fuzz/seeds/{target}: {e}"))
            .collect();
        assert!(!entries.is_empty(), "fuzz/seeds/{target} has seeds");
        for entry in entries {
            run(&std::fs::read(entry.unwrap().path()).unwrap());
        }
    }
}
