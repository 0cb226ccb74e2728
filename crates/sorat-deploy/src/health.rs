//! Health checks: is a host's service answering?
//!
//! A [`HealthCheck`] is a [`Probe`] (HTTP status, TCP connect, or a command's exit code, run on
//! the host itself when it is reached over SSH) tried
//! every `interval` until `success_threshold` attempts in a row pass, or `timeout` passes;
//! then the last failure's text says why.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::agent::AgentHost;
use crate::ssh::SshHost;

/// What one attempt checks.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// `GET http://127.0.0.1:<port><path>` answers `expected_status`.
    Http {
        /// The path, starting with `/`.
        path: String,
        /// The status it must answer.
        expected_status: u16,
    },
    /// A TCP connection to `127.0.0.1:<port>` opens.
    Tcp,
    /// `sh -c <command>` exits 0 (run with `PORT` set, in the given working directory).
    Command {
        /// The command.
        command: String,
    },
}

/// A probe and its timing.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HealthCheck {
    /// What each attempt checks.
    pub probe: Probe,
    /// The wait between attempts.
    pub interval: Duration,
    /// How long one attempt may take.
    pub attempt_timeout: Duration,
    /// How long to try in all before failing.
    pub timeout: Duration,
    /// How many attempts in a row must pass.
    pub success_threshold: u32,
    /// Once the service was healthy (a deploy's bake window), how many attempts in a row must
    /// fail before the host counts as failed.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
}

fn default_failure_threshold() -> u32 {
    3
}

impl HealthCheck {
    /// An HTTP check of `path` expecting 200, every 200 ms, 2 s per attempt, 30 s in all, one
    /// success needed (three failures in a row, once healthy).
    pub fn http(path: impl Into<String>) -> HealthCheck {
        HealthCheck {
            probe: Probe::Http {
                path: path.into(),
                expected_status: 200,
            },
            interval: Duration::from_millis(200),
            attempt_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(30),
            success_threshold: 1,
            failure_threshold: default_failure_threshold(),
        }
    }
}

/// Where a check is aimed.
#[derive(Clone, Debug)]
pub struct ProbeTarget {
    /// The host's address for HTTP and TCP probes (`127.0.0.1` for a local host).
    pub address: String,
    /// The service's port there.
    pub port: u16,
    /// The working directory of a command probe.
    pub working_dir: PathBuf,
    /// The host a command probe runs on, when it is reached over SSH (else it runs here).
    pub remote: Option<Arc<SshHost>>,
    /// The host's agent, which runs every probe there, when the host is an agent's.
    pub agent: Option<Arc<AgentHost>>,
}

impl ProbeTarget {
    /// A service on this machine: probes go to `127.0.0.1:port`, commands run in
    /// `working_dir`.
    pub fn local(port: u16, working_dir: impl Into<PathBuf>) -> ProbeTarget {
        ProbeTarget {
            address: "127.0.0.1".to_owned(),
            port,
            working_dir: working_dir.into(),
            remote: None,
            agent: None,
        }
    }

    /// `address:port`, with an IPv6 address in brackets.
    fn socket_text(&self) -> String {
        if self.address.contains(':') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }
}

/// A check that passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Healthy {
    /// How many attempts were made.
    pub attempts: u32,
    /// How long it took.
    pub elapsed: Duration,
}

/// A check that did not pass in time.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("health check failed after {attempts} attempts in {elapsed:?}: {last_failure}")]
pub struct Unhealthy {
    /// How many attempts were made.
    pub attempts: u32,
    /// How long it tried.
    pub elapsed: Duration,
    /// What the last failed attempt saw.
    pub last_failure: String,
}

/// Tries `check` against `target` until it passes `success_threshold` times in a row or its
/// timeout passes.
pub async fn wait_healthy(check: &HealthCheck, target: &ProbeTarget) -> Result<Healthy, Unhealthy> {
    let started = Instant::now();
    let client = match &check.probe {
        Probe::Http { .. } => match reqwest::Client::builder()
            .no_proxy()
            .timeout(check.attempt_timeout)
            .build()
        {
            Ok(client) => Some(client),
            Err(error) => {
                return Err(Unhealthy {
                    attempts: 0,
                    elapsed: started.elapsed(),
                    last_failure: format!("cannot build an HTTP client: {error}"),
                });
            }
        },
        _ => None,
    };
    let mut attempts = 0;
    let mut in_a_row = 0;
    let mut last_failure = "no attempt finished before the timeout".to_owned();
    loop {
        let remaining = check.timeout.saturating_sub(started.elapsed());
        attempts += 1;
        let attempt_limit = check.attempt_timeout.min(remaining);
        // The attempt limits itself (reqwest's timeout, the command's limit); this outer limit,
        // a little longer, only catches a probe that ignored its own.
        let result = match tokio::time::timeout(
            attempt_limit + Duration::from_millis(500),
            attempt(&check.probe, target, client.as_ref(), attempt_limit),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(Failure::timed_out(format!(
                "no answer within {attempt_limit:?}"
            ))),
        };
        match result {
            Ok(()) => {
                in_a_row += 1;
                if in_a_row >= check.success_threshold.max(1) {
                    return Ok(Healthy {
                        attempts,
                        elapsed: started.elapsed(),
                    });
                }
            }
            Err(failure) => {
                in_a_row = 0;
                // An attempt that timed out only because the overall deadline shortened it says
                // less than the failure before it: it does not hide that reason.
                let cut_short = failure.timed_out && attempt_limit < check.attempt_timeout;
                if !(cut_short && attempts > 1) {
                    last_failure = failure.message;
                }
            }
        }
        if started.elapsed() + check.interval >= check.timeout {
            return Err(Unhealthy {
                attempts,
                elapsed: started.elapsed(),
                last_failure,
            });
        }
        tokio::time::sleep(check.interval).await;
    }
}

/// Why one attempt failed.
struct Failure {
    message: String,
    /// It ran out of time rather than seeing a wrong answer.
    timed_out: bool,
}

impl Failure {
    fn timed_out(message: String) -> Failure {
        Failure {
            message,
            timed_out: true,
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            message,
            timed_out: false,
        }
    }
}

/// One attempt of `probe` against `target`, cut after `limit`: `Err((why, timed_out))`.
pub async fn probe_once(
    probe: &Probe,
    target: &ProbeTarget,
    limit: Duration,
) -> Result<(), (String, bool)> {
    let client = match probe {
        Probe::Http { .. } => Some(
            reqwest::Client::builder()
                .no_proxy()
                .timeout(limit)
                .build()
                .map_err(|error| (format!("cannot build an HTTP client: {error}"), false))?,
        ),
        _ => None,
    };
    match tokio::time::timeout(
        limit + Duration::from_millis(500),
        attempt(probe, target, client.as_ref(), limit),
    )
    .await
    {
        Ok(result) => result.map_err(|failure| (failure.message, failure.timed_out)),
        Err(_) => Err((format!("no answer within {limit:?}"), true)),
    }
}

async fn attempt(
    probe: &Probe,
    target: &ProbeTarget,
    client: Option<&reqwest::Client>,
    limit: Duration,
) -> Result<(), Failure> {
    if let Some(agent) = &target.agent {
        return agent
            .probe(probe, target.port, &target.working_dir, limit)
            .await
            .map_err(|(message, timed_out)| Failure { message, timed_out });
    }
    match probe {
        Probe::Http {
            path,
            expected_status,
        } => {
            let url = format!("http://{}{path}", target.socket_text());
            let Some(client) = client else {
                return Err(Failure::from("no HTTP client".to_owned()));
            };
            let response = client.get(&url).send().await.map_err(|error| Failure {
                message: format!("GET {url}: {}", error_chain(&error)),
                timed_out: error.is_timeout(),
            })?;
            let status = response.status().as_u16();
            if status == *expected_status {
                Ok(())
            } else {
                Err(Failure::from(format!(
                    "GET {url} answered {status}, expected {expected_status}"
                )))
            }
        }
        Probe::Tcp => {
            let address = target.socket_text();
            tokio::net::TcpStream::connect(&address)
                .await
                .map(drop)
                .map_err(|error| Failure::from(format!("cannot connect to {address}: {error}")))
        }
        Probe::Command { command } => match &target.remote {
            Some(host) => host
                .probe_command(
                    command,
                    &target.working_dir.to_string_lossy(),
                    target.port,
                    limit,
                )
                .await
                .map_err(|(message, timed_out)| Failure { message, timed_out }),
            None => run_command(command, target, limit).await,
        },
    }
}

async fn run_command(command: &str, target: &ProbeTarget, limit: Duration) -> Result<(), Failure> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(&target.working_dir)
        .env("PORT", target.port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| Failure::from(format!("cannot start `{command}`: {error}")))?;
    let pgid = child.id().map(|pid| Pid::from_raw(pid as i32));
    let waited = tokio::time::timeout(limit, child.wait()).await;
    // Whatever the probe started goes with it, also when it timed out.
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    match waited {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(Failure::from(format!("`{command}` ended with {status}"))),
        Ok(Err(error)) => Err(Failure::from(format!("`{command}`: {error}"))),
        Err(_) => {
            let _ = child.wait().await;
            Err(Failure::timed_out(format!(
                "`{command}` did not end within {limit:?}"
            )))
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
