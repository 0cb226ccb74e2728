//! `/metrics`: Sorat's own metrics in the Prometheus text format, with `prometheus-client`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sorat_state::{JobStatus, RunStatus};

use crate::AppState;
use crate::error::ApiError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    code: String,
}

/// The metrics the server keeps.
pub struct Metrics {
    registry: Registry,
    /// Runs created.
    pub runs_created: Counter,
    runs_finished: Family<StatusLabel, Counter>,
    jobs_finished: Family<StatusLabel, Counter>,
    runs: Family<StatusLabel, Gauge>,
    agents_online: Gauge,
    queue_wait: Histogram,
    step_duration: Histogram,
    http: Family<HttpLabels, Histogram>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sorat");
        let runs_created = Counter::default();
        registry.register("runs_created", "Runs created", runs_created.clone());
        let runs_finished = Family::<StatusLabel, Counter>::default();
        registry.register(
            "runs_finished",
            "Runs that ended, by status",
            runs_finished.clone(),
        );
        let jobs_finished = Family::<StatusLabel, Counter>::default();
        registry.register(
            "jobs_finished",
            "Jobs that agents finished, by status",
            jobs_finished.clone(),
        );
        let runs = Family::<StatusLabel, Gauge>::default();
        registry.register("runs", "Runs in the store, by status", runs.clone());
        let agents_online: Gauge = Gauge::default();
        registry.register(
            "agents_online",
            "Agents heard from within twice the lease",
            agents_online.clone(),
        );
        let queue_wait = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        registry.register(
            "queue_wait_seconds",
            "Time from a job being queued to an agent claiming it",
            queue_wait.clone(),
        );
        let step_duration = Histogram::new(exponential_buckets(0.01, 2.0, 20));
        registry.register(
            "step_duration_seconds",
            "Duration of steps reported by agents",
            step_duration.clone(),
        );
        let http = Family::<HttpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP requests by route, method and status code",
            http.clone(),
        );
        Metrics {
            registry,
            runs_created,
            runs_finished,
            jobs_finished,
            runs,
            agents_online,
            queue_wait,
            step_duration,
            http,
        }
    }

    /// A run ended.
    pub fn runs_finished(&self, status: RunStatus) {
        self.runs_finished
            .get_or_create(&StatusLabel {
                status: status.as_str().into(),
            })
            .inc();
    }

    /// A job ended.
    pub fn job_finished(&self, status: JobStatus) {
        self.jobs_finished
            .get_or_create(&StatusLabel {
                status: status.as_str().into(),
            })
            .inc();
    }

    /// A job waited `ms` in the queue.
    pub fn queue_wait(&self, ms: i64) {
        self.queue_wait.observe(ms.max(0) as f64 / 1000.0);
    }

    /// A step took `ms`.
    pub fn step_duration(&self, ms: i64) {
        self.step_duration.observe(ms.max(0) as f64 / 1000.0);
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// `GET /metrics`.
pub async fn serve(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    for (status, count) in state.store.count_runs_by_status().await? {
        state
            .metrics
            .runs
            .get_or_create(&StatusLabel {
                status: status.as_str().into(),
            })
            .set(count);
    }
    state
        .metrics
        .agents_online
        .set(state.online_agents().len() as i64);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &state.metrics.registry)
        .map_err(|error| ApiError::internal(error.to_string()))?;
    Ok((
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Middleware: times every request by its route (the pattern, not the path, so ids do not
/// make new series).
pub async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let response = next.run(request).await;
    state
        .metrics
        .http
        .get_or_create(&HttpLabels {
            method,
            route,
            code: response.status().as_u16().to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}
