//! Health checks against real sockets and commands.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sorat_deploy::{HealthCheck, Probe, ProbeTarget, wait_healthy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A tiny HTTP server answering each request with the status `status(n)` for the n-th request.
async fn serve(status: impl Fn(u32) -> u16 + Send + Sync + 'static) -> (u16, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&count);
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let code = status(n);
            let mut buffer = [0u8; 1024];
            let _ = socket.read(&mut buffer).await;
            let response =
                format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    (port, count)
}

fn check(probe: Probe, threshold: u32, timeout_ms: u64) -> HealthCheck {
    HealthCheck {
        probe,
        interval: Duration::from_millis(20),
        attempt_timeout: Duration::from_millis(500),
        timeout: Duration::from_millis(timeout_ms),
        success_threshold: threshold,
        failure_threshold: 3,
    }
}

fn target(port: u16) -> ProbeTarget {
    ProbeTarget::local(port, std::env::temp_dir())
}

fn http(status: u16) -> Probe {
    Probe::Http {
        path: "/healthz".to_owned(),
        expected_status: status,
    }
}

#[tokio::test]
async fn http_passes_after_the_threshold_of_consecutive_successes() {
    // 200, 500, 200, 200, 200, …: the 500 resets the count.
    let (port, count) = serve(|n| if n == 2 { 500 } else { 200 }).await;
    let healthy = wait_healthy(&check(http(200), 3, 5000), &target(port))
        .await
        .unwrap();
    assert_eq!(healthy.attempts, 5);
    assert_eq!(count.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn http_with_the_wrong_status_fails_with_the_last_failure_after_the_timeout() {
    let (port, _) = serve(|_| 503).await;
    let error = wait_healthy(&check(http(200), 1, 400), &target(port))
        .await
        .unwrap_err();
    assert!(error.attempts >= 2, "{error:?}");
    assert!(error.elapsed < Duration::from_secs(2), "{error:?}");
    assert!(
        error.last_failure.contains("answered 503, expected 200"),
        "{error}"
    );
    assert!(
        error.to_string().starts_with("health check failed after"),
        "{error}"
    );
    // Any status can be the expected one.
    wait_healthy(&check(http(503), 1, 400), &target(port))
        .await
        .unwrap();
}

#[tokio::test]
async fn http_to_a_closed_port_and_a_hanging_server_fail_clearly() {
    let port = common::free_port();
    let error = wait_healthy(&check(http(200), 1, 300), &target(port))
        .await
        .unwrap_err();
    assert!(
        error
            .last_failure
            .contains(&format!("GET http://127.0.0.1:{port}/healthz")),
        "{error}"
    );

    // Accepts and never answers: each attempt ends at its own timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            held.push(listener.accept().await.unwrap());
        }
    });
    let mut hanging = check(http(200), 1, 900);
    hanging.attempt_timeout = Duration::from_millis(200);
    let error = wait_healthy(&hanging, &target(port)).await.unwrap_err();
    assert!(error.attempts >= 2, "{error:?}");
    assert!(error.elapsed < Duration::from_secs(3), "{error:?}");
}

#[tokio::test]
async fn tcp_probe_sees_a_listener_and_its_absence() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    wait_healthy(&check(Probe::Tcp, 2, 2000), &target(port))
        .await
        .unwrap();
    drop(listener);
    let error = wait_healthy(&check(Probe::Tcp, 1, 200), &target(port))
        .await
        .unwrap_err();
    assert!(
        error
            .last_failure
            .contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{error}"
    );
}

#[tokio::test]
async fn command_probe_passes_on_exit_zero_and_sees_port_and_working_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ok"), "").unwrap();
    let probe_target = ProbeTarget::local(4242, dir.path());
    let command = |text: &str| Probe::Command {
        command: text.to_owned(),
    };
    wait_healthy(
        &check(command("test -f ok && test \"$PORT\" = 4242"), 2, 3000),
        &probe_target,
    )
    .await
    .unwrap();
    let error = wait_healthy(&check(command("exit 7"), 1, 200), &probe_target)
        .await
        .unwrap_err();
    assert!(error.last_failure.contains("exit status: 7"), "{error}");
    // A command that hangs is cut at the attempt's limit.
    let mut slow = check(command("sleep 30"), 1, 700);
    slow.attempt_timeout = Duration::from_millis(200);
    let error = wait_healthy(&slow, &probe_target).await.unwrap_err();
    assert!(error.last_failure.contains("did not end within"), "{error}");
    assert!(error.elapsed < Duration::from_secs(3), "{error:?}");
}

#[tokio::test]
async fn an_attempt_cut_short_by_the_deadline_does_not_hide_the_real_failure() {
    // Each attempt takes 150 ms and exits 7; the third starts with only ~100 ms left of the
    // overall 500 ms, so the deadline cuts it. The reason reported is still the exit status.
    let dir = tempfile::tempdir().unwrap();
    let probe_target = ProbeTarget::local(4242, dir.path());
    let mut slow_failure = check(
        Probe::Command {
            command: "sleep 0.15; exit 7".to_owned(),
        },
        1,
        500,
    );
    slow_failure.interval = Duration::from_millis(50);
    slow_failure.attempt_timeout = Duration::from_millis(300);
    let error = wait_healthy(&slow_failure, &probe_target)
        .await
        .unwrap_err();
    assert!(error.attempts >= 2, "{error}");
    assert!(error.last_failure.contains("exit status: 7"), "{error}");
}
