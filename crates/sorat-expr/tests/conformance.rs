//! Runs GitHub's expression test vectors (`shared/conformance/expressions`, from
//! `actions/languageservices`) and Sorat's own cases (`tests/cases`) through the same
//! harness, `sorat_expr::vectors`.

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use sorat_expr::vectors;

fn vector_files(folder: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    files.sort();
    files
}

/// Runs every file in `folder`, prints a line per file and every failure, and returns
/// (cases passed, cases failed).
fn run_folder(folder: &Path) -> (usize, usize) {
    let (mut passed, mut failed) = (0, 0);
    for file in vector_files(folder) {
        let outcomes =
            vectors::run_file(&file).unwrap_or_else(|error| panic!("{}: {error}", file.display()));
        let file_failed = outcomes.iter().filter(|outcome| !outcome.passed()).count();
        println!(
            "{}: {} passed, {} failed",
            file.display(),
            outcomes.len() - file_failed,
            file_failed
        );
        for outcome in outcomes.iter().filter(|outcome| !outcome.passed()) {
            println!("  {outcome}");
        }
        passed += outcomes.len() - file_failed;
        failed += file_failed;
    }
    println!("{passed} passed, {failed} failed");
    (passed, failed)
}

#[test]
fn github_test_vectors_all_pass() {
    let folder =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/expressions");
    if !folder.is_dir() {
        eprintln!(
            "skipped: {} is absent (the shared conformance folder is not checked out here)",
            folder.display()
        );
        return;
    }
    let (passed, failed) = run_folder(&folder);
    assert!(passed > 0, "no vector cases found in {}", folder.display());
    assert_eq!(
        failed, 0,
        "{failed} conformance cases failed (see the output above)"
    );
}

#[test]
fn sorat_cases_all_pass() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let (passed, failed) = run_folder(&folder);
    assert!(passed > 0, "no cases found in {}", folder.display());
    assert_eq!(
        failed, 0,
        "{failed} of Sorat's own cases failed (see the output above)"
    );
}
