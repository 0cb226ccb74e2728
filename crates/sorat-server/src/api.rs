//! The user-facing JSON API under `/api/v1` (documented in `docs/api.md`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{Value, json};
use sorat_pipeline::trigger::EventKind;
use sorat_state::{NewToken, Role, RunFilter, RunStatus, TokenKind};

use crate::AppState;
use crate::auth::{Caller, hash_token, new_token};
use crate::dispatch::{self, Started, TriggerRequest};
use crate::error::{ApiError, ApiResult};

/// `GET /api/v1/projects`.
pub async fn projects(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    if caller.kind == TokenKind::Agent {
        return Err(ApiError::forbidden(
            "agent tokens can only claim jobs and report on them",
        ));
    }
    let mut out = Vec::new();
    for project in state.projects.values() {
        if caller
            .require(&state.store, Some(&project.name), Role::Viewer)
            .await
            .is_ok()
        {
            out.push(project_json(project));
        }
    }
    Ok(Json(json!({ "projects": out })))
}

fn project_json(project: &sorat_config::platform::ProjectConfig) -> Value {
    json!({
        "name": project.name,
        "repo": project.repo,
        "dir": project.dir,
        "pipeline": project.pipeline,
        "branch": project.branch,
        "webhook": project.webhook_secret.is_some(),
        "poll_seconds": project.poll.map(|poll| poll.as_secs()),
    })
}

/// `GET /api/v1/projects/{name}`.
pub async fn project(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let project = state
        .projects
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("project `{name}`")))?;
    caller
        .require(&state.store, Some(&name), Role::Viewer)
        .await?;
    Ok(Json(project_json(project)))
}

/// The body of a manual run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualRun {
    /// A branch, tag, full ref or commit; default: the project's branch.
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
    /// The pipeline's `on.manual.inputs`.
    #[serde(default)]
    pub inputs: IndexMap<String, Value>,
}

/// `POST /api/v1/projects/{name}/runs`: a manual run.
pub async fn trigger(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Option<Json<ManualRun>>,
) -> ApiResult<Response> {
    let project = state
        .projects
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("project `{name}`")))?
        .clone();
    caller
        .require(&state.store, Some(&name), Role::Developer)
        .await?;
    let body = body.map(|Json(body)| body).unwrap_or_default();
    let wanted = body.git_ref.unwrap_or_else(|| project.branch.clone());
    if wanted.is_empty() || wanted.starts_with('-') || wanted.contains("..") {
        return Err(ApiError::field("ref", format!("`{wanted}` is not a ref")));
    }
    // A full ref as given; else a branch, then a tag, then a commit (full or short).
    let git_ref = if wanted.starts_with("refs/") {
        wanted.clone()
    } else {
        let candidates = [
            format!("refs/heads/{wanted}"),
            format!("refs/tags/{wanted}"),
            wanted.clone(),
        ];
        let (index, sha) = state
            .mirrors
            .resolve_first(&project.repo, &candidates)
            .await
            .map_err(|error| ApiError::field("ref", error))?;
        if index == 2 {
            sha
        } else {
            candidates[index].clone()
        }
    };
    let request = TriggerRequest {
        event: EventKind::Manual,
        git_ref: git_ref.clone(),
        sha: None,
        before: None,
        actor: caller.name.clone(),
        title: format!("manual run of {wanted}"),
        changed_files: Vec::new(),
        base_branch: String::new(),
        webhook: None,
        inputs: dispatch::inputs_from_json(&body.inputs),
        rerun: false,
        details: json!({ "source": "manual", "by": caller.name }),
    };
    match dispatch::start_run(&state, &project, request).await? {
        Started::Run(run) => Ok((StatusCode::CREATED, Json(json!(run))).into_response()),
        Started::Skipped(reason) => Err(ApiError::conflict("not_triggered", reason)),
    }
}

/// Run `id`, when the caller has `role` on its project (404 when there is no such run).
async fn run_for(
    state: &Arc<AppState>,
    caller: &Caller,
    id: i64,
    role: Role,
) -> ApiResult<sorat_state::Run> {
    let run = state
        .store
        .run(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    caller
        .require(&state.store, Some(&run.project), role)
        .await?;
    Ok(run)
}

/// The query of the runs list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// Only this project's runs.
    pub project: Option<String>,
    /// Only runs in this state.
    pub status: Option<String>,
    /// Only runs of this ref.
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// The cursor: runs older than this id.
    pub before: Option<i64>,
    /// At most this many (1 to 500, default 50).
    pub limit: Option<i64>,
}

/// `GET /api/v1/runs`: newest first, `next` is the cursor of the following page.
pub async fn runs(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<RunsQuery>,
) -> ApiResult<Json<Value>> {
    caller
        .require(&state.store, query.project.as_deref(), Role::Viewer)
        .await?;
    let status = match &query.status {
        Some(text) => Some(text.parse::<RunStatus>().map_err(|_| {
            ApiError::field(
                "status",
                format!("`{text}` is not one of queued, running, success, failure, cancelled"),
            )
        })?),
        None => None,
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "`limit` must be from 1 to 500"));
    }
    let runs = state
        .store
        .runs(&RunFilter {
            project: query.project.clone(),
            status,
            git_ref: query.git_ref.clone(),
            before: query.before,
            limit,
        })
        .await?;
    let next = (runs.len() as i64 == limit)
        .then(|| runs.last().map(|run| run.id))
        .flatten();
    let runs: Vec<Value> = runs
        .iter()
        .map(|run| {
            let mut value = json!(run);
            if let Some(object) = value.as_object_mut() {
                // Lists stay small: the pipeline's text is in the run's own page.
                object.remove("pipeline");
            }
            value
        })
        .collect();
    Ok(Json(json!({ "runs": runs, "next": next })))
}

/// `GET /api/v1/runs/{id}`: the run with its jobs and their steps.
pub async fn run(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    let run = run_for(&state, &caller, id, Role::Viewer).await?;
    let mut jobs = Vec::new();
    for job in state.store.jobs(id).await? {
        let steps = state.store.steps(job.id).await?;
        let tests = state.store.test_cases(job.id).await?;
        let mut value = json!(job);
        if let Some(object) = value.as_object_mut() {
            object.remove("lease_token");
            object.insert("steps".into(), json!(steps));
            object.insert("tests".into(), json!(tests));
        }
        jobs.push(value);
    }
    let mut value = json!(run);
    if let Some(object) = value.as_object_mut() {
        object.insert("jobs".into(), Value::Array(jobs));
    }
    Ok(Json(value))
}

/// `GET /api/v1/runs/{id}/jobs`.
pub async fn run_jobs(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    run_for(&state, &caller, id, Role::Viewer).await?;
    let jobs: Vec<Value> = state
        .store
        .jobs(id)
        .await?
        .into_iter()
        .map(|job| {
            let mut value = json!(job);
            if let Some(object) = value.as_object_mut() {
                object.remove("lease_token");
            }
            value
        })
        .collect();
    Ok(Json(json!({ "jobs": jobs })))
}

/// `GET /api/v1/runs/{id}/artifacts`: what the run's jobs uploaded (from their records).
pub async fn run_artifacts(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    run_for(&state, &caller, id, Role::Viewer).await?;
    let mut artifacts = Vec::new();
    for job in state.store.jobs(id).await? {
        let list = job
            .record
            .get("artifacts")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for artifact in list {
            artifacts.push(json!({
                "job": job.key,
                "agent": job.agent,
                "name": artifact.get("name"),
                "files": artifact.get("files"),
                "bytes": artifact.get("bytes"),
            }));
        }
    }
    Ok(Json(json!({ "artifacts": artifacts })))
}

/// `POST /api/v1/runs/{id}/cancel`.
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    let run = run_for(&state, &caller, id, Role::Developer).await?;
    let changed =
        dispatch::cancel_run(&state, id, &format!("cancelled by {}", caller.name)).await?;
    if !changed {
        return Err(ApiError::conflict(
            "run_ended",
            format!("run {id} already ended ({})", run.status.as_str()),
        ));
    }
    Ok(Json(json!({ "cancelled": true })))
}

/// The body of a re-run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rerun {
    /// Only the failed, cancelled and skipped jobs, in the same run; otherwise a new run
    /// of the same commit and inputs.
    #[serde(default)]
    pub failed_only: bool,
}

/// `POST /api/v1/runs/{id}/rerun`.
pub async fn rerun(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
    body: Option<Json<Rerun>>,
) -> ApiResult<Response> {
    let run = run_for(&state, &caller, id, Role::Developer).await?;
    let body = body.map(|Json(body)| body).unwrap_or_default();
    if body.failed_only {
        let jobs = dispatch::rerun_failed(&state, id).await?;
        return Ok(Json(json!({ "run": id, "jobs": jobs })).into_response());
    }
    if !run.status.is_terminal() {
        return Err(ApiError::conflict(
            "run_active",
            format!("run {id} is still {}", run.status.as_str()),
        ));
    }
    let project = state
        .projects
        .get(&run.project)
        .ok_or_else(|| ApiError::not_found(format!("project `{}`", run.project)))?
        .clone();
    let event = EventKind::parse(&run.event).unwrap_or(EventKind::Manual);
    let inputs: IndexMap<String, Value> = run
        .inputs
        .as_object()
        .map(|object| object.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let request = TriggerRequest {
        event,
        git_ref: run.git_ref.clone(),
        sha: Some(run.sha.clone()),
        before: run.before.clone(),
        actor: caller.name.clone(),
        title: run.title.clone(),
        changed_files: Vec::new(),
        base_branch: String::new(),
        webhook: None,
        inputs: dispatch::inputs_from_json(&inputs),
        // A re-run repeats what ran: the filters of `on:` were passed the first time.
        rerun: true,
        details: json!({ "source": "rerun", "of": id, "by": caller.name }),
    };
    match dispatch::start_run(&state, &project, request).await? {
        Started::Run(run) => Ok((StatusCode::CREATED, Json(json!(run))).into_response()),
        Started::Skipped(reason) => Err(ApiError::conflict("not_triggered", reason)),
    }
}

/// The query of secret endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretScope {
    /// The project; none for a secret every project can use.
    pub project: Option<String>,
}

/// The body of `PUT /api/v1/secrets/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretValue {
    /// The value (stored encrypted; never returned).
    pub value: String,
}

fn check_secret_name(name: &str) -> ApiResult<()> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(ApiError::field(
            "name",
            format!(
                "secret name `{name}` must be letters, digits and `_`, not starting with a digit"
            ),
        ))
    }
}

/// `GET /api/v1/secrets?project=`: names only.
pub async fn secrets(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(scope): Query<SecretScope>,
) -> ApiResult<Json<Value>> {
    caller
        .require(&state.store, scope.project.as_deref(), Role::Developer)
        .await?;
    let names = state.store.secret_names(scope.project.as_deref()).await?;
    Ok(Json(json!({ "secrets": names })))
}

/// `PUT /api/v1/secrets/{name}?project=`.
pub async fn put_secret(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(scope): Query<SecretScope>,
    Json(body): Json<SecretValue>,
) -> ApiResult<Response> {
    check_secret_name(&name)?;
    caller
        .require(&state.store, scope.project.as_deref(), Role::Admin)
        .await?;
    if let Some(project) = &scope.project
        && !state.projects.contains_key(project)
    {
        return Err(ApiError::not_found(format!("project `{project}`")));
    }
    state
        .store
        .put_secret(scope.project.as_deref(), &name, &body.value, crate::now())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /api/v1/secrets/{name}?project=`.
pub async fn delete_secret(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(scope): Query<SecretScope>,
) -> ApiResult<Response> {
    caller
        .require(&state.store, scope.project.as_deref(), Role::Admin)
        .await?;
    if state
        .store
        .delete_secret(scope.project.as_deref(), &name)
        .await?
    {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!("secret `{name}`")))
    }
}

/// The body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTokenRequest {
    /// The user the token is for (created when new), or the agent's token name.
    pub name: String,
    /// `viewer`, `developer` or `admin` (user tokens).
    #[serde(default)]
    pub role: Option<String>,
    /// The project the role is on; none for every project.
    #[serde(default)]
    pub project: Option<String>,
    /// An agent token (claims and reports jobs only).
    #[serde(default)]
    pub agent: bool,
    /// Days until it expires; none for never.
    #[serde(default)]
    pub expires_in_days: Option<i64>,
}

/// `POST /api/v1/tokens` (admin): the token is in the answer, once.
pub async fn create_token(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<NewTokenRequest>,
) -> ApiResult<Response> {
    caller.require(&state.store, None, Role::Admin).await?;
    if body.name.trim().is_empty() || body.name.len() > 128 {
        return Err(ApiError::field("name", "a name of 1 to 128 characters"));
    }
    let now = crate::now();
    let expires_at = match body.expires_in_days {
        Some(days) if (1..=3650).contains(&days) => Some(now + days * 86_400_000),
        Some(_) => {
            return Err(ApiError::field("expires_in_days", "from 1 to 3650 days"));
        }
        None => None,
    };
    let token = new_token();
    let (kind, user_id, role) = if body.agent {
        if body.role.is_some() {
            return Err(ApiError::field("role", "agent tokens have no role"));
        }
        (TokenKind::Agent, None, None)
    } else {
        let role_text = body.role.as_deref().unwrap_or("viewer");
        let role: Role = role_text.parse().map_err(|_| {
            ApiError::field(
                "role",
                format!("`{role_text}` is not one of viewer, developer, admin"),
            )
        })?;
        if let Some(project) = &body.project
            && !state.projects.contains_key(project)
        {
            return Err(ApiError::field(
                "project",
                format!("no project `{project}`"),
            ));
        }
        let user = match state.store.user(&body.name).await? {
            Some(user) => user,
            None => state.store.create_user(&body.name, now).await?,
        };
        // A user's role is the user's, not the token's: a new token never lowers it (a
        // viewer token for `admin` must not take the admin's rights away).
        let has = state
            .store
            .role_of(user.id, body.project.as_deref())
            .await?;
        if has.is_none_or(|has| has < role) {
            state
                .store
                .grant(user.id, body.project.as_deref(), role)
                .await?;
        }
        (TokenKind::User, Some(user.id), Some(role))
    };
    let created = state
        .store
        .create_token(
            &NewToken {
                name: body.name.clone(),
                kind,
                user_id,
                hash: hash_token(&token),
                expires_at,
            },
            now,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": created.id,
            "name": created.name,
            "kind": created.kind,
            "role": role,
            "project": body.project,
            "expires_at": created.expires_at,
            "token": token,
        })),
    )
        .into_response())
}

/// `GET /api/v1/tokens` (admin): never the tokens themselves.
pub async fn tokens(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    caller.require(&state.store, None, Role::Admin).await?;
    Ok(Json(json!({ "tokens": state.store.tokens().await? })))
}

/// `DELETE /api/v1/tokens/{id}` (admin).
pub async fn revoke_token(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    caller.require(&state.store, None, Role::Admin).await?;
    if state.store.revoke_token(id, crate::now()).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!("token {id}")))
    }
}

/// `GET /api/v1/agents`.
pub async fn agents(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    caller.require(&state.store, None, Role::Viewer).await?;
    let online = state.online_agents();
    let agents: Vec<Value> = state
        .store
        .agents()
        .await?
        .into_iter()
        .map(|agent| {
            let live = online.iter().find(|live| live.name == agent.name);
            json!({
                "name": agent.name,
                "labels": agent.labels,
                "capacity": agent.capacity,
                "version": agent.version,
                "last_seen": agent.last_seen,
                "online": live.is_some(),
                "running": live.map_or(0, |live| live.running),
            })
        })
        .collect();
    Ok(Json(json!({ "agents": agents })))
}

/// The query of the audit log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries older than this id.
    pub before: Option<i64>,
    /// At most this many (1 to 500, default 100).
    pub limit: Option<i64>,
}

/// `GET /api/v1/audit` (admin).
pub async fn audit(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(&state.store, None, Role::Admin).await?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "`limit` must be from 1 to 500"));
    }
    let entries = state.store.audit_log(query.before, limit).await?;
    Ok(Json(json!({ "entries": entries })))
}
