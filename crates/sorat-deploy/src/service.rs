//! The supervisor of a host's service: starts it, reads its output, restarts it with backoff
//! when it dies, gives up when it keeps dying, and stops it gracefully.
//!
//! The command runs with `sh -c` in its own process group, its working directory being the
//! host's `current` symlink, so a stop or a crash reaches everything it started. Each line it
//! writes is sent as a [`ServiceLine`]; each change of state is published as a
//! [`ServiceState`] (current value through [`Supervisor::state`], every change through
//! [`Supervisor::subscribe`]).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// Variables passed on from Sorat's own environment to a service (everything else is given).
const INHERITED: &[&str] = &["PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// When and how often a crashed service is started again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// The wait before the first restart.
    pub initial_backoff: Duration,
    /// The longest wait (the wait doubles up to it).
    pub max_backoff: Duration,
    /// A service up this long is healthy again: the wait and the failure count start over.
    pub reset_after: Duration,
    /// After this many failures in a row (each up less than `reset_after`), the supervisor
    /// gives up.
    pub max_rapid_failures: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            reset_after: Duration::from_secs(30),
            max_rapid_failures: 5,
        }
    }
}

/// What to run for one host and release.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    /// The host, for the lines' tags.
    pub host: String,
    /// The release, for the lines' tags and `SORAT_RELEASE`.
    pub release: u32,
    /// The command, run with `sh -c`.
    pub command: String,
    /// The working directory (the host's `current`).
    pub working_dir: PathBuf,
    /// The port it should listen on (`PORT`).
    pub port: u16,
    /// More environment variables (they win over inherited ones, not over `PORT` and
    /// `SORAT_RELEASE`).
    pub env: Vec<(String, String)>,
    /// The restart policy.
    pub restart: RestartPolicy,
}

/// Which of its outputs a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a service's output, tagged with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceLine {
    /// The host.
    pub host: String,
    /// The release.
    pub release: u32,
    /// The stream.
    pub stream: Stream,
    /// The line, without its end of line (invalid UTF-8 replaced).
    pub line: String,
}

/// Where a supervised service stands.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ServiceState {
    /// Its process is being started (`attempt` counts from 1 since the last reset).
    Starting {
        /// Which attempt in a row this is.
        attempt: u32,
    },
    /// Its process runs.
    Running {
        /// The process id (also its process group's id).
        pid: u32,
    },
    /// Its process ended on its own.
    Exited {
        /// Its exit code (128 + the signal for a signal), or -1 when it could not start.
        code: i32,
    },
    /// Waiting before starting it again.
    Backoff {
        /// How long.
        delay: Duration,
    },
    /// Stopped on request.
    Stopped,
    /// The supervisor gave up: the service kept dying.
    Failed {
        /// Why, in words.
        reason: String,
    },
    /// The host cannot be asked (its agent does not answer, its SSH connection fails): the
    /// last state known may or may not still hold. The next answer replaces it.
    Unknown {
        /// Why it cannot be asked.
        reason: String,
    },
}

/// How a stop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopOutcome {
    /// Nothing was running (between restarts, or the supervisor had given up).
    NotRunning,
    /// The service exited within the grace period after SIGTERM.
    Terminated,
    /// It did not, and its process group got SIGKILL.
    Killed,
}

/// A supervised service. Dropping it kills the service's process group at once; call
/// [`Supervisor::stop`] for a graceful stop.
#[derive(Debug)]
pub struct Supervisor {
    spec: ServiceSpec,
    state: watch::Receiver<ServiceState>,
    events: broadcast::Sender<ServiceState>,
    stop: Option<oneshot::Sender<Duration>>,
    task: Option<tokio::task::JoinHandle<StopOutcome>>,
}

impl Supervisor {
    /// Starts supervising `spec`; lines go to `lines` when given (sending waits when the
    /// receiver is behind; lines are dropped once the receiver is gone).
    pub fn start(spec: ServiceSpec, lines: Option<mpsc::Sender<ServiceLine>>) -> Supervisor {
        let (state_tx, state_rx) = watch::channel(ServiceState::Starting { attempt: 1 });
        let (events, _) = broadcast::channel(256);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(supervise(
            spec.clone(),
            lines,
            Publisher {
                state: state_tx,
                events: events.clone(),
                host: spec.host.clone(),
            },
            stop_rx,
        ));
        Supervisor {
            spec,
            state: state_rx,
            events,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// What it runs.
    pub fn spec(&self) -> &ServiceSpec {
        &self.spec
    }

    /// The current state.
    pub fn state(&self) -> ServiceState {
        self.state.borrow().clone()
    }

    /// A receiver of the current state, to wait for changes.
    pub fn watch(&self) -> watch::Receiver<ServiceState> {
        self.state.clone()
    }

    /// Every change of state from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ServiceState> {
        self.events.subscribe()
    }

    /// Waits until the supervisor gives up and returns why; never returns while it keeps
    /// the service going.
    pub async fn failed(&self) -> String {
        let mut state = self.state.clone();
        loop {
            if let ServiceState::Failed { reason } = &*state.borrow_and_update() {
                return reason.clone();
            }
            if state.changed().await.is_err() {
                // The supervisor ended without failing (it was stopped): nothing to report.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Waits until the service runs and returns its pid, or the reason the supervisor gave up.
    pub async fn running(&self) -> Result<u32, String> {
        let mut state = self.state.clone();
        loop {
            match &*state.borrow_and_update() {
                ServiceState::Running { pid } => return Ok(*pid),
                ServiceState::Failed { reason } => return Err(reason.clone()),
                ServiceState::Stopped => return Err("the service was stopped".to_owned()),
                _ => {}
            }
            if state.changed().await.is_err() {
                return Err("the supervisor ended".to_owned());
            }
        }
    }

    /// Stops the service: SIGTERM to its process group, SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) -> StopOutcome {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(grace);
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or(StopOutcome::NotRunning),
            None => StopOutcome::NotRunning,
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Dropping the stop sender tells the task to kill the group at once.
        self.stop.take();
    }
}

struct Publisher {
    state: watch::Sender<ServiceState>,
    events: broadcast::Sender<ServiceState>,
    host: String,
}

impl Publisher {
    fn set(&self, state: ServiceState) {
        tracing::debug!(host = %self.host, ?state, "service state");
        let _ = self.events.send(state.clone());
        self.state.send_replace(state);
    }
}

/// What ended a wait on the running process.
enum Wake {
    Exited(i32),
    Stop(Option<Duration>),
}

async fn supervise(
    spec: ServiceSpec,
    lines: Option<mpsc::Sender<ServiceLine>>,
    publisher: Publisher,
    mut stop: oneshot::Receiver<Duration>,
) -> StopOutcome {
    let policy = &spec.restart;
    let mut failures: u32 = 0;
    let mut delay = policy.initial_backoff;
    loop {
        publisher.set(ServiceState::Starting {
            attempt: failures + 1,
        });
        let started = Instant::now();
        let code = match spawn(&spec, lines.clone()) {
            Err(error) => {
                tracing::warn!(host = %spec.host, %error, "cannot start the service");
                -1
            }
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                let pgid = Pid::from_raw(pid as i32);
                // The binary's reaper kills the group if this process dies without doing it.
                sorat_pipeline::exec::report_group_started(pgid.as_raw());
                publisher.set(ServiceState::Running { pid });
                let wake = tokio::select! {
                    status = child.wait() => Wake::Exited(match status {
                        Ok(status) => exit_code(status),
                        Err(_) => -1,
                    }),
                    grace = &mut stop => Wake::Stop(grace.ok()),
                };
                match wake {
                    Wake::Exited(code) => {
                        // Whatever it left in its group goes with it.
                        let _ = killpg(pgid, Signal::SIGKILL);
                        sorat_pipeline::exec::report_group_ended(pgid.as_raw());
                        code
                    }
                    Wake::Stop(grace) => {
                        let outcome = terminate(&mut child, pgid, grace).await;
                        sorat_pipeline::exec::report_group_ended(pgid.as_raw());
                        publisher.set(ServiceState::Stopped);
                        return outcome;
                    }
                }
            }
        };
        publisher.set(ServiceState::Exited { code });
        if started.elapsed() >= policy.reset_after {
            failures = 0;
            delay = policy.initial_backoff;
        }
        failures += 1;
        if failures >= policy.max_rapid_failures.max(1) {
            let reason = format!(
                "the service exited {failures} times in a row, each time within {:?} (last exit code {code}); giving up",
                policy.reset_after
            );
            tracing::warn!(host = %spec.host, release = spec.release, %reason);
            publisher.set(ServiceState::Failed { reason });
            // Wait for the stop (or the drop) so that `stop` finds the task.
            let _ = stop.await;
            return StopOutcome::NotRunning;
        }
        publisher.set(ServiceState::Backoff { delay });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = &mut stop => {
                publisher.set(ServiceState::Stopped);
                return StopOutcome::NotRunning;
            }
        }
        delay = (delay * 2).min(policy.max_backoff);
    }
}

fn spawn(
    spec: &ServiceSpec,
    lines: Option<mpsc::Sender<ServiceLine>>,
) -> std::io::Result<tokio::process::Child> {
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(&spec.command)
        .current_dir(&spec.working_dir)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for name in INHERITED {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
        .envs(spec.env.iter().map(|(key, value)| (key, value)))
        .env("PORT", spec.port.to_string())
        .env("SORAT_RELEASE", spec.release.to_string());
    let mut child = command.spawn()?;
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(pump(stdout, Stream::Stdout, spec.clone(), lines.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(pump(stderr, Stream::Stderr, spec.clone(), lines));
    }
    Ok(child)
}

async fn pump(
    reader: impl AsyncRead + Unpin,
    stream: Stream,
    spec: ServiceSpec,
    mut lines: Option<mpsc::Sender<ServiceLine>>,
) {
    let mut reader = BufReader::new(reader);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        while matches!(buffer.last(), Some(b'\n' | b'\r')) {
            buffer.pop();
        }
        let line = ServiceLine {
            host: spec.host.clone(),
            release: spec.release,
            stream,
            line: String::from_utf8_lossy(&buffer).into_owned(),
        };
        match &lines {
            Some(sender) => {
                if sender.send(line).await.is_err() {
                    // Nobody listens any more; keep reading so the service never blocks.
                    lines = None;
                }
            }
            None => tracing::trace!(host = %line.host, release = line.release, line = %line.line),
        }
    }
}

/// SIGTERM to the group, SIGKILL after `grace` (at once when there is no grace: the
/// supervisor was dropped).
async fn terminate(
    child: &mut tokio::process::Child,
    pgid: Pid,
    grace: Option<Duration>,
) -> StopOutcome {
    let outcome = match grace {
        Some(grace) => {
            let _ = killpg(pgid, Signal::SIGTERM);
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(_) => StopOutcome::Terminated,
                Err(_) => StopOutcome::Killed,
            }
        }
        None => StopOutcome::Killed,
    };
    // Also after a graceful exit: what the service left in its group goes too.
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = child.wait().await;
    outcome
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => -1,
    }
}
