//! Workspace-wide rules that code review would otherwise have to remember.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

fn crate_sources(skip: &[&str]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for crate_dir in std::fs::read_dir(workspace_root().join("crates")).unwrap() {
        let crate_dir = crate_dir.unwrap().path();
        if crate_dir
            .file_name()
            .is_some_and(|name| skip.iter().any(|s| name == *s))
        {
            continue;
        }
        let src = crate_dir.join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    files
}

/// Every module says what it is for in a leading `//!` comment (rust-analyzer's tidy rule).
#[test]
fn every_source_file_starts_with_a_module_doc() {
    let files = crate_sources(&[]);
    assert!(files.len() > 10, "found only {} files", files.len());
    let undocumented: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            !text.trim_start().starts_with("//!")
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        undocumented.is_empty(),
        "files without a leading //! doc: {undocumented:#?}"
    );
}

/// Libraries never print: `println!`/`eprintln!` belong to the binary.
#[test]
fn libraries_do_not_print() {
    let printing: Vec<String> = crate_sources(&["sorat"])
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            // Test modules may print; the check covers the code before them.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            ["println!", "eprintln!", "print!(", "eprint!("]
                .iter()
                .any(|needle| code.contains(needle))
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        printing.is_empty(),
        "library files that print: {printing:#?}"
    );
}
