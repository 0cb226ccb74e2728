//! The supervisor with real processes: output lines, crashes and backoff, giving up, stops.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use sorat_deploy::{
    RestartPolicy, ServiceLine, ServiceSpec, ServiceState, StopOutcome, Stream, Supervisor,
};
use tokio::sync::{broadcast, mpsc};

fn spec(dir: &Path, command: &str) -> ServiceSpec {
    ServiceSpec {
        host: "h1".to_owned(),
        release: 7,
        command: command.to_owned(),
        working_dir: dir.to_path_buf(),
        port: 4321,
        env: vec![("GREETING".to_owned(), "hello".to_owned())],
        restart: RestartPolicy::default(),
    }
}

async fn next_line(lines: &mut mpsc::Receiver<ServiceLine>) -> ServiceLine {
    tokio::time::timeout(Duration::from_secs(10), lines.recv())
        .await
        .expect("a line within 10 s")
        .expect("the channel is open")
}

async fn wait_for(
    events: &mut broadcast::Receiver<ServiceState>,
    matches: impl Fn(&ServiceState) -> bool,
) -> Vec<ServiceState> {
    let mut seen = Vec::new();
    loop {
        let state = tokio::time::timeout(Duration::from_secs(15), events.recv())
            .await
            .unwrap_or_else(|_| panic!("state not reached; saw {seen:?}"))
            .unwrap();
        seen.push(state.clone());
        if matches(&state) {
            return seen;
        }
    }
}

#[tokio::test]
async fn lines_are_tagged_and_the_environment_is_given() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("marker"), "in the working dir\n").unwrap();
    let (sender, mut lines) = mpsc::channel(16);
    let supervisor = Supervisor::start(
        spec(
            dir.path(),
            r#"echo "port=$PORT release=$SORAT_RELEASE greeting=$GREETING"; cat marker; echo oops >&2; exec sleep 30"#,
        ),
        Some(sender),
    );
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_line(&mut lines).await);
    }
    got.sort_by_key(|line| line.line.clone());
    assert_eq!(
        got,
        vec![
            ServiceLine {
                host: "h1".to_owned(),
                release: 7,
                stream: Stream::Stdout,
                line: "in the working dir".to_owned()
            },
            ServiceLine {
                host: "h1".to_owned(),
                release: 7,
                stream: Stream::Stderr,
                line: "oops".to_owned()
            },
            ServiceLine {
                host: "h1".to_owned(),
                release: 7,
                stream: Stream::Stdout,
                line: "port=4321 release=7 greeting=hello".to_owned()
            },
        ]
    );
    let pid = supervisor.running().await.unwrap();
    assert!(pid > 0);
    assert_eq!(supervisor.state(), ServiceState::Running { pid });
    assert_eq!(
        supervisor.stop(Duration::from_secs(2)).await,
        StopOutcome::Terminated
    );
}

#[tokio::test]
async fn a_service_exiting_at_once_is_reported_backed_off_and_given_up_on() {
    let dir = tempfile::tempdir().unwrap();
    let (sender, mut lines) = mpsc::channel(64);
    let mut service = spec(dir.path(), "echo starting; exit 3");
    service.restart.max_rapid_failures = 4;
    let started = Instant::now();
    let supervisor = Supervisor::start(service, Some(sender));
    let mut events = supervisor.subscribe();
    let seen = wait_for(&mut events, |state| {
        matches!(state, ServiceState::Failed { .. })
    })
    .await;
    let elapsed = started.elapsed();
    let exits: Vec<_> = seen
        .iter()
        .filter(|state| matches!(state, ServiceState::Exited { .. }))
        .collect();
    assert!(
        exits
            .iter()
            .all(|state| **state == ServiceState::Exited { code: 3 }),
        "{seen:?}"
    );
    let delays: Vec<Duration> = seen
        .iter()
        .filter_map(|state| match state {
            ServiceState::Backoff { delay } => Some(*delay),
            _ => None,
        })
        .collect();
    // The subscription may miss the very first states; the delays seen must double.
    assert!(delays.len() >= 2, "{seen:?}");
    for pair in delays.windows(2) {
        assert_eq!(pair[1], pair[0] * 2, "{delays:?}");
    }
    assert_eq!(*delays.last().unwrap(), Duration::from_millis(400));
    let ServiceState::Failed { reason } = supervisor.state() else {
        panic!("not failed: {:?}", supervisor.state());
    };
    assert!(reason.contains("exited 4 times in a row"), "{reason}");
    assert!(reason.contains("last exit code 3"), "{reason}");
    assert!(supervisor.failed().await.contains("giving up"));
    // 100 + 200 + 400 ms of backoff: it gave up, it did not spin.
    assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");
    let mut starts = 0;
    while let Ok(line) = lines.try_recv() {
        assert_eq!(line.line, "starting");
        starts += 1;
    }
    assert_eq!(starts, 4);
    assert_eq!(
        supervisor.stop(Duration::from_secs(1)).await,
        StopOutcome::NotRunning
    );
}

#[tokio::test]
async fn backoff_is_capped_and_a_service_up_long_enough_resets_the_failure_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = spec(dir.path(), "sleep 0.3; exit 1");
    service.restart = RestartPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(40),
        // Each run (0.3 s) counts as up long enough: the count never reaches the limit.
        reset_after: Duration::from_millis(200),
        max_rapid_failures: 2,
    };
    let supervisor = Supervisor::start(service, None);
    let mut events = supervisor.subscribe();
    let seen = wait_for(&mut events, {
        let mut backoffs = 0;
        let counter = std::cell::Cell::new(0);
        let _ = &mut backoffs;
        move |state| {
            if matches!(state, ServiceState::Backoff { .. }) {
                counter.set(counter.get() + 1);
            }
            counter.get() == 4
        }
    })
    .await;
    assert!(
        !seen
            .iter()
            .any(|state| matches!(state, ServiceState::Failed { .. })),
        "{seen:?}"
    );
    assert!(seen
        .iter()
        .all(|state| !matches!(state, ServiceState::Backoff { delay } if *delay != Duration::from_millis(20))));
    supervisor.stop(Duration::from_secs(1)).await;

    // Without the reset, the delays double up to the cap.
    let mut service = spec(dir.path(), "exit 1");
    service.restart = RestartPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        reset_after: Duration::from_secs(30),
        max_rapid_failures: 6,
    };
    let supervisor = Supervisor::start(service, None);
    let mut events = supervisor.subscribe();
    let seen = wait_for(&mut events, |state| {
        matches!(state, ServiceState::Failed { .. })
    })
    .await;
    let delays: Vec<Duration> = seen
        .iter()
        .filter_map(|state| match state {
            ServiceState::Backoff { delay } => Some(*delay),
            _ => None,
        })
        .collect();
    assert!(
        delays.ends_with(&[Duration::from_millis(40), Duration::from_millis(40)]),
        "{delays:?}"
    );
    supervisor.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_killed_service_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::start(spec(dir.path(), "exec sleep 60"), None);
    let first = supervisor.running().await.unwrap();
    let mut events = supervisor.subscribe();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let seen = wait_for(&mut events, |state| {
        matches!(state, ServiceState::Running { .. })
    })
    .await;
    assert!(
        seen.contains(&ServiceState::Exited { code: 128 + 9 }),
        "{seen:?}"
    );
    assert!(
        seen.contains(&ServiceState::Backoff {
            delay: Duration::from_millis(100)
        }),
        "{seen:?}"
    );
    let ServiceState::Running { pid: second } = supervisor.state() else {
        panic!("{:?}", supervisor.state());
    };
    assert_ne!(first, second);
    assert_eq!(
        supervisor.stop(Duration::from_secs(2)).await,
        StopOutcome::Terminated
    );
}

#[tokio::test]
async fn stop_sends_sigterm_to_the_whole_group_and_the_service_handles_it() {
    let dir = tempfile::tempdir().unwrap();
    let (sender, mut lines) = mpsc::channel(16);
    // The line is written once the trap is set: a SIGTERM before that would end the shell
    // without the trap. A child in the background: it belongs to the group and must go too.
    let supervisor = Supervisor::start(
        spec(
            dir.path(),
            r#"trap 'echo got SIGTERM; exit 0' TERM; sleep 300 & echo "child $!"; while true; do sleep 0.05; done"#,
        ),
        Some(sender),
    );
    let child_line = next_line(&mut lines).await.line;
    let child: i32 = child_line.strip_prefix("child ").unwrap().parse().unwrap();
    supervisor.running().await.unwrap();
    let started = Instant::now();
    assert_eq!(
        supervisor.stop(Duration::from_secs(5)).await,
        StopOutcome::Terminated
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    // The shell may also report its killed `sleep` ("Terminated") on stderr first.
    let mut after_stop = Vec::new();
    while let Some(line) = lines.recv().await {
        after_stop.push(line.line);
    }
    assert!(
        after_stop.contains(&"got SIGTERM".to_owned()),
        "{after_stop:?}"
    );
    // The background child was in the group: it is gone (or a zombie awaiting init).
    std::thread::sleep(Duration::from_millis(100));
    let status = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
    assert!(status.is_empty() || status.contains(") Z"), "{status}");
}

#[tokio::test]
async fn a_service_ignoring_sigterm_gets_sigkill_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let (sender, mut lines) = mpsc::channel(16);
    let supervisor = Supervisor::start(
        spec(
            dir.path(),
            "trap '' TERM; echo ready; while true; do sleep 0.05; done",
        ),
        Some(sender),
    );
    assert_eq!(next_line(&mut lines).await.line, "ready");
    let pid = supervisor.running().await.unwrap();
    let mut events = supervisor.subscribe();
    let started = Instant::now();
    assert_eq!(
        supervisor.stop(Duration::from_millis(600)).await,
        StopOutcome::Killed
    );
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(events.recv().await.unwrap(), ServiceState::Stopped);
    assert!(
        !Path::new(&format!("/proc/{pid}/cmdline")).exists() || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z")
        }
    );
}

#[tokio::test]
async fn dropping_the_supervisor_kills_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::start(spec(dir.path(), "exec sleep 60"), None);
    let pid = supervisor.running().await.unwrap();
    drop(supervisor);
    let started = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still running: {stat}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
