//! The values the store reads and writes. They are plain data: the server returns them as
//! JSON, so every one is `Serialize`, and the enums and `New*` inputs are `Deserialize` too.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Millis, StateError};

/// An enum stored as a lowercase word: `as_str`, `FromStr`, `Display` and the list of all values,
/// from one table so that the database text and the JSON spelling cannot drift apart.
macro_rules! word_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The word stored in the database and used in JSON.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = StateError;

            fn from_str(text: &str) -> Result<Self, StateError> {
                match text {
                    $($text => Ok($name::$variant),)*
                    _ => Err(StateError::Invalid {
                        what: format!("{} `{text}`", stringify!($name)),
                    }),
                }
            }
        }
    };
}

word_enum! {
    /// What a user may do. Ordered: viewer < developer < admin.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Role {
        /// Reads everything it is granted.
        Viewer = "viewer",
        /// Also starts, cancels and re-runs runs.
        Developer = "developer",
        /// Also manages users, tokens, secrets and settings.
        Admin = "admin",
    }
}

word_enum! {
    /// Where a run is.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum RunStatus {
        /// Created; no job has started.
        Queued = "queued",
        /// At least one job has started.
        Running = "running",
        /// Every job ended well.
        Success = "success",
        /// A job failed.
        Failure = "failure",
        /// Someone (or a newer run of its concurrency group) cancelled it.
        Cancelled = "cancelled",
    }
}

impl RunStatus {
    /// Whether the run has ended (success, failure or cancelled).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Success | RunStatus::Failure | RunStatus::Cancelled
        )
    }
}

word_enum! {
    /// Where a job is.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum JobStatus {
        /// Waits for the jobs it needs.
        Pending = "pending",
        /// May start: waits for an agent (or a concurrency group).
        Queued = "queued",
        /// An agent holds its lease.
        Running = "running",
        /// Ended well.
        Success = "success",
        /// Ended badly (or lost its lease too often).
        Failure = "failure",
        /// Cancelled before or while it ran.
        Cancelled = "cancelled",
        /// Its `if` was false, or a job it needs did not succeed.
        Skipped = "skipped",
    }
}

impl JobStatus {
    /// Whether the job has ended (success, failure, cancelled or skipped).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Success | JobStatus::Failure | JobStatus::Cancelled | JobStatus::Skipped
        )
    }
}

word_enum! {
    /// Who a token stands for.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum TokenKind {
        /// A person (or their scripts): acts with the user's roles.
        User = "user",
        /// An agent: claims jobs and reports on them.
        Agent = "agent",
    }
}

word_enum! {
    /// Which database the store is on.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Backend {
        /// One file, `<data>/state.db`.
        Sqlite = "sqlite",
        /// A PostgreSQL server.
        Postgres = "postgres",
    }
}

/// A project as configured: what `upsert_project` is given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewProject {
    /// Unique name (`shop`).
    pub name: String,
    /// Where its code is (a clone URL or a local path).
    pub repo: String,
    /// The pipeline file inside the repository (`.sorat/pipeline.yaml`).
    pub pipeline_path: String,
    /// Anything else the server keeps about it (a JSON value).
    pub settings: Value,
}

/// A stored project.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Project {
    /// Database id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Where its code is.
    pub repo: String,
    /// The pipeline file inside the repository.
    pub pipeline_path: String,
    /// Anything else the server keeps about it.
    pub settings: Value,
    /// When it was first stored.
    pub created_at: Millis,
    /// When its repo, pipeline path or settings last changed.
    pub updated_at: Millis,
}

/// A run to create: what triggered it and the pipeline text it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewRun {
    /// The project's name (the project must exist).
    pub project: String,
    /// The event (`push`, `pull_request`, `schedule`, `manual`, …).
    pub event: String,
    /// The ref (`refs/heads/main`).
    pub git_ref: String,
    /// The commit.
    pub sha: String,
    /// The commit before a push, when known.
    pub before: Option<String>,
    /// A title for lists (the commit's subject, a schedule's name).
    pub title: String,
    /// Who or what started it.
    pub actor: String,
    /// The trigger's payload, as the server wants to keep it (JSON).
    pub trigger: Value,
    /// The run's inputs (JSON object).
    pub inputs: Value,
    /// The pipeline's YAML text, as it was when the run was created.
    pub pipeline: String,
    /// The run's concurrency group, if any.
    pub concurrency: Option<String>,
}

/// A stored run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Run {
    /// Database id (global, increasing).
    pub id: i64,
    /// The project's name.
    pub project: String,
    /// The run's number within its project: 1, 2, 3, …
    pub number: i64,
    /// Where it is.
    pub status: RunStatus,
    /// The event that triggered it.
    pub event: String,
    /// The ref.
    pub git_ref: String,
    /// The commit.
    pub sha: String,
    /// The commit before a push, when known.
    pub before: Option<String>,
    /// A title for lists.
    pub title: String,
    /// Who or what started it.
    pub actor: String,
    /// The trigger's payload.
    pub trigger: Value,
    /// The run's inputs.
    pub inputs: Value,
    /// The pipeline's YAML text.
    pub pipeline: String,
    /// The run's concurrency group, if any.
    pub concurrency: Option<String>,
    /// Why it ended as it did (or why it waits), when there is something to say.
    pub reason: Option<String>,
    /// When it was created.
    pub queued_at: Millis,
    /// When it first became running.
    pub started_at: Option<Millis>,
    /// When it ended.
    pub finished_at: Option<Millis>,
}

/// Which runs `Store::runs` lists.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFilter {
    /// Only this project's.
    pub project: Option<String>,
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// Only runs of this ref.
    pub git_ref: Option<String>,
    /// A cursor: only runs with an id below this (the last id of the previous page).
    pub before: Option<i64>,
    /// At most this many (clamped to 1..=500).
    pub limit: i64,
}

/// A job to create with its run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// The pipeline's job id (`build`), with a matrix suffix for an instance.
    pub key: String,
    /// Display name.
    pub name: String,
    /// The keys of the jobs it needs; empty means it is queued at once.
    pub needs: Vec<String>,
    /// The labels an agent must have.
    pub runs_on: Vec<String>,
    /// The job's concurrency group, if any.
    pub concurrency: Option<String>,
    /// How many times it may be claimed before a lost lease fails it (at least 1).
    pub max_attempts: i64,
    /// The environment it deploys to (`environment:` in the pipeline), if any.
    pub environment: Option<String>,
}

/// A stored job.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Job {
    /// Database id.
    pub id: i64,
    /// Its run's id.
    pub run_id: i64,
    /// The pipeline's job id.
    pub key: String,
    /// Display name.
    pub name: String,
    /// The keys of the jobs it needs.
    pub needs: Vec<String>,
    /// The labels an agent must have.
    pub runs_on: Vec<String>,
    /// The job's concurrency group, if any.
    pub concurrency: Option<String>,
    /// Where it is.
    pub status: JobStatus,
    /// Why it is still queued (no agent with these labels, a concurrency group…).
    pub waiting: Option<String>,
    /// The agent that claimed it last.
    pub agent: Option<String>,
    /// How many times it was claimed (0 before the first claim).
    pub attempt: i64,
    /// How many claims it may have.
    pub max_attempts: i64,
    /// The current lease's token (only while running). Never serialized: whoever holds it
    /// can report for the job, so it goes to the claiming agent only (in its [`Lease`]).
    #[serde(skip_serializing)]
    pub lease_token: Option<String>,
    /// When the current lease ends unless renewed.
    pub lease_until: Option<Millis>,
    /// The job's outputs (JSON object; `{}` until it finishes).
    pub outputs: Value,
    /// The job's record as the agent reported it (JSON; `null` until it finishes).
    pub record: Value,
    /// Why it ended as it did, when there is something to say.
    pub reason: Option<String>,
    /// When it became queued (last time).
    pub queued_at: Option<Millis>,
    /// When it was first claimed.
    pub started_at: Option<Millis>,
    /// When it ended.
    pub finished_at: Option<Millis>,
    /// The environment it deploys to, if any.
    pub environment: Option<String>,
    /// Who approved it, when its environment needs an approval.
    pub approved_by: Option<String>,
    /// When.
    pub approved_at: Option<Millis>,
}

/// What a deployment or rollback of an environment was: who, what, how it ended, and the
/// engine's whole report (hosts, phases, analyses and their measurements, bake).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Deployment {
    /// Database id.
    pub id: i64,
    /// The environment.
    pub environment: String,
    /// `deploy` or `rollback`.
    pub kind: String,
    /// The release deployed, or the one a rollback went to (when one was named).
    pub release: Option<i64>,
    /// The artifact, `name@version` (deploys).
    pub artifact: Option<String>,
    /// The artifact's digest (deploys).
    pub digest: Option<String>,
    /// Who asked for it.
    pub who: String,
    /// `succeeded`, `aborted`, `rolled_back`, `failed`.
    pub outcome: String,
    /// Why it did not succeed.
    pub reason: Option<String>,
    /// The report as JSON.
    pub report: Value,
    /// When it started.
    pub started_at: Millis,
    /// When it ended.
    pub finished_at: Millis,
}

/// A deployment to record.
#[derive(Clone, Debug)]
pub struct NewDeployment {
    /// The environment.
    pub environment: String,
    /// `deploy` or `rollback`.
    pub kind: String,
    /// The release.
    pub release: Option<i64>,
    /// The artifact.
    pub artifact: Option<String>,
    /// Its digest.
    pub digest: Option<String>,
    /// Who.
    pub who: String,
    /// How it ended.
    pub outcome: String,
    /// Why.
    pub reason: Option<String>,
    /// The report.
    pub report: Value,
    /// When it started.
    pub started_at: Millis,
    /// When it ended.
    pub finished_at: Millis,
}

/// A job's lease: what `claim_job` gives the agent that won it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// The job.
    pub job_id: i64,
    /// Which attempt this is (1 for the first claim).
    pub attempt: i64,
    /// The secret that proves the lease in heartbeats and reports (random, 32 hex digits).
    pub token: String,
    /// When the lease ends unless renewed.
    pub lease_until: Millis,
}

/// How a job ended, as its agent reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobOutcome {
    /// A terminal status.
    pub status: JobStatus,
    /// The job's outputs (JSON object).
    pub outputs: Value,
    /// The job's record (JSON).
    pub record: Value,
    /// Why, when there is something to say.
    pub reason: Option<String>,
}

/// One step of one attempt of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    /// The job.
    pub job_id: i64,
    /// The attempt.
    pub attempt: i64,
    /// The step's position in the job (0-based).
    pub index: i64,
    /// Display name.
    pub name: String,
    /// `running`, `success`, `failure`, `skipped` or `cancelled`.
    pub status: String,
    /// When it started.
    pub started_at: Option<Millis>,
    /// When it ended.
    pub finished_at: Option<Millis>,
    /// Why it ended as it did, when there is something to say.
    pub reason: Option<String>,
}

/// A chunk of a job's log: whole lines, numbered per attempt so a resend is recognised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogChunk {
    /// The job.
    pub job_id: i64,
    /// The attempt.
    pub attempt: i64,
    /// The chunk's number within the attempt (increasing).
    pub seq: i64,
    /// Whole lines, each ending in `\n`.
    pub text: String,
    /// When the agent sent it.
    pub at: Millis,
}

/// One test case from a job's reports (JUnit).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestCase {
    /// The suite (or class) name.
    pub suite: String,
    /// The case name.
    pub name: String,
    /// `passed`, `failed`, `skipped` or `error`.
    pub status: String,
    /// How long it took.
    pub duration_ms: Option<i64>,
    /// The failure's message, if any.
    pub message: Option<String>,
}

/// A user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Database id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// When it was created.
    pub created_at: Millis,
}

/// A token to store. The caller hashes the token's secret; the store never sees a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    /// What it is for (`ci`, `agent-1`).
    pub name: String,
    /// Who it stands for.
    pub kind: TokenKind,
    /// The user it acts as (user tokens).
    pub user_id: Option<i64>,
    /// SHA-256 of the token's secret.
    pub hash: [u8; 32],
    /// When it stops working, if ever.
    pub expires_at: Option<Millis>,
}

/// A stored token (its hash is never returned).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Token {
    /// Database id.
    pub id: i64,
    /// What it is for.
    pub name: String,
    /// Who it stands for.
    pub kind: TokenKind,
    /// The user it acts as (user tokens).
    pub user_id: Option<i64>,
    /// When it was created.
    pub created_at: Millis,
    /// When it was last used (as recorded by `touch_token`).
    pub last_used_at: Option<Millis>,
    /// When it stops working, if ever.
    pub expires_at: Option<Millis>,
    /// When it was revoked.
    pub revoked_at: Option<Millis>,
}

impl Token {
    /// Whether the token may be used at `now`: not revoked and not expired.
    pub fn is_usable(&self, now: Millis) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|expires| now < expires)
    }
}

/// A secret's name and age; never its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    /// The project it belongs to; `None` for a global secret.
    pub project: Option<String>,
    /// Its name.
    pub name: String,
    /// When its value was last set.
    pub updated_at: Millis,
}

/// An agent as it last presented itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Unique name.
    pub name: String,
    /// Its labels (`linux`, `arch=x64`).
    pub labels: Vec<String>,
    /// How many jobs it runs at once.
    pub capacity: i64,
    /// Its Sorat version.
    pub version: String,
    /// When it was last heard from.
    pub last_seen: Millis,
}

/// An audit record to store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewAudit {
    /// When it happened.
    pub at: Millis,
    /// Who did it (a user name, `token:ci`, `agent:a1`, `system`).
    pub actor: String,
    /// What was done (`POST /api/v1/secrets`, `token.create`).
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// The client's address.
    pub source: String,
    /// The HTTP status answered.
    pub status: i64,
    /// Anything else worth keeping (JSON; never a secret value).
    pub details: Value,
}

/// A stored audit record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Database id (increasing).
    pub id: i64,
    /// When it happened.
    pub at: Millis,
    /// Who did it.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// The client's address.
    pub source: String,
    /// The HTTP status answered.
    pub status: i64,
    /// Anything else worth keeping.
    pub details: Value,
}
