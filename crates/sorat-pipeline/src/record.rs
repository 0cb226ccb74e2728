//! The run's record: what ran, how it ended, where its logs are.
//!
//! Written as `run.json` in the run's folder when the run ends (and after each job, so a
//! killed run leaves what it finished). The stable core that tools may rely on is
//! `{"status", "jobs": [{"name", "matrix", "status", "outputs", "steps": [{"name", "id",
//! "status", "exit_code", "outputs"}]}]}`; everything else may grow.

use std::path::PathBuf;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::junit::TestReport;

/// The end state of a run, job or step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Passed.
    Success,
    /// Failed.
    Failure,
    /// Stopped before it finished (Ctrl-C, fail-fast, a newer run in its concurrency group).
    Cancelled,
    /// Never started: its condition was false or what it needs failed.
    Skipped,
}

impl Status {
    /// The word used in records and the terminal.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failure => "failure",
            Status::Cancelled => "cancelled",
            Status::Skipped => "skipped",
        }
    }
}

/// The whole run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    /// Format version of this record.
    pub schema: u32,
    /// The run's number in its data folder.
    pub id: u64,
    /// The pipeline's `name`, or its file name.
    pub name: String,
    /// How the run ended.
    pub status: Status,
    /// The event it ran for.
    pub event: String,
    /// The commit it ran on.
    pub sha: String,
    /// The ref (`refs/heads/main`).
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Whether it ran on the working copy rather than the commit.
    pub dirty: bool,
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub finished_at: String,
    /// Wall-clock duration in milliseconds.
    pub duration_ms: u64,
    /// Every job instance, in the order the pipeline declares them.
    pub jobs: Vec<JobRecord>,
    /// All test results together.
    pub tests: TestReport,
    /// Why the run did not start or ended early, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One job instance (one matrix combination).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's id in the pipeline.
    pub id: String,
    /// The display name (`test (linux, 1.80)`).
    pub name: String,
    /// The matrix combination, or null.
    pub matrix: Option<serde_json::Value>,
    /// How it ended.
    pub status: Status,
    /// Why it failed, was cancelled or was skipped, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The job's outputs.
    pub outputs: IndexMap<String, String>,
    /// When it started (RFC 3339), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// How many attempts ran (more than 1 with `retry`).
    pub attempts: u32,
    /// Its steps.
    pub steps: Vec<StepRecord>,
    /// Its services and how they ended.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub services: Vec<ServiceRecord>,
    /// Test results reported by its `junit` steps.
    pub tests: TestReport,
}

impl JobRecord {
    /// The record of a job (instance) that ended without running: skipped, cancelled before
    /// it started, or failed in its `if` or matrix.
    pub fn unstarted(
        id: &str,
        name: &str,
        matrix: Option<serde_json::Value>,
        status: Status,
        reason: &str,
    ) -> JobRecord {
        JobRecord {
            id: id.to_string(),
            name: name.to_string(),
            matrix,
            status,
            reason: Some(reason.to_string()),
            outputs: IndexMap::new(),
            started_at: None,
            duration_ms: 0,
            attempts: 0,
            steps: Vec::new(),
            services: Vec::new(),
            tests: TestReport::default(),
        }
    }
}

/// One step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    /// The display name.
    pub name: String,
    /// The step's `id`, if any.
    pub id: Option<String>,
    /// The conclusion (after `continue-on-error`).
    pub status: Status,
    /// The outcome before `continue-on-error` applied.
    pub outcome: Status,
    /// The process's exit code, for `run` steps that ran to an exit.
    pub exit_code: Option<i32>,
    /// Why it failed or was cancelled, in words ("timed out after 5m").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Outputs written to `$SORAT_OUTPUT`.
    pub outputs: IndexMap<String, String>,
    /// When it started (RFC 3339), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// How many attempts ran.
    pub attempts: u32,
    /// Its log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<LogRecord>,
    /// What the step wrote to `$SORAT_STEP_SUMMARY` (Markdown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// A background service of a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// The service's name.
    pub name: String,
    /// Whether it became ready.
    pub ready: bool,
    /// Its log.
    pub log: Option<LogRecord>,
}

/// Where a log is and how it ends.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogRecord {
    /// The whole log, zstd-compressed, one `timestamp line` per line.
    pub path: PathBuf,
    /// Number of lines.
    pub lines: u64,
    /// Number of bytes of text (uncompressed).
    pub bytes: u64,
    /// The last lines, with their timestamps.
    pub tail: Vec<LogLine>,
}

/// One line of output, already masked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When it was read (RFC 3339 with milliseconds).
    pub t: String,
    /// The text, without its newline.
    pub line: String,
}
