//! The triggers that come from the server's own clock: polling each project's repository
//! for moved branches and tags (`projects[].poll`), and `on.schedule` cron entries read in
//! `server.time_zone`. What each has seen is kept in the store (`meta`), so a restart
//! neither misses nor repeats a push.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sorat_config::SourceFile;
use sorat_config::platform::ProjectConfig;
use sorat_pipeline::trigger::EventKind;
use sorat_trigger::poll;
use sorat_trigger::schedule::Schedule;

use crate::AppState;
use crate::dispatch::{self, Started, TriggerRequest};

/// Runs every project's poller and scheduler until the server stops.
pub async fn run(state: Arc<AppState>) {
    let mut tasks = tokio::task::JoinSet::new();
    for project in state.projects.values() {
        if let Some(interval) = project.poll {
            let state = Arc::clone(&state);
            let project = project.clone();
            tasks.spawn(async move {
                loop {
                    if let Err(error) = poll_once(&state, &project).await {
                        tracing::warn!(project = %project.name, %error, "polling");
                    }
                    tokio::time::sleep(interval).await;
                }
            });
        }
        let state = Arc::clone(&state);
        let project = project.clone();
        tasks.spawn(async move {
            loop {
                // Every 20 s while the pipeline has schedules; a pipeline without them is
                // looked at again every 5 minutes (it may gain one), not fetched each time.
                let pause = match schedule_once(&state, &project).await {
                    Ok(true) => Duration::from_secs(20),
                    Ok(false) => Duration::from_secs(300),
                    Err(error) => {
                        tracing::warn!(project = %project.name, %error, "schedules");
                        Duration::from_secs(60)
                    }
                };
                tokio::time::sleep(pause).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// One look at the repository: a run for every branch or tag that moved. The first look
/// records what is there and, for a project that never ran, runs its default branch once.
pub async fn poll_once(state: &Arc<AppState>, project: &ProjectConfig) -> Result<(), String> {
    if state.shutting_down.is_cancelled() {
        return Ok(());
    }
    let key = format!("poll:{}", project.name);
    let heads = poll::remote_heads(&project.repo)
        .await
        .map_err(|error| error.to_string())?;
    let previous: Option<HashMap<String, String>> = state
        .store
        .meta(&key)
        .await
        .map_err(|error| error.to_string())?
        .and_then(|text| serde_json::from_str(&text).ok());
    let changes = match &previous {
        Some(previous) => poll::changes(previous, &heads),
        None => {
            let branch = format!("refs/heads/{}", project.branch);
            let never_ran = state
                .store
                .runs(&sorat_state::RunFilter {
                    project: Some(project.name.clone()),
                    status: None,
                    git_ref: None,
                    before: None,
                    limit: 1,
                })
                .await
                .map_err(|error| error.to_string())?
                .is_empty();
            heads
                .iter()
                .filter(|(git_ref, _)| never_ran && *git_ref == branch)
                .map(|(git_ref, sha)| poll::RefChange {
                    git_ref: git_ref.clone(),
                    before: None,
                    after: sha.clone(),
                })
                .collect()
        }
    };
    for change in changes {
        let mirror = state.mirrors.fetch(&project.repo, &change.after).await?;
        let changed_files =
            crate::repo::changed_files(&mirror, change.before.as_deref(), &change.after).await;
        let title = crate::repo::subject(&mirror, &change.after).await;
        let request = TriggerRequest {
            event: EventKind::Push,
            git_ref: change.git_ref.clone(),
            sha: Some(change.after.clone()),
            before: change.before.clone(),
            actor: "poll".into(),
            title,
            changed_files,
            base_branch: String::new(),
            webhook: None,
            inputs: Vec::new(),
            rerun: false,
            details: json!({ "source": "poll" }),
        };
        match dispatch::start_run(state, project, request).await {
            Ok(Started::Run(run)) => {
                tracing::info!(project = %project.name, git_ref = %change.git_ref, run = run.id, "poll: run started");
            }
            Ok(Started::Skipped(reason)) => {
                tracing::info!(project = %project.name, git_ref = %change.git_ref, %reason, "poll: no run");
            }
            Err(error) => return Err(error.message),
        }
    }
    let current: HashMap<String, String> = heads.into_iter().collect();
    let text = serde_json::to_string(&current).map_err(|error| error.to_string())?;
    state
        .store
        .set_meta(&key, &text)
        .await
        .map_err(|error| error.to_string())
}

/// Fires the cron entries of the pipeline on the project's branch that came due since the
/// last look (at most one run per entry per look, as a missed hour is not run twice).
/// Whether the pipeline has schedules.
pub async fn schedule_once(state: &Arc<AppState>, project: &ProjectConfig) -> Result<bool, String> {
    if state.shutting_down.is_cancelled() {
        return Ok(false);
    }
    let key = format!("schedule:{}", project.name);
    let now = jiff::Timestamp::now();
    let last = state
        .store
        .meta(&key)
        .await
        .map_err(|error| error.to_string())?
        .and_then(|text| text.parse::<jiff::Timestamp>().ok());
    let Some(last) = last else {
        // First look: schedules count from now.
        state
            .store
            .set_meta(&key, &now.to_string())
            .await
            .map_err(|error| error.to_string())?;
        return Ok(true);
    };
    let git_ref = format!("refs/heads/{}", project.branch);
    let sha = state.mirrors.resolve(&project.repo, &git_ref).await?;
    let mirror = state.mirrors.fetch(&project.repo, &sha).await?;
    let path = if project.dir.is_empty() {
        project.pipeline.clone()
    } else {
        format!("{}/{}", project.dir, project.pipeline)
    };
    let text = crate::repo::show_file(&mirror, &sha, &path).await?;
    let (pipeline, _) = sorat_pipeline::load::load(&SourceFile::new(&path, text));
    let mut due = Vec::new();
    let has_schedules = pipeline
        .as_ref()
        .is_some_and(|pipeline| !pipeline.triggers.schedule.is_empty());
    if let Some(pipeline) = pipeline {
        for entry in &pipeline.triggers.schedule {
            let schedule = Schedule::new(
                &entry.value.expression,
                Some(&state.config.server.time_zone),
            )
            .map_err(|error| error.to_string())?;
            if !schedule.fires_between(last, now, 1).is_empty() {
                due.push(entry.value.expression.clone());
            }
        }
    }
    state
        .store
        .set_meta(&key, &now.to_string())
        .await
        .map_err(|error| error.to_string())?;
    for expression in due {
        let request = TriggerRequest {
            event: EventKind::Schedule,
            git_ref: git_ref.clone(),
            sha: Some(sha.clone()),
            before: None,
            actor: "schedule".into(),
            title: format!("scheduled: {expression}"),
            changed_files: Vec::new(),
            base_branch: String::new(),
            webhook: None,
            inputs: Vec::new(),
            rerun: false,
            details: json!({ "source": "schedule", "cron": expression }),
        };
        dispatch::start_run(state, project, request)
            .await
            .map_err(|error| error.message)?;
    }
    Ok(has_schedules)
}
