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
use sorat_pipeline::mask::Masker;
use tokio::sync::{Mutex, mpsc, watch};

use crate::deploy::{BlueGreenSlots, Environment, ServiceConfig, Target};
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
        /// The folder inside the release it runs in (none: the release's own).
        #[serde(default)]
        working_dir: Option<String>,
        /// The variables of `env` that hold secrets, which the agent masks in its own log.
        #[serde(default)]
        secrets: Vec<(String, String)>,
    },
    /// Stops the service.
    Stop {
        /// SIGTERM, then SIGKILL after this long.
        grace_ms: u64,
    },
    /// The service's state (`null` when none is supervised).
    ServiceState,
    /// Blue-green: starts release `number` in the folder's idle slot (the release kept
    /// there is reused when it is this one) and waits for its health check there, on the
    /// host; the agent keeps the slots and their router for the folder.
    SlotReady {
        /// The release.
        number: u32,
        /// Its command.
        command: String,
        /// The folder inside the release it runs in (none: the release's own).
        #[serde(default)]
        working_dir: Option<String>,
        /// Its environment.
        env: Vec<(String, String)>,
        /// How long a stopped service may take.
        stop_grace_ms: u64,
        /// The target's name, which the service's lines carry.
        host: String,
        /// The port the router serves.
        port: u16,
        /// The two slots' ports.
        slots: [u16; 2],
        /// The router's address.
        listen: std::net::IpAddr,
        /// How long the release that served keeps running after a switch.
        scale_down_delay_ms: u64,
        /// The health check, run on the host against the slot's port.
        health: crate::health::HealthCheck,
        /// The variables of `env` that hold secrets, which the agent masks in its own log.
        #[serde(default)]
        secrets: Vec<(String, String)>,
    },
    /// Blue-green: switches the router (and `current`) to the slot running `number`.
    SlotPromote {
        /// The release.
        number: u32,
    },
    /// Blue-green: stops a release started in a slot and never switched to.
    SlotDiscard,
    /// Blue-green: which slot serves which release, and which one is kept.
    Slots,
    /// One attempt of a probe against the service, on the host.
    Probe {
        /// What to check.
        probe: Probe,
        /// The service's port.
        port: u16,
        /// How long the attempt may take.
        limit_ms: u64,
        /// Where a command probe runs (default: the folder's `current`).
        #[serde(default)]
        working_dir: Option<PathBuf>,
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
        secrets: &[(String, String)],
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
                working_dir: service.working_dir.clone(),
                secrets: secrets.to_vec(),
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
                let state = match host
                    .call("cannot read the service's state", HostOp::ServiceState)
                    .await
                {
                    Ok(value) => match serde_json::from_value::<Option<ServiceState>>(value) {
                        Ok(Some(state)) => Some(state),
                        Ok(None) => None,
                        Err(error) => Some(ServiceState::Unknown {
                            reason: format!("the agent answered a bad state: {error}"),
                        }),
                    },
                    // An agent that died or cannot be reached: said so until it answers.
                    Err(error) => Some(ServiceState::Unknown {
                        reason: error.to_string(),
                    }),
                };
                if let Some(state) = state
                    && crate::ssh::publish_state(&sender, state)
                {
                    return;
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

    /// Blue-green: the agent starts `number` in the folder's idle slot and waits for its
    /// health check there, on the host.
    pub(crate) async fn slot_ready(
        &self,
        env: &Environment,
        secrets: &[(String, String)],
        number: u32,
        port: u16,
        slots: &BlueGreenSlots,
    ) -> Result<(), String> {
        let op = HostOp::SlotReady {
            number,
            command: env.service.command.clone(),
            working_dir: env.service.working_dir.clone(),
            env: env.service.env.clone(),
            stop_grace_ms: env.service.stop_grace.as_millis() as u64,
            host: self.name.clone(),
            port,
            slots: slots.ports,
            listen: slots.listen,
            scale_down_delay_ms: slots.scale_down_delay.as_millis() as u64,
            health: env.health.clone(),
            secrets: secrets.to_vec(),
        };
        self.channel
            .call(&self.labels, &self.dir, op)
            .await
            .map(drop)
    }

    /// Blue-green: the agent switches its router (and `current`) to `number`'s slot.
    pub(crate) async fn slot_promote(&self, number: u32) -> Result<(), String> {
        self.channel
            .call(&self.labels, &self.dir, HostOp::SlotPromote { number })
            .await
            .map(drop)
    }

    /// Blue-green: the agent stops a release started in a slot and never switched to.
    pub(crate) async fn slot_discard(&self) {
        if let Err(error) = self
            .channel
            .call(&self.labels, &self.dir, HostOp::SlotDiscard)
            .await
        {
            tracing::warn!(host = %self.name, %error, "cannot stop the release in the idle slot");
        }
    }

    /// Blue-green: the serving and the kept slot (name and release), as the agent says.
    pub(crate) async fn slots(&self) -> (Option<(String, u32)>, Option<(String, u32)>) {
        let value = self
            .channel
            .call(&self.labels, &self.dir, HostOp::Slots)
            .await
            .unwrap_or_default();
        let read = |part: &Value| {
            Some((
                part["slot"].as_str()?.to_owned(),
                u32::try_from(part["release"].as_u64()?).ok()?,
            ))
        };
        (read(&value["serving"]), read(&value["standby"]))
    }

    /// One attempt of `probe` on the host: `Err((why, timed_out))` when it failed.
    pub async fn probe(
        &self,
        probe: &Probe,
        port: u16,
        working_dir: &Path,
        limit: Duration,
    ) -> Result<(), (String, bool)> {
        let op = HostOp::Probe {
            probe: probe.clone(),
            port,
            limit_ms: limit.as_millis() as u64,
            working_dir: Some(working_dir.to_path_buf()),
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
/// services (one per folder, or two slots and a router for a blue-green folder).
#[derive(Debug, Default)]
pub struct HostExecutor {
    services: Mutex<HashMap<PathBuf, Supervisor>>,
    slotted: Mutex<HashMap<PathBuf, Slotted>>,
    lines: Option<mpsc::Sender<ServiceLine>>,
    /// The secrets of the services started, masked in what the agent logs of their lines.
    masker: std::sync::Mutex<Masker>,
}

/// A blue-green folder on the agent's host: a local target with slots, and the environment
/// its last release was started with.
#[derive(Debug)]
struct Slotted {
    target: Arc<Target>,
    env: Environment,
}

fn blocking_error(error: tokio::task::JoinError) -> String {
    format!("a file task failed: {error}")
}

impl HostExecutor {
    /// An executor; the services' lines go to `lines` when given.
    pub fn new(lines: Option<mpsc::Sender<ServiceLine>>) -> HostExecutor {
        HostExecutor {
            services: Mutex::new(HashMap::new()),
            slotted: Mutex::new(HashMap::new()),
            lines,
            masker: std::sync::Mutex::new(Masker::new()),
        }
    }

    /// `text` (a service's line) with the secrets of every service started so far masked.
    pub fn mask(&self, text: &str) -> String {
        match self.masker.lock() {
            Ok(masker) if !masker.is_empty() => masker.mask(text),
            _ => text.to_owned(),
        }
    }

    fn add_secrets(&self, secrets: &[(String, String)]) {
        if let Ok(mut masker) = self.masker.lock() {
            for (name, value) in secrets {
                // The server refused a value too short to mask before it sent it.
                let _ = masker.add_secret(name, value);
            }
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
                working_dir,
                secrets,
            } => {
                self.add_secrets(&secrets);
                // A folder that ran blue-green gives its slots up for a plain service.
                let slotted = self.slotted.lock().await.remove(dir);
                if let Some(old) = slotted {
                    old.target.stop(Duration::from_millis(stop_grace_ms)).await;
                }
                let mut services = self.services.lock().await;
                if let Some(old) = services.remove(dir) {
                    old.stop(Duration::from_millis(stop_grace_ms)).await;
                }
                let spec = ServiceSpec {
                    host: target_name.unwrap_or_else(|| name.to_owned()),
                    release: number,
                    command,
                    working_dir: match &working_dir {
                        Some(dir) => host.current_path().join(dir),
                        None => host.current_path(),
                    },
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
            HostOp::SlotReady {
                number,
                command,
                working_dir,
                env,
                stop_grace_ms,
                host: target_name,
                port,
                slots,
                listen,
                scale_down_delay_ms,
                health,
                secrets,
            } => {
                self.add_secrets(&secrets);
                let environment = Environment {
                    name: String::new(),
                    service: ServiceConfig {
                        command,
                        working_dir,
                        env,
                        restart: RestartPolicy::default(),
                        stop_grace: Duration::from_millis(stop_grace_ms),
                    },
                    health,
                    keep_releases: usize::MAX,
                    bake: None,
                    judge: None,
                    secrets: None,
                    progress: None,
                };
                let config = BlueGreenSlots {
                    ports: slots,
                    listen,
                    scale_down_delay: Duration::from_millis(scale_down_delay_ms),
                };
                let target = {
                    let mut slotted = self.slotted.lock().await;
                    let fits = slotted.get(dir).is_some_and(|known| {
                        known.target.port() == port
                            && known.target.name() == target_name
                            && known.target.slot_config().as_ref() == Some(&config)
                    });
                    if !fits {
                        if let Some(old) = slotted.remove(dir) {
                            old.target.stop(environment.service.stop_grace).await;
                        }
                        // A plain service of this folder makes way for the slots.
                        if let Some(old) = self.services.lock().await.remove(dir) {
                            old.stop(environment.service.stop_grace).await;
                        }
                        let mut target = Target::new(Host::new(target_name.clone(), dir), port)
                            .with_slots(config);
                        if let Some(lines) = &self.lines {
                            target = target.with_lines(lines.clone());
                        }
                        slotted.insert(
                            dir.to_path_buf(),
                            Slotted {
                                target: Arc::new(target),
                                env: environment.clone(),
                            },
                        );
                    }
                    let known = slotted.get_mut(dir).ok_or("the folder's slots are gone")?;
                    known.env = environment.clone();
                    Arc::clone(&known.target)
                };
                let mut timings = Vec::new();
                crate::deploy::ready_in_slot(
                    &environment,
                    &target,
                    number,
                    (crate::deploy::Phase::Restart, crate::deploy::Phase::Health),
                    &mut timings,
                )
                .await?;
                Ok(Value::Null)
            }
            HostOp::SlotPromote { number } => {
                let known = self
                    .slotted
                    .lock()
                    .await
                    .get(dir)
                    .map(|known| (Arc::clone(&known.target), known.env.clone()));
                let (target, environment) =
                    known.ok_or("this folder has no blue-green slots on this agent")?;
                target.promote(&environment, number).await?;
                Ok(Value::Null)
            }
            HostOp::SlotDiscard => {
                let known = self
                    .slotted
                    .lock()
                    .await
                    .get(dir)
                    .map(|known| (Arc::clone(&known.target), known.env.service.stop_grace));
                if let Some((target, grace)) = known {
                    target.discard_preview(grace).await;
                }
                Ok(Value::Null)
            }
            HostOp::Slots => {
                let target = self
                    .slotted
                    .lock()
                    .await
                    .get(dir)
                    .map(|known| Arc::clone(&known.target));
                let Some(target) = target else {
                    return Ok(Value::Null);
                };
                let serving = target.serving_slot().await;
                let standby = target.standby_slot().await;
                Ok(json!({
                    "serving": serving.map(|(slot, _, release)| json!({ "slot": slot, "release": release })),
                    "standby": standby.map(|(slot, release)| json!({ "slot": slot, "release": release })),
                }))
            }
            HostOp::Stop { grace_ms } => {
                let slotted = self.slotted.lock().await.remove(dir);
                if let Some(slotted) = slotted {
                    let outcome = slotted.target.stop(Duration::from_millis(grace_ms)).await;
                    return serde_json::to_value(outcome).map_err(|error| error.to_string());
                }
                let supervisor = self.services.lock().await.remove(dir);
                let outcome = match supervisor {
                    Some(supervisor) => supervisor.stop(Duration::from_millis(grace_ms)).await,
                    None => StopOutcome::NotRunning,
                };
                serde_json::to_value(outcome).map_err(|error| error.to_string())
            }
            HostOp::ServiceState => {
                let slotted = self
                    .slotted
                    .lock()
                    .await
                    .get(dir)
                    .map(|known| Arc::clone(&known.target));
                if let Some(target) = slotted {
                    let state = target.service_state().await;
                    return serde_json::to_value(state).map_err(|error| error.to_string());
                }
                let services = self.services.lock().await;
                let state = services.get(dir).map(Supervisor::state);
                serde_json::to_value(state).map_err(|error| error.to_string())
            }
            HostOp::Probe {
                probe,
                port,
                limit_ms,
                working_dir,
            } => {
                let target =
                    ProbeTarget::local(port, working_dir.unwrap_or_else(|| host.current_path()));
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
        let slotted: Vec<Slotted> = self.slotted.lock().await.drain().map(|(_, s)| s).collect();
        for known in slotted {
            known.target.stop(grace).await;
        }
        let services: Vec<Supervisor> =
            self.services.lock().await.drain().map(|(_, s)| s).collect();
        for supervisor in services {
            supervisor.stop(grace).await;
        }
    }
}
