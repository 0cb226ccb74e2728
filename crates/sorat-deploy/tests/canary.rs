//! Canary steps and the bake window, judged by a real Prometheus 2.42 that scrapes the
//! deployed services themselves: three local hosts run the Python service, a load generator
//! calls `/` on each, and the analysis queries the error ratio of what the hosts answer.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::{environment, free_port, service_release, wait_version};
use sorat_deploy::analysis::{
    Analysis, AnalysisOutcome, MeasurementPhase, Metric, MetricsSource, PrometheusSource,
    QueryResult,
};
use sorat_deploy::deploy::{AnalysisStep, Bake, CanaryStep, Decision, Judge};
use sorat_deploy::{Host, HostOutcome, Outcome, Strategy, Target, deploy};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const ERROR_RATIO: &str =
    r#"sum(rate(http_requests_total{code="500"}[4s])) / sum(rate(http_requests_total[4s]))"#;

/// Answers every question the same way and remembers who asked.
#[derive(Debug)]
struct FixedJudge {
    answer: Decision,
    asked: std::sync::Mutex<Vec<(String, u32)>>,
}

impl Judge for FixedJudge {
    fn decide<'a>(
        &'a self,
        environment: &'a str,
        release: u32,
        _analysis: &'a str,
        _reason: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Decision> + Send + 'a>> {
        self.asked
            .lock()
            .unwrap()
            .push((environment.to_owned(), release));
        let answer = self.answer.clone();
        Box::pin(async move { answer })
    }
}

/// A Prometheus scraping `ports` every second; killed (and its folder removed) on drop.
struct Prometheus {
    url: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(ports: &[u16]) -> Prometheus {
    assert!(
        std::path::Path::new(PROMETHEUS).exists(),
        "{PROMETHEUS} is missing: run .ci/test, which installs Debian's `prometheus` package"
    );
    let dir = tempfile::tempdir().unwrap();
    let targets: Vec<String> = ports
        .iter()
        .map(|port| format!("'127.0.0.1:{port}'"))
        .collect();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: web\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = std::process::Command::new(PROMETHEUS)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Prometheus {
        url: format!("http://127.0.0.1:{port}"),
        child,
        _dir: dir,
    }
}

/// Calls `/` on every port every 20 ms until the returned handle is aborted.
fn load(ports: Vec<u16>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        loop {
            for port in &ports {
                let _ = client.get(format!("http://127.0.0.1:{port}/")).send().await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// Waits until the error ratio has a value: Prometheus scrapes about five seconds after it
/// starts, and a rate needs two scrapes.
async fn wait_for_scrapes(source: &Arc<dyn MetricsSource>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        if let Ok(QueryResult::Vector(samples)) = source.query(ERROR_RATIO).await
            && !samples.is_empty()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus did not scrape the services"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn error_ratio_analysis(source: &Arc<dyn MetricsSource>) -> Arc<AnalysisStep> {
    let metric = Metric::new("error-ratio", ERROR_RATIO)
        .with_initial_delay(Duration::from_secs(5))
        .with_interval(Duration::from_secs(1))
        .with_count(3)
        .with_success_condition("result[0] < 0.05");
    Arc::new(AnalysisStep {
        name: "error-ratio".to_owned(),
        analysis: Analysis::new(vec![metric]).unwrap(),
        source: Arc::clone(source),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_analysis_and_bake_window_against_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let targets: Vec<Target> = (0..3)
        .map(|index| {
            Target::new(
                Host::new(format!("h{index}"), base.join(format!("host{index}"))),
                free_port(),
            )
        })
        .collect();
    let ports: Vec<u16> = targets.iter().map(Target::port).collect();
    let prometheus = start_prometheus(&ports);
    let source: Arc<dyn MetricsSource> = Arc::new(PrometheusSource::new(&prometheus.url).unwrap());
    let mut env = environment(Duration::from_secs(20));

    let v1 = service_release(base, 1, "v1", "ok");
    let report = deploy(&env, &targets, &v1, Strategy::AllAtOnce).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    let traffic = load(ports.clone());
    wait_for_scrapes(&source).await;
    let analysis = error_ratio_analysis(&source);
    let canary = Strategy::Canary {
        steps: vec![
            CanaryStep::Hosts(1),
            CanaryStep::Analysis(Arc::clone(&analysis)),
            CanaryStep::Percent(100),
        ],
    };

    // A good release: the canary host passes its analysis, then the rest follow.
    let v2 = service_release(base, 2, "v2", "ok");
    let report = deploy(&env, &targets, &v2, canary.clone()).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert_eq!(report.analyses.len(), 1);
    let (name, measured) = &report.analyses[0];
    assert_eq!(name, "error-ratio");
    assert_eq!(
        measured.outcome,
        AnalysisOutcome::Successful,
        "{measured:#?}"
    );
    assert_eq!(measured.metrics[0].measurements.len(), 3);
    for port in &ports {
        assert_eq!(
            wait_version(*port, Duration::from_secs(5)).await.unwrap(),
            "v2"
        );
    }

    // A release that answers 500 on `/` (its health check still passes): the analysis of the
    // canary host fails, the canary goes back to 2, the other hosts never saw 3.
    let v3 = service_release(base, 3, "v3", "errors");
    let report = deploy(&env, &targets, &v3, canary.clone()).await;
    let Outcome::RolledBack { reason } = &report.outcome else {
        panic!("{report:#?}")
    };
    assert!(reason.contains("analysis error-ratio failed"), "{reason}");
    let outcomes: Vec<_> = report
        .hosts
        .iter()
        .map(|host| host.outcome.clone())
        .collect();
    assert_eq!(
        outcomes,
        [
            HostOutcome::RolledBack,
            HostOutcome::NotSwitched,
            HostOutcome::NotSwitched
        ]
    );
    let measurements = &report.analyses[0].1.metrics[0].measurements;
    assert!(
        measurements
            .iter()
            .any(|measurement| measurement.phase == MeasurementPhase::Failed),
        "{measurements:#?}"
    );
    for port in &ports {
        assert_eq!(
            wait_version(*port, Duration::from_secs(5)).await.unwrap(),
            "v2"
        );
    }

    // The bake window: every host on 4 at once, passing its health checks, but the error
    // ratio measured during the bake fails: every host goes back to 2, and why is recorded.
    env.bake = Some(Bake {
        duration: Duration::from_secs(8),
        analysis: Some(Arc::clone(&analysis)),
    });
    let v4 = service_release(base, 4, "v4", "errors");
    let report = deploy(&env, &targets, &v4, Strategy::AllAtOnce).await;
    let Outcome::RolledBack { reason } = &report.outcome else {
        panic!("{report:#?}")
    };
    assert!(
        reason.starts_with("bake window: analysis error-ratio failed"),
        "{reason}"
    );
    assert!(matches!(&report.bake, Some(Some(_))), "{report:#?}");
    assert!(
        report
            .hosts
            .iter()
            .all(|host| host.outcome == HostOutcome::RolledBack && host.current == Some(2)),
        "{report:#?}"
    );

    // A good release bakes through.
    let v5 = service_release(base, 5, "v5", "ok");
    let report = deploy(&env, &targets, &v5, Strategy::AllAtOnce).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert_eq!(report.bake, Some(None));
    assert_eq!(report.analyses[0].1.outcome, AnalysisOutcome::Successful);

    // Inconclusive (1 host of 3 failing: an error ratio near 1/3, neither below 5% nor above
    // 60%): the deploy waits for a decision. Promoted, it goes on; aborted, it rolls back.
    env.bake = None;
    let metric = Metric::new("error-ratio", ERROR_RATIO)
        .with_initial_delay(Duration::from_secs(5))
        .with_interval(Duration::from_secs(1))
        .with_count(2)
        .with_success_condition("result[0] < 0.05")
        .with_failure_condition("result[0] > 0.6");
    let unsure = Arc::new(AnalysisStep {
        name: "unsure".to_owned(),
        analysis: Analysis::new(vec![metric]).unwrap(),
        source: Arc::clone(&source),
    });
    let canary = Strategy::Canary {
        steps: vec![
            CanaryStep::Hosts(1),
            CanaryStep::Analysis(Arc::clone(&unsure)),
        ],
    };
    let judge = Arc::new(FixedJudge {
        answer: Decision::Abort {
            by: "carol".to_owned(),
        },
        asked: std::sync::Mutex::new(Vec::new()),
    });
    env.judge = Some(judge.clone());
    let v6 = service_release(base, 6, "v6", "errors");
    let report = deploy(&env, &targets, &v6, canary.clone()).await;
    let Outcome::RolledBack { reason } = &report.outcome else {
        panic!("{report:#?}")
    };
    assert!(
        reason.contains("analysis unsure was inconclusive") && reason.ends_with("aborted by carol"),
        "{reason}"
    );
    assert_eq!(
        judge.asked.lock().unwrap().as_slice(),
        [("staging".to_owned(), 6)]
    );
    let judge = Arc::new(FixedJudge {
        answer: Decision::Promote {
            by: "dave".to_owned(),
        },
        asked: std::sync::Mutex::new(Vec::new()),
    });
    env.judge = Some(judge.clone());
    let v7 = service_release(base, 7, "v7", "errors");
    let report = deploy(&env, &targets, &v7, canary).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert!(matches!(
        report.analyses[0].1.outcome,
        AnalysisOutcome::Inconclusive { .. }
    ));
    assert_eq!(judge.asked.lock().unwrap().len(), 1);
    for port in &ports {
        assert_eq!(
            wait_version(*port, Duration::from_secs(5)).await.unwrap(),
            "v7"
        );
    }

    traffic.abort();
    for target in &targets {
        target.stop(Duration::from_secs(3)).await;
    }
}

/// Blue-green with a pre-promotion analysis: Prometheus scrapes both slots of the host, the
/// load reaches both (as a preview's smoke traffic would), and a release answering 500 in its
/// slot fails the analysis before any traffic is switched to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_pre_promotion_analysis_against_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let slots = [free_port(), free_port()];
    let public = free_port();
    let targets = vec![
        Target::new(Host::new("h0", base.join("host0")), public).with_slots(
            sorat_deploy::BlueGreenSlots {
                ports: slots,
                listen: [127, 0, 0, 1].into(),
                scale_down_delay: Duration::from_secs(600),
            },
        ),
    ];
    let prometheus = start_prometheus(&slots);
    let source: Arc<dyn MetricsSource> = Arc::new(PrometheusSource::new(&prometheus.url).unwrap());
    let env = environment(Duration::from_secs(20));
    let report = deploy(
        &env,
        &targets,
        &service_release(base, 1, "v1", "ok"),
        Strategy::AllAtOnce,
    )
    .await;
    // Whatever the strategy, a slotted target's release starts in a slot and is switched to.
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    let traffic = load(slots.to_vec());
    wait_for_scrapes(&source).await;
    let blue_green = Strategy::BlueGreen {
        pre_promotion: Some(error_ratio_analysis(&source)),
        auto_promote: true,
    };

    let report = deploy(
        &env,
        &targets,
        &service_release(base, 2, "v2", "errors"),
        blue_green.clone(),
    )
    .await;
    let Outcome::Aborted { reason } = &report.outcome else {
        panic!("{report:#?}")
    };
    assert!(reason.contains("analysis error-ratio failed"), "{reason}");
    assert_eq!(report.hosts[0].outcome, HostOutcome::NotSwitched);
    assert_eq!(report.hosts[0].current, Some(1));
    assert_eq!(
        wait_version(public, Duration::from_secs(5)).await.unwrap(),
        "v1"
    );
    assert!(
        common::get(slots[1], "/version").await.is_err(),
        "v2 still runs in its slot"
    );

    let report = deploy(
        &env,
        &targets,
        &service_release(base, 3, "v3", "ok"),
        blue_green,
    )
    .await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert_eq!(
        report.analyses[0].1.outcome,
        AnalysisOutcome::Successful,
        "{report:#?}"
    );
    assert_eq!(
        wait_version(public, Duration::from_secs(5)).await.unwrap(),
        "v3"
    );
    traffic.abort();
    targets[0].stop(Duration::from_secs(3)).await;
}
