//! The agent: claims jobs from a Sorat server over HTTP, runs each with the pipeline engine
//! on this machine, and streams its logs, steps and result back.
//!
//! It owns: the claim loop (a long poll, up to `capacity` jobs at once), leases kept alive by
//! heartbeats, repository mirrors under its data folder, log shipping in numbered chunks that
//! survive reconnects (a chunk is sent again until the server has it; the server stores each
//! number once), and stopping: [`Agent::stop_claiming`] for a graceful end, cancellation of a
//! job when the server says its run was cancelled, and a hard stop when the lease is lost
//! (another agent may have the job now: this one must not go on with it).
//!
//! It must not know: the state store, HTTP routing, users. [`protocol`] is the whole contract
//! with the server.
//!
//! The library never prints; it reports through `tracing`.

mod hosts;
pub mod mirror;
pub mod protocol;
pub mod publish;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use indexmap::IndexMap;
use sorat_config::SourceFile;
use sorat_pipeline::events::RunEvent;
use sorat_pipeline::exec::{self, Cancel, GivenJob, RunIdentity, RunRequest};
use sorat_pipeline::record::Status;
use sorat_pipeline::trigger::EventKind;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::{
    Assignment, ClaimRequest, Finish, Heartbeat, HeartbeatReply, LogAppend, StepUpdate,
    TestCaseReport,
};

/// How an agent is set up.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The server's base URL (`http://127.0.0.1:8080`).
    pub server: String,
    /// The agent token.
    pub token: String,
    /// The agent's name.
    pub name: String,
    /// Its labels; empty takes any job.
    pub labels: Vec<String>,
    /// Jobs at once.
    pub capacity: u32,
    /// Its data folder: mirrors, workspaces, caches.
    pub data_dir: PathBuf,
    /// A CA certificate (PEM) to trust for an HTTPS server, besides the public roots.
    pub ca_cert: Option<PathBuf>,
}

/// A running agent.
pub struct Agent {
    options: Arc<AgentOptions>,
    client: reqwest::Client,
    running: Arc<AtomicU32>,
    stop_claiming: CancellationToken,
    soft: CancellationToken,
    hard: CancellationToken,
    mirrors: Arc<mirror::Mirrors>,
}

/// An error of the agent as a whole (a job's failure is reported to the server instead).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The CA certificate could not be read.
    #[error("CA certificate {path}: {reason}")]
    CaCert {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The server refused the agent's token.
    #[error(
        "the server refused the agent token (HTTP {0}); create one with `sorat token create NAME --agent`"
    )]
    Unauthorized(u16),
}

impl Agent {
    /// Sets an agent up; [`Agent::run`] starts it.
    pub fn new(options: AgentOptions) -> Result<Agent, AgentError> {
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if let Some(path) = &options.ca_cert {
            let pem = std::fs::read(path).map_err(|error| AgentError::CaCert {
                path: path.clone(),
                reason: error.to_string(),
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| {
                AgentError::CaCert {
                    path: path.clone(),
                    reason: error.to_string(),
                }
            })?;
            if certificates.is_empty() {
                return Err(AgentError::CaCert {
                    path: path.clone(),
                    reason: "it holds no PEM certificate".into(),
                });
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let client = builder.build()?;
        let mirrors = Arc::new(mirror::Mirrors::new(options.data_dir.join("repos")));
        Ok(Agent {
            options: Arc::new(options),
            client,
            running: Arc::new(AtomicU32::new(0)),
            stop_claiming: CancellationToken::new(),
            soft: CancellationToken::new(),
            hard: CancellationToken::new(),
            mirrors,
        })
    }

    /// A handle that stops the agent: see [`Stopper`].
    pub fn stopper(&self) -> Stopper {
        Stopper {
            stop_claiming: self.stop_claiming.clone(),
            soft: self.soft.clone(),
            hard: self.hard.clone(),
            running: Arc::clone(&self.running),
        }
    }

    /// Claims and runs jobs until [`Stopper::stop_claiming`], then waits for the jobs it
    /// runs to end. Connection errors are retried with backoff; a refused token ends it.
    pub async fn run(self) -> Result<(), AgentError> {
        // Operations on the releases of `agent` targets on this host, beside the jobs; the
        // services they start stop with the agent.
        let hosts_stop = CancellationToken::new();
        let hosts = tokio::spawn(hosts::serve(
            Arc::clone(&self.options),
            self.client.clone(),
            hosts_stop.clone(),
        ));
        let result = self.run_jobs().await;
        hosts_stop.cancel();
        let _ = hosts.await;
        result
    }

    async fn run_jobs(&self) -> Result<(), AgentError> {
        let mut jobs = tokio::task::JoinSet::new();
        let mut backoff = Duration::from_millis(100);
        let capacity = self.options.capacity.max(1);
        loop {
            while jobs.try_join_next().is_some() {}
            if self.stop_claiming.is_cancelled() {
                break;
            }
            if self.running.load(Ordering::SeqCst) >= capacity {
                tokio::select! {
                    _ = jobs.join_next() => {}
                    () = self.stop_claiming.cancelled() => {}
                }
                continue;
            }
            // A claim in flight is seen through even when stopping: the server may already
            // have given this agent the job (a server that is stopping answers at once).
            let claimed = self.claim().await;
            if self.stop_claiming.is_cancelled()
                && let Ok(None) = claimed
            {
                break;
            }
            match claimed {
                Ok(Some(assignment)) => {
                    backoff = Duration::from_millis(100);
                    self.running.fetch_add(1, Ordering::SeqCst);
                    let job = JobRunner {
                        options: Arc::clone(&self.options),
                        client: self.client.clone(),
                        mirrors: Arc::clone(&self.mirrors),
                        soft: self.soft.child_token(),
                        hard: self.hard.child_token(),
                    };
                    let running = Arc::clone(&self.running);
                    jobs.spawn(async move {
                        job.run(assignment).await;
                        running.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                Ok(None) => backoff = Duration::from_millis(100),
                Err(ClaimError::Unauthorized(code)) => {
                    self.stop_claiming.cancel();
                    while jobs.join_next().await.is_some() {}
                    return Err(AgentError::Unauthorized(code));
                }
                Err(ClaimError::Other(error)) => {
                    tracing::warn!(%error, "claim failed; retrying in {:?}", backoff);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.stop_claiming.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        while jobs.join_next().await.is_some() {}
        Ok(())
    }

    async fn claim(&self) -> Result<Option<Assignment>, ClaimError> {
        let request = ClaimRequest {
            name: self.options.name.clone(),
            labels: self.options.labels.clone(),
            capacity: self.options.capacity,
            running: self.running.load(Ordering::SeqCst),
            version: env!("CARGO_PKG_VERSION").to_string(),
            wait_ms: 20_000,
        };
        let response = self
            .client
            .post(format!("{}/api/v1/agent/claim", self.options.server))
            .bearer_auth(&self.options.token)
            .timeout(Duration::from_secs(40))
            .json(&request)
            .send()
            .await
            .map_err(|error| ClaimError::Other(error.to_string()))?;
        match response.status().as_u16() {
            200 => response
                .json::<Assignment>()
                .await
                .map(Some)
                .map_err(|error| ClaimError::Other(error.to_string())),
            204 => Ok(None),
            code @ (401 | 403) => Err(ClaimError::Unauthorized(code)),
            code => Err(ClaimError::Other(format!(
                "HTTP {code}: {}",
                response.text().await.unwrap_or_default()
            ))),
        }
    }
}

enum ClaimError {
    Unauthorized(u16),
    Other(String),
}

/// Stops an agent from another task.
#[derive(Clone)]
pub struct Stopper {
    stop_claiming: CancellationToken,
    soft: CancellationToken,
    hard: CancellationToken,
    running: Arc<AtomicU32>,
}

impl Stopper {
    /// No new jobs; running ones go on.
    pub fn stop_claiming(&self) {
        self.stop_claiming.cancel();
    }

    /// Cancels running jobs (their steps are stopped, `always()` steps run).
    pub fn cancel_jobs(&self) {
        self.soft.cancel();
    }

    /// Kills running jobs' processes at once.
    pub fn kill_jobs(&self) {
        self.soft.cancel();
        self.hard.cancel();
    }

    /// How many jobs run now.
    pub fn running(&self) -> u32 {
        self.running.load(Ordering::SeqCst)
    }
}

/// What a job's runner reports to the server as it goes.
enum Report {
    Log(String),
    Step(StepUpdate),
}

struct JobRunner {
    options: Arc<AgentOptions>,
    client: reqwest::Client,
    mirrors: Arc<mirror::Mirrors>,
    soft: CancellationToken,
    hard: CancellationToken,
}

/// The lease was lost: the server gave the job to someone else (or ended it).
struct LeaseLost;

/// Numbers a job's log chunks and sends each until the server has it.
struct ChunkSender {
    job_id: i64,
    token: String,
    attempt: i64,
    seq: i64,
}

impl ChunkSender {
    /// Sends the lines gathered in `pending` (if any) as the next chunk, and empties it.
    async fn flush(&mut self, runner: &JobRunner, pending: &mut String) -> Result<(), LeaseLost> {
        if pending.is_empty() {
            return Ok(());
        }
        self.seq += 1;
        let chunk = LogAppend {
            token: self.token.clone(),
            attempt: self.attempt,
            seq: self.seq,
            text: std::mem::take(pending),
        };
        runner.send(self.job_id, "logs", &chunk).await.map(|_| ())
    }
}

impl JobRunner {
    fn url(&self, job_id: i64, what: &str) -> String {
        format!("{}/api/v1/agent/jobs/{job_id}/{what}", self.options.server)
    }

    /// Sends one request about the job until the server answers: `Ok` on 2xx, `Err` on 409
    /// (lease lost) or when the job's hard stop fires. Other failures are retried.
    async fn send<T: serde::Serialize>(
        &self,
        job_id: i64,
        what: &str,
        body: &T,
    ) -> Result<reqwest::Response, LeaseLost> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = self
                .client
                .post(self.url(job_id, what))
                .bearer_auth(&self.options.token)
                .timeout(Duration::from_secs(30))
                .json(body)
                .send()
                .await;
            match attempt {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) if response.status().as_u16() == 409 => return Err(LeaseLost),
                Ok(response) if response.status().is_client_error() => {
                    tracing::warn!(job_id, what, status = %response.status(), "the server refused a report; dropping it");
                    return Ok(response);
                }
                Ok(response) => {
                    tracing::warn!(job_id, what, status = %response.status(), "report failed; retrying");
                }
                Err(error) => tracing::warn!(job_id, what, %error, "report failed; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.hard.cancelled() => return Err(LeaseLost),
            }
            backoff = (backoff * 2).min(Duration::from_secs(3));
        }
    }

    async fn run(self, assignment: Assignment) {
        let job_id = assignment.job_id;
        let token = assignment.lease_token.clone();
        let attempt = assignment.attempt;
        let lease_lost = CancellationToken::new();
        let soft = self.soft.child_token();
        let hard = self.hard.child_token();

        // Heartbeats: keep the lease; the server's answer may cancel the run.
        let heartbeat = {
            let runner = self.clone_for_task();
            let token = token.clone();
            let soft = soft.clone();
            let hard = hard.clone();
            let lease_lost = lease_lost.clone();
            let every = Duration::from_millis((assignment.lease_ms / 3).clamp(100, 10_000));
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(every) => {}
                        () = hard.cancelled() => return,
                    }
                    match runner
                        .send(
                            job_id,
                            "heartbeat",
                            &Heartbeat {
                                token: token.clone(),
                            },
                        )
                        .await
                    {
                        Ok(response) => {
                            if let Ok(reply) = response.json::<HeartbeatReply>().await
                                && reply.cancel
                            {
                                soft.cancel();
                            }
                        }
                        Err(LeaseLost) => {
                            tracing::warn!(job_id, "lease lost; stopping the job");
                            lease_lost.cancel();
                            soft.cancel();
                            hard.cancel();
                            return;
                        }
                    }
                }
            })
        };

        // Reports: log chunks and step changes, in order, each until the server has it.
        let (reports, mut report_rx) = mpsc::unbounded_channel::<Report>();
        // Set when the job's run returned: the shipper then sends what is left at once.
        let executed = CancellationToken::new();
        let shipper = {
            let runner = self.clone_for_task();
            let token = token.clone();
            let lease_lost = lease_lost.clone();
            let executed = executed.clone();
            tokio::spawn(async move {
                let mut chunks = ChunkSender {
                    job_id,
                    token: token.clone(),
                    attempt,
                    seq: 0,
                };
                let mut pending = String::new();
                let mut open = true;
                while open {
                    // Gather what is there (up to 256 KiB of log), then send it.
                    let first = report_rx.recv().await;
                    let mut batch = Vec::new();
                    match first {
                        Some(report) => batch.push(report),
                        None => open = false,
                    }
                    while let Ok(report) = report_rx.try_recv() {
                        batch.push(report);
                        if pending.len() > 256 << 10 {
                            break;
                        }
                    }
                    for report in batch {
                        match report {
                            Report::Log(line) => pending.push_str(&line),
                            Report::Step(mut update) => {
                                update.token = token.clone();
                                update.attempt = attempt;
                                // A step change goes after the lines before it.
                                if chunks.flush(&runner, &mut pending).await.is_err() {
                                    lease_lost.cancel();
                                    return;
                                }
                                if runner.send(job_id, "steps", &update).await.is_err() {
                                    lease_lost.cancel();
                                    return;
                                }
                            }
                        }
                    }
                    if chunks.flush(&runner, &mut pending).await.is_err() {
                        lease_lost.cancel();
                        return;
                    }
                    if open {
                        // Lines come in bursts: a short pause makes chunks of many lines,
                        // but none once the job is over (its end waits for this).
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(50)) => {}
                            () = executed.cancelled() => {}
                        }
                    }
                }
            })
        };

        let finish = self
            .execute(
                &assignment,
                &reports,
                Cancel {
                    soft,
                    hard: hard.clone(),
                },
            )
            .await;
        executed.cancel();
        drop(reports);
        let _ = shipper.await;
        if lease_lost.is_cancelled() {
            heartbeat.abort();
            return;
        }
        let mut finish = finish;
        finish.token = token;
        let _ = self.send(job_id, "finish", &finish).await;
        heartbeat.abort();
    }

    fn clone_for_task(&self) -> JobRunner {
        JobRunner {
            options: Arc::clone(&self.options),
            client: self.client.clone(),
            mirrors: Arc::clone(&self.mirrors),
            soft: self.soft.clone(),
            hard: self.hard.clone(),
        }
    }

    /// Runs the job with the engine; the answer for `finish` (without its token).
    async fn execute(
        &self,
        assignment: &Assignment,
        reports: &mpsc::UnboundedSender<Report>,
        cancel: Cancel,
    ) -> Finish {
        let failed = |reason: String| {
            let _ = reports.send(Report::Log(format!("sorat: {reason}\n")));
            Finish {
                token: String::new(),
                status: "failure".into(),
                fails_run: true,
                outputs: serde_json::Map::new(),
                record: serde_json::Value::Null,
                reason: Some(reason),
                tests: Vec::new(),
                artifacts: Vec::new(),
            }
        };
        let mirror = match self.mirrors.fetch(&assignment.repo, &assignment.sha).await {
            Ok(path) => path,
            Err(error) => return failed(format!("fetching {}: {error}", assignment.repo)),
        };
        let file = SourceFile::new(&assignment.pipeline_path, assignment.pipeline.clone());
        let (pipeline, diagnostics) = sorat_pipeline::load::load(&file);
        let Some(pipeline) = pipeline else {
            let messages: Vec<String> = diagnostics
                .into_sorted()
                .iter()
                .map(ToString::to_string)
                .collect();
            return failed(format!("the pipeline is invalid:\n{}", messages.join("\n")));
        };
        let Some(event) = EventKind::parse(&assignment.event) else {
            return failed(format!("unknown event `{}`", assignment.event));
        };
        let mut given = IndexMap::new();
        for job in &assignment.given {
            let status = match job.status.as_str() {
                "success" => Status::Success,
                "failure" => Status::Failure,
                "cancelled" => Status::Cancelled,
                _ => Status::Skipped,
            };
            let outputs = job
                .outputs
                .iter()
                .map(|(name, value)| {
                    let text = match value {
                        serde_json::Value::String(text) => text.clone(),
                        other => other.to_string(),
                    };
                    (name.clone(), text)
                })
                .collect();
            given.insert(job.key.clone(), GivenJob { status, outputs });
        }
        let inputs = assignment
            .inputs
            .iter()
            .map(|(name, value)| (name.clone(), json_to_value(value)))
            .collect();
        let (ref_name, ref_type) = if let Some(tag) = assignment.git_ref.strip_prefix("refs/tags/")
        {
            (tag.to_string(), "tag".to_string())
        } else {
            (
                assignment
                    .git_ref
                    .strip_prefix("refs/heads/")
                    .unwrap_or(&assignment.git_ref)
                    .to_string(),
                "branch".to_string(),
            )
        };
        let request = RunRequest {
            pipeline: Arc::new(pipeline),
            repo: sorat_pipeline::git::RepoState {
                root: mirror,
                sha: assignment.sha.clone(),
                git_ref: assignment.git_ref.clone(),
                ref_name,
                ref_type,
                changed_files: Vec::new(),
                name: assignment.project.clone(),
            },
            dirty: false,
            project_dir: assignment.dir.clone(),
            event,
            inputs,
            secrets: assignment.secrets.iter().cloned().collect(),
            vars: IndexMap::new(),
            only_job: Some(assignment.job.clone()),
            parallelism: 4,
            data_dir: self.options.data_dir.clone(),
            keep_workspaces: false,
            given,
            identity: Some(RunIdentity {
                run_id: assignment.run_id.max(0) as u64,
                run_number: assignment.run_number.max(0) as u64,
                attempt: assignment.attempt.max(1) as u64,
                actor: assignment.actor.clone(),
                repository: assignment.project.clone(),
                server_url: assignment.server_url.clone(),
            }),
            // Jobs of one server run on this agent share their artifacts. Across agents
            // they do not (yet): that needs the server's artifact repository.
            artifacts_dir: Some(
                self.options
                    .data_dir
                    .join("server-runs")
                    .join(format!(
                        "{}-{}",
                        sanitize(&assignment.project),
                        assignment.run_id
                    ))
                    .join("artifacts"),
            ),
            publisher: Some(Arc::new(publish::HttpPublisher {
                server: self.options.server.clone(),
                token: self.options.token.clone(),
                client: self.client.clone(),
                job: None,
            })),
            deployer: Some(Arc::new(publish::HttpPublisher {
                server: self.options.server.clone(),
                token: self.options.token.clone(),
                client: self.client.clone(),
                job: Some((assignment.job_id, assignment.lease_token.clone())),
            })),
        };
        let artifacts_dir = request.artifacts_dir.clone();
        let before = artifact_manifests(artifacts_dir.as_deref());
        let (events, mut event_rx) = mpsc::unbounded_channel();
        let forward = {
            let reports = reports.clone();
            tokio::spawn(async move {
                let mut forwarder = EventForwarder::default();
                while let Some(event) = event_rx.recv().await {
                    forwarder.forward(event, &reports);
                }
            })
        };
        let record = exec::run(request, events, cancel).await;
        let _ = forward.await;
        let record = match record {
            Ok(record) => record,
            Err(error) => return failed(error.to_string()),
        };
        let instances: Vec<_> = record
            .jobs
            .iter()
            .filter(|job| job.id == assignment.job)
            .collect();
        let status = if instances.iter().any(|job| job.status == Status::Failure) {
            "failure"
        } else if instances.iter().any(|job| job.status == Status::Cancelled) {
            "cancelled"
        } else if instances.iter().all(|job| job.status == Status::Skipped) {
            // No instance at all: the job's `if` was false before its matrix expanded.
            "skipped"
        } else {
            "success"
        };
        let mut outputs = serde_json::Map::new();
        for job in &instances {
            for (name, value) in &job.outputs {
                outputs.insert(name.clone(), serde_json::Value::String(value.clone()));
            }
        }
        let reason = instances.iter().find_map(|job| job.reason.clone());
        let tests = instances
            .iter()
            .flat_map(|job| job.tests.failures.iter())
            .map(|failure| TestCaseReport {
                suite: failure.suite.clone(),
                name: format!("{}.{}", failure.classname, failure.name),
                status: "failed".into(),
                duration_ms: None,
                message: Some(failure.message.clone()),
            })
            .collect();
        let artifacts = artifact_manifests(artifacts_dir.as_deref())
            .into_iter()
            .filter(|found| is_instance_of(&found.0, &assignment.job) && !before.contains(found))
            .map(|(_, artifact)| artifact)
            .collect();
        Finish {
            token: String::new(),
            status: status.into(),
            fails_run: record.status == Status::Failure,
            outputs,
            record: serde_json::to_value(&instances).unwrap_or(serde_json::Value::Null),
            reason,
            tests,
            artifacts,
        }
    }
}

/// Turns the engine's events into log text and step updates. A job with several matrix
/// instances writes one log: each line carries its instance's name.
#[derive(Default)]
struct EventForwarder {
    /// Instance key → (its name, the index of its first step in the job's step list).
    instances: IndexMap<String, (String, i64)>,
    next_step: i64,
    started: IndexMap<(String, usize), i64>,
}

impl EventForwarder {
    fn forward(&mut self, event: RunEvent, reports: &mpsc::UnboundedSender<Report>) {
        let now = jiff::Timestamp::now().as_millisecond();
        match event {
            RunEvent::JobStarted { key, name, steps } => {
                self.instances
                    .insert(key.0.clone(), (name.clone(), self.next_step));
                self.next_step += steps as i64;
                let _ = reports.send(Report::Log(format!("▶ {name}\n")));
            }
            RunEvent::StepStarted { key, index, name } => {
                let base = self.instances.get(&key.0).map_or(0, |(_, base)| *base);
                let position = base + index as i64;
                self.started.insert((key.0.clone(), index), now);
                let _ = reports.send(Report::Log(format!("── {name}\n")));
                let _ = reports.send(Report::Step(StepUpdate {
                    token: String::new(),
                    attempt: 0,
                    index: position,
                    name,
                    status: "running".into(),
                    started_at: Some(now),
                    finished_at: None,
                    reason: None,
                }));
            }
            RunEvent::Log { key, line } => {
                let text = if self.instances.len() > 1 {
                    let name = self.instances.get(&key.0).map_or("", |(name, _)| name);
                    format!("[{name}] {}\n", line.line)
                } else {
                    format!("{}\n", line.line)
                };
                let _ = reports.send(Report::Log(text));
            }
            RunEvent::StepFinished {
                key,
                index,
                name,
                status,
                reason,
                ..
            } => {
                let base = self.instances.get(&key.0).map_or(0, |(_, base)| *base);
                let started_at = self.started.get(&(key.0.clone(), index)).copied();
                if let Some(reason) = &reason {
                    let _ = reports.send(Report::Log(format!("{name}: {reason}\n")));
                }
                let _ = reports.send(Report::Step(StepUpdate {
                    token: String::new(),
                    attempt: 0,
                    index: base + index as i64,
                    name,
                    status: status.as_str().into(),
                    started_at: started_at.or(Some(now)),
                    finished_at: Some(now),
                    reason,
                }));
            }
            RunEvent::JobFinished {
                name,
                status,
                reason,
                ..
            } => {
                let why = reason.map(|r| format!(": {r}")).unwrap_or_default();
                let _ = reports.send(Report::Log(format!("■ {name} {}{why}\n", status.as_str())));
            }
            RunEvent::Warning { message } => {
                let _ = reports.send(Report::Log(format!("warning: {message}\n")));
            }
            _ => {}
        }
    }
}

/// Whether the engine's instance key `instance` (`build`, or `test-2` for a matrix
/// instance) belongs to pipeline job `job`.
fn is_instance_of(instance: &str, job: &str) -> bool {
    instance == job
        || instance
            .strip_prefix(job)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The artifacts in a run's artifacts folder (their manifests `<name>.json`), with the
/// instance that uploaded each.
fn artifact_manifests(dir: Option<&std::path::Path>) -> Vec<(String, protocol::ArtifactReport)> {
    let Some(Ok(entries)) = dir.map(std::fs::read_dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, protocol::ArtifactReport)> = entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            if path.extension()? != "json" {
                return None;
            }
            let manifest: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
            let files = manifest["snapshot"]["files"].as_array()?;
            Some((
                manifest["job"].as_str()?.to_string(),
                protocol::ArtifactReport {
                    name: manifest["name"].as_str()?.to_string(),
                    files: files.len() as u64,
                    bytes: files.iter().filter_map(|f| f["size"].as_u64()).sum(),
                },
            ))
        })
        .collect();
    found.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    found
}

/// A name usable as one path component.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn json_to_value(value: &serde_json::Value) -> sorat_expr::Value {
    use sorat_expr::Value;
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(json_to_value).collect()),
        serde_json::Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_keys_belong_to_their_job_only() {
        assert!(is_instance_of("build", "build"));
        assert!(is_instance_of("test-2", "test"));
        assert!(!is_instance_of("test-x", "test"));
        assert!(!is_instance_of("test-", "test"));
        assert!(!is_instance_of("build-linux", "build"));
        assert!(!is_instance_of("builder", "build"));
    }
}
