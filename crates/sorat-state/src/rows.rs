//! Rows to values: the column lists each query selects and the decoding of one row, written
//! once for both backends (the `Any` driver gives both the same row type).

use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::types::{
    AgentInfo, AuditEntry, Deployment, Job, JobStatus, Project, Run, RunStatus, SecretInfo,
    StepState, TestCase, Token, TokenKind, User,
};
use crate::{Result, StateError};

/// The columns of a `Run`, from `runs r JOIN projects p`.
pub(crate) const RUN_COLUMNS: &str = "r.id, p.name AS project, r.number, r.status, r.event, \
    r.git_ref, r.sha, r.before_sha, r.title, r.actor, r.trigger_info, r.inputs, r.pipeline, \
    r.concurrency, r.reason, r.queued_at, r.started_at, r.finished_at";

/// The columns of a `Run` in lists: the pipeline's text is left out (empty), as a list never
/// shows it and it is the largest column by far.
pub(crate) const RUN_LIST_COLUMNS: &str = "r.id, p.name AS project, r.number, r.status, r.event, \
    r.git_ref, r.sha, r.before_sha, r.title, r.actor, r.trigger_info, r.inputs, \
    CAST('' AS TEXT) AS pipeline, r.concurrency, r.reason, r.queued_at, r.started_at, r.finished_at";

/// The columns of a `Job`.
pub(crate) const JOB_COLUMNS: &str = "id, run_id, job_key, name, needs, runs_on, concurrency, \
    status, waiting, agent, attempt, max_attempts, lease_token, lease_until, outputs, record, \
    reason, queued_at, started_at, finished_at, environment, approved_by, approved_at";

/// The columns of a `Deployment`.
pub(crate) const DEPLOYMENT_COLUMNS: &str = "id, environment, kind, release_number, artifact, \
    digest, who, outcome, reason, report, started_at, finished_at";

/// The columns of a `Project`.
pub(crate) const PROJECT_COLUMNS: &str =
    "id, name, repo, pipeline_path, settings, created_at, updated_at";

/// The columns of a `Token`.
pub(crate) const TOKEN_COLUMNS: &str =
    "id, name, kind, user_id, created_at, last_used_at, expires_at, revoked_at";

/// A JSON column: stored as text, parsed back.
pub(crate) fn json(row: &AnyRow, column: &str) -> Result<Value> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text)
        .map_err(|error| StateError::Database(format!("column `{column}` holds bad JSON: {error}")))
}

/// A JSON column that holds a list of strings.
pub(crate) fn strings(row: &AnyRow, column: &str) -> Result<Vec<String>> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text)
        .map_err(|error| StateError::Database(format!("column `{column}` holds bad JSON: {error}")))
}

/// A word column parsed into one of the store's enums.
pub(crate) fn word<T: std::str::FromStr<Err = StateError>>(
    row: &AnyRow,
    column: &str,
) -> Result<T> {
    let text: String = row.try_get(column)?;
    text.parse().map_err(|_| {
        StateError::Database(format!("column `{column}` holds an unknown value `{text}`"))
    })
}

/// Encodes a value for a JSON column.
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|error| StateError::Invalid {
        what: format!("JSON: {error}"),
    })
}

pub(crate) fn project(row: &AnyRow) -> Result<Project> {
    Ok(Project {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        repo: row.try_get("repo")?,
        pipeline_path: row.try_get("pipeline_path")?,
        settings: json(row, "settings")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) fn run(row: &AnyRow) -> Result<Run> {
    Ok(Run {
        id: row.try_get("id")?,
        project: row.try_get("project")?,
        number: row.try_get("number")?,
        status: word::<RunStatus>(row, "status")?,
        event: row.try_get("event")?,
        git_ref: row.try_get("git_ref")?,
        sha: row.try_get("sha")?,
        before: row.try_get("before_sha")?,
        title: row.try_get("title")?,
        actor: row.try_get("actor")?,
        trigger: json(row, "trigger_info")?,
        inputs: json(row, "inputs")?,
        pipeline: row.try_get("pipeline")?,
        concurrency: row.try_get("concurrency")?,
        reason: row.try_get("reason")?,
        queued_at: row.try_get("queued_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

pub(crate) fn job(row: &AnyRow) -> Result<Job> {
    Ok(Job {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        key: row.try_get("job_key")?,
        name: row.try_get("name")?,
        needs: strings(row, "needs")?,
        runs_on: strings(row, "runs_on")?,
        concurrency: row.try_get("concurrency")?,
        status: word::<JobStatus>(row, "status")?,
        waiting: row.try_get("waiting")?,
        agent: row.try_get("agent")?,
        attempt: row.try_get("attempt")?,
        max_attempts: row.try_get("max_attempts")?,
        lease_token: row.try_get("lease_token")?,
        lease_until: row.try_get("lease_until")?,
        outputs: json(row, "outputs")?,
        record: json(row, "record")?,
        reason: row.try_get("reason")?,
        queued_at: row.try_get("queued_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        environment: row.try_get("environment")?,
        approved_by: row.try_get("approved_by")?,
        approved_at: row.try_get("approved_at")?,
    })
}

pub(crate) fn deployment(row: &AnyRow) -> Result<Deployment> {
    Ok(Deployment {
        id: row.try_get("id")?,
        environment: row.try_get("environment")?,
        kind: row.try_get("kind")?,
        release: row.try_get("release_number")?,
        artifact: row.try_get("artifact")?,
        digest: row.try_get("digest")?,
        who: row.try_get("who")?,
        outcome: row.try_get("outcome")?,
        reason: row.try_get("reason")?,
        report: json(row, "report")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

pub(crate) fn step(row: &AnyRow) -> Result<StepState> {
    Ok(StepState {
        job_id: row.try_get("job_id")?,
        attempt: row.try_get("attempt")?,
        index: row.try_get("step_index")?,
        name: row.try_get("name")?,
        status: row.try_get("status")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        reason: row.try_get("reason")?,
    })
}

pub(crate) fn test_case(row: &AnyRow) -> Result<TestCase> {
    Ok(TestCase {
        suite: row.try_get("suite")?,
        name: row.try_get("name")?,
        status: row.try_get("status")?,
        duration_ms: row.try_get("duration_ms")?,
        message: row.try_get("message")?,
    })
}

pub(crate) fn user(row: &AnyRow) -> Result<User> {
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) fn token(row: &AnyRow) -> Result<Token> {
    Ok(Token {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: word::<TokenKind>(row, "kind")?,
        user_id: row.try_get("user_id")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

pub(crate) fn secret_info(row: &AnyRow) -> Result<SecretInfo> {
    let project: String = row.try_get("project")?;
    Ok(SecretInfo {
        project: (!project.is_empty()).then_some(project),
        name: row.try_get("name")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) fn agent(row: &AnyRow) -> Result<AgentInfo> {
    Ok(AgentInfo {
        name: row.try_get("name")?,
        labels: strings(row, "labels")?,
        capacity: row.try_get("capacity")?,
        version: row.try_get("version")?,
        last_seen: row.try_get("last_seen")?,
    })
}

pub(crate) fn audit(row: &AnyRow) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        source: row.try_get("source")?,
        status: row.try_get("status")?,
        details: json(row, "details")?,
    })
}
