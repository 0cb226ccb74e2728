//! Hosts reached through a Sorat agent that runs on them (`agent` targets): the agent keeps
//! the host's folder (the same layout as a `local` host) and supervises its service; the
//! server sends it one [`HostOp`] at a time and reads the answer.
//!
//! Both ends are here: [`AgentHost`] is the server's side (each method one operation through
//! a [`HostChannel`], which the server implements over its agent API), [`HostExecutor`] the
//! agent's (it carries an operation out with [`Host`] and [`Supervisor`], as Sorat does for a
//! `local` host). What the channel is — HTTP, which agent answers — is the caller's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc, watch};

use crate::deploy::ServiceConfig;
use crate::health::{Probe, ProbeTarget};
use crate::release::{
    Host, ReleaseConfig, ReleaseError, ReleaseFile, ReleaseMeta, ReleaseRecord, ReleaseStatus,
};
use crate::service::{
    RestartPolicy, ServiceLine, ServiceSpec, ServiceState, StopOutcome, Supervisor,
};
use crate::ssh::RemoteService;

/// A file of a release to prepare, by digest; `source` is where the agent put its content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpFile {
    /// Its path inside the release.
    pub path: PathBuf,
    /// Its digest, `sha256:<hex>`.
    pub digest: String,
    /// Its mode.
    pub mode: u32,
    /// The local copy of its content (filled in by the agent before it prepares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
}

/// One operation on a host's folder or service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HostOp {
    /// The current release, the complete releases and the last number used.
    State,
    /// Prepares release `number` from `files` (fetched by digest first).
    Prepare {
        /// The release's number.
        number: u32,
        /// `name@version`.
        artifact: String,
        /// The artifact's digest.
        digest: String,
        /// Who deploys it.
        who: String,
        /// The service's configuration to record.
        config: Option<ReleaseConfig>,
        /// Its files.
        files: Vec<OpFile>,
    },
    /// Points `current` at release `number`.
    Switch {
        /// The release.
        number: u32,
    },
    /// Removes `current`.
    ClearCurrent,
    /// Reads `release.json` of release `number`.
    Record {
        /// The release.
        number: u32,
    },
    /// Sets a release's status.
    SetStatus {
        /// The release.
        number: u32,
        /// Its status.
        status: ReleaseStatus,
    },
    /// Keeps the last `keep` releases.
    Prune {
        /// How many.
        keep: usize,
        /// Which must stay.
        protect: Vec<u32>,
    },
    /// Stops the service and starts release `number`'s.
    Start {
        /// The release.
        number: u32,
        /// Its command.
        command: String,
        /// Its environment.
        env: Vec<(String, String)>,
        /// Its port.
        port: u16,
        /// How long the old one may take to stop.
        stop_grace_ms: u64,
        /// The target's name, which the service's lines carry (default: the agent's name).
        #[serde(default)]
        host: Option<String>,
    },
    /// Stops the service.
    Stop {
        /// SIGTERM, then SIGKILL after this long.
        grace_ms: u64,
    },
    /// The service's state (`null` when none is supervised).
    ServiceState,
    /// One attempt of a probe against the service, on the host.
    Probe {
        /// What to check.
        probe: Probe,
        /// The service's port.
        port: u16,
        /// How long the attempt may take.
        limit_ms: u64,
    },
}

/// The way to a host's agent: sends an operation on the folder `dir` to the agent that the
/// target names (`labels`), and answers what it answered.
pub trait HostChannel: Send + Sync + std::fmt::Debug {
    /// Sends `op` and waits for the answer (an error text when the agent failed it, or when
    /// no agent answered).
    fn call<'a>(
        &'a self,
        labels: &'a [String],
        dir: &'a str,
        op: HostOp,
    ) -> Pin<Box<dyn Future<Output = Result<Value, String>> + Send + 'a>>;
}

/// A host reached through the agent that runs on it.
#[derive(Debug)]
pub struct AgentHost {
    name: String,
    labels: Vec<String>,
    dir: String,
    channel: Arc<dyn HostChannel>,
}

fn agent_error(host: &str, action: &'static str, message: String) -> ReleaseError {
    ReleaseError::Remote {
        host: host.to_owned(),
        action,
        message,
    }
}

impl AgentHost {
    /// The host named `name`, served by the agent with `labels`, its releases in `dir` there.
    pub fn new(
        name: impl Into<String>,
        labels: Vec<String>,
        dir: impl Into<String>,
        channel: Arc<dyn HostChannel>,
    ) -> AgentHost {
        AgentHost {
            name: name.into(),
            labels,
            dir: dir.into(),
            channel,
        }
    }

    /// The host's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The labels that pick its agent.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The folder on the host.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    async fn call(&self, action: &'static str, op: HostOp) -> Result<Value, ReleaseError> {
        self.channel
            .call(&self.labels, &self.dir, op)
            .await
            .map_err(|message| agent_error(&self.name, action, message))
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        action: &'static str,
        value: Value,
    ) -> Result<T, ReleaseError> {
        serde_json::from_value(value)
            .map_err(|error| agent_error(&self.name, action, format!("a bad answer: {error}")))
    }

    /// The current release and the complete releases.
    pub async fn current_and_releases(&self) -> Result<(Option<u32>, Vec<u32>), ReleaseError> {
        let value = self.call("cannot read the releases", HostOp::State).await?;
        let current = self.decode("cannot read the releases", value["current"].clone())?;
        let releases = self.decode("cannot read the releases", value["releases"].clone())?;
        Ok((current, releases))
    }

    /// The highest release number ever completed on the host.
    pub async fn last_number(&self) -> Result<u32, ReleaseError> {
        let value = self.call("cannot read the releases", HostOp::State).await?;
        self.decode("cannot read the releases", value["last"].clone())
    }

    /// Prepares a release: the agent fetches each file by digest, copies it in and checks it.
    pub async fn prepare(
        &self,
        number: u32,
        meta: &ReleaseMeta,
        files: &[ReleaseFile],
    ) -> Result<ReleaseRecord, ReleaseError> {
        let op = HostOp::Prepare {
            number,
            artifact: meta.artifact.clone(),
            digest: meta.digest.clone(),
            who: meta.who.clone(),
            config: meta.config.clone(),
            files: files
                .iter()
                .map(|file| OpFile {
                    path: file.path.clone(),
                    digest: file.digest.clone(),
                    mode: file.mode,
                    source: None,
                })
                .collect(),
        };
        let value = self.call("cannot prepare the release", op).await?;
        self.decode("cannot prepare the release", value)
    }

    /// Points `current` at `number`.
    pub async fn switch(&self, number: u32) -> Result<(), ReleaseError> {
        self.call("cannot switch current", HostOp::Switch { number })
            .await
            .map(drop)
    }

    /// Removes `current`.
    pub async fn clear_current(&self) -> Result<(), ReleaseError> {
        self.call("cannot remove current", HostOp::ClearCurrent)
            .await
            .map(drop)
    }

    /// Reads `release.json` of `number`.
    pub async fn record(&self, number: u32) -> Result<ReleaseRecord, ReleaseError> {
        let value = self
            .call("cannot read release.json", HostOp::Record { number })
            .await?;
        self.decode("cannot read release.json", value)
    }

    /// Sets a release's status.
    pub async fn set_status(&self, number: u32, status: ReleaseStatus) -> Result<(), ReleaseError> {
        self.call(
            "cannot write release.json",
            HostOp::SetStatus { number, status },
        )
        .await
        .map(drop)
    }

    /// Keeps the last `keep` releases; returns the removed numbers.
    pub async fn prune(&self, keep: usize, protect: &[u32]) -> Result<Vec<u32>, ReleaseError> {
        let value = self
            .call(
                "cannot prune releases",
                HostOp::Prune {
                    keep,
                    protect: protect.to_vec(),
                },
            )
            .await?;
        self.decode("cannot prune releases", value)
    }

    /// Starts release `number`'s service (stopping the old one); its states are read from
    /// the agent while someone listens.
    pub async fn start_service(
        self: &Arc<Self>,
        number: u32,
        service: &ServiceConfig,
        port: u16,
    ) -> Result<RemoteService, ReleaseError> {
        self.call(
            "cannot start the service",
            HostOp::Start {
                number,
                command: service.command.clone(),
                env: service.env.clone(),
                port,
                stop_grace_ms: service.stop_grace.as_millis() as u64,
                host: Some(self.name().to_owned()),
            },
        )
        .await?;
        Ok(self.watch_service())
    }

    /// Watches the service the agent supervises.
    pub fn watch_service(self: &Arc<Self>) -> RemoteService {
        let (sender, receiver) = watch::channel(ServiceState::Starting { attempt: 1 });
        let host = Arc::clone(self);
        let poller = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Ok(value) = host
                    .call("cannot read the service's state", HostOp::ServiceState)
                    .await
                    && let Ok(Some(state)) = serde_json::from_value::<Option<ServiceState>>(value)
                {
                    let ended =
                        matches!(state, ServiceState::Failed { .. } | ServiceState::Stopped);
                    sender.send_if_modified(|old| {
                        let changed = *old != state;
                        *old = state;
                        changed
                    });
                    if ended {
                        return;
                    }
                }
                if sender.is_closed() {
                    return;
                }
            }
        });
        RemoteService::from_parts(receiver, poller)
    }

    /// Whether the agent supervises a running service now.
    pub async fn service_running(&self) -> Result<bool, ReleaseError> {
        let value = self
            .call("cannot read the service's state", HostOp::ServiceState)
            .await?;
        Ok(matches!(
            serde_json::from_value::<Option<ServiceState>>(value),
            Ok(Some(
                ServiceState::Running { .. }
                    | ServiceState::Starting { .. }
                    | ServiceState::Backoff { .. }
            ))
        ))
    }

    /// Stops the service.
    pub async fn stop_service(&self, grace: Duration) -> Result<StopOutcome, ReleaseError> {
        let value = self
            .call(
                "cannot stop the service",
                HostOp::Stop {
                    grace_ms: grace.as_millis() as u64,
                },
            )
            .await?;
        self.decode("cannot stop the service", value)
    }

    /// One attempt of `probe` on the host: `Err((why, timed_out))` when it failed.
    pub async fn probe(
        &self,
        probe: &Probe,
        port: u16,
        limit: Duration,
    ) -> Result<(), (String, bool)> {
        let op = HostOp::Probe {
            probe: probe.clone(),
            port,
            limit_ms: limit.as_millis() as u64,
        };
        match self.channel.call(&self.labels, &self.dir, op).await {
            Err(message) => Err((message, false)),
            Ok(value) => {
                if value["ok"].as_bool() == Some(true) {
                    Ok(())
                } else {
                    Err((
                        value["failure"]
                            .as_str()
                            .unwrap_or("the probe failed")
                            .to_owned(),
                        value["timed_out"].as_bool().unwrap_or(false),
                    ))
                }
            }
        }
    }
}

/// The agent's side: carries out operations on its hosts' folders, and supervises their
/// services (one per folder).
#[derive(Debug, Default)]
pub struct HostExecutor {
    services: Mutex<HashMap<PathBuf, Supervisor>>,
    lines: Option<mpsc::Sender<ServiceLine>>,
}

fn blocking_error(error: tokio::task::JoinError) -> String {
    format!("a file task failed: {error}")
}

impl HostExecutor {
    /// An executor; the services' lines go to `lines` when given.
    pub fn new(lines: Option<mpsc::Sender<ServiceLine>>) -> HostExecutor {
        HostExecutor {
            services: Mutex::new(HashMap::new()),
            lines,
        }
    }

    /// Carries out `op` on the folder `dir` (host `name`). Prepare's files must have their
    /// `source` filled in.
    pub async fn execute(&self, name: &str, dir: &Path, op: HostOp) -> Result<Value, String> {
        let host = Host::new(name, dir);
        let run = |work: Box<dyn FnOnce() -> Result<Value, ReleaseError> + Send>| async move {
            tokio::task::spawn_blocking(work)
                .await
                .map_err(blocking_error)?
                .map_err(|error| error.to_string())
        };
        match op {
            HostOp::State => {
                run(Box::new(move || {
                    Ok(json!({
                        "current": host.current()?,
                        "releases": host.releases()?,
                        "last": host.last_number()?,
                    }))
                }))
                .await
            }
            HostOp::Prepare {
                number,
                artifact,
                digest,
                who,
                config,
                files,
            } => {
                let mut release_files = Vec::with_capacity(files.len());
                for file in files {
                    let Some(source) = file.source else {
                        return Err(format!(
                            "{}: its content was not fetched",
                            file.path.display()
                        ));
                    };
                    release_files.push(ReleaseFile {
                        path: file.path,
                        source,
                        mode: file.mode,
                        digest: file.digest,
                    });
                }
                let meta = ReleaseMeta {
                    artifact,
                    digest,
                    who,
                    config,
                };
                run(Box::new(move || {
                    let record = host.prepare(number, &meta, &release_files)?;
                    serde_json::to_value(record).map_err(|error| ReleaseError::Record {
                        path: PathBuf::from("release.json"),
                        message: error.to_string(),
                    })
                }))
                .await
            }
            HostOp::Switch { number } => {
                run(Box::new(move || host.switch(number).map(|()| Value::Null))).await
            }
            HostOp::ClearCurrent => {
                run(Box::new(move || host.clear_current().map(|()| Value::Null))).await
            }
            HostOp::Record { number } => {
                run(Box::new(move || {
                    let record = host.record(number)?;
                    serde_json::to_value(record).map_err(|error| ReleaseError::Record {
                        path: PathBuf::from("release.json"),
                        message: error.to_string(),
                    })
                }))
                .await
            }
            HostOp::SetStatus { number, status } => {
                run(Box::new(move || {
                    host.set_status(number, status).map(|()| Value::Null)
                }))
                .await
            }
            HostOp::Prune { keep, protect } => {
                run(Box::new(move || {
                    host.prune(keep, &protect).map(|removed| json!(removed))
                }))
                .await
            }
            HostOp::Start {
                number,
                command,
                env,
                port,
                stop_grace_ms,
                host: target_name,
            } => {
                let mut services = self.services.lock().await;
                if let Some(old) = services.remove(dir) {
                    old.stop(Duration::from_millis(stop_grace_ms)).await;
                }
                let spec = ServiceSpec {
                    host: target_name.unwrap_or_else(|| name.to_owned()),
                    release: number,
                    command,
                    working_dir: host.current_path(),
                    port,
                    env,
                    restart: RestartPolicy::default(),
                };
                services.insert(
                    dir.to_path_buf(),
                    Supervisor::start(spec, self.lines.clone()),
                );
                Ok(Value::Null)
            }
            HostOp::Stop { grace_ms } => {
                let supervisor = self.services.lock().await.remove(dir);
                let outcome = match supervisor {
                    Some(supervisor) => supervisor.stop(Duration::from_millis(grace_ms)).await,
                    None => StopOutcome::NotRunning,
                };
                serde_json::to_value(outcome).map_err(|error| error.to_string())
            }
            HostOp::ServiceState => {
                let services = self.services.lock().await;
                let state = services.get(dir).map(Supervisor::state);
                serde_json::to_value(state).map_err(|error| error.to_string())
            }
            HostOp::Probe {
                probe,
                port,
                limit_ms,
            } => {
                let target = ProbeTarget::local(port, host.current_path());
                let limit = Duration::from_millis(limit_ms);
                Ok(
                    match crate::health::probe_once(&probe, &target, limit).await {
                        Ok(()) => json!({ "ok": true }),
                        Err((failure, timed_out)) => {
                            json!({ "ok": false, "failure": failure, "timed_out": timed_out })
                        }
                    },
                )
            }
        }
    }

    /// Stops every service (when the agent stops), each with `grace`.
    pub async fn stop_all(&self, grace: Duration) {
        let services: Vec<Supervisor> =
            self.services.lock().await.drain().map(|(_, s)| s).collect();
        for supervisor in services {
            supervisor.stop(grace).await;
        }
    }
}
