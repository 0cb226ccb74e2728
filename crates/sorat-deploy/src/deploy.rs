//! Deploying a release to an environment's hosts, and rolling back.
//!
//! A deploy prepares the release on every host first (nothing runs it yet), then goes batch
//! by batch: switch `current`, restart the service, wait for its health check. When a batch
//! fails, every host switched so far (the failed batch included) goes back to the release it
//! ran before, so no host is left on a third version; the [`DeployReport`] says per host what
//! happened, why, and how long each phase took.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::{Mutex, mpsc, watch};

use crate::agent::AgentHost;
use crate::analysis::{Analysis, AnalysisOutcome, AnalysisReport, MetricsSource};
use crate::health::{HealthCheck, Probe, ProbeTarget, probe_once, wait_healthy};
use crate::release::{
    Host, ReleaseConfig, ReleaseError, ReleaseFile, ReleaseMeta, ReleaseRecord, ReleaseStatus,
};
use crate::router::Router;
use crate::service::{
    RestartPolicy, ServiceLine, ServiceSpec, ServiceState, StopOutcome, Supervisor,
};
use crate::ssh::{RemoteService, SshHost};

/// How an environment's service runs.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The command, run with `sh -c` in the host's `current` folder (or `working_dir` in it).
    pub command: String,
    /// The folder inside the release the command runs in (none: the release's own); a
    /// relative path without `..`.
    pub working_dir: Option<String>,
    /// Its environment variables (besides `PORT` and `SORAT_RELEASE`).
    pub env: Vec<(String, String)>,
    /// Its restart policy.
    pub restart: RestartPolicy,
    /// How long it may take to stop after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
}

/// An environment: its name, its service, its health check and its retention.
#[derive(Clone, Debug)]
pub struct Environment {
    /// The environment's name (`staging`).
    pub name: String,
    /// Its service.
    pub service: ServiceConfig,
    /// The check that says a host's service is up.
    pub health: HealthCheck,
    /// How many releases each host keeps after a successful deploy (the previous one, which a
    /// rollback needs, is always kept).
    pub keep_releases: usize,
    /// The bake window after a deploy: watched before it counts as done (none: done when
    /// every host is healthy).
    pub bake: Option<Bake>,
    /// Who decides when an analysis is inconclusive (none: the deploy is rolled back).
    pub judge: Option<Arc<dyn Judge>>,
    /// Gives the service's environment its secrets when a service starts (none: the values
    /// are used as they are). Release records keep the values as configured, never what a
    /// secret resolved to.
    pub secrets: Option<Arc<dyn SecretResolver>>,
    /// Where each step of a deploy or rollback is told as it happens (none: nobody watches).
    pub progress: Option<mpsc::UnboundedSender<Progress>>,
}

/// One step of a deploy or a rollback, told as it happens, for whoever watches (the CLI
/// prints them while it waits for the report).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The host it is about (none: the whole environment).
    pub host: Option<String>,
    /// What happened.
    pub message: String,
}

/// Tells `env`'s watcher, if any, that `message` happened (on `host`).
fn tell(env: &Environment, host: Option<&str>, message: impl Into<String>) {
    if let Some(progress) = &env.progress {
        let _ = progress.send(Progress {
            host: host.map(str::to_owned),
            message: message.into(),
        });
    }
}

/// `timings` as `prepare 612 ms, switch 20 ms, …`.
fn timings_text(timings: &[Timing]) -> String {
    timings
        .iter()
        .map(|timing| format!("{} {} ms", timing.phase.word(), timing.duration.as_millis()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What [`SecretResolver::resolve`] returns: the environment, or which secret is missing.
pub type ResolvedEnv<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<(String, String)>, String>> + Send + 'a>,
>;

/// Replaces the values of a service's environment that name secrets (`${{ secrets.NAME }}`
/// in sorat.yaml) with the secrets' values, just before the service starts.
pub trait SecretResolver: Send + Sync + std::fmt::Debug {
    /// `env` with every secret reference replaced; an error says which one is missing.
    fn resolve<'a>(&'a self, env: &'a [(String, String)]) -> ResolvedEnv<'a>;
}

/// `folder` (a release's) joined with the service's `working_dir`, when it has one.
fn within(folder: PathBuf, service: &ServiceConfig) -> PathBuf {
    match &service.working_dir {
        Some(dir) => folder.join(dir),
        None => folder,
    }
}

/// The variables of `resolved` (a service with its secrets resolved) that hold a secret:
/// those whose value differs from `configured`'s reference.
fn secret_values(configured: &ServiceConfig, resolved: &ServiceConfig) -> Vec<(String, String)> {
    configured
        .env
        .iter()
        .zip(&resolved.env)
        .filter(|((_, reference), (_, value))| reference != value)
        .map(|(_, secret)| secret.clone())
        .collect()
}

/// The service configuration to start: `env.service` with its secrets resolved.
async fn service_to_start(env: &Environment) -> Result<Cow<'_, ServiceConfig>, String> {
    match &env.secrets {
        None => Ok(Cow::Borrowed(&env.service)),
        Some(secrets) => {
            let resolved = secrets.resolve(&env.service.env).await?;
            let mut service = env.service.clone();
            service.env = resolved;
            Ok(Cow::Owned(service))
        }
    }
}

/// What a person decided about a deploy paused on an inconclusive analysis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go on as if the analysis had passed.
    Promote {
        /// Who.
        by: String,
    },
    /// Roll back.
    Abort {
        /// Who, or why nobody did (a timeout).
        by: String,
    },
}

/// Asks a person what to do when an analysis is inconclusive; the deploy waits (its hosts
/// as they are) until the answer comes.
pub trait Judge: Send + Sync + std::fmt::Debug {
    /// Decides about the deploy of `release` to `environment`, paused because analysis
    /// `analysis` was inconclusive for `reason`.
    fn decide<'a>(
        &'a self,
        environment: &'a str,
        release: u32,
        analysis: &'a str,
        reason: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Decision> + Send + 'a>>;
}

/// The bake window: for `duration` after the last host is switched, every host's health
/// check keeps running and the analysis (the environment's alert conditions) is measured;
/// a failure of either rolls every host back and says why.
#[derive(Clone, Debug)]
pub struct Bake {
    /// How long.
    pub duration: Duration,
    /// What is measured meanwhile.
    pub analysis: Option<Arc<AnalysisStep>>,
}

/// An analysis with the metrics source it queries, as a canary step or a bake's watch.
#[derive(Clone)]
pub struct AnalysisStep {
    /// Its name in reports.
    pub name: String,
    /// The metrics and their conditions.
    pub analysis: Analysis,
    /// Where the queries go.
    pub source: Arc<dyn MetricsSource>,
}

impl std::fmt::Debug for AnalysisStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnalysisStep")
            .field("name", &self.name)
            .field("analysis", &self.analysis)
            .finish_non_exhaustive()
    }
}

/// One step of a canary.
#[derive(Clone, Debug)]
pub enum CanaryStep {
    /// Bring the number of hosts on the new release up to this many (in the order given).
    Hosts(usize),
    /// Bring it up to this share of the hosts (rounded up, at least one).
    Percent(u32),
    /// Wait.
    Pause(Duration),
    /// Measure: a failed or inconclusive analysis rolls every switched host back.
    Analysis(Arc<AnalysisStep>),
}

/// Where a target's releases live.
#[derive(Debug)]
enum Place {
    /// A folder on this machine.
    Local(Host),
    /// A host reached over SSH.
    Ssh(Arc<SshHost>),
    /// A host served by the Sorat agent that runs on it.
    Agent(Arc<AgentHost>),
}

/// A service running for a target.
#[derive(Debug)]
enum Running {
    /// Supervised by this process.
    Local(Supervisor),
    /// Supervised on the host; its state read over SSH.
    Remote(RemoteService),
}

impl Running {
    fn state(&self) -> ServiceState {
        match self {
            Running::Local(supervisor) => supervisor.state(),
            Running::Remote(service) => service.state(),
        }
    }

    fn watch(&self) -> watch::Receiver<ServiceState> {
        match self {
            Running::Local(supervisor) => supervisor.watch(),
            Running::Remote(service) => service.watch(),
        }
    }
}

/// A host of an environment together with its port and the service running on it: a local
/// folder ([`Target::new`]) or a host reached over SSH ([`Target::ssh`]).
#[derive(Debug)]
pub struct Target {
    place: Place,
    port: u16,
    lines: Option<mpsc::Sender<ServiceLine>>,
    service: Mutex<Option<Running>>,
    slots: Option<Arc<Slots>>,
}

/// The names of the two slots of a blue-green target, as `SORAT_SLOT` gives them.
pub const SLOT_NAMES: [&str; 2] = ["blue", "green"];

/// How a target runs blue-green: its releases take turns on two ports (the slots), and
/// Sorat's router on the target's port (in this process for a local target, in the agent for
/// an agent target) sends new connections to the slot that serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlueGreenSlots {
    /// The two slots' ports.
    pub ports: [u16; 2],
    /// The address the router listens on, with the target's port.
    pub listen: std::net::IpAddr,
    /// How long the release that served before a switch keeps running (a rollback within it
    /// is a switch back, without a start).
    pub scale_down_delay: Duration,
}

/// A blue-green target's slots, router and the services in them.
#[derive(Debug)]
struct Slots {
    config: BlueGreenSlots,
    router: Router,
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// The slot that serves; its service is the target's `service`.
    active: Option<usize>,
    /// The release in the slot that serves.
    active_release: Option<u32>,
    /// A release started in the other slot, not serving yet.
    preview: Option<SlotService>,
    /// The release that served before the last switch, kept for the scale-down delay.
    standby: Option<SlotService>,
    /// Counts changes of the standby, so that a delayed stop knows whether its is still it.
    generation: u64,
}

#[derive(Debug)]
struct SlotService {
    slot: usize,
    release: u32,
    service: Running,
}

impl SlotService {
    /// Stops it: a local supervisor directly, a service on an SSH host through `ssh`.
    async fn stop(self, ssh: Option<&SshHost>, grace: Duration) -> StopOutcome {
        match (self.service, ssh) {
            (Running::Local(supervisor), _) => supervisor.stop(grace).await,
            (Running::Remote(_), Some(host)) => host
                .stop_slot(self.slot, grace)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(host = %host.name(), %error, "stopping a slot's service");
                    StopOutcome::NotRunning
                }),
            (Running::Remote(_), None) => StopOutcome::NotRunning,
        }
    }
}

/// Where a blue-green target's slots run.
enum SlotHost<'a> {
    /// Supervised by this process, in a local folder.
    Local(&'a Host),
    /// Supervised on an SSH host, behind Sorat's router there.
    Ssh(&'a Arc<SshHost>),
}

impl Target {
    /// A target for the local folder `host`, whose service listens on `port`.
    pub fn new(host: Host, port: u16) -> Target {
        Target {
            place: Place::Local(host),
            port,
            lines: None,
            service: Mutex::new(None),
            slots: None,
        }
    }

    /// A target on a host reached over SSH, whose service listens on `port` there.
    pub fn ssh(host: SshHost, port: u16) -> Target {
        Target {
            place: Place::Ssh(Arc::new(host)),
            port,
            lines: None,
            service: Mutex::new(None),
            slots: None,
        }
    }

    /// Sends the service's output lines to `lines`.
    pub fn with_lines(mut self, lines: mpsc::Sender<ServiceLine>) -> Target {
        self.lines = Some(lines);
        self
    }

    /// Runs the target blue-green: its releases take turns on `slots.ports` and a router on
    /// the target's port serves the one that is current. Local targets have the router in
    /// this process, agent targets in their agent, SSH targets a router process on the host
    /// (Sorat's own executable, given by [`SshHost::with_router`]).
    pub fn with_slots(mut self, slots: BlueGreenSlots) -> Target {
        let listen = std::net::SocketAddr::new(slots.listen, self.port);
        self.slots = Some(Arc::new(Slots {
            config: slots,
            router: Router::new(listen),
            state: Mutex::new(SlotState::default()),
        }));
        self
    }

    /// For a blue-green target: its slots' ports (blue, green).
    pub fn slot_ports(&self) -> Option<[u16; 2]> {
        self.slots.as_ref().map(|slots| slots.config.ports)
    }

    /// For a blue-green target: how it runs blue-green.
    pub fn slot_config(&self) -> Option<BlueGreenSlots> {
        self.slots.as_ref().map(|slots| slots.config.clone())
    }

    /// For a blue-green target: the serving slot and release, and the slot and release kept
    /// after the last switch (for an agent target, as its agent says).
    pub async fn slot_status(&self) -> (Option<(String, u32)>, Option<(String, u32)>) {
        if let Place::Agent(host) = &self.place
            && self.slots.is_some()
        {
            return host.slots().await;
        }
        (
            self.serving_slot()
                .await
                .map(|(slot, _, release)| (slot.to_owned(), release)),
            self.standby_slot()
                .await
                .map(|(slot, release)| (slot.to_owned(), release)),
        )
    }

    /// For a blue-green target: the slot that serves (its name and port) and the release in
    /// it, when one does.
    pub async fn serving_slot(&self) -> Option<(&'static str, u16, u32)> {
        let slots = self.slots.as_ref()?;
        self.service.lock().await.as_ref()?;
        let state = slots.state.lock().await;
        let active = state.active?;
        Some((
            SLOT_NAMES[active],
            slots.config.ports[active],
            state.active_release?,
        ))
    }

    /// For a blue-green target: the release kept running in the other slot after the last
    /// switch (its slot's name and the release), until the scale-down delay ends.
    pub async fn standby_slot(&self) -> Option<(&'static str, u32)> {
        let slots = self.slots.as_ref()?;
        let state = slots.state.lock().await;
        state
            .standby
            .as_ref()
            .map(|standby| (SLOT_NAMES[standby.slot], standby.release))
    }

    /// The host's name.
    pub fn name(&self) -> &str {
        match &self.place {
            Place::Local(host) => host.name(),
            Place::Ssh(host) => host.name(),
            Place::Agent(host) => host.name(),
        }
    }

    /// A target on a host served by its agent, whose service listens on `port` there.
    pub fn agent(host: AgentHost, port: u16) -> Target {
        Target {
            place: Place::Agent(Arc::new(host)),
            port,
            lines: None,
            service: Mutex::new(None),
            slots: None,
        }
    }

    /// The kind of target: `local`, `ssh` or `agent`.
    pub fn kind(&self) -> &'static str {
        match &self.place {
            Place::Local(_) => "local",
            Place::Ssh(_) => "ssh",
            Place::Agent(_) => "agent",
        }
    }

    /// The local folder, for a local target.
    pub fn host(&self) -> Option<&Host> {
        match &self.place {
            Place::Local(host) => Some(host),
            Place::Ssh(_) | Place::Agent(_) => None,
        }
    }

    /// The agent's host, for an agent target.
    pub fn agent_host(&self) -> Option<&Arc<AgentHost>> {
        match &self.place {
            Place::Agent(host) => Some(host),
            Place::Local(_) | Place::Ssh(_) => None,
        }
    }

    /// Hands a line its service wrote elsewhere (an agent's host) to where this target's
    /// lines go; false when they go nowhere or that queue is full (the line is dropped).
    pub fn send_line(&self, line: ServiceLine) -> bool {
        self.lines
            .as_ref()
            .is_some_and(|lines| lines.try_send(line).is_ok())
    }

    /// The SSH host, for an SSH target.
    pub fn ssh_host(&self) -> Option<&Arc<SshHost>> {
        match &self.place {
            Place::Local(_) => None,
            Place::Ssh(host) => Some(host),
            Place::Agent(_) => None,
        }
    }

    /// The address health checks use (`127.0.0.1` for a local target).
    pub fn address(&self) -> &str {
        match &self.place {
            Place::Local(_) => "127.0.0.1",
            Place::Ssh(host) => &host.target().address,
            Place::Agent(_) => "(its agent)",
        }
    }

    /// The service's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The release `current` points at, if any.
    pub async fn current(&self) -> Result<Option<u32>, ReleaseError> {
        match &self.place {
            Place::Local(host) => {
                let host = host.clone();
                blocking_release(move || host.current()).await
            }
            Place::Ssh(host) => host.current().await,
            Place::Agent(host) => host
                .current_and_releases()
                .await
                .map(|(current, _)| current),
        }
    }

    /// The complete releases, in increasing order.
    pub async fn releases(&self) -> Result<Vec<u32>, ReleaseError> {
        match &self.place {
            Place::Local(host) => {
                let host = host.clone();
                blocking_release(move || host.releases()).await
            }
            Place::Ssh(host) => host.releases().await,
            Place::Agent(host) => host
                .current_and_releases()
                .await
                .map(|(_, releases)| releases),
        }
    }

    /// The release `current` points at and the complete releases (one round trip over SSH).
    pub async fn current_and_releases(&self) -> Result<(Option<u32>, Vec<u32>), ReleaseError> {
        match &self.place {
            Place::Local(host) => {
                let host = host.clone();
                blocking_release(move || Ok((host.current()?, host.releases()?))).await
            }
            Place::Ssh(host) => host.current_and_releases().await,
            Place::Agent(host) => host.current_and_releases().await,
        }
    }

    /// The `release.json` of release `number`.
    pub async fn record(&self, number: u32) -> Result<ReleaseRecord, ReleaseError> {
        match &self.place {
            Place::Local(host) => {
                let host = host.clone();
                blocking_release(move || host.record(number)).await
            }
            Place::Ssh(host) => host.record(number).await,
            Place::Agent(host) => host.record(number).await,
        }
    }

    /// The highest release number ever completed on the host.
    pub async fn last_number(&self) -> Result<u32, ReleaseError> {
        match &self.place {
            Place::Local(host) => {
                let host = host.clone();
                blocking_release(move || host.last_number()).await
            }
            Place::Ssh(host) => host.last_number().await,
            Place::Agent(host) => host.last_number().await,
        }
    }

    async fn prepare(&self, release: &ReleaseSpec) -> Result<ReleaseRecord, ReleaseError> {
        match &self.place {
            Place::Local(host) => {
                let host = host.clone();
                let number = release.number;
                let meta = release.meta.clone();
                let files = release.files.clone();
                blocking_release(move || host.prepare(number, &meta, &files)).await
            }
            Place::Ssh(host) => {
                host.prepare(release.number, &release.meta, &release.files)
                    .await
            }
            Place::Agent(host) => {
                host.prepare(release.number, &release.meta, &release.files)
                    .await
            }
        }
    }

    async fn switch(&self, number: u32) -> Result<(), ReleaseError> {
        match &self.place {
            Place::Local(host) => {
                let host = host.clone();
                blocking_release(move || host.switch(number)).await
            }
            Place::Ssh(host) => host.switch(number).await,
            Place::Agent(host) => host.switch(number).await,
        }
    }

    async fn clear_current(&self) -> Result<(), ReleaseError> {
        match &self.place {
            Place::Local(host) => {
                let host = host.clone();
                blocking_release(move || host.clear_current()).await
            }
            Place::Ssh(host) => host.clear_current().await,
            Place::Agent(host) => host.clear_current().await,
        }
    }

    async fn set_status(&self, number: u32, status: ReleaseStatus) {
        let result = match &self.place {
            Place::Local(host) => {
                let host = host.clone();
                blocking_release(move || host.set_status(number, status)).await
            }
            Place::Ssh(host) => host.set_status(number, status).await,
            Place::Agent(host) => host.set_status(number, status).await,
        };
        if let Err(error) = result {
            tracing::warn!(host = %self.name(), release = number, %error, "cannot record the release's status");
        }
    }

    async fn prune(&self, keep: usize, protect: Vec<u32>) -> Result<Vec<u32>, ReleaseError> {
        match &self.place {
            Place::Local(host) => {
                let host = host.clone();
                blocking_release(move || host.prune(keep, &protect)).await
            }
            Place::Ssh(host) => host.prune(keep, &protect).await,
            Place::Agent(host) => host.prune(keep, &protect).await,
        }
    }

    /// The service's state, when one is supervised.
    pub async fn service_state(&self) -> Option<ServiceState> {
        self.service.lock().await.as_ref().map(Running::state)
    }

    /// A receiver of the service's states, when one is supervised.
    pub async fn service_watch(&self) -> Option<watch::Receiver<ServiceState>> {
        self.service.lock().await.as_ref().map(Running::watch)
    }

    /// (Re)starts the service of the current release, e.g. when Sorat itself starts; returns
    /// the release it runs, or `None` when the host has no current release. A service on an
    /// SSH host that still runs (it does not depend on Sorat) is left running.
    pub async fn start(&self, env: &Environment) -> Result<Option<u32>, DeployError> {
        let Some(number) = self.current().await? else {
            return Ok(None);
        };
        if self.slots.is_some() {
            // An agent's slots run under the agent, not Sorat: watched when they run.
            if let Place::Agent(host) = &self.place
                && host.service_running().await?
            {
                *self.service.lock().await = Some(Running::Remote(host.watch_service()));
                return Ok(Some(number));
            }
            if let (Place::Ssh(host), Some(slots)) = (&self.place, &self.slots)
                && self.attach_slots(env, host, slots, number).await?
            {
                return Ok(Some(number));
            }
            let mut timings = Vec::new();
            let started = match ready_in_slot(
                env,
                self,
                number,
                (Phase::Restart, Phase::Health),
                &mut timings,
            )
            .await
            {
                Ok(()) => self.promote(env, number).await,
                Err(error) => Err(error),
            };
            started.map_err(|message| DeployError::Service {
                host: self.name().to_owned(),
                message,
            })?;
            return Ok(Some(number));
        }
        if let Place::Ssh(host) = &self.place
            && let Some(service) = host.attach(number, self.lines.clone()).await?
        {
            *self.service.lock().await = Some(Running::Remote(service));
            return Ok(Some(number));
        }
        // An agent's service runs under the agent, not Sorat: watched when it runs.
        if let Place::Agent(host) = &self.place
            && host.service_running().await?
        {
            *self.service.lock().await = Some(Running::Remote(host.watch_service()));
            return Ok(Some(number));
        }
        self.restart(env, number, false)
            .await
            .map_err(|error| DeployError::Service {
                host: self.name().to_owned(),
                message: error,
            })?;
        Ok(Some(number))
    }

    /// Stops the service (SIGTERM, then SIGKILL after `grace`).
    pub async fn stop(&self, grace: Duration) -> StopOutcome {
        if let (Some(slots), Place::Local(_) | Place::Ssh(_)) = (&self.slots, &self.place) {
            return self.stop_slots(slots, grace).await;
        }
        let running = self.service.lock().await.take();
        match (&self.place, running) {
            (_, Some(Running::Local(supervisor))) => supervisor.stop(grace).await,
            (Place::Ssh(host), _) => host.stop_service(grace).await.unwrap_or_else(|error| {
                tracing::warn!(host = %self.name(), %error, "stopping the service");
                StopOutcome::NotRunning
            }),
            (Place::Agent(host), _) => host.stop_service(grace).await.unwrap_or_else(|error| {
                tracing::warn!(host = %self.name(), %error, "stopping the service");
                StopOutcome::NotRunning
            }),
            (Place::Local(_), _) => StopOutcome::NotRunning,
        }
    }

    /// Stops watching a service that runs on its own host (SSH, agent): it keeps running and
    /// the connection stays open. A local service is Sorat's child and stays watched.
    pub async fn unwatch(&self) {
        if !matches!(self.place, Place::Local(_)) {
            self.service.lock().await.take();
        }
    }

    /// What Sorat does with the service when it shuts down: a local service is stopped (it
    /// is Sorat's child), one on an SSH host keeps running and is only no longer watched.
    pub async fn shutdown(&self, grace: Duration) -> StopOutcome {
        match &self.place {
            Place::Local(_) => self.stop(grace).await,
            Place::Ssh(host) => {
                self.service.lock().await.take();
                if let Some(slots) = &self.slots {
                    // The slots' services and the router keep running on the host; only
                    // their watches end (the next start finds them).
                    let mut state = slots.state.lock().await;
                    state.generation += 1;
                    state.preview.take();
                    state.standby.take();
                }
                host.close().await;
                StopOutcome::NotRunning
            }
            Place::Agent(_) => {
                self.service.lock().await.take();
                StopOutcome::NotRunning
            }
        }
    }

    /// Stops the old service and starts `release`'s; returns a receiver of its states. With
    /// `switch`, `current` is pointed at `release` first (on an SSH host in the same command).
    async fn restart(
        &self,
        env: &Environment,
        release: u32,
        switch: bool,
    ) -> Result<watch::Receiver<ServiceState>, String> {
        if switch && !matches!(self.place, Place::Ssh(_)) {
            self.switch(release)
                .await
                .map_err(|error| format!("cannot switch to release {release}: {error}"))?;
        }
        let service = service_to_start(env).await?;
        let service = service.as_ref();
        let mut slot = self.service.lock().await;
        match &self.place {
            Place::Local(host) => {
                if let Some(Running::Local(old)) = slot.take() {
                    old.stop(service.stop_grace).await;
                }
                let spec = ServiceSpec {
                    host: host.name().to_owned(),
                    release,
                    command: service.command.clone(),
                    working_dir: within(host.current_path(), service),
                    port: self.port,
                    env: service.env.clone(),
                    restart: service.restart.clone(),
                };
                let supervisor = Supervisor::start(spec, self.lines.clone());
                let states = supervisor.watch();
                *slot = Some(Running::Local(supervisor));
                Ok(states)
            }
            Place::Ssh(host) => {
                slot.take();
                let running = host
                    .start_service(release, service, self.port, self.lines.clone(), switch)
                    .await
                    .map_err(|error| error.to_string())?;
                let states = running.watch();
                *slot = Some(Running::Remote(running));
                Ok(states)
            }
            Place::Agent(host) => {
                slot.take();
                let secrets = secret_values(&env.service, service);
                let running = host
                    .start_service(release, service, &secrets, self.port)
                    .await
                    .map_err(|error| error.to_string())?;
                let states = running.watch();
                *slot = Some(Running::Remote(running));
                Ok(states)
            }
        }
    }

    /// The slots of a blue-green target and where they run.
    fn slotted(&self) -> Result<(&Arc<Slots>, SlotHost<'_>), String> {
        match (&self.slots, &self.place) {
            (Some(slots), Place::Local(host)) => Ok((slots, SlotHost::Local(host))),
            (Some(slots), Place::Ssh(host)) => Ok((slots, SlotHost::Ssh(host))),
            (Some(_), Place::Agent(_)) => {
                Err(format!("the slots of {} are run by its agent", self.name()))
            }
            (None, _) => Err(format!("host {} has no blue-green slots", self.name())),
        }
    }

    /// Starts `release` in the slot that does not serve (the release kept there is reused
    /// when it is the one and still runs; anything else there is stopped first). Returns its
    /// states, its slot's port, and whether it was already running.
    async fn start_in_slot(
        &self,
        env: &Environment,
        release: u32,
    ) -> Result<(watch::Receiver<ServiceState>, u16, bool), String> {
        let (slots, place) = self.slotted()?;
        // What occupies the idle slot is reused when it is this release and runs, otherwise
        // stopped, outside the lock (a stop may take the grace period, and readers of the
        // slots' state should not wait for it).
        let (reused, doomed) = {
            let mut state = slots.state.lock().await;
            state.generation += 1;
            let mut reused = None;
            let mut doomed = Vec::new();
            for occupant in [state.preview.take(), state.standby.take()]
                .into_iter()
                .flatten()
            {
                if reused.is_none()
                    && occupant.release == release
                    && matches!(occupant.service.state(), ServiceState::Running { .. })
                {
                    reused = Some(occupant);
                } else {
                    doomed.push(occupant);
                }
            }
            if let Some(occupant) = reused {
                let started = (
                    occupant.service.watch(),
                    slots.config.ports[occupant.slot],
                    true,
                );
                state.preview = Some(occupant);
                (Some(started), doomed)
            } else {
                (None, doomed)
            }
        };
        for occupant in doomed {
            occupant
                .stop(self.ssh_host().map(Arc::as_ref), env.service.stop_grace)
                .await;
        }
        if let Some(started) = reused {
            return Ok(started);
        }
        let config = service_to_start(env).await?;
        let config = config.as_ref();
        // The router's executable goes to the host now, before any lock is held: the switch
        // holds the target's locks and should be one short command.
        if let SlotHost::Ssh(host) = &place {
            host.ensure_router()
                .await
                .map_err(|error| error.to_string())?;
        }
        let mut state = slots.state.lock().await;
        let slot = state.active.map_or(0, |active| 1 - active);
        let port = slots.config.ports[slot];
        let service = match place {
            SlotHost::Local(host) => {
                let mut service_env = config.env.clone();
                service_env.push(("SORAT_SLOT".to_owned(), SLOT_NAMES[slot].to_owned()));
                let spec = ServiceSpec {
                    host: host.name().to_owned(),
                    release,
                    command: config.command.clone(),
                    working_dir: within(host.release_path(release), config),
                    port,
                    env: service_env,
                    restart: config.restart.clone(),
                };
                Running::Local(Supervisor::start(spec, self.lines.clone()))
            }
            // The host's supervisor stops whatever else ran in that slot first.
            SlotHost::Ssh(host) => Running::Remote(
                host.start_slot(slot, release, config, port, self.lines.clone())
                    .await
                    .map_err(|error| error.to_string())?,
            ),
        };
        let states = service.watch();
        state.preview = Some(SlotService {
            slot,
            release,
            service,
        });
        Ok((states, port, false))
    }

    /// Whether `release` runs in one of this target's slots without serving (known to this
    /// process: not for an agent target, whose agent knows).
    async fn slot_runs(&self, release: u32) -> bool {
        let Some(slots) = &self.slots else {
            return false;
        };
        let state = slots.state.lock().await;
        [&state.preview, &state.standby]
            .into_iter()
            .flatten()
            .any(|occupant| {
                occupant.release == release
                    && matches!(occupant.service.state(), ServiceState::Running { .. })
            })
    }

    /// Sends the router's new connections to slot `slot` (none: closes them at once), then
    /// points `current` at release `current`, when given (on an SSH host, in the same round
    /// trip).
    async fn route_to(
        &self,
        slots: &Slots,
        slot: Option<usize>,
        current: Option<u32>,
    ) -> Result<(), String> {
        match (&self.place, slot) {
            (Place::Ssh(host), Some(slot)) => {
                let binary = host.router_binary().ok_or_else(|| {
                    format!(
                        "host {} has no router executable to run (SshHost::with_router)",
                        host.name()
                    )
                })?;
                let listen = std::net::SocketAddr::new(slots.config.listen, self.port);
                host.route(binary, listen, slots.config.ports[slot], current)
                    .await
                    .map_err(|error| error.to_string())
            }
            (Place::Ssh(_), None) => Ok(()),
            _ => {
                let backend = slot.map(|slot| {
                    std::net::SocketAddr::from(([127, 0, 0, 1], slots.config.ports[slot]))
                });
                slots
                    .router
                    .route(backend)
                    .await
                    .map_err(|error| error.to_string())?;
                match current {
                    Some(number) => self
                        .switch(number)
                        .await
                        .map_err(|error| format!("cannot switch to release {number}: {error}")),
                    None => Ok(()),
                }
            }
        }
    }

    /// Makes the slot running `release` the one that serves: the router sends new
    /// connections there and `current` points at it. The release that served keeps running
    /// in its slot for the scale-down delay.
    pub(crate) async fn promote(&self, env: &Environment, release: u32) -> Result<(), String> {
        if let Place::Agent(host) = &self.place
            && self.slots.is_some()
        {
            host.slot_promote(release).await?;
            *self.service.lock().await = Some(Running::Remote(host.watch_service()));
            return Ok(());
        }
        let (slots, _) = self.slotted()?;
        let mut service = self.service.lock().await;
        let mut state = slots.state.lock().await;
        let preview = match state.preview.take() {
            Some(preview) if preview.release == release => preview,
            other => {
                state.preview = other;
                return Err(format!("release {release} is not running in a slot"));
            }
        };
        let before = state.active;
        if let Err(error) = self
            .route_to(slots, Some(preview.slot), Some(release))
            .await
        {
            // The router may have switched before `current` could not: it goes back.
            if let Err(back) = self.route_to(slots, before, None).await {
                tracing::warn!(host = %self.name(), error = %back, "cannot route back after a failed switch");
            }
            state.preview = Some(preview);
            return Err(error);
        }
        let old_slot = state.active.replace(preview.slot);
        let old_release = state.active_release.replace(release);
        let old = service.replace(preview.service);
        if let (Some(slot), Some(old_release), Some(old)) = (old_slot, old_release, old) {
            state.generation += 1;
            state.standby = Some(SlotService {
                slot,
                release: old_release,
                service: old,
            });
            self.scale_down_later(slots, state.generation, env.service.stop_grace);
        }
        tracing::info!(host = %self.name(), release, slot = SLOT_NAMES[preview.slot], "traffic switched");
        Ok(())
    }

    /// Stops the standby after the scale-down delay, unless the slots changed meanwhile
    /// (`generation`).
    fn scale_down_later(&self, slots: &Arc<Slots>, generation: u64, grace: Duration) {
        let slots = Arc::clone(slots);
        let ssh = self.ssh_host().cloned();
        let host_name = self.name().to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(slots.config.scale_down_delay).await;
            let standby = {
                let mut state = slots.state.lock().await;
                if state.generation != generation {
                    return;
                }
                state.standby.take()
            };
            if let Some(standby) = standby {
                tracing::info!(host = %host_name, release = standby.release, slot = SLOT_NAMES[standby.slot], "scale-down delay over: stopping the release that served before");
                standby.stop(ssh.as_deref(), grace).await;
            }
        });
    }

    /// Finds an SSH target's slots as a Sorat that ran before left them: when the router
    /// runs and routes to a slot that runs `number`, they are watched again (the other
    /// slot's release, if it runs, as the standby, stopped after the scale-down delay) and
    /// true is returned.
    async fn attach_slots(
        &self,
        env: &Environment,
        host: &Arc<SshHost>,
        slots: &Arc<Slots>,
        number: u32,
    ) -> Result<bool, DeployError> {
        let found = host.slot_status().await?;
        let Some(active) = found
            .routed_port
            .and_then(|port| slots.config.ports.iter().position(|slot| *slot == port))
        else {
            return Ok(false);
        };
        if found.slots[active] != Some(number) {
            return Ok(false);
        }
        let serving = host.attach_slot(active, number, self.lines.clone()).await?;
        let standby = match found.slots[1 - active] {
            Some(release) => Some(SlotService {
                slot: 1 - active,
                release,
                service: Running::Remote(host.attach_slot(1 - active, release, None).await?),
            }),
            None => None,
        };
        let mut service = self.service.lock().await;
        let mut state = slots.state.lock().await;
        *service = Some(Running::Remote(serving));
        state.active = Some(active);
        state.active_release = Some(number);
        state.generation += 1;
        if let Some(standby) = standby {
            state.standby = Some(standby);
            self.scale_down_later(slots, state.generation, env.service.stop_grace);
        }
        tracing::info!(host = %self.name(), release = number, slot = SLOT_NAMES[active], "the slots run on the host: watching them");
        Ok(true)
    }

    /// Stops a release started in a slot and never switched to.
    pub(crate) async fn discard_preview(&self, grace: Duration) {
        if let Place::Agent(host) = &self.place
            && self.slots.is_some()
        {
            host.slot_discard().await;
            return;
        }
        if let Some(slots) = &self.slots {
            let preview = slots.state.lock().await.preview.take();
            if let Some(preview) = preview {
                preview.stop(self.ssh_host().map(Arc::as_ref), grace).await;
            }
        }
    }

    /// Stops every slot's service and the router.
    async fn stop_slots(&self, slots: &Slots, grace: Duration) -> StopOutcome {
        let running = self.service.lock().await.take();
        let (active, preview, standby) = {
            let mut state = slots.state.lock().await;
            state.active_release = None;
            state.generation += 1;
            (
                state.active.take(),
                state.preview.take(),
                state.standby.take(),
            )
        };
        if let Place::Ssh(host) = &self.place {
            // Everything on the host, watched or not (a Sorat that ran before may have left
            // it): the router first, so no connection reaches a slot being stopped.
            let stop = |result: Result<StopOutcome, ReleaseError>| {
                result.unwrap_or_else(|error| {
                    tracing::warn!(host = %host.name(), %error, "stopping the slots");
                    StopOutcome::NotRunning
                })
            };
            stop(host.stop_router(grace).await);
            let mut outcome = StopOutcome::NotRunning;
            for slot in 0..2 {
                let stopped = stop(host.stop_slot(slot, grace).await);
                if Some(slot) == active {
                    outcome = stopped;
                }
            }
            return outcome;
        }
        slots.router.close().await;
        for other in [preview, standby].into_iter().flatten() {
            other.stop(None, grace).await;
        }
        match running {
            Some(Running::Local(supervisor)) => supervisor.stop(grace).await,
            _ => StopOutcome::NotRunning,
        }
    }

    /// Where the health check of `service`, serving from `current`, is aimed: a command probe
    /// runs where the service runs.
    fn probe_target(&self, service: &ServiceConfig) -> ProbeTarget {
        match &self.place {
            Place::Local(host) => {
                ProbeTarget::local(self.port, within(host.current_path(), service))
            }
            Place::Ssh(host) => ProbeTarget {
                address: host.target().address.clone(),
                port: self.port,
                working_dir: within(PathBuf::from(host.current_path()), service),
                remote: Some(Arc::clone(host)),
                agent: None,
            },
            Place::Agent(host) => ProbeTarget {
                address: String::new(),
                port: self.port,
                working_dir: within(PathBuf::from(format!("{}/current", host.dir())), service),
                remote: None,
                agent: Some(Arc::clone(host)),
            },
        }
    }
}

/// The release to deploy: its number in the environment, what it is, and its files.
#[derive(Clone, Debug)]
pub struct ReleaseSpec {
    /// Its number (above every number used on the hosts; see [`next_release_number`]).
    pub number: u32,
    /// What it is (artifact, digest, who).
    pub meta: ReleaseMeta,
    /// Its files.
    pub files: Vec<ReleaseFile>,
}

/// How hosts are taken to the new release.
#[derive(Clone, Debug)]
pub enum Strategy {
    /// `batch` hosts at a time; the next batch starts when the previous one is healthy.
    Rolling {
        /// Hosts per batch (0 is taken as 1).
        batch: usize,
    },
    /// Every host at once (rolling with one batch of all).
    AllAtOnce,
    /// Steps in order (hosts or a share of them, pauses, analyses); the hosts the steps did
    /// not reach follow at the end, in one batch.
    Canary {
        /// The steps.
        steps: Vec<CanaryStep>,
    },
    /// Every host starts the release in its idle slot beside the one serving
    /// ([`Target::with_slots`]); when all are healthy there (and the pre-promotion analysis
    /// passed, and a person promoted it when `auto_promote` is off), every host's router
    /// switches to it at once. The release that served keeps running for the scale-down
    /// delay, so going back is a switch.
    BlueGreen {
        /// Measured while the new release runs beside the old one, before any switch.
        pre_promotion: Option<Arc<AnalysisStep>>,
        /// Switch as soon as everything passed (otherwise the environment's judge is asked).
        auto_promote: bool,
    },
}

/// What a deploy does next, planned from its strategy.
enum Action {
    /// Start the release beside the serving one on these hosts and check it there.
    Preview(std::ops::Range<usize>),
    /// Wait for a person to promote the release.
    AwaitPromotion,
    /// Switch these hosts (indices) together.
    Switch(std::ops::Range<usize>),
    /// Wait.
    Pause(Duration),
    /// Measure.
    Analyze(Arc<AnalysisStep>),
}

fn plan(strategy: &Strategy, hosts: usize) -> Vec<Action> {
    let batches = |batch: usize| {
        (0..hosts)
            .step_by(batch.max(1))
            .map(|start| Action::Switch(start..(start + batch.max(1)).min(hosts)))
            .collect()
    };
    match strategy {
        Strategy::Rolling { batch } => batches(*batch),
        Strategy::AllAtOnce => batches(hosts),
        Strategy::BlueGreen {
            pre_promotion,
            auto_promote,
        } => {
            let mut actions = vec![Action::Preview(0..hosts)];
            if let Some(step) = pre_promotion {
                actions.push(Action::Analyze(Arc::clone(step)));
            }
            if !auto_promote {
                actions.push(Action::AwaitPromotion);
            }
            actions.push(Action::Switch(0..hosts));
            actions
        }
        Strategy::Canary { steps } => {
            let mut actions = Vec::new();
            let mut done = 0;
            for step in steps {
                let wanted = match step {
                    CanaryStep::Hosts(count) => Some((*count).min(hosts)),
                    CanaryStep::Percent(percent) => Some(
                        (hosts * (*percent).min(100) as usize)
                            .div_ceil(100)
                            .max(1)
                            .min(hosts),
                    ),
                    CanaryStep::Pause(duration) => {
                        actions.push(Action::Pause(*duration));
                        None
                    }
                    CanaryStep::Analysis(step) => {
                        actions.push(Action::Analyze(Arc::clone(step)));
                        None
                    }
                };
                if let Some(wanted) = wanted
                    && wanted > done
                {
                    actions.push(Action::Switch(done..wanted));
                    done = wanted;
                }
            }
            if done < hosts {
                actions.push(Action::Switch(done..hosts));
            }
            actions
        }
    }
}

/// A phase of a host's deploy or rollback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Copying and verifying the release's files.
    Prepare,
    /// Switching `current`.
    Switch,
    /// Stopping the old service and starting the new one (not its start-up).
    Restart,
    /// Waiting for the health check (the service's start-up included).
    Health,
    /// Switching `current` back.
    RollbackSwitch,
    /// Restarting the service on the old release.
    RollbackRestart,
    /// Waiting for the old release's health check.
    RollbackHealth,
}

impl Phase {
    /// The phase in words, as the API spells it.
    pub fn word(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::Switch => "switch",
            Phase::Restart => "restart",
            Phase::Health => "health",
            Phase::RollbackSwitch => "rollback_switch",
            Phase::RollbackRestart => "rollback_restart",
            Phase::RollbackHealth => "rollback_health",
        }
    }
}

/// How long a phase took on a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// The phase.
    pub phase: Phase,
    /// Its duration.
    pub duration: Duration,
}

/// What happened on one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostOutcome {
    /// It runs the new release, healthy.
    Deployed,
    /// Preparing the release failed; it was not switched.
    PrepareFailed,
    /// It was not switched (the deploy stopped before its batch).
    NotSwitched,
    /// The release failed in its idle slot (blue-green) before any traffic reached it; the
    /// host kept serving the release it served.
    PreviewFailed,
    /// It was switched, failed, and was taken back to its previous release.
    FailedRolledBack,
    /// It was switched and healthy, and was taken back because another host failed.
    RolledBack,
    /// It was taken back, but the rollback failed too (see the error).
    RollbackFailed,
}

/// What happened on one host, why, and how long it took.
#[derive(Clone, Debug)]
pub struct HostReport {
    /// The host's name.
    pub host: String,
    /// The release it ran before.
    pub previous: Option<u32>,
    /// The release it runs now (as `current` says).
    pub current: Option<u32>,
    /// What happened.
    pub outcome: HostOutcome,
    /// Why it failed, when it did (the deploy's failure, then the rollback's).
    pub errors: Vec<String>,
    /// How long each phase took.
    pub timings: Vec<Timing>,
    /// What pruning old releases did not do, when it refused or failed.
    pub prune_note: Option<String>,
}

impl HostReport {
    fn new(host: &str, previous: Option<u32>) -> HostReport {
        HostReport {
            host: host.to_owned(),
            previous,
            current: previous,
            outcome: HostOutcome::NotSwitched,
            errors: Vec::new(),
            timings: Vec::new(),
            prune_note: None,
        }
    }

    /// How long `phase` took, if it ran.
    pub fn timing(&self, phase: Phase) -> Option<Duration> {
        self.timings
            .iter()
            .find(|timing| timing.phase == phase)
            .map(|timing| timing.duration)
    }
}

/// How a deploy or rollback ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every host runs the release, healthy.
    Succeeded,
    /// It failed before any host was switched.
    Aborted {
        /// Why.
        reason: String,
    },
    /// It failed; every switched host was taken back to its previous release.
    RolledBack {
        /// Why it failed.
        reason: String,
    },
    /// It failed, and taking some host back failed too (see the hosts' errors).
    Failed {
        /// Why.
        reason: String,
    },
}

/// `outcome` in words.
fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Succeeded => "succeeded".to_owned(),
        Outcome::Aborted { reason } => format!("aborted: {reason}"),
        Outcome::RolledBack { reason } => format!("rolled back: {reason}"),
        Outcome::Failed { reason } => format!("failed: {reason}"),
    }
}

/// What a deploy or rollback did.
#[derive(Clone, Debug)]
pub struct DeployReport {
    /// The environment.
    pub environment: String,
    /// The release deployed, or the one asked for by a rollback (`None`: each host's previous).
    pub release: Option<u32>,
    /// How it ended.
    pub outcome: Outcome,
    /// Per host, in the order given.
    pub hosts: Vec<HostReport>,
    /// The analyses run (canary steps, then the bake's), with every measurement.
    pub analyses: Vec<(String, AnalysisReport)>,
    /// How the bake window ended, when there was one (`None` inside: it passed).
    pub bake: Option<Option<String>>,
    /// How long it took in all.
    pub elapsed: Duration,
}

/// Why a rollback was refused, or a host could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// A host's releases could not be read or changed.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// A host has no current release to roll back from.
    #[error("host {host} has no current release; nothing to roll back")]
    NothingDeployed {
        /// The host.
        host: String,
    },
    /// A host has no release before its current one.
    #[error("host {host} has no release before {current} to roll back to")]
    NoPrevious {
        /// The host.
        host: String,
        /// Its current release.
        current: u32,
    },
    /// The release asked for does not exist on a host (pruned, or never deployed there).
    #[error(
        "cannot roll back host {host} to release {number}: it does not exist there (present: {present:?})"
    )]
    MissingRelease {
        /// The host.
        host: String,
        /// The release asked for.
        number: u32,
        /// The releases the host has.
        present: Vec<u32>,
    },
    /// A host's service could not be started.
    #[error("host {host}: {message}")]
    Service {
        /// The host.
        host: String,
        /// Why.
        message: String,
    },
    /// A blocking file task was lost.
    #[error("a file task failed: {0}")]
    Task(String),
}

async fn blocking_release<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ReleaseError> + Send + 'static,
) -> Result<T, ReleaseError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ReleaseError::Remote {
            host: String::new(),
            action: "a file task failed",
            message: error.to_string(),
        })?
}

/// The next release number for these hosts: one above the highest used on any of them.
pub async fn next_release_number(targets: &[Target]) -> Result<u32, ReleaseError> {
    let numbers = join_all(targets.iter().map(Target::last_number)).await;
    let mut highest = 0;
    for number in numbers {
        highest = highest.max(number?);
    }
    Ok(highest + 1)
}

/// Deploys `release` to `targets` by `strategy`. Never panics on a host's failure: the report
/// says what happened on each host.
pub async fn deploy(
    env: &Environment,
    targets: &[Target],
    release: &ReleaseSpec,
    strategy: Strategy,
) -> DeployReport {
    let started = Instant::now();
    let number = release.number;
    tracing::info!(environment = %env.name, release = number, ?strategy, "deploy starts");
    tell(
        env,
        None,
        format!(
            "deploy of release {number} ({}) to {} host(s) starts",
            release.meta.artifact,
            targets.len()
        ),
    );
    let mut reports = Vec::with_capacity(targets.len());
    let currents = join_all(targets.iter().map(Target::current)).await;
    for (target, previous) in targets.iter().zip(currents) {
        let mut report = HostReport::new(target.name(), None);
        match previous {
            Ok(previous) => {
                report.previous = previous;
                report.current = previous;
            }
            Err(error) => {
                report.outcome = HostOutcome::PrepareFailed;
                report.errors.push(error.to_string());
            }
        }
        reports.push(report);
    }
    // Every secret the service names must be there before anything changes on a host.
    let mut abort_reason = service_to_start(env).await.err();

    // Every host gets the release before any switches, so a copy or digest failure stops the
    // deploy while every host still runs what it ran.
    // The release is its artifact and the service's configuration of now: recorded with it,
    // so that a rollback to it later runs it as it ran.
    let mut release = release.clone();
    release.meta.config = Some(ReleaseConfig {
        command: env.service.command.clone(),
        env: env.service.env.clone(),
        working_dir: env.service.working_dir.clone(),
    });
    let release = &release;
    let prepared = match abort_reason {
        Some(_) => Vec::new(),
        None => {
            join_all(targets.iter().map(|target| async move {
                let since = Instant::now();
                let result = target.prepare(release).await;
                // Each host's own time, told as soon as it is done.
                let took = since.elapsed();
                match &result {
                    Ok(_) => tell(
                        env,
                        Some(target.name()),
                        format!("release {number} prepared in {} ms", took.as_millis()),
                    ),
                    Err(error) => {
                        tell(env, Some(target.name()), format!("cannot prepare: {error}"))
                    }
                }
                (result, took)
            }))
            .await
        }
    };
    for (report, (result, took)) in reports.iter_mut().zip(prepared) {
        report.timings.push(Timing {
            phase: Phase::Prepare,
            duration: took,
        });
        if let Err(error) = result {
            report.outcome = HostOutcome::PrepareFailed;
            let text = error.to_string();
            if report.errors.last() != Some(&text) {
                report.errors.push(text);
            }
        }
        if report.outcome == HostOutcome::PrepareFailed && abort_reason.is_none() {
            abort_reason = Some(format!(
                "host {}: {}",
                report.host,
                report.errors.first().map_or("", String::as_str)
            ));
        }
    }
    if let Some(reason) = abort_reason {
        tracing::warn!(environment = %env.name, release = number, %reason, "deploy aborted");
        tell(env, None, format!("deploy aborted: {reason}"));
        return DeployReport {
            environment: env.name.clone(),
            release: Some(number),
            outcome: Outcome::Aborted { reason },
            hosts: reports,
            analyses: Vec::new(),
            bake: None,
            elapsed: started.elapsed(),
        };
    }

    let mut switched: Vec<usize> = Vec::new();
    let mut failure = None;
    let mut analyses = Vec::new();
    for action in plan(&strategy, targets.len()) {
        match action {
            Action::Switch(range) => {
                let chunk: Vec<usize> = range.collect();
                let results = join_all(
                    chunk
                        .iter()
                        .map(|index| activate(env, &targets[*index], number, Phase::Switch)),
                )
                .await;
                let mut healthy = Vec::new();
                for (index, (result, timings)) in chunk.iter().zip(results) {
                    let report = &mut reports[*index];
                    match &result {
                        Ok(()) => tell(
                            env,
                            Some(&report.host),
                            format!("serves release {number} ({})", timings_text(&timings)),
                        ),
                        Err(error) => tell(env, Some(&report.host), format!("failed: {error}")),
                    }
                    report.timings.extend(timings);
                    switched.push(*index);
                    match result {
                        Ok(()) => {
                            report.outcome = HostOutcome::Deployed;
                            report.current = Some(number);
                            healthy.push(*index);
                        }
                        Err(error) => {
                            report.outcome = HostOutcome::FailedRolledBack;
                            report.current = Some(number);
                            if failure.is_none() {
                                failure = Some(format!("host {}: {error}", report.host));
                            }
                            report.errors.push(error);
                        }
                    }
                }
                join_all(
                    healthy
                        .iter()
                        .map(|index| targets[*index].set_status(number, ReleaseStatus::Deployed)),
                )
                .await;
            }
            Action::Preview(range) => {
                let chunk: Vec<usize> = range.collect();
                let results = join_all(chunk.iter().map(|index| async move {
                    let mut timings = Vec::new();
                    let result = ready_in_slot(
                        env,
                        &targets[*index],
                        number,
                        (Phase::Restart, Phase::Health),
                        &mut timings,
                    )
                    .await;
                    (result, timings)
                }))
                .await;
                for (index, (result, timings)) in chunk.iter().zip(results) {
                    let report = &mut reports[*index];
                    match &result {
                        Ok(()) => tell(
                            env,
                            Some(&report.host),
                            format!(
                                "release {number} ready beside the serving one ({})",
                                timings_text(&timings)
                            ),
                        ),
                        Err(error) => tell(env, Some(&report.host), format!("failed: {error}")),
                    }
                    report.timings.extend(timings);
                    if let Err(error) = result {
                        report.outcome = HostOutcome::PreviewFailed;
                        if failure.is_none() {
                            failure = Some(format!("host {}: {error}", report.host));
                        }
                        report.errors.push(error);
                        targets[*index]
                            .set_status(number, ReleaseStatus::Failed)
                            .await;
                    }
                }
            }
            Action::AwaitPromotion => {
                let reason = format!(
                    "release {number} runs beside the serving release on every host; promote to switch traffic to it"
                );
                tracing::info!(environment = %env.name, release = number, "waiting to be promoted");
                tell(
                    env,
                    None,
                    format!("waiting to be promoted (`sorat promote {}`)", env.name),
                );
                let decision = match &env.judge {
                    Some(judge) => judge.decide(&env.name, number, "promotion", &reason).await,
                    None => Decision::Abort {
                        by: "nobody (auto_promote is off and nobody can be asked)".to_owned(),
                    },
                };
                match decision {
                    Decision::Promote { by } => {
                        tracing::info!(environment = %env.name, release = number, %by, "promoted");
                    }
                    Decision::Abort { by } => {
                        failure = Some(format!(
                            "release {number} was not promoted: aborted by {by}"
                        ));
                    }
                }
            }
            Action::Pause(duration) => {
                tracing::info!(environment = %env.name, release = number, ?duration, "canary pause");
                tell(env, None, format!("canary pause of {duration:?}"));
                tokio::time::sleep(duration).await;
            }
            Action::Analyze(step) => {
                tracing::info!(environment = %env.name, release = number, analysis = %step.name, "canary analysis");
                tell(env, None, format!("analysis `{}` runs", step.name));
                let report = step.analysis.run(step.source.as_ref(), None).await;
                tell(
                    env,
                    None,
                    format!("analysis `{}`: {:?}", step.name, report.outcome),
                );
                let verdict = judged(env, number, &step.name, &report.outcome).await;
                if let Some(reason) = verdict {
                    failure = Some(reason);
                }
                analyses.push((step.name.clone(), report));
            }
        }
        if failure.is_some() {
            break;
        }
    }

    let mut bake_result = None;
    if failure.is_none()
        && let Some(bake) = &env.bake
    {
        tracing::info!(environment = %env.name, release = number, duration = ?bake.duration, "bake window");
        tell(
            env,
            None,
            format!(
                "bake window of {:?}: watching the health checks{}",
                bake.duration,
                if bake.analysis.is_some() {
                    " and the analysis"
                } else {
                    ""
                }
            ),
        );
        let (result, analysis) = watch_bake(env, targets, bake, number).await;
        if let Some(report) = analysis
            && let Some(step) = &bake.analysis
        {
            analyses.push((step.name.clone(), report));
        }
        match &result {
            Ok(()) => tell(env, None, "bake window passed"),
            Err(reason) => {
                tell(env, None, format!("bake window failed: {reason}"));
                failure = Some(format!("bake window: {reason}"));
            }
        }
        bake_result = Some(result.err());
    }

    let outcome = match failure {
        None => {
            prune_after_success(env, targets, &mut reports).await;
            Outcome::Succeeded
        }
        Some(reason) if switched.is_empty() => {
            // Nothing served the release: whatever runs it beside the serving one is stopped.
            join_all(
                targets
                    .iter()
                    .map(|target| target.discard_preview(env.service.stop_grace)),
            )
            .await;
            tracing::warn!(environment = %env.name, release = number, %reason, "deploy stopped before any host was switched");
            Outcome::Aborted { reason }
        }
        Some(reason) => {
            tracing::warn!(environment = %env.name, release = number, %reason, "deploy failed; rolling back");
            tell(env, None, format!("deploy failed, rolling back: {reason}"));
            let reverts = join_all(switched.iter().map(|index| {
                let target = &targets[*index];
                let previous = reports[*index].previous;
                async move { revert(env, target, number, previous).await }
            }))
            .await;
            join_all(
                targets
                    .iter()
                    .map(|target| target.discard_preview(env.service.stop_grace)),
            )
            .await;
            let mut all_reverted = true;
            for (index, (result, timings)) in switched.iter().zip(reverts) {
                let report = &mut reports[*index];
                match &result {
                    Ok(current) => tell(
                        env,
                        Some(&report.host),
                        match current {
                            Some(current) => format!("back on release {current}"),
                            None => "no release serves (it had none before)".to_owned(),
                        },
                    ),
                    Err(error) => {
                        tell(env, Some(&report.host), format!("rollback failed: {error}"))
                    }
                }
                report.timings.extend(timings);
                let failed_here = report.outcome == HostOutcome::FailedRolledBack;
                match result {
                    Ok(current) => {
                        report.current = current;
                        if !failed_here {
                            report.outcome = HostOutcome::RolledBack;
                        }
                        let status = if failed_here {
                            ReleaseStatus::Failed
                        } else {
                            ReleaseStatus::RolledBack
                        };
                        targets[*index].set_status(number, status).await;
                    }
                    Err(error) => {
                        all_reverted = false;
                        report.outcome = HostOutcome::RollbackFailed;
                        report.errors.push(format!("rollback: {error}"));
                        report.current = targets[*index].current().await.ok().flatten();
                        targets[*index]
                            .set_status(number, ReleaseStatus::Failed)
                            .await;
                    }
                }
            }
            if all_reverted {
                Outcome::RolledBack { reason }
            } else {
                Outcome::Failed { reason }
            }
        }
    };
    tracing::info!(environment = %env.name, release = number, ?outcome, "deploy ended");
    tell(
        env,
        None,
        format!("deploy ended: {}", outcome_text(&outcome)),
    );
    DeployReport {
        environment: env.name.clone(),
        release: Some(number),
        outcome,
        hosts: reports,
        analyses,
        bake: bake_result,
        elapsed: started.elapsed(),
    }
}

/// Takes every host back to its previous release (the one below its current), or to `to`.
/// Refuses, before touching any host, when a host has nothing to go back to or lacks `to`.
pub async fn rollback(
    env: &Environment,
    targets: &[Target],
    to: Option<u32>,
) -> Result<DeployReport, DeployError> {
    let started = Instant::now();
    let mut plan = Vec::with_capacity(targets.len());
    let states = join_all(targets.iter().map(Target::current_and_releases)).await;
    for (target, read) in targets.iter().zip(states) {
        let (current, present) = read?;
        let name = target.name().to_owned();
        let destination = match (to, current) {
            (Some(number), _) => {
                if !present.contains(&number) {
                    return Err(DeployError::MissingRelease {
                        host: name,
                        number,
                        present,
                    });
                }
                number
            }
            (None, None) => return Err(DeployError::NothingDeployed { host: name }),
            (None, Some(current)) => present
                .iter()
                .copied()
                .filter(|number| *number < current)
                .max()
                .ok_or(DeployError::NoPrevious {
                    host: name,
                    current,
                })?,
        };
        plan.push((current, destination));
    }
    tracing::info!(environment = %env.name, ?to, "rollback starts");
    tell(
        env,
        None,
        format!("rollback of {} host(s) starts", targets.len()),
    );

    let results = join_all(targets.iter().zip(&plan).map(|(target, (_, destination))| {
        activate(env, target, *destination, Phase::RollbackSwitch)
    }))
    .await;
    let mut reports = Vec::with_capacity(targets.len());
    let mut statuses = Vec::new();
    let mut first_failure = None;
    for ((target, (current, destination)), (result, timings)) in
        targets.iter().zip(&plan).zip(results)
    {
        let mut report = HostReport::new(target.name(), *current);
        match &result {
            Ok(()) => tell(
                env,
                Some(target.name()),
                format!("back on release {destination} ({})", timings_text(&timings)),
            ),
            Err(error) => tell(env, Some(target.name()), format!("failed: {error}")),
        }
        report.timings = timings;
        report.current = Some(*destination);
        match result {
            Ok(()) => {
                report.outcome = HostOutcome::RolledBack;
                if let Some(from) = current
                    && from != destination
                {
                    statuses.push((target, *from));
                }
            }
            Err(error) => {
                report.outcome = HostOutcome::RollbackFailed;
                if first_failure.is_none() {
                    first_failure = Some(format!("host {}: {error}", report.host));
                }
                report.errors.push(error);
            }
        }
        reports.push(report);
    }
    join_all(
        statuses
            .iter()
            .map(|(target, from)| target.set_status(*from, ReleaseStatus::RolledBack)),
    )
    .await;
    let outcome = match first_failure {
        None => Outcome::Succeeded,
        Some(reason) => Outcome::Failed { reason },
    };
    tracing::info!(environment = %env.name, ?to, ?outcome, "rollback ended");
    tell(
        env,
        None,
        format!("rollback ended: {}", outcome_text(&outcome)),
    );
    Ok(DeployReport {
        environment: env.name.clone(),
        release: to,
        outcome,
        hosts: reports,
        analyses: Vec::new(),
        bake: None,
        elapsed: started.elapsed(),
    })
}

/// Switches `target` to `number`, restarts its service and waits for its health check.
/// `switch_phase` names the phases (a deploy's or a rollback's).
async fn activate(
    env: &Environment,
    target: &Target,
    number: u32,
    switch_phase: Phase,
) -> (Result<(), String>, Vec<Timing>) {
    let (restart_phase, health_phase) = match switch_phase {
        Phase::RollbackSwitch => (Phase::RollbackRestart, Phase::RollbackHealth),
        _ => (Phase::Restart, Phase::Health),
    };
    let mut timings = Vec::new();
    if target.slots.is_some() {
        // Going back runs the release with the configuration it was deployed with. One still
        // running in a slot is reused as it is, and its record is read only when a command
        // probe must run in its working directory (an SSH host's round trip fewer).
        let env = match switch_phase {
            Phase::RollbackSwitch
                if matches!(env.health.probe, Probe::Command { .. })
                    || !target.slot_runs(number).await =>
            {
                recorded_env(env, target, number).await
            }
            _ => Cow::Borrowed(env),
        };
        if let Err(error) = ready_in_slot(
            &env,
            target,
            number,
            (restart_phase, health_phase),
            &mut timings,
        )
        .await
        {
            return (Err(error), timings);
        }
        let since = Instant::now();
        let promoted = target.promote(&env, number).await;
        timings.push(Timing {
            phase: switch_phase,
            duration: since.elapsed(),
        });
        return (promoted, timings);
    }
    let mut time = |phase, since: Instant| {
        timings.push(Timing {
            phase,
            duration: since.elapsed(),
        });
    };
    // A rollback on an SSH host switches `current` within the restart's command (a round trip
    // fewer): its switch is then part of the restart phase.
    let switch_within_restart =
        switch_phase == Phase::RollbackSwitch && matches!(target.place, Place::Ssh(_));
    if !switch_within_restart {
        let since = Instant::now();
        let switched = target.switch(number).await;
        time(switch_phase, since);
        if let Err(error) = switched {
            return (
                Err(format!("cannot switch to release {number}: {error}")),
                timings,
            );
        }
    }
    let since = Instant::now();
    // Going back to a release runs it with the service configuration it was deployed with.
    let env = match switch_phase {
        Phase::RollbackSwitch => recorded_env(env, target, number).await,
        _ => Cow::Borrowed(env),
    };
    let env = env.as_ref();
    let states = target.restart(env, number, switch_within_restart).await;
    time(restart_phase, since);
    let states = match states {
        Ok(states) => states,
        Err(error) => {
            return (
                Err(format!(
                    "cannot start the service of release {number}: {error}"
                )),
                timings,
            );
        }
    };
    let since = Instant::now();
    let health = check(env, target, states).await;
    time(health_phase, since);
    (health, timings)
}

/// `env` with the service configuration release `number` was deployed with, when it differs.
async fn recorded_env<'a>(
    env: &'a Environment,
    target: &Target,
    number: u32,
) -> Cow<'a, Environment> {
    if let Ok(record) = target.record(number).await
        && let Some(config) = record.config
        && (config.command != env.service.command
            || config.env != env.service.env
            || config.working_dir != env.service.working_dir)
    {
        let mut older = env.clone();
        older.service.command = config.command;
        older.service.env = config.env;
        older.service.working_dir = config.working_dir;
        Cow::Owned(older)
    } else {
        Cow::Borrowed(env)
    }
}

/// Brings `release` up in a blue-green target's idle slot and waits for its health check
/// there, before any traffic reaches it; a release failing there is stopped.
pub(crate) async fn ready_in_slot(
    env: &Environment,
    target: &Target,
    release: u32,
    (start_phase, health_phase): (Phase, Phase),
    timings: &mut Vec<Timing>,
) -> Result<(), String> {
    if let (Place::Agent(host), Some(slots)) = (&target.place, &target.slots) {
        // The agent runs this same function with its own local target, given the service's
        // secrets.
        let since = Instant::now();
        let result = match service_to_start(env).await {
            Ok(Cow::Borrowed(_)) => {
                host.slot_ready(env, &[], release, target.port, &slots.config)
                    .await
            }
            Ok(Cow::Owned(service)) => {
                let secrets = secret_values(&env.service, &service);
                let mut resolved = env.clone();
                resolved.service = service;
                resolved.secrets = None;
                host.slot_ready(&resolved, &secrets, release, target.port, &slots.config)
                    .await
            }
            Err(error) => Err(error),
        };
        timings.push(Timing {
            phase: health_phase,
            duration: since.elapsed(),
        });
        return result;
    }
    let since = Instant::now();
    let started = target.start_in_slot(env, release).await;
    timings.push(Timing {
        phase: start_phase,
        duration: since.elapsed(),
    });
    let (states, port, reused) = started
        .map_err(|error| format!("cannot start the service of release {release}: {error}"))?;
    let since = Instant::now();
    let mut health = env.health.clone();
    if reused {
        // It was serving or already checked: one answer says it still does.
        health.success_threshold = 1;
    }
    let probe = match &target.place {
        Place::Ssh(host) => ProbeTarget {
            address: host.target().address.clone(),
            port,
            working_dir: within(PathBuf::from(host.release_path(release)), &env.service),
            remote: Some(Arc::clone(host)),
            agent: None,
        },
        _ => ProbeTarget::local(
            port,
            target
                .host()
                .map(|host| within(host.release_path(release), &env.service))
                .unwrap_or_default(),
        ),
    };
    let result = tokio::select! {
        result = wait_healthy(&health, &probe) => result.map(drop).map_err(|error| error.to_string()),
        reason = gave_up(states) => Err(format!("the service would not stay up: {reason}")),
    };
    timings.push(Timing {
        phase: health_phase,
        duration: since.elapsed(),
    });
    if let Err(error) = result {
        target.discard_preview(env.service.stop_grace).await;
        return Err(format!(
            "release {release} failed in its slot (port {port}) before serving: {error}"
        ));
    }
    Ok(())
}

/// Waits for the health check, or for the supervisor to give up, whichever comes first.
async fn check(
    env: &Environment,
    target: &Target,
    states: watch::Receiver<ServiceState>,
) -> Result<(), String> {
    let probe_target = target.probe_target(&env.service);
    tokio::select! {
        result = wait_healthy(&env.health, &probe_target) => result.map(drop).map_err(|error| error.to_string()),
        reason = gave_up(states) => Err(format!("the service would not stay up: {reason}")),
    }
}

async fn gave_up(mut states: watch::Receiver<ServiceState>) -> String {
    loop {
        if let ServiceState::Failed { reason } = &*states.borrow_and_update() {
            return reason.clone();
        }
        if states.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Takes a host that was switched to `failed_release` back to `previous`; with no previous
/// release (a first deploy), stops the service and removes `current`. Returns what `current`
/// is afterwards.
async fn revert(
    env: &Environment,
    target: &Target,
    failed_release: u32,
    previous: Option<u32>,
) -> (Result<Option<u32>, String>, Vec<Timing>) {
    match previous {
        Some(previous) => {
            let (result, timings) = activate(env, target, previous, Phase::RollbackSwitch).await;
            (result.map(|()| Some(previous)), timings)
        }
        None => {
            let since = Instant::now();
            target.stop(env.service.stop_grace).await;
            let cleared = target.clear_current().await;
            let timings = vec![Timing {
                phase: Phase::RollbackSwitch,
                duration: since.elapsed(),
            }];
            tracing::info!(host = %target.name(), release = failed_release, "first release failed; host left without a current release");
            (
                cleared.map(|()| None).map_err(|error| error.to_string()),
                timings,
            )
        }
    }
}

async fn prune_after_success(env: &Environment, targets: &[Target], reports: &mut [HostReport]) {
    let results = join_all(targets.iter().zip(reports.iter()).map(|(target, report)| {
        let protect: Vec<u32> = report.previous.into_iter().collect();
        target.prune(env.keep_releases, protect)
    }))
    .await;
    for (report, result) in reports.iter_mut().zip(results) {
        match result {
            Ok(removed) if !removed.is_empty() => {
                tracing::debug!(host = %report.host, ?removed, "old releases pruned");
            }
            Ok(_) => {}
            Err(error) => report.prune_note = Some(error.to_string()),
        }
    }
}

/// Why an analysis stops a deploy, if it does: a failure; an inconclusive result unless the
/// environment's judge promotes it (without a judge, the safe side is taken).
async fn judged(
    env: &Environment,
    release: u32,
    name: &str,
    outcome: &AnalysisOutcome,
) -> Option<String> {
    if let (AnalysisOutcome::Inconclusive { reason }, Some(judge)) = (outcome, &env.judge) {
        tracing::warn!(environment = %env.name, release, analysis = %name, %reason, "analysis inconclusive: waiting for a decision");
        return match judge.decide(&env.name, release, name, reason).await {
            Decision::Promote { by } => {
                tracing::info!(environment = %env.name, release, %by, "promoted after an inconclusive analysis");
                None
            }
            Decision::Abort { by } => Some(format!(
                "analysis {name} was inconclusive ({reason}); aborted by {by}"
            )),
        };
    }
    analysis_failure(name, outcome)
}

/// Why an analysis stops a deploy, if it does: a failure, and an inconclusive result too
/// (when nobody is asked, the safe side is taken).
fn analysis_failure(name: &str, outcome: &AnalysisOutcome) -> Option<String> {
    match outcome {
        AnalysisOutcome::Successful => None,
        AnalysisOutcome::Failed { reason } => Some(format!("analysis {name} failed: {reason}")),
        AnalysisOutcome::Inconclusive { reason } => Some(format!(
            "analysis {name} was inconclusive ({reason}); rolled back rather than left half-done"
        )),
    }
}

/// Watches every host's health (and the bake's analysis) for the bake's duration. Ends
/// early with the first failure.
async fn watch_bake(
    env: &Environment,
    targets: &[Target],
    bake: &Bake,
    release: u32,
) -> (Result<(), String>, Option<AnalysisReport>) {
    let deadline = tokio::time::Instant::now() + bake.duration;
    let health = async {
        // One attempt per host every interval; a host fails after `failure_threshold`
        // failed attempts in a row, or at once when its supervisor gives up on the service.
        let mut failed_in_a_row = vec![0u32; targets.len()];
        loop {
            let attempts = join_all(targets.iter().map(|target| async move {
                if let Some(ServiceState::Failed { reason }) = target.service_state().await {
                    return Err((format!("the service would not stay up: {reason}"), true));
                }
                probe_once(
                    &env.health.probe,
                    &target.probe_target(&env.service),
                    env.health.attempt_timeout,
                )
                .await
                .map_err(|(message, _)| (message, false))
            }))
            .await;
            for ((target, attempt), failed) in
                targets.iter().zip(attempts).zip(&mut failed_in_a_row)
            {
                match attempt {
                    Ok(()) => *failed = 0,
                    Err((message, gave_up)) => {
                        *failed += 1;
                        let threshold = env.health.failure_threshold.max(1);
                        if gave_up {
                            return Err(format!("host {}: {message}", target.name()));
                        }
                        if *failed >= threshold {
                            return Err(format!(
                                "host {}: health check failed {failed} times in a row: {message}",
                                target.name()
                            ));
                        }
                    }
                }
            }
            if tokio::time::Instant::now() + env.health.interval >= deadline {
                return Ok(());
            }
            tokio::time::sleep(env.health.interval).await;
        }
    };
    let analysis = async {
        match &bake.analysis {
            Some(step) => Some(step.analysis.run(step.source.as_ref(), None).await),
            None => None,
        }
    };
    tokio::pin!(health);
    tokio::pin!(analysis);
    let mut report = None;
    let mut analysis_done = bake.analysis.is_none();
    loop {
        tokio::select! {
            result = &mut health => {
                if result.is_err() {
                    return (result, report);
                }
                // The health watch lasted the whole window; wait for the analysis to end.
                if analysis_done {
                    return (Ok(()), report);
                }
                let measured = analysis.as_mut().await;
                let verdict = match &measured {
                    Some(measured) => judged(env, release, bake.analysis.as_ref().map_or("", |step| step.name.as_str()), &measured.outcome).await,
                    None => None,
                };
                return (verdict.map_or(Ok(()), Err), measured);
            }
            measured = &mut analysis, if !analysis_done => {
                analysis_done = true;
                let mut health_over = false;
                let verdict = match &measured {
                    Some(measured) => {
                        // While a person decides about an inconclusive analysis, the hosts'
                        // health is still watched: a failure there ends the bake at once.
                        let name = bake.analysis.as_ref().map_or("", |step| step.name.as_str());
                        let decision = judged(env, release, name, &measured.outcome);
                        tokio::pin!(decision);
                        loop {
                            tokio::select! {
                                verdict = &mut decision => break verdict,
                                result = &mut health, if !health_over => {
                                    if let Err(reason) = result {
                                        break Some(reason);
                                    }
                                    health_over = true;
                                }
                            }
                        }
                    }
                    None => None,
                };
                report = measured;
                if let Some(reason) = verdict {
                    return (Err(reason), report);
                }
                // The window ended while the decision was awaited: nothing is left to watch.
                if health_over {
                    return (Ok(()), report);
                }
            }
        }
    }
}
