//! From a trigger to finished runs: reading the pipeline at the commit, deciding whether
//! `on:` lets it run, creating the run and its jobs, handing jobs to agents when their
//! `needs` have ended, taking back leases of agents that vanished, failing jobs no agent can
//! take, and concluding runs.
//!
//! The state store is the truth: every decision here is a compare-and-set on it, so two
//! servers (or a restarted one) never hand the same job out twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::{Value, json};
use sorat_config::SourceFile;
use sorat_config::platform::ProjectConfig;
use sorat_pipeline::spec::Pipeline;
use sorat_pipeline::trigger::{self, EventFacts, EventKind};
use sorat_state::{Job, JobStatus, NewJob, NewRun, Run, RunStatus};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// What asks for a run.
#[derive(Clone, Debug)]
pub struct TriggerRequest {
    /// The event.
    pub event: EventKind,
    /// The full ref (`refs/heads/main`); for a manual run without one, the project's branch.
    pub git_ref: String,
    /// The commit, when the trigger knows it (webhooks do; manual runs resolve the ref).
    pub sha: Option<String>,
    /// The commit before (pushes).
    pub before: Option<String>,
    /// Who.
    pub actor: String,
    /// A title for lists (the commit message's first line, the PR title).
    pub title: String,
    /// Files the change touched, for `paths` filters.
    pub changed_files: Vec<String>,
    /// For pull requests: the base branch.
    pub base_branch: String,
    /// The forge's event, when a webhook asked: its own filter (pull request types,
    /// deletions) applies besides `on:`'s.
    pub webhook: Option<Box<sorat_trigger::webhook::TriggerEvent>>,
    /// Manual inputs as given (`name` → text).
    pub inputs: Vec<(String, String)>,
    /// A re-run: the run passed `on:` the first time, so the filters are not asked again.
    pub rerun: bool,
    /// What the trigger was, for the record (forge, delivery, PR number...).
    pub details: Value,
}

/// The outcome of a trigger.
#[derive(Debug)]
pub enum Started {
    /// A run was created.
    Run(Box<Run>),
    /// The pipeline's `on:` does not start a run for this event, and why.
    Skipped(String),
}

/// Creates a run for `project` if its pipeline at the commit says so.
pub async fn start_run(
    state: &Arc<AppState>,
    project: &ProjectConfig,
    request: TriggerRequest,
) -> ApiResult<Started> {
    let sha = match &request.sha {
        Some(sha) => {
            state
                .mirrors
                .fetch(&project.repo, sha)
                .await
                .map_err(|error| ApiError::conflict("repository", error))?;
            sha.clone()
        }
        None => state
            .mirrors
            .resolve(&project.repo, &request.git_ref)
            .await
            .map_err(|error| ApiError::field("ref", error))?,
    };
    let pipeline_path = if project.dir.is_empty() {
        project.pipeline.clone()
    } else {
        format!("{}/{}", project.dir, project.pipeline)
    };
    let mirror = state
        .mirrors
        .fetch(&project.repo, &sha)
        .await
        .map_err(|error| ApiError::conflict("repository", error))?;
    let text = crate::repo::show_file(&mirror, &sha, &pipeline_path).await;
    let mut new_run = NewRun {
        project: project.name.clone(),
        event: request.event.github_name().to_string(),
        git_ref: request.git_ref.clone(),
        sha: sha.clone(),
        before: request.before.clone(),
        title: request.title.clone(),
        actor: request.actor.clone(),
        trigger: request.details.clone(),
        inputs: json!({}),
        pipeline: String::new(),
        concurrency: None,
    };
    let now = crate::now();
    let text = match text {
        Ok(text) => text,
        Err(error) => {
            return failed_run(state, new_run, format!("{pipeline_path} at {sha}: {error}")).await;
        }
    };
    new_run.pipeline = text.clone();
    let file = SourceFile::new(&pipeline_path, text);
    let (pipeline, diagnostics) = sorat_pipeline::load::load(&file);
    let Some(pipeline) = pipeline else {
        let messages: Vec<String> = diagnostics
            .into_sorted()
            .iter()
            .map(ToString::to_string)
            .collect();
        return failed_run(
            state,
            new_run,
            format!("the pipeline is invalid:\n{}", messages.join("\n")),
        )
        .await;
    };
    // A manual run is someone asking for this commit to run: `on:`'s filters are for
    // events (as with GitLab's "Run pipeline", a pipeline without `on: manual` runs too).
    if request.event != EventKind::Manual && !request.rerun {
        let facts = EventFacts {
            kind: request.event,
            git_ref: &request.git_ref,
            changed_files: &request.changed_files,
            base_branch: &request.base_branch,
        };
        let verdict = match &request.webhook {
            Some(event) => event.passes(&pipeline.triggers),
            None => trigger::matches(&pipeline.triggers, &facts),
        };
        if let Err(reason) = verdict {
            return Ok(Started::Skipped(reason));
        }
    }
    if request.event == EventKind::Manual {
        let inputs =
            sorat_pipeline::inputs::resolve_inputs(&pipeline, EventKind::Manual, &request.inputs)
                .map_err(|problems| ApiError::field("inputs", problems.join("; ")))?;
        new_run.inputs = Value::Object(
            inputs
                .iter()
                .map(|(name, value)| (name.clone(), expr_to_json(value)))
                .collect(),
        );
    }
    let cancel_in_progress;
    (new_run.concurrency, cancel_in_progress) = match &pipeline.concurrency {
        Some(concurrency) => (
            Some(
                concurrency
                    .group
                    .value
                    .literal_text()
                    .map(str::to_string)
                    .unwrap_or_else(|| pipeline.file.slice(concurrency.group.span).to_string()),
            ),
            concurrency.cancel_in_progress,
        ),
        None => (None, false),
    };
    let jobs = plan_jobs(&pipeline, state.config.server.lost_agent_retries);
    if cancel_in_progress && let Some(group) = &new_run.concurrency {
        for run in state.store.active_runs().await? {
            if run.project == project.name && run.concurrency.as_deref() == Some(group) {
                cancel_run(
                    state,
                    run.id,
                    &format!("a newer run of concurrency group `{group}` cancelled it"),
                )
                .await?;
            }
        }
    }
    let (run, _) = state.store.create_run(&new_run, &jobs, now).await?;
    state.metrics.runs_created.inc();
    advance_run(state, run.id).await?;
    state.wake_claims();
    crate::status::report(state, &run);
    Ok(Started::Run(Box::new(run)))
}

/// A run that could not start (its pipeline is missing or invalid): recorded as failed,
/// with the reason, so the user sees it where runs are.
async fn failed_run(state: &Arc<AppState>, run: NewRun, reason: String) -> ApiResult<Started> {
    let now = crate::now();
    let (run, _) = state.store.create_run(&run, &[], now).await?;
    state
        .store
        .transition_run(
            run.id,
            &[RunStatus::Queued],
            RunStatus::Failure,
            Some(&reason),
            now,
        )
        .await?;
    let run = state.store.run(run.id).await?.unwrap_or(run);
    crate::status::report(state, &run);
    Ok(Started::Run(Box::new(run)))
}

/// The jobs of a run, as the store keeps them.
fn plan_jobs(pipeline: &Pipeline, lost_agent_retries: u32) -> Vec<NewJob> {
    pipeline
        .jobs
        .values()
        .map(|job| NewJob {
            key: job.id.clone(),
            name: job
                .name
                .as_ref()
                .and_then(|name| name.value.literal_text().map(str::to_string))
                .unwrap_or_else(|| job.id.clone()),
            needs: job.needs.iter().map(|need| need.value.clone()).collect(),
            // Labels written as expressions (of the matrix) are not known before the job
            // runs: such a job goes to any agent.
            runs_on: job
                .runs_on
                .iter()
                .filter_map(|label| label.value.literal_text().map(str::to_string))
                .collect(),
            concurrency: job.concurrency.as_ref().map(|concurrency| {
                concurrency
                    .group
                    .value
                    .literal_text()
                    .map(str::to_string)
                    .unwrap_or_else(|| pipeline.file.slice(concurrency.group.span).to_string())
            }),
            max_attempts: 1 + i64::from(lost_agent_retries),
            // An environment named by an expression is known only when the job runs; its
            // protection is then checked by the deploy itself.
            environment: job
                .environment
                .as_ref()
                .and_then(|environment| environment.name.value.literal_text().map(str::to_string)),
        })
        .collect()
}

/// Moves a run on: queues jobs whose needs have ended, concludes the run when every job
/// has. Safe to call at any time, any number of times.
pub async fn advance_run(state: &Arc<AppState>, run_id: i64) -> ApiResult<()> {
    let Some(run) = state.store.run(run_id).await? else {
        return Ok(());
    };
    if run.status.is_terminal() {
        return Ok(());
    }
    let now = crate::now();
    let jobs = state.store.jobs(run_id).await?;
    let ended: HashMap<&str, JobStatus> = jobs
        .iter()
        .filter(|job| job.status.is_terminal())
        .map(|job| (job.key.as_str(), job.status))
        .collect();
    let keys: HashSet<&str> = jobs.iter().map(|job| job.key.as_str()).collect();
    let mut queued_any = false;
    for job in jobs.iter().filter(|job| job.status == JobStatus::Pending) {
        let waiting_on: Vec<&str> = job
            .needs
            .iter()
            .map(String::as_str)
            .filter(|need| keys.contains(need) && !ended.contains_key(need))
            .collect();
        if waiting_on.is_empty() {
            queued_any |= state
                .store
                .transition_job(job.id, &[JobStatus::Pending], JobStatus::Queued, None, now)
                .await?;
        } else {
            let why = format!(
                "needs {}",
                waiting_on
                    .iter()
                    .map(|need| format!("`{need}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if job.waiting.as_deref() != Some(why.as_str()) {
                state.store.set_job_waiting(job.id, Some(&why)).await?;
            }
        }
    }
    if queued_any {
        state.wake_claims();
    }
    let jobs = state.store.jobs(run_id).await?;
    if jobs.iter().all(|job| job.status.is_terminal()) {
        let fails = jobs.iter().any(|job| {
            job.status == JobStatus::Failure
                && job
                    .record
                    .get("fails_run")
                    .and_then(Value::as_bool)
                    .unwrap_or(true)
        });
        let status = if fails {
            RunStatus::Failure
        } else if jobs.iter().any(|job| job.status == JobStatus::Cancelled) {
            RunStatus::Cancelled
        } else {
            RunStatus::Success
        };
        let reason = jobs
            .iter()
            .filter(|job| job.status == JobStatus::Failure)
            .map(|job| format!("job `{}` failed", job.key))
            .collect::<Vec<_>>();
        let changed = state
            .store
            .transition_run(
                run_id,
                &[RunStatus::Queued, RunStatus::Running],
                status,
                (!reason.is_empty()).then(|| reason.join("; ")).as_deref(),
                now,
            )
            .await?;
        if changed {
            state.metrics.runs_finished(status);
            if let Some(run) = state.store.run(run_id).await? {
                crate::status::report(state, &run);
            }
            state.notify_run(run_id);
            // A run of a concurrency group ended: the next one may go.
            state.wake_claims();
        }
    }
    Ok(())
}

/// Cancels a run: jobs not started are cancelled at once, running ones are told at their
/// next heartbeat (their process groups are stopped, `always()` steps still run).
pub async fn cancel_run(state: &Arc<AppState>, run_id: i64, reason: &str) -> ApiResult<bool> {
    let now = crate::now();
    let changed = state
        .store
        .transition_run(
            run_id,
            &[RunStatus::Queued, RunStatus::Running],
            RunStatus::Cancelled,
            Some(reason),
            now,
        )
        .await?;
    for job in state.store.jobs(run_id).await? {
        if matches!(job.status, JobStatus::Pending | JobStatus::Queued) {
            state
                .store
                .transition_job(
                    job.id,
                    &[JobStatus::Pending, JobStatus::Queued],
                    JobStatus::Cancelled,
                    Some(reason),
                    now,
                )
                .await?;
            state.notify_job(job.id);
        }
    }
    if changed {
        state.metrics.runs_finished(RunStatus::Cancelled);
        state.notify_run(run_id);
        if let Some(run) = state.store.run(run_id).await? {
            crate::status::report(state, &run);
        }
    }
    Ok(changed)
}

/// Re-runs the failed, cancelled and skipped jobs of an ended run, in the same run (as
/// GitHub's "re-run failed jobs"): their attempt goes up, successful jobs' results stand.
pub async fn rerun_failed(state: &Arc<AppState>, run_id: i64) -> ApiResult<usize> {
    let now = crate::now();
    let jobs = state.store.jobs(run_id).await?;
    let again: Vec<&Job> = jobs
        .iter()
        .filter(|job| {
            matches!(
                job.status,
                JobStatus::Failure | JobStatus::Cancelled | JobStatus::Skipped
            )
        })
        .collect();
    if again.is_empty() {
        return Ok(0);
    }
    let reopened = state
        .store
        .transition_run(
            run_id,
            &[RunStatus::Failure, RunStatus::Cancelled],
            RunStatus::Queued,
            None,
            now,
        )
        .await?;
    if !reopened {
        return Err(ApiError::conflict(
            "run_active",
            "only a run that failed or was cancelled can re-run its failed jobs",
        ));
    }
    for job in &again {
        state
            .store
            .transition_job(
                job.id,
                &[JobStatus::Failure, JobStatus::Cancelled, JobStatus::Skipped],
                JobStatus::Pending,
                None,
                now,
            )
            .await?;
    }
    advance_run(state, run_id).await?;
    Ok(again.len())
}

/// Periodic work: leases whose agent went silent go back to the queue (or fail after
/// `lost_agent_retries`), queued jobs learn why they wait, and those no agent can take fail
/// after `queue_timeout`.
pub async fn tick(state: &Arc<AppState>) -> ApiResult<()> {
    let now = crate::now();
    for job in state.store.expired_leases(now).await? {
        let Some(token) = &job.lease_token else {
            continue;
        };
        let agent = job.agent.clone().unwrap_or_default();
        let reason = format!("agent `{agent}` stopped answering (its lease expired)");
        if let Some(status) = state
            .store
            .release_lease(job.id, token, &reason, now)
            .await?
        {
            tracing::warn!(job = job.id, %agent, ?status, "lease expired");
            state.notify_job(job.id);
            if status == JobStatus::Queued {
                state
                    .store
                    .set_job_waiting(job.id, Some(&format!("queued again: {reason}")))
                    .await?;
                state.wake_claims();
            }
            advance_run(state, job.run_id).await?;
        }
    }
    let agents = state.online_agents();
    let queued = state.store.queued_jobs(500).await?;
    let busy_groups = crate::agents::busy_groups(state).await?;
    for job in queued {
        match crate::deploys::gate(state, &job).await? {
            crate::deploys::Gate::Open => {}
            crate::deploys::Gate::Approval(why) => {
                if job.waiting.as_deref() != Some(why.as_str()) {
                    state.store.set_job_waiting(job.id, Some(&why)).await?;
                }
                continue;
            }
            crate::deploys::Gate::Refused(reason) => {
                crate::deploys::refuse(state, &job, &reason).await?;
                continue;
            }
        }
        let matching: Vec<&crate::OnlineAgent> = agents
            .iter()
            .filter(|agent| crate::agents::labels_match(&agent.labels, &job.runs_on))
            .collect();
        let group_busy = crate::agents::group_blocker(state, &job, &busy_groups).await?;
        let why = if let Some(group) = &group_busy {
            format!("concurrency group `{group}` is busy")
        } else if matching.is_empty() {
            if job.runs_on.is_empty() {
                "no agent is online".to_string()
            } else {
                format!(
                    "no agent with labels {}",
                    job.runs_on
                        .iter()
                        .map(|label| format!("`{label}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        } else if matching.iter().all(|agent| agent.running >= agent.capacity) {
            format!("all {} matching agent(s) are at capacity", matching.len())
        } else {
            "waiting for an agent to claim it".to_string()
        };
        if matching.is_empty() && group_busy.is_none() {
            let queued_at = job.queued_at.unwrap_or(now);
            let timeout = state.config.server.queue_timeout.as_millis() as i64;
            if now - queued_at > timeout {
                let reason = format!(
                    "{why} within {} (server.queue_timeout)",
                    sorat_config::duration::format_duration(state.config.server.queue_timeout)
                );
                if state
                    .store
                    .transition_job(
                        job.id,
                        &[JobStatus::Queued],
                        JobStatus::Failure,
                        Some(&reason),
                        now,
                    )
                    .await?
                {
                    state.notify_job(job.id);
                    advance_run(state, job.run_id).await?;
                }
                continue;
            }
        }
        if job.waiting.as_deref() != Some(why.as_str()) {
            state.store.set_job_waiting(job.id, Some(&why)).await?;
        }
    }
    Ok(())
}

/// Every run not ended, moved on (after a restart, and now and then in case a wake-up was
/// missed).
pub async fn advance_all(state: &Arc<AppState>) -> ApiResult<()> {
    for run in state.store.active_runs().await? {
        advance_run(state, run.id).await?;
    }
    Ok(())
}

/// A manual run's inputs from JSON (`{"name": value}`) as the `name=text` pairs the
/// pipeline's input types are checked against.
pub fn inputs_from_json(inputs: &IndexMap<String, Value>) -> Vec<(String, String)> {
    inputs
        .iter()
        .map(|(name, value)| {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            (name.clone(), text)
        })
        .collect()
}

fn expr_to_json(value: &sorat_expr::Value) -> Value {
    use sorat_expr::Value as V;
    match value {
        V::Null => Value::Null,
        V::Bool(b) => Value::Bool(*b),
        V::Number(n) => serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number),
        V::String(s) => Value::String(s.clone()),
        V::Array(items) => Value::Array(items.iter().map(expr_to_json).collect()),
        V::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), expr_to_json(v)))
                .collect(),
        ),
    }
}
