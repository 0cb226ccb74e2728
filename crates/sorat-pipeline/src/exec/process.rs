//! Running one command as its own process group, with a time limit and cancellation.
//!
//! The command gets a new process group so that a timeout or Ctrl-C reaches everything it
//! started (`make` and its compilers, a shell and its pipeline), and so that the terminal's
//! own Ctrl-C reaches Sorat only, which then decides. When the command ends, whatever it left
//! running in its group is killed: a step cannot leak a daemon into the next one.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use super::log::{LogWriter, pump_lines};

/// How long a process may take to exit after SIGTERM before it gets SIGKILL.
pub(crate) const GRACE: Duration = Duration::from_secs(5);
/// How long to keep reading output after the process ended, for output still in the pipe.
const DRAIN: Duration = Duration::from_secs(2);

/// A command to run.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The working directory.
    pub cwd: PathBuf,
    /// The whole environment (nothing is inherited beyond it).
    pub env: Vec<(String, String)>,
}

/// How a process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with a code (for a signal, 128 + the signal's number, as shells report it).
    Code(i32),
    /// It was killed at its time limit.
    TimedOut(Duration),
    /// It was stopped by a cancellation.
    Cancelled,
    /// It could not start.
    SpawnFailed(String),
}

impl Exit {
    /// The exit code, when the process ran to an exit.
    pub fn code(&self) -> Option<i32> {
        match self {
            Exit::Code(code) => Some(*code),
            _ => None,
        }
    }
}

/// Told of every process group the engine starts and of its end, so that something outside
/// the engine can kill the groups if the engine's process dies without doing it (`kill -9`):
/// the binary's reaper does that, so a dead agent leaves no step running.
pub trait GroupWatcher: Send + Sync {
    /// A process group started; `pgid` is its id.
    fn started(&self, pgid: i32);
    /// It ended (and was killed whole).
    fn ended(&self, pgid: i32);
}

static WATCHER: std::sync::OnceLock<Box<dyn GroupWatcher>> = std::sync::OnceLock::new();

/// Installs the process's one watcher; `false` when one was installed already.
pub fn watch_process_groups(watcher: Box<dyn GroupWatcher>) -> bool {
    WATCHER.set(watcher).is_ok()
}

/// Tells the watcher (if any) of a process group started outside the engine (a deployed
/// service), so that it is killed with the rest when this process dies.
pub fn report_group_started(pgid: i32) {
    if let Some(watcher) = WATCHER.get() {
        watcher.started(pgid);
    }
}

/// Tells the watcher (if any) that a group reported with [`report_group_started`] ended.
pub fn report_group_ended(pgid: i32) {
    if let Some(watcher) = WATCHER.get() {
        watcher.ended(pgid);
    }
}

/// Runs `spec`, sending its output (stdout and stderr through one pipe, so their order is
/// kept) to `log`, until it exits, `timeout` passes, or `cancel` fires.
pub async fn run_process(
    spec: &ProcessSpec,
    log: Arc<Mutex<LogWriter>>,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
) -> Exit {
    let (reader, writer) = match std::io::pipe() {
        Ok(pair) => pair,
        Err(error) => return Exit::SpawnFailed(format!("cannot create a pipe: {error}")),
    };
    let writer_for_stderr = match writer.try_clone() {
        Ok(clone) => clone,
        Err(error) => return Exit::SpawnFailed(format!("cannot create a pipe: {error}")),
    };
    let mut command = tokio::process::Command::new(&spec.program);
    command
        .args(&spec.args)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer_for_stderr))
        .process_group(0)
        .kill_on_drop(true);
    let spawned = command.spawn();
    // The command holds the pipe's write ends; dropping it leaves them only in the child, so
    // the reader sees end-of-file when the child's group is gone.
    drop(command);
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            return Exit::SpawnFailed(format!("cannot start `{}`: {error}", spec.program));
        }
    };
    let pgid = child.id().map(|pid| Pid::from_raw(pid as i32));
    if let (Some(watcher), Some(pgid)) = (WATCHER.get(), pgid) {
        watcher.started(pgid.as_raw());
    }
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let reader_log = Arc::clone(&log);
    std::thread::spawn(move || {
        pump_lines(reader, &reader_log);
        // Let go of the log before saying so: the step closes it next.
        drop(reader_log);
        let _ = done_tx.send(());
    });

    let deadline = async {
        match timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let exit = tokio::select! {
        status = child.wait() => match status {
            Ok(status) => Exit::Code(exit_code(status)),
            Err(error) => Exit::SpawnFailed(format!("lost the process: {error}")),
        },
        () = deadline => {
            terminate(&mut child, pgid).await;
            Exit::TimedOut(timeout.unwrap_or_default())
        }
        () = cancel.cancelled() => {
            terminate(&mut child, pgid).await;
            Exit::Cancelled
        }
    };
    // Whatever the step left behind in its group goes with it.
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    let _ = child.wait().await;
    if let (Some(watcher), Some(pgid)) = (WATCHER.get(), pgid) {
        watcher.ended(pgid.as_raw());
    }
    if tokio::time::timeout(DRAIN, done_rx).await.is_err()
        && let Ok(mut log) = log.lock()
    {
        log.note(
            "sorat: a process that left the step's process group still holds its output; it is no longer read",
        );
    }
    exit
}

/// SIGTERM to the group, then SIGKILL after the grace period.
async fn terminate(child: &mut tokio::process::Child, pgid: Option<Pid>) {
    let Some(pgid) = pgid else {
        let _ = child.start_kill();
        return;
    };
    let _ = killpg(pgid, Signal::SIGTERM);
    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => -1,
    }
}
