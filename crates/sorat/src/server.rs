//! The server's commands: `sorat up`, `sorat agent`, and the clients of its API
//! (`sorat trigger`, `sorat logs follow`, `sorat token create`, `sorat secret set`).
//! These commands talk to the terminal: results on stdout, messages on stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sorat_config::Diagnostic;
use sorat_config::platform::{self, PlatformConfig};

use crate::{diagnostics, exit};

/// `--log-format`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line.
    Json,
}

/// Arguments of `sorat up`.
#[derive(clap::Args)]
pub(crate) struct UpArgs {
    /// A folder with a `sorat.yaml`, or the file itself (same as `--config`).
    path: Option<PathBuf>,
    /// The configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The data folder (overrides `server.data`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The address to listen on (overrides `server.listen`).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// `sqlite` or a `postgres://` URL (overrides `server.database`).
    #[arg(long)]
    database: Option<String>,
    /// How Sorat's own log looks.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Serve HTTPS with this certificate chain (PEM); needs `--tls-key`.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) for `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// Arguments of `sorat agent`.
#[derive(clap::Args)]
pub(crate) struct AgentArgs {
    /// The server's URL.
    #[arg(long, env = "SORAT_SERVER")]
    server: String,
    /// An agent token (`sorat token create --agent NAME`).
    #[arg(long, env = "SORAT_AGENT_TOKEN", hide_env_values = true)]
    token: String,
    /// A label the agent matches (`linux`, `gpu=a100`); repeat for more. None: any job.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Jobs at once.
    #[arg(long, default_value_t = 2)]
    capacity: u32,
    /// The agent's name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Its data folder: repository mirrors, workspaces, caches.
    #[arg(long, default_value = ".sorat-agent")]
    data: PathBuf,
    /// Trust this CA certificate (PEM) for an HTTPS server, besides the public roots.
    #[arg(long, env = "SORAT_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// On SIGTERM, how long running jobs may go on before they are killed.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    grace: Duration,
    /// How Sorat's own log looks.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// Where a client command finds the server.
#[derive(clap::Args, Clone)]
pub(crate) struct ClientArgs {
    /// The server's URL.
    #[arg(long, env = "SORAT_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// A token (default: `SORAT_TOKEN`, else `.sorat/admin-token` here).
    #[arg(long, env = "SORAT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Trust this CA certificate (PEM) for an HTTPS server, besides the public roots.
    #[arg(long, env = "SORAT_CA_CERT")]
    ca_cert: Option<PathBuf>,
}

/// An HTTP client that also trusts `ca_cert`.
fn http_client(ca_cert: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder();
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|error| format!("{}: not a PEM certificate: {error}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!("{}: it holds no PEM certificate", path.display()));
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().map_err(|error| error.to_string())
}

/// Arguments of `sorat trigger`.
#[derive(clap::Args)]
pub(crate) struct TriggerArgs {
    /// The project.
    project: String,
    /// A branch, tag, full ref or commit (default: the project's branch).
    #[arg(long = "ref")]
    git_ref: Option<String>,
    /// A manual input, `name=value`; repeat for more.
    #[arg(long = "input")]
    inputs: Vec<String>,
    /// Follow the run's logs until it ends (exit 1 when it fails).
    #[arg(long)]
    follow: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Arguments of `sorat logs follow`.
#[derive(clap::Args)]
pub(crate) struct LogsFollowArgs {
    /// The run's id.
    run: i64,
    /// Only this job (its id in the pipeline).
    #[arg(long)]
    job: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Arguments of `sorat token create`.
#[derive(clap::Args)]
pub(crate) struct TokenCreateArgs {
    /// The user the token is for (made when new), or the agent's name.
    name: String,
    /// `viewer`, `developer` or `admin`.
    #[arg(long, default_value = "viewer")]
    role: String,
    /// The project the role is on (default: every project).
    #[arg(long)]
    project: Option<String>,
    /// An agent token instead (claims and reports jobs only).
    #[arg(long)]
    agent: bool,
    /// Days until it expires.
    #[arg(long)]
    expires_in_days: Option<i64>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Arguments of `sorat secret set`.
#[derive(clap::Args)]
pub(crate) struct SecretSetArgs {
    /// The secret's name.
    name: String,
    /// The project it belongs to (default: every project may use it).
    #[arg(long)]
    project: Option<String>,
    /// The value; default: read from standard input (so it stays out of shell history).
    #[arg(long)]
    value: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    sorat_config::duration::parse_duration(text).map_err(|error| error.to_string())
}

/// Arguments of the hidden `sorat __route`.
#[derive(clap::Args)]
pub(crate) struct RouteArgs {
    /// The address and port to listen on.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// The folder of its `backend`, `routed` and `router.pid` files.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

/// `sorat __route`: an SSH host's blue-green router, until SIGTERM.
pub(crate) fn route(args: RouteArgs) -> u8 {
    init_logging(LogFormat::Text);
    let Some(runtime) = runtime() else {
        return exit::FAILURE;
    };
    match runtime.block_on(sorat_deploy::router::serve_folder(&args.dir, args.listen)) {
        Ok(()) => exit::SUCCESS,
        Err(error) => {
            tracing::error!(%error, listen = %args.listen, "router stopped");
            exit::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SORAT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub(crate) fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            None
        }
    }
}

/// Reads and checks `sorat.yaml`; errors printed, located.
fn load_config(path: Option<&Path>) -> Result<PlatformConfig, u8> {
    let Some(path) = path else {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        return Ok(platform::default_config(&cwd));
    };
    let file = match crate::validate::read_source(path) {
        Ok(file) => file,
        Err(diagnostic) => {
            diagnostics::print(&[diagnostic]);
            return Err(exit::INVALID);
        }
    };
    let (config, found) = platform::load(&file);
    let found: Vec<Diagnostic> = found.into_sorted();
    if !found.is_empty() {
        diagnostics::print(&found);
    }
    match config {
        Some(config) => Ok(config),
        None => {
            eprintln!("{}; nothing started", diagnostics::counts(&found));
            Err(exit::INVALID)
        }
    }
}

/// `sorat up`.
pub(crate) fn up(args: UpArgs) -> u8 {
    let config_path = match (&args.config, &args.path) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(path)) if path.is_dir() => Some(path.join("sorat.yaml")),
        (None, Some(path)) => Some(path.clone()),
        (None, None) => {
            let here = PathBuf::from("sorat.yaml");
            here.is_file().then_some(here)
        }
    };
    let mut config = match load_config(config_path.as_deref()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Some(data) = args.data {
        config.server.data = data;
    }
    if let Some(listen) = args.listen {
        if config.server.external_url == format!("http://{}", config.server.listen) {
            config.server.external_url = format!("http://{listen}");
        }
        config.server.listen = listen;
    }
    if let Some(database) = args.database {
        config.server.database = database;
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.server.tls = Some(platform::TlsConfig { cert, key });
    }
    if config.server.tls.is_some() && config.server.external_url.starts_with("http://") {
        config.server.external_url = config
            .server
            .external_url
            .replacen("http://", "https://", 1);
    }
    init_logging(args.log_format);
    crate::reaper::start();
    let Some(runtime) = runtime() else {
        return exit::FAILURE;
    };
    runtime.block_on(serve(config))
}

async fn serve(config: PlatformConfig) -> u8 {
    let grace = config.server.shutdown_grace;
    let local = config.server.local_agent.clone();
    let data = config.server.data.clone();
    let projects: Vec<String> = config.projects.iter().map(|p| p.name.clone()).collect();
    let options = sorat_server::ServerOptions {
        config,
        admin_token: std::env::var("SORAT_ADMIN_TOKEN")
            .ok()
            .filter(|token| !token.is_empty()),
        secret_key: std::env::var("SORAT_SECRET_KEY")
            .ok()
            .filter(|key| !key.is_empty()),
    };
    let running = match sorat_server::start(options).await {
        Ok(running) => running,
        Err(error) => {
            eprintln!("error: {error}");
            return exit::FAILURE;
        }
    };
    eprintln!("Sorat is up at {}", running.url);
    eprintln!("  data: {}", data.display());
    if projects.is_empty() {
        eprintln!("  projects: none (add them under `projects:` in sorat.yaml)");
    } else {
        eprintln!("  projects: {}", projects.join(", "));
    }
    if let Some(token) = &running.first_admin_token {
        eprintln!(
            "  admin token (shown once; also in {}): {token}",
            data.join("admin-token").display()
        );
    }
    let agent = if local.enabled {
        let agent = sorat_agent::Agent::new(sorat_agent::AgentOptions {
            server: running.internal_url.clone(),
            token: running.local_agent_token.clone(),
            name: "local".into(),
            labels: local.labels.clone(),
            capacity: local.capacity as u32,
            data_dir: data.join("agent"),
            ca_cert: None,
        });
        match agent {
            Ok(agent) => {
                let stopper = agent.stopper();
                Some((stopper, tokio::spawn(agent.run())))
            }
            Err(error) => {
                eprintln!("error: the local agent: {error}");
                None
            }
        }
    } else {
        None
    };
    wait_for_signal().await;
    eprintln!(
        "stopping: no new jobs; running steps get up to {} to finish",
        sorat_config::duration::format_duration(grace)
    );
    running.stop_claims();
    if let Some((stopper, mut task)) = agent {
        stopper.stop_claiming();
        // The agent ends when its jobs have ended (and a claim in flight was answered).
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            eprintln!(
                "stopping: killing {} job(s) still running",
                stopper.running()
            );
            stopper.kill_jobs();
            // The killed jobs report their end before the server goes.
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
    }
    running.shutdown().await;
    eprintln!("stopped");
    exit::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).ok();
    let terminated = async {
        match terminate.as_mut() {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminated => {}
    }
}

/// `sorat agent`.
pub(crate) fn agent(args: AgentArgs) -> u8 {
    init_logging(args.log_format);
    crate::reaper::start();
    let name = args.name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|name| name.trim().to_string())
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "agent".into())
    });
    let Some(runtime) = runtime() else {
        return exit::FAILURE;
    };
    runtime.block_on(async move {
        let agent = match sorat_agent::Agent::new(sorat_agent::AgentOptions {
            server: args.server.trim_end_matches('/').to_string(),
            token: args.token,
            name: name.clone(),
            labels: args.labels,
            capacity: args.capacity,
            data_dir: args.data,
            ca_cert: args.ca_cert,
        }) {
            Ok(agent) => agent,
            Err(error) => {
                eprintln!("error: {error}");
                return exit::FAILURE;
            }
        };
        let stopper = agent.stopper();
        let mut task = tokio::spawn(agent.run());
        eprintln!("agent `{name}` claiming jobs from {}", args.server);
        tokio::select! {
            result = &mut task => {
                return match result {
                    Ok(Err(error)) => { eprintln!("error: {error}"); exit::INVALID }
                    _ => exit::SUCCESS,
                };
            }
            () = wait_for_signal() => {}
        }
        stopper.stop_claiming();
        if tokio::time::timeout(args.grace, &mut task).await.is_err() {
            stopper.kill_jobs();
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
        exit::SUCCESS
    })
}

/// A client of the server's API.
pub(crate) struct Client {
    pub(crate) base: String,
    pub(crate) token: String,
    pub(crate) http: reqwest::Client,
}

/// An answer that is not a success: the message, and the exit code it means.
pub(crate) struct Failed(pub(crate) String, pub(crate) u8);

impl Client {
    pub(crate) fn new(args: &ClientArgs) -> Result<Client, Failed> {
        let token = match &args.token {
            Some(token) => token.clone(),
            None => std::fs::read_to_string(".sorat/admin-token")
                .map(|token| token.trim().to_string())
                .map_err(|_| {
                    Failed(
                        "no token: pass --token, set SORAT_TOKEN, or run where .sorat/admin-token is".into(),
                        exit::INVALID,
                    )
                })?,
        };
        Ok(Client {
            base: args.server.trim_end_matches('/').to_string(),
            token,
            http: http_client(args.ca_cert.as_deref())
                .map_err(|error| Failed(error, exit::INVALID))?,
        })
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, Failed> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| Failed(format!("{}: {error}", self.base), exit::FAILURE))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            if text.is_empty() {
                return Ok(serde_json::Value::Null);
            }
            return serde_json::from_str(&text).map_err(|error| {
                Failed(format!("the answer is not JSON: {error}"), exit::FAILURE)
            });
        }
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|value| {
                let error = value.get("error")?;
                let message = error.get("message")?.as_str()?.to_string();
                Some(match error.get("field").and_then(|f| f.as_str()) {
                    Some(field) => format!("{field}: {message}"),
                    None => message,
                })
            })
            .unwrap_or(text);
        let code = if status.is_client_error() {
            exit::INVALID
        } else {
            exit::FAILURE
        };
        Err(Failed(format!("HTTP {}: {message}", status.as_u16()), code))
    }
}

/// Runs a client command: a runtime, a client from `args`, `work` with it, and the exit
/// code (a `Failed` is printed).
pub(crate) fn with_client<F, Fut>(args: &ClientArgs, work: F) -> u8
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<u8, Failed>>,
{
    let Some(runtime) = runtime() else {
        return exit::FAILURE;
    };
    finish(runtime.block_on(async move {
        let client = Client::new(args)?;
        work(client).await
    }))
}

pub(crate) fn finish(result: Result<u8, Failed>) -> u8 {
    match result {
        Ok(code) => code,
        Err(Failed(message, code)) => {
            eprintln!("error: {message}");
            code
        }
    }
}

/// `sorat trigger`.
pub(crate) fn trigger(args: TriggerArgs) -> u8 {
    let Some(runtime) = runtime() else {
        return exit::FAILURE;
    };
    finish(runtime.block_on(async move {
        let client = Client::new(&args.client)?;
        let mut inputs = serde_json::Map::new();
        for input in &args.inputs {
            let Some((name, value)) = input.split_once('=') else {
                return Err(Failed(
                    format!("--input `{input}` must be `name=value`"),
                    exit::INVALID,
                ));
            };
            inputs.insert(
                name.to_string(),
                serde_json::Value::String(value.to_string()),
            );
        }
        let mut body = serde_json::json!({ "inputs": inputs });
        if let Some(git_ref) = &args.git_ref {
            body["ref"] = serde_json::Value::String(git_ref.clone());
        }
        let run = client
            .send(
                reqwest::Method::POST,
                &format!("/api/v1/projects/{}/runs", args.project),
                Some(body),
            )
            .await?;
        let id = run
            .get("id")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        let number = run
            .get("number")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        let status = run
            .get("status")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        println!("run {id} (#{number} of {}) {status}", args.project);
        if args.follow {
            return follow_run(&client, id, None).await;
        }
        Ok(exit::SUCCESS)
    }))
}

/// `sorat logs follow`.
pub(crate) fn logs_follow(args: LogsFollowArgs) -> u8 {
    let Some(runtime) = runtime() else {
        return exit::FAILURE;
    };
    finish(runtime.block_on(async move {
        let client = Client::new(&args.client)?;
        follow_run(&client, args.run, args.job.as_deref()).await
    }))
}

/// Prints each job's log as it comes (job by job, each line prefixed with its job when
/// there are several), then the run's end; exit 0 when it succeeded, 1 otherwise.
async fn follow_run(client: &Client, run: i64, only: Option<&str>) -> Result<u8, Failed> {
    let value = client
        .send(reqwest::Method::GET, &format!("/api/v1/runs/{run}"), None)
        .await?;
    let jobs: Vec<String> = value
        .get("jobs")
        .and_then(serde_json::Value::as_array)
        .map(|jobs| {
            jobs.iter()
                .filter_map(|job| job.get("key").and_then(|k| k.as_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let jobs: Vec<String> = match only {
        Some(job) => {
            if !jobs.iter().any(|known| known == job) {
                return Err(Failed(
                    format!(
                        "run {run} has no job `{job}`; its jobs: {}",
                        jobs.join(", ")
                    ),
                    exit::INVALID,
                ));
            }
            vec![job.to_string()]
        }
        None => jobs,
    };
    let prefix = jobs.len() > 1;
    let mut stdout = std::io::stdout();
    for job in &jobs {
        let response = client
            .http
            .get(format!(
                "{}/api/v1/runs/{run}/jobs/{job}/logs?follow=true",
                client.base
            ))
            .bearer_auth(&client.token)
            .send()
            .await
            .map_err(|error| Failed(error.to_string(), exit::FAILURE))?;
        if !response.status().is_success() {
            return Err(Failed(
                format!("HTTP {} following job `{job}`", response.status().as_u16()),
                exit::FAILURE,
            ));
        }
        let mut stream = response.bytes_stream();
        let mut buffer: Vec<u8> = Vec::new();
        let mut event = String::new();
        let mut data: Vec<String> = Vec::new();
        'stream: while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| Failed(error.to_string(), exit::FAILURE))?;
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    match event.as_str() {
                        "end" => {
                            let status = data.join("\n");
                            let _ = writeln!(stdout, "job `{job}` ended: {status}");
                            break 'stream;
                        }
                        "attempt" => {
                            let _ = writeln!(
                                stdout,
                                "job `{job}`: attempt {} starts (its agent was lost)",
                                data.join("")
                            );
                        }
                        "" => {
                            for text in data.iter().flat_map(|d| d.split('\n')) {
                                if prefix {
                                    let _ = writeln!(stdout, "[{job}] {text}");
                                } else {
                                    let _ = writeln!(stdout, "{text}");
                                }
                            }
                        }
                        _ => {}
                    }
                    event.clear();
                    data.clear();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value).to_string());
                } else if let Some(value) = line.strip_prefix("event:") {
                    event = value.trim().to_string();
                }
            }
        }
        let _ = stdout.flush();
    }
    // The run's end (jobs may end before the run is concluded: wait a little for it).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = client
            .send(reqwest::Method::GET, &format!("/api/v1/runs/{run}"), None)
            .await?;
        let status = value
            .get("status")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string();
        if matches!(status.as_str(), "success" | "failure" | "cancelled")
            || Instant::now() > deadline
        {
            println!("run {run}: {status}");
            return Ok(if status == "success" {
                exit::SUCCESS
            } else {
                exit::FAILURE
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `sorat token create`.
pub(crate) fn token_create(args: TokenCreateArgs) -> u8 {
    let Some(runtime) = runtime() else {
        return exit::FAILURE;
    };
    finish(runtime.block_on(async move {
        let client = Client::new(&args.client)?;
        let mut body = serde_json::json!({
            "name": args.name,
            "agent": args.agent,
            "project": args.project,
            "expires_in_days": args.expires_in_days,
        });
        if !args.agent {
            body["role"] = serde_json::Value::String(args.role.clone());
        }
        let created = client
            .send(reqwest::Method::POST, "/api/v1/tokens", Some(body))
            .await?;
        let token = created
            .get("token")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        println!("{token}");
        if std::io::stderr().is_terminal() {
            eprintln!("(shown once: Sorat keeps only its hash)");
        }
        Ok(exit::SUCCESS)
    }))
}

/// `sorat secret set`.
pub(crate) fn secret_set(args: SecretSetArgs) -> u8 {
    let value = match args.value.clone() {
        Some(value) => value,
        None => {
            let mut text = String::new();
            if let Err(error) = std::io::stdin().read_to_string(&mut text) {
                eprintln!("error: reading the value from standard input: {error}");
                return exit::INVALID;
            }
            text.strip_suffix('\n').unwrap_or(&text).to_string()
        }
    };
    let Some(runtime) = runtime() else {
        return exit::FAILURE;
    };
    finish(runtime.block_on(async move {
        let client = Client::new(&args.client)?;
        let encode = |text: &str| -> String {
            text.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        };
        let query = args
            .project
            .as_ref()
            .map(|project| format!("?project={}", encode(project)))
            .unwrap_or_default();
        client
            .send(
                reqwest::Method::PUT,
                &format!("/api/v1/secrets/{}{query}", encode(&args.name)),
                Some(serde_json::json!({ "value": value })),
            )
            .await?;
        eprintln!("secret `{}` set", args.name);
        Ok(exit::SUCCESS)
    }))
}
