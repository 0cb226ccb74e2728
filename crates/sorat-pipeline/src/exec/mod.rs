//! The engine: plans the jobs of a run and runs them, in parallel where `needs` allows.
//!
//! [`run`] is a scheduler loop. Each job waits until the jobs it needs have ended, then its
//! `if` is evaluated and its matrix expanded into instances; an instance starts when a slot
//! is free (`--jobs`), its job's `max-parallel` allows, and its concurrency group is not
//! held. Every instance runs as a task in its own workspace; the loop learns of its end
//! through the task's result. Whenever a job or instance cannot start, the watcher is told
//! why, so that nothing waits without an explanation.

mod builtins;
mod files;
mod job;
pub mod log;
mod process;
mod services;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use sorat_expr::{Context, Host, JobStatus, Value};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::events::{JobKey, RunEvent};
use crate::git::RepoState;
use crate::junit::TestReport;
use crate::mask::{MaskError, Masker};
use crate::matrix::{self, Combination};
use crate::record::{JobRecord, RunRecord, Status};
use crate::spec::{ConditionKind, Job, Matrix, MatrixValues, Pipeline};
use crate::trigger::EventKind;

pub use files::{CommandFileError, parse_key_values};
pub use process::{
    Exit, GroupWatcher, ProcessSpec, report_group_ended, report_group_started, run_process,
    watch_process_groups,
};

/// Everything a run needs to know before it starts.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// The loaded pipeline.
    pub pipeline: Arc<Pipeline>,
    /// The repository and commit to run.
    pub repo: RepoState,
    /// Run on the working copy (with uncommitted changes) instead of the commit.
    pub dirty: bool,
    /// The project's folder inside the repository (where `.sorat/` is), `/`-separated, empty
    /// at the top. A pipeline in a subfolder (a monorepo's project) gets that subfolder of
    /// the checkout as its workspace.
    pub project_dir: String,
    /// The event the run stands for.
    pub event: EventKind,
    /// Manual inputs, typed and checked (see [`crate::inputs`]).
    pub inputs: IndexMap<String, Value>,
    /// Secrets by name.
    pub secrets: IndexMap<String, String>,
    /// Configuration variables (`vars`), the pipeline's defaults already merged in.
    pub vars: IndexMap<String, String>,
    /// Run only this job (and the jobs it needs).
    pub only_job: Option<String>,
    /// How many job instances may run at once.
    pub parallelism: usize,
    /// The data folder: runs, caches and the content store live under it.
    pub data_dir: PathBuf,
    /// Keep each job's workspace after the run (they are removed by default).
    pub keep_workspaces: bool,
    /// Jobs that already ended elsewhere (on another agent, in an earlier part of the same
    /// run), by job id. They are not run: their results feed `needs` and the decision
    /// whether later jobs run. The server gives an agent every ended job of the run.
    pub given: IndexMap<String, GivenJob>,
    /// Who and what the run is, as a server knows it; `None` for a local run.
    pub identity: Option<RunIdentity>,
    /// Where the run's artifacts are kept; default: the run folder's `artifacts`. A server
    /// run whose jobs an agent runs one by one (each in a run folder of its own) points every
    /// job at the same folder, so a job finds what the jobs it needs uploaded.
    pub artifacts_dir: Option<PathBuf>,
    /// Where `publish-artifact` publishes: the server's artifact repository for an agent,
    /// a local one for `sorat run`; `None`: the step fails and says so.
    pub publisher: Option<Arc<dyn ArtifactPublisher>>,
    /// Where `deploy` deploys: the server's environments for an agent; `None` for
    /// `sorat run` (the step fails and says so).
    pub deployer: Option<Arc<dyn Deployer>>,
}

/// Deploys an artifact to an environment (through the server). The answer is the line the
/// step logs; an error is the step's failure reason.
pub trait Deployer: Send + Sync + std::fmt::Debug {
    /// Deploys `artifact` (`name@version`) to `environment`.
    fn deploy(
        &self,
        environment: String,
        artifact: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>;
}

/// What `publish-artifact` asks the artifact repository to publish.
#[derive(Clone, Debug)]
pub struct PublishFiles {
    /// The artifact's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// A moving version (`latest`), which a later publish may replace.
    pub moving: bool,
    /// The files: path inside the artifact (`/`-separated), path on disk, mode.
    pub files: Vec<(String, PathBuf, u32)>,
    /// The attachments (SBOM, scan reports, test reports): kind, path on disk, media type.
    pub attachments: Vec<(String, PathBuf, String)>,
    /// Where it comes from.
    pub origin: PublishOrigin,
}

/// The run a publish comes from.
#[derive(Clone, Debug, Default)]
pub struct PublishOrigin {
    /// The project (the repository's name locally).
    pub project: String,
    /// The commit.
    pub commit: String,
    /// The ref.
    pub git_ref: String,
    /// The run's id.
    pub run: u64,
    /// The job instance.
    pub job: String,
}

/// The published artifact, as the step reports it.
#[derive(Clone, Debug)]
pub struct PublishedArtifact {
    /// The digest of its signed manifest (`sha256:…`).
    pub digest: String,
    /// Whether it is new (false: the same content was already published as this version).
    pub created: bool,
    /// Its total size in bytes.
    pub size: u64,
}

/// An artifact repository the engine can publish to. The engine knows nothing of how: the
/// binary gives `sorat run` a local repository, the agent one that uploads to its server.
pub trait ArtifactPublisher: Send + Sync + std::fmt::Debug {
    /// Publishes the files; an error is the step's failure reason.
    fn publish(
        &self,
        request: PublishFiles,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<PublishedArtifact, String>> + Send>,
    >;
}

/// A job that ended before this part of the run: its conclusion and outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GivenJob {
    /// How it ended.
    pub status: Status,
    /// Its outputs.
    pub outputs: IndexMap<String, String>,
}

/// The server's names for a run, shown in the `github` context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunIdentity {
    /// The run's id (`github.run_id`).
    pub run_id: u64,
    /// The run's number within its project (`github.run_number`).
    pub run_number: u64,
    /// The attempt (`github.run_attempt`).
    pub attempt: u64,
    /// Who started it (`github.actor`).
    pub actor: String,
    /// The repository's name (`github.repository`).
    pub repository: String,
    /// The server's URL (`github.server_url`).
    pub server_url: String,
}

/// Two levels of stopping: the first Ctrl-C cancels (steps are stopped, `always()` steps
/// still run), the second kills everything at once.
#[derive(Clone, Debug, Default)]
pub struct Cancel {
    /// Cancel the run gracefully.
    pub soft: CancellationToken,
    /// Stop everything now.
    pub hard: CancellationToken,
}

/// A run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A secret cannot be masked.
    #[error(transparent)]
    Secret(#[from] MaskError),
    /// `--job` names no job.
    #[error("there is no job `{0}` in the pipeline{1}")]
    UnknownJob(String, String),
    /// The data folder cannot be used.
    #[error("cannot use the data folder {path}: {source}")]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// State shared by every job of a run.
pub(crate) struct RunShared {
    pub(crate) request: RunRequest,
    pub(crate) run_id: u64,
    pub(crate) run_dir: PathBuf,
    pub(crate) store: crate::cas::Store,
    pub(crate) masker: Masker,
    pub(crate) github: Value,
    pub(crate) events: UnboundedSender<RunEvent>,
    pub(crate) cancel: Cancel,
}

impl RunShared {
    /// The contexts every expression of the run sees.
    pub(crate) fn base_context(&self) -> Context {
        let mut context = Context::new();
        context.insert("github", self.github.clone());
        context.insert("sorat", self.github.clone());
        context.insert(
            "vars",
            string_object(
                self.request
                    .vars
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            ),
        );
        context.insert(
            "secrets",
            string_object(
                self.request
                    .secrets
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            ),
        );
        context.insert("inputs", Value::Object(self.request.inputs.clone()));
        context
    }

    /// `file:line:col` of a span of the pipeline file, for messages found at run time.
    pub(crate) fn locate(&self, span: sorat_config::Span) -> String {
        let file = &self.request.pipeline.file;
        let position = file.line_col(span.start);
        format!(
            "{}:{}:{}",
            file.path().display(),
            position.line,
            position.col
        )
    }
}

pub(crate) fn string_object(entries: impl Iterator<Item = (String, String)>) -> Value {
    Value::Object(entries.map(|(k, v)| (k, Value::String(v))).collect())
}

/// A host for job-level expressions: no workspace, and a status computed from the jobs needed.
pub(crate) struct JobLevelHost {
    pub(crate) status: JobStatus,
}

impl Host for JobLevelHost {
    fn hash_files(&self, _patterns: &[String]) -> Result<String, String> {
        Err("hashFiles() is available in steps only".into())
    }

    fn job_status(&self) -> JobStatus {
        self.status
    }
}

/// The end of one job (all of its instances).
#[derive(Clone, Debug)]
struct JobResult {
    status: Status,
    outputs: IndexMap<String, String>,
}

enum Phase {
    Waiting,
    Expanded,
    Done,
}

struct JobSlot {
    phase: Phase,
    result: Option<JobResult>,
    instances: Vec<usize>,
    waiting_reason: Option<String>,
    in_run: bool,
}

enum InstanceState {
    Queued,
    Running,
    Done,
}

struct Instance {
    job_index: usize,
    key: JobKey,
    name: String,
    matrix: Option<Combination>,
    strategy: Value,
    state: InstanceState,
    cancel: Cancel,
    waiting_reason: Option<String>,
    concurrency: Option<(String, bool)>,
    record: Option<JobRecord>,
    continue_on_error: bool,
    fail_fast: bool,
    max_parallel: Option<u32>,
}

/// Allocates the next run number in `data_dir/runs` and creates its folder.
fn allocate_run_dir(data_dir: &Path) -> std::io::Result<(u64, PathBuf)> {
    let runs = data_dir.join("runs");
    std::fs::create_dir_all(&runs)?;
    let mut next = std::fs::read_dir(&runs)?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    loop {
        let dir = runs.join(next.to_string());
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok((next, dir)),
            // Another run took this number between our scan and now.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => next += 1,
            Err(error) => return Err(error),
        }
    }
}

/// The jobs to run: all, or `only` and everything it needs, transitively; never a job that
/// is `given` (it ended elsewhere).
fn selected_jobs(
    pipeline: &Pipeline,
    only: Option<&str>,
    given: &IndexMap<String, GivenJob>,
) -> Result<Vec<bool>, RunError> {
    let Some(only) = only else {
        return Ok(pipeline
            .jobs
            .keys()
            .map(|id| !given.contains_key(id))
            .collect());
    };
    let Some(start) = pipeline.jobs.get_index_of(only) else {
        let hint =
            match sorat_config::suggest::closest(only, pipeline.jobs.keys().map(String::as_str)) {
                Some(candidate) => format!("; did you mean `{candidate}`?"),
                None => format!(
                    "; its jobs are {}",
                    pipeline
                        .jobs
                        .keys()
                        .map(|id| format!("`{id}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
        return Err(RunError::UnknownJob(only.to_string(), hint));
    };
    let mut selected = vec![false; pipeline.jobs.len()];
    let mut stack = vec![start];
    while let Some(index) = stack.pop() {
        if given.contains_key(&pipeline.jobs[index].id) {
            continue;
        }
        if std::mem::replace(&mut selected[index], true) {
            continue;
        }
        for need in &pipeline.jobs[index].needs {
            if let Some(need_index) = pipeline.jobs.get_index_of(&need.value) {
                stack.push(need_index);
            }
        }
    }
    Ok(selected)
}

/// Runs a pipeline to its end and returns its record (also written to `run.json` in the run's
/// folder). Fails only when the run cannot start; job failures are in the record.
pub async fn run(
    request: RunRequest,
    events: UnboundedSender<RunEvent>,
    cancel: Cancel,
) -> Result<RunRecord, RunError> {
    let started = Instant::now();
    let started_at = jiff::Timestamp::now();
    let selected = selected_jobs(
        &request.pipeline,
        request.only_job.as_deref(),
        &request.given,
    )?;
    let mut masker = Masker::new();
    for (name, value) in &request.secrets {
        masker.add_secret(name, value)?;
    }
    let data_error = |source| RunError::DataDir {
        path: request.data_dir.clone(),
        source,
    };
    let (run_id, run_dir) = allocate_run_dir(&request.data_dir).map_err(data_error)?;
    let store = crate::cas::Store::open(request.data_dir.join("cas")).map_err(data_error)?;
    let github = github_context(&request, run_id);
    let pipeline = Arc::clone(&request.pipeline);
    let shared = Arc::new(RunShared {
        request,
        run_id,
        run_dir: run_dir.clone(),
        store,
        masker,
        github,
        events: events.clone(),
        cancel: cancel.clone(),
    });
    let _ = events.send(RunEvent::RunStarted {
        id: run_id,
        dir: run_dir.clone(),
        jobs: pipeline
            .jobs
            .keys()
            .zip(&selected)
            .filter(|(_, selected)| **selected)
            .map(|(id, _)| id.clone())
            .collect(),
    });

    let mut scheduler = Scheduler {
        shared: Arc::clone(&shared),
        pipeline: Arc::clone(&pipeline),
        jobs: selected
            .iter()
            .zip(pipeline.jobs.keys())
            .map(|(&in_run, id)| JobSlot {
                phase: if in_run { Phase::Waiting } else { Phase::Done },
                result: shared.request.given.get(id).map(|given| JobResult {
                    status: given.status,
                    outputs: given.outputs.clone(),
                }),
                instances: Vec::new(),
                waiting_reason: None,
                in_run,
            })
            .collect(),
        instances: Vec::new(),
        running: JoinSet::new(),
        groups: HashMap::new(),
        cancel_handled: false,
    };
    scheduler.run_to_end().await;

    let mut jobs: Vec<JobRecord> = Vec::new();
    for slot in &scheduler.jobs {
        for &instance in &slot.instances {
            if let Some(record) = &scheduler.instances[instance].record {
                jobs.push(record.clone());
            }
        }
    }
    let mut tests = TestReport::default();
    for job in &jobs {
        tests.merge(&job.tests);
    }
    // A failed instance of a job with `continue-on-error` does not fail the run.
    let failed = scheduler.instances.iter().any(|instance| {
        !instance.continue_on_error
            && instance
                .record
                .as_ref()
                .is_some_and(|record| record.status == Status::Failure)
    });
    let status = if failed {
        Status::Failure
    } else if shared.cancel.soft.is_cancelled()
        || jobs.iter().any(|job| job.status == Status::Cancelled)
    {
        Status::Cancelled
    } else {
        Status::Success
    };
    let record = RunRecord {
        schema: 1,
        id: run_id,
        name: pipeline.name.clone().unwrap_or_else(|| {
            pipeline.file.path().file_name().map_or_else(
                || "pipeline".into(),
                |name| name.to_string_lossy().into_owned(),
            )
        }),
        status,
        event: shared.request.event.github_name().to_string(),
        sha: shared.request.repo.sha.clone(),
        git_ref: shared.request.repo.git_ref.clone(),
        dirty: shared.request.dirty,
        pipeline: pipeline.file.path().to_path_buf(),
        started_at: format!("{started_at:.3}"),
        finished_at: format!("{:.3}", jiff::Timestamp::now()),
        duration_ms: started.elapsed().as_millis() as u64,
        jobs,
        tests,
        reason: shared
            .cancel
            .soft
            .is_cancelled()
            .then(|| "the run was cancelled".to_string()),
    };
    if let Err(error) = write_record(&run_dir, &record) {
        let _ = events.send(RunEvent::Warning {
            message: format!("the run record could not be written: {error}"),
        });
    }
    Ok(record)
}

/// Writes `run.json` atomically: a reader, or a run killed half-way, sees the old record or
/// the new one, never half of one.
pub fn write_record(run_dir: &Path, record: &RunRecord) -> std::io::Result<()> {
    write_json_atomically(run_dir, "run.json", record)?;
    let _ = std::fs::remove_file(run_dir.join("run.partial.json"));
    Ok(())
}

/// Writes `name` in `dir` through a synced temporary file and a rename.
fn write_json_atomically(
    dir: &Path,
    name: &str,
    value: &impl serde::Serialize,
) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    serde_json::to_writer_pretty(&mut file, value).map_err(std::io::Error::other)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn github_context(request: &RunRequest, run_id: u64) -> Value {
    let repo = &request.repo;
    let local = RunIdentity {
        run_id,
        run_number: run_id,
        attempt: 1,
        actor: std::env::var("USER").unwrap_or_else(|_| "local".into()),
        repository: repo.name.clone(),
        server_url: "http://localhost".into(),
    };
    let identity = request.identity.as_ref().unwrap_or(&local);
    let actor = &identity.actor;
    let inputs = Value::Object(request.inputs.clone());
    let event = {
        let mut event = IndexMap::new();
        if request.event == EventKind::Manual {
            event.insert("inputs".to_string(), inputs);
        }
        event.insert(
            "head_commit".to_string(),
            Value::Object(IndexMap::from([(
                "id".to_string(),
                Value::String(repo.sha.clone()),
            )])),
        );
        Value::Object(event)
    };
    let text = |value: &str| Value::String(value.to_string());
    Value::Object(IndexMap::from([
        ("sha".to_string(), text(&repo.sha)),
        ("ref".to_string(), text(&repo.git_ref)),
        ("ref_name".to_string(), text(&repo.ref_name)),
        ("ref_type".to_string(), text(&repo.ref_type)),
        ("event_name".to_string(), text(request.event.github_name())),
        ("event".to_string(), event),
        ("repository".to_string(), text(&identity.repository)),
        ("repository_owner".to_string(), text("local")),
        ("actor".to_string(), text(actor)),
        ("triggering_actor".to_string(), text(actor)),
        ("run_id".to_string(), text(&identity.run_id.to_string())),
        (
            "run_number".to_string(),
            text(&identity.run_number.to_string()),
        ),
        (
            "run_attempt".to_string(),
            text(&identity.attempt.to_string()),
        ),
        ("server_url".to_string(), text(&identity.server_url)),
        (
            "workflow".to_string(),
            text(&request.pipeline.name.clone().unwrap_or_default()),
        ),
        ("head_ref".to_string(), text("")),
        ("base_ref".to_string(), text("")),
        ("token".to_string(), text("")),
    ]))
}

struct Scheduler {
    shared: Arc<RunShared>,
    pipeline: Arc<Pipeline>,
    jobs: Vec<JobSlot>,
    instances: Vec<Instance>,
    running: JoinSet<(usize, JobRecord)>,
    /// Concurrency groups held by running instances.
    groups: HashMap<String, usize>,
    cancel_handled: bool,
}

impl Scheduler {
    async fn run_to_end(&mut self) {
        loop {
            self.resolve_waiting_jobs();
            self.start_ready_instances();
            if self.running.is_empty() {
                // Nothing runs and nothing could start: every job has ended (a cycle is
                // impossible, the loader refuses them).
                self.cancel_leftovers("it could not start");
                break;
            }
            // Instances hold child tokens of the run's, so a cancel reaches running ones by
            // itself; the loop only needs waking to settle the queued ones.
            let finished = tokio::select! {
                finished = self.running.join_next() => finished,
                () = self.shared.cancel.soft.cancelled(), if !self.cancel_handled => {
                    self.cancel_handled = true;
                    continue;
                }
            };
            match finished {
                Some(Ok((index, record))) => self.instance_finished(index, record),
                Some(Err(error)) => {
                    let _ = self.shared.events.send(RunEvent::Warning {
                        message: format!("a job task failed: {error}"),
                    });
                }
                None => {}
            }
        }
    }

    fn resolve_waiting_jobs(&mut self) {
        for job_index in 0..self.jobs.len() {
            if !matches!(self.jobs[job_index].phase, Phase::Waiting) {
                continue;
            }
            let job = &self.pipeline.jobs[job_index];
            let mut pending = Vec::new();
            for need in &job.needs {
                let Some(need_index) = self.pipeline.jobs.get_index_of(&need.value) else {
                    continue;
                };
                if self.jobs[need_index].result.is_none() {
                    let state = match self.jobs[need_index].phase {
                        Phase::Expanded => "running",
                        _ => "waiting",
                    };
                    pending.push(format!("`{}` ({state})", need.value));
                }
            }
            if !pending.is_empty() {
                let reason = format!("needs {}", pending.join(", "));
                if self.jobs[job_index].waiting_reason.as_ref() != Some(&reason) {
                    let _ = self.shared.events.send(RunEvent::JobWaiting {
                        key: JobKey(job.id.clone()),
                        name: job.id.clone(),
                        reason: reason.clone(),
                    });
                    self.jobs[job_index].waiting_reason = Some(reason);
                }
                continue;
            }
            self.start_job(job_index);
        }
    }

    fn needs_context(&self, job: &Job) -> (Value, JobStatus, Vec<String>) {
        let mut needs = IndexMap::new();
        let mut status = JobStatus::Success;
        let mut not_successful = Vec::new();
        for need in &job.needs {
            let Some(need_index) = self.pipeline.jobs.get_index_of(&need.value) else {
                continue;
            };
            let Some(result) = &self.jobs[need_index].result else {
                continue;
            };
            if result.status != Status::Success {
                not_successful.push(format!("`{}` ended {}", need.value, result.status.as_str()));
            }
            if result.status == Status::Failure || self.ancestor_failed(need_index) {
                status = JobStatus::Failure;
            }
            needs.insert(
                need.value.clone(),
                Value::Object(IndexMap::from([
                    (
                        "result".to_string(),
                        Value::String(result.status.as_str().to_string()),
                    ),
                    (
                        "outputs".to_string(),
                        string_object(result.outputs.clone().into_iter()),
                    ),
                ])),
            );
        }
        if self.shared.cancel.soft.is_cancelled() {
            status = JobStatus::Cancelled;
        }
        (Value::Object(needs), status, not_successful)
    }

    /// Whether any job `job_index` depends on, directly or not, failed: `failure()` in a
    /// job's `if` is true then, as in GitHub.
    fn ancestor_failed(&self, job_index: usize) -> bool {
        let mut stack = vec![job_index];
        let mut seen = vec![false; self.jobs.len()];
        while let Some(index) = stack.pop() {
            if std::mem::replace(&mut seen[index], true) {
                continue;
            }
            if self.jobs[index]
                .result
                .as_ref()
                .is_some_and(|result| result.status == Status::Failure)
            {
                return true;
            }
            for need in &self.pipeline.jobs[index].needs {
                if let Some(need_index) = self.pipeline.jobs.get_index_of(&need.value) {
                    stack.push(need_index);
                }
            }
        }
        false
    }

    /// The job's needs have ended: decide whether it runs, and expand its matrix.
    fn start_job(&mut self, job_index: usize) {
        let pipeline = Arc::clone(&self.pipeline);
        let job = &pipeline.jobs[job_index];
        let (needs, status, not_successful) = self.needs_context(job);
        let mut context = self.shared.base_context();
        context.insert("needs", needs);
        let host = JobLevelHost { status };

        // The `if`, with GitHub's implicit `success() &&` when it calls no status function.
        let decision = match &job.condition {
            None => Ok(status == JobStatus::Success && not_successful.is_empty()),
            Some(condition) => match &condition.kind {
                ConditionKind::Expr(expr) => {
                    if !expr.uses_status_function()
                        && (status != JobStatus::Success || !not_successful.is_empty())
                    {
                        Ok(false)
                    } else {
                        expr.eval(&context, &host)
                            .map(|value| value.is_truthy())
                            .map_err(|error| {
                                format!(
                                    "{}: the job's `if` failed: {error}",
                                    self.shared.locate(condition.span)
                                )
                            })
                    }
                }
                ConditionKind::Mixed(template) => template
                    .eval_to_string(&context, &host)
                    .map(|text| !text.is_empty())
                    .map_err(|error| {
                        format!(
                            "{}: the job's `if` failed: {error}",
                            self.shared.locate(condition.span)
                        )
                    }),
            },
        };
        let skip_reason = match decision {
            Ok(true) => None,
            Ok(false) => Some(if self.shared.cancel.soft.is_cancelled() {
                "the run was cancelled".to_string()
            } else if !not_successful.is_empty()
                && job.condition.as_ref().is_none_or(
                    |c| matches!(&c.kind, ConditionKind::Expr(e) if !e.uses_status_function()),
                )
            {
                format!(
                    "a job it needs did not succeed: {}",
                    not_successful.join(", ")
                )
            } else {
                match &job.condition {
                    Some(condition) => format!("its `if` is false: {}", condition.text.trim()),
                    None => "its `if` is false".to_string(),
                }
            }),
            Err(message) => {
                self.finish_job_without_instances(job_index, Status::Failure, message);
                return;
            }
        };
        if let Some(reason) = skip_reason {
            let status = if self.shared.cancel.soft.is_cancelled() {
                Status::Cancelled
            } else {
                Status::Skipped
            };
            self.finish_job_without_instances(job_index, status, reason);
            return;
        }

        let combinations = match self.expand_matrix(job, &context, &host) {
            Ok(combinations) => combinations,
            Err(message) => {
                self.finish_job_without_instances(job_index, Status::Failure, message);
                return;
            }
        };
        let total = combinations.as_ref().map_or(1, Vec::len);
        let fail_fast = job
            .strategy
            .fail_fast
            .as_ref()
            .is_none_or(|value| value.evaluate(&context, &host, true));
        let max_parallel = job.strategy.max_parallel;
        let combos: Vec<Option<Combination>> = match combinations {
            Some(list) => list.into_iter().map(Some).collect(),
            None => vec![None],
        };
        for (index, combination) in combos.into_iter().enumerate() {
            let key = if total > 1 || combination.is_some() {
                JobKey(format!("{}-{}", job.id, index + 1))
            } else {
                JobKey(job.id.clone())
            };
            let strategy = Value::Object(IndexMap::from([
                ("fail-fast".to_string(), Value::Bool(fail_fast)),
                ("job-index".to_string(), Value::Number(index as f64)),
                ("job-total".to_string(), Value::Number(total as f64)),
                (
                    "max-parallel".to_string(),
                    Value::Number(max_parallel.map_or(total as f64, f64::from)),
                ),
            ]));
            let mut instance_context = context.clone();
            instance_context.insert(
                "matrix",
                Value::Object(combination.clone().unwrap_or_default()),
            );
            instance_context.insert("strategy", strategy.clone());
            // The name may use the matrix (`name: test on ${{ matrix.os }}`), so it is
            // evaluated per instance; without a name, the matrix values are appended.
            let base_name = job
                .name
                .as_ref()
                .and_then(|name| name.value.eval_to_string(&instance_context, &host).ok())
                .unwrap_or_else(|| job.id.clone());
            let name = match &combination {
                Some(combination) if job.name.is_none() => {
                    format!("{base_name} {}", matrix::display_suffix(combination))
                }
                _ => base_name,
            };
            let name = self.shared.masker.mask(&name);
            let continue_on_error = job
                .continue_on_error
                .as_ref()
                .is_some_and(|value| value.evaluate(&instance_context, &host, false));
            let concurrency = job.concurrency.as_ref().and_then(|concurrency| {
                concurrency
                    .group
                    .value
                    .eval_to_string(&instance_context, &host)
                    .ok()
                    .map(|group| (group, concurrency.cancel_in_progress))
            });
            let instance_index = self.instances.len();
            self.instances.push(Instance {
                job_index,
                key,
                name,
                matrix: combination,
                strategy,
                state: InstanceState::Queued,
                cancel: Cancel {
                    soft: self.shared.cancel.soft.child_token(),
                    hard: self.shared.cancel.hard.child_token(),
                },
                waiting_reason: None,
                concurrency,
                record: None,
                continue_on_error,
                fail_fast,
                max_parallel,
            });
            self.jobs[job_index].instances.push(instance_index);
        }
        self.jobs[job_index].phase = Phase::Expanded;
        let instances = self.jobs[job_index]
            .instances
            .iter()
            .map(|&i| {
                (
                    self.instances[i].key.clone(),
                    self.instances[i].name.clone(),
                )
            })
            .collect();
        let _ = self.shared.events.send(RunEvent::JobPlanned {
            job: JobKey(job.id.clone()),
            instances,
        });
    }

    fn expand_matrix(
        &self,
        job: &Job,
        context: &Context,
        host: &JobLevelHost,
    ) -> Result<Option<Vec<Combination>>, String> {
        let Some(matrix) = &job.strategy.matrix else {
            return Ok(None);
        };
        let locate = |span| self.shared.locate(span);
        let evaluate_list = |values: &MatrixValues, span| -> Result<Vec<Value>, String> {
            match values {
                MatrixValues::Literal(items) => items
                    .iter()
                    .map(|item| {
                        evaluate_deep(item, context, host)
                            .map_err(|e| format!("{}: {e}", locate(span)))
                    })
                    .collect(),
                MatrixValues::Template(template) => {
                    match template
                        .eval(context, host)
                        .map_err(|e| format!("{}: {e}", locate(span)))?
                    {
                        Value::Array(items) => Ok(items),
                        other => Err(format!(
                            "{}: the expression gives {}, not a list",
                            locate(span),
                            other.kind_name()
                        )),
                    }
                }
            }
        };
        let (axes, include, exclude) = match matrix {
            Matrix::Axes {
                axes,
                include,
                exclude,
            } => {
                let mut evaluated = IndexMap::new();
                for (name, values) in axes {
                    evaluated.insert(name.clone(), evaluate_list(&values.value, values.span)?);
                }
                (
                    evaluated,
                    evaluate_list(&include.value, include.span)?,
                    evaluate_list(&exclude.value, exclude.span)?,
                )
            }
            Matrix::Template(template) => {
                let value = template
                    .value
                    .eval(context, host)
                    .map_err(|e| format!("{}: {e}", locate(template.span)))?;
                let Value::Object(object) = value else {
                    return Err(format!(
                        "{}: the matrix expression gives {}, not a mapping",
                        locate(template.span),
                        value.kind_name()
                    ));
                };
                let mut axes = IndexMap::new();
                let mut include = Vec::new();
                let mut exclude = Vec::new();
                for (name, value) in object {
                    let items = match value {
                        Value::Array(items) => items,
                        other => {
                            return Err(format!(
                                "{}: matrix axis `{name}` is {}, not a list",
                                locate(template.span),
                                other.kind_name()
                            ));
                        }
                    };
                    match name.as_str() {
                        "include" => include = items,
                        "exclude" => exclude = items,
                        _ => {
                            axes.insert(name, items);
                        }
                    }
                }
                (axes, include, exclude)
            }
        };
        matrix::expand(&axes, &include, &exclude)
            .map(Some)
            .map_err(|error| format!("job `{}`: {error}", job.id))
    }

    /// A job that ends before any instance runs: skipped, or failed in its `if` or matrix.
    fn finish_job_without_instances(&mut self, job_index: usize, status: Status, reason: String) {
        let job = &self.pipeline.jobs[job_index];
        let reason = self.shared.masker.mask(&reason);
        let record = JobRecord::unstarted(&job.id, &job.id, None, status, &reason);
        let _ = self.shared.events.send(RunEvent::JobFinished {
            key: JobKey(job.id.clone()),
            name: job.id.clone(),
            status,
            reason: Some(reason),
            duration: Duration::ZERO,
        });
        let instance_index = self.instances.len();
        self.instances.push(Instance {
            job_index,
            key: JobKey(job.id.clone()),
            name: job.id.clone(),
            matrix: None,
            strategy: Value::Null,
            state: InstanceState::Done,
            cancel: Cancel::default(),
            waiting_reason: None,
            concurrency: None,
            record: Some(record),
            continue_on_error: false,
            fail_fast: false,
            max_parallel: None,
        });
        let slot = &mut self.jobs[job_index];
        slot.instances.push(instance_index);
        slot.phase = Phase::Done;
        slot.result = Some(JobResult {
            status,
            outputs: IndexMap::new(),
        });
    }

    fn start_ready_instances(&mut self) {
        let running_total = self
            .instances
            .iter()
            .filter(|instance| matches!(instance.state, InstanceState::Running))
            .count();
        let mut running_total = running_total;
        for index in 0..self.instances.len() {
            if !matches!(self.instances[index].state, InstanceState::Queued) {
                continue;
            }
            if self.instances[index].cancel.soft.is_cancelled() {
                self.finish_unstarted(index, Status::Cancelled, "cancelled before it started");
                continue;
            }
            // A concurrency group keeps one pending member, as GitHub's does: while the group
            // is held, an older pending member gives way to a newer one.
            if let Some((group, _)) = &self.instances[index].concurrency
                && self.groups.contains_key(group)
                && let Some(newer) = (index + 1..self.instances.len()).find(|&other| {
                    matches!(self.instances[other].state, InstanceState::Queued)
                        && self.instances[other]
                            .concurrency
                            .as_ref()
                            .is_some_and(|(other_group, _)| other_group == group)
                })
            {
                let reason = format!(
                    "superseded in concurrency group `{group}` by `{}`, which was queued later (a group keeps one pending member)",
                    self.instances[newer].name
                );
                self.finish_unstarted(index, Status::Cancelled, &reason);
                continue;
            }
            let job_index = self.instances[index].job_index;
            let reason = if running_total >= self.shared.request.parallelism {
                Some(format!(
                    "all {} job slots are busy (--jobs {})",
                    self.shared.request.parallelism, self.shared.request.parallelism
                ))
            } else if let Some(max) = self.instances[index].max_parallel
                && self
                    .instances
                    .iter()
                    .filter(|other| {
                        other.job_index == job_index
                            && matches!(other.state, InstanceState::Running)
                    })
                    .count()
                    >= max as usize
            {
                Some(format!(
                    "`strategy.max-parallel` is {max} and {max} are running"
                ))
            } else if let Some((group, cancel_in_progress)) = &self.instances[index].concurrency
                && let Some(&holder) = self.groups.get(group)
            {
                if *cancel_in_progress {
                    self.instances[holder].cancel.soft.cancel();
                    Some(format!(
                        "cancelling `{}`, which holds concurrency group `{group}`",
                        self.instances[holder].name
                    ))
                } else {
                    Some(format!(
                        "concurrency group `{group}` is held by `{}`",
                        self.instances[holder].name
                    ))
                }
            } else {
                None
            };
            if let Some(reason) = reason {
                if self.instances[index].waiting_reason.as_ref() != Some(&reason) {
                    let _ = self.shared.events.send(RunEvent::JobWaiting {
                        key: self.instances[index].key.clone(),
                        name: self.instances[index].name.clone(),
                        reason: reason.clone(),
                    });
                    self.instances[index].waiting_reason = Some(reason);
                }
                continue;
            }
            running_total += 1;
            self.launch(index);
        }
    }

    fn launch(&mut self, index: usize) {
        let instance = &mut self.instances[index];
        instance.state = InstanceState::Running;
        if let Some((group, _)) = &instance.concurrency {
            self.groups.insert(group.clone(), index);
        }
        let job_index = instance.job_index;
        let needs = {
            let job = &self.pipeline.jobs[job_index];
            self.needs_context(job).0
        };
        let instance = &self.instances[index];
        let plan = job::InstancePlan {
            job_index,
            key: instance.key.clone(),
            name: instance.name.clone(),
            matrix: instance.matrix.clone(),
            strategy: instance.strategy.clone(),
            needs,
            cancel: instance.cancel.clone(),
        };
        let shared = Arc::clone(&self.shared);
        self.running.spawn(async move {
            let record = job::run_instance(shared, plan).await;
            (index, record)
        });
    }

    fn finish_unstarted(&mut self, index: usize, status: Status, reason: &str) {
        let instance = &mut self.instances[index];
        instance.state = InstanceState::Done;
        let record = JobRecord::unstarted(
            &self.pipeline.jobs[instance.job_index].id,
            &instance.name,
            instance
                .matrix
                .as_ref()
                .map(|combination| Value::Object(combination.clone()).to_json()),
            status,
            reason,
        );
        let _ = self.shared.events.send(RunEvent::JobFinished {
            key: instance.key.clone(),
            name: instance.name.clone(),
            status,
            reason: Some(reason.to_string()),
            duration: Duration::ZERO,
        });
        instance.record = Some(record);
        let job_index = instance.job_index;
        self.maybe_finish_job(job_index);
    }

    fn instance_finished(&mut self, index: usize, mut record: JobRecord) {
        let instance = &mut self.instances[index];
        instance.state = InstanceState::Done;
        if let Some((group, _)) = &instance.concurrency
            && self.groups.get(group) == Some(&index)
        {
            self.groups.remove(group);
        }
        let failed = record.status == Status::Failure;
        if failed && instance.continue_on_error {
            record.reason = Some(format!(
                "{} (continue-on-error: the run goes on)",
                record.reason.as_deref().unwrap_or("failed")
            ));
        }
        let fail_fast = failed && instance.fail_fast && !instance.continue_on_error;
        let job_index = instance.job_index;
        let _ = self.shared.events.send(RunEvent::JobFinished {
            key: instance.key.clone(),
            name: instance.name.clone(),
            status: record.status,
            reason: record.reason.clone(),
            duration: Duration::from_millis(record.duration_ms),
        });
        instance.record = Some(record);
        if fail_fast {
            for &sibling in &self.jobs[job_index].instances {
                if sibling != index && !matches!(self.instances[sibling].state, InstanceState::Done)
                {
                    self.instances[sibling].cancel.soft.cancel();
                }
            }
        }
        // Keep what has ended on disk, so a run killed later still tells what it finished.
        self.write_partial_record();
        self.maybe_finish_job(job_index);
    }

    fn write_partial_record(&self) {
        let jobs: Vec<JobRecord> = self
            .instances
            .iter()
            .filter_map(|instance| instance.record.clone())
            .collect();
        let partial =
            serde_json::json!({ "status": "running", "id": self.shared.run_id, "jobs": jobs });
        if let Err(error) =
            write_json_atomically(&self.shared.run_dir, "run.partial.json", &partial)
        {
            let _ = self.shared.events.send(RunEvent::Warning {
                message: format!("the partial run record could not be written: {error}"),
            });
        }
    }

    fn maybe_finish_job(&mut self, job_index: usize) {
        let slot = &self.jobs[job_index];
        if !matches!(slot.phase, Phase::Expanded)
            || slot
                .instances
                .iter()
                .any(|&i| !matches!(self.instances[i].state, InstanceState::Done))
        {
            return;
        }
        let mut status = Status::Success;
        let mut outputs = IndexMap::new();
        for &i in &slot.instances {
            let instance = &self.instances[i];
            let Some(record) = &instance.record else {
                continue;
            };
            match record.status {
                Status::Failure if !instance.continue_on_error => status = Status::Failure,
                Status::Cancelled if status == Status::Success => status = Status::Cancelled,
                _ => {}
            }
            for (name, value) in &record.outputs {
                if !value.is_empty() {
                    outputs.insert(name.clone(), value.clone());
                }
            }
        }
        let slot = &mut self.jobs[job_index];
        slot.phase = Phase::Done;
        slot.result = Some(JobResult { status, outputs });
    }

    fn cancel_leftovers(&mut self, reason: &str) {
        for index in 0..self.instances.len() {
            if matches!(self.instances[index].state, InstanceState::Queued) {
                self.finish_unstarted(index, Status::Cancelled, reason);
            }
        }
        for slot in &mut self.jobs {
            if slot.in_run && matches!(slot.phase, Phase::Waiting) {
                slot.phase = Phase::Done;
            }
        }
    }
}

/// Evaluates the templates in the strings of a matrix value, keeping its shape.
fn evaluate_deep(value: &Value, context: &Context, host: &dyn Host) -> Result<Value, String> {
    match value {
        Value::String(text) if text.contains("${{") => {
            let template =
                sorat_expr::Template::parse(text, &sorat_expr::NameSet::allowing_context(context))
                    .map_err(|error| error.to_string())?;
            template
                .eval(context, host)
                .map_err(|error| error.to_string())
        }
        Value::Array(items) => items
            .iter()
            .map(|item| evaluate_deep(item, context, host))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Value::Object(map) => map
            .iter()
            .map(|(key, item)| evaluate_deep(item, context, host).map(|v| (key.clone(), v)))
            .collect::<Result<_, _>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}
