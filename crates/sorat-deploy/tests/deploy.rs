//! Deploys and rollbacks of a real Python HTTP service to three local hosts (temporary
//! folders) on their own ports.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{environment, free_port, get, service_release, wait_version};
use sorat_deploy::{
    DeployError, Host, HostOutcome, Outcome, Phase, ReleaseStatus, ServiceLine, ServiceState,
    StopOutcome, Strategy, Target, deploy, next_release_number, rollback,
};

struct Fleet {
    dir: tempfile::TempDir,
    targets: Vec<Target>,
    lines: Arc<Mutex<Vec<ServiceLine>>>,
}

fn fleet(count: usize) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let (sender, lines) = common::collect_lines();
    let targets = (0..count)
        .map(|index| {
            let host = Host::new(format!("h{index}"), dir.path().join(format!("host{index}")));
            Target::new(host, free_port()).with_lines(sender.clone())
        })
        .collect();
    Fleet {
        dir,
        targets,
        lines,
    }
}

impl Fleet {
    async fn versions(&self) -> Vec<String> {
        let mut versions = Vec::new();
        for target in &self.targets {
            versions.push(
                wait_version(target.port(), Duration::from_secs(5))
                    .await
                    .unwrap_or_else(|error| format!("down: {error}")),
            );
        }
        versions
    }

    fn currents(&self) -> Vec<Option<u32>> {
        self.targets
            .iter()
            .map(|target| target.host().unwrap().current().unwrap())
            .collect()
    }

    async fn stop(&self) {
        for target in &self.targets {
            target.stop(Duration::from_secs(3)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_roll_forward_fail_roll_back_and_recover_from_a_crash() {
    let fleet = fleet(3);
    let env = environment(Duration::from_secs(20));
    let base = fleet.dir.path();

    // v1 everywhere at once.
    assert_eq!(next_release_number(&fleet.targets).await.unwrap(), 1);
    let report = deploy(
        &env,
        &fleet.targets,
        &service_release(base, 1, "v1", "ok"),
        Strategy::AllAtOnce,
    )
    .await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert!(
        report
            .hosts
            .iter()
            .all(|host| host.outcome == HostOutcome::Deployed)
    );
    assert_eq!(fleet.versions().await, ["v1", "v1", "v1"]);
    assert_eq!(fleet.currents(), [Some(1); 3]);
    assert_eq!(
        fleet.targets[0].host().unwrap().record(1).unwrap().status,
        ReleaseStatus::Deployed
    );

    // v2, one host at a time.
    assert_eq!(next_release_number(&fleet.targets).await.unwrap(), 2);
    let report = deploy(
        &env,
        &fleet.targets,
        &service_release(base, 2, "v2", "ok"),
        Strategy::Rolling { batch: 1 },
    )
    .await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    for host in &report.hosts {
        assert_eq!((host.previous, host.current), (Some(1), Some(2)));
        for phase in [Phase::Prepare, Phase::Switch, Phase::Restart, Phase::Health] {
            assert!(host.timing(phase).is_some(), "{phase:?} timed");
        }
    }
    assert_eq!(fleet.versions().await, ["v2", "v2", "v2"]);
    {
        let lines = fleet.lines.lock().unwrap();
        let port = fleet.targets[1].port();
        assert!(
            lines.iter().any(|line| line.host == "h1"
                && line.release == 1
                && line.line == format!("listening on {port} release 1 version v1")),
            "{lines:#?}"
        );
        // v1 was stopped gracefully: its SIGTERM handler ran.
        assert!(
            lines
                .iter()
                .any(|line| line.release == 1 && line.line == "got SIGTERM, stopping")
        );
    }

    // v3 exits at once: the first batch fails, that host goes back to v2, the others are
    // never switched.
    let report = deploy(
        &env,
        &fleet.targets,
        &service_release(base, 3, "v3", "exit"),
        Strategy::Rolling { batch: 1 },
    )
    .await;
    let Outcome::RolledBack { reason } = &report.outcome else {
        panic!("{report:#?}");
    };
    assert!(
        reason.starts_with("host h0: the service would not stay up"),
        "{reason}"
    );
    assert!(reason.contains("last exit code 3"), "{reason}");
    assert_eq!(report.hosts[0].outcome, HostOutcome::FailedRolledBack);
    assert_eq!(report.hosts[0].current, Some(2));
    assert!(report.hosts[0].timing(Phase::RollbackSwitch).is_some());
    assert_eq!(report.hosts[1].outcome, HostOutcome::NotSwitched);
    assert_eq!(report.hosts[2].outcome, HostOutcome::NotSwitched);
    assert_eq!(fleet.currents(), [Some(2); 3]);
    assert_eq!(fleet.versions().await, ["v2", "v2", "v2"]);
    assert_eq!(
        fleet.targets[0].host().unwrap().record(3).unwrap().status,
        ReleaseStatus::Failed
    );
    assert_eq!(
        fleet.targets[1].host().unwrap().record(3).unwrap().status,
        ReleaseStatus::Prepared
    );
    assert!(
        fleet
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.release == 3 && line.line == "broken release: exiting at once")
    );

    // Roll back to v1 everywhere (v2 on h0 is the previous of... h0's current is 2, so `to`).
    let report = rollback(&env, &fleet.targets, Some(1)).await.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert_eq!(fleet.currents(), [Some(1); 3]);
    assert_eq!(fleet.versions().await, ["v1", "v1", "v1"]);
    for host in &report.hosts {
        let switch = host.timing(Phase::RollbackSwitch).unwrap();
        let restart = host.timing(Phase::RollbackRestart).unwrap();
        let health = host.timing(Phase::RollbackHealth).unwrap();
        println!(
            "rollback {}: switch {switch:?}, restart (stop old + start new) {restart:?}, own time {:?}; health wait {health:?}",
            host.host,
            switch + restart
        );
    }
    println!(
        "rollback of 3 hosts: {:?} in all (health waits included)",
        report.elapsed
    );
    assert_eq!(
        fleet.targets[0].host().unwrap().record(2).unwrap().status,
        ReleaseStatus::RolledBack
    );

    // kill -9 the service: the supervisor starts it again.
    let Some(ServiceState::Running { pid }) = fleet.targets[2].service_state().await else {
        panic!("not running");
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut states = fleet.targets[2].service_watch().await.unwrap();
    states
        .wait_for(|state| matches!(state, ServiceState::Running { pid: new } if *new != pid))
        .await
        .unwrap();
    assert_eq!(
        wait_version(fleet.targets[2].port(), Duration::from_secs(10))
            .await
            .unwrap(),
        "v1"
    );

    // A plain rollback goes to each host's previous release: there is none below 1.
    let error = rollback(&env, &fleet.targets, None).await.unwrap_err();
    assert!(
        matches!(error, DeployError::NoPrevious { current: 1, .. }),
        "{error}"
    );

    for target in &fleet.targets {
        assert_eq!(
            target.stop(Duration::from_secs(3)).await,
            StopOutcome::Terminated
        );
        assert!(get(target.port(), "/version").await.is_err(), "stopped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_answering_500_is_rolled_back_on_every_host_of_its_batch() {
    let fleet = fleet(3);
    let env = environment(Duration::from_secs(20));
    let base = fleet.dir.path();
    let report = deploy(
        &env,
        &fleet.targets,
        &service_release(base, 1, "v1", "ok"),
        Strategy::AllAtOnce,
    )
    .await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");

    let env = environment(Duration::from_secs(2));
    let report = deploy(
        &env,
        &fleet.targets,
        &service_release(base, 2, "v2", "500"),
        Strategy::AllAtOnce,
    )
    .await;
    let Outcome::RolledBack { reason } = &report.outcome else {
        panic!("{report:#?}");
    };
    assert!(reason.contains("answered 500, expected 200"), "{reason}");
    for host in &report.hosts {
        assert_eq!(host.outcome, HostOutcome::FailedRolledBack, "{host:#?}");
        assert_eq!(host.current, Some(1));
        assert!(host.errors[0].contains("health check failed"), "{host:#?}");
    }
    assert_eq!(fleet.currents(), [Some(1); 3]);
    assert_eq!(fleet.versions().await, ["v1", "v1", "v1"]);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_in_a_later_batch_rolls_back_the_earlier_batches_too() {
    let fleet = fleet(3);
    let env = environment(Duration::from_secs(20));
    let base = fleet.dir.path();
    let report = deploy(
        &env,
        &fleet.targets,
        &service_release(base, 1, "v1", "ok"),
        Strategy::AllAtOnce,
    )
    .await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");

    // Something else takes h2's port: any release fails there.
    fleet.targets[2].stop(Duration::from_secs(3)).await;
    let squatter = std::net::TcpListener::bind(("127.0.0.1", fleet.targets[2].port())).unwrap();

    let mut env = environment(Duration::from_secs(3));
    let (progress, mut steps) = tokio::sync::mpsc::unbounded_channel();
    env.progress = Some(progress);
    let report = deploy(
        &env,
        &fleet.targets,
        &service_release(base, 2, "v2", "ok"),
        Strategy::Rolling { batch: 2 },
    )
    .await;
    // Each step was told as it happened, in order: the first batch serves, h2 fails, the
    // finished hosts go back, h2 cannot.
    let mut told = Vec::new();
    while let Ok(step) = steps.try_recv() {
        told.push(match step.host {
            Some(host) => format!("{host}: {}", step.message),
            None => step.message,
        });
    }
    let position = |start: &str| {
        told.iter()
            .position(|step| step.starts_with(start))
            .unwrap_or_else(|| panic!("no step `{start}…` in {told:#?}"))
    };
    let order = [
        position("deploy of release 2 (web@v2) to 3 host(s) starts"),
        position("h0: release 2 prepared in "),
        position("h0: serves release 2 (switch "),
        position("h2: failed: "),
        position("deploy failed, rolling back: host h2:"),
        position("h0: back on release 1"),
        position("h2: rollback failed: "),
        position("deploy ended: failed: host h2:"),
    ];
    assert!(order.is_sorted(), "{order:?} in {told:#?}");
    // h2 fails, and so does its rollback (the port is still taken): the deploy says so.
    let Outcome::Failed { reason } = &report.outcome else {
        panic!("{report:#?}");
    };
    assert!(reason.starts_with("host h2:"), "{reason}");
    assert_eq!(report.hosts[0].outcome, HostOutcome::RolledBack);
    assert_eq!(report.hosts[1].outcome, HostOutcome::RolledBack);
    assert_eq!(report.hosts[2].outcome, HostOutcome::RollbackFailed);
    assert!(
        report.hosts[2]
            .errors
            .iter()
            .any(|error| error.starts_with("rollback:")),
        "{:#?}",
        report.hosts[2]
    );
    // Nobody is left on v2.
    assert_eq!(fleet.currents(), [Some(1); 3]);
    assert_eq!(
        wait_version(fleet.targets[0].port(), Duration::from_secs(5))
            .await
            .unwrap(),
        "v1"
    );
    assert_eq!(
        wait_version(fleet.targets[1].port(), Duration::from_secs(5))
            .await
            .unwrap(),
        "v1"
    );
    assert_eq!(
        fleet.targets[0].host().unwrap().record(2).unwrap().status,
        ReleaseStatus::RolledBack
    );
    assert_eq!(
        fleet.targets[2].host().unwrap().record(2).unwrap().status,
        ReleaseStatus::Failed
    );
    drop(squatter);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_deploy_leaves_no_current_release() {
    let fleet = fleet(2);
    let env = environment(Duration::from_secs(20));
    let report = deploy(
        &env,
        &fleet.targets,
        &service_release(fleet.dir.path(), 1, "v1", "exit"),
        Strategy::AllAtOnce,
    )
    .await;
    assert!(
        matches!(report.outcome, Outcome::RolledBack { .. }),
        "{report:#?}"
    );
    assert_eq!(fleet.currents(), [None, None]);
    // In one batch, the host whose check fails first is "failed, rolled back"; the other
    // may be rolled back before its own check has failed: either way nothing is current.
    assert!(
        report
            .hosts
            .iter()
            .any(|host| host.outcome == HostOutcome::FailedRolledBack),
        "{report:#?}"
    );
    for (host, target) in report.hosts.iter().zip(&fleet.targets) {
        assert!(
            matches!(
                host.outcome,
                HostOutcome::FailedRolledBack | HostOutcome::RolledBack
            ),
            "{report:#?}"
        );
        assert_eq!(host.current, None);
        assert_eq!(target.service_state().await, None);
    }
    let error = rollback(&env, &fleet.targets, None).await.unwrap_err();
    assert!(
        matches!(error, DeployError::NothingDeployed { .. }),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_digest_aborts_before_any_host_switches_and_rollback_refuses_a_missing_release() {
    let fleet = fleet(3);
    let env = environment(Duration::from_secs(20));
    let base = fleet.dir.path();
    let report = deploy(
        &env,
        &fleet.targets,
        &service_release(base, 1, "v1", "ok"),
        Strategy::AllAtOnce,
    )
    .await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");

    let mut bad = service_release(base, 2, "v2", "ok");
    bad.files[0].digest = format!("sha256:{}", "1".repeat(64));
    let report = deploy(&env, &fleet.targets, &bad, Strategy::Rolling { batch: 1 }).await;
    let Outcome::Aborted { reason } = &report.outcome else {
        panic!("{report:#?}");
    };
    assert!(reason.contains("server.py: digest mismatch"), "{reason}");
    assert!(
        report
            .hosts
            .iter()
            .all(|host| host.outcome == HostOutcome::PrepareFailed)
    );
    for target in &fleet.targets {
        assert!(!target.host().unwrap().release_path(2).exists());
    }
    assert_eq!(fleet.currents(), [Some(1); 3]);

    // Release 1 pruned on one host: a rollback to it is refused before any host moves.
    let report = deploy(
        &env,
        &fleet.targets,
        &service_release(base, 3, "v3", "ok"),
        Strategy::AllAtOnce,
    )
    .await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    fleet.targets[1].host().unwrap().remove(1, &[]).unwrap();
    let error = rollback(&env, &fleet.targets, Some(1)).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("cannot roll back host h1 to release 1: it does not exist there"),
        "{error}"
    );
    assert_eq!(fleet.currents(), [Some(3); 3]);
    // Pruning refuses what a rollback needs.
    let error = fleet.targets[0].host().unwrap().prune(1, &[1]).unwrap_err();
    assert!(error.to_string().contains("a rollback needs it"), "{error}");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_runs_the_release_with_the_configuration_it_was_deployed_with() {
    let fleet = fleet(2);
    let base = fleet.dir.path();
    let with_greeting = |greeting: &str| {
        let mut env = environment(Duration::from_secs(20));
        env.service
            .env
            .push(("GREETING".to_owned(), greeting.to_owned()));
        env
    };
    let first = with_greeting("one");
    let report = deploy(
        &first,
        &fleet.targets,
        &service_release(base, 1, "v1", "ok"),
        Strategy::AllAtOnce,
    )
    .await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    // The configuration changed with release 2 (sorat.yaml was edited).
    let second = with_greeting("two");
    let report = deploy(
        &second,
        &fleet.targets,
        &service_release(base, 2, "v2", "ok"),
        Strategy::AllAtOnce,
    )
    .await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    for target in &fleet.targets {
        assert_eq!(get(target.port(), "/env").await.unwrap().1, "two");
    }
    let record = fleet.targets[0].host().unwrap().record(1).unwrap();
    let config = record.config.unwrap();
    assert!(
        config
            .env
            .contains(&("GREETING".to_owned(), "one".to_owned())),
        "{config:?}"
    );
    // Back to 1 with today's configuration: release 1 runs as it was deployed.
    let report = rollback(&second, &fleet.targets, None).await.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    for target in &fleet.targets {
        assert_eq!(get(target.port(), "/version").await.unwrap().1, "v1");
        assert_eq!(get(target.port(), "/env").await.unwrap().1, "one");
    }
    fleet.stop().await;
}
