//! The built-in steps: `checkout`, `cache`, `upload-artifact`, `download-artifact`, `junit`,
//! `publish-artifact`.
//!
//! Each answers under its own name and under the GitHub action it stands in for, with that
//! action's common inputs. File work runs on blocking threads; the step's log tells what was
//! done and how long it took.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::job::{JobRun, StepOutcome};
use super::log::LogWriter;
use super::{PublishFiles, PublishOrigin};
use crate::cas::{Snapshot, relative_slash};
use crate::events::RunEvent;
use crate::git;
use crate::junit;
use crate::record::{Status, StepRecord};
use crate::spec::Builtin;

/// What a built-in step came to.
pub(crate) struct BuiltinOutcome {
    status: Status,
    reason: Option<String>,
    outputs: IndexMap<String, String>,
}

impl BuiltinOutcome {
    fn success(outputs: IndexMap<String, String>) -> BuiltinOutcome {
        BuiltinOutcome {
            status: Status::Success,
            reason: None,
            outputs,
        }
    }

    fn failure(reason: impl Into<String>) -> BuiltinOutcome {
        BuiltinOutcome {
            status: Status::Failure,
            reason: Some(reason.into()),
            outputs: IndexMap::new(),
        }
    }

    pub(crate) fn cancelled() -> BuiltinOutcome {
        BuiltinOutcome {
            status: Status::Cancelled,
            reason: Some("cancelled".into()),
            outputs: IndexMap::new(),
        }
    }

    pub(crate) fn into_step_outcome(self) -> StepOutcome {
        StepOutcome {
            status: self.status,
            exit_code: None,
            reason: self.reason,
            outputs: self.outputs,
            summary: None,
            timed_out: false,
        }
    }
}

/// Work left for the end of the job.
pub(crate) enum PostAction {
    /// Save a cache under `key` from `paths`.
    SaveCache {
        key: String,
        paths: Vec<String>,
        step_index: usize,
    },
}

fn note(log: &Arc<Mutex<LogWriter>>, text: &str) {
    if let Ok(mut log) = log.lock() {
        log.note(text);
    }
}

fn outputs<const N: usize>(pairs: [(&str, String); N]) -> IndexMap<String, String> {
    pairs
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

/// Runs a built-in step.
pub(crate) async fn run(
    run: &mut JobRun<'_>,
    builtin: Builtin,
    written: &str,
    inputs: IndexMap<String, String>,
    log: &Arc<Mutex<LogWriter>>,
    step_index: usize,
) -> BuiltinOutcome {
    for name in builtin.ignored_inputs() {
        if inputs.contains_key(*name) {
            note(
                log,
                &format!(
                    "sorat: input `{name}` of `{written}` has no effect in Sorat and is ignored"
                ),
            );
        }
    }
    let started = Instant::now();
    let outcome = match builtin {
        Builtin::Checkout => checkout(run, &inputs, log).await,
        Builtin::Cache => cache_restore(run, &inputs, log, step_index).await,
        Builtin::UploadArtifact => upload_artifact(run, &inputs, log).await,
        Builtin::DownloadArtifact => download_artifact(run, &inputs, log).await,
        Builtin::Junit => junit_report(run, &inputs, log).await,
        Builtin::PublishArtifact => publish_artifact(run, &inputs, log).await,
        Builtin::Deploy => deploy_artifact(run, &inputs, log).await,
    };
    if outcome.status == Status::Success {
        note(
            log,
            &format!(
                "sorat: `{}` done in {}",
                builtin.name(),
                sorat_config::duration::format_duration(started.elapsed())
            ),
        );
    }
    outcome
}

/// Runs a post action as a step of its own in the record.
pub(crate) async fn run_post(run: &mut JobRun<'_>, action: PostAction) -> StepRecord {
    let PostAction::SaveCache {
        key,
        paths,
        step_index,
    } = action;
    let name = format!("Post cache {key}");
    let started = Instant::now();
    let _ = run.shared.events.send(RunEvent::StepStarted {
        key: run.key.clone(),
        index: run.job.steps.len() + step_index,
        name: name.clone(),
    });
    let log = match run.new_log(&format!("post-{:02}.log.zst", step_index + 1)) {
        Ok(log) => log,
        Err(error) => {
            return StepRecord {
                name,
                id: None,
                status: Status::Failure,
                outcome: Status::Failure,
                exit_code: None,
                reason: Some(format!("cannot create the step's log: {error}")),
                outputs: IndexMap::new(),
                started_at: None,
                duration_ms: 0,
                attempts: 1,
                log: None,
                summary: None,
            };
        }
    };
    let outcome = cache_save(run, key, paths, &log).await;
    let log_record = super::log::close_shared(&log);
    let _ = run.shared.events.send(RunEvent::StepFinished {
        key: run.key.clone(),
        index: run.job.steps.len() + step_index,
        name: name.clone(),
        status: outcome.status,
        reason: outcome.reason.clone(),
        duration: started.elapsed(),
        log_path: log_record.as_ref().map(|log| log.path.clone()),
        tail: log_record
            .as_ref()
            .map(|log| log.tail.clone())
            .unwrap_or_default(),
        lines: log_record.as_ref().map_or(0, |log| log.lines),
    });
    StepRecord {
        name,
        id: None,
        status: outcome.status,
        outcome: outcome.status,
        exit_code: None,
        reason: outcome.reason,
        outputs: outcome.outputs,
        started_at: None,
        duration_ms: started.elapsed().as_millis() as u64,
        attempts: 1,
        log: log_record,
        summary: None,
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| format!("the work thread failed: {error}"))
}

/// Splits a multi-line input (`path: |` with one entry per line) into its entries.
fn lines_of(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------
// checkout

async fn checkout(
    run: &mut JobRun<'_>,
    inputs: &IndexMap<String, String>,
    log: &Arc<Mutex<LogWriter>>,
) -> BuiltinOutcome {
    let request = &run.shared.request;
    let repo_root = request.repo.root.clone();
    let sub_path = inputs.get("path").cloned().unwrap_or_default();
    let dest = if sub_path.trim().is_empty() {
        run.checkout_root.clone()
    } else {
        match crate::cas::join_relative(&run.workspace, sub_path.trim()) {
            Ok(dest) => dest,
            Err(error) => return BuiltinOutcome::failure(format!("`path`: {error}")),
        }
    };
    let requested_ref = inputs.get("ref").filter(|r| !r.trim().is_empty()).cloned();
    let dirty = request.dirty && requested_ref.is_none();
    let commit = match &requested_ref {
        None => request.repo.sha.clone(),
        Some(reference) => match git::resolve_commit(&repo_root, reference) {
            Ok(sha) => sha,
            Err(error) => return BuiltinOutcome::failure(format!("`ref: {reference}`: {error}")),
        },
    };
    note(
        log,
        &format!(
            "sorat: checking out {}{} into {}",
            &commit[..commit.len().min(12)],
            if dirty {
                " with the working copy's changes"
            } else {
                ""
            },
            if sub_path.is_empty() {
                "the workspace"
            } else {
                &sub_path
            }
        ),
    );
    let log_for_thread = Arc::clone(log);
    let commit_for_thread = commit.clone();
    let workspace = run.workspace.clone();
    let result = blocking(move || -> Result<usize, String> {
        // GitHub's checkout cleans its folder first; a fresh workspace is empty anyway.
        if dest.exists() {
            for entry in std::fs::read_dir(&dest).map_err(|e| e.to_string())? {
                let path = entry.map_err(|e| e.to_string())?.path();
                let removed = if path.is_dir() && !path.is_symlink() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.map_err(|e| format!("cannot clean {}: {e}", path.display()))?;
            }
        }
        git::checkout(&repo_root, &commit_for_thread, &dest).map_err(|e| e.to_string())?;
        // The project's folder is the workspace even when the commit lacks it.
        std::fs::create_dir_all(&workspace).map_err(|e| e.to_string())?;
        let mut overlaid = 0;
        if dirty {
            for file in git::dirty_files(&repo_root).map_err(|e| e.to_string())? {
                let source = repo_root.join(&file);
                let target = dest.join(&file);
                if source.symlink_metadata().is_ok() {
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                    }
                    if source.is_symlink() {
                        let link = std::fs::read_link(&source).map_err(|e| e.to_string())?;
                        let _ = std::fs::remove_file(&target);
                        std::os::unix::fs::symlink(link, &target).map_err(|e| e.to_string())?;
                    } else if source.is_file() {
                        std::fs::copy(&source, &target)
                            .map_err(|e| format!("cannot copy {file}: {e}"))?;
                    }
                } else if target.symlink_metadata().is_ok() {
                    std::fs::remove_file(&target).map_err(|e| e.to_string())?;
                }
                overlaid += 1;
            }
            note(
                &log_for_thread,
                &format!(
                    "sorat: {overlaid} changed or untracked files copied from the working copy"
                ),
            );
        }
        Ok(overlaid)
    })
    .await;
    match result {
        Ok(Ok(_)) => BuiltinOutcome::success(outputs([
            ("commit", commit),
            (
                "ref",
                requested_ref.unwrap_or_else(|| request.repo.git_ref.clone()),
            ),
        ])),
        Ok(Err(message)) | Err(message) => BuiltinOutcome::failure(message),
    }
}

// ---------------------------------------------------------------------------------------
// cache

/// A saved cache: its key and, for each `path` entry, the files under it.
#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    key: String,
    created_ms: i64,
    items: Vec<CacheItem>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheItem {
    /// The `path` entry as written (`~/.cargo/registry`, `target`, `**/node_modules`).
    written: String,
    /// Whether the entry was a glob, whose files are stored relative to the workspace.
    glob: bool,
    snapshot: Snapshot,
}

fn cache_dir(run: &JobRun<'_>) -> PathBuf {
    run.shared.request.data_dir.join("cache")
}

fn cache_entry_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{}.json", blake3::hash(key.as_bytes()).to_hex()))
}

fn is_glob(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// Resolves a `path` entry: `~` is the home folder, relative paths are in the workspace.
fn resolve_path(workspace: &Path, written: &str) -> PathBuf {
    if written == "~" {
        return std::env::var_os("HOME").map_or_else(|| workspace.to_path_buf(), PathBuf::from);
    }
    if let Some(rest) = written.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    workspace.join(written)
}

/// Finds the newest entry whose key equals `key`, or else starts with a restore key.
fn find_cache_entry(dir: &Path, key: &str, restore_keys: &[String]) -> Option<(CacheEntry, bool)> {
    let exact = std::fs::read(cache_entry_path(dir, key))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<CacheEntry>(&bytes).ok())
        .filter(|entry| entry.key == key);
    if let Some(entry) = exact {
        return Some((entry, true));
    }
    if restore_keys.is_empty() {
        return None;
    }
    let entries: Vec<CacheEntry> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "json"))
        .filter_map(|entry| std::fs::read(entry.path()).ok())
        .filter_map(|bytes| serde_json::from_slice::<CacheEntry>(&bytes).ok())
        .collect();
    for prefix in restore_keys {
        let best = entries
            .iter()
            .enumerate()
            .filter(|(_, entry)| entry.key.starts_with(prefix.as_str()))
            .max_by_key(|(_, entry)| entry.created_ms)
            .map(|(index, _)| index);
        if let Some(index) = best {
            let mut entries = entries;
            return Some((entries.swap_remove(index), false));
        }
    }
    None
}

async fn cache_restore(
    run: &mut JobRun<'_>,
    inputs: &IndexMap<String, String>,
    log: &Arc<Mutex<LogWriter>>,
    step_index: usize,
) -> BuiltinOutcome {
    let key = inputs.get("key").cloned().unwrap_or_default();
    if key.trim().is_empty() {
        return BuiltinOutcome::failure("`key` is empty");
    }
    if key.contains(',') {
        return BuiltinOutcome::failure("`key` cannot contain commas (as in GitHub's cache)");
    }
    let paths = lines_of(inputs.get("path").map_or("", String::as_str));
    if paths.is_empty() {
        return BuiltinOutcome::failure("`path` lists no path");
    }
    let restore_keys = lines_of(inputs.get("restore-keys").map_or("", String::as_str));
    let lookup_only = inputs.get("lookup-only").is_some_and(|v| v == "true");
    let fail_on_miss = inputs
        .get("fail-on-cache-miss")
        .is_some_and(|v| v == "true");
    let dir = cache_dir(run);
    let store = run.shared.store.clone();
    let workspace = run.workspace.clone();
    let key_for_thread = key.clone();
    let log_for_thread = Arc::clone(log);
    let result = blocking(
        move || -> Result<Option<(String, bool, u64, usize)>, String> {
            let Some((entry, exact)) = find_cache_entry(&dir, &key_for_thread, &restore_keys)
            else {
                return Ok(None);
            };
            let started = Instant::now();
            let mut bytes = 0;
            let mut files = 0;
            if !lookup_only {
                for item in &entry.items {
                    let dest = if item.glob {
                        workspace.clone()
                    } else {
                        resolve_path(&workspace, &item.written)
                    };
                    store
                        .restore_tree(&item.snapshot, &dest)
                        .map_err(|e| format!("restoring {}: {e}", item.written))?;
                    bytes += item.snapshot.total_bytes();
                    files += item.snapshot.files.len();
                }
                let seconds = started.elapsed().as_secs_f64().max(1e-6);
                note(
                    &log_for_thread,
                    &format!(
                        "sorat: restored {files} files ({}) in {} ({}/s)",
                        human_bytes(bytes),
                        sorat_config::duration::format_duration(started.elapsed()),
                        human_bytes((bytes as f64 / seconds) as u64)
                    ),
                );
            }
            Ok(Some((entry.key, exact, bytes, files)))
        },
    )
    .await;
    let found = match result {
        Ok(Ok(found)) => found,
        Ok(Err(message)) | Err(message) => return BuiltinOutcome::failure(message),
    };
    let exact = found.as_ref().is_some_and(|(_, exact, _, _)| *exact);
    if !exact {
        run.post.push(PostAction::SaveCache {
            key: key.clone(),
            paths,
            step_index,
        });
    }
    match found {
        Some((matched, exact, _, _)) => {
            note(
                log,
                &if exact {
                    format!("sorat: cache hit for key `{matched}`")
                } else {
                    format!(
                        "sorat: no cache for `{key}`; restored from `{matched}` by a restore key"
                    )
                },
            );
            BuiltinOutcome::success(outputs([
                ("cache-hit", exact.to_string()),
                ("cache-primary-key", key),
                ("cache-matched-key", matched),
            ]))
        }
        None if fail_on_miss => BuiltinOutcome::failure(format!(
            "no cache for key `{key}` or its restore keys, and `fail-on-cache-miss` is true"
        )),
        None => {
            note(
                log,
                &format!("sorat: cache miss for `{key}`; it is saved when the job succeeds"),
            );
            BuiltinOutcome::success(outputs([
                ("cache-hit", "false".to_string()),
                ("cache-primary-key", key),
                ("cache-matched-key", String::new()),
            ]))
        }
    }
}

async fn cache_save(
    run: &mut JobRun<'_>,
    key: String,
    paths: Vec<String>,
    log: &Arc<Mutex<LogWriter>>,
) -> BuiltinOutcome {
    let dir = cache_dir(run);
    let store = run.shared.store.clone();
    let workspace = run.workspace.clone();
    let log_for_thread = Arc::clone(log);
    let result = blocking(move || -> Result<String, String> {
        let started = Instant::now();
        let mut items = Vec::new();
        for written in &paths {
            if is_glob(written) {
                let files = match_globs(&workspace, std::slice::from_ref(written))?;
                let pending = files
                    .into_iter()
                    .filter_map(|path| {
                        let mode = std::os::unix::fs::PermissionsExt::mode(
                            &std::fs::metadata(&path).ok()?.permissions(),
                        );
                        Some((relative_slash(&workspace, &path), path, mode))
                    })
                    .collect();
                let snapshot = store.store_files(pending).map_err(|e| e.to_string())?;
                items.push(CacheItem {
                    written: written.clone(),
                    glob: true,
                    snapshot,
                });
                continue;
            }
            let path = resolve_path(&workspace, written);
            if path.symlink_metadata().is_err() {
                note(
                    &log_for_thread,
                    &format!("sorat: `{written}` does not exist; not cached"),
                );
                continue;
            }
            let snapshot = store
                .store_tree(&path)
                .map_err(|e| format!("storing {written}: {e}"))?;
            items.push(CacheItem {
                written: written.clone(),
                glob: false,
                snapshot,
            });
        }
        if items.is_empty() {
            return Ok(format!("nothing to cache for `{key}`: no path exists"));
        }
        // The blobs are durable before the entry that points at them exists.
        store
            .sync()
            .map_err(|e| format!("syncing the cache: {e}"))?;
        let bytes: u64 = items.iter().map(|item| item.snapshot.total_bytes()).sum();
        let files: usize = items.iter().map(|item| item.snapshot.files.len()).sum();
        let entry = CacheEntry {
            key: key.clone(),
            created_ms: jiff::Timestamp::now().as_millisecond(),
            items,
        };
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let path = cache_entry_path(&dir, &key);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let json = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, json).map_err(|e| e.to_string())?;
        std::fs::File::open(&tmp)
            .and_then(|file| file.sync_all())
            .map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
        Ok(format!(
            "saved cache `{key}`: {files} files ({}) in {}",
            human_bytes(bytes),
            sorat_config::duration::format_duration(started.elapsed())
        ))
    })
    .await;
    match result {
        Ok(Ok(message)) => {
            note(log, &format!("sorat: {message}"));
            BuiltinOutcome::success(IndexMap::new())
        }
        Ok(Err(message)) | Err(message) => BuiltinOutcome::failure(message),
    }
}

/// `1.5 MiB` and the like.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

// ---------------------------------------------------------------------------------------
// artifacts

/// An artifact of a run: a named tree in the content store.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ArtifactManifest {
    /// The artifact's name.
    pub name: String,
    /// The job instance that uploaded it.
    pub job: String,
    /// Its files.
    pub snapshot: Snapshot,
}

fn artifacts_dir(run: &JobRun<'_>) -> PathBuf {
    match &run.shared.request.artifacts_dir {
        Some(dir) => dir.clone(),
        None => run.shared.run_dir.join("artifacts"),
    }
}

fn valid_artifact_name(name: &str) -> Result<(), String> {
    const FORBIDDEN: [char; 10] = ['"', ':', '<', '>', '|', '*', '?', '\r', '\n', '\\'];
    if name.trim().is_empty() {
        return Err("the artifact name is empty".into());
    }
    if let Some(c) = name.chars().find(|c| FORBIDDEN.contains(c) || *c == '/') {
        return Err(format!(
            "the artifact name `{name}` contains `{c}`, which names cannot hold"
        ));
    }
    Ok(())
}

/// Files matched by `patterns` (globs or literal paths, relative to `workspace`; `!pattern`
/// excludes), sorted.
fn match_globs(workspace: &Path, patterns: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut include = globset::GlobSetBuilder::new();
    let mut exclude = globset::GlobSetBuilder::new();
    let mut literal = Vec::new();
    let mut any_include_glob = false;
    for pattern in patterns {
        let (negated, text) = match pattern.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, pattern.as_str()),
        };
        let text = text.strip_prefix("./").unwrap_or(text);
        if !negated && !is_glob(text) {
            literal.push(resolve_path(workspace, text));
            continue;
        }
        let relative = if Path::new(text).is_absolute() {
            Path::new(text)
                .strip_prefix(workspace)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| text.to_string())
        } else {
            text.to_string()
        };
        let glob = globset::GlobBuilder::new(&relative)
            .literal_separator(true)
            .build()
            .map_err(|error| format!("invalid pattern `{pattern}`: {}", error.kind()))?;
        if negated {
            exclude.add(glob.clone());
            // `!dir` also excludes what is under it.
            if let Ok(under) = globset::GlobBuilder::new(&format!("{relative}/**"))
                .literal_separator(true)
                .build()
            {
                exclude.add(under);
            }
        } else {
            include.add(glob);
            any_include_glob = true;
        }
    }
    let include = include.build().map_err(|e| e.to_string())?;
    let exclude = exclude.build().map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    let excluded = |path: &Path| {
        let relative = relative_slash(workspace, path);
        exclude.is_match(&relative)
    };
    for path in literal {
        if path.is_dir() {
            for entry in walkdir::WalkDir::new(&path).sort_by_file_name() {
                let entry = entry.map_err(|e| e.to_string())?;
                if entry.file_type().is_file() && !excluded(entry.path()) {
                    files.push(entry.path().to_path_buf());
                }
            }
        } else if path.is_file() && !excluded(&path) {
            files.push(path);
        }
    }
    if any_include_glob {
        let walker = walkdir::WalkDir::new(workspace)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|entry| entry.file_name() != ".git");
        for entry in walker {
            let entry = entry.map_err(|e| e.to_string())?;
            if !entry.file_type().is_file() {
                continue;
            }
            let relative = relative_slash(workspace, entry.path());
            if include.is_match(&relative) && !exclude.is_match(&relative) {
                files.push(entry.path().to_path_buf());
            }
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// The folder that artifact paths are stored relative to: the least common ancestor of the
/// search paths (a literal path, or the part of a glob before its first wildcard), as in
/// GitHub's `upload-artifact`.
fn artifact_root(workspace: &Path, patterns: &[String]) -> PathBuf {
    let mut roots: Vec<PathBuf> = Vec::new();
    for pattern in patterns.iter().filter(|p| !p.starts_with('!')) {
        let text = pattern.strip_prefix("./").unwrap_or(pattern);
        let root = if is_glob(text) {
            let prefix: Vec<&str> = text.split('/').take_while(|part| !is_glob(part)).collect();
            resolve_path(workspace, &prefix.join("/"))
        } else {
            let path = resolve_path(workspace, text);
            if path.is_dir() {
                path
            } else {
                path.parent().map_or(path.clone(), Path::to_path_buf)
            }
        };
        roots.push(root);
    }
    let Some(first) = roots.first().cloned() else {
        return workspace.to_path_buf();
    };
    roots.iter().skip(1).fold(first, |common, path| {
        let mut common = common;
        while !path.starts_with(&common) {
            if !common.pop() {
                break;
            }
        }
        common
    })
}

async fn upload_artifact(
    run: &mut JobRun<'_>,
    inputs: &IndexMap<String, String>,
    log: &Arc<Mutex<LogWriter>>,
) -> BuiltinOutcome {
    let name = inputs
        .get("name")
        .filter(|name| !name.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| "artifact".to_string());
    if let Err(message) = valid_artifact_name(&name) {
        return BuiltinOutcome::failure(message);
    }
    let patterns = lines_of(inputs.get("path").map_or("", String::as_str));
    if patterns.is_empty() {
        return BuiltinOutcome::failure("`path` lists no path");
    }
    let if_no_files = inputs
        .get("if-no-files-found")
        .map_or("warn", String::as_str)
        .to_string();
    if !["warn", "error", "ignore"].contains(&if_no_files.as_str()) {
        return BuiltinOutcome::failure(format!(
            "`if-no-files-found: {if_no_files}` must be warn, error or ignore"
        ));
    }
    let overwrite = inputs.get("overwrite").is_some_and(|v| v == "true");
    let dir = artifacts_dir(run);
    let manifest_path = dir.join(format!("{name}.json"));
    let store = run.shared.store.clone();
    let workspace = run.workspace.clone();
    let job = run.key.0.clone();
    let name_for_thread = name.clone();
    let result = blocking(move || -> Result<Option<(usize, u64)>, String> {
        let files = match_globs(&workspace, &patterns)?;
        if files.is_empty() {
            return Ok(None);
        }
        if manifest_path.exists() && !overwrite {
            return Err(format!(
                "an artifact named `{name_for_thread}` already exists in this run; use another name or `overwrite: true`"
            ));
        }
        let root = artifact_root(&workspace, &patterns);
        let pending = files
            .into_iter()
            .filter_map(|path| {
                let mode = std::os::unix::fs::PermissionsExt::mode(
                    &std::fs::metadata(&path).ok()?.permissions(),
                );
                Some((relative_slash(&root, &path), path, mode))
            })
            .collect();
        let snapshot = store.store_files(pending).map_err(|e| e.to_string())?;
        store.sync().map_err(|e| format!("syncing the artifact: {e}"))?;
        let count = snapshot.files.len();
        let bytes = snapshot.total_bytes();
        let manifest = ArtifactManifest {
            name: name_for_thread,
            job,
            snapshot,
        };
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let tmp = manifest_path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &manifest_path).map_err(|e| e.to_string())?;
        Ok(Some((count, bytes)))
    })
    .await;
    match result {
        Ok(Ok(Some((count, bytes)))) => {
            note(
                log,
                &format!(
                    "sorat: uploaded artifact `{name}`: {count} files ({})",
                    human_bytes(bytes)
                ),
            );
            BuiltinOutcome::success(outputs([("artifact-id", name)]))
        }
        Ok(Ok(None)) => {
            let message = format!("no files matched the `path` of artifact `{name}`");
            match if_no_files.as_str() {
                "error" => BuiltinOutcome::failure(message),
                "warn" => {
                    note(log, &format!("warning: {message}"));
                    BuiltinOutcome::success(IndexMap::new())
                }
                _ => BuiltinOutcome::success(IndexMap::new()),
            }
        }
        Ok(Err(message)) | Err(message) => BuiltinOutcome::failure(message),
    }
}

async fn download_artifact(
    run: &mut JobRun<'_>,
    inputs: &IndexMap<String, String>,
    log: &Arc<Mutex<LogWriter>>,
) -> BuiltinOutcome {
    let name = inputs.get("name").filter(|n| !n.trim().is_empty()).cloned();
    let pattern = inputs
        .get("pattern")
        .filter(|p| !p.trim().is_empty())
        .cloned();
    let merge = inputs.get("merge-multiple").is_some_and(|v| v == "true");
    let dest_input = inputs.get("path").cloned().unwrap_or_default();
    let dest = if dest_input.trim().is_empty() {
        run.workspace.clone()
    } else {
        resolve_path(&run.workspace, dest_input.trim())
    };
    let dir = artifacts_dir(run);
    let store = run.shared.store.clone();
    let result = blocking(move || -> Result<Vec<(String, usize)>, String> {
        let mut available: Vec<String> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok())
                    .filter_map(|entry| {
                        entry
                            .file_name()
                            .to_str()?
                            .strip_suffix(".json")
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        available.sort();
        let chosen: Vec<String> = match (&name, &pattern) {
            (Some(name), _) => {
                if !available.contains(name) {
                    let known = if available.is_empty() {
                        "this run has no artifacts yet".to_string()
                    } else {
                        format!("this run has {}", available.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", "))
                    };
                    return Err(format!(
                        "artifact `{name}` not found: {known}. A job can download only what jobs it `needs` uploaded"
                    ));
                }
                vec![name.clone()]
            }
            (None, Some(pattern)) => {
                let matcher = globset::Glob::new(pattern)
                    .map_err(|e| format!("invalid `pattern`: {}", e.kind()))?
                    .compile_matcher();
                available.into_iter().filter(|a| matcher.is_match(a)).collect()
            }
            (None, None) => available,
        };
        let single = name.is_some();
        let mut restored = Vec::new();
        for artifact in chosen {
            let bytes = std::fs::read(dir.join(format!("{artifact}.json"))).map_err(|e| e.to_string())?;
            let manifest: ArtifactManifest = serde_json::from_slice(&bytes)
                .map_err(|e| format!("artifact `{artifact}`'s manifest is damaged: {e}"))?;
            let target = if single || merge {
                dest.clone()
            } else {
                dest.join(&artifact)
            };
            store
                .restore_tree(&manifest.snapshot, &target)
                .map_err(|e| format!("restoring artifact `{artifact}`: {e}"))?;
            restored.push((artifact, manifest.snapshot.files.len()));
        }
        Ok(restored)
    })
    .await;
    match result {
        Ok(Ok(restored)) => {
            for (artifact, count) in &restored {
                note(
                    log,
                    &format!("sorat: downloaded artifact `{artifact}`: {count} files"),
                );
            }
            let download_path = if dest_input.trim().is_empty() {
                run.workspace.display().to_string()
            } else {
                resolve_path(&run.workspace, dest_input.trim())
                    .display()
                    .to_string()
            };
            BuiltinOutcome::success(outputs([("download-path", download_path)]))
        }
        Ok(Err(message)) | Err(message) => BuiltinOutcome::failure(message),
    }
}

// ---------------------------------------------------------------------------------------
// junit

async fn junit_report(
    run: &mut JobRun<'_>,
    inputs: &IndexMap<String, String>,
    log: &Arc<Mutex<LogWriter>>,
) -> BuiltinOutcome {
    let patterns = lines_of(inputs.get("path").map_or("", String::as_str));
    let fail_on_failure = inputs.get("fail-on-failure").is_none_or(|v| v != "false");
    let if_no_files = inputs
        .get("if-no-files-found")
        .map_or("warn", String::as_str)
        .to_string();
    let workspace = run.workspace.clone();
    let result = blocking(move || -> Result<(usize, junit::TestReport), String> {
        let files = match_globs(&workspace, &patterns)?;
        let mut report = junit::TestReport::default();
        for file in &files {
            let one = junit::read_file(file).map_err(|error| error.to_string())?;
            report.merge(&one);
        }
        Ok((files.len(), report))
    })
    .await;
    let (count, report) = match result {
        Ok(Ok(found)) => found,
        Ok(Err(message)) | Err(message) => return BuiltinOutcome::failure(message),
    };
    if count == 0 {
        let message = "no JUnit report matched `path`".to_string();
        return match if_no_files.as_str() {
            "error" => BuiltinOutcome::failure(message),
            "ignore" => BuiltinOutcome::success(IndexMap::new()),
            _ => {
                note(log, &format!("warning: {message}"));
                BuiltinOutcome::success(IndexMap::new())
            }
        };
    }
    note(
        log,
        &format!(
            "sorat: {count} report(s): {} tests, {} passed, {} failed, {} skipped",
            report.total, report.passed, report.failed, report.skipped
        ),
    );
    for failure in report.failures.iter().take(20) {
        note(
            log,
            &format!(
                "  FAILED {}{}{}: {}",
                failure.classname,
                if failure.classname.is_empty() {
                    ""
                } else {
                    "::"
                },
                failure.name,
                failure.message
            ),
        );
    }
    run.tests.merge(&report);
    let counts = outputs([
        ("total", report.total.to_string()),
        ("passed", report.passed.to_string()),
        ("failed", report.failed.to_string()),
        ("skipped", report.skipped.to_string()),
    ]);
    if report.has_failures() && fail_on_failure {
        let mut outcome = BuiltinOutcome::failure(format!(
            "{} of {} tests failed",
            report.failed, report.total
        ));
        outcome.outputs = counts;
        return outcome;
    }
    BuiltinOutcome::success(counts)
}

// ---------------------------------------------------------------------------------------
// hashFiles

/// `hashFiles(patterns)`: a BLAKE3 hash over the matched files' hashes in path order, or `''`
/// when nothing matches. The value differs from GitHub's SHA-256 one, which is never compared
/// across systems; what matters holds: the same files give the same hash.
pub(crate) fn hash_files(workspace: &Path, patterns: &[String]) -> Result<String, String> {
    let files = match_globs(workspace, patterns)?;
    if files.is_empty() {
        return Ok(String::new());
    }
    let mut hasher = blake3::Hasher::new();
    for file in files {
        let (hash, _) = crate::cas::hash_file(&file)
            .map_err(|error| format!("hashFiles: cannot read {}: {error}", file.display()))?;
        hasher.update(hash.as_bytes());
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// `publish-artifact`: the matched files become `name@version` in the artifact repository
/// (default version: the first 12 characters of the commit).
async fn publish_artifact(
    run: &mut JobRun<'_>,
    inputs: &IndexMap<String, String>,
    log: &Arc<Mutex<LogWriter>>,
) -> BuiltinOutcome {
    let Some(publisher) = run.shared.request.publisher.clone() else {
        return BuiltinOutcome::failure(
            "this run has no artifact repository to publish to (runs on a Sorat server and `sorat run` have one)",
        );
    };
    let name = inputs
        .get("name")
        .map_or("", |name| name.trim())
        .to_string();
    if name.is_empty() {
        return BuiltinOutcome::failure("`name` is empty");
    }
    let patterns = lines_of(inputs.get("path").map_or("", String::as_str));
    if patterns.is_empty() {
        return BuiltinOutcome::failure("`path` lists no path");
    }
    let commit = run.shared.request.repo.sha.clone();
    let version = inputs
        .get("version")
        .map(|version| version.trim().to_string())
        .filter(|version| !version.is_empty())
        .unwrap_or_else(|| commit.chars().take(12).collect());
    let moving = inputs.get("moving").is_some_and(|value| value == "true");
    let workspace = run.workspace.clone();
    let found = blocking(move || -> Result<Vec<(String, PathBuf, u32)>, String> {
        let files = match_globs(&workspace, &patterns)?;
        let root = artifact_root(&workspace, &patterns);
        Ok(files
            .into_iter()
            .filter_map(|path| {
                let mode = std::os::unix::fs::PermissionsExt::mode(
                    &std::fs::metadata(&path).ok()?.permissions(),
                );
                Some((relative_slash(&root, &path), path, mode))
            })
            .collect())
    })
    .await;
    let files = match found {
        Ok(Ok(files)) => files,
        Ok(Err(message)) | Err(message) => return BuiltinOutcome::failure(message),
    };
    if files.is_empty() {
        return BuiltinOutcome::failure(format!(
            "no files matched the `path` of artifact `{name}`"
        ));
    }
    let identity = run.shared.request.identity.clone().unwrap_or_default();
    let origin = PublishOrigin {
        project: run.shared.request.repo.name.clone(),
        commit,
        git_ref: run.shared.request.repo.git_ref.clone(),
        run: if identity.run_id > 0 {
            identity.run_id
        } else {
            run.shared.run_id
        },
        job: run.key.0.clone(),
    };
    let attachments = match attachments_of(
        &run.workspace,
        inputs.get("attachments").map_or("", String::as_str),
    ) {
        Ok(attachments) => attachments,
        Err(message) => return BuiltinOutcome::failure(message),
    };
    let count = files.len();
    let attached = attachments.len();
    let request = PublishFiles {
        name: name.clone(),
        version: version.clone(),
        moving,
        files,
        attachments,
        origin,
    };
    match publisher.publish(request).await {
        Ok(published) => {
            note(
                log,
                &format!(
                    "sorat: published `{name}@{version}`: {count} files ({}){}, {}{}",
                    human_bytes(published.size),
                    if attached > 0 {
                        format!(" and {attached} attachment(s)")
                    } else {
                        String::new()
                    },
                    published.digest,
                    if published.created {
                        ""
                    } else {
                        " (already published with the same content)"
                    }
                ),
            );
            BuiltinOutcome::success(outputs([
                ("name", name),
                ("version", version),
                ("digest", published.digest),
            ]))
        }
        Err(message) => {
            BuiltinOutcome::failure(format!("publishing `{name}@{version}`: {message}"))
        }
    }
}

/// The `attachments` input of `publish-artifact`: one `KIND: PATH` per line (`sbom:
/// dist/sbom.cdx.json`, `junit: report.xml`), each an existing file of the workspace; the
/// media type follows from the file's name.
fn attachments_of(workspace: &Path, text: &str) -> Result<Vec<(String, PathBuf, String)>, String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let Some((kind, path)) = line.split_once(':') else {
            return Err(format!(
                "`attachments`: `{line}` is not `KIND: PATH` (e.g. `sbom: dist/sbom.cdx.json`)"
            ));
        };
        let (kind, path) = (kind.trim(), path.trim());
        if kind.is_empty()
            || !kind
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "`attachments`: the kind `{kind}` must be letters, digits, `-`, `_` or `.`"
            ));
        }
        let relative = Path::new(path);
        if path.is_empty()
            || !relative.components().all(|part| {
                matches!(
                    part,
                    std::path::Component::Normal(_) | std::path::Component::CurDir
                )
            })
        {
            return Err(format!(
                "`attachments`: `{path}` must be a path inside the workspace"
            ));
        }
        let disk = workspace.join(relative);
        if !disk.is_file() {
            return Err(format!(
                "`attachments`: {kind}: no file `{path}` in the workspace"
            ));
        }
        let lower = path.to_ascii_lowercase();
        let media_type = if lower.ends_with(".cdx.json") {
            "application/vnd.cyclonedx+json"
        } else if lower.ends_with(".spdx.json") {
            "application/spdx+json"
        } else if lower.ends_with(".sarif") || lower.ends_with(".sarif.json") {
            "application/sarif+json"
        } else if lower.ends_with(".json") {
            "application/json"
        } else if lower.ends_with(".xml") {
            "application/xml"
        } else if lower.ends_with(".txt") || lower.ends_with(".md") {
            "text/plain"
        } else {
            "application/octet-stream"
        };
        out.push((kind.to_owned(), disk, media_type.to_owned()));
    }
    Ok(out)
}

/// `deploy`: the artifact to an environment, through the server (the job's `environment`
/// when the step names none).
async fn deploy_artifact(
    run: &mut JobRun<'_>,
    inputs: &IndexMap<String, String>,
    log: &Arc<Mutex<LogWriter>>,
) -> BuiltinOutcome {
    let Some(deployer) = run.shared.request.deployer.clone() else {
        return BuiltinOutcome::failure(
            "`deploy` runs on a Sorat server's agents (environments live there), not under `sorat run`",
        );
    };
    let artifact = inputs.get("artifact").map_or("", |a| a.trim()).to_string();
    if !artifact.contains('@') {
        return BuiltinOutcome::failure(format!(
            "`artifact` must be NAME@VERSION, found `{artifact}`"
        ));
    }
    let environment = match inputs.get("environment").map(|e| e.trim().to_string()) {
        Some(environment) if !environment.is_empty() => environment,
        _ => match run
            .job
            .environment
            .as_ref()
            .and_then(|environment| environment.name.value.literal_text())
        {
            Some(name) => name.to_string(),
            None => {
                return BuiltinOutcome::failure(
                    "no environment: set the job's `environment:` or the step's `environment` input",
                );
            }
        },
    };
    match deployer.deploy(environment.clone(), artifact.clone()).await {
        Ok(summary) => {
            note(
                log,
                &format!("sorat: deployed `{artifact}` to `{environment}`: {summary}"),
            );
            BuiltinOutcome::success(outputs([
                ("environment", environment),
                ("artifact", artifact),
            ]))
        }
        Err(message) => BuiltinOutcome::failure(format!(
            "deploying `{artifact}` to `{environment}`: {message}"
        )),
    }
}
