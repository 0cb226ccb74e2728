//! Canary analyses against a real Prometheus (Debian's 2.42 package, `/usr/bin/prometheus`)
//! scraping, every second, a metrics server whose request counters the test drives.
//!
//! One Prometheus serves every test of this binary (it takes about six seconds before its
//! first scrape lands, so one per test would be slow); each scenario has its own series
//! (`scenario="..."`), so the tests do not disturb each other. Prometheus runs under a small
//! `sh` that kills it, and removes its storage, as soon as this process exits, however it
//! exits: the shell waits for the end of a pipe only this process holds.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::{ChildStdin, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use sorat_deploy::analysis::{
    Analysis, AnalysisEvent, AnalysisOutcome, AnalysisReport, MeasurementPhase, Metric,
    MetricsSource, PrometheusSource, QueryResult, SourceError,
};
use tokio::sync::{OnceCell, mpsc, oneshot};

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Requests per second of one scenario, and the counters they feed.
#[derive(Clone, Copy, Debug)]
struct Traffic {
    ok_per_second: u64,
    errors_per_second: u64,
    ok_total: u64,
    errors_total: u64,
}

impl Traffic {
    fn new(ok_per_second: u64, errors_per_second: u64) -> Traffic {
        // Counters start high so that Prometheus' extrapolation towards zero at the start of a
        // series treats the 200 and 500 series alike, and ratios come out exact.
        Traffic {
            ok_per_second,
            errors_per_second,
            ok_total: 1_000_000,
            errors_total: 1_000_000,
        }
    }
}

type Scenarios = Arc<Mutex<BTreeMap<&'static str, Traffic>>>;

struct Fixture {
    url: String,
    scenarios: Scenarios,
    /// Kept open for the life of the process: its end closing is what stops Prometheus.
    _lifeline: Mutex<ChildStdin>,
}

impl Fixture {
    fn set_errors_per_second(&self, scenario: &'static str, errors_per_second: u64) {
        self.scenarios
            .lock()
            .unwrap()
            .get_mut(scenario)
            .unwrap()
            .errors_per_second = errors_per_second;
    }

    fn source(&self) -> PrometheusSource {
        PrometheusSource::new(&self.url)
            .unwrap()
            .with_timeout(Duration::from_secs(5))
    }
}

static FIXTURE: OnceCell<Result<Fixture, String>> = OnceCell::const_new();

async fn prometheus() -> &'static Fixture {
    match FIXTURE.get_or_init(start_fixture).await {
        Ok(fixture) => fixture,
        Err(message) => panic!("{message}"),
    }
}

/// The error ratio of a scenario over the last 5 s, the canary query of these tests.
fn error_ratio(scenario: &str) -> String {
    format!(
        r#"sum(rate(http_requests_total{{scenario="{scenario}",code="500"}}[5s])) / sum(rate(http_requests_total{{scenario="{scenario}"}}[5s]))"#
    )
}

async fn start_fixture() -> Result<Fixture, String> {
    if !std::path::Path::new(PROMETHEUS).exists() {
        return Err(format!(
            "{PROMETHEUS} is missing: these tests need a real Prometheus 2.42; run .ci/test, \
             which installs Debian's `prometheus` package"
        ));
    }
    let scenarios: Scenarios = Arc::new(Mutex::new(BTreeMap::from([
        ("steady", Traffic::new(100, 0)),
        ("rising", Traffic::new(100, 0)),
        ("mixed", Traffic::new(80, 20)),
    ])));
    let metrics_port = serve_metrics(Arc::clone(&scenarios)).await;

    let dir = tempfile::Builder::new()
        .prefix("sorat-prometheus-")
        .tempdir()
        .map_err(|error| error.to_string())?
        .keep();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
        ),
    )
    .map_err(|error| error.to_string())?;
    let port = free_port();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            r#"dir=$1; shift; "$@" >"$dir/prometheus.log" 2>&1 & child=$!; cat >/dev/null; kill "$child" 2>/dev/null; wait "$child"; rm -rf "$dir""#,
        )
        .arg("sh")
        .arg(&dir)
        .arg(PROMETHEUS)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("cannot start {PROMETHEUS}: {error}"))?;
    let lifeline = child.stdin.take().ok_or("no stdin for the shell")?;
    let url = format!("http://127.0.0.1:{port}");
    let log = || std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let ready = wait_for(Duration::from_secs(20), || async {
        client
            .get(format!("{url}/-/ready"))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
    })
    .await;
    if !ready {
        return Err(format!("Prometheus did not get ready:\n{}", log()));
    }
    // A rate needs two scrapes; Prometheus starts scraping about five seconds after it
    // starts (its target reload period).
    let source = PrometheusSource::new(&url).unwrap();
    let scraped = wait_for(Duration::from_secs(30), || async {
        matches!(
            source.query(&error_ratio("mixed")).await,
            Ok(QueryResult::Vector(samples)) if !samples.is_empty()
        )
    })
    .await;
    if !scraped {
        return Err(format!(
            "Prometheus did not scrape the metrics server in time:\n{}",
            log()
        ));
    }
    Ok(Fixture {
        url,
        scenarios,
        _lifeline: Mutex::new(lifeline),
    })
}

async fn wait_for<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Serves `/metrics` from a thread of its own (each test has its own runtime, and the
/// server must outlive the test that started it); counters grow every 100 ms.
async fn serve_metrics(scenarios: Scenarios) -> u16 {
    let (port_sender, port) = oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            port_sender
                .send(listener.local_addr().unwrap().port())
                .unwrap();
            let ticking = Arc::clone(&scenarios);
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(Duration::from_millis(100));
                loop {
                    ticks.tick().await;
                    for traffic in ticking.lock().unwrap().values_mut() {
                        traffic.ok_total += traffic.ok_per_second / 10;
                        traffic.errors_total += traffic.errors_per_second / 10;
                    }
                }
            });
            let app = Router::new()
                .route("/metrics", get(exposition))
                .with_state(scenarios);
            axum::serve(listener, app).await.unwrap();
        });
    });
    port.await.unwrap()
}

async fn exposition(State(scenarios): State<Scenarios>) -> String {
    let mut text = String::from(
        "# HELP http_requests_total Requests served.\n# TYPE http_requests_total counter\n",
    );
    for (scenario, traffic) in scenarios.lock().unwrap().iter() {
        text.push_str(&format!(
            "http_requests_total{{scenario=\"{scenario}\",code=\"200\"}} {}\n\
             http_requests_total{{scenario=\"{scenario}\",code=\"500\"}} {}\n",
            traffic.ok_total, traffic.errors_total
        ));
    }
    text
}

fn phases(report: &AnalysisReport, metric: usize) -> Vec<MeasurementPhase> {
    report.metrics[metric]
        .measurements
        .iter()
        .map(|measurement| measurement.phase)
        .collect()
}

fn failed_reason(report: &AnalysisReport) -> &str {
    match &report.outcome {
        AnalysisOutcome::Failed { reason } => reason,
        other => panic!("expected a failed analysis, got {other:?}: {report:#?}"),
    }
}

#[tokio::test]
async fn an_error_ratio_below_the_threshold_passes_every_measurement() {
    let fixture = prometheus().await;
    let analysis = Analysis::new(vec![
        Metric::new("error-ratio", error_ratio("steady"))
            .with_success_condition("result[0] < 0.05")
            .with_count(3)
            .with_interval(Duration::from_secs(1)),
    ])
    .unwrap();
    let source: Arc<dyn MetricsSource> = Arc::new(fixture.source());
    let report = analysis.run(source.as_ref(), None).await;
    assert_eq!(report.outcome, AnalysisOutcome::Successful, "{report:#?}");
    assert_eq!(phases(&report, 0), [MeasurementPhase::Successful; 3]);
    assert_eq!(
        report.metrics[0].measurements[0].value,
        Some(serde_json::json!([0]))
    );
    assert_eq!(report.metrics[0].outcome, Some(AnalysisOutcome::Successful));
}

#[tokio::test]
async fn rising_errors_fail_the_analysis_before_its_count_once_past_the_failure_limit() {
    let fixture = prometheus().await;
    let count = 20;
    let analysis = Analysis::new(vec![
        Metric::new("error-ratio", error_ratio("rising"))
            .with_success_condition("result[0] < 0.05")
            .with_count(count)
            .with_failure_limit(1)
            .with_interval(Duration::from_secs(1)),
    ])
    .unwrap();
    let source: Arc<dyn MetricsSource> = Arc::new(fixture.source());
    let (sender, mut events) = mpsc::channel(8);
    // Spawned: the analysis future can move to another task, as a server runs it.
    let running = tokio::spawn(async move { analysis.run(source.as_ref(), Some(sender)).await });

    let mut seen = Vec::new();
    while let Some(event) = events.recv().await {
        if let AnalysisEvent::Measured { measurement, .. } = &event
            && seen.is_empty()
        {
            assert_eq!(measurement.phase, MeasurementPhase::Successful, "{event:?}");
            // The canary starts failing half of its requests.
            fixture.set_errors_per_second("rising", 100);
        }
        seen.push(event);
    }
    let report = running.await.unwrap();

    let reason = failed_reason(&report);
    assert!(
        reason.contains("\"error-ratio\": 2 failed > failure_limit 1"),
        "{reason}"
    );
    assert!(reason.contains("`result[0] < 0.05` is false"), "{reason}");
    let phases = phases(&report, 0);
    assert!(phases.len() < count as usize, "{phases:?}");
    assert_eq!(phases.first(), Some(&MeasurementPhase::Successful));
    assert_eq!(phases.last(), Some(&MeasurementPhase::Failed));
    assert_eq!(
        phases
            .iter()
            .filter(|phase| **phase == MeasurementPhase::Failed)
            .count(),
        2,
        "{phases:?}"
    );
    // The watcher saw every measurement, then the metric's end.
    assert_eq!(seen.len(), phases.len() + 1);
    assert!(matches!(
        seen.last(),
        Some(AnalysisEvent::MetricEnded {
            outcome: AnalysisOutcome::Failed { .. },
            ..
        })
    ));
}

#[tokio::test]
async fn no_data_fails_the_measurement_where_the_condition_would_have_passed() {
    let fixture = prometheus().await;
    let source = fixture.source();
    // Both conditions would pass on nothing: `null > 0.05` and `NaN > 0.05` are false.
    let empty = Analysis::new(vec![
        Metric::new(
            "absent-service",
            r#"sum(rate(http_requests_total{scenario="absent"}[5s]))"#,
        )
        .with_failure_condition("result[0] > 0.05"),
    ])
    .unwrap();
    let nan = Analysis::new(vec![
        Metric::new(
            "no-errors-at-all",
            r#"sum(rate(http_requests_total{scenario="steady",code="500"}[5s])) / sum(rate(http_requests_total{scenario="steady",code="500"}[5s]))"#,
        )
        .with_failure_condition("result[0] > 0.05"),
    ])
    .unwrap();
    let (empty, nan) = tokio::join!(empty.run(&source, None), nan.run(&source, None));

    assert!(
        failed_reason(&empty).contains("the query returned no data"),
        "{empty:#?}"
    );
    assert_eq!(phases(&empty, 0), [MeasurementPhase::Failed]);
    assert_eq!(
        empty.metrics[0].measurements[0].value,
        Some(serde_json::json!([]))
    );

    assert!(
        failed_reason(&nan).contains("the query returned only NaN"),
        "{nan:#?}"
    );
    assert_eq!(phases(&nan, 0), [MeasurementPhase::Failed]);
    assert_eq!(
        nan.metrics[0].measurements[0].value,
        Some(serde_json::json!(["NaN"]))
    );
}

#[tokio::test]
async fn neither_condition_holding_ends_the_analysis_inconclusive() {
    let fixture = prometheus().await;
    // The ratio is 0.2: not good enough to pass, not bad enough to fail.
    let analysis = Analysis::new(vec![
        Metric::new("error-ratio", error_ratio("mixed"))
            .with_success_condition("result[0] < 0.05")
            .with_failure_condition("result[0] > 0.5")
            .with_count(5)
            .with_inconclusive_limit(1)
            .with_interval(Duration::from_secs(1)),
    ])
    .unwrap();
    let report = analysis.run(&fixture.source(), None).await;
    let AnalysisOutcome::Inconclusive { reason } = &report.outcome else {
        panic!("expected inconclusive: {report:#?}");
    };
    assert!(
        reason.contains("2 inconclusive > inconclusive_limit 1"),
        "{reason}"
    );
    assert_eq!(phases(&report, 0), [MeasurementPhase::Inconclusive; 2]);
    let value = report.metrics[0].measurements[0].value.clone().unwrap();
    let ratio = value[0].as_f64().unwrap();
    assert!((ratio - 0.2).abs() < 0.01, "{value}");
}

#[tokio::test]
async fn a_query_prometheus_rejects_at_run_time_fails_after_the_consecutive_error_limit() {
    let fixture = prometheus().await;
    // Valid PromQL, so validation passes; Prometheus refuses to match two series with two.
    let analysis = Analysis::new(vec![
        Metric::new(
            "many-to-many",
            r#"http_requests_total{scenario="steady"} / on() http_requests_total{scenario="steady"}"#,
        )
        .with_success_condition("result[0] < 0.05")
        .with_count(5)
        .with_consecutive_error_limit(2)
        .with_interval(Duration::from_millis(300)),
    ])
    .unwrap();
    let report = analysis.run(&fixture.source(), None).await;
    let reason = failed_reason(&report);
    assert!(
        reason.contains("3 consecutive errors > consecutive_error_limit 2"),
        "{reason}"
    );
    assert!(
        reason.contains("the query was rejected (execution)"),
        "{reason}"
    );
    assert!(
        reason.contains("many-to-many matching not allowed"),
        "{reason}"
    );
    assert_eq!(phases(&report, 0), [MeasurementPhase::Error; 3]);
    assert!(
        report.metrics[0]
            .measurements
            .iter()
            .all(|measurement| measurement.value.is_none())
    );
}

#[tokio::test]
async fn an_unreachable_source_fails_after_the_consecutive_error_limit() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let source = PrometheusSource::new(&url)
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    let analysis = Analysis::new(vec![
        Metric::new("error-ratio", error_ratio("steady"))
            .with_success_condition("result[0] < 0.05")
            .with_count(3)
            .with_consecutive_error_limit(1)
            .with_interval(Duration::from_millis(100)),
    ])
    .unwrap();
    let report = analysis.run(&source, None).await;
    let reason = failed_reason(&report);
    assert!(
        reason.contains("2 consecutive errors > consecutive_error_limit 1"),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("query to {url}/api/v1/query failed")),
        "{reason}"
    );
    assert_eq!(phases(&report, 0), [MeasurementPhase::Error; 2]);
}

#[test]
fn validate_rejects_bad_promql_and_bad_conditions_naming_the_metric() {
    let errors = Analysis::validate(&[
        Metric::new("error-ratio", "sum(rate(http_requests_total[5m])")
            .with_success_condition("result[0] < 0.05"),
        Metric::new("latency", "histogram_quantile(0.99, rate(x_bucket[5m]))")
            .with_success_condition("result[0] <")
            .with_failure_condition("latency > 1"),
        Metric::new("fine", "up").with_success_condition("result[0] == 1"),
    ])
    .unwrap_err();
    let text = errors.to_string();
    let fields: Vec<(&str, &str)> = errors
        .errors
        .iter()
        .map(|error| (error.metric.as_str(), error.field))
        .collect();
    assert_eq!(
        fields,
        [
            ("error-ratio", "query"),
            ("latency", "success_condition"),
            ("latency", "failure_condition"),
        ],
        "{text}"
    );
    assert!(
        text.contains("metric \"error-ratio\": query: not valid PromQL"),
        "{text}"
    );
    assert!(
        text.contains("Unrecognized named-value: 'latency'"),
        "{text}"
    );
}

#[tokio::test]
async fn prometheus_answers_of_every_shape_and_special_value_are_read() {
    let fixture = prometheus().await;
    let source = fixture
        .source()
        .with_bearer_token("ignored-by-an-open-prometheus");
    let query = |promql: &'static str| {
        let source = source.clone();
        async move { source.query(promql).await }
    };

    assert_eq!(
        query("scalar(vector(1.5))").await,
        Ok(QueryResult::Scalar(1.5))
    );
    assert_eq!(
        query(r#""canary""#).await,
        Ok(QueryResult::String("canary".to_owned()))
    );
    let single = |result: Result<QueryResult, SourceError>| match result {
        Ok(QueryResult::Vector(samples)) if samples.len() == 1 => samples[0].value,
        other => panic!("{other:?}"),
    };
    assert_eq!(single(query("vector(1) / 0").await), f64::INFINITY);
    assert_eq!(single(query("vector(-1) / 0").await), f64::NEG_INFINITY);
    assert!(single(query("vector(0) / 0").await).is_nan());

    let Ok(QueryResult::Vector(samples)) = query(r#"http_requests_total{scenario="steady"}"#).await
    else {
        panic!("not a vector");
    };
    let codes: Vec<&str> = samples
        .iter()
        .map(|sample| sample.labels["code"].as_str())
        .collect();
    assert_eq!(codes.len(), 2);
    assert!(
        codes.contains(&"200") && codes.contains(&"500"),
        "{codes:?}"
    );
    assert!(samples.iter().all(|sample| sample.labels["job"] == "app"));

    let Ok(QueryResult::Matrix(series)) =
        query(r#"http_requests_total{scenario="steady"}[10s]"#).await
    else {
        panic!("not a matrix");
    };
    assert_eq!(series.len(), 2);
    assert!(series.iter().all(|series| !series.points.is_empty()));

    match query("sum(").await {
        Err(SourceError::Rejected {
            error_type,
            message,
        }) => {
            assert_eq!(error_type, "bad_data");
            assert!(message.contains("parse error"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
