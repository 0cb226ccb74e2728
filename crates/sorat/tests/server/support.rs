//! Starting servers and agents, a git repository to build, and an HTTP client.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The admin token every test server starts with (`SORAT_ADMIN_TOKEN`).
pub const ADMIN: &str = "sorat_test_admin_token_0123456789";

pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Tess", "-c", "user.email=tess@example.com"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A repository with `pipeline` as `.sorat/pipeline.yaml`, committed on `main`.
pub fn repo_with(dir: &Path, pipeline: &str) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join(".sorat")).unwrap();
    std::fs::write(repo.join(".sorat/pipeline.yaml"), pipeline).unwrap();
    std::fs::write(repo.join("README.md"), "hello\n").unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "first commit"]);
    repo
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `sorat up` process.
pub struct Server {
    pub url: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    /// Starts `sorat up` with `extra` appended to the `server:` section and `projects` as
    /// the `projects:` list (YAML text).
    pub fn start(dir: &Path, server_extra: &str, projects: &str) -> Server {
        let port = free_port();
        let config = dir.join("sorat.yaml");
        std::fs::write(
            &config,
            format!(
                "server:\n  listen: 127.0.0.1:{port}\n  data: data\n{server_extra}\nprojects:\n{projects}\n"
            ),
        )
        .unwrap();
        let mut server = Server {
            url: format!("http://127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
            config,
            child: None,
            log: dir.join("server.log"),
        };
        server.spawn();
        server
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sorat"))
            .args(["up", "--config"])
            .arg(&self.config)
            .env("SORAT_ADMIN_TOKEN", ADMIN)
            .env("SORAT_LOG", "info,sqlx=warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = reqwest::blocking::get(format!("{}/readyz", self.url))
                && response.status().is_success()
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("sorat up exited ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "sorat up not ready:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs the `sorat` CLI against this server as the admin.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_sorat"))
            .args(args)
            .args(["--server", &self.url])
            .env("SORAT_TOKEN", ADMIN)
            .output()
            .unwrap()
    }

    /// [`Server::cli`]'s exit code and its stdout and stderr together.
    pub fn cli_text(&self, args: &[&str]) -> (Option<i32>, String) {
        let output = self.cli(args);
        (
            output.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM, then waits for the process to end; its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "sorat up did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        signal(child.id(), "KILL");
        let _ = child.wait();
    }

    pub fn client(&self, token: &str) -> Api {
        Api {
            base: self.url.clone(),
            token: token.to_string(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    pub fn admin(&self) -> Api {
        self.client(ADMIN)
    }

    /// A new token for `name` with `role` (or an agent token when `role` is "agent").
    pub fn token(&self, name: &str, role: &str) -> String {
        let body = if role == "agent" {
            serde_json::json!({ "name": name, "agent": true })
        } else {
            serde_json::json!({ "name": name, "role": role })
        };
        let (status, value) = self.admin().post("/api/v1/tokens", body);
        assert_eq!(status, 201, "{value}");
        value["token"].as_str().unwrap().to_string()
    }

    /// Waits until run `id` ends; its JSON.
    pub fn wait_run(&self, id: i64, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, run) = self.admin().get(&format!("/api/v1/runs/{id}"));
            assert_eq!(status, 200, "{run}");
            if matches!(
                run["status"].as_str(),
                Some("success" | "failure" | "cancelled")
            ) {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} did not end: {run:#}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for `check` to hold on the runs list; the list.
    pub fn wait_runs(&self, within: Duration, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let (_, list) = self.admin().get("/api/v1/runs?limit=100");
            let runs = list["runs"].as_array().cloned().unwrap_or_default();
            if check(&runs) {
                return runs;
            }
            assert!(
                Instant::now() < deadline,
                "runs never matched: {runs:#?}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "KILL");
            let _ = child.wait();
        }
    }
}

pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status();
}

/// A `sorat agent` process.
pub struct AgentProcess {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl AgentProcess {
    pub fn start(server: &Server, token: &str, name: &str, labels: &[&str]) -> AgentProcess {
        let data = server.dir.join(format!("agent-{name}"));
        let log = server.dir.join(format!("agent-{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_sorat"));
        command
            .args([
                "agent",
                "--server",
                &server.url,
                "--token",
                token,
                "--name",
                name,
            ])
            .args(["--capacity", "1", "--grace", "2s", "--data"])
            .arg(&data);
        for label in labels {
            command.args(["--label", label]);
        }
        let child = command
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        AgentProcess {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "KILL");
            let _ = child.wait();
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A blocking API client.
pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::blocking::Client,
}

impl Api {
    fn finish(response: reqwest::blocking::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        Self::finish(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .send()
                .unwrap(),
        )
    }

    pub fn text(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .unwrap();
        (response.status().as_u16(), response.text().unwrap())
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        Self::finish(
            self.http
                .post(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .json(&body)
                .send()
                .unwrap(),
        )
    }

    pub fn put(&self, path: &str, body: Value) -> (u16, Value) {
        Self::finish(
            self.http
                .put(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .json(&body)
                .send()
                .unwrap(),
        )
    }

    /// A manual run of `project`; its id.
    pub fn trigger(&self, project: &str, body: Value) -> i64 {
        let (status, run) = self.post(&format!("/api/v1/projects/{project}/runs"), body);
        assert_eq!(status, 201, "{run}");
        run["id"].as_i64().unwrap()
    }
}
