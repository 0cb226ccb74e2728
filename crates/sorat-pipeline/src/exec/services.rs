//! Services: background processes that live for the duration of a job.
//!
//! A service starts before the first step, in its own process group, with its output in its
//! own log. The job waits until its readiness probe passes (a TCP connect, an HTTP GET
//! answering 2xx, or a command exiting 0), and fails, with the service's last lines, when
//! the probe times out or the service exits first. After the last step the group is sent
//! SIGTERM, then SIGKILL.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use sorat_expr::{JobStatus, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::job::{JobRun, StepHost};
use super::log::LogWriter;
use super::process::{Exit, ProcessSpec, run_process};
use crate::record::ServiceRecord;
use crate::spec::{ProbeCheck, Service};

/// A service that was started.
pub(crate) struct RunningService {
    pub(crate) name: String,
    stop: CancellationToken,
    /// The service's process; `None` once it has been awaited (it exited early).
    task: Option<JoinHandle<Exit>>,
    log: Arc<Mutex<LogWriter>>,
    ready: bool,
}

impl RunningService {
    /// What `job.services.<name>` shows.
    pub(crate) fn context_value(&self) -> Value {
        Value::Object(IndexMap::from([(
            "ready".to_string(),
            Value::Bool(self.ready),
        )]))
    }

    /// Stops the service and closes its log.
    pub(crate) async fn stop(self) -> ServiceRecord {
        self.stop.cancel();
        if let Some(task) = self.task {
            let _ = task.await;
        }
        let log = super::log::close_shared(&self.log);
        ServiceRecord {
            name: self.name,
            ready: self.ready,
            log,
        }
    }
}

/// Starts a service and waits until it is ready. On failure, returns the started service
/// (so that it is stopped and its log kept) and the reason.
pub(crate) async fn start(
    run: &mut JobRun<'_>,
    service: &Service,
    job_cancel: &CancellationToken,
) -> Result<RunningService, (Option<RunningService>, String)> {
    let shared = run.shared;
    let context = {
        let mut context = run.context.clone();
        context.insert("env", super::string_object(run.env.clone().into_iter()));
        context
    };
    let host = StepHost {
        workspace: &run.workspace,
        status: JobStatus::Success,
    };
    let fail = |message: String| Err((None, message));
    let command = match service.run.value.eval_to_string(&context, &host) {
        Ok(command) => command,
        Err(error) => {
            return fail(format!(
                "{}: service `{}`: {error}",
                shared.locate(service.run.span),
                service.name
            ));
        }
    };
    let mut env = IndexMap::new();
    for (name, template) in &service.env {
        match template.value.eval_to_string(&context, &host) {
            Ok(value) => {
                env.insert(name.clone(), value);
            }
            Err(error) => {
                return fail(format!(
                    "{}: service `{}` env `{name}`: {error}",
                    shared.locate(template.span),
                    service.name
                ));
            }
        }
    }
    let cwd = match &service.working_directory {
        None => run.workspace.clone(),
        Some(template) => match template.value.eval_to_string(&context, &host) {
            Ok(dir) => run.workspace.join(dir),
            Err(error) => {
                return fail(format!(
                    "{}: service `{}`: {error}",
                    shared.locate(template.span),
                    service.name
                ));
            }
        },
    };
    let probe = match &service.ready {
        None => None,
        Some(probe) => {
            let target = match &probe.check {
                ProbeCheck::Tcp(t) | ProbeCheck::Http(t) | ProbeCheck::Run(t) => t,
            };
            match target.value.eval_to_string(&context, &host) {
                Ok(text) => Some((probe, text)),
                Err(error) => {
                    return fail(format!(
                        "{}: service `{}` probe: {error}",
                        shared.locate(target.span),
                        service.name
                    ));
                }
            }
        }
    };
    let log = match run.new_log(&format!("service-{}.log.zst", service.name)) {
        Ok(log) => log,
        Err(error) => return fail(format!("cannot create the service's log: {error}")),
    };
    let spec = ProcessSpec {
        program: "sh".into(),
        args: vec!["-c".into(), command],
        cwd: cwd.clone(),
        env: run.process_env(&env, None),
    };
    let stop = job_cancel.child_token();
    let task = {
        let log = Arc::clone(&log);
        let stop = stop.clone();
        tokio::spawn(async move { run_process(&spec, log, None, &stop).await })
    };
    let mut running = RunningService {
        name: service.name.clone(),
        stop,
        task: Some(task),
        log,
        ready: probe.is_none(),
    };
    let Some((probe, target)) = probe else {
        return Ok(running);
    };
    let started = Instant::now();
    let process_env = run.process_env(&env, None);
    loop {
        if let Some(task) = running.task.take_if(|task| task.is_finished()) {
            let exit = task.await.ok();
            let tail = tail_text(&running.log);
            let how = match exit {
                Some(Exit::Code(code)) => format!("exited with code {code}"),
                Some(Exit::SpawnFailed(message)) => message,
                _ => "stopped".to_string(),
            };
            return Err((
                Some(running),
                format!("service `{}` {how} before it was ready{tail}", service.name),
            ));
        }
        let passed = match &probe.check {
            ProbeCheck::Tcp(_) => tcp_probe(&target).await,
            ProbeCheck::Http(_) => http_probe(&target).await,
            ProbeCheck::Run(_) => command_probe(&target, &cwd, &process_env).await,
        };
        if passed {
            running.ready = true;
            if let Ok(mut log) = running.log.lock() {
                log.note(&format!(
                    "sorat: service `{}` is ready after {}",
                    service.name,
                    sorat_config::duration::format_duration(started.elapsed())
                ));
            }
            return Ok(running);
        }
        if started.elapsed() >= probe.timeout {
            let tail = tail_text(&running.log);
            return Err((
                Some(running),
                format!(
                    "service `{}` was not ready after {} (probe: {target}){tail}",
                    service.name,
                    sorat_config::duration::format_duration(probe.timeout)
                ),
            ));
        }
        tokio::select! {
            () = tokio::time::sleep(probe.interval) => {}
            () = job_cancel.cancelled() => {
                return Err((Some(running), format!("cancelled while waiting for service `{}`", service.name)));
            }
        }
    }
}

fn tail_text(log: &Arc<Mutex<LogWriter>>) -> String {
    let lines: Vec<String> = log
        .lock()
        .map(|log| {
            log.tail()
                .into_iter()
                .rev()
                .take(10)
                .rev()
                .map(|l| l.line)
                .collect()
        })
        .unwrap_or_default();
    if lines.is_empty() {
        String::new()
    } else {
        format!("; its last lines:\n{}", lines.join("\n"))
    }
}

const PROBE_ATTEMPT: Duration = Duration::from_secs(2);

async fn tcp_probe(address: &str) -> bool {
    matches!(
        tokio::time::timeout(PROBE_ATTEMPT, tokio::net::TcpStream::connect(address)).await,
        Ok(Ok(_))
    )
}

/// A plain-HTTP GET that passes on a 2xx status. Readiness needs only the status line, so
/// this speaks just enough HTTP/1.1 for it; TLS endpoints are probed with `run: curl …`.
async fn http_probe(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (authority, path) = match rest.find('/') {
        Some(index) => (&rest[..index], &rest[index..]),
        None => (rest, "/"),
    };
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(&address).await.ok()?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: sorat-probe\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 64];
        let mut filled = 0;
        while filled < 12 {
            let n = stream.read(&mut head[filled..]).await.ok()?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let status_line = String::from_utf8_lossy(&head[..filled]).into_owned();
        let code = status_line.split_whitespace().nth(1)?.parse::<u16>().ok()?;
        Some((200..300).contains(&code))
    };
    matches!(
        tokio::time::timeout(PROBE_ATTEMPT, attempt).await,
        Ok(Some(true))
    )
}

async fn command_probe(command: &str, cwd: &std::path::Path, env: &[(String, String)]) -> bool {
    let mut process = tokio::process::Command::new("sh");
    process
        .args(["-c", command])
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    matches!(
        tokio::time::timeout(Duration::from_secs(10), process.status()).await,
        Ok(Ok(status)) if status.success()
    )
}
