//! Operations on `agent` targets' hosts, through the agents that run there: `sorat-deploy`
//! calls [`AgentOps`] (its [`HostChannel`]); the agent picked by the target's labels takes
//! the operation with `POST /api/v1/agent/ops` (a long poll, like job claims), carries it out
//! and answers with `POST /api/v1/agent/ops/{id}`.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use sorat_deploy::agent::{HostChannel, HostOp};
use tokio::sync::{Notify, oneshot};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

/// An operation waiting for its agent.
#[derive(Debug)]
struct Queued {
    id: u64,
    dir: String,
    op: HostOp,
}

/// The operations queued per agent, and the answers awaited.
#[derive(Debug, Default)]
pub struct AgentOps {
    state: OnceLock<Weak<AppState>>,
    queues: Mutex<HashMap<String, VecDeque<Queued>>>,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>,
    next: AtomicU64,
    wake: Notify,
}

impl AgentOps {
    /// Connects the queue to the server's state (which knows the online agents).
    pub fn attach(&self, state: &Arc<AppState>) {
        let _ = self.state.set(Arc::downgrade(state));
    }

    /// The one online agent whose labels include all of `labels`.
    fn agent_for(&self, labels: &[String]) -> Result<String, String> {
        let state = self
            .state
            .get()
            .and_then(Weak::upgrade)
            .ok_or("the server is stopping")?;
        let matching: Vec<String> = state
            .online_agents()
            .into_iter()
            .filter(|agent| labels.iter().all(|label| agent.labels.contains(label)))
            .map(|agent| agent.name)
            .collect();
        match matching.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(format!(
                "no online agent has the labels {}",
                labels
                    .iter()
                    .map(|label| format!("`{label}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            many => Err(format!(
                "the labels {labels:?} match {} agents ({}); an agent target is one host: give it labels only one agent has",
                many.len(),
                many.join(", ")
            )),
        }
    }

    /// The next operation for `agent`, if any.
    fn take(&self, agent: &str) -> Option<Queued> {
        self.queues
            .lock()
            .ok()?
            .get_mut(agent)
            .and_then(VecDeque::pop_front)
    }
}

impl HostChannel for AgentOps {
    fn call<'a>(
        &'a self,
        labels: &'a [String],
        dir: &'a str,
        op: HostOp,
    ) -> Pin<Box<dyn Future<Output = Result<Value, String>> + Send + 'a>> {
        Box::pin(async move {
            let agent = self.agent_for(labels)?;
            // Copying a release may take long; everything else is quick.
            let limit = match &op {
                HostOp::Prepare { .. } => Duration::from_secs(30 * 60),
                HostOp::Stop { grace_ms }
                | HostOp::Start {
                    stop_grace_ms: grace_ms,
                    ..
                } => Duration::from_millis(*grace_ms) + Duration::from_secs(60),
                // Stopping what holds the slot, then the health check's whole timeout.
                HostOp::SlotReady {
                    stop_grace_ms,
                    health,
                    ..
                } => {
                    Duration::from_millis(*stop_grace_ms) * 2
                        + health.timeout
                        + Duration::from_secs(60)
                }
                // The watch of a service asks every 200 ms: an agent that does not answer
                // within 10 s makes its state `unknown` rather than stale.
                HostOp::ServiceState | HostOp::Slots => Duration::from_secs(10),
                _ => Duration::from_secs(60),
            };
            let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
            let (sender, receiver) = oneshot::channel();
            if let Ok(mut waiting) = self.waiting.lock() {
                waiting.insert(id, sender);
            }
            if let Ok(mut queues) = self.queues.lock() {
                queues.entry(agent.clone()).or_default().push_back(Queued {
                    id,
                    dir: dir.to_owned(),
                    op,
                });
            }
            self.wake.notify_waiters();
            match tokio::time::timeout(limit, receiver).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err(format!("agent `{agent}` dropped the operation")),
                Err(_) => {
                    if let Ok(mut waiting) = self.waiting.lock() {
                        waiting.remove(&id);
                    }
                    Err(format!(
                        "agent `{agent}` did not answer within {}",
                        sorat_config::duration::format_duration(limit)
                    ))
                }
            }
        })
    }
}

/// The body of an agent's request for work on its hosts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsRequest {
    /// The agent's name.
    pub name: String,
    /// How long to wait for an operation, at most 60 s.
    #[serde(default)]
    pub wait_ms: u64,
}

/// `POST /api/v1/agent/ops`: the next operation for this agent's hosts, waiting up to
/// `wait_ms` for one; 204 when none came.
pub async fn take(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<OpsRequest>,
) -> ApiResult<Response> {
    caller.require_agent()?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(request.wait_ms.min(60_000));
    loop {
        let woken = state.host_ops.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if let Some(queued) = state.host_ops.take(&request.name) {
            return Ok(
                Json(json!({ "id": queued.id, "dir": queued.dir, "op": queued.op }))
                    .into_response(),
            );
        }
        if tokio::time::Instant::now() >= deadline || state.shutting_down.is_cancelled() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        tokio::select! {
            () = &mut woken => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = state.shutting_down.cancelled() => {}
        }
    }
}

/// An agent's answer to an operation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpAnswer {
    /// Whether it was carried out.
    pub ok: bool,
    /// What it returned.
    #[serde(default)]
    pub value: Value,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// `POST /api/v1/agent/ops/{id}`: the answer to an operation.
pub async fn answer(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<u64>,
    Json(answer): Json<OpAnswer>,
) -> ApiResult<StatusCode> {
    caller.require_agent()?;
    let sender = state
        .host_ops
        .waiting
        .lock()
        .ok()
        .and_then(|mut waiting| waiting.remove(&id))
        .ok_or_else(|| ApiError::not_found(format!("no operation {id} is awaited")))?;
    let result = if answer.ok {
        Ok(answer.value)
    } else {
        Err(answer
            .error
            .unwrap_or_else(|| "the agent failed it".to_owned()))
    };
    let _ = sender.send(result);
    Ok(StatusCode::NO_CONTENT)
}

/// One line an agent's service wrote.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentLine {
    /// The target's name (as the server named it when it started the service).
    pub host: String,
    /// The release.
    pub release: u32,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The line.
    pub line: String,
}

/// Lines from an agent's services.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentLines {
    /// The agent's name.
    pub name: String,
    /// The lines, in order (at most 1000).
    pub lines: Vec<AgentLine>,
}

/// `POST /api/v1/agent/lines`: what the services an agent supervises wrote, into their
/// environments' logs; lines of a host no agent target of this agent has are counted as
/// ignored.
pub async fn lines(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(batch): Json<AgentLines>,
) -> ApiResult<Json<Value>> {
    caller.require_agent()?;
    if batch.lines.len() > 1000 {
        return Err(ApiError::field(
            "lines",
            format!("at most 1000 lines at once, not {}", batch.lines.len()),
        ));
    }
    let labels: Vec<String> = state
        .online_agents()
        .into_iter()
        .find(|agent| agent.name == batch.name)
        .map(|agent| agent.labels)
        .unwrap_or_default();
    // A batch holds few hosts: each is looked up once, among the agent targets that this
    // agent serves (their labels are the agent's).
    let mut targets: HashMap<String, Option<&sorat_deploy::Target>> = HashMap::new();
    let (mut accepted, mut ignored) = (0usize, 0usize);
    for line in batch.lines {
        let stream = match line.stream.as_str() {
            "stdout" => sorat_deploy::Stream::Stdout,
            "stderr" => sorat_deploy::Stream::Stderr,
            other => {
                return Err(ApiError::field(
                    "lines[].stream",
                    format!("`stdout` or `stderr`, not `{other}`"),
                ));
            }
        };
        let target = *targets.entry(line.host.clone()).or_insert_with(|| {
            state
                .environments
                .values()
                .flat_map(|environment| environment.targets.iter())
                .find(|target| {
                    target.name() == line.host
                        && target.agent_host().is_some_and(|host| {
                            host.labels().iter().all(|label| labels.contains(label))
                        })
                })
        });
        let sent = target.is_some_and(|target| {
            target.send_line(sorat_deploy::ServiceLine {
                host: line.host,
                release: line.release,
                stream,
                line: line.line,
            })
        });
        if sent {
            accepted += 1;
        } else {
            ignored += 1;
        }
    }
    Ok(Json(json!({ "accepted": accepted, "ignored": ignored })))
}
