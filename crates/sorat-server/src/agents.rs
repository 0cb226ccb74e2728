//! The agents' side of the API: claiming jobs by long poll, heartbeats, log chunks, step
//! changes and results. Every request after a claim carries the lease token; a request
//! whose token no longer holds the job gets 409 and changes nothing, so an agent that was
//! presumed dead can never overwrite the work of the agent that took over.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};
use sorat_agent::protocol::{
    Assignment, ClaimRequest, Finish, GivenJob, Heartbeat, HeartbeatReply, LogAppend, StepUpdate,
};
use sorat_state::{Job, JobOutcome, JobStatus, LogChunk, RunStatus, StepState, TestCase};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::{AppState, OnlineAgent};

/// Whether an agent with `labels` may run a job that `runs-on` `wanted`: an agent without
/// labels takes anything; otherwise it must have every wanted label.
pub fn labels_match(labels: &[String], wanted: &[String]) -> bool {
    labels.is_empty() || wanted.iter().all(|label| labels.contains(label))
}

/// The concurrency groups in use: for run-level groups, the oldest run not ended of each
/// (project, group); for job-level groups, those with a running job.
pub struct BusyGroups {
    runs: HashMap<(String, String), i64>,
    jobs: HashSet<String>,
}

/// Reads which concurrency groups are in use.
pub async fn busy_groups(state: &Arc<AppState>) -> ApiResult<BusyGroups> {
    let mut groups = BusyGroups {
        runs: HashMap::new(),
        jobs: HashSet::new(),
    };
    for run in state.store.active_runs().await? {
        if let Some(group) = &run.concurrency {
            let oldest = groups
                .runs
                .entry((run.project.clone(), group.clone()))
                .or_insert(run.id);
            *oldest = (*oldest).min(run.id);
        }
        if run.status == RunStatus::Running {
            for job in state.store.jobs(run.id).await? {
                if job.status == JobStatus::Running
                    && let Some(group) = job.concurrency
                {
                    groups.jobs.insert(group);
                }
            }
        }
    }
    Ok(groups)
}

/// The concurrency group that keeps `job` waiting, if one does: an older run of its run's
/// group is not over, or a job of its own group is running.
pub async fn group_blocker(
    state: &Arc<AppState>,
    job: &Job,
    groups: &BusyGroups,
) -> ApiResult<Option<String>> {
    if let Some(group) = &job.concurrency
        && groups.jobs.contains(group)
    {
        return Ok(Some(group.clone()));
    }
    if groups.runs.is_empty() {
        return Ok(None);
    }
    let Some(run) = state.store.run(job.run_id).await? else {
        return Ok(None);
    };
    if let Some(group) = &run.concurrency
        && groups
            .runs
            .get(&(run.project.clone(), group.clone()))
            .is_some_and(|&oldest| oldest < run.id)
    {
        return Ok(Some(group.clone()));
    }
    Ok(None)
}

/// `POST /api/v1/agent/claim`: a job for the agent, waiting up to `wait_ms` for one.
pub async fn claim(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<ClaimRequest>,
) -> ApiResult<Response> {
    caller.require_agent()?;
    if request.name.trim().is_empty() || request.name.len() > 128 {
        return Err(ApiError::field(
            "name",
            "an agent needs a name of 1 to 128 characters",
        ));
    }
    state.agent_seen(&request).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(request.wait_ms.min(60_000));
    loop {
        let notified = state.claims.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if state.shutting_down.is_cancelled() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        if let Some(assignment) = try_claim(&state, &request).await? {
            return Ok(Json(assignment).into_response());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        let nap = (deadline - now).min(Duration::from_secs(2));
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep(nap) => {}
            () = state.shutting_down.cancelled() => {}
        }
    }
}

async fn try_claim(state: &Arc<AppState>, request: &ClaimRequest) -> ApiResult<Option<Assignment>> {
    if request.running >= request.capacity.max(1) {
        return Ok(None);
    }
    let candidates = state.store.queued_jobs(200).await?;
    if candidates.is_empty() {
        return Ok(None);
    }
    let groups = busy_groups(state).await?;
    let lease_ms = state.config.server.lease.as_millis() as i64;
    for job in candidates {
        if !labels_match(&request.labels, &job.runs_on) {
            continue;
        }
        if group_blocker(state, &job, &groups).await?.is_some() {
            continue;
        }
        match crate::deploys::gate(state, &job).await? {
            crate::deploys::Gate::Open => {}
            crate::deploys::Gate::Approval(_) => continue,
            crate::deploys::Gate::Refused(reason) => {
                crate::deploys::refuse(state, &job, &reason).await?;
                continue;
            }
        }
        let now = crate::now();
        let Some(lease) = state
            .store
            .claim_job(job.id, &request.name, now + lease_ms, now)
            .await?
        else {
            continue;
        };
        state.metrics.queue_wait(now - job.queued_at.unwrap_or(now));
        state.notify_job(job.id);
        match assignment(state, &job, &lease, lease_ms).await {
            Ok(assignment) => return Ok(Some(assignment)),
            Err(error) => {
                // The job cannot be described to an agent (its project was removed from
                // the config, say): it fails here rather than bounce between agents.
                let outcome = JobOutcome {
                    status: JobStatus::Failure,
                    outputs: json!({}),
                    record: json!({ "fails_run": true }),
                    reason: Some(error.message.clone()),
                };
                state
                    .store
                    .finish_job(job.id, &lease.token, &outcome, crate::now())
                    .await?;
                state.notify_job(job.id);
                crate::dispatch::advance_run(state, job.run_id).await?;
            }
        }
    }
    Ok(None)
}

async fn assignment(
    state: &Arc<AppState>,
    job: &Job,
    lease: &sorat_state::Lease,
    lease_ms: i64,
) -> ApiResult<Assignment> {
    let now = crate::now();
    let run = state
        .store
        .run(job.run_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {}", job.run_id)))?;
    if state
        .store
        .transition_run(run.id, &[RunStatus::Queued], RunStatus::Running, None, now)
        .await?
        && let Some(running) = state.store.run(run.id).await?
    {
        crate::status::report(state, &running);
    }
    let project = state.projects.get(&run.project).ok_or_else(|| {
        ApiError::not_found(format!(
            "project `{}` is no longer in the configuration",
            run.project
        ))
    })?;
    let given = state
        .store
        .jobs(run.id)
        .await?
        .into_iter()
        .filter(|other| other.id != job.id && other.status.is_terminal())
        .map(|other| GivenJob {
            key: other.key,
            status: match other.status {
                JobStatus::Success => "success",
                JobStatus::Failure => "failure",
                JobStatus::Cancelled => "cancelled",
                _ => "skipped",
            }
            .to_string(),
            outputs: other.outputs.as_object().cloned().unwrap_or_default(),
        })
        .collect();
    let names = referenced_secrets(&run.pipeline, &job.key);
    let secrets = state.store.secrets_for(&run.project, &names).await?;
    let pipeline_path = if project.dir.is_empty() {
        project.pipeline.clone()
    } else {
        format!("{}/{}", project.dir, project.pipeline)
    };
    Ok(Assignment {
        job_id: job.id,
        attempt: lease.attempt,
        lease_token: lease.token.clone(),
        lease_ms: lease_ms as u64,
        run_id: run.id,
        run_number: run.number,
        project: run.project.clone(),
        repo: project.repo.clone(),
        dir: project.dir.clone(),
        pipeline_path,
        pipeline: run.pipeline.clone(),
        event: run.event.clone(),
        git_ref: run.git_ref.clone(),
        sha: run.sha.clone(),
        actor: run.actor.clone(),
        inputs: run.inputs.as_object().cloned().unwrap_or_default(),
        job: job.key.clone(),
        given,
        secrets,
        server_url: state.config.server.external_url.clone(),
    })
}

/// The secrets a job references: `secrets.NAME` (or `secrets['NAME']`) in the job's own
/// text or in the pipeline's text before its jobs (its `env`). A job is given only these.
pub fn referenced_secrets(pipeline: &str, job_key: &str) -> Vec<String> {
    let file = sorat_config::SourceFile::new("pipeline.yaml", pipeline);
    let (loaded, _) = sorat_pipeline::load::load(&file);
    let mut regions: Vec<&str> = Vec::new();
    match &loaded {
        Some(loaded) => {
            let starts: Vec<(usize, &str)> = loaded
                .jobs
                .values()
                .map(|job| (job.id_span.start, job.id.as_str()))
                .collect();
            let first = starts.first().map_or(pipeline.len(), |(start, _)| *start);
            regions.push(pipeline.get(..first).unwrap_or(""));
            if let Some(index) = starts.iter().position(|(_, key)| *key == job_key) {
                let start = starts[index].0;
                let end = starts
                    .get(index + 1)
                    .map_or(pipeline.len(), |(next, _)| *next);
                regions.push(pipeline.get(start..end).unwrap_or(""));
            }
        }
        None => regions.push(pipeline),
    }
    let mut names: Vec<String> = Vec::new();
    for region in regions {
        let mut rest = region;
        while let Some(at) = rest.find("secrets") {
            let after = &rest[at + "secrets".len()..];
            let name = if let Some(dotted) = after.strip_prefix('.') {
                dotted
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("")
            } else if let Some(quoted) = after
                .strip_prefix("['")
                .or_else(|| after.strip_prefix("[\""))
            {
                quoted.split(['\'', '"']).next().unwrap_or("")
            } else {
                ""
            };
            if !name.is_empty() && !names.iter().any(|known| known == name) {
                names.push(name.to_string());
            }
            rest = after;
        }
    }
    names
}

async fn holding_lease(state: &Arc<AppState>, job_id: i64, token: &str) -> ApiResult<Job> {
    let job = state
        .store
        .job(job_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {job_id}")))?;
    if job.status != JobStatus::Running || job.lease_token.as_deref() != Some(token) {
        return Err(ApiError::conflict(
            "lease_lost",
            format!("job {job_id}: this lease is no longer valid"),
        ));
    }
    Ok(job)
}

/// `POST /api/v1/agent/jobs/{id}/heartbeat`.
pub async fn heartbeat(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(job_id): Path<i64>,
    Json(body): Json<Heartbeat>,
) -> ApiResult<Json<HeartbeatReply>> {
    caller.require_agent()?;
    let lease = state.config.server.lease.as_millis() as i64;
    if !state
        .store
        .heartbeat(job_id, &body.token, crate::now() + lease)
        .await?
    {
        return Err(ApiError::conflict(
            "lease_lost",
            format!("job {job_id}: this lease is no longer valid"),
        ));
    }
    let job = state.store.job(job_id).await?;
    let cancel = match &job {
        Some(job) => state
            .store
            .run(job.run_id)
            .await?
            .is_some_and(|run| run.status == RunStatus::Cancelled),
        None => false,
    };
    if let Some(agent) = job.and_then(|job| job.agent) {
        state.agent_alive(&agent);
    }
    Ok(Json(HeartbeatReply {
        lease_ms: lease as u64,
        cancel,
    }))
}

/// `POST /api/v1/agent/jobs/{id}/logs`.
pub async fn logs(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(job_id): Path<i64>,
    Json(body): Json<LogAppend>,
) -> ApiResult<Json<Value>> {
    caller.require_agent()?;
    let job = holding_lease(&state, job_id, &body.token).await?;
    if body.attempt != job.attempt {
        return Err(ApiError::field(
            "attempt",
            format!(
                "job {job_id} is on attempt {}, not {}",
                job.attempt, body.attempt
            ),
        ));
    }
    if body.seq < 1 {
        return Err(ApiError::field("seq", "chunks are numbered from 1"));
    }
    let stored = state
        .store
        .append_log(&LogChunk {
            job_id,
            attempt: body.attempt,
            seq: body.seq,
            text: body.text,
            at: crate::now(),
        })
        .await?;
    if stored {
        state.notify_job(job_id);
    }
    Ok(Json(json!({ "stored": stored })))
}

/// `POST /api/v1/agent/jobs/{id}/steps`.
pub async fn steps(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(job_id): Path<i64>,
    Json(body): Json<StepUpdate>,
) -> ApiResult<Json<Value>> {
    caller.require_agent()?;
    let job = holding_lease(&state, job_id, &body.token).await?;
    if let (Some(started), Some(finished)) = (body.started_at, body.finished_at) {
        state.metrics.step_duration(finished - started);
    }
    state
        .store
        .upsert_step(&StepState {
            job_id,
            attempt: job.attempt,
            index: body.index,
            name: body.name,
            status: body.status,
            started_at: body.started_at,
            finished_at: body.finished_at,
            reason: body.reason,
        })
        .await?;
    state.notify_job(job_id);
    Ok(Json(json!({})))
}

/// `POST /api/v1/agent/jobs/{id}/finish`.
pub async fn finish(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(job_id): Path<i64>,
    Json(body): Json<Finish>,
) -> ApiResult<Json<Value>> {
    caller.require_agent()?;
    let status = match body.status.as_str() {
        "success" => JobStatus::Success,
        "failure" => JobStatus::Failure,
        "cancelled" => JobStatus::Cancelled,
        "skipped" => JobStatus::Skipped,
        other => {
            return Err(ApiError::field(
                "status",
                format!("`{other}` is not one of success, failure, cancelled, skipped"),
            ));
        }
    };
    let job = holding_lease(&state, job_id, &body.token).await?;
    let outcome = JobOutcome {
        status,
        outputs: Value::Object(body.outputs),
        record: json!({
            "fails_run": body.fails_run,
            "instances": body.record,
            "artifacts": body.artifacts,
        }),
        reason: body.reason,
    };
    if !state
        .store
        .finish_job(job_id, &body.token, &outcome, crate::now())
        .await?
    {
        return Err(ApiError::conflict(
            "lease_lost",
            format!("job {job_id}: this lease is no longer valid"),
        ));
    }
    let cases: Vec<TestCase> = body
        .tests
        .into_iter()
        .map(|case| TestCase {
            suite: case.suite,
            name: case.name,
            status: case.status,
            duration_ms: case.duration_ms,
            message: case.message,
        })
        .collect();
    if !cases.is_empty() {
        state.store.put_test_cases(job_id, &cases).await?;
    }
    state.metrics.job_finished(status);
    state.notify_job(job_id);
    crate::dispatch::advance_run(&state, job.run_id).await?;
    Ok(Json(json!({})))
}

impl OnlineAgent {
    /// Whether the agent was heard from recently enough to count as online.
    pub fn is_online(&self, lease: Duration) -> bool {
        self.last_seen.elapsed() < lease * 2 + Duration::from_secs(60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_without_labels_takes_anything_else_needs_every_label() {
        let none: Vec<String> = Vec::new();
        let linux = vec!["linux".to_string()];
        let both = vec!["linux".to_string(), "gpu".to_string()];
        assert!(labels_match(&none, &both));
        assert!(labels_match(&both, &linux));
        assert!(!labels_match(&linux, &both));
        assert!(labels_match(&linux, &none));
    }

    #[test]
    fn a_job_gets_only_the_secrets_it_and_the_pipeline_env_reference() {
        let pipeline = "on: push\nenv:\n  GLOBAL: ${{ secrets.SHARED }}\njobs:\n  build:\n    steps:\n      - run: echo ${{ secrets.BUILD_KEY }}\n  deploy:\n    steps:\n      - run: echo ${{ secrets['DEPLOY_KEY'] }} ${{ secrets.DEPLOY_KEY }}\n";
        assert_eq!(
            referenced_secrets(pipeline, "build"),
            ["SHARED", "BUILD_KEY"]
        );
        assert_eq!(
            referenced_secrets(pipeline, "deploy"),
            ["SHARED", "DEPLOY_KEY"]
        );
    }
}
