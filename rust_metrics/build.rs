//! Compiles a fingerprint of the crate's sources into the engine (ENGINE_FINGERPRINT), so
//! the workflow can tell which engine computed a metrics file and notice an engine that
//! is older than the sources beside it. Python recomputes it in
//! `trainmap.workflow.engine_fingerprint`: keep the two in step.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src/") {
        let path = entry.expect("readable entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let mut files = vec![root.join("Cargo.toml"), root.join("Cargo.lock")];
    rust_files(&root.join("src"), &mut files);
    let relative = |p: &PathBuf| p.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
    files.sort_by_key(relative);

    let mut digest = Sha256::new();
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        digest.update(relative(path).as_bytes());
        digest.update(b"\0");
        digest.update(std::fs::read(path).expect("readable source"));
        digest.update(b"\0");
    }
    let hex: String = digest.finalize().iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=TRAINMAP_ENGINE_FINGERPRINT={hex}");
}
