//! Canary analysis: is the new release behaving, judged by metrics?
//!
//! The model is Argo Rollouts' `AnalysisTemplate`, so its users know it: an [`Analysis`] is a
//! list of [`Metric`]s, each a PromQL query measured `count` times, every `interval`, after
//! an `initial_delay`, with a success and/or failure condition and limits on how many failed,
//! inconclusive and consecutive erroring measurements it tolerates. The metrics are measured
//! concurrently; the analysis ends with the worst outcome ([`AnalysisOutcome`]) and stops as
//! soon as one metric has ended badly. Every measurement is kept in the [`AnalysisReport`],
//! which serializes to JSON for the release record, and can be watched live through
//! [`AnalysisEvent`]s.
//!
//! Queries go through the [`MetricsSource`] trait: [`PrometheusSource`] asks any server that
//! speaks the Prometheus HTTP API (`GET /api/v1/query`); Sorat's own metrics engine will be
//! another source. Conditions are Sorat expressions (`sorat-expr`) reading `result` (the
//! query's value: a number for a scalar, an array of numbers for a vector, as in Argo's
//! `result[0] < 0.05`) and `results` (the samples with their labels).
//!
//! As in Argo: with both conditions, a true failure condition wins over a true success
//! condition, and neither true is inconclusive; with one condition, the other is its negation.
//! Errors do not count towards `count`. A metric ending failed, erroring or inconclusive stops
//! the whole analysis.
//!
//! Where this differs from Argo, on purpose:
//! - A query that returns no data (an empty vector or matrix, or a NaN anywhere in it) is a
//!   *failed* measurement, never an evaluated one: a condition like `result[0] > 0.05` must
//!   not pass because there is nothing to compare (Argo reports an evaluation error for an
//!   empty result and evaluates NaN, which compares false).
//! - A metric needs a success or a failure condition ([`Analysis::new`] says so), where Argo
//!   would count every measurement as successful.
//! - A condition must evaluate to a boolean; anything else is an error measurement.
//! - After an error the next measurement waits the metric's `interval` (Argo waits 10 s).
//! - A metric the analysis stopped before it ended has no outcome in the report (Argo calls
//!   it successful).
//!
//! Nothing here prints; it logs with `tracing` and returns reports.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sorat_expr::{Context, Expr, NameSet, NoHost, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// Metrics sources
// ---------------------------------------------------------------------------------------------

/// What an instant query returned, in the shapes of the Prometheus HTTP API.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryResult {
    /// A single number (`scalar(...)`, `1 + 1`).
    Scalar(f64),
    /// One sample per series, in the order the source returned them.
    Vector(Vec<Sample>),
    /// Several points per series (a range selector such as `x[5m]` queried as an instant).
    Matrix(Vec<Series>),
    /// A string literal.
    String(String),
}

/// One series' value in an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The series' labels (`__name__` included when the source returns it).
    pub labels: BTreeMap<String, String>,
    /// The value; NaN and the infinities included.
    pub value: f64,
}

/// One series' points in a range vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The series' labels.
    pub labels: BTreeMap<String, String>,
    /// The points, oldest first.
    pub points: Vec<Point>,
}

/// One point of a [`Series`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// When, in seconds since the Unix epoch (as Prometheus writes it).
    pub timestamp: f64,
    /// The value.
    pub value: f64,
}

/// Why a query did not return a result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The source's address cannot be used.
    #[error("invalid metrics source address {url:?}: {message}")]
    InvalidAddress {
        /// The address as given.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// The request did not get an answer (connection refused, timeout, TLS).
    #[error("query to {url} failed: {message}")]
    Transport {
        /// The query endpoint.
        url: String,
        /// What went wrong, with its causes.
        message: String,
    },
    /// The source refused the query (Prometheus' `"status":"error"`).
    #[error("the query was rejected ({error_type}): {message}")]
    Rejected {
        /// Prometheus' `errorType` (`bad_data`, `execution`, `timeout`, ...).
        error_type: String,
        /// Prometheus' `error`.
        message: String,
    },
    /// The source answered with an HTTP error status and no API error in the body.
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        /// The query endpoint.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The beginning of the body.
        body: String,
    },
    /// The answer is not a result this API can hold (bad JSON, unknown result type).
    #[error("unreadable answer from {url}: {message}")]
    BadResponse {
        /// The query endpoint.
        url: String,
        /// What could not be read.
        message: String,
    },
}

/// The future a [`MetricsSource`] returns.
pub type QueryFuture<'a> = BoxFuture<'a, Result<QueryResult, SourceError>>;

/// Where metrics come from: anything that answers PromQL instant queries at the current time.
///
/// Object-safe, so an analysis can hold an `Arc<dyn MetricsSource>`. A source owns its own
/// timeouts: the analysis waits for every query it starts.
pub trait MetricsSource: Send + Sync {
    /// Evaluates `promql` at the current time.
    fn query<'a>(&'a self, promql: &'a str) -> QueryFuture<'a>;
}

/// A [`MetricsSource`] speaking the Prometheus HTTP API: `GET {base}/api/v1/query?query=...`.
///
/// Works with Prometheus and anything compatible with its query API (Thanos, Mimir,
/// VictoriaMetrics, ...); `base` may carry a path prefix (`https://host/prometheus`).
#[derive(Clone)]
pub struct PrometheusSource {
    base_url: String,
    query_url: reqwest::Url,
    timeout: Duration,
    bearer_token: Option<String>,
    client: reqwest::Client,
}

impl fmt::Debug for PrometheusSource {
    // The token stays out of logs and panics.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PrometheusSource")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// How long a query may take when [`PrometheusSource::with_timeout`] does not say.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of an unexpected body an error message quotes.
const QUOTED_BODY_CHARS: usize = 300;

impl PrometheusSource {
    /// A source for the server at `base_url` (`http://127.0.0.1:9090`), with
    /// [`DEFAULT_QUERY_TIMEOUT`] and no credentials.
    pub fn new(base_url: &str) -> Result<PrometheusSource, SourceError> {
        let invalid = |message: String| SourceError::InvalidAddress {
            url: base_url.to_owned(),
            message,
        };
        let base = reqwest::Url::parse(base_url).map_err(|error| invalid(error.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "the scheme must be http or https, not {:?}",
                base.scheme()
            )));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("an address has no query or fragment".to_owned()));
        }
        let query_url = reqwest::Url::parse(&format!(
            "{}/api/v1/query",
            base.as_str().trim_end_matches('/')
        ))
        .map_err(|error| invalid(error.to_string()))?;
        // A proxy from the environment is for the outside world; a server on this machine is
        // reached directly (as the health checks do).
        let mut builder = reqwest::Client::builder();
        if is_loopback(&base) {
            builder = builder.no_proxy();
        }
        let client = builder
            .build()
            .map_err(|error| invalid(format!("cannot build an HTTP client: {error}")))?;
        Ok(PrometheusSource {
            base_url: base_url.to_owned(),
            query_url,
            timeout: DEFAULT_QUERY_TIMEOUT,
            bearer_token: None,
            client,
        })
    }

    /// The same source with another limit on each query (the whole request and answer).
    pub fn with_timeout(mut self, timeout: Duration) -> PrometheusSource {
        self.timeout = timeout;
        self
    }

    /// The same source sending `Authorization: Bearer <token>`.
    pub fn with_bearer_token(mut self, token: impl Into<String>) -> PrometheusSource {
        self.bearer_token = Some(token.into());
        self
    }

    /// The address as given to [`PrometheusSource::new`].
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The limit on each query.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn query_now(&self, promql: &str) -> Result<QueryResult, SourceError> {
        let url_text = self.query_url.as_str();
        let transport = |error: reqwest::Error| SourceError::Transport {
            url: url_text.to_owned(),
            message: if error.is_timeout() {
                format!("no answer within {:?}", self.timeout)
            } else {
                error_chain(&error)
            },
        };
        let mut request = self
            .client
            .get(self.query_url.clone())
            .query(&[("query", promql)])
            .timeout(self.timeout);
        if let Some(token) = &self.bearer_token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(transport)?;
        let (result, warnings) = parse_query_response(url_text, status, &body)?;
        for warning in warnings {
            tracing::warn!(
                url = url_text,
                query = promql,
                "the metrics source warns: {warning}"
            );
        }
        Ok(result)
    }
}

impl MetricsSource for PrometheusSource {
    fn query<'a>(&'a self, promql: &'a str) -> QueryFuture<'a> {
        Box::pin(self.query_now(promql))
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// The text of an error and all its causes, joined by `: `.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // reqwest and hyper often repeat the cause in the error's own text.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The body of a Prometheus API answer (both its success and its error form).
#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    data: Option<serde_json::Value>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct ApiSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: Option<(f64, String)>,
    histogram: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ApiSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
    histograms: Option<serde_json::Value>,
}

/// Reads an answer of `GET /api/v1/query`: the result and the source's warnings, or why
/// there is none.
fn parse_query_response(
    url: &str,
    status: u16,
    body: &str,
) -> Result<(QueryResult, Vec<String>), SourceError> {
    let bad = |message: String| SourceError::BadResponse {
        url: url.to_owned(),
        message,
    };
    let parsed: Result<ApiResponse, _> = serde_json::from_str(body);
    let response = match parsed {
        // Prometheus answers a refused query with 400, 422 or 503 and an error body; its
        // errorType and error say more than the status.
        Ok(response) if response.status == "error" => {
            return Err(SourceError::Rejected {
                error_type: response.error_type.unwrap_or_else(|| "unknown".to_owned()),
                message: response
                    .error
                    .unwrap_or_else(|| "(no error message)".to_owned()),
            });
        }
        _ if !(200..300).contains(&status) => {
            return Err(SourceError::Status {
                url: url.to_owned(),
                status,
                body: quote_body(body),
            });
        }
        Ok(response) => response,
        Err(error) => {
            return Err(bad(format!(
                "not JSON of the query API ({error}): {}",
                quote_body(body)
            )));
        }
    };
    if response.status != "success" {
        return Err(bad(format!("unknown status {:?}", response.status)));
    }
    let data: ApiData = response
        .data
        .ok_or_else(|| bad("a successful answer without `data`".to_owned()))
        .and_then(|data| {
            serde_json::from_value(data).map_err(|error| bad(format!("`data`: {error}")))
        })?;
    let result = match data.result_type.as_str() {
        "scalar" | "string" => {
            let (_timestamp, text): (f64, String) = serde_json::from_value(data.result)
                .map_err(|error| bad(format!("a {} result: {error}", data.result_type)))?;
            if data.result_type == "scalar" {
                QueryResult::Scalar(parse_sample_value(&text).map_err(bad)?)
            } else {
                QueryResult::String(text)
            }
        }
        "vector" => {
            let samples: Vec<ApiSample> = serde_json::from_value(data.result)
                .map_err(|error| bad(format!("a vector result: {error}")))?;
            let mut vector = Vec::with_capacity(samples.len());
            for sample in samples {
                let Some((_timestamp, text)) = sample.value else {
                    return Err(bad(if sample.histogram.is_some() {
                        "native histogram samples cannot be judged by a condition".to_owned()
                    } else {
                        "a sample without a value".to_owned()
                    }));
                };
                vector.push(Sample {
                    labels: sample.metric,
                    value: parse_sample_value(&text).map_err(bad)?,
                });
            }
            QueryResult::Vector(vector)
        }
        "matrix" => {
            let series_list: Vec<ApiSeries> = serde_json::from_value(data.result)
                .map_err(|error| bad(format!("a matrix result: {error}")))?;
            let mut matrix = Vec::with_capacity(series_list.len());
            for series in series_list {
                if series.values.is_empty() && series.histograms.is_some() {
                    return Err(bad(
                        "native histogram series cannot be judged by a condition".to_owned(),
                    ));
                }
                let mut points = Vec::with_capacity(series.values.len());
                for (timestamp, text) in series.values {
                    points.push(Point {
                        timestamp,
                        value: parse_sample_value(&text).map_err(bad)?,
                    });
                }
                matrix.push(Series {
                    labels: series.metric,
                    points,
                });
            }
            QueryResult::Matrix(matrix)
        }
        other => return Err(bad(format!("unknown result type {other:?}"))),
    };
    Ok((result, response.warnings))
}

/// A sample value as the API writes it: a decimal string, or `NaN`, `+Inf`, `-Inf`.
fn parse_sample_value(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text
            .parse::<f64>()
            .map_err(|_| format!("the sample value {text:?} is not a number")),
    }
}

fn quote_body(body: &str) -> String {
    let mut quoted: String = body.trim().chars().take(QUOTED_BODY_CHARS).collect();
    if body.trim().chars().count() > QUOTED_BODY_CHARS {
        quoted.push('…');
    }
    quoted
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// One metric of an analysis, as configured: Argo Rollouts' metric with a PromQL query.
///
/// Conditions are Sorat expressions reading `result` and `results` (see the module
/// documentation). [`Metric::new`] gives Argo's defaults; the `with_*` methods change one
/// field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metric {
    /// The metric's name, unique in its analysis.
    pub name: String,
    /// The PromQL instant query.
    pub query: String,
    /// The wait after one measurement ends before the next starts.
    pub interval: Duration,
    /// How many measurements (not counting errors) end the metric successfully.
    pub count: u32,
    /// The wait before the first measurement.
    pub initial_delay: Duration,
    /// True when a measurement is good.
    pub success_condition: Option<String>,
    /// True when a measurement is bad.
    pub failure_condition: Option<String>,
    /// How many failed measurements are tolerated; one more fails the metric.
    pub failure_limit: u32,
    /// How many inconclusive measurements are tolerated; one more makes the metric
    /// inconclusive.
    pub inconclusive_limit: u32,
    /// How many erroring measurements in a row are tolerated; one more fails the metric.
    pub consecutive_error_limit: u32,
}

/// Argo's default for [`Metric::consecutive_error_limit`].
pub const DEFAULT_CONSECUTIVE_ERROR_LIMIT: u32 = 4;

impl Metric {
    /// A metric with Argo's defaults: measured once (`count` 1; `interval` 60 s for when the
    /// count is raised), without initial delay, `failure_limit` and `inconclusive_limit` 0,
    /// `consecutive_error_limit` 4, and no condition yet (it needs one).
    pub fn new(name: impl Into<String>, query: impl Into<String>) -> Metric {
        Metric {
            name: name.into(),
            query: query.into(),
            interval: Duration::from_secs(60),
            count: 1,
            initial_delay: Duration::ZERO,
            success_condition: None,
            failure_condition: None,
            failure_limit: 0,
            inconclusive_limit: 0,
            consecutive_error_limit: DEFAULT_CONSECUTIVE_ERROR_LIMIT,
        }
    }

    /// With this success condition.
    pub fn with_success_condition(mut self, condition: impl Into<String>) -> Metric {
        self.success_condition = Some(condition.into());
        self
    }

    /// With this failure condition.
    pub fn with_failure_condition(mut self, condition: impl Into<String>) -> Metric {
        self.failure_condition = Some(condition.into());
        self
    }

    /// With this interval between measurements.
    pub fn with_interval(mut self, interval: Duration) -> Metric {
        self.interval = interval;
        self
    }

    /// With this number of measurements.
    pub fn with_count(mut self, count: u32) -> Metric {
        self.count = count;
        self
    }

    /// With this wait before the first measurement.
    pub fn with_initial_delay(mut self, initial_delay: Duration) -> Metric {
        self.initial_delay = initial_delay;
        self
    }

    /// With this many failed measurements tolerated.
    pub fn with_failure_limit(mut self, limit: u32) -> Metric {
        self.failure_limit = limit;
        self
    }

    /// With this many inconclusive measurements tolerated.
    pub fn with_inconclusive_limit(mut self, limit: u32) -> Metric {
        self.inconclusive_limit = limit;
        self
    }

    /// With this many erroring measurements in a row tolerated.
    pub fn with_consecutive_error_limit(mut self, limit: u32) -> Metric {
        self.consecutive_error_limit = limit;
        self
    }
}

/// One thing wrong with an analysis' configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("metric {metric:?}: {field}: {message}")]
pub struct ConfigError {
    /// The metric's name (`#<n>`, counted from 1, for a metric without one).
    pub metric: String,
    /// The field, as [`Metric`] names it (`query`, `success_condition`, ...).
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// Everything wrong with an analysis' configuration, found at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_errors(.errors))]
pub struct InvalidAnalysis {
    /// The errors, in the order of the metrics and their fields.
    pub errors: Vec<ConfigError>,
}

fn display_errors(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The names a condition may read.
fn condition_names() -> NameSet {
    NameSet::new().with_named_values(["result", "results"])
}

/// A metric with its conditions parsed.
#[derive(Clone, Debug)]
struct CheckedMetric {
    spec: Metric,
    success: Option<Expr>,
    failure: Option<Expr>,
}

/// A validated analysis, ready to [`run`](Analysis::run) any number of times.
#[derive(Clone, Debug)]
pub struct Analysis {
    metrics: Vec<CheckedMetric>,
}

impl Analysis {
    /// Checks `metrics` and parses their queries and conditions, so that a bad configuration
    /// fails before a deploy starts. Every error is reported, each naming its metric and
    /// field: no metrics, a name missing or repeated, a query PromQL rejects, a condition the
    /// expression language rejects, no condition at all, a `count` of 0, or no `interval`
    /// between several measurements.
    pub fn new(metrics: Vec<Metric>) -> Result<Analysis, InvalidAnalysis> {
        let mut errors = Vec::new();
        if metrics.is_empty() {
            errors.push(ConfigError {
                metric: String::new(),
                field: "metrics",
                message: "an analysis needs at least one metric".to_owned(),
            });
        }
        let names = condition_names();
        let mut seen = HashSet::new();
        let mut checked = Vec::with_capacity(metrics.len());
        for (index, spec) in metrics.into_iter().enumerate() {
            let label = if spec.name.trim().is_empty() {
                format!("#{}", index + 1)
            } else {
                spec.name.clone()
            };
            let mut error = |field: &'static str, message: String| {
                errors.push(ConfigError {
                    metric: label.clone(),
                    field,
                    message,
                });
            };
            if spec.name.trim().is_empty() {
                error("name", "a metric needs a name".to_owned());
            } else if !seen.insert(spec.name.clone()) {
                error("name", "another metric has the same name".to_owned());
            }
            if spec.query.trim().is_empty() {
                error("query", "the query is empty".to_owned());
            } else if let Err(message) = promql_parser::parser::parse(&spec.query) {
                error("query", format!("not valid PromQL: {}", message.trim()));
            }
            let mut parse_condition = |field: &'static str, text: &Option<String>| match text {
                None => None,
                Some(text) if text.trim().is_empty() => {
                    error(field, "the condition is empty".to_owned());
                    None
                }
                Some(text) => match sorat_expr::parse(text, &names) {
                    Ok(expr) => Some(expr),
                    Err(parse_error) => {
                        error(field, parse_error.to_string());
                        None
                    }
                },
            };
            let success = parse_condition("success_condition", &spec.success_condition);
            let failure = parse_condition("failure_condition", &spec.failure_condition);
            if spec.success_condition.is_none() && spec.failure_condition.is_none() {
                error(
                    "success_condition",
                    "a metric needs a success condition, a failure condition or both".to_owned(),
                );
            }
            if spec.count == 0 {
                error("count", "a metric is measured at least once".to_owned());
            } else if spec.count > 1 && spec.interval.is_zero() {
                error(
                    "interval",
                    "several measurements need an interval between them".to_owned(),
                );
            }
            checked.push(CheckedMetric {
                spec,
                success,
                failure,
            });
        }
        if errors.is_empty() {
            Ok(Analysis { metrics: checked })
        } else {
            Err(InvalidAnalysis { errors })
        }
    }

    /// Checks `metrics` as [`Analysis::new`] does, keeping nothing.
    pub fn validate(metrics: &[Metric]) -> Result<(), InvalidAnalysis> {
        Analysis::new(metrics.to_vec()).map(drop)
    }

    /// The metrics, in their configured order.
    pub fn metrics(&self) -> impl Iterator<Item = &Metric> {
        self.metrics.iter().map(|metric| &metric.spec)
    }
}

// ---------------------------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------------------------

/// How one measurement came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeasurementPhase {
    /// The success condition held (or, without one, the failure condition did not).
    Successful,
    /// The failure condition held, the success condition alone did not, or the query
    /// returned no data.
    Failed,
    /// Both conditions are given and neither held.
    Inconclusive,
    /// The query or a condition could not be evaluated.
    Error,
}

/// One measurement of a metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// When the query was sent.
    pub started_at: Timestamp,
    /// When its answer was judged.
    pub finished_at: Timestamp,
    /// How it came out.
    pub phase: MeasurementPhase,
    /// The value the conditions saw as `result` (a number, an array of numbers, or a
    /// string; NaN and the infinities as `"NaN"`, `"+Inf"`, `"-Inf"`), absent when the
    /// query failed.
    pub value: Option<serde_json::Value>,
    /// Why it is not successful, or what went wrong.
    pub message: Option<String>,
}

/// How a metric or an analysis ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AnalysisOutcome {
    /// Every metric was measured `count` times within its limits.
    Successful,
    /// A metric had more failed measurements than its `failure_limit`, or more erroring
    /// measurements in a row than its `consecutive_error_limit`.
    Failed {
        /// Which metric, which limit, and what the last measurement said.
        reason: String,
    },
    /// A metric had more inconclusive measurements than its `inconclusive_limit`: a person
    /// should decide.
    Inconclusive {
        /// Which metric, which limit, and what the last measurement said.
        reason: String,
    },
}

impl AnalysisOutcome {
    /// Whether this is [`AnalysisOutcome::Successful`].
    pub fn is_successful(&self) -> bool {
        matches!(self, AnalysisOutcome::Successful)
    }

    fn severity(&self) -> u8 {
        match self {
            AnalysisOutcome::Successful => 0,
            AnalysisOutcome::Inconclusive { .. } => 1,
            AnalysisOutcome::Failed { .. } => 2,
        }
    }
}

/// What one metric measured and how it ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricReport {
    /// The metric's name.
    pub name: String,
    /// How it ended; `None` when the analysis stopped before it did (another metric ended
    /// badly first).
    pub outcome: Option<AnalysisOutcome>,
    /// Every measurement, in order.
    pub measurements: Vec<Measurement>,
}

/// What an analysis found: its outcome and every measurement of every metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnalysisReport {
    /// The worst of the metrics' outcomes.
    pub outcome: AnalysisOutcome,
    /// When the analysis started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// Each metric, in the configured order.
    pub metrics: Vec<MetricReport>,
}

/// What an analysis tells a watcher while it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AnalysisEvent {
    /// A measurement was taken.
    Measured {
        /// The metric's name.
        metric: String,
        /// The measurement.
        measurement: Measurement,
    },
    /// A metric ended.
    MetricEnded {
        /// The metric's name.
        metric: String,
        /// How.
        outcome: AnalysisOutcome,
    },
}

// ---------------------------------------------------------------------------------------------
// Judging one measurement
// ---------------------------------------------------------------------------------------------

/// Argo's table: with both conditions, failure wins, then success, else inconclusive; with
/// one, the other is its negation.
fn measurement_phase(success: Option<bool>, failure: Option<bool>) -> MeasurementPhase {
    let (success, failure) = match (success, failure) {
        (Some(success), Some(failure)) => (success, failure),
        (Some(success), None) => (success, !success),
        (None, Some(failure)) => (!failure, failure),
        // Validation refuses a metric without conditions; were one to get here, nothing
        // could fail it, which is Argo's answer.
        (None, None) => (true, false),
    };
    if failure {
        MeasurementPhase::Failed
    } else if success {
        MeasurementPhase::Successful
    } else {
        MeasurementPhase::Inconclusive
    }
}

/// What a measurement's conditions see and what the report keeps.
struct Bound {
    context: Context,
    value: serde_json::Value,
    /// Why the result counts as no data, if it does.
    no_data: Option<String>,
}

fn bind(result: &QueryResult) -> Bound {
    fn labels_value(labels: &BTreeMap<String, String>) -> Value {
        Value::Object(
            labels
                .iter()
                .map(|(name, value)| (name.clone(), Value::String(value.clone())))
                .collect(),
        )
    }
    fn object(entries: Vec<(&str, Value)>) -> Value {
        Value::Object(
            entries
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect(),
        )
    }
    let (result_value, results, numbers): (Value, Value, Vec<f64>) = match result {
        QueryResult::Scalar(value) => (
            Value::Number(*value),
            Value::Array(vec![object(vec![
                ("labels", Value::Object(Default::default())),
                ("value", Value::Number(*value)),
            ])]),
            vec![*value],
        ),
        QueryResult::Vector(samples) => (
            Value::Array(
                samples
                    .iter()
                    .map(|sample| Value::Number(sample.value))
                    .collect(),
            ),
            Value::Array(
                samples
                    .iter()
                    .map(|sample| {
                        object(vec![
                            ("labels", labels_value(&sample.labels)),
                            ("value", Value::Number(sample.value)),
                        ])
                    })
                    .collect(),
            ),
            samples.iter().map(|sample| sample.value).collect(),
        ),
        // Argo flattens a matrix into one list of values; `results` keeps the series apart.
        QueryResult::Matrix(series_list) => {
            let numbers: Vec<f64> = series_list
                .iter()
                .flat_map(|series| series.points.iter().map(|point| point.value))
                .collect();
            (
                Value::Array(numbers.iter().copied().map(Value::Number).collect()),
                Value::Array(
                    series_list
                        .iter()
                        .map(|series| {
                            object(vec![
                                ("labels", labels_value(&series.labels)),
                                (
                                    "values",
                                    Value::Array(
                                        series
                                            .points
                                            .iter()
                                            .map(|point| Value::Number(point.value))
                                            .collect(),
                                    ),
                                ),
                            ])
                        })
                        .collect(),
                ),
                numbers,
            )
        }
        QueryResult::String(text) => (
            Value::String(text.clone()),
            Value::Array(vec![object(vec![
                ("labels", Value::Object(Default::default())),
                ("value", Value::String(text.clone())),
            ])]),
            Vec::new(),
        ),
    };
    // NaN is what a ratio over no traffic gives; any NaN fails, since a condition reading it
    // (`result[0] > 0.05` is false for NaN) would otherwise pass on missing data. A query
    // can drop such series itself (`... >= 0`).
    let nan_count = numbers.iter().filter(|value| value.is_nan()).count();
    let no_data = match result {
        QueryResult::String(_) => None,
        _ if numbers.is_empty() => Some("the query returned no data".to_owned()),
        _ if nan_count == numbers.len() => Some("the query returned only NaN (no data)".to_owned()),
        _ if nan_count > 0 => Some(format!(
            "the query returned NaN (no data) for {nan_count} of {} values",
            numbers.len()
        )),
        _ => None,
    };
    let mut context = Context::new();
    context.insert("result", result_value.clone());
    context.insert("results", results);
    Bound {
        context,
        value: value_json(&result_value),
        no_data,
    }
}

/// A value as JSON, keeping NaN and the infinities as Prometheus spells them.
fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Number(number) if number.is_nan() => "NaN".into(),
        Value::Number(number) if number.is_infinite() => {
            if *number > 0.0 { "+Inf" } else { "-Inf" }.into()
        }
        Value::Array(items) => serde_json::Value::Array(items.iter().map(value_json).collect()),
        other => other.to_json(),
    }
}

impl CheckedMetric {
    /// Judges one answer of the source: the phase, the value seen, and a message.
    fn judge(
        &self,
        answer: Result<QueryResult, SourceError>,
    ) -> (MeasurementPhase, Option<serde_json::Value>, Option<String>) {
        let result = match answer {
            Ok(result) => result,
            Err(error) => return (MeasurementPhase::Error, None, Some(error.to_string())),
        };
        let bound = bind(&result);
        if let Some(no_data) = bound.no_data {
            return (MeasurementPhase::Failed, Some(bound.value), Some(no_data));
        }
        let evaluate = |field: &str, expr: &Option<Expr>| -> Result<Option<bool>, String> {
            let Some(expr) = expr else { return Ok(None) };
            match expr.eval(&bound.context, &NoHost) {
                Ok(Value::Bool(value)) => Ok(Some(value)),
                Ok(other) => Err(format!(
                    "the {field} `{}` gave {} {}, not a boolean",
                    expr.source(),
                    other.kind_name(),
                    other.to_display_string()
                )),
                Err(error) => Err(format!(
                    "the {field} `{}` could not be evaluated: {error}",
                    expr.source()
                )),
            }
        };
        let conditions = evaluate("success condition", &self.success)
            .and_then(|success| Ok((success, evaluate("failure condition", &self.failure)?)));
        let (success, failure) = match conditions {
            Ok(pair) => pair,
            Err(message) => return (MeasurementPhase::Error, Some(bound.value), Some(message)),
        };
        let phase = measurement_phase(success, failure);
        let source = |expr: &Option<Expr>| {
            expr.as_ref()
                .map(|expr| expr.source().to_owned())
                .unwrap_or_default()
        };
        let message = match phase {
            MeasurementPhase::Successful | MeasurementPhase::Error => None,
            MeasurementPhase::Failed if failure == Some(true) => Some(format!(
                "the failure condition `{}` is true",
                source(&self.failure)
            )),
            MeasurementPhase::Failed => Some(format!(
                "the success condition `{}` is false",
                source(&self.success)
            )),
            MeasurementPhase::Inconclusive => Some(format!(
                "neither the success condition `{}` nor the failure condition `{}` is true",
                source(&self.success),
                source(&self.failure)
            )),
        };
        (phase, Some(bound.value), message)
    }
}

// ---------------------------------------------------------------------------------------------
// Judging a metric
// ---------------------------------------------------------------------------------------------

/// A metric's measurements counted the way its limits read them.
#[derive(Clone, Debug, Default)]
struct Tally {
    /// Measurements that were not errors (Argo's `count`).
    counted: u32,
    failed: u32,
    inconclusive: u32,
    consecutive_errors: u32,
}

impl Tally {
    fn record(&mut self, phase: MeasurementPhase) {
        match phase {
            MeasurementPhase::Successful => {
                self.counted += 1;
                self.consecutive_errors = 0;
            }
            MeasurementPhase::Failed => {
                self.counted += 1;
                self.failed += 1;
                self.consecutive_errors = 0;
            }
            MeasurementPhase::Inconclusive => {
                self.counted += 1;
                self.inconclusive += 1;
                self.consecutive_errors = 0;
            }
            MeasurementPhase::Error => self.consecutive_errors += 1,
        }
    }

    /// Whether the metric has ended, and how. The limits come before the count, so that a
    /// last measurement past a limit is not hidden by the count being reached; of the limits,
    /// errors come first, then inconclusive, then failed, as in Argo (one measurement moves
    /// one counter, so at most one limit is crossed at a time).
    fn assess(&self, metric: &Metric, last_message: Option<&str>) -> Option<AnalysisOutcome> {
        let reason = |what: String| {
            let mut reason = format!("metric {:?}: {what}", metric.name);
            if let Some(message) = last_message {
                reason.push_str("; last measurement: ");
                reason.push_str(message);
            }
            reason
        };
        if self.consecutive_errors > metric.consecutive_error_limit {
            Some(AnalysisOutcome::Failed {
                reason: reason(format!(
                    "{} consecutive errors > consecutive_error_limit {}",
                    self.consecutive_errors, metric.consecutive_error_limit
                )),
            })
        } else if self.inconclusive > metric.inconclusive_limit {
            Some(AnalysisOutcome::Inconclusive {
                reason: reason(format!(
                    "{} inconclusive > inconclusive_limit {}",
                    self.inconclusive, metric.inconclusive_limit
                )),
            })
        } else if self.failed > metric.failure_limit {
            Some(AnalysisOutcome::Failed {
                reason: reason(format!(
                    "{} failed > failure_limit {}",
                    self.failed, metric.failure_limit
                )),
            })
        } else if self.counted >= metric.count {
            Some(AnalysisOutcome::Successful)
        } else {
            None
        }
    }
}

/// A metric while the analysis runs.
struct MetricState {
    tally: Tally,
    measurements: Vec<Measurement>,
    /// When the next measurement is due; `None` while one is in flight or after the end.
    next_due: Option<Instant>,
    outcome: Option<AnalysisOutcome>,
}

impl Analysis {
    /// Runs the analysis against `source`: each metric's first measurement after its
    /// `initial_delay`, the next ones `interval` after the previous ended, all metrics
    /// concurrently, until every metric has ended or one has ended badly (failed, erroring
    /// or inconclusive), which stops the others.
    ///
    /// Each measurement and each metric's end is sent to `progress` as it happens (a full
    /// channel makes the analysis wait; a closed one is ignored). Dropping the future cancels
    /// the analysis and any query in flight.
    pub async fn run(
        &self,
        source: &dyn MetricsSource,
        progress: Option<mpsc::Sender<AnalysisEvent>>,
    ) -> AnalysisReport {
        let started_at = Timestamp::now();
        let started = Instant::now();
        let mut states: Vec<MetricState> = self
            .metrics
            .iter()
            .map(|metric| MetricState {
                tally: Tally::default(),
                measurements: Vec::new(),
                next_due: Some(started + metric.spec.initial_delay),
                outcome: None,
            })
            .collect();
        let mut in_flight = FuturesUnordered::new();
        loop {
            let now = Instant::now();
            for (index, (metric, state)) in self.metrics.iter().zip(&mut states).enumerate() {
                if state.next_due.is_some_and(|due| due <= now) {
                    state.next_due = None;
                    let query = metric.spec.query.as_str();
                    in_flight.push(async move {
                        let measured_at = Timestamp::now();
                        (index, measured_at, source.query(query).await)
                    });
                }
            }
            let next_due = states.iter().filter_map(|state| state.next_due).min();
            if in_flight.is_empty() && next_due.is_none() {
                break;
            }
            let wait_for_next = async {
                match next_due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            };
            let (index, measured_at, answer) = tokio::select! {
                Some(done) = in_flight.next() => done,
                () = wait_for_next => continue,
            };
            let (Some(metric), Some(state)) = (self.metrics.get(index), states.get_mut(index))
            else {
                continue;
            };
            let (phase, value, message) = metric.judge(answer);
            let measurement = Measurement {
                started_at: measured_at,
                finished_at: Timestamp::now(),
                phase,
                value,
                message,
            };
            tracing::debug!(
                metric = %metric.spec.name,
                phase = ?measurement.phase,
                message = measurement.message.as_deref().unwrap_or(""),
                "measured"
            );
            state.tally.record(phase);
            let outcome = state
                .tally
                .assess(&metric.spec, measurement.message.as_deref());
            state.measurements.push(measurement.clone());
            send(
                progress.as_ref(),
                AnalysisEvent::Measured {
                    metric: metric.spec.name.clone(),
                    measurement,
                },
            )
            .await;
            let Some(outcome) = outcome else {
                state.next_due = Some(Instant::now() + metric.spec.interval);
                continue;
            };
            tracing::info!(metric = %metric.spec.name, outcome = ?outcome, "metric ended");
            state.outcome = Some(outcome.clone());
            let ended_badly = !outcome.is_successful();
            send(
                progress.as_ref(),
                AnalysisEvent::MetricEnded {
                    metric: metric.spec.name.clone(),
                    outcome,
                },
            )
            .await;
            if ended_badly {
                // Argo terminates the whole run here; the queries still in flight are dropped.
                break;
            }
        }
        let outcome = states
            .iter()
            .filter_map(|state| state.outcome.clone())
            .fold(AnalysisOutcome::Successful, |worst, outcome| {
                if outcome.severity() > worst.severity() {
                    outcome
                } else {
                    worst
                }
            });
        AnalysisReport {
            outcome,
            started_at,
            finished_at: Timestamp::now(),
            metrics: self
                .metrics
                .iter()
                .zip(states)
                .map(|(metric, state)| MetricReport {
                    name: metric.spec.name.clone(),
                    outcome: state.outcome,
                    measurements: state.measurements,
                })
                .collect(),
        }
    }
}

async fn send(progress: Option<&mpsc::Sender<AnalysisEvent>>, event: AnalysisEvent) {
    if let Some(progress) = progress {
        // A watcher that went away does not stop the analysis.
        let _ = progress.send(event).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::{HashMap, VecDeque};
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A source answering each query from a script; the last answer repeats.
    #[derive(Default)]
    struct ScriptedSource {
        answers: Mutex<HashMap<String, VecDeque<Result<QueryResult, SourceError>>>>,
    }

    impl ScriptedSource {
        fn with(
            self,
            query: &str,
            answers: Vec<Result<QueryResult, SourceError>>,
        ) -> ScriptedSource {
            self.answers
                .lock()
                .unwrap()
                .insert(query.to_owned(), answers.into());
            self
        }
    }

    impl MetricsSource for ScriptedSource {
        fn query<'a>(&'a self, promql: &'a str) -> QueryFuture<'a> {
            let mut answers = self.answers.lock().unwrap();
            let queue = answers.get_mut(promql).unwrap();
            let answer = if queue.len() > 1 {
                queue.pop_front().unwrap()
            } else {
                queue.front().unwrap().clone()
            };
            Box::pin(async move { answer })
        }
    }

    fn scalar(value: f64) -> Result<QueryResult, SourceError> {
        Ok(QueryResult::Scalar(value))
    }

    fn vector(values: &[f64]) -> Result<QueryResult, SourceError> {
        Ok(QueryResult::Vector(
            values
                .iter()
                .enumerate()
                .map(|(index, value)| Sample {
                    labels: BTreeMap::from([("code".to_owned(), format!("{}", 200 + index))]),
                    value: *value,
                })
                .collect(),
        ))
    }

    fn refused() -> Result<QueryResult, SourceError> {
        Err(SourceError::Rejected {
            error_type: "execution".to_owned(),
            message: "boom".to_owned(),
        })
    }

    fn metric(name: &str, query: &str) -> Metric {
        Metric::new(name, query).with_interval(Duration::from_millis(1))
    }

    fn judge(metric: Metric, answer: Result<QueryResult, SourceError>) -> MeasurementPhase {
        let analysis = Analysis::new(vec![metric]).unwrap();
        analysis.metrics[0].judge(answer).0
    }

    async fn run(metrics: Vec<Metric>, source: ScriptedSource) -> AnalysisReport {
        Analysis::new(metrics).unwrap().run(&source, None).await
    }

    fn phases(report: &MetricReport) -> Vec<MeasurementPhase> {
        report
            .measurements
            .iter()
            .map(|measurement| measurement.phase)
            .collect()
    }

    use MeasurementPhase::{Error, Failed, Inconclusive, Successful};

    #[test]
    fn measurement_phase_follows_argo_for_every_combination_of_conditions() {
        let table = [
            (Some(true), Some(false), Successful),
            (Some(true), Some(true), Failed),
            (Some(false), Some(true), Failed),
            (Some(false), Some(false), Inconclusive),
            (Some(true), None, Successful),
            (Some(false), None, Failed),
            (None, Some(true), Failed),
            (None, Some(false), Successful),
        ];
        for (success, failure, expected) in table {
            assert_eq!(
                measurement_phase(success, failure),
                expected,
                "success {success:?}, failure {failure:?}"
            );
        }
    }

    #[test]
    fn conditions_read_a_scalar_as_a_number_and_a_vector_as_numbers_in_order() {
        let query = "x";
        let cases = [
            ("result < 0.05", scalar(0.01), Successful),
            ("result < 0.05", scalar(0.5), Failed),
            ("result[0] < 0.05", vector(&[0.01, 0.9]), Successful),
            ("result[1] < 0.05", vector(&[0.01, 0.9]), Failed),
            (
                "results[1].labels.code == '201'",
                vector(&[0.0, 0.0]),
                Successful,
            ),
            ("results[0].value == 3", vector(&[3.0]), Successful),
            (
                "result[2] == 3 && results[1].values[0] == 3",
                Ok(QueryResult::Matrix(vec![
                    Series {
                        labels: BTreeMap::new(),
                        points: vec![
                            Point {
                                timestamp: 1.0,
                                value: 1.0,
                            },
                            Point {
                                timestamp: 2.0,
                                value: 2.0,
                            },
                        ],
                    },
                    Series {
                        labels: BTreeMap::new(),
                        points: vec![Point {
                            timestamp: 2.0,
                            value: 3.0,
                        }],
                    },
                ])),
                Successful,
            ),
            (
                "result == 'ok'",
                Ok(QueryResult::String("ok".into())),
                Successful,
            ),
        ];
        for (condition, answer, expected) in cases {
            assert_eq!(
                judge(metric("m", query).with_success_condition(condition), answer),
                expected,
                "{condition}"
            );
        }
    }

    #[test]
    fn no_data_is_a_failed_measurement_even_where_the_condition_would_pass() {
        // `null > 0.05` is false in the expression language, so without the no-data rule a
        // failure-only condition would pass on an empty answer.
        let failure_only = metric("m", "x").with_failure_condition("result[0] > 0.05");
        for answer in [
            vector(&[]),
            vector(&[f64::NAN]),
            vector(&[f64::NAN, f64::NAN]),
            scalar(f64::NAN),
            Ok(QueryResult::Matrix(vec![])),
        ] {
            let analysis = Analysis::new(vec![failure_only.clone()]).unwrap();
            let (phase, _, message) = analysis.metrics[0].judge(answer.clone());
            assert_eq!(phase, Failed, "{answer:?}");
            assert!(
                message.unwrap().contains("the query returned"),
                "{answer:?}"
            );
        }
        // A NaN among numbers fails too: the condition reads `result[0]`, NaN, and
        // `NaN > 0.05` is false, so it would pass (as it does in Argo).
        let analysis = Analysis::new(vec![failure_only]).unwrap();
        let (phase, _, message) = analysis.metrics[0].judge(vector(&[f64::NAN, 0.01]));
        assert_eq!(phase, Failed);
        assert_eq!(
            message.as_deref(),
            Some("the query returned NaN (no data) for 1 of 2 values")
        );
    }

    #[test]
    fn a_condition_that_is_not_a_boolean_or_fails_to_evaluate_is_an_error() {
        assert_eq!(
            judge(
                metric("m", "x").with_success_condition("result"),
                scalar(1.0)
            ),
            Error
        );
        assert_eq!(
            judge(
                metric("m", "x").with_success_condition("fromJSON('{') == 1"),
                scalar(1.0)
            ),
            Error
        );
        assert_eq!(
            judge(metric("m", "x").with_success_condition("true"), refused()),
            Error
        );
    }

    #[tokio::test]
    async fn a_metric_succeeds_after_count_measurements_and_errors_do_not_count() {
        let source = ScriptedSource::default().with(
            "q",
            vec![scalar(0.0), refused(), scalar(0.0), refused(), scalar(0.0)],
        );
        let report = run(
            vec![
                metric("m", "q")
                    .with_count(3)
                    .with_success_condition("result == 0"),
            ],
            source,
        )
        .await;
        assert_eq!(report.outcome, AnalysisOutcome::Successful);
        assert_eq!(
            phases(&report.metrics[0]),
            [Successful, Error, Successful, Error, Successful]
        );
        assert_eq!(report.metrics[0].outcome, Some(AnalysisOutcome::Successful));
    }

    #[tokio::test]
    async fn the_failure_limit_tolerates_failures_and_one_more_fails_before_count() {
        let source = ScriptedSource::default().with(
            "q",
            vec![scalar(1.0), scalar(0.0), scalar(1.0), scalar(0.0)],
        );
        let report = run(
            vec![
                metric("m", "q")
                    .with_count(10)
                    .with_failure_limit(1)
                    .with_success_condition("result == 0"),
            ],
            source,
        )
        .await;
        assert_eq!(phases(&report.metrics[0]), [Failed, Successful, Failed]);
        let AnalysisOutcome::Failed { reason } = &report.outcome else {
            panic!("{report:?}");
        };
        assert!(
            reason.contains("\"m\": 2 failed > failure_limit 1"),
            "{reason}"
        );
        assert!(reason.contains("`result == 0` is false"), "{reason}");
    }

    #[tokio::test]
    async fn the_inconclusive_limit_ends_the_metric_inconclusive() {
        let source = ScriptedSource::default().with("q", vec![scalar(0.5)]);
        let report = run(
            vec![
                metric("m", "q")
                    .with_count(5)
                    .with_inconclusive_limit(1)
                    .with_success_condition("result < 0.1")
                    .with_failure_condition("result > 0.9"),
            ],
            source,
        )
        .await;
        assert_eq!(phases(&report.metrics[0]), [Inconclusive, Inconclusive]);
        assert!(matches!(
            report.outcome,
            AnalysisOutcome::Inconclusive { ref reason } if reason.contains("2 inconclusive > inconclusive_limit 1")
        ));
    }

    #[tokio::test]
    async fn errors_in_a_row_past_the_limit_fail_the_metric_and_a_good_answer_resets_them() {
        let source = ScriptedSource::default().with(
            "q",
            vec![
                refused(),
                refused(),
                scalar(0.0),
                refused(),
                refused(),
                refused(),
            ],
        );
        let report = run(
            vec![
                metric("m", "q")
                    .with_count(10)
                    .with_consecutive_error_limit(2)
                    .with_success_condition("result == 0"),
            ],
            source,
        )
        .await;
        assert_eq!(
            phases(&report.metrics[0]),
            [Error, Error, Successful, Error, Error, Error]
        );
        let AnalysisOutcome::Failed { reason } = &report.outcome else {
            panic!("{report:?}");
        };
        assert!(
            reason.contains("3 consecutive errors > consecutive_error_limit 2"),
            "{reason}"
        );
        assert!(reason.contains("(execution): boom"), "{reason}");
    }

    #[tokio::test]
    async fn one_metric_ending_badly_stops_the_others_and_the_report_keeps_their_measurements() {
        let source = ScriptedSource::default()
            .with("slow", vec![scalar(0.0)])
            .with("bad", vec![scalar(0.0), scalar(0.0), scalar(1.0)]);
        let report = run(
            vec![
                metric("steady", "slow")
                    .with_count(1000)
                    .with_success_condition("result == 0"),
                metric("breaks", "bad")
                    .with_count(1000)
                    .with_success_condition("result == 0"),
            ],
            source,
        )
        .await;
        assert!(
            matches!(report.outcome, AnalysisOutcome::Failed { ref reason } if reason.contains("\"breaks\""))
        );
        assert_eq!(report.metrics[0].outcome, None);
        assert!(!report.metrics[0].measurements.is_empty());
        assert_eq!(phases(&report.metrics[1]), [Successful, Successful, Failed]);
    }

    #[tokio::test]
    async fn the_analysis_ends_with_the_worst_outcome() {
        // Inconclusive stops the run, so a Failed elsewhere can only be seen if it came
        // first; here the successful metric ends first, then the inconclusive one.
        let source = ScriptedSource::default()
            .with("good", vec![scalar(0.0)])
            .with("unsure", vec![scalar(0.5)]);
        let report = run(
            vec![
                metric("good", "good").with_success_condition("result == 0"),
                metric("unsure", "unsure")
                    .with_initial_delay(Duration::from_millis(20))
                    .with_success_condition("result == 0")
                    .with_failure_condition("result == 1"),
            ],
            source,
        )
        .await;
        assert!(matches!(
            report.outcome,
            AnalysisOutcome::Inconclusive { .. }
        ));
        assert_eq!(report.metrics[0].outcome, Some(AnalysisOutcome::Successful));

        let worst = [
            AnalysisOutcome::Successful,
            AnalysisOutcome::Inconclusive { reason: "i".into() },
            AnalysisOutcome::Failed { reason: "f".into() },
        ];
        for (index, outcome) in worst.iter().enumerate() {
            for other in &worst[..index] {
                assert!(outcome.severity() > other.severity());
            }
        }
    }

    #[tokio::test]
    async fn progress_sees_every_measurement_and_the_end_and_the_report_round_trips_as_json() {
        let source = ScriptedSource::default().with("q", vec![scalar(0.0), scalar(f64::INFINITY)]);
        let (sender, mut receiver) = mpsc::channel(16);
        let analysis = Analysis::new(vec![
            metric("m", "q")
                .with_count(2)
                .with_failure_limit(1)
                .with_success_condition("result == 0"),
        ])
        .unwrap();
        let report = analysis.run(&source, Some(sender)).await;
        let mut events = Vec::new();
        while let Some(event) = receiver.recv().await {
            events.push(event);
        }
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(
            matches!(&events[2], AnalysisEvent::MetricEnded { outcome, .. } if outcome.is_successful())
        );
        assert_eq!(
            report.metrics[0].measurements[1].value,
            Some(serde_json::json!("+Inf"))
        );
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("\"status\":\"successful\""), "{json}");
        let back: AnalysisReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn validation_reports_every_error_with_its_metric_and_field() {
        let errors = Analysis::new(vec![
            Metric::new("error-rate", "sum(rate(x[5m]) /").with_success_condition("result <"),
            Metric::new("error-rate", "up").with_success_condition("nope == 1"),
            Metric::new("", "up"),
            Metric::new("latency", "rate(x)")
                .with_failure_condition("result[0] > 1")
                .with_count(0),
            Metric::new("spread", "up")
                .with_failure_condition("result[0] > 1")
                .with_count(3)
                .with_interval(Duration::ZERO),
        ])
        .unwrap_err()
        .errors;
        let found: Vec<(&str, &str)> = errors
            .iter()
            .map(|error| (error.metric.as_str(), error.field))
            .collect();
        assert_eq!(
            found,
            [
                ("error-rate", "query"),
                ("error-rate", "success_condition"),
                ("error-rate", "name"),
                ("error-rate", "success_condition"),
                ("#3", "name"),
                ("#3", "success_condition"),
                ("latency", "query"),
                ("latency", "count"),
                ("spread", "interval"),
            ],
            "{errors:#?}"
        );
        assert!(
            errors[3]
                .message
                .contains("Unrecognized named-value: 'nope'")
        );
        assert!(Analysis::new(vec![]).is_err());
        assert!(
            Analysis::validate(&[
                Metric::new("ok", "sum(rate(x[5m]))").with_success_condition("result[0] < 0.05")
            ])
            .is_ok()
        );
    }

    #[test]
    fn prometheus_answers_are_read_in_every_shape() {
        let url = "http://p/api/v1/query";
        let read = |status, body: &str| parse_query_response(url, status, body).map(|(r, _)| r);
        assert_eq!(
            read(
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[
                    {"metric":{"code":"500"},"value":[1.5,"NaN"]},
                    {"metric":{},"value":[1.5,"+Inf"]},
                    {"metric":{},"value":[1.5,"-Inf"]},
                    {"metric":{},"value":[1.5,"0.25"]}]}}"#
            )
            .map(|result| match result {
                QueryResult::Vector(samples) => samples
                    .iter()
                    .map(|sample| format!("{}", sample.value))
                    .collect::<Vec<_>>()
                    .join(" "),
                other => format!("{other:?}"),
            }),
            Ok("NaN inf -inf 0.25".to_owned())
        );
        assert_eq!(
            read(
                200,
                r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#
            ),
            Ok(QueryResult::Scalar(2.0))
        );
        assert_eq!(
            read(
                200,
                r#"{"status":"success","data":{"resultType":"string","result":[1,"hi"]}}"#
            ),
            Ok(QueryResult::String("hi".into()))
        );
        assert_eq!(
            read(
                200,
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"b"},"values":[[1,"1"],[2,"3"]]}]}}"#
            ),
            Ok(QueryResult::Matrix(vec![Series {
                labels: BTreeMap::from([("a".to_owned(), "b".to_owned())]),
                points: vec![
                    Point {
                        timestamp: 1.0,
                        value: 1.0
                    },
                    Point {
                        timestamp: 2.0,
                        value: 3.0
                    }
                ],
            }]))
        );
        assert_eq!(
            read(
                422,
                r#"{"status":"error","errorType":"execution","error":"many-to-many"}"#
            ),
            Err(SourceError::Rejected {
                error_type: "execution".into(),
                message: "many-to-many".into()
            })
        );
        assert!(matches!(
            read(502, "<html>bad gateway</html>"),
            Err(SourceError::Status { status: 502, ref body, .. }) if body.contains("bad gateway")
        ));
        assert!(matches!(
            read(200, "not json"),
            Err(SourceError::BadResponse { .. })
        ));
        assert!(matches!(
            read(
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}"#
            ),
            Err(SourceError::BadResponse { ref message, .. }) if message.contains("\"x\" is not a number")
        ));
        assert!(matches!(
            read(
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{}]}]}}"#
            ),
            Err(SourceError::BadResponse { ref message, .. }) if message.contains("histogram")
        ));
    }

    #[test]
    fn a_prometheus_source_needs_an_http_address_and_hides_its_token() {
        assert!(PrometheusSource::new("ftp://host").is_err());
        assert!(PrometheusSource::new("not a url").is_err());
        let source = PrometheusSource::new("http://127.0.0.1:9090/prefix/")
            .unwrap()
            .with_bearer_token("secret-token");
        assert_eq!(
            source.query_url.as_str(),
            "http://127.0.0.1:9090/prefix/api/v1/query"
        );
        assert!(!format!("{source:?}").contains("secret-token"));
        let shared: Arc<dyn MetricsSource> = Arc::new(source);
        drop(shared);
    }
}
