//! `sorat run`: a pipeline on this machine, without a server.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use sorat_config::Diagnostic;
use sorat_pipeline::exec::{self, Cancel, RunRequest};
use sorat_pipeline::git;
use sorat_pipeline::record::Status;
use sorat_pipeline::spec::Pipeline;
use sorat_pipeline::trigger::{self, EventFacts, EventKind};

use crate::validate::read_source;
use crate::view::{self, OutputMode};
use crate::{diagnostics, exit};

/// Arguments of `sorat run`.
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The pipeline file, or a folder holding `.sorat/pipeline.yaml`. Default: the
    /// `.sorat/pipeline.yaml` of the repository around the current folder.
    file: Option<PathBuf>,
    /// Run only this job (and the jobs it needs).
    #[arg(long)]
    job: Option<String>,
    /// The event the run stands for (default: the first of push, pull_request, manual,
    /// schedule that the pipeline declares).
    #[arg(long, value_parser = ["push", "pull_request", "schedule", "manual", "workflow_dispatch"])]
    event: Option<String>,
    /// A manual input, `name=value` (repeatable).
    #[arg(long = "input", value_name = "NAME=VALUE")]
    inputs: Vec<String>,
    /// A secret, `NAME=VALUE`, or `NAME` to take it from the environment (repeatable).
    #[arg(long = "secret", value_name = "NAME[=VALUE]")]
    secrets: Vec<String>,
    /// A file of secrets, one `NAME=VALUE` per line (dotenv style).
    #[arg(long, value_name = "FILE")]
    secrets_file: Option<PathBuf>,
    /// A configuration variable, `NAME=VALUE` (repeatable), for `${{ vars.NAME }}`.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// How many jobs may run at once (default: the number of cores).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// Run the working copy, uncommitted changes included, instead of the HEAD commit.
    #[arg(long)]
    dirty: bool,
    /// `text` (a live view, or plain log lines when not on a terminal) or `json` (the run's
    /// record on standard output; logs go to standard error).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
    /// Where runs, caches and artifacts are kept (default: `sorat` in the repository's git
    /// folder, so nothing appears in the working copy).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Keep each job's workspace after the run.
    #[arg(long)]
    keep_workspaces: bool,
}

/// Finds the pipeline file from the argument.
fn pipeline_path(file: Option<&Path>) -> Result<PathBuf, String> {
    let start = match file {
        Some(path) => path.to_path_buf(),
        None => {
            let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
            let root = git::git(&cwd, &["rev-parse", "--show-toplevel"]).map_err(|_| {
                format!(
                    "{} is not inside a git repository; give the pipeline file as an argument",
                    cwd.display()
                )
            })?;
            PathBuf::from(root)
        }
    };
    if start.is_dir() {
        let candidate = start.join(".sorat").join("pipeline.yaml");
        if candidate.is_file() {
            return Ok(candidate);
        }
        return Err(format!("no pipeline at {}", candidate.display()));
    }
    if start.is_file() {
        return Ok(start);
    }
    Err(format!("{}: no such file or folder", start.display()))
}

/// Splits `NAME=VALUE`.
fn split_pair(text: &str, flag: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("{flag} {text}: expected NAME=VALUE")),
    }
}

/// Reads a dotenv-style secrets file: `NAME=VALUE`, `# comments`, optional `export `,
/// single or double quotes (double quotes may span lines and know `\n`).
fn read_secrets_file(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut secrets = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let trimmed = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let Some((name, value)) = trimmed.split_once('=') else {
            return Err(format!(
                "{}:{}: expected NAME=VALUE",
                path.display(),
                index + 1
            ));
        };
        let name = name.trim().to_string();
        let value = value.trim();
        let value = if let Some(rest) = value.strip_prefix('"') {
            let mut collected = rest.to_string();
            while !collected.ends_with('"') || collected.ends_with("\\\"") {
                match lines.next() {
                    Some((_, next)) => {
                        collected.push('\n');
                        collected.push_str(next);
                    }
                    None => {
                        return Err(format!(
                            "{}:{}: the quoted value of {name} is never closed",
                            path.display(),
                            index + 1
                        ));
                    }
                }
            }
            collected.pop();
            collected.replace("\\n", "\n").replace("\\\"", "\"")
        } else if let Some(rest) = value.strip_prefix('\'') {
            rest.strip_suffix('\'')
                .ok_or_else(|| {
                    format!(
                        "{}:{}: the quoted value of {name} is never closed",
                        path.display(),
                        index + 1
                    )
                })?
                .to_string()
        } else {
            value.to_string()
        };
        secrets.push((name, value));
    }
    Ok(secrets)
}

/// The event to run for when none is given: what the pipeline declares.
fn default_event(pipeline: &Pipeline) -> EventKind {
    let triggers = &pipeline.triggers;
    if triggers.push.is_some() {
        EventKind::Push
    } else if triggers.pull_request.is_some() {
        EventKind::PullRequest
    } else if triggers.manual.is_some() {
        EventKind::Manual
    } else if !triggers.schedule.is_empty() {
        EventKind::Schedule
    } else {
        EventKind::Push
    }
}

#[allow(clippy::print_stderr)]
fn invalid(messages: &[String]) -> u8 {
    for message in messages {
        eprintln!("error: {message}");
    }
    exit::INVALID
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
pub(crate) fn run(args: RunArgs) -> u8 {
    let path = match pipeline_path(args.file.as_deref()) {
        Ok(path) => path,
        Err(message) => return invalid(&[message]),
    };
    let file = match read_source(&path) {
        Ok(file) => file,
        Err(diagnostic) => {
            diagnostics::print(&[diagnostic]);
            return exit::INVALID;
        }
    };
    let (pipeline, found) = sorat_pipeline::load::load(&file);
    let found: Vec<Diagnostic> = found.into_sorted();
    if !found.is_empty() {
        diagnostics::print(&found);
    }
    let Some(pipeline) = pipeline else {
        eprintln!("{}; nothing ran", diagnostics::counts(&found));
        return exit::INVALID;
    };

    // The repository around the pipeline, and the project's place in it.
    let pipeline_dir = path
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let repo = match git::repo_state(&pipeline_dir) {
        Ok(repo) => repo,
        Err(error) => {
            return invalid(&[format!(
                "{}: {error}; `sorat run` runs a commit of a git repository (or its working copy with --dirty)",
                path.display()
            )]);
        }
    };
    if repo.sha.is_empty() && !args.dirty {
        return invalid(&[format!(
            "{}: the repository has no commit yet; commit first, or run the working copy with --dirty",
            repo.root.display()
        )]);
    }
    let project_root = if pipeline_dir.file_name().is_some_and(|n| n == ".sorat") {
        pipeline_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or(pipeline_dir.clone())
    } else {
        repo.root.clone()
    };
    let project_dir = project_root
        .strip_prefix(&repo.root)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !args.dirty
        && let Ok(changed) = git::dirty_files(&repo.root)
        && let Ok(relative) = path.canonicalize().map(|p| {
            p.strip_prefix(&repo.root)
                .map(|r| r.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        && changed.contains(&relative)
    {
        eprintln!(
            "warning: {relative} has uncommitted changes: they run against commit {} (use --dirty to run the whole working copy)",
            &repo.sha[..repo.sha.len().min(12)]
        );
    }

    let event = match &args.event {
        Some(text) => EventKind::parse(text).unwrap_or(EventKind::Push),
        None => default_event(&pipeline),
    };
    let base_branch = repo.ref_name.clone();
    let facts = EventFacts {
        kind: event,
        git_ref: &repo.git_ref,
        changed_files: &repo.changed_files,
        base_branch: &base_branch,
    };
    if let Err(reason) = trigger::matches(&pipeline.triggers, &facts) {
        eprintln!(
            "the pipeline does not run for this {} event: {reason}",
            event.github_name()
        );
        if args.output == "json" {
            println!(
                "{}",
                serde_json::json!({"status": "skipped", "reason": reason, "jobs": []})
            );
        }
        return exit::SUCCESS;
    }

    let mut problems = Vec::new();
    let mut given_inputs = Vec::new();
    for text in &args.inputs {
        match split_pair(text, "--input") {
            Ok(pair) => given_inputs.push(pair),
            Err(message) => problems.push(message),
        }
    }
    let inputs = match sorat_pipeline::inputs::resolve_inputs(&pipeline, event, &given_inputs) {
        Ok(inputs) => inputs,
        Err(messages) => {
            problems.extend(messages);
            IndexMap::new()
        }
    };
    let mut secrets = IndexMap::new();
    if let Some(secrets_file) = &args.secrets_file {
        match read_secrets_file(secrets_file) {
            Ok(pairs) => secrets.extend(pairs),
            Err(message) => problems.push(message),
        }
    }
    for text in &args.secrets {
        match text.split_once('=') {
            Some((name, value)) if !name.is_empty() => {
                secrets.insert(name.to_string(), value.to_string());
            }
            Some(_) => problems.push(format!("--secret {text}: expected NAME=VALUE or NAME")),
            None => match std::env::var(text) {
                Ok(value) => {
                    secrets.insert(text.clone(), value);
                }
                Err(_) => problems.push(format!(
                    "--secret {text}: no value given and no environment variable {text}"
                )),
            },
        }
    }
    let mut vars = pipeline.vars.clone();
    for text in &args.vars {
        match split_pair(text, "--var") {
            Ok((name, value)) => {
                vars.insert(name, value);
            }
            Err(message) => problems.push(message),
        }
    }
    if !problems.is_empty() {
        return invalid(&problems);
    }

    let data_dir = match &args.data {
        Some(dir) => dir.clone(),
        None => match git::git(
            &repo.root,
            &["rev-parse", "--path-format=absolute", "--git-common-dir"],
        ) {
            Ok(git_dir) => PathBuf::from(git_dir).join("sorat"),
            Err(error) => return invalid(&[error.to_string()]),
        },
    };
    let runs_dir = data_dir.join("runs");
    let parallelism = args.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(2, |n| n.get()),
        usize::from,
    );
    let publisher = std::sync::Arc::new(crate::artifacts::LocalPublisher {
        data: data_dir.clone(),
    });
    let request = RunRequest {
        pipeline: Arc::new(pipeline),
        repo,
        dirty: args.dirty,
        project_dir,
        event,
        inputs,
        secrets,
        vars,
        only_job: args.job.clone(),
        parallelism,
        data_dir,
        keep_workspaces: args.keep_workspaces,
        given: IndexMap::new(),
        identity: None,
        artifacts_dir: None,
        publisher: Some(publisher),
        deployer: None,
    };
    let mode = if args.output == "json" {
        OutputMode::Json
    } else if std::io::stderr().is_terminal() && std::io::stdout().is_terminal() {
        OutputMode::Live
    } else {
        OutputMode::Plain
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return exit::FAILURE;
        }
    };
    // A `kill -9` of this process must not leave steps running.
    crate::reaper::start();
    let result = runtime.block_on(async move {
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let cancel = Cancel::default();
        let ctrl_c = {
            let cancel = cancel.clone();
            let events = events_tx.clone();
            tokio::spawn(async move {
                // Ctrl-C, a terminal closing (SIGHUP) and a service manager's SIGTERM all
                // cancel: steps' process groups are stopped rather than orphaned.
                let mut stops = match stop_signals() {
                    Ok(stops) => stops,
                    Err(_) => return,
                };
                let mut first = true;
                while let Some(name) = stops.recv().await {
                    let _ = events.send(sorat_pipeline::events::RunEvent::Warning {
                        message: if first {
                            format!("{name}: cancelling; steps are being stopped, `always()` steps still run (Ctrl-C again to kill everything)")
                        } else {
                            format!("{name} again: killing everything")
                        },
                    });
                    if first {
                        cancel.soft.cancel();
                        first = false;
                    } else {
                        cancel.hard.cancel();
                    }
                }
            })
        };
        let viewer = tokio::task::spawn_blocking(move || view::watch(events_rx, mode));
        let result = exec::run(request, events_tx, cancel).await;
        ctrl_c.abort();
        let _ = viewer.await;
        result
    });
    let record = match result {
        Ok(record) => record,
        Err(error) => return invalid(&[error.to_string()]),
    };
    view::summary(&record, mode, &runs_dir.join(record.id.to_string()));
    match record.status {
        Status::Success | Status::Skipped => exit::SUCCESS,
        Status::Failure | Status::Cancelled => exit::FAILURE,
    }
}

/// SIGINT, SIGTERM and SIGHUP as one stream of names.
fn stop_signals() -> std::io::Result<tokio::sync::mpsc::UnboundedReceiver<&'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for (kind, name) in [
        (SignalKind::interrupt(), "interrupted"),
        (SignalKind::terminate(), "terminated"),
        (SignalKind::hangup(), "hung up"),
    ] {
        let mut stream = signal(kind)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(name).is_err() {
                    break;
                }
            }
        });
    }
    Ok(rx)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secrets_files_read_like_dotenv() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".secrets");
        std::fs::write(
            &path,
            "# comment\nTOKEN=abc123\nexport QUOTED=\"two\nlines\"\nSINGLE='x y z'\n",
        )
        .unwrap();
        let secrets = read_secrets_file(&path).unwrap();
        assert_eq!(
            secrets,
            vec![
                ("TOKEN".to_string(), "abc123".to_string()),
                ("QUOTED".to_string(), "two\nlines".to_string()),
                ("SINGLE".to_string(), "x y z".to_string()),
            ]
        );
        std::fs::write(&path, "BROKEN\n").unwrap();
        assert!(read_secrets_file(&path).unwrap_err().contains(":1:"));
    }
}
