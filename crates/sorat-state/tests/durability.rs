//! What the store acknowledged survives `kill -9` (SQLite): a child process (this test
//! binary again, in `durability_child`) writes runs and log chunks and prints an
//! acknowledgement after each returns; the parent kills it with SIGKILL in the middle of its
//! writing, reopens the database and finds every acknowledged row.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use sorat_state::{LogChunk, SecretKey, Store};

/// Set in the child: the data folder to write into.
const CHILD_ENV: &str = "SORAT_STATE_DURABILITY_CHILD";
const KEY_ENV: &str = "SORAT_STATE_DURABILITY_KEY";
/// How many acknowledgements the parent waits for before it kills the child.
const ACKS_BEFORE_KILL: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = SecretKey::random();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "durability_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &data)
        .env(KEY_ENV, key.to_base64())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();

    let mut acked: Vec<(i64, i64)> = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acked.len() < ACKS_BEFORE_KILL {
        let line = lines
            .next()
            .expect("the child ended before acknowledging enough writes")
            .unwrap();
        if let Some(rest) = line.strip_prefix("acked ") {
            let (run, job) = rest.split_once(' ').unwrap();
            acked.push((run.parse().unwrap(), job.parse().unwrap()));
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no checkpoint, no close
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the child was killed, not finished: {status:?}"
    );

    let store = Store::open(data.to_str().unwrap(), key).await.unwrap();
    for (n, (run_id, job_id)) in acked.iter().enumerate() {
        let run = store.run(*run_id).await.unwrap();
        assert!(run.is_some(), "acknowledged run {run_id} (#{n}) is lost");
        let chunks = store.log_chunks(*job_id, Some(1), 0, 10).await.unwrap();
        assert_eq!(
            chunks.len(),
            1,
            "acknowledged log chunk of job {job_id} is lost"
        );
        assert_eq!(chunks[0].text, format!("line for run {run_id}\n"));
    }
    // And the store goes on where it stopped.
    let next = store
        .create_run(&support::push("shop", "refs/heads/main"), &[], 0)
        .await
        .unwrap()
        .0;
    assert!(next.number > ACKS_BEFORE_KILL as i64);
    store.close().await;
}

/// The child's side: does nothing unless started by the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_child() {
    let Ok(data) = std::env::var(CHILD_ENV) else {
        return;
    };
    let key = SecretKey::from_base64(&std::env::var(KEY_ENV).unwrap()).unwrap();
    let store = Store::open(&data, key).await.unwrap();
    store
        .upsert_project(&support::project("shop"))
        .await
        .unwrap();
    let mut out = std::io::stdout().lock();
    // Bounded, in case the parent is gone: it kills us long before this ends.
    for i in 0..100_000 {
        let (run, jobs) = store
            .create_run(
                &support::push("shop", "refs/heads/main"),
                &[support::job("build", &[])],
                i,
            )
            .await
            .unwrap();
        let job = jobs[0].id;
        store
            .claim_job(job, "a1", i + 1000, i)
            .await
            .unwrap()
            .unwrap();
        let chunk = LogChunk {
            job_id: job,
            attempt: 1,
            seq: 1,
            text: format!("line for run {}\n", run.id),
            at: i,
        };
        assert!(store.append_log(&chunk).await.unwrap());
        writeln!(out, "acked {} {job}", run.id).unwrap();
        out.flush().unwrap();
    }
}
