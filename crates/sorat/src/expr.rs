//! `sorat expr test FILE...`: expression vector files, ending with `N passed, M failed`.

use std::path::{Path, PathBuf};

use crate::exit;

/// Runs every vector file (folders: every `.json` in them) and prints the failures.
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub(crate) fn test(paths: &[PathBuf], verbose: bool) -> u8 {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = match std::fs::read_dir(path) {
                Ok(entries) => entries
                    .filter_map(|entry| entry.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|ext| ext == "json"))
                    .collect(),
                Err(error) => {
                    eprintln!("{}: {error}", path.display());
                    return exit::INVALID;
                }
            };
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in &files {
        match sorat_expr::vectors::run_file(file) {
            Ok(outcomes) => {
                for outcome in outcomes {
                    if outcome.passed() {
                        passed += 1;
                        if verbose {
                            println!("ok   {}: {} `{}`", name(file), outcome.group, outcome.expr);
                        }
                    } else {
                        failed += 1;
                        println!(
                            "FAIL {}: {} #{} `{}`",
                            name(file),
                            outcome.group,
                            outcome.index,
                            outcome.expr
                        );
                        for failure in &outcome.failures {
                            println!("     {failure}");
                        }
                    }
                }
            }
            Err(error) => {
                eprintln!("{}: {error}", file.display());
                return exit::INVALID;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        exit::SUCCESS
    } else {
        exit::FAILURE
    }
}

fn name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
