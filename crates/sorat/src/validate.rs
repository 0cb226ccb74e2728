//! `sorat validate [PATH]`: every problem of every pipeline file, located.

use std::path::{Path, PathBuf};

use sorat_config::{Diagnostic, SourceFile};

use crate::{diagnostics, exit};

/// Arguments of `sorat validate`.
#[derive(clap::Args)]
pub(crate) struct ValidateArgs {
    /// A pipeline file or `sorat.yaml`, or a folder: its `.sorat/pipeline.yaml`, or every YAML
    /// file of a `.sorat` or `workflows` folder. Default: the repository around the current
    /// folder.
    path: Option<PathBuf>,
}

/// The pipeline files under `path`.
pub(crate) fn pipeline_files(path: Option<&Path>) -> Result<Vec<PathBuf>, String> {
    let start = match path {
        Some(path) => path.to_path_buf(),
        None => {
            let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
            match sorat_pipeline::git::git(&cwd, &["rev-parse", "--show-toplevel"]) {
                Ok(root) => PathBuf::from(root),
                Err(_) => cwd,
            }
        }
    };
    if start.is_file() {
        return Ok(vec![start]);
    }
    if !start.exists() {
        return Err(format!("{}: no such file or folder", start.display()));
    }
    let candidate = start.join(".sorat").join("pipeline.yaml");
    if candidate.is_file() {
        return Ok(vec![candidate]);
    }
    let name = start.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name == ".sorat" || name == "workflows" {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&start)
            .map_err(|e| format!("{}: {e}", start.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|ext| ext == "yaml" || ext == "yml")
            })
            .collect();
        files.sort();
        if !files.is_empty() {
            return Ok(files);
        }
    }
    Err(format!(
        "{}: no pipeline found (looked for {})",
        start.display(),
        candidate.display()
    ))
}

/// Reads a file as a [`SourceFile`], or a located error.
pub(crate) fn read_source(path: &Path) -> Result<SourceFile, Diagnostic> {
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Ok(SourceFile::new(path, text)),
            Err(error) => {
                let offset = error.utf8_error().valid_up_to();
                let text = String::from_utf8_lossy(error.as_bytes()).into_owned();
                let file = SourceFile::new(path, text);
                Err(Diagnostic::error(
                    &file,
                    sorat_config::Span::new(offset, offset + 1),
                    "the file is not valid UTF-8",
                ))
            }
        },
        Err(error) => Err(Diagnostic::unlocated(format!(
            "{}: {error}",
            path.display()
        ))),
    }
}

/// `sorat.yaml` (or `.yml`) is the platform's configuration, not a pipeline.
fn is_platform_config(path: &Path) -> bool {
    matches!(
        path.file_name().and_then(|name| name.to_str()),
        Some("sorat.yaml" | "sorat.yml")
    )
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
pub(crate) fn validate(args: ValidateArgs) -> u8 {
    let files = match pipeline_files(args.path.as_deref()) {
        Ok(files) => files,
        Err(message) => {
            eprintln!("error: {message}");
            return exit::INVALID;
        }
    };
    let mut all = Vec::new();
    for path in &files {
        match read_source(path) {
            Ok(file) => {
                let found = if is_platform_config(path) {
                    sorat_config::platform::load(&file).1
                } else {
                    sorat_pipeline::load::load(&file).1
                };
                all.extend(found.into_sorted());
            }
            Err(diagnostic) => all.push(diagnostic),
        }
    }
    diagnostics::print(&all);
    let errors = all.iter().any(Diagnostic::is_error);
    let summary = diagnostics::counts(&all);
    if errors {
        eprintln!("{summary} in {} file(s)", files.len());
        exit::INVALID
    } else {
        println!("{} file(s) valid ({summary})", files.len());
        exit::SUCCESS
    }
}
