//! Sorat's server: the HTTP API, authentication, forge webhooks, polling and schedules, the
//! dispatcher that hands jobs to agents, live logs and the server's own metrics.
//!
//! It owns: routing (`/api/v1/...`, `/hooks/{project}`, `/healthz`, `/readyz`, `/metrics`),
//! who may do what (tokens, roles per project), the audit of every change, turning triggers
//! into runs (reading the pipeline at the commit), and the life of runs and jobs after that
//! (see [`dispatch`]). State lives in `sorat-state`; this crate keeps no state of its own that
//! a restart could lose, except which agents were heard from lately.
//!
//! It must not know: how a job runs (that is the agent's, through [`sorat_agent::protocol`]),
//! how the store keeps rows, or the terminal (the library never prints).

pub mod agents;
pub mod api;
pub mod artifacts;
pub mod auth;
pub mod deploys;
pub mod dispatch;
pub mod error;
pub mod hooks;
pub mod hostops;
pub mod logs;
pub mod metrics;
pub mod repo;
pub mod status;
pub mod triggers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use indexmap::IndexMap;
use sorat_agent::mirror::Mirrors;
use sorat_agent::protocol::ClaimRequest;
use sorat_config::platform::{PlatformConfig, ProjectConfig};
use sorat_state::{AgentInfo, NewAudit, NewProject, SecretKey, Store};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::auth::Caller;
use crate::error::ApiError;

/// Milliseconds since the Unix epoch, now.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// An agent heard from lately (kept in memory: after a restart, agents are known again at
/// their next claim or heartbeat).
#[derive(Clone, Debug)]
pub struct OnlineAgent {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: Vec<String>,
    /// Jobs at once.
    pub capacity: u32,
    /// Jobs it said it runs.
    pub running: u32,
    /// When it was last heard from.
    pub last_seen: Instant,
    stored: Instant,
}

/// What every handler shares.
pub struct AppState {
    /// The state store.
    pub store: Store,
    /// The configuration.
    pub config: PlatformConfig,
    /// The projects by name.
    pub projects: IndexMap<String, ProjectConfig>,
    /// Mirrors of the projects' repositories (to read pipelines at a commit).
    pub mirrors: Mirrors,
    /// Woken when a job becomes claimable.
    pub claims: Notify,
    /// A job's id whenever something about it changed (logs, steps, status).
    pub job_events: broadcast::Sender<i64>,
    /// Set when the server shuts down: no more claims are granted.
    pub shutting_down: CancellationToken,
    /// Sorat's own metrics.
    pub metrics: metrics::Metrics,
    /// For commit statuses.
    pub http: reqwest::Client,
    /// The artifact repository.
    pub artifacts: sorat_artifacts::ArtifactStore,
    /// The environments, by name.
    pub environments: IndexMap<String, Arc<deploys::EnvironmentState>>,
    /// Operations on `agent` targets' hosts, waiting for their agents.
    pub host_ops: Arc<hostops::AgentOps>,
    agents: Mutex<HashMap<String, OnlineAgent>>,
}

impl AppState {
    /// Wakes agents waiting for work.
    pub fn wake_claims(&self) {
        self.claims.notify_waiters();
    }

    /// Tells log followers that a job changed.
    pub fn notify_job(&self, job_id: i64) {
        let _ = self.job_events.send(job_id);
    }

    /// Tells listeners that a run changed (sent as the negated id on the job channel).
    pub fn notify_run(&self, run_id: i64) {
        let _ = self.job_events.send(-run_id);
    }

    /// Agents heard from within twice the lease.
    pub fn online_agents(&self) -> Vec<OnlineAgent> {
        let lease = self.config.server.lease;
        self.agents
            .lock()
            .map(|agents| {
                agents
                    .values()
                    .filter(|agent| agent.is_online(lease))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An agent asked for work.
    pub async fn agent_seen(&self, request: &ClaimRequest) -> Result<(), ApiError> {
        let store = {
            let Ok(mut agents) = self.agents.lock() else {
                return Ok(());
            };
            let now = Instant::now();
            let entry = agents
                .entry(request.name.clone())
                .or_insert_with(|| OnlineAgent {
                    name: request.name.clone(),
                    labels: request.labels.clone(),
                    capacity: request.capacity,
                    running: request.running,
                    last_seen: now,
                    stored: now - Duration::from_secs(3600),
                });
            let changed = entry.labels != request.labels || entry.capacity != request.capacity;
            entry.labels = request.labels.clone();
            entry.capacity = request.capacity;
            entry.running = request.running;
            entry.last_seen = now;
            let due = changed || entry.stored.elapsed() > Duration::from_secs(30);
            if due {
                entry.stored = now;
            }
            due
        };
        if store {
            self.store
                .upsert_agent(&AgentInfo {
                    name: request.name.clone(),
                    labels: request.labels.clone(),
                    capacity: i64::from(request.capacity),
                    version: request.version.clone(),
                    last_seen: now(),
                })
                .await?;
        }
        Ok(())
    }

    /// An agent sent a heartbeat.
    pub fn agent_alive(&self, name: &str) {
        if let Ok(mut agents) = self.agents.lock()
            && let Some(agent) = agents.get_mut(name)
        {
            agent.last_seen = Instant::now();
        }
    }
}

/// How to start a server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The configuration (`sorat.yaml`, already validated).
    pub config: PlatformConfig,
    /// `SORAT_ADMIN_TOKEN`, when set.
    pub admin_token: Option<String>,
    /// `SORAT_SECRET_KEY` (base64), when set; else the key file in the data folder.
    pub secret_key: Option<String>,
}

/// A failure to start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The state store could not be opened.
    #[error("state store: {0}")]
    State(#[from] sorat_state::StateError),
    /// The address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The data folder could not be made.
    #[error("data folder {path}: {source}")]
    Data {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Setting up failed.
    #[error("{0}")]
    Setup(String),
}

/// A started server.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its base URL.
    pub url: String,
    /// The URL the local agent uses (plain HTTP on loopback; the same as `url` without TLS).
    pub internal_url: String,
    /// The admin token made on the first start (to show once), if one was.
    pub first_admin_token: Option<String>,
    /// A fresh token for the local agent.
    pub local_agent_token: String,
    state: Arc<AppState>,
    handle: axum_server::Handle,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    background: tokio::task::JoinHandle<()>,
}

impl Running {
    /// No more jobs are handed out (agents' claims get "nothing").
    pub fn stop_claims(&self) {
        self.state.shutting_down.cancel();
        self.state.wake_claims();
    }

    /// Jobs running on any agent now.
    pub async fn running_jobs(&self) -> usize {
        let Ok(runs) = self.state.store.active_runs().await else {
            return 0;
        };
        let mut count = 0;
        for run in runs {
            if let Ok(jobs) = self.state.store.jobs(run.id).await {
                count += jobs
                    .iter()
                    .filter(|job| job.status == sorat_state::JobStatus::Running)
                    .count();
            }
        }
        count
    }

    /// Stops serving and closes the store.
    pub async fn shutdown(self) {
        self.stop_claims();
        self.background.abort();
        self.handle.graceful_shutdown(Some(Duration::from_secs(5)));
        let _ = self.http.await;
        deploys::stop_services(&self.state).await;
        self.state.store.close().await;
    }
}

/// Opens the store, registers the projects, binds the address and starts serving.
pub async fn start(options: ServerOptions) -> Result<Running, ServerError> {
    let config = options.config;
    // The address and the certificate first: a start that fails on them changes nothing
    // (no admin token is made that nobody was shown).
    let listener =
        std::net::TcpListener::bind(config.server.listen).map_err(|source| ServerError::Bind {
            address: config.server.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        address: config.server.listen,
        source,
    })?;
    let tls = match &config.server.tls {
        Some(tls) => {
            // One crypto provider for the process (ring); a second call finds it set.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let loaded = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .map_err(|error| {
                    ServerError::Setup(format!(
                        "TLS: {} / {}: {error}",
                        tls.cert.display(),
                        tls.key.display()
                    ))
                })?;
            Some(loaded)
        }
        None => None,
    };
    let data = config.server.data.clone();
    std::fs::create_dir_all(&data).map_err(|source| ServerError::Data {
        path: data.clone(),
        source,
    })?;
    let key = match &options.secret_key {
        Some(text) => SecretKey::from_base64(text)?,
        None => SecretKey::load_or_create(&data.join("secret.key"))?,
    };
    let database = if config.server.database == "sqlite" {
        format!("sqlite://{}", data.join("state.db").display())
    } else {
        config.server.database.clone()
    };
    let store = Store::open(&database, key).await?;
    let mut projects = IndexMap::new();
    for project in &config.projects {
        store
            .upsert_project(&NewProject {
                name: project.name.clone(),
                repo: project.repo.clone(),
                pipeline_path: project.pipeline.clone(),
                settings: serde_json::json!({ "dir": project.dir, "branch": project.branch }),
            })
            .await?;
        projects.insert(project.name.clone(), project.clone());
    }
    let first_admin_token = auth::bootstrap_admin(&store, &data, options.admin_token.as_deref())
        .await
        .map_err(|error| ServerError::Setup(error.message))?;
    let local_agent_token = auth::local_agent_token(&store)
        .await
        .map_err(|error| ServerError::Setup(error.message))?;
    let storage = match &config.server.artifacts {
        Some(url) if url.contains("://") => {
            sorat_artifacts::StorageConfig::ObjectStore { url: url.clone() }
        }
        Some(folder) => sorat_artifacts::StorageConfig::Local(PathBuf::from(folder)),
        None => sorat_artifacts::StorageConfig::Local(data.join("artifacts")),
    };
    let artifacts = sorat_artifacts::ArtifactStore::open(storage, &data.join("artifacts.key"))
        .await
        .map_err(|error| ServerError::Setup(format!("artifact repository: {error}")))?;
    let (job_events, _) = broadcast::channel(1024);
    let host_ops = Arc::new(hostops::AgentOps::default());
    let state = Arc::new(AppState {
        store: store.clone(),
        mirrors: Mirrors::new(data.join("mirrors")),
        projects,
        claims: Notify::new(),
        job_events,
        shutting_down: CancellationToken::new(),
        metrics: metrics::Metrics::new(),
        http: reqwest::Client::new(),
        artifacts,
        environments: config
            .environments
            .iter()
            .map(|environment| {
                (
                    environment.name.clone(),
                    Arc::new(deploys::EnvironmentState::new(
                        environment,
                        Arc::clone(&host_ops) as Arc<dyn sorat_deploy::agent::HostChannel>,
                        store.clone(),
                    )),
                )
            })
            .collect(),
        agents: Mutex::new(HashMap::new()),
        host_ops,
        config,
    });
    state.host_ops.attach(&state);
    let app = router(Arc::clone(&state));
    let handle = axum_server::Handle::new();
    if state.config.server.listen.port() == 0 {
        tracing::warn!(
            "listening on a port chosen by the system ({addr}); server.external_url ({}) does not name it",
            state.config.server.external_url
        );
    }
    let scheme = if state.config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let http = match tls {
        Some(config) => {
            let server = axum_server::from_tcp_rustls(listener, config).handle(handle.clone());
            tokio::spawn(
                server.serve(
                    app.clone()
                        .into_make_service_with_connect_info::<SocketAddr>(),
                ),
            )
        }
        None => {
            let server = axum_server::from_tcp(listener).handle(handle.clone());
            tokio::spawn(
                server.serve(
                    app.clone()
                        .into_make_service_with_connect_info::<SocketAddr>(),
                ),
            )
        }
    };
    // The local agent talks to the server over plain HTTP on a loopback port of its own:
    // it need not trust the server's certificate, which names the server's public host.
    let internal = if state.config.server.tls.is_some() {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| ServerError::Bind {
                address: SocketAddr::from(([127, 0, 0, 1], 0)),
                source,
            })?;
        let internal_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            source,
        })?;
        let server = axum_server::from_tcp(listener).handle(handle.clone());
        tokio::spawn(server.serve(app.into_make_service_with_connect_info::<SocketAddr>()));
        format!("http://{internal_addr}")
    } else {
        format!("http://{addr}")
    };
    deploys::start_services(&state).await;
    let background = tokio::spawn(background(Arc::clone(&state)));
    Ok(Running {
        addr,
        url: format!("{scheme}://{addr}"),
        internal_url: internal,
        first_admin_token,
        local_agent_token,
        state,
        handle,
        http,
        background,
    })
}

/// Periodic work: leases, queue reasons and timeouts, polling, schedules.
async fn background(state: Arc<AppState>) {
    if let Err(error) = dispatch::advance_all(&state).await {
        tracing::warn!(error = %error.message, "advancing runs after start");
    }
    // Polling and schedules run beside this loop until the server stops.
    let _triggers = tokio::spawn(triggers::run(Arc::clone(&state)));
    let mut ticks: u64 = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        ticks += 1;
        if let Err(error) = dispatch::tick(&state).await {
            tracing::warn!(error = %error.message, "dispatcher tick");
        }
        if ticks.is_multiple_of(20)
            && let Err(error) = dispatch::advance_all(&state).await
        {
            tracing::warn!(error = %error.message, "advancing runs");
        }
    }
}

fn router(state: Arc<AppState>) -> Router {
    let agent = Router::new()
        .route("/api/v1/agent/claim", post(agents::claim))
        .route("/api/v1/agent/jobs/{id}/heartbeat", post(agents::heartbeat))
        .route("/api/v1/agent/jobs/{id}/logs", post(agents::logs))
        .route("/api/v1/agent/jobs/{id}/steps", post(agents::steps))
        .route("/api/v1/agent/jobs/{id}/finish", post(agents::finish))
        .route("/api/v1/agent/ops", post(hostops::take))
        .route("/api/v1/agent/ops/{id}", post(hostops::answer))
        .route("/api/v1/agent/lines", post(hostops::lines));
    let mut authenticated = Router::new()
        .route("/api/v1/projects", get(api::projects))
        .route("/api/v1/projects/{name}", get(api::project))
        .route("/api/v1/projects/{name}/runs", post(api::trigger))
        .route("/api/v1/runs", get(api::runs))
        .route("/api/v1/runs/{id}", get(api::run))
        .route("/api/v1/runs/{id}/jobs", get(api::run_jobs))
        .route("/api/v1/runs/{id}/artifacts", get(api::run_artifacts))
        .route("/api/v1/runs/{id}/jobs/{job}/logs", get(logs::job_logs))
        .route("/api/v1/runs/{id}/cancel", post(api::cancel))
        .route("/api/v1/runs/{id}/rerun", post(api::rerun))
        .route("/api/v1/secrets", get(api::secrets))
        .route(
            "/api/v1/secrets/{name}",
            put(api::put_secret).delete(api::delete_secret),
        )
        .route("/api/v1/tokens", get(api::tokens).post(api::create_token))
        .route(
            "/api/v1/tokens/{id}",
            axum::routing::delete(api::revoke_token),
        )
        .route("/api/v1/agents", get(api::agents))
        .route(
            "/api/v1/artifacts",
            get(artifacts::list).post(artifacts::publish),
        )
        .route("/api/v1/artifacts/key", get(artifacts::key))
        .route("/api/v1/artifacts/gc", post(artifacts::gc))
        .route("/api/v1/artifacts/blobs/missing", post(artifacts::missing))
        .route("/api/v1/artifacts/{name}/{version}", get(artifacts::get))
        .route(
            "/api/v1/artifacts/{name}/{version}/files/{*path}",
            get(artifacts::file),
        )
        .route(
            "/api/v1/artifacts/{name}/{version}/verify",
            post(artifacts::verify),
        )
        .route(
            "/api/v1/artifacts/{name}/{version}/pin",
            put(artifacts::pin),
        )
        .route("/api/v1/environments", get(deploys::list))
        .route(
            "/api/v1/environments/{name}/releases",
            get(deploys::releases),
        )
        .route("/api/v1/environments/{name}/deploy", post(deploys::deploy))
        .route(
            "/api/v1/environments/{name}/deployments",
            get(deploys::deployments),
        )
        .route("/api/v1/environments/{name}/logs", get(deploys::logs))
        .route(
            "/api/v1/environments/{name}/progress",
            get(deploys::progress),
        )
        .route(
            "/api/v1/environments/{name}/promote",
            post(deploys::promote),
        )
        .route("/api/v1/environments/{name}/abort", post(deploys::abort))
        .route(
            "/api/v1/runs/{id}/jobs/{job}/approve",
            post(deploys::approve),
        )
        .route(
            "/api/v1/environments/{name}/rollback",
            post(deploys::rollback),
        )
        .route("/api/v1/audit", get(api::audit))
        .merge(agent);
    let mut public = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/hooks/{project}", post(hooks::receive));
    if state.config.server.public_metrics {
        public = public.route("/metrics", get(metrics::serve));
    } else {
        authenticated = authenticated.route("/metrics", get(metrics::serve));
    }
    let authenticated = authenticated.layer(middleware::from_fn_with_state(
        Arc::clone(&state),
        auth::require_token,
    ));
    // Blobs are as large as artifacts are: their upload has its own limit, not `max_body`.
    let blobs = Router::new()
        .route(
            "/api/v1/artifacts/blobs/{digest}",
            get(artifacts::get_blob).put(artifacts::put_blob),
        )
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_token,
        ))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BLOB));
    public
        .merge(authenticated)
        // Inside the JSON errors, so that a 413 answers in the API's error shape.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            state.config.server.max_body,
        ))
        // axum's own extractor limit (2 MiB) would otherwise win below `max_body`.
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.server.max_body,
        ))
        .merge(blobs)
        .layer(middleware::from_fn_with_state(Arc::clone(&state), audit))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            metrics::track,
        ))
        .with_state(state)
}

/// The largest blob an upload may carry (16 GiB).
const MAX_BLOB: usize = 16 << 30;

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.store.count_runs_by_status().await {
        Ok(_) if !state.shutting_down.is_cancelled() => "ready\n".into_response(),
        Ok(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("state store: {error}\n"),
        )
            .into_response(),
    }
}

/// Requests agents make many times a job: not changes a person made.
fn is_agent_chatter(path: &str) -> bool {
    path.starts_with("/api/v1/agent/jobs/")
        && (path.ends_with("/heartbeat") || path.ends_with("/logs") || path.ends_with("/steps"))
        || path == "/api/v1/agent/claim"
}

/// Middleware: every mutating request goes into the audit log (who, what, when, from
/// where, and how it ended), except agents' heartbeats, log chunks and claims.
async fn audit(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let mutating = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let path = request.uri().path().to_string();
    if !mutating || is_agent_chatter(&path) {
        return next.run(request).await;
    }
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip().to_string())
        .unwrap_or_default();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| path.clone(), |matched| matched.as_str().to_string());
    let response = next.run(request).await;
    let actor = response
        .extensions()
        .get::<Caller>()
        .map(|caller| caller.name.clone())
        .unwrap_or_else(|| {
            if path.starts_with("/hooks/") {
                "webhook".into()
            } else {
                "anonymous".into()
            }
        });
    let entry = NewAudit {
        at: now(),
        actor,
        action: format!("{method} {route}"),
        target: path,
        source,
        status: i64::from(response.status().as_u16()),
        details: serde_json::json!({}),
    };
    if let Err(error) = state.store.audit(&entry).await {
        tracing::error!(%error, "writing the audit log");
    }
    response
}

/// Middleware: errors that axum itself makes (an unknown route, a body that is not JSON,
/// one too large) answer in the API's JSON error shape too.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 64 << 10).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such endpoint".to_string()),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this endpoint does not take that method".to_string(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "too_large",
            "the request body is larger than server.max_body".to_string(),
        ),
        _ => ("invalid", text),
    };
    let mut error = ApiError::new(status, code, message).into_response();
    *error.extensions_mut() = parts.extensions;
    let _ = Body::empty();
    error
}
