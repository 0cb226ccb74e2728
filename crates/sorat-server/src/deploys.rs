//! Environments and deployments through the API: deploy a signed artifact to an
//! environment's hosts (verified first), roll back, list releases. The work is
//! `sorat-deploy`'s; this module reads artifacts from the repository, keeps one deployment
//! at a time per environment, and turns reports into JSON. Targets are `local` folders
//! served by the server's own supervisor, or hosts reached over SSH whose services run under
//! a supervisor on the host (left running when the server stops).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use sorat_config::platform::{
    CanaryStepConfig, EnvironmentConfig, HealthCheckKind, StrategyConfig, TargetPlace,
};
use sorat_deploy::analysis::{Analysis, Metric, PrometheusSource};
use sorat_deploy::deploy::{AnalysisStep, Bake, CanaryStep, Decision, Judge};
use sorat_deploy::{
    BlueGreenSlots, DeployReport, Environment, HealthCheck, Host, HostOutcome, Outcome, Probe,
    Progress, ReleaseFile, ReleaseMeta, ReleaseSpec, ReleaseStatus, RestartPolicy, SecretResolver,
    ServiceConfig, ServiceLine, ServiceState, SshHost, SshTarget, Strategy, Target,
};
use sorat_pipeline::mask::Masker;
use sorat_state::Role;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

/// An environment and its hosts, with the services running on them.
pub struct EnvironmentState {
    /// As configured.
    pub config: EnvironmentConfig,
    /// For `sorat-deploy`.
    pub environment: Environment,
    /// Its hosts.
    pub targets: Vec<Target>,
    /// How a deploy goes through them.
    pub strategy: Strategy,
    /// One deployment or rollback at a time (and none while the server brings its services
    /// up after starting).
    pub busy: tokio::sync::Mutex<()>,
    /// True until [`start_services`] has brought this environment's services up.
    pub starting: std::sync::atomic::AtomicBool,
    /// The last lines its services wrote, oldest first.
    pub lines: Arc<std::sync::Mutex<std::collections::VecDeque<Value>>>,
    /// The last steps of its deploys and rollbacks, as they happened.
    pub progress: Arc<std::sync::Mutex<ProgressLog>>,
    /// A deploy waiting for a decision, if any.
    pub pauses: Arc<Pauses>,
}

/// How long a deploy paused on an inconclusive analysis waits for `sorat promote` or
/// `sorat abort` before it rolls back on its own.
const DECISION_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A deploy waiting for a person's decision.
#[derive(Debug)]
struct Paused {
    release: u32,
    analysis: String,
    reason: String,
    since: String,
    answer: tokio::sync::oneshot::Sender<Decision>,
}

/// The environment's judge: a deploy paused on an inconclusive analysis waits here until
/// `POST /environments/{env}/promote|abort` answers, or the timeout aborts it.
#[derive(Debug, Default)]
pub struct Pauses {
    waiting: std::sync::Mutex<Option<Paused>>,
}

impl Pauses {
    /// What is paused, as JSON (`null` when nothing is).
    pub fn describe(&self) -> Value {
        match self.waiting.lock().ok().as_deref() {
            Some(Some(paused)) => json!({
                "release": paused.release,
                "analysis": paused.analysis,
                "reason": paused.reason,
                "since": paused.since,
            }),
            _ => Value::Null,
        }
    }

    /// Answers the paused deploy; false when none waits.
    fn answer(&self, decision: Decision) -> bool {
        let paused = self.waiting.lock().ok().and_then(|mut slot| slot.take());
        match paused {
            Some(paused) => paused.answer.send(decision).is_ok(),
            None => false,
        }
    }
}

impl Judge for Pauses {
    fn decide<'a>(
        &'a self,
        _environment: &'a str,
        release: u32,
        analysis: &'a str,
        reason: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Decision> + Send + 'a>> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        if let Ok(mut slot) = self.waiting.lock() {
            *slot = Some(Paused {
                release,
                analysis: analysis.to_owned(),
                reason: reason.to_owned(),
                since: jiff::Timestamp::now().to_string(),
                answer: sender,
            });
        }
        Box::pin(async move {
            let decision = match tokio::time::timeout(DECISION_TIMEOUT, receiver).await {
                Ok(Ok(decision)) => decision,
                _ => Decision::Abort {
                    by: format!(
                        "nobody within {}",
                        sorat_config::duration::format_duration(DECISION_TIMEOUT)
                    ),
                },
            };
            if let Ok(mut slot) = self.waiting.lock() {
                slot.take();
            }
            decision
        })
    }
}

/// `POST /api/v1/environments/{env}/promote`: a deploy paused on an inconclusive analysis
/// goes on. Needs the environment's approval role (developer when it has none).
pub async fn promote(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    decide(&state, &caller, &name, true).await
}

/// `POST /api/v1/environments/{env}/abort`: a deploy paused on an inconclusive analysis
/// rolls back.
pub async fn abort(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    decide(&state, &caller, &name, false).await
}

async fn decide(
    state: &Arc<AppState>,
    caller: &Caller,
    name: &str,
    promote: bool,
) -> ApiResult<Json<Value>> {
    let environment = find(state, name)?;
    let role: Role = environment
        .config
        .approval
        .as_deref()
        .unwrap_or("developer")
        .parse()
        .map_err(|_| ApiError::internal("bad approval role"))?;
    caller.require(&state.store, None, role).await?;
    let paused = environment.pauses.describe();
    let by = caller.name.clone();
    let decision = if promote {
        Decision::Promote { by: by.clone() }
    } else {
        Decision::Abort { by: by.clone() }
    };
    if !environment.pauses.answer(decision) {
        return Err(ApiError::conflict(
            "not_paused",
            format!("no deploy to `{name}` is waiting for a decision"),
        ));
    }
    tracing::info!(environment = %name, promote, %by, "decision on a paused deploy");
    Ok(Json(json!({
        "environment": name,
        "decision": if promote { "promote" } else { "abort" },
        "by": by,
        "paused": paused,
    })))
}

/// `text` with the environment's secrets masked.
fn masked(masker: &std::sync::Mutex<Masker>, text: String) -> String {
    match masker.lock() {
        Ok(masker) if !masker.is_empty() => masker.mask(&text),
        _ => text,
    }
}

/// The steps of an environment's deploys and rollbacks, numbered from 1 as they happen; the
/// last [`KEPT_PROGRESS`] are kept.
#[derive(Debug, Default)]
pub struct ProgressLog {
    /// The number of the last step told (0: none yet).
    last: u64,
    /// The kept steps, oldest first.
    kept: std::collections::VecDeque<Value>,
}

/// How many steps of its deploys an environment keeps for the API.
const KEPT_PROGRESS: usize = 500;

/// Numbers the steps `sorat-deploy` tells and keeps them for `GET …/progress`; their text is
/// masked like the services' lines (an error may quote a command).
fn collect_progress(
    log: Arc<std::sync::Mutex<ProgressLog>>,
    masker: Arc<std::sync::Mutex<Masker>>,
) -> Option<tokio::sync::mpsc::UnboundedSender<Progress>> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    runtime.spawn(async move {
        while let Some(step) = receiver.recv().await {
            let message = masked(&masker, step.message);
            if let Ok(mut log) = log.lock() {
                log.last += 1;
                let entry = json!({
                    "seq": log.last,
                    "at": jiff::Timestamp::now().to_string(),
                    "host": step.host,
                    "message": message,
                });
                if log.kept.len() == KEPT_PROGRESS {
                    log.kept.pop_front();
                }
                log.kept.push_back(entry);
            }
        }
    });
    Some(sender)
}

/// The query of `GET …/progress`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressQuery {
    /// Only the steps numbered above this.
    #[serde(default)]
    after: u64,
}

/// `GET /api/v1/environments/{env}/progress?after=N`: the steps of its deploys and rollbacks
/// numbered above `N` (the last 500 are kept), and the number of the last one, from which a
/// client asks again.
pub async fn progress(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(query): Query<ProgressQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(&state.store, None, Role::Viewer).await?;
    let environment = find(&state, &name)?;
    let (steps, last) = environment
        .progress
        .lock()
        .map(|log| {
            let steps: Vec<Value> = log
                .kept
                .iter()
                .filter(|step| step["seq"].as_u64().is_some_and(|seq| seq > query.after))
                .cloned()
                .collect();
            (steps, log.last)
        })
        .unwrap_or_default();
    Ok(Json(
        json!({ "environment": name, "steps": steps, "last": last }),
    ))
}

/// How many of its services' lines an environment keeps for the API.
const KEPT_LINES: usize = 2000;

/// Takes the services' lines into Sorat's own log (target `sorat::service`, tagged with the
/// environment, host, release and stream) and into the environment's recent lines.
fn collect_lines(
    environment: String,
    lines: Arc<std::sync::Mutex<std::collections::VecDeque<Value>>>,
    masker: Arc<std::sync::Mutex<Masker>>,
) -> Option<tokio::sync::mpsc::Sender<ServiceLine>> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<ServiceLine>(1024);
    runtime.spawn(async move {
        while let Some(mut line) = receiver.recv().await {
            // The secrets given to the environment's services never reach a log.
            line.line = masked(&masker, line.line);
            let stream = match line.stream {
                sorat_deploy::Stream::Stdout => "stdout",
                sorat_deploy::Stream::Stderr => "stderr",
            };
            tracing::info!(
                target: "sorat::service",
                environment = %environment,
                host = %line.host,
                release = line.release,
                stream,
                "{}",
                line.line
            );
            let entry = json!({
                "at": jiff::Timestamp::now().to_string(),
                "host": line.host,
                "release": line.release,
                "stream": stream,
                "line": line.line,
            });
            if let Ok(mut kept) = lines.lock() {
                if kept.len() == KEPT_LINES {
                    kept.pop_front();
                }
                kept.push_back(entry);
            }
        }
    });
    Some(sender)
}

/// `GET /api/v1/environments/{env}/logs`: the last lines its services wrote (at most 2000),
/// each tagged with host, release and stream.
pub async fn logs(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(&state.store, None, Role::Viewer).await?;
    let environment = find(&state, &name)?;
    let lines: Vec<Value> = environment
        .lines
        .lock()
        .map(|kept| kept.iter().cloned().collect())
        .unwrap_or_default();
    Ok(Json(json!({ "environment": name, "lines": lines })))
}

impl EnvironmentState {
    /// Builds the environment from its configuration (already validated: queries parse,
    /// conditions parse, names refer to analyses that exist).
    pub fn new(
        config: &EnvironmentConfig,
        agents: Arc<dyn sorat_deploy::agent::HostChannel>,
        store: sorat_state::Store,
    ) -> EnvironmentState {
        let pauses = Arc::new(Pauses::default());
        let masker = Arc::new(std::sync::Mutex::new(Masker::new()));
        let analyses = analysis_steps(config);
        let analysis = |name: &str| analyses.iter().find(|step| step.name == name).cloned();
        let strategy = match &config.strategy {
            StrategyConfig::AllAtOnce => Strategy::AllAtOnce,
            StrategyConfig::Rolling { batch } => Strategy::Rolling { batch: *batch },
            StrategyConfig::Canary { steps } => Strategy::Canary {
                steps: steps
                    .iter()
                    .filter_map(|step| match step {
                        CanaryStepConfig::Hosts(count) => Some(CanaryStep::Hosts(*count)),
                        CanaryStepConfig::Percent(percent) => Some(CanaryStep::Percent(*percent)),
                        CanaryStepConfig::Pause(duration) => Some(CanaryStep::Pause(*duration)),
                        CanaryStepConfig::Analysis(name) => {
                            analysis(name).map(CanaryStep::Analysis)
                        }
                    })
                    .collect(),
            },
            StrategyConfig::BlueGreen {
                pre_promotion,
                auto_promote,
                ..
            } => Strategy::BlueGreen {
                pre_promotion: pre_promotion.as_deref().and_then(analysis),
                auto_promote: *auto_promote,
            },
        };
        let bake = config.bake.as_ref().map(|bake| Bake {
            duration: bake.duration,
            analysis: bake.analysis.as_deref().and_then(analysis),
        });
        let probe = match &config.health.check {
            HealthCheckKind::Http { path, expect } => Probe::Http {
                path: path.clone(),
                expected_status: *expect,
            },
            HealthCheckKind::Tcp => Probe::Tcp,
            HealthCheckKind::Command(command) => Probe::Command {
                command: command.clone(),
            },
        };
        let progress = Arc::new(std::sync::Mutex::new(ProgressLog::default()));
        let environment = Environment {
            name: config.name.clone(),
            service: ServiceConfig {
                command: config.command.clone(),
                working_dir: config.working_dir.clone(),
                env: config.env.clone(),
                restart: RestartPolicy::default(),
                stop_grace: config.stop_grace,
            },
            health: HealthCheck {
                probe,
                interval: config.health.interval,
                attempt_timeout: Duration::from_secs(2).min(config.health.timeout),
                timeout: config.health.timeout,
                success_threshold: config.health.success_threshold,
                failure_threshold: config.health.failure_threshold,
            },
            keep_releases: config.keep_releases,
            bake,
            judge: Some(Arc::clone(&pauses) as Arc<dyn Judge>),
            secrets: Some(Arc::new(StoreSecrets {
                store,
                masker: Arc::clone(&masker),
            }) as Arc<dyn SecretResolver>),
            progress: collect_progress(Arc::clone(&progress), Arc::clone(&masker)),
        };
        let lines = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let sender = collect_lines(config.name.clone(), Arc::clone(&lines), Arc::clone(&masker));
        let targets = config
            .hosts
            .iter()
            .enumerate()
            .map(|(index, target)| {
                let name = target
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{}-{}", config.name, index + 1));
                match &target.place {
                    TargetPlace::Local { dir, slots } => with_slots(
                        Target::new(Host::new(name, dir.clone()), target.port),
                        slots.as_ref(),
                        &config.strategy,
                    ),
                    TargetPlace::Agent { labels, dir, slots } => with_slots(
                        Target::agent(
                            sorat_deploy::agent::AgentHost::new(
                                name,
                                labels.clone(),
                                dir.clone(),
                                Arc::clone(&agents),
                            ),
                            target.port,
                        ),
                        slots.as_ref(),
                        &config.strategy,
                    ),
                    TargetPlace::Ssh(ssh) => {
                        let mut host = SshHost::new(SshTarget {
                            name,
                            address: ssh.host.clone(),
                            port: ssh.ssh_port,
                            user: ssh.user.clone(),
                            key: ssh.key.clone(),
                            known_hosts: ssh.known_hosts.clone(),
                            dir: ssh.dir.clone(),
                            connect_timeout: Duration::from_secs(10),
                            control_dir: std::env::temp_dir(),
                        });
                        // A blue-green host runs this very executable as its router, unless
                        // the target names another (for a host of another architecture).
                        if ssh.slots.is_some()
                            && let Some(executable) =
                                ssh.router.clone().or_else(|| std::env::current_exe().ok())
                        {
                            host = host.with_router(executable);
                        }
                        with_slots(
                            Target::ssh(host, target.port),
                            ssh.slots.as_ref(),
                            &config.strategy,
                        )
                    }
                }
            })
            .map(|target| match &sender {
                Some(sender) => target.with_lines(sender.clone()),
                None => target,
            })
            .collect();
        EnvironmentState {
            config: config.clone(),
            environment,
            targets,
            strategy,
            busy: tokio::sync::Mutex::new(()),
            starting: std::sync::atomic::AtomicBool::new(true),
            lines,
            progress,
            pauses,
        }
    }
}

/// `target` with its blue-green slots, when it has some and the strategy is blue-green.
fn with_slots(target: Target, slots: Option<&[u16; 2]>, strategy: &StrategyConfig) -> Target {
    match (slots, strategy) {
        (
            Some(ports),
            StrategyConfig::BlueGreen {
                scale_down_delay,
                listen,
                ..
            },
        ) => target.with_slots(BlueGreenSlots {
            ports: *ports,
            listen: *listen,
            scale_down_delay: *scale_down_delay,
        }),
        _ => target,
    }
}

/// Whether a queued job may start, as its environment's protection rules say.
pub enum Gate {
    /// It may (no environment, or every rule holds).
    Open,
    /// It waits for an approval (the text says by whom and how).
    Approval(String),
    /// It may not, ever (the text says why): it fails.
    Refused(String),
}

/// The protection rules of a deployment job's environment that can be judged before it
/// starts: the environment exists, the run's branch is allowed, the approval was given.
/// (`requires` names an artifact, known only when the deploy step runs: the deploy checks
/// it before any host changes.)
pub async fn gate(state: &Arc<AppState>, job: &sorat_state::Job) -> ApiResult<Gate> {
    let Some(name) = &job.environment else {
        return Ok(Gate::Open);
    };
    let Some(environment) = state.environments.get(name) else {
        return Ok(Gate::Refused(format!(
            "environment `{name}` is not configured in sorat.yaml (configured: {})",
            state
                .environments
                .keys()
                .map(|known| format!("`{known}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    if !environment.config.branches.is_empty() {
        let run = state
            .store
            .run(job.run_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("run {}", job.run_id)))?;
        let branch = run.git_ref.strip_prefix("refs/heads/");
        let allowed = branch.is_some_and(|branch| {
            environment.config.branches.iter().any(|pattern| {
                globset::Glob::new(pattern)
                    .map(|glob| glob.compile_matcher().is_match(branch))
                    .unwrap_or(false)
            })
        });
        if !allowed {
            return Ok(Gate::Refused(format!(
                "environment `{name}` accepts deployments from branches {} only; this run is on `{}`",
                environment
                    .config
                    .branches
                    .iter()
                    .map(|pattern| format!("`{pattern}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                branch.unwrap_or(&run.git_ref)
            )));
        }
    }
    if let Some(role) = &environment.config.approval
        && job.approved_by.is_none()
    {
        let article = if role.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        return Ok(Gate::Approval(format!(
            "waiting for approval by {article} {role} to deploy to `{name}`: sorat approve {} {}",
            job.run_id, job.key
        )));
    }
    Ok(Gate::Open)
}

/// Fails a queued job that its environment refuses.
pub async fn refuse(state: &Arc<AppState>, job: &sorat_state::Job, reason: &str) -> ApiResult<()> {
    if state
        .store
        .transition_job(
            job.id,
            &[sorat_state::JobStatus::Queued],
            sorat_state::JobStatus::Failure,
            Some(reason),
            crate::now(),
        )
        .await?
    {
        tracing::warn!(job = job.id, %reason, "deployment job refused");
        state.notify_job(job.id);
        crate::dispatch::advance_run(state, job.run_id).await?;
    }
    Ok(())
}

/// `POST /api/v1/runs/{id}/jobs/{job}/approve`: a deployment job waiting for its
/// environment's approval may start. Needs the role the environment names.
pub async fn approve(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((run_id, key)): Path<(i64, String)>,
) -> ApiResult<Json<Value>> {
    let run = state
        .store
        .run(run_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {run_id}")))?;
    caller
        .require(&state.store, Some(&run.project), Role::Viewer)
        .await?;
    let job = crate::logs::find_job(&state, run_id, &key).await?;
    let Some(name) = job.environment.clone() else {
        return Err(ApiError::conflict(
            "not_a_deployment",
            format!("job `{key}` of run {run_id} deploys to no environment; nothing to approve"),
        ));
    };
    let environment = find(&state, &name)?;
    let Some(role) = environment.config.approval.as_deref() else {
        return Err(ApiError::conflict(
            "no_approval_needed",
            format!("environment `{name}` needs no approval"),
        ));
    };
    let needed: Role = role
        .parse()
        .map_err(|_| ApiError::internal(format!("bad approval role `{role}`")))?;
    caller
        .require(&state.store, Some(&run.project), needed)
        .await?;
    if let Some(by) = &job.approved_by {
        return Err(ApiError::conflict(
            "already_approved",
            format!("job `{key}` of run {run_id} was approved by {by} already"),
        ));
    }
    if !state
        .store
        .approve_job(job.id, &caller.name, crate::now())
        .await?
    {
        return Err(ApiError::conflict(
            "not_waiting",
            format!(
                "job `{key}` of run {run_id} is {}: only a job not yet started can be approved",
                job.status.as_str()
            ),
        ));
    }
    tracing::info!(run = run_id, job = %key, environment = %name, by = %caller.name, "deployment approved");
    state.store.set_job_waiting(job.id, None).await?;
    state.notify_job(job.id);
    state.wake_claims();
    Ok(Json(json!({
        "run": run_id,
        "job": key,
        "environment": name,
        "approved_by": caller.name,
    })))
}

/// `GET /api/v1/environments/{env}/deployments`: what was deployed or rolled back, newest
/// first, with the engine's reports (hosts, phases, analyses, bake).
pub async fn deployments(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(&state.store, None, Role::Viewer).await?;
    find(&state, &name)?;
    let deployments = state.store.deployments(&name, 100).await?;
    Ok(Json(
        json!({ "environment": name, "deployments": deployments }),
    ))
}

async fn record(
    state: &Arc<AppState>,
    report: &DeployReport,
    kind: &str,
    artifact: Option<(&str, &str)>,
    who: &str,
    started_at: i64,
) {
    let json = report_json(report);
    let deployment = sorat_state::NewDeployment {
        environment: report.environment.clone(),
        kind: kind.to_owned(),
        release: report.release.map(i64::from),
        artifact: artifact.map(|(name, _)| name.to_owned()),
        digest: artifact.map(|(_, digest)| digest.to_owned()),
        who: who.to_owned(),
        outcome: json["outcome"].as_str().unwrap_or("unknown").to_owned(),
        reason: json["reason"].as_str().map(str::to_owned),
        report: json,
        started_at,
        finished_at: crate::now(),
    };
    if let Err(error) = state.store.record_deployment(&deployment).await {
        tracing::error!(environment = %report.environment, %error, "cannot record the deployment");
    }
}

/// The environment's analyses, each with its Prometheus source.
fn analysis_steps(config: &EnvironmentConfig) -> Vec<Arc<AnalysisStep>> {
    let mut out = Vec::new();
    for analysis in &config.analyses {
        let metrics = analysis
            .metrics
            .iter()
            .map(|metric| {
                let mut built = Metric::new(&metric.name, &metric.query)
                    .with_interval(metric.interval)
                    .with_count(metric.count)
                    .with_initial_delay(metric.initial_delay)
                    .with_failure_limit(metric.failure_limit)
                    .with_inconclusive_limit(metric.inconclusive_limit)
                    .with_consecutive_error_limit(metric.consecutive_error_limit);
                if let Some(condition) = &metric.success_condition {
                    built = built.with_success_condition(condition);
                }
                if let Some(condition) = &metric.failure_condition {
                    built = built.with_failure_condition(condition);
                }
                built
            })
            .collect();
        let source = match PrometheusSource::new(&analysis.prometheus) {
            Ok(source) => source,
            Err(error) => {
                tracing::error!(environment = %config.name, analysis = %analysis.name, %error, "analysis left out");
                continue;
            }
        };
        match Analysis::new(metrics) {
            Ok(built) => out.push(Arc::new(AnalysisStep {
                name: analysis.name.clone(),
                analysis: built,
                source: Arc::new(source),
            })),
            Err(error) => {
                tracing::error!(environment = %config.name, analysis = %analysis.name, %error, "analysis left out");
            }
        }
    }
    out
}

/// Starts the services of every environment's current release (after a restart), each
/// environment's hosts at once, holding the environment as a deploy does: a deploy that
/// comes meanwhile waits for it (it would otherwise race the start, slot for slot).
pub async fn start_services(state: &Arc<AppState>) {
    futures_util::future::join_all(state.environments.values().map(|environment| async move {
        let _busy = environment.busy.lock().await;
        let started = futures_util::future::join_all(
            environment
                .targets
                .iter()
                .map(|target| target.start(&environment.environment)),
        )
        .await;
        for (target, result) in environment.targets.iter().zip(started) {
            if let Err(error) = result {
                tracing::warn!(environment = %environment.config.name, host = %target.name(), %error, "starting a service");
            }
        }
        environment
            .starting
            .store(false, std::sync::atomic::Ordering::Release);
    }))
    .await;
}

/// Takes the environment for a deploy or a rollback: refused (409 `busy`) while another runs;
/// right after the server started, it waits (up to two minutes) for the services to be up.
async fn hold<'a>(
    environment: &'a EnvironmentState,
    name: &str,
) -> ApiResult<tokio::sync::MutexGuard<'a, ()>> {
    if environment
        .starting
        .load(std::sync::atomic::Ordering::Acquire)
        && let Ok(held) =
            tokio::time::timeout(Duration::from_secs(120), environment.busy.lock()).await
    {
        return Ok(held);
    }
    environment.busy.try_lock().map_err(|_| {
        ApiError::conflict(
            "busy",
            format!("environment `{name}` is being deployed or rolled back"),
        )
    })
}

/// Stops every service (on shutdown), each with its grace period.
pub async fn stop_services(state: &Arc<AppState>) {
    for environment in state.environments.values() {
        for target in &environment.targets {
            target.shutdown(environment.config.stop_grace).await;
        }
    }
}

fn report_json(report: &DeployReport) -> Value {
    let (outcome, reason) = match &report.outcome {
        Outcome::Succeeded => ("succeeded", None),
        Outcome::Aborted { reason } => ("aborted", Some(reason.clone())),
        Outcome::RolledBack { reason } => ("rolled_back", Some(reason.clone())),
        Outcome::Failed { reason } => ("failed", Some(reason.clone())),
    };
    json!({
        "environment": report.environment,
        "release": report.release,
        "outcome": outcome,
        "reason": reason,
        "elapsed_ms": report.elapsed.as_millis() as u64,
        "analyses": report.analyses.iter().map(|(name, analysis)| json!({
            "name": name,
            "report": analysis,
        })).collect::<Vec<_>>(),
        "bake": report.bake.as_ref().map(|failure| match failure {
            None => json!({ "outcome": "passed" }),
            Some(reason) => json!({ "outcome": "failed", "reason": reason }),
        }),
        "hosts": report.hosts.iter().map(|host| json!({
            "host": host.host,
            "previous": host.previous,
            "current": host.current,
            "outcome": outcome_word(&host.outcome),
            "errors": host.errors,
            "timings_ms": host.timings.iter().map(|t| json!({
                "phase": t.phase.word(),
                "ms": t.duration.as_secs_f64() * 1000.0,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// A host's outcome as the API spells it.
fn outcome_word(outcome: &HostOutcome) -> &'static str {
    match outcome {
        HostOutcome::Deployed => "deployed",
        HostOutcome::PrepareFailed => "prepare_failed",
        HostOutcome::NotSwitched => "not_switched",
        HostOutcome::PreviewFailed => "preview_failed",
        HostOutcome::FailedRolledBack => "failed_rolled_back",
        HostOutcome::RolledBack => "rolled_back",
        HostOutcome::RollbackFailed => "rollback_failed",
    }
}

/// A release's status as the API spells it (as release.json does).
fn status_word(status: ReleaseStatus) -> &'static str {
    match status {
        ReleaseStatus::Prepared => "prepared",
        ReleaseStatus::Deployed => "deployed",
        ReleaseStatus::Failed => "failed",
        ReleaseStatus::RolledBack => "rolled_back",
    }
}

/// A supervised service's state as JSON (`null` when none is supervised).
fn service_json(state: Option<ServiceState>) -> Value {
    match state {
        None => Value::Null,
        Some(ServiceState::Starting { attempt }) => {
            json!({ "state": "starting", "attempt": attempt })
        }
        Some(ServiceState::Running { pid }) => json!({ "state": "running", "pid": pid }),
        Some(ServiceState::Exited { code }) => json!({ "state": "exited", "code": code }),
        Some(ServiceState::Backoff { delay }) => {
            json!({ "state": "backoff", "delay_ms": delay.as_millis() as u64 })
        }
        Some(ServiceState::Stopped) => json!({ "state": "stopped" }),
        Some(ServiceState::Failed { reason }) => json!({ "state": "failed", "reason": reason }),
        Some(ServiceState::Unknown { reason }) => json!({ "state": "unknown", "reason": reason }),
    }
}

fn find<'a>(state: &'a Arc<AppState>, name: &str) -> ApiResult<&'a Arc<EnvironmentState>> {
    state
        .environments
        .get(name)
        .ok_or_else(|| ApiError::not_found(format!("no environment `{name}`")))
}

/// `GET /api/v1/environments`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    caller.require(&state.store, None, Role::Viewer).await?;
    let mut out = Vec::new();
    for environment in state.environments.values() {
        // Every host at once, each given a few seconds: a host that does not answer (an
        // agent that died, an SSH host down) says so and holds up no other.
        let hosts = futures_util::future::join_all(environment.targets.iter().map(host_json)).await;
        out.push(json!({
            "name": environment.config.name,
            "hosts": hosts,
            "paused": environment.pauses.describe(),
        }));
    }
    Ok(Json(json!({ "environments": out })))
}

/// A service's secrets, from the server's store (the global ones: environments belong to no
/// project). Each value given out is masked in the environment's service lines from then on.
#[derive(Debug)]
struct StoreSecrets {
    store: sorat_state::Store,
    masker: Arc<std::sync::Mutex<Masker>>,
}

impl SecretResolver for StoreSecrets {
    fn resolve<'a>(&'a self, env: &'a [(String, String)]) -> sorat_deploy::deploy::ResolvedEnv<'a> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(env.len());
            for (key, value) in env {
                let Some(name) = sorat_config::platform::parse_secret_ref(value) else {
                    out.push((key.clone(), value.clone()));
                    continue;
                };
                match self.store.secret(None, &name).await {
                    Ok(Some(secret)) => {
                        if let Ok(mut masker) = self.masker.lock() {
                            masker
                                .add_secret(&name, &secret)
                                .map_err(|error| format!("`service.env.{key}`: {error}"))?;
                        }
                        out.push((key.clone(), secret));
                    }
                    Ok(None) => {
                        return Err(format!(
                            "`service.env.{key}` needs the secret `{name}`, which is not set (set it with `sorat secret set {name}`)"
                        ));
                    }
                    Err(error) => {
                        return Err(format!(
                            "cannot read the secret `{name}` for `service.env.{key}`: {error}"
                        ));
                    }
                }
            }
            Ok(out)
        })
    }
}

/// How long `GET /environments` waits for one host's answers.
const HOST_READ_LIMIT: Duration = Duration::from_secs(5);

/// A host of `GET /environments`: where it is, its current release, its service's state
/// and its blue-green slots; `error` when its releases could not be read.
async fn host_json(target: &Target) -> Value {
    let mut host = json!({
        "host": target.name(),
        "kind": target.kind(),
        "address": target.address(),
        "port": target.port(),
        "current": null,
        "service": service_json(target.service_state().await),
    });
    let read = tokio::time::timeout(HOST_READ_LIMIT, async {
        let current = target.current().await;
        let slots = match target.slot_ports() {
            Some(_) => Some(target.slot_status().await),
            None => None,
        };
        (current, slots)
    })
    .await;
    let (current, (serving, standby)) = match read {
        Ok((current, slots)) => (current, slots.unwrap_or_default()),
        Err(_) => {
            host["error"] = json!(format!(
                "the host did not answer within {}",
                sorat_config::duration::format_duration(HOST_READ_LIMIT)
            ));
            (Ok(None), (None, None))
        }
    };
    match current {
        Ok(current) => host["current"] = json!(current),
        Err(error) => host["error"] = json!(error.to_string()),
    }
    if let Some(slots) = target.slot_ports() {
        let part = |part: Option<(String, u32)>| {
            part.map(|(slot, release)| json!({ "slot": slot, "release": release }))
        };
        host["slots"] = json!({
            "ports": { "blue": slots[0], "green": slots[1] },
            "serving": part(serving),
            "standby": part(standby),
        });
    }
    host
}

/// `GET /api/v1/environments/{env}/releases`: every host's releases, newest first.
pub async fn releases(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(&state.store, None, Role::Viewer).await?;
    let environment = find(&state, &name)?;
    let mut hosts = Vec::new();
    for target in &environment.targets {
        let current = match target.current().await {
            Ok(current) => current,
            Err(error) => {
                hosts.push(json!({ "host": target.name(), "error": error.to_string() }));
                continue;
            }
        };
        let mut numbers = target.releases().await.unwrap_or_default();
        numbers.sort_unstable_by(|a, b| b.cmp(a));
        let mut releases = Vec::new();
        for number in numbers {
            if let Ok(record) = target.record(number).await {
                releases.push(json!({
                    "number": record.number,
                    "artifact": record.artifact,
                    "digest": record.digest,
                    "who": record.who,
                    "created": record.created.to_string(),
                    "status": status_word(record.status),
                    "current": Some(record.number) == current,
                }));
            }
        }
        hosts.push(json!({ "host": target.name(), "current": current, "releases": releases }));
    }
    Ok(Json(json!({ "environment": name, "hosts": hosts })))
}

/// The body of a deployment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// `name@version` in the artifact repository.
    pub artifact: String,
    /// The deployment job an agent deploys for (agents only).
    #[serde(default)]
    pub job: Option<i64>,
    /// That job's lease token (agents only).
    #[serde(default)]
    pub lease: Option<String>,
}

/// `POST /api/v1/environments/{env}/deploy`: the artifact, verified, to every host by the
/// environment's strategy. 200 when it succeeded; 409 with the report when it did not (the
/// hosts are back on their previous release).
pub async fn deploy(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(body): Json<DeployRequest>,
) -> ApiResult<Response> {
    let environment = Arc::clone(find(&state, &name)?);
    // Protection cannot be gone around: an agent deploys only for the running deployment job
    // it holds the lease of, and only once that job passed the environment's gates (approval,
    // branches); a person needs the developer role, and the approval role when the
    // environment has one (deploying by hand is approving it).
    let mut who = caller.name.clone();
    if caller.kind == sorat_state::TokenKind::Agent {
        let (Some(job_id), Some(lease)) = (body.job, body.lease.as_deref()) else {
            return Err(ApiError::forbidden(
                "an agent deploys only for a running deployment job: send its `job` and `lease`",
            ));
        };
        let job = state
            .store
            .job(job_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("job {job_id}")))?;
        if job.status != sorat_state::JobStatus::Running
            || job.lease_token.as_deref() != Some(lease)
        {
            return Err(ApiError::conflict(
                "lease_lost",
                format!("job {job_id} is not running under this lease"),
            ));
        }
        // The record names who started the run and which job deployed, not the agent.
        if let Some(run) = state.store.run(job.run_id).await? {
            who = format!(
                "{} (run {} #{}, job {})",
                run.actor, run.project, run.number, job.key
            );
        }
        let mut judged = job.clone();
        judged.environment = Some(name.clone());
        match gate(&state, &judged).await? {
            Gate::Open => {}
            Gate::Approval(_) if job.environment.as_deref() != Some(name.as_str()) => {
                return Err(ApiError::forbidden(format!(
                    "environment `{name}` needs an approval, and job `{}` names another environment (or names it by an expression), so it never waited for one: write `environment: {name}` on the job",
                    job.key
                )));
            }
            Gate::Approval(why) => return Err(ApiError::forbidden(why)),
            Gate::Refused(reason) => return Err(ApiError::forbidden(reason)),
        }
    } else {
        caller.require(&state.store, None, Role::Developer).await?;
        if let Some(role) = environment.config.approval.as_deref() {
            let needed: Role = role
                .parse()
                .map_err(|_| ApiError::internal(format!("bad approval role `{role}`")))?;
            caller.require(&state.store, None, needed).await?;
        }
    }
    let Some((artifact_name, version)) = body.artifact.rsplit_once('@') else {
        return Err(ApiError::field("artifact", "write NAME@VERSION"));
    };
    let artifact = state
        .artifacts
        .get(artifact_name, version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no artifact {}", body.artifact)))?;
    // Every deployment checks the signature and every blob first.
    let report = state.artifacts.verify(artifact_name, version, None).await?;
    if !report.ok {
        return Err(ApiError::conflict(
            "not_verified",
            format!(
                "{} does not verify: {}",
                body.artifact,
                report.problems.join("; ")
            ),
        ));
    }
    // Protection: the same artifact must be current on every host of each required
    // environment.
    for required in &environment.config.requires {
        let Some(other) = state.environments.get(required) else {
            return Err(ApiError::conflict(
                "requires",
                format!("environment `{name}` requires `{required}`, which is not configured"),
            ));
        };
        for target in &other.targets {
            let current = match target.current().await.ok().flatten() {
                Some(number) => target.record(number).await.ok(),
                None => None,
            };
            if current.as_ref().map(|record| record.digest.as_str())
                != Some(artifact.digest.as_str())
            {
                return Err(ApiError::conflict(
                    "requires",
                    format!(
                        "{} must be deployed to `{required}` first (host {} runs {})",
                        body.artifact,
                        target.name(),
                        current.map_or_else(|| "nothing".to_string(), |record| record.artifact)
                    ),
                ));
            }
        }
    }
    let _busy = hold(&environment, &name).await?;
    // The files, staged once by digest, per environment (its deploys run one at a time);
    // after the deploy only this artifact's files stay, for the next deploy of it.
    let staging = state
        .config
        .server
        .data
        .join("deploy-staging")
        .join(&environment.config.name);
    tokio::fs::create_dir_all(&staging)
        .await
        .map_err(|error| ApiError::internal(format!("{}: {error}", staging.display())))?;
    let mut files = Vec::new();
    for file in &artifact.files {
        let source = staging.join(file.digest.to_string().replace(':', "-"));
        if !source.exists() {
            let bytes = state.artifacts.read_blob(&file.digest).await?;
            let partial = source.with_extension("partial");
            tokio::fs::write(&partial, &bytes)
                .await
                .map_err(|error| ApiError::internal(error.to_string()))?;
            tokio::fs::rename(&partial, &source)
                .await
                .map_err(|error| ApiError::internal(error.to_string()))?;
        }
        files.push(ReleaseFile {
            path: file.path.clone().into(),
            source,
            mode: file.mode,
            digest: file.digest.to_string(),
        });
    }
    let number = sorat_deploy::next_release_number(&environment.targets)
        .await
        .map_err(|error| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "host_unreachable",
                format!("cannot read the hosts' releases: {error}"),
            )
        })?;
    let spec = ReleaseSpec {
        number,
        meta: ReleaseMeta {
            artifact: body.artifact.clone(),
            digest: artifact.digest.to_string(),
            who: who.clone(),
            config: None,
        },
        files,
    };
    let strategy = environment.strategy.clone();
    let started_at = crate::now();
    let report = sorat_deploy::deploy(
        &environment.environment,
        &environment.targets,
        &spec,
        strategy,
    )
    .await;
    prune_staging(&staging, &spec.files).await;
    record(
        &state,
        &report,
        "deploy",
        Some((&body.artifact, artifact.digest.as_ref())),
        &who,
        started_at,
    )
    .await;
    let status = if report.outcome == Outcome::Succeeded {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    Ok((status, Json(report_json(&report))).into_response())
}

/// Removes what an environment's staging folder holds besides `keep` (earlier artifacts'
/// files, partial copies).
async fn prune_staging(staging: &std::path::Path, keep: &[ReleaseFile]) {
    let Ok(mut entries) = tokio::fs::read_dir(staging).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let path = entry.path();
        if keep.iter().any(|file| file.source == path) {
            continue;
        }
        if let Err(error) = tokio::fs::remove_file(&path).await {
            tracing::warn!(path = %path.display(), %error, "cannot remove a staged file");
        }
    }
}

/// The body of a rollback.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The release to go back to (default: the one before the current, on each host).
    #[serde(default)]
    pub to: Option<u32>,
}

/// `POST /api/v1/environments/{env}/rollback`.
pub async fn rollback(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Option<Json<RollbackRequest>>,
) -> ApiResult<Response> {
    caller.require(&state.store, None, Role::Developer).await?;
    let environment = Arc::clone(find(&state, &name)?);
    let body = body.map(|Json(body)| body).unwrap_or_default();
    let _busy = hold(&environment, &name).await?;
    let started_at = crate::now();
    let report = sorat_deploy::rollback(&environment.environment, &environment.targets, body.to)
        .await
        .map_err(|error| ApiError::conflict("rollback_refused", error.to_string()))?;
    record(&state, &report, "rollback", None, &caller.name, started_at).await;
    let status = if report.outcome == Outcome::Succeeded {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    Ok((status, Json(report_json(&report))).into_response())
}
