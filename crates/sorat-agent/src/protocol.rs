//! The messages between an agent and the server, as JSON over HTTP. The agent pulls: it
//! asks for work (a long poll), and everything after a claim carries the lease token, so a
//! server can tell a live claim from one it already gave to someone else.
//!
//! | request | body | answer |
//! | --- | --- | --- |
//! | `POST /api/v1/agent/claim` | [`ClaimRequest`] | 200 [`Assignment`], or 204 when no job came within `wait_ms` |
//! | `POST /api/v1/agent/jobs/{id}/heartbeat` | [`Heartbeat`] | 200 [`HeartbeatReply`]; 409 when the lease is lost |
//! | `POST /api/v1/agent/jobs/{id}/logs` | [`LogAppend`] | 200 (idempotent by `seq`); 409 when the lease is lost |
//! | `POST /api/v1/agent/jobs/{id}/steps` | [`StepUpdate`] | 200; 409 when the lease is lost |
//! | `POST /api/v1/agent/jobs/{id}/finish` | [`Finish`] | 200; 409 when the lease is lost |

use serde::{Deserialize, Serialize};

/// An agent asks for a job.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClaimRequest {
    /// The agent's name (unique among agents).
    pub name: String,
    /// The labels it matches (`linux`, `gpu`, `os=linux`); empty takes any job.
    pub labels: Vec<String>,
    /// How many jobs it runs at once.
    pub capacity: u32,
    /// How many it runs now.
    pub running: u32,
    /// Its version.
    pub version: String,
    /// How long the server may hold the request open waiting for a job, in ms (at most 60 s).
    pub wait_ms: u64,
}

/// A job given to an agent: everything it needs to run it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Assignment {
    /// The job's id on the server.
    pub job_id: i64,
    /// Which attempt this is (1 for the first).
    pub attempt: i64,
    /// The lease's token: every later request about the job carries it.
    pub lease_token: String,
    /// How long the lease lasts without a heartbeat, in ms.
    pub lease_ms: u64,
    /// The run's id.
    pub run_id: i64,
    /// The run's number within its project.
    pub run_number: i64,
    /// The project's name.
    pub project: String,
    /// Where the agent fetches the repository from (a URL, or a path on the server's
    /// machine for a local agent).
    pub repo: String,
    /// The project's folder inside the repository.
    pub dir: String,
    /// The pipeline file's path inside the repository, for messages.
    pub pipeline_path: String,
    /// The pipeline's text at the run's commit.
    pub pipeline: String,
    /// `push`, `pull_request`, `schedule` or `workflow_dispatch`.
    pub event: String,
    /// The full ref.
    pub git_ref: String,
    /// The commit.
    pub sha: String,
    /// Who started the run.
    pub actor: String,
    /// Manual inputs, as given to the run.
    pub inputs: serde_json::Map<String, serde_json::Value>,
    /// The pipeline job to run (all its matrix instances).
    pub job: String,
    /// The run's jobs that already ended, with their results.
    pub given: Vec<GivenJob>,
    /// The secrets this job references, by name.
    pub secrets: Vec<(String, String)>,
    /// The server's URL, for `github.server_url`.
    pub server_url: String,
}

/// A job of the run that already ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GivenJob {
    /// Its id in the pipeline.
    pub key: String,
    /// `success`, `failure`, `cancelled` or `skipped`.
    pub status: String,
    /// Its outputs.
    pub outputs: serde_json::Map<String, serde_json::Value>,
}

/// "I am still working on it."
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Heartbeat {
    /// The lease's token.
    pub token: String,
}

/// The server's answer to a heartbeat.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HeartbeatReply {
    /// The lease now lasts this long, in ms.
    pub lease_ms: u64,
    /// The run was cancelled: stop the job (its `always()` steps still run).
    pub cancel: bool,
}

/// A chunk of log lines.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LogAppend {
    /// The lease's token.
    pub token: String,
    /// The attempt the lines belong to.
    pub attempt: i64,
    /// The chunk's number, from 1, without gaps; a chunk sent again after a lost answer
    /// carries the same number and is stored once.
    pub seq: i64,
    /// Whole lines, each ending in `\n`, already masked.
    pub text: String,
}

/// A step started or ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepUpdate {
    /// The lease's token.
    pub token: String,
    /// The attempt.
    pub attempt: i64,
    /// The step's position in the job (across matrix instances: instance-major).
    pub index: i64,
    /// Its display name.
    pub name: String,
    /// `running`, `success`, `failure`, `skipped` or `cancelled`.
    pub status: String,
    /// When it started (ms since the epoch).
    pub started_at: Option<i64>,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// Why, when it did not succeed.
    pub reason: Option<String>,
}

/// The job ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Finish {
    /// The lease's token.
    pub token: String,
    /// `success`, `failure`, `cancelled` or `skipped`.
    pub status: String,
    /// Whether the job fails its run (a failure without `continue-on-error`).
    pub fails_run: bool,
    /// The job's outputs (of its instances, merged).
    pub outputs: serde_json::Map<String, serde_json::Value>,
    /// The engine's records of the job's instances.
    pub record: serde_json::Value,
    /// Why, when it did not succeed.
    pub reason: Option<String>,
    /// Test cases reported by `junit` steps.
    pub tests: Vec<TestCaseReport>,
    /// The artifacts the job uploaded.
    #[serde(default)]
    pub artifacts: Vec<ArtifactReport>,
}

/// An artifact a job uploaded (kept on the agent that ran it, for now).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ArtifactReport {
    /// Its name.
    pub name: String,
    /// How many files.
    pub files: u64,
    /// Their size.
    pub bytes: u64,
}

/// One test case.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TestCaseReport {
    /// The suite.
    pub suite: String,
    /// The case.
    pub name: String,
    /// `passed`, `failed`, `skipped` or `error`.
    pub status: String,
    /// How long it took.
    pub duration_ms: Option<i64>,
    /// The failure's message.
    pub message: Option<String>,
}

/// The body of every error answer: `{ "error": { "code", "message", "field"? } }`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ErrorDetail {
    /// A stable code (`unauthorized`, `not_found`, `invalid`, `lease_lost`, ...).
    pub code: String,
    /// For people.
    pub message: String,
    /// The field or header at fault.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
}
