//! One job instance: its workspace, services, steps, post steps and outputs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use sorat_expr::{Context, Host, JobStatus, Template, Value};
use tokio_util::sync::CancellationToken;

use super::builtins::{self, BuiltinOutcome, PostAction};
use super::files::{parse_key_values, parse_path_file};
use super::log::{LogWriter, SharedMasker};
use super::process::{Exit, ProcessSpec, run_process};
use super::services::{self, RunningService};
use super::{Cancel, RunShared, string_object};
use crate::events::{JobKey, RunEvent};
use crate::junit::TestReport;
use crate::matrix::Combination;
use crate::record::{JobRecord, LogRecord, Status, StepRecord};
use crate::spec::{ConditionKind, Job, Located, Retry, Step, StepAction, Timeout};

/// GitHub's default job time limit.
const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(360 * 60);

/// What the scheduler decided about an instance before it starts.
pub(crate) struct InstancePlan {
    pub(crate) job_index: usize,
    pub(crate) key: JobKey,
    pub(crate) name: String,
    pub(crate) matrix: Option<Combination>,
    pub(crate) strategy: Value,
    pub(crate) needs: Value,
    pub(crate) cancel: Cancel,
}

/// Runs an instance, again on failure when the job has `retry`.
pub(crate) async fn run_instance(shared: Arc<RunShared>, plan: InstancePlan) -> JobRecord {
    let pipeline = Arc::clone(&shared.request.pipeline);
    let job = &pipeline.jobs[plan.job_index];
    let _ = shared.events.send(RunEvent::JobStarted {
        key: plan.key.clone(),
        name: plan.name.clone(),
        steps: job.steps.len(),
    });
    let mut attempt = 1;
    loop {
        let mut record = run_attempt(&shared, job, &plan, attempt).await;
        record.attempts = attempt;
        let failed_code = record
            .steps
            .iter()
            .find(|step| step.status == Status::Failure)
            .and_then(|step| step.exit_code);
        if record.status == Status::Failure
            && !plan.cancel.soft.is_cancelled()
            && let Some(retry) = &job.retry
            && attempt <= retry.count
            && retry_allows(retry, failed_code)
        {
            let _ = shared.events.send(RunEvent::JobWaiting {
                key: plan.key.clone(),
                name: plan.name.clone(),
                reason: format!(
                    "attempt {attempt} failed; retrying ({} of {})",
                    attempt, retry.count
                ),
            });
            tokio::select! {
                () = tokio::time::sleep(retry.delay) => {}
                () = plan.cancel.soft.cancelled() => return record,
            }
            attempt += 1;
            continue;
        }
        return record;
    }
}

fn retry_allows(retry: &Retry, exit_code: Option<i32>) -> bool {
    retry.exit_codes.is_empty() || exit_code.is_some_and(|code| retry.exit_codes.contains(&code))
}

/// The state of a job while its steps run.
pub(crate) struct JobRun<'a> {
    pub(crate) shared: &'a RunShared,
    pub(crate) job: &'a Job,
    pub(crate) key: JobKey,
    pub(crate) workspace: PathBuf,
    /// Where `checkout` puts the repository: the workspace, or above it for a project in a
    /// subfolder.
    pub(crate) checkout_root: PathBuf,
    pub(crate) temp: PathBuf,
    pub(crate) log_dir: PathBuf,
    pub(crate) masker: SharedMasker,
    /// Variables from the pipeline's and the job's `env`, then `$SORAT_ENV`.
    pub(crate) env: IndexMap<String, String>,
    /// Folders added with `$SORAT_PATH`, newest first.
    pub(crate) path_prefix: Vec<String>,
    pub(crate) context: Context,
    pub(crate) steps_context: IndexMap<String, Value>,
    pub(crate) status: JobStatus,
    pub(crate) tests: TestReport,
    pub(crate) post: Vec<PostAction>,
    pub(crate) default_shell: Option<String>,
    pub(crate) default_working_directory: Option<Located<Template>>,
}

/// A host for step expressions: `hashFiles` over the workspace, and the job's status.
pub(crate) struct StepHost<'a> {
    pub(crate) workspace: &'a Path,
    pub(crate) status: JobStatus,
}

impl Host for StepHost<'_> {
    fn hash_files(&self, patterns: &[String]) -> Result<String, String> {
        builtins::hash_files(self.workspace, patterns)
    }

    fn job_status(&self) -> JobStatus {
        self.status
    }
}

async fn run_attempt(
    shared: &RunShared,
    job: &Job,
    plan: &InstancePlan,
    attempt: u32,
) -> JobRecord {
    let started = Instant::now();
    let started_at = format!("{:.3}", jiff::Timestamp::now());
    let folder = if attempt == 1 {
        plan.key.0.clone()
    } else {
        format!("{}.attempt{attempt}", plan.key.0)
    };
    let checkout_root = shared.run_dir.join("work").join(&folder);
    let workspace = match crate::cas::join_relative(&checkout_root, &shared.request.project_dir) {
        Ok(path) => path,
        Err(_) => checkout_root.clone(),
    };
    let temp = shared.run_dir.join("tmp").join(&folder);
    let log_dir = shared.run_dir.join("logs").join(&folder);
    let mut record = JobRecord {
        id: job.id.clone(),
        name: plan.name.clone(),
        matrix: plan
            .matrix
            .as_ref()
            .map(|combination| Value::Object(combination.clone()).to_json()),
        status: Status::Success,
        reason: None,
        outputs: IndexMap::new(),
        started_at: Some(started_at),
        duration_ms: 0,
        attempts: attempt,
        steps: Vec::new(),
        services: Vec::new(),
        tests: TestReport::default(),
    };
    for dir in [&workspace, &temp, &log_dir] {
        if let Err(error) = std::fs::create_dir_all(dir) {
            record.status = Status::Failure;
            record.reason = Some(format!("cannot create {}: {error}", dir.display()));
            return record;
        }
    }

    let mut context = shared.base_context();
    context.insert("needs", plan.needs.clone());
    context.insert(
        "matrix",
        Value::Object(plan.matrix.clone().unwrap_or_default()),
    );
    context.insert("strategy", plan.strategy.clone());
    let runner = Value::Object(IndexMap::from([
        ("os".to_string(), Value::String("Linux".into())),
        ("arch".to_string(), Value::String(runner_arch().into())),
        ("name".to_string(), Value::String("sorat-local".into())),
        (
            "environment".to_string(),
            Value::String("self-hosted".into()),
        ),
        (
            "temp".to_string(),
            Value::String(temp.display().to_string()),
        ),
        (
            "tool_cache".to_string(),
            Value::String(temp.display().to_string()),
        ),
        ("debug".to_string(), Value::String(String::new())),
    ]));
    context.insert("runner", runner);
    let mut github = shared.github.clone();
    if let Value::Object(map) = &mut github {
        map.insert("job".into(), Value::String(job.id.clone()));
        map.insert(
            "workspace".into(),
            Value::String(workspace.display().to_string()),
        );
    }
    context.insert("github", github.clone());
    context.insert("sorat", github);
    context.insert(
        "job",
        Value::Object(IndexMap::from([
            ("status".to_string(), Value::String("success".into())),
            ("services".to_string(), Value::Object(IndexMap::new())),
        ])),
    );

    let host = StepHost {
        workspace: &workspace,
        status: JobStatus::Success,
    };
    // The job's environment: the pipeline's, then the job's, each value evaluated once.
    let mut env = IndexMap::new();
    let pipeline = &shared.request.pipeline;
    for (scope, map) in [("pipeline", &pipeline.env), ("job", &job.env)] {
        context.insert("env", string_object(env.clone().into_iter()));
        for (name, template) in map {
            match template.value.eval_to_string(&context, &host) {
                Ok(value) => {
                    env.insert(name.clone(), value);
                }
                Err(error) => {
                    record.status = Status::Failure;
                    record.reason = Some(format!(
                        "{}: the {scope}'s env `{name}`: {error}",
                        shared.locate(template.span)
                    ));
                    return finish(record, started, shared, &checkout_root, &temp);
                }
            }
        }
    }
    context.insert("env", string_object(env.clone().into_iter()));

    let job_timeout = match &job.timeout {
        None => Ok(DEFAULT_JOB_TIMEOUT),
        Some(timeout) => evaluate_timeout(shared, timeout, &context, &host),
    };
    let job_timeout = match job_timeout {
        Ok(timeout) => timeout,
        Err(message) => {
            record.status = Status::Failure;
            record.reason = Some(message);
            return finish(record, started, shared, &checkout_root, &temp);
        }
    };

    let masker: SharedMasker = Arc::new(RwLock::new(shared.masker.clone()));
    let mut run = JobRun {
        shared,
        job,
        key: plan.key.clone(),
        workspace: workspace.clone(),
        checkout_root: checkout_root.clone(),
        temp: temp.clone(),
        log_dir,
        masker,
        env,
        path_prefix: Vec::new(),
        context,
        steps_context: IndexMap::new(),
        status: JobStatus::Success,
        tests: TestReport::default(),
        post: Vec::new(),
        default_shell: job
            .defaults
            .shell
            .clone()
            .or_else(|| pipeline.defaults.shell.clone()),
        default_working_directory: job
            .defaults
            .working_directory
            .clone()
            .or_else(|| pipeline.defaults.working_directory.clone()),
    };

    // The job's own cancellation: the run's, fail-fast from a sibling, or its time limit.
    let job_cancel = plan.cancel.soft.child_token();
    let timed_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let timer = {
        let job_cancel = job_cancel.clone();
        let timed_out = Arc::clone(&timed_out);
        tokio::spawn(async move {
            tokio::time::sleep(job_timeout).await;
            timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
            job_cancel.cancel();
        })
    };

    let mut running_services: Vec<RunningService> = Vec::new();
    let mut service_failure = None;
    for service in job.services.values() {
        match services::start(&mut run, service, &job_cancel).await {
            Ok(running) => {
                running_services.push(running);
            }
            Err((running, message)) => {
                if let Some(running) = running {
                    running_services.push(running);
                }
                service_failure = Some(message);
                break;
            }
        }
    }
    if let Value::Object(job_context) = run.context.get("job").cloned().unwrap_or(Value::Null) {
        let mut job_context = job_context;
        job_context.insert(
            "services".into(),
            Value::Object(
                running_services
                    .iter()
                    .map(|service| (service.name.clone(), service.context_value()))
                    .collect(),
            ),
        );
        run.context.insert("job", Value::Object(job_context));
    }

    if let Some(message) = service_failure {
        run.status = JobStatus::Failure;
        record.reason = Some(message);
    } else {
        for step in &job.steps {
            let step_record = run_step(&mut run, step, &job_cancel, &plan.cancel.hard).await;
            record.steps.push(step_record);
        }
        // Post steps run in reverse order, like GitHub's, and only after success (a cache is
        // saved from a job that worked).
        let post = std::mem::take(&mut run.post);
        for action in post.into_iter().rev() {
            if run.status == JobStatus::Success && !job_cancel.is_cancelled() {
                let step_record = builtins::run_post(&mut run, action).await;
                if step_record.status == Status::Failure {
                    run.status = JobStatus::Failure;
                }
                record.steps.push(step_record);
            }
        }
    }

    for service in running_services {
        record.services.push(service.stop().await);
    }
    timer.abort();

    // Outputs are evaluated last, with every step's outputs known.
    let host = StepHost {
        workspace: &workspace,
        status: run.status,
    };
    run.context
        .insert("steps", Value::Object(run.steps_context.clone()));
    run.context
        .insert("env", string_object(run.env.clone().into_iter()));
    for (name, template) in &job.outputs {
        match template.value.eval_to_string(&run.context, &host) {
            Ok(value) => {
                let masked = run
                    .masker
                    .read()
                    .map(|m| m.mask(&value))
                    .unwrap_or_default();
                record.outputs.insert(name.clone(), masked);
            }
            Err(error) => {
                run.status = JobStatus::Failure;
                record.reason = Some(format!(
                    "{}: output `{name}`: {error}",
                    shared.locate(template.span)
                ));
            }
        }
    }

    record.tests = std::mem::take(&mut run.tests);
    let was_timed_out = timed_out.load(std::sync::atomic::Ordering::SeqCst);
    record.status = if was_timed_out {
        record.reason = Some(format!(
            "the job timed out after {}",
            sorat_config::duration::format_duration(job_timeout)
        ));
        Status::Failure
    } else {
        match run.status {
            JobStatus::Success => Status::Success,
            JobStatus::Failure => Status::Failure,
            JobStatus::Cancelled => Status::Cancelled,
        }
    };
    if record.reason.is_none() {
        record.reason = match record.status {
            Status::Failure => record
                .steps
                .iter()
                .find(|step| step.status == Status::Failure)
                .map(|step| match &step.reason {
                    Some(reason) => format!("step `{}` failed: {reason}", step.name),
                    None => format!("step `{}` failed", step.name),
                }),
            Status::Cancelled => Some("the job was cancelled".into()),
            _ => None,
        };
    }
    finish(record, started, shared, &checkout_root, &temp)
}

/// The text with the job's secrets masked.
fn mask_with(masker: &SharedMasker, text: &str) -> String {
    masker
        .read()
        .map(|masker| masker.mask(text))
        .unwrap_or_else(|_| "***".to_string())
}

fn finish(
    mut record: JobRecord,
    started: Instant,
    shared: &RunShared,
    workspace: &Path,
    temp: &Path,
) -> JobRecord {
    record.duration_ms = started.elapsed().as_millis() as u64;
    // Whatever the reasons quote (an input, a path, a ref) may hold a secret.
    record.name = shared.masker.mask(&record.name);
    record.reason = record.reason.map(|reason| shared.masker.mask(&reason));
    let _ = std::fs::remove_dir_all(temp);
    if !shared.request.keep_workspaces {
        let _ = std::fs::remove_dir_all(workspace);
    }
    record
}

fn runner_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "X64",
        "aarch64" => "ARM64",
        "x86" => "X86",
        "arm" => "ARM",
        other => other,
    }
}

fn evaluate_timeout(
    shared: &RunShared,
    timeout: &Timeout,
    context: &Context,
    host: &dyn Host,
) -> Result<Duration, String> {
    match timeout {
        Timeout::Fixed(duration) => Ok(*duration),
        Timeout::Minutes(template) => {
            let value = template.value.eval(context, host).map_err(|error| {
                format!(
                    "{}: `timeout-minutes`: {error}",
                    shared.locate(template.span)
                )
            })?;
            let minutes = match &value {
                Value::Number(number) => *number,
                Value::String(text) => text.trim().parse::<f64>().unwrap_or(f64::NAN),
                _ => f64::NAN,
            };
            if let Some(duration) = sorat_config::duration::from_minutes(minutes) {
                Ok(duration)
            } else {
                Err(format!(
                    "{}: `timeout-minutes` evaluated to `{}`, not a positive number of minutes (at most about 31 700 years)",
                    shared.locate(template.span),
                    value.to_display_string()
                ))
            }
        }
    }
}

impl JobRun<'_> {
    fn status_word(&self) -> &'static str {
        match self.status {
            JobStatus::Success => "success",
            JobStatus::Failure => "failure",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// The context for a step: the job's, with the current `steps`, `env` and `job.status`.
    fn step_context(&self, step_env: &IndexMap<String, String>) -> Context {
        let mut context = self.context.clone();
        context.insert("steps", Value::Object(self.steps_context.clone()));
        let mut env = self.env.clone();
        env.extend(step_env.iter().map(|(k, v)| (k.clone(), v.clone())));
        context.insert("env", string_object(env.into_iter()));
        if let Some(Value::Object(mut job)) = context.get("job").cloned() {
            job.insert("status".into(), Value::String(self.status_word().into()));
            context.insert("job", Value::Object(job));
        }
        context
    }

    pub(crate) fn new_log(&self, file_name: &str) -> std::io::Result<Arc<Mutex<LogWriter>>> {
        LogWriter::create(
            &self.log_dir.join(file_name),
            Arc::clone(&self.masker),
            self.shared.events.clone(),
            self.key.clone(),
        )
        .map(|log| Arc::new(Mutex::new(log)))
    }

    /// The environment of a process: the machine's, then Sorat's and GitHub's variables, then
    /// the pipeline's, the job's, `$SORAT_ENV`'s and the step's.
    pub(crate) fn process_env(
        &self,
        step_env: &IndexMap<String, String>,
        files: Option<&CommandFiles>,
    ) -> Vec<(String, String)> {
        let mut env: IndexMap<String, String> = std::env::vars().collect();
        env.insert("CI".into(), "true".into());
        // The pipeline's, the job's, `$GITHUB_ENV`'s and the step's variables, then the
        // runner's own on top: as in GitHub, `GITHUB_*` and `RUNNER_*` cannot be overwritten
        // (a step must not redirect another's `$GITHUB_OUTPUT`).
        for (name, value) in self.env.iter().chain(step_env) {
            env.insert(name.clone(), value.clone());
        }
        let request = &self.shared.request;
        let workspace = self.workspace.display().to_string();
        let temp = self.temp.display().to_string();
        let run_id = self.shared.run_id.to_string();
        let mut defaults: Vec<(&str, String)> = vec![
            ("SHA", request.repo.sha.clone()),
            ("REF", request.repo.git_ref.clone()),
            ("REF_NAME", request.repo.ref_name.clone()),
            ("REF_TYPE", request.repo.ref_type.clone()),
            ("WORKSPACE", workspace),
            ("RUN_ID", run_id.clone()),
            ("RUN_NUMBER", run_id),
            ("RUN_ATTEMPT", "1".into()),
            ("JOB", self.job.id.clone()),
            ("EVENT_NAME", request.event.github_name().into()),
            ("REPOSITORY", request.repo.name.clone()),
            (
                "ACTOR",
                std::env::var("USER").unwrap_or_else(|_| "local".into()),
            ),
            (
                "WORKFLOW",
                request.pipeline.name.clone().unwrap_or_default(),
            ),
        ];
        if let Some(files) = files {
            defaults.push(("OUTPUT", files.output.display().to_string()));
            defaults.push(("ENV", files.env.display().to_string()));
            defaults.push(("PATH_FILE", files.path.display().to_string()));
            defaults.push(("STEP_SUMMARY", files.summary.display().to_string()));
        }
        for (name, value) in defaults {
            // `$SORAT_PATH` names the path file, as `$GITHUB_PATH` does; `PATH_FILE` is only
            // our key here, to keep `SORAT_PATH` from reading like a search path.
            let (sorat_name, github_name) = if name == "PATH_FILE" {
                ("SORAT_PATH".to_string(), "GITHUB_PATH".to_string())
            } else {
                (format!("SORAT_{name}"), format!("GITHUB_{name}"))
            };
            env.insert(sorat_name, value.clone());
            env.insert(github_name, value);
        }
        env.insert("SORAT".into(), "true".into());
        env.insert("RUNNER_OS".into(), "Linux".into());
        env.insert("RUNNER_ARCH".into(), runner_arch().into());
        env.insert("RUNNER_NAME".into(), "sorat-local".into());
        env.insert("RUNNER_TEMP".into(), temp.clone());
        env.insert("RUNNER_TOOL_CACHE".into(), temp);
        if !self.path_prefix.is_empty() {
            let current = env.get("PATH").cloned().unwrap_or_default();
            let mut parts = self.path_prefix.clone();
            if !current.is_empty() {
                parts.push(current);
            }
            env.insert("PATH".into(), parts.join(":"));
        }
        env.into_iter().collect()
    }
}

/// Whether a variable belongs to the runner and cannot be set by `$GITHUB_ENV`.
fn is_runner_variable(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.starts_with("GITHUB_") || upper.starts_with("SORAT_") || upper.starts_with("RUNNER_")
}

/// The files of one step's workflow commands.
pub(crate) struct CommandFiles {
    pub(crate) output: PathBuf,
    pub(crate) env: PathBuf,
    pub(crate) path: PathBuf,
    pub(crate) summary: PathBuf,
}

impl CommandFiles {
    fn create(dir: &Path) -> std::io::Result<CommandFiles> {
        std::fs::create_dir_all(dir)?;
        let files = CommandFiles {
            output: dir.join("output"),
            env: dir.join("env"),
            path: dir.join("path"),
            summary: dir.join("summary.md"),
        };
        for file in [&files.output, &files.env, &files.path, &files.summary] {
            std::fs::write(file, "")?;
        }
        Ok(files)
    }
}

/// What one attempt of a step came to.
pub(crate) struct StepOutcome {
    pub(crate) status: Status,
    pub(crate) exit_code: Option<i32>,
    pub(crate) reason: Option<String>,
    pub(crate) outputs: IndexMap<String, String>,
    pub(crate) summary: Option<String>,
    pub(crate) timed_out: bool,
}

impl StepOutcome {
    pub(crate) fn failure(reason: impl Into<String>) -> StepOutcome {
        StepOutcome {
            status: Status::Failure,
            exit_code: None,
            reason: Some(reason.into()),
            outputs: IndexMap::new(),
            summary: None,
            timed_out: false,
        }
    }
}

async fn run_step(
    run: &mut JobRun<'_>,
    step: &Step,
    job_cancel: &CancellationToken,
    hard_cancel: &CancellationToken,
) -> StepRecord {
    let shared = run.shared;
    // Whether the job was cancelled when the step was chosen to run: then it runs only by its
    // `if` (`always()`), and the job's cancellation must not stop it. Read once: a cancellation
    // that comes later, while the step starts, stops it like any running step.
    let cancelled_before = job_cancel.is_cancelled();
    if cancelled_before && run.status == JobStatus::Success {
        run.status = JobStatus::Cancelled;
    }
    let empty_env = IndexMap::new();
    let context = run.step_context(&empty_env);
    let workspace = run.workspace.clone();
    let host = StepHost {
        workspace: &workspace,
        status: run.status,
    };
    let name = step_display_name(step, &context, &host);
    let name = run.masker.read().map(|m| m.mask(&name)).unwrap_or(name);
    let mut record = StepRecord {
        name: name.clone(),
        id: step.id.as_ref().map(|id| id.value.clone()),
        status: Status::Skipped,
        outcome: Status::Skipped,
        exit_code: None,
        reason: None,
        outputs: IndexMap::new(),
        started_at: None,
        duration_ms: 0,
        attempts: 0,
        log: None,
        summary: None,
    };

    // `if`, with the implicit `success() &&`.
    let should_run = match &step.condition {
        None => Ok(run.status == JobStatus::Success),
        Some(condition) => match &condition.kind {
            ConditionKind::Expr(expr) => {
                if !expr.uses_status_function() && run.status != JobStatus::Success {
                    Ok(false)
                } else {
                    expr.eval(&context, &host)
                        .map(|value| value.is_truthy())
                        .map_err(|error| {
                            format!(
                                "{}: the step's `if` failed: {error}",
                                shared.locate(condition.span)
                            )
                        })
                }
            }
            ConditionKind::Mixed(template) => template
                .eval_to_string(&context, &host)
                .map(|text| !text.is_empty())
                .map_err(|error| {
                    format!(
                        "{}: the step's `if` failed: {error}",
                        shared.locate(condition.span)
                    )
                }),
        },
    };
    match should_run {
        Ok(true) => {}
        Ok(false) => {
            record.reason = Some(match (&step.condition, run.status) {
                (None, JobStatus::Failure) => "an earlier step failed".into(),
                (None, JobStatus::Cancelled) => "the job was cancelled".into(),
                (Some(condition), _) => format!("its `if` is false: {}", condition.text.trim()),
                (None, JobStatus::Success) => "skipped".into(),
            });
            remember_step(run, step, &record);
            return record;
        }
        Err(message) => {
            record.status = Status::Failure;
            record.outcome = Status::Failure;
            record.reason = Some(message);
            run.status = JobStatus::Failure;
            remember_step(run, step, &record);
            return record;
        }
    }

    let _ = shared.events.send(RunEvent::StepStarted {
        key: run.key.clone(),
        index: step.index,
        name: name.clone(),
    });
    let started = Instant::now();
    record.started_at = Some(format!("{:.3}", jiff::Timestamp::now()));
    let log = match run.new_log(&format!("{:02}.log.zst", step.index + 1)) {
        Ok(log) => log,
        Err(error) => {
            record.status = Status::Failure;
            record.outcome = Status::Failure;
            record.reason = Some(format!("cannot create the step's log: {error}"));
            run.status = JobStatus::Failure;
            return record;
        }
    };
    // A step that runs although the job was already cancelled (`if: always()`) can only be
    // stopped by the second Ctrl-C. (Asking the token again here let a cancellation that came
    // after the step was chosen, under an implicit `success()`, run the step to its end.)
    let cancel = if cancelled_before {
        hard_cancel.clone()
    } else {
        job_cancel.clone()
    };

    let outcome = execute_step(run, step, &log, &cancel).await;
    let log_record: Option<LogRecord> = super::log::close_shared(&log);

    record.duration_ms = started.elapsed().as_millis() as u64;
    record.attempts = outcome.1;
    let outcome = outcome.0;
    record.exit_code = outcome.exit_code;
    record.outputs = outcome.outputs;
    record.summary = outcome.summary;
    record.outcome = outcome.status;
    record.reason = outcome.reason.map(|reason| mask_with(&run.masker, &reason));
    let continue_on_error = step
        .continue_on_error
        .as_ref()
        .is_some_and(|value| value.evaluate(&context, &host, false));
    record.status = if outcome.status == Status::Failure && continue_on_error {
        Status::Success
    } else {
        outcome.status
    };
    match record.status {
        Status::Failure => run.status = JobStatus::Failure,
        Status::Cancelled if run.status == JobStatus::Success => run.status = JobStatus::Cancelled,
        _ => {}
    }
    if job_cancel.is_cancelled() && run.status == JobStatus::Success {
        run.status = JobStatus::Cancelled;
    }
    let (tail, lines, log_path) = match &log_record {
        Some(log) => (log.tail.clone(), log.lines, Some(log.path.clone())),
        None => (Vec::new(), 0, None),
    };
    record.log = log_record;
    let _ = shared.events.send(RunEvent::StepFinished {
        key: run.key.clone(),
        index: step.index,
        name,
        status: record.status,
        reason: record.reason.clone(),
        duration: started.elapsed(),
        log_path,
        tail,
        lines,
    });
    remember_step(run, step, &record);
    record
}

/// Adds a step's result to the `steps` context when it has an id.
fn remember_step(run: &mut JobRun<'_>, step: &Step, record: &StepRecord) {
    let Some(id) = &step.id else {
        return;
    };
    run.steps_context.insert(
        id.value.clone(),
        Value::Object(IndexMap::from([
            (
                "outputs".to_string(),
                string_object(record.outputs.clone().into_iter()),
            ),
            (
                "outcome".to_string(),
                Value::String(record.outcome.as_str().into()),
            ),
            (
                "conclusion".to_string(),
                Value::String(record.status.as_str().into()),
            ),
        ])),
    );
}

fn step_display_name(step: &Step, context: &Context, host: &dyn Host) -> String {
    if let Some(name) = &step.name
        && let Ok(text) = name.value.eval_to_string(context, host)
        && !text.trim().is_empty()
    {
        return text;
    }
    match &step.action {
        StepAction::Run { script_source, .. } => {
            let first = script_source
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .unwrap_or("")
                .to_string();
            let mut name = format!("Run {first}");
            if name.chars().count() > 60 {
                name = name.chars().take(59).collect::<String>() + "…";
            }
            name
        }
        StepAction::Uses { written, .. } => format!("Run {}", written.value),
    }
}

/// Runs a step with its retries; returns the last outcome and the number of attempts.
async fn execute_step(
    run: &mut JobRun<'_>,
    step: &Step,
    log: &Arc<Mutex<LogWriter>>,
    cancel: &CancellationToken,
) -> (StepOutcome, u32) {
    let mut attempt = 1;
    loop {
        let outcome = execute_step_once(run, step, log, cancel, attempt).await;
        if outcome.status == Status::Failure
            && !cancel.is_cancelled()
            && !outcome.timed_out
            && let Some(retry) = &step.retry
            && attempt <= retry.count
            && retry_allows(retry, outcome.exit_code)
        {
            if let Ok(mut log) = log.lock() {
                log.note(&format!(
                    "sorat: attempt {attempt} failed{}; retrying ({attempt} of {})",
                    outcome
                        .exit_code
                        .map(|code| format!(" with exit code {code}"))
                        .unwrap_or_default(),
                    retry.count
                ));
            }
            tokio::select! {
                () = tokio::time::sleep(retry.delay) => {}
                () = cancel.cancelled() => return (outcome, attempt),
            }
            attempt += 1;
            continue;
        }
        return (outcome, attempt);
    }
}

async fn execute_step_once(
    run: &mut JobRun<'_>,
    step: &Step,
    log: &Arc<Mutex<LogWriter>>,
    cancel: &CancellationToken,
    attempt: u32,
) -> StepOutcome {
    let shared = run.shared;
    // The step's env first: the rest of the step sees it.
    let base_context = run.step_context(&IndexMap::new());
    let host_status = run.status;
    let mut step_env = IndexMap::new();
    {
        let host = StepHost {
            workspace: &run.workspace,
            status: host_status,
        };
        for (name, template) in &step.env {
            match template.value.eval_to_string(&base_context, &host) {
                Ok(value) => {
                    step_env.insert(name.clone(), value);
                }
                Err(error) => {
                    return StepOutcome::failure(format!(
                        "{}: env `{name}`: {error}",
                        shared.locate(template.span)
                    ));
                }
            }
        }
    }
    let context = run.step_context(&step_env);
    let host = StepHost {
        workspace: &run.workspace,
        status: host_status,
    };
    let timeout = match &step.timeout {
        None => None,
        Some(timeout) => match evaluate_timeout(shared, timeout, &context, &host) {
            Ok(timeout) => Some(timeout),
            Err(message) => return StepOutcome::failure(message),
        },
    };

    match &step.action {
        StepAction::Run {
            script,
            shell,
            working_directory,
            ..
        } => {
            let script_text = match script.value.eval_to_string(&context, &host) {
                Ok(text) => text,
                Err(error) => {
                    return StepOutcome::failure(format!(
                        "{}: `run`: {error}",
                        shared.locate(script.span)
                    ));
                }
            };
            let working_directory = working_directory
                .as_ref()
                .or(run.default_working_directory.as_ref());
            let cwd = match working_directory {
                None => run.workspace.clone(),
                Some(template) => match template.value.eval_to_string(&context, &host) {
                    Ok(dir) => run.workspace.join(dir),
                    Err(error) => {
                        return StepOutcome::failure(format!(
                            "{}: `working-directory`: {error}",
                            shared.locate(template.span)
                        ));
                    }
                },
            };
            if !cwd.is_dir() {
                return StepOutcome::failure(format!(
                    "the working directory {} does not exist",
                    cwd.display()
                ));
            }
            let shell = shell.clone().or_else(|| run.default_shell.clone());
            let command_dir = run
                .temp
                .join("commands")
                .join(format!("{:02}-{attempt}", step.index + 1));
            let files = match CommandFiles::create(&command_dir) {
                Ok(files) => files,
                Err(error) => {
                    return StepOutcome::failure(format!("cannot prepare the step: {error}"));
                }
            };
            let (program, args, script_path) =
                match shell_command(shell.as_deref(), &command_dir, &script_text) {
                    Ok(command) => command,
                    Err(message) => return StepOutcome::failure(message),
                };
            let spec = ProcessSpec {
                program,
                args,
                cwd,
                env: run.process_env(&step_env, Some(&files)),
            };
            let exit = run_process(&spec, Arc::clone(log), timeout, cancel).await;
            let _ = std::fs::remove_file(script_path);
            collect_command_files(run, log, &files, exit)
        }
        StepAction::Uses {
            builtin,
            written,
            with,
        } => {
            let mut inputs = IndexMap::new();
            for (name, template) in with {
                match template.value.eval_to_string(&context, &host) {
                    Ok(value) => {
                        inputs.insert(name.clone(), value);
                    }
                    Err(error) => {
                        return StepOutcome::failure(format!(
                            "{}: input `{name}`: {error}",
                            shared.locate(template.span)
                        ));
                    }
                }
            }
            let outcome = tokio::select! {
                outcome = builtins::run(run, *builtin, &written.value, inputs, log, step.index) => outcome,
                () = cancel.cancelled() => BuiltinOutcome::cancelled(),
            };
            outcome.into_step_outcome()
        }
    }
}

/// Reads back what a step wrote to its command files and turns its exit into an outcome.
fn collect_command_files(
    run: &mut JobRun<'_>,
    log: &Arc<Mutex<LogWriter>>,
    files: &CommandFiles,
    exit: Exit,
) -> StepOutcome {
    let mut problems = Vec::new();
    let mut problems_noted = Vec::new();
    let mut outputs = IndexMap::new();
    match std::fs::read_to_string(&files.output)
        .map_err(|e| e.to_string())
        .and_then(|text| parse_key_values(&text, "SORAT_OUTPUT").map_err(|e| e.to_string()))
    {
        Ok(values) => {
            for (name, value) in values {
                let masked = run
                    .masker
                    .read()
                    .map(|m| m.mask(&value))
                    .unwrap_or_default();
                outputs.insert(name, masked);
            }
        }
        Err(message) => problems.push(message),
    }
    match std::fs::read_to_string(&files.env)
        .map_err(|e| e.to_string())
        .and_then(|text| parse_key_values(&text, "SORAT_ENV").map_err(|e| e.to_string()))
    {
        Ok(values) => {
            for (name, value) in values {
                if is_runner_variable(&name) {
                    problems_noted.push(format!(
                        "sorat: $GITHUB_ENV cannot set `{name}`: GITHUB_*, SORAT_* and RUNNER_* belong to the runner; ignored"
                    ));
                    continue;
                }
                run.env.insert(name, value);
            }
        }
        Err(message) => problems.push(message),
    }
    if let Ok(text) = std::fs::read_to_string(&files.path) {
        // Each line is prepended in turn, as GitHub does: the last line comes first.
        for folder in parse_path_file(&text) {
            run.path_prefix.insert(0, folder);
        }
    }
    let summary = std::fs::read_to_string(&files.summary)
        .ok()
        .filter(|text| !text.trim().is_empty())
        .map(|text| run.masker.read().map(|m| m.mask(&text)).unwrap_or_default());

    let (status, reason, timed_out) = match &exit {
        Exit::Code(0) => (Status::Success, None, false),
        Exit::Code(code) if *code > 128 => (
            Status::Failure,
            Some(format!(
                "killed by signal {} (exit code {code})",
                code - 128
            )),
            false,
        ),
        Exit::Code(code) => (Status::Failure, Some(format!("exit code {code}")), false),
        Exit::TimedOut(limit) => (
            Status::Failure,
            Some(format!(
                "timed out after {}; its process group was killed",
                sorat_config::duration::format_duration(*limit)
            )),
            true,
        ),
        Exit::Cancelled => (
            Status::Cancelled,
            Some("cancelled; its process group was killed".into()),
            false,
        ),
        Exit::SpawnFailed(message) => (Status::Failure, Some(message.clone()), false),
    };
    let (status, reason) = if problems.is_empty() || status != Status::Success {
        (status, reason)
    } else {
        (Status::Failure, Some(problems.join("; ")))
    };
    if let Ok(mut log) = log.lock() {
        for problem in &problems {
            log.note(&format!("sorat: {problem}"));
        }
        for note in &problems_noted {
            log.note(note);
        }
    }
    StepOutcome {
        status,
        exit_code: exit.code(),
        reason,
        outputs,
        summary,
        timed_out,
    }
}

/// The command that runs a script with a shell, GitHub's way:
/// - unspecified: `bash -e {0}` (or `sh -e {0}` without bash);
/// - `bash`: `bash --noprofile --norc -eo pipefail {0}`;
/// - `sh`: `sh -e {0}`; `python`: `python {0}` (python3 when only that exists);
/// - `pwsh`: `pwsh -command ". '{0}'"`;
/// - anything else: the given command line with `{0}` replaced by the script's path.
fn shell_command(
    shell: Option<&str>,
    dir: &Path,
    script: &str,
) -> Result<(String, Vec<String>, PathBuf), String> {
    let (template, extension): (Vec<String>, &str) = match shell {
        None => {
            if find_program("bash").is_some() {
                (vec!["bash".into(), "-e".into(), "{0}".into()], "sh")
            } else {
                (vec!["sh".into(), "-e".into(), "{0}".into()], "sh")
            }
        }
        Some("bash") => (
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "{0}"]
                .map(String::from)
                .to_vec(),
            "sh",
        ),
        Some("sh") => (["sh", "-e", "{0}"].map(String::from).to_vec(), "sh"),
        Some("python") => {
            let python = if find_program("python").is_some() {
                "python"
            } else {
                "python3"
            };
            (vec![python.into(), "{0}".into()], "py")
        }
        Some("pwsh") | Some("powershell") => (
            vec!["pwsh".into(), "-command".into(), ". '{0}'".into()],
            "ps1",
        ),
        Some(custom) => (custom.split_whitespace().map(String::from).collect(), "sh"),
    };
    let path = dir.join(format!("script.{extension}"));
    std::fs::write(&path, script).map_err(|error| format!("cannot write the script: {error}"))?;
    let path_text = path.display().to_string();
    let mut parts = template
        .into_iter()
        .map(|part| part.replace("{0}", &path_text));
    let program = parts.next().ok_or("the shell command is empty")?;
    if find_program(&program).is_none() {
        return Err(format!(
            "the shell `{program}` is not installed (not found on PATH)"
        ));
    }
    Ok((program, parts.collect(), path))
}

/// Finds a program on `PATH`, as a shell would.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
