//! A real `sorat up` and real `sorat agent` processes for the server benchmarks, a blocking
//! client of their API, and the git repository their projects build.
//!
//! Everything runs on loopback with ports the operating system picks. A [`Server`] or
//! [`AgentProcess`] that is dropped kills its process, so a benchmark that fails half-way
//! leaves nothing running.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// The admin token the benchmarks' servers start with (`SORAT_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "sorat_bench_admin_token_0123456789abcdef";

/// A port on 127.0.0.1 that was free a moment ago (the OS picked it).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Milliseconds since the Unix epoch, as the server writes its times.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Nanoseconds since the Unix epoch (`date +%s%N`).
pub fn now_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i128::try_from(since.as_nanos()).unwrap_or(i128::MAX)
        })
}

/// Runs `git` in `dir` with a fixed identity; its trimmed standard output.
pub fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Bench",
            "-c",
            "user.email=bench@example.com",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running git {args:?}"))?;
    if !output.status.success() {
        bail!(
            "git {args:?} in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Makes `dir` a repository on `main` with `pipeline` as `.sorat/pipeline.yaml`, committed;
/// the commit's id.
pub fn init_repo(dir: &Path, pipeline: &str) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir.join(".sorat"))
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(".sorat/pipeline.yaml"), pipeline)?;
    std::fs::write(dir.join("README.md"), "benchmark project\n")?;
    git(dir, &["init", "-q", "-b", "main"])?;
    git(dir, &["add", "-A"])?;
    git(dir, &["commit", "-q", "-m", "first commit"])?;
    git(dir, &["rev-parse", "HEAD"])
}

/// Commits a change to `change.txt` in `dir` with `message`; the new commit's id.
pub fn commit_change(dir: &Path, message: &str) -> anyhow::Result<String> {
    std::fs::write(dir.join("change.txt"), format!("{message}\n"))?;
    git(dir, &["add", "change.txt"])?;
    git(dir, &["commit", "-q", "-m", message])?;
    git(dir, &["rev-parse", "HEAD"])
}

/// How to start a `sorat up`.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    /// The `sorat` binary.
    pub sorat: PathBuf,
    /// A folder for the config, the data folder (`data/`) and the server's log.
    pub dir: PathBuf,
    /// Lines added under `server:` (YAML, indented by two spaces).
    pub server_yaml: String,
    /// The `projects:` list (YAML).
    pub projects_yaml: String,
    /// `--database`, when not the default SQLite in the data folder.
    pub database: Option<String>,
}

/// A running `sorat up`.
#[derive(Debug)]
pub struct Server {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Its data folder.
    pub data: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    /// Writes the config, starts `sorat up` and waits until `/readyz` answers 200.
    pub fn start(spec: &ServerSpec) -> anyhow::Result<Server> {
        let port = free_port()?;
        let config = spec.dir.join("sorat.yaml");
        std::fs::write(
            &config,
            format!(
                "server:\n  listen: 127.0.0.1:{port}\n  data: data\n{}\nprojects:\n{}\n",
                spec.server_yaml, spec.projects_yaml
            ),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        let log = spec.dir.join("server.log");
        let log_file = std::fs::File::create(&log)?;
        let mut command = Command::new(&spec.sorat);
        command.args(["up", "--config"]).arg(&config);
        if let Some(database) = &spec.database {
            command.args(["--database", database]);
        }
        let child = command
            .env("SORAT_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("SORAT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", spec.sorat.display()))?;
        let mut server = Server {
            url: format!("http://127.0.0.1:{port}"),
            data: spec.dir.join("data"),
            child: Some(child),
            log,
        };
        server.wait_ready(Duration::from_secs(60))?;
        Ok(server)
    }

    fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + within;
        loop {
            if let Ok(response) = http.get(format!("{}/readyz", self.url)).send()
                && response.status().is_success()
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("sorat up exited ({status}):\n{}", self.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "sorat up was not ready within {within:?}:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// A client with the admin token.
    pub fn admin(&self) -> anyhow::Result<Api> {
        Api::new(&self.url, ADMIN_TOKEN)
    }

    /// SIGTERM, then waits up to a minute for the process to end (SIGKILL after that).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        stop_child(self.child.take(), Duration::from_secs(60))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        kill_child(self.child.take());
    }
}

/// A running `sorat agent`.
#[derive(Debug)]
pub struct AgentProcess {
    /// The name it claims jobs under.
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl AgentProcess {
    /// Starts `sorat agent` against `server_url` with `capacity` jobs at once; its data
    /// folder and log go into `dir`.
    pub fn start(
        sorat: &Path,
        server_url: &str,
        token: &str,
        name: &str,
        capacity: u32,
        dir: &Path,
    ) -> anyhow::Result<AgentProcess> {
        let data = dir.join(format!("agent-{name}"));
        let log = dir.join(format!("agent-{name}.log"));
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(sorat)
            .args([
                "agent", "--server", server_url, "--token", token, "--name", name,
            ])
            .args([
                "--capacity",
                &capacity.to_string(),
                "--grace",
                "2s",
                "--data",
            ])
            .arg(&data)
            .env("SORAT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {} agent", sorat.display()))?;
        Ok(AgentProcess {
            name: name.to_string(),
            child: Some(child),
            log,
        })
    }

    /// The last lines of the agent's log, for error messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// SIGTERM, then waits up to 10 s for the process to end (SIGKILL after that).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        stop_child(self.child.take(), Duration::from_secs(10))
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        kill_child(self.child.take());
    }
}

fn signal(child: &Child, signal: Signal) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

fn stop_child(child: Option<Child>, within: Duration) -> anyhow::Result<()> {
    let Some(mut child) = child else {
        return Ok(());
    };
    signal(&child, Signal::SIGTERM);
    let deadline = Instant::now() + within;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            signal(&child, Signal::SIGKILL);
            let _ = child.wait();
            bail!(
                "process {} did not stop within {within:?}; killed",
                child.id()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill_child(child: Option<Child>) {
    if let Some(mut child) = child {
        signal(&child, Signal::SIGKILL);
        let _ = child.wait();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A blocking client of the server's JSON API with one bearer token.
#[derive(Clone, Debug)]
pub struct Api {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl Api {
    /// A client of the server at `base` (`http://127.0.0.1:port`) that sends `token`.
    pub fn new(base: &str, token: &str) -> anyhow::Result<Api> {
        Ok(Api {
            base: base.to_string(),
            token: token.to_string(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
        })
    }

    /// The underlying HTTP client (connections are kept alive between calls).
    pub fn http(&self) -> &reqwest::blocking::Client {
        &self.http
    }

    fn finish(response: reqwest::blocking::Response) -> anyhow::Result<(u16, Value)> {
        let status = response.status().as_u16();
        let text = response.text()?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// `GET path`: the status and the JSON body (a string when the body is not JSON).
    pub fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .with_context(|| format!("GET {path}"))?;
        Api::finish(response)
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .with_context(|| format!("POST {path}"))?;
        Api::finish(response)
    }

    /// `PUT path` with a JSON body.
    pub fn put(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .put(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .with_context(|| format!("PUT {path}"))?;
        Api::finish(response)
    }

    /// Sets a secret of `project`.
    pub fn set_secret(&self, project: &str, name: &str, value: &str) -> anyhow::Result<()> {
        let (status, body) = self.put(
            &format!("/api/v1/secrets/{name}?project={project}"),
            &serde_json::json!({ "value": value }),
        )?;
        if status != 204 {
            bail!("setting secret {name}: HTTP {status}: {body}");
        }
        Ok(())
    }

    /// A new agent token called `name`.
    pub fn agent_token(&self, name: &str) -> anyhow::Result<String> {
        let (status, body) = self.post(
            "/api/v1/tokens",
            &serde_json::json!({ "name": name, "agent": true }),
        )?;
        match body["token"].as_str() {
            Some(token) if status == 201 => Ok(token.to_string()),
            _ => bail!("creating an agent token: HTTP {status}: {body}"),
        }
    }

    /// A manual run of `project` (its default branch); the run's id.
    pub fn trigger(&self, project: &str) -> anyhow::Result<i64> {
        let (status, body) = self.post(
            &format!("/api/v1/projects/{project}/runs"),
            &serde_json::json!({}),
        )?;
        match body["id"].as_i64() {
            Some(id) if status == 201 => Ok(id),
            _ => bail!("triggering a run of {project}: HTTP {status}: {body}"),
        }
    }

    /// The run with its jobs and steps (`GET /api/v1/runs/{id}`).
    pub fn run(&self, id: i64) -> anyhow::Result<Value> {
        let (status, body) = self.get(&format!("/api/v1/runs/{id}"))?;
        if status != 200 {
            bail!("run {id}: HTTP {status}: {body}");
        }
        Ok(body)
    }

    /// Polls run `id` every `every` until it has ended; the run.
    pub fn wait_run(&self, id: i64, every: Duration, within: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let run = self.run(id)?;
            if run_ended(&run) {
                return Ok(run);
            }
            if Instant::now() > deadline {
                bail!("run {id} did not end within {within:?}: {run}");
            }
            std::thread::sleep(every);
        }
    }
}

/// Whether a run's JSON says it has ended.
pub fn run_ended(run: &Value) -> bool {
    matches!(
        run["status"].as_str(),
        Some("success" | "failure" | "cancelled")
    )
}

/// User and system CPU time a process has used so far (`/proc/<pid>/stat`), when readable.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields after it.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) (utime, stime) are the 12th and 13th after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ: the unit of these fields, 100 on every Linux architecture's user ABI.
    let ticks = 100;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks as f64,
    ))
}
