//! Replays every committed fuzz input through the same target code the fuzzer
//! runs, with plain `cargo test` and no AFL: the seed corpora (`corpus/`, and
//! for the decoders the golden frames of `schemas/examples`) and every crash
//! found and fixed (`regressions/`). A regression shows up here as a panic
//! naming the file.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> =
        entries.map(|e| e.expect("a readable directory entry").path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// Runs `target` on every file of the target's folders; fails naming each input that panicked.
fn replay(target: &str, run: fn(&[u8]), extra: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("corpus").join(target), root.join("regressions").join(target)];
    dirs.extend(extra.iter().map(|dir| root.join(dir)));
    let inputs: Vec<PathBuf> = dirs.iter().flat_map(|dir| files(dir)).collect();
    assert!(inputs.len() >= 10, "{target}: only {} inputs found in {dirs:?}", inputs.len());
    let failed: Vec<String> = inputs
        .iter()
        .filter(|path| {
            let data = fs::read(path).expect("a readable input");
            catch_unwind(AssertUnwindSafe(|| run(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: {} of {} inputs panic: {failed:#?}", failed.len(), inputs.len());
}

#[test]
fn client_decode_corpus_replays() {
    replay("client_decode", petchat_fuzz::client_decode, &["../schemas/examples/valid", "../schemas/examples/invalid"]);
}

#[test]
fn server_decode_corpus_replays() {
    replay("server_decode", petchat_fuzz::server_decode, &["../schemas/examples/valid", "../schemas/examples/invalid"]);
}

#[test]
fn session_corpus_replays() {
    replay("session", petchat_fuzz::session, &[]);
}
