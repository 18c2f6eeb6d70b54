//! Replays the committed fuzz seeds (`fuzz/seeds/TARGET/`) and crash
//! reproducers (`fixtures/regress/TARGET/`) through the fuzz target bodies
//! (`livegate::fuzzing`), so plain `cargo test` on the stable toolchain keeps
//! them passing. `scripts/fuzz.sh` does the actual fuzzing.

use std::path::Path;

#[test]
fn committed_fuzz_inputs_pass_every_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for &(name, target) in livegate::fuzzing::TARGETS {
        let mut count = 0;
        for dir in [root.join("fuzz/seeds").join(name), root.join("fixtures/regress").join(name)] {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
            files.sort();
            for file in files {
                let data = std::fs::read(&file).unwrap();
                let run = std::panic::catch_unwind(|| target(&data));
                assert!(run.is_ok(), "fuzz target {name} fails on {}", file.display());
                count += 1;
            }
        }
        assert!(count > 0, "no seeds for fuzz target {name}");
        println!("{name}: {count} inputs");
    }
}
