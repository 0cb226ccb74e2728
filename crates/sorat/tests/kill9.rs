//! What a run acknowledged survives `kill -9` of `sorat run` itself, and what it was running
//! does not (the reaper kills the steps' process groups).
//!
//! A job that finished is in `run.partial.json` (written through a synced temporary file and
//! a rename after every job), and the cache it saved is whole: a later run restores it.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

#[test]
fn a_finished_job_and_its_cache_survive_kill_9_of_sorat() {
    let temp = tempfile::tempdir().unwrap();
    let repo = temp.path().join("repo");
    let data = temp.path().join("data");
    std::fs::create_dir_all(repo.join(".sorat")).unwrap();
    let pid_file = temp.path().join("slow.pid");
    std::fs::write(
        repo.join(".sorat/pipeline.yaml"),
        format!(
            r#"on: push
jobs:
  quick:
    steps:
      - uses: actions/cache@v4
        with:
          path: out
          key: out-1
      - run: mkdir -p out && seq 1 50000 > out/numbers.txt
  slow:
    needs: quick
    steps:
      - run: echo $$ > {pid_file} && sleep 60
"#,
            pid_file = pid_file.display()
        ),
    )
    .unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "pipeline"]);

    let mut child = Command::new(env!("CARGO_BIN_EXE_sorat"))
        .args(["run", "--data"])
        .arg(&data)
        .current_dir(&repo)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let partial = data.join("runs/1/run.partial.json");
    let started = Instant::now();
    // Wait until the quick job is acknowledged: its record is on disk.
    loop {
        if let Ok(text) = std::fs::read_to_string(&partial)
            && text.contains("\"quick\"")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the quick job never reached run.partial.json"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Wait until the slow job's step runs, then kill sorat without a chance to clean up.
    while !pid_file.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the slow job never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    // The reaper (a child of sorat that outlives it) kills the slow step's process group:
    // nothing of the killed run goes on running. The step leads its group, so its pid is
    // the group's id.
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), None).is_ok() {
        if Instant::now() > deadline {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("the killed run's step (process group {pid}) was left running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&partial).unwrap()).unwrap();
    let quick = record["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["id"] == "quick")
        .unwrap();
    assert_eq!(quick["status"], "success");
    assert_eq!(
        quick["steps"].as_array().unwrap().len(),
        3,
        "two steps and the cache's post step"
    );

    // A new run (without the slow job) restores the cache the killed run saved.
    std::fs::write(
        repo.join(".sorat/pipeline.yaml"),
        r#"on: push
jobs:
  check:
    steps:
      - id: cache
        uses: actions/cache@v4
        with:
          path: out
          key: out-1
      - run: |
          test "${{ steps.cache.outputs.cache-hit }}" = true
          test "$(wc -l < out/numbers.txt)" = 50000
"#,
    )
    .unwrap();
    git(&repo, &["commit", "-q", "-am", "check"]);
    let output = Command::new(env!("CARGO_BIN_EXE_sorat"))
        .args(["run", "--data"])
        .arg(&data)
        .current_dir(&repo)
        .output()
        .unwrap();
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stdout));
    }
    assert_eq!(output.status.code(), Some(0));
}
