//! Blue-green deploys of a real Python HTTP service to local hosts: the release starts in the
//! idle slot, is checked there, and Sorat's router on the host's port switches to it; a
//! client hammering that port meanwhile sees no failed request.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{environment, free_port, get, service_release};
use sorat_deploy::deploy::{Decision, Judge};
use sorat_deploy::{
    BlueGreenSlots, DeployReport, Environment, Host, HostOutcome, Outcome, Phase, ServiceLine,
    Strategy, Target, deploy, rollback,
};
use tokio::sync::mpsc;

struct Fleet {
    dir: tempfile::TempDir,
    targets: Vec<Target>,
    lines: Arc<Mutex<Vec<ServiceLine>>>,
}

/// A host's port and its two slots' ports.
type Ports = (u16, [u16; 2]);

fn targets(
    dir: &std::path::Path,
    ports: &[Ports],
    delay: Duration,
    sender: &mpsc::Sender<ServiceLine>,
) -> Vec<Target> {
    ports
        .iter()
        .enumerate()
        .map(|(index, (port, slots))| {
            let host = Host::new(format!("h{index}"), dir.join(format!("host{index}")));
            Target::new(host, *port)
                .with_slots(BlueGreenSlots {
                    ports: *slots,
                    listen: [127, 0, 0, 1].into(),
                    scale_down_delay: delay,
                })
                .with_lines(sender.clone())
        })
        .collect()
}

fn fleet(count: usize, delay: Duration) -> (Fleet, Vec<Ports>, mpsc::Sender<ServiceLine>) {
    let dir = tempfile::tempdir().unwrap();
    let (sender, lines) = common::collect_lines();
    let ports: Vec<Ports> = (0..count)
        .map(|_| (free_port(), [free_port(), free_port()]))
        .collect();
    let targets = targets(dir.path(), &ports, delay, &sender);
    (
        Fleet {
            dir,
            targets,
            lines,
        },
        ports,
        sender,
    )
}

impl Fleet {
    /// Deploys the Python service's release `number` at `version` in `mode`.
    async fn deploy(
        &self,
        env: &Environment,
        number: u32,
        version: &str,
        mode: &str,
        strategy: Strategy,
    ) -> DeployReport {
        let release = service_release(self.dir.path(), number, version, mode);
        deploy(env, &self.targets, &release, strategy).await
    }

    /// How many times release `release` started listening on host `host`.
    fn starts(&self, host: &str, release: u32) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| {
                line.host == host
                    && line.release == release
                    && line.line.starts_with("listening on")
            })
            .count()
    }

    async fn stop(&self) {
        for target in &self.targets {
            target.stop(Duration::from_secs(3)).await;
        }
    }
}

/// Asks `GET /version` on `port` in a loop until told to stop; returns every answer (or
/// error) in order.
fn hammer(
    port: u16,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Result<String, String>>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            seen.push(match get(port, "/version").await {
                Ok((200, body)) => Ok(body),
                other => Err(format!("{other:?}")),
            });
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen
    })
}

/// The versions a hammer saw, each run of equal answers once, and its failures.
fn summary(seen: &[Result<String, String>]) -> (Vec<String>, Vec<String>) {
    let mut versions: Vec<String> = Vec::new();
    let mut failures = Vec::new();
    for answer in seen {
        match answer {
            Ok(version) => {
                if versions.last() != Some(version) {
                    versions.push(version.clone());
                }
            }
            Err(error) => failures.push(error.clone()),
        }
    }
    (versions, failures)
}

fn blue_green() -> Strategy {
    Strategy::BlueGreen {
        pre_promotion: None,
        auto_promote: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switches_without_a_failed_request_and_rolls_back_by_switching_back() {
    let (fleet, ports, _sender) = fleet(2, Duration::from_secs(600));
    let env = environment(Duration::from_secs(20));
    let public = ports[0].0;

    let report = fleet.deploy(&env, 1, "v1", "ok", blue_green()).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert_eq!(
        fleet.targets[0].serving_slot().await,
        Some(("blue", ports[0].1[0], 1))
    );
    assert_eq!(
        get(public, "/version").await.unwrap(),
        (200, "v1".to_owned())
    );
    // The slot's own port answers too; the router is in front of it.
    assert_eq!(get(ports[0].1[0], "/version").await.unwrap().1, "v1");

    // v2 while a client keeps asking: every request answered, v1 then v2, never back.
    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(public, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = fleet.deploy(&env, 2, "v2", "ok", blue_green()).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    for host in &report.hosts {
        assert_eq!(host.outcome, HostOutcome::Deployed);
        assert_eq!((host.previous, host.current), (Some(1), Some(2)));
        for phase in [Phase::Prepare, Phase::Restart, Phase::Health, Phase::Switch] {
            assert!(host.timing(phase).is_some(), "{phase:?} timed: {host:#?}");
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (index, target) in fleet.targets.iter().enumerate() {
        assert_eq!(
            target.serving_slot().await,
            Some(("green", ports[index].1[1], 2))
        );
        // v1 keeps running in blue for the scale-down delay.
        assert_eq!(target.standby_slot().await, Some(("blue", 1)));
        assert_eq!(target.host().unwrap().current().unwrap(), Some(2));
    }
    assert_eq!(get(ports[0].1[0], "/version").await.unwrap().1, "v1");

    // Rollback within the delay: a switch back to the v1 still running, not a start.
    let report = rollback(&env, &fleet.targets, None).await.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = client.await.unwrap();
    let (versions, failures) = summary(&seen);
    println!("{} requests during the deploy and the rollback", seen.len());
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(versions, ["v1", "v2", "v1"], "{seen:?}");
    assert!(
        seen.len() > 20,
        "the client asked only {} times",
        seen.len()
    );
    for (index, target) in fleet.targets.iter().enumerate() {
        let name = format!("h{index}");
        assert_eq!(fleet.starts(&name, 1), 1, "v1 was started once on {name}");
        assert_eq!(
            target.serving_slot().await,
            Some(("blue", ports[index].1[0], 1))
        );
        assert_eq!(target.standby_slot().await, Some(("green", 2)));
        assert_eq!(target.host().unwrap().current().unwrap(), Some(1));
    }

    // v3 fails its health check in the idle slot: nothing switches, v1 keeps serving.
    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(public, Arc::clone(&stop));
    let mut impatient = env.clone();
    impatient.health.timeout = Duration::from_secs(2);
    let report = fleet.deploy(&impatient, 3, "v3", "500", blue_green()).await;
    stop.store(true, Ordering::Relaxed);
    let Outcome::Aborted { reason } = &report.outcome else {
        panic!("{report:#?}");
    };
    assert!(reason.contains("failed in its slot"), "{reason}");
    for host in &report.hosts {
        assert_eq!(host.outcome, HostOutcome::PreviewFailed, "{host:#?}");
        assert_eq!(host.current, Some(1));
    }
    let (versions, failures) = summary(&client.await.unwrap());
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(versions, ["v1"]);
    for (index, target) in fleet.targets.iter().enumerate() {
        assert_eq!(
            target.serving_slot().await,
            Some(("blue", ports[index].1[0], 1))
        );
        assert_eq!(target.host().unwrap().current().unwrap(), Some(1));
        // v3 was stopped: its slot answers nothing.
        assert!(get(ports[index].1[1], "/version").await.is_err());
    }

    // Stopping closes the router too: the host's port answers nothing.
    fleet.stop().await;
    assert!(get(public, "/version").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_release_stops_after_the_delay_and_a_later_rollback_starts_it_again() {
    let (fleet, ports, sender) = fleet(1, Duration::from_millis(300));
    let env = environment(Duration::from_secs(20));
    for (number, version) in [(1, "v1"), (2, "v2")] {
        let report = fleet
            .deploy(&env, number, version, "ok", blue_green())
            .await;
        assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fleet.targets[0].standby_slot().await, None);
    assert!(
        get(ports[0].1[0], "/version").await.is_err(),
        "v1 still answers in blue"
    );
    let report = rollback(&env, &fleet.targets, None).await.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert_eq!(
        fleet.starts("h0", 1),
        2,
        "v1 started again for the rollback"
    );
    assert_eq!(get(ports[0].0, "/version").await.unwrap().1, "v1");
    assert!(report.hosts[0].timing(Phase::RollbackHealth).is_some());

    // Sorat restarts (its local services ended with it): the current release comes back in
    // a slot behind the router.
    fleet.stop().await;
    assert!(get(ports[0].0, "/version").await.is_err());
    let again = targets(
        fleet.dir.path(),
        &ports,
        Duration::from_millis(300),
        &sender,
    );
    assert_eq!(again[0].start(&env).await.unwrap(), Some(1));
    assert_eq!(
        common::wait_version(ports[0].0, Duration::from_secs(10))
            .await
            .unwrap(),
        "v1"
    );
    for target in &again {
        target.stop(Duration::from_secs(3)).await;
    }
}

/// A person who looks at the new release in its slot before promoting (or aborting) it.
#[derive(Debug)]
struct Reviewer {
    promote: bool,
    slot_port: u16,
    public_port: u16,
    saw: Mutex<Option<(String, String)>>,
}

impl Judge for Reviewer {
    fn decide<'a>(
        &'a self,
        _environment: &'a str,
        _release: u32,
        analysis: &'a str,
        _reason: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Decision> + Send + 'a>> {
        Box::pin(async move {
            assert_eq!(analysis, "promotion");
            let preview = get(self.slot_port, "/version").await.unwrap().1;
            let live = get(self.public_port, "/version").await.unwrap().1;
            *self.saw.lock().unwrap() = Some((preview, live));
            if self.promote {
                Decision::Promote {
                    by: "alice".to_owned(),
                }
            } else {
                Decision::Abort {
                    by: "bob".to_owned(),
                }
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_promotion_a_person_sees_the_new_release_before_it_serves() {
    let (fleet, ports, _sender) = fleet(1, Duration::from_secs(600));
    let mut env = environment(Duration::from_secs(20));
    let manual = Strategy::BlueGreen {
        pre_promotion: None,
        auto_promote: false,
    };
    // Nobody to ask: the deploy does not switch on its own.
    let report = fleet.deploy(&env, 1, "v1", "ok", manual.clone()).await;
    let Outcome::Aborted { reason } = &report.outcome else {
        panic!("{report:#?}");
    };
    assert!(reason.contains("was not promoted"), "{reason}");
    assert_eq!(fleet.targets[0].host().unwrap().current().unwrap(), None);
    assert!(get(ports[0].0, "/version").await.is_err());
    assert!(
        get(ports[0].1[0], "/version").await.is_err(),
        "the preview was stopped"
    );

    let report = fleet.deploy(&env, 2, "v1", "ok", blue_green()).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");

    for (promote, version) in [(false, "v2"), (true, "v3")] {
        let reviewer = Arc::new(Reviewer {
            promote,
            slot_port: ports[0].1[1],
            public_port: ports[0].0,
            saw: Mutex::new(None),
        });
        env.judge = Some(Arc::clone(&reviewer) as Arc<dyn Judge>);
        let number = if promote { 4 } else { 3 };
        let report = fleet
            .deploy(&env, number, version, "ok", manual.clone())
            .await;
        assert_eq!(
            reviewer.saw.lock().unwrap().clone(),
            Some((version.to_owned(), "v1".to_owned())),
            "the reviewer saw the new release in green while blue served"
        );
        let live = get(ports[0].0, "/version").await.unwrap().1;
        if promote {
            assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
            assert_eq!(live, "v3");
        } else {
            let Outcome::Aborted { reason } = &report.outcome else {
                panic!("{report:#?}");
            };
            assert!(reason.contains("aborted by bob"), "{reason}");
            assert_eq!(live, "v1");
            assert!(get(ports[0].1[1], "/version").await.is_err());
        }
    }
    fleet.stop().await;
}

/// A release that passes its check in the slot and then degrades: the bake window catches it
/// and every host goes back at once to the release still running in the other slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_bake_switches_back_to_the_release_still_running() {
    let (fleet, ports, _sender) = fleet(2, Duration::from_secs(600));
    let mut env = environment(Duration::from_secs(20));
    let report = fleet.deploy(&env, 1, "v1", "ok", blue_green()).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    env.bake = Some(sorat_deploy::deploy::Bake {
        duration: Duration::from_secs(10),
        analysis: None,
    });
    // The bake counts a host failed after this many failed attempts in a row (each attempt
    // one probe; the 20 s health timeout plays no part).
    env.health.failure_threshold = 3;
    let report = fleet.deploy(&env, 2, "v2", "degrade", blue_green()).await;
    let Outcome::RolledBack { reason } = &report.outcome else {
        panic!("{report:#?}")
    };
    assert!(reason.starts_with("bake window: host h"), "{reason}");
    assert!(
        reason.contains("health check failed 3 times in a row: GET http://127.0.0.1:"),
        "{reason}"
    );
    for (index, target) in fleet.targets.iter().enumerate() {
        assert_eq!(
            target.serving_slot().await,
            Some(("blue", ports[index].1[0], 1))
        );
        assert_eq!(target.host().unwrap().current().unwrap(), Some(1));
        let name = format!("h{index}");
        assert_eq!(fleet.starts(&name, 1), 1, "v1 kept running on {name}");
        let host = &report.hosts[index];
        assert_eq!(host.outcome, HostOutcome::RolledBack, "{host:#?}");
        // Going back was a switch: no start-up waited for.
        assert!(
            host.timing(Phase::RollbackHealth).unwrap() < Duration::from_secs(1),
            "{host:#?}"
        );
    }
    assert_eq!(get(ports[0].0, "/version").await.unwrap().1, "v1");
    fleet.stop().await;
}
