//! What the engine tells its watcher while a run goes on.
//!
//! The engine never prints. It sends [`RunEvent`]s on a channel; the binary turns them into a
//! live view or plain lines, the server (later) into a web stream.

use std::path::PathBuf;
use std::time::Duration;

use crate::record::{LogLine, Status};

/// A job instance's identity within a run: unique, stable, usable as a folder name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey(pub String);

impl std::fmt::Display for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Something that happened in a run.
#[derive(Clone, Debug)]
pub enum RunEvent {
    /// The run began; its record and logs go under `dir`.
    RunStarted {
        /// The run's number.
        id: u64,
        /// The run's folder.
        dir: PathBuf,
        /// The jobs that will be considered, in order.
        jobs: Vec<String>,
    },
    /// A job (or a job instance) cannot start yet, and why.
    JobWaiting {
        /// Which instance (or the job id, before its matrix is expanded).
        key: JobKey,
        /// Its display name.
        name: String,
        /// Why it waits, in words ("needs `build`, which is running").
        reason: String,
    },
    /// A job's `if` passed and its matrix was expanded: the job-level entry gives way to
    /// its instances (one for a job without a matrix).
    JobPlanned {
        /// The job's id, as the key of its earlier `JobWaiting` events.
        job: JobKey,
        /// Each instance's key and display name.
        instances: Vec<(JobKey, String)>,
    },
    /// A job instance started.
    JobStarted {
        /// Which instance.
        key: JobKey,
        /// Its display name.
        name: String,
        /// Number of steps.
        steps: usize,
    },
    /// A step started.
    StepStarted {
        /// The job instance.
        key: JobKey,
        /// The step's position.
        index: usize,
        /// Its display name.
        name: String,
    },
    /// A line of output from a step or service.
    Log {
        /// The job instance.
        key: JobKey,
        /// The line, masked.
        line: LogLine,
    },
    /// A step ended.
    StepFinished {
        /// The job instance.
        key: JobKey,
        /// The step's position.
        index: usize,
        /// Its display name.
        name: String,
        /// Its conclusion.
        status: Status,
        /// Why, when it did not succeed.
        reason: Option<String>,
        /// How long it took.
        duration: Duration,
        /// The whole log.
        log_path: Option<PathBuf>,
        /// The last lines.
        tail: Vec<LogLine>,
        /// How many lines the log has.
        lines: u64,
    },
    /// A job instance ended (or was skipped without starting).
    JobFinished {
        /// Which instance.
        key: JobKey,
        /// Its display name.
        name: String,
        /// How it ended.
        status: Status,
        /// Why, when it did not succeed.
        reason: Option<String>,
        /// How long it ran.
        duration: Duration,
    },
    /// Something the user should know that is not an error of a job.
    Warning {
        /// The message.
        message: String,
    },
}
