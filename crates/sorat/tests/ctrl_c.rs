//! Ctrl-C: the first SIGINT cancels the run (steps stopped with their process groups,
//! `always()` steps still run), the second kills everything.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{Project, job, step};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn interrupt(child: &std::process::Child) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
}

#[test]
fn ctrl_c_cancels_the_run_kills_the_step_group_and_still_runs_always_steps() {
    let project = Project::new(
        r#"
on: push
jobs:
  long:
    steps:
      - id: long
        run: |
          echo $$ > "$SCRATCH/pgid"
          sleep 60 &
          echo $! > "$SCRATCH/pid"
          echo started > "$SCRATCH/ready"
          wait
          touch "$SCRATCH/long-finished"
      - id: plain
        run: touch "$SCRATCH/plain-ran"
      - id: cleanup
        if: always()
        run: touch "$SCRATCH/cleanup-ran"
  later:
    needs: long
    steps:
      - run: touch "$SCRATCH/later-ran"
"#,
    );
    let child = project
        .sorat(&[
            "run",
            project.repo.to_str().unwrap(),
            "--data",
            project.data.to_str().unwrap(),
            "--output",
            "json",
        ])
        .spawn()
        .unwrap();
    common::wait_for_file(&project.scratch_file("ready"));
    interrupt(&child);
    let outcome = common::finish(child);
    outcome.expect_code(1);
    assert!(
        outcome.stderr.contains("cancelling"),
        "stderr: {}",
        outcome.stderr
    );
    let record: serde_json::Value = serde_json::from_str(&outcome.stdout).unwrap();
    assert_eq!(record["status"], "cancelled", "{record:#}");
    assert_eq!(project.stored_record(1)["status"], "cancelled");

    let long = job(&record, "long");
    assert_eq!(long["status"], "cancelled");
    assert_eq!(step(long, "long")["status"], "cancelled");
    assert_eq!(step(long, "plain")["status"], "skipped");
    assert_eq!(step(long, "cleanup")["status"], "success");
    assert!(project.scratch_file("cleanup-ran").exists());
    assert!(!project.scratch_file("plain-ran").exists());
    assert!(!project.scratch_file("long-finished").exists());

    let later = job(&record, "later");
    assert_eq!(later["status"], "cancelled", "{later:#}");
    assert!(!project.scratch_file("later-ran").exists());

    let pgid = common::read_pid(&project.scratch_file("pgid"));
    let pid = common::read_pid(&project.scratch_file("pid"));
    assert_eq!(common::group_members(pgid), Vec::<i32>::new());
    assert!(!common::process_alive(pid));
}

#[test]
fn a_second_ctrl_c_stops_the_always_steps_too() {
    let project = Project::new(
        r#"
on: push
jobs:
  long:
    steps:
      - id: long
        run: |
          echo started > "$SCRATCH/ready"
          sleep 60
      - id: slow_cleanup
        if: always()
        run: |
          echo $$ > "$SCRATCH/cleanup-pgid"
          echo started > "$SCRATCH/cleanup-started"
          sleep 60
          touch "$SCRATCH/cleanup-finished"
"#,
    );
    let child = project
        .sorat(&[
            "run",
            project.repo.to_str().unwrap(),
            "--data",
            project.data.to_str().unwrap(),
            "--output",
            "json",
        ])
        .spawn()
        .unwrap();
    common::wait_for_file(&project.scratch_file("ready"));
    interrupt(&child);
    common::wait_for_file(&project.scratch_file("cleanup-started"));
    interrupt(&child);
    let outcome = common::finish(child);
    outcome.expect_code(1);
    assert!(
        outcome.stderr.contains("killing everything"),
        "stderr: {}",
        outcome.stderr
    );
    let record: serde_json::Value = serde_json::from_str(&outcome.stdout).unwrap();
    assert_eq!(record["status"], "cancelled");
    let long = job(&record, "long");
    assert_eq!(step(long, "long")["status"], "cancelled");
    assert_eq!(step(long, "slow_cleanup")["status"], "cancelled");
    assert!(!project.scratch_file("cleanup-finished").exists());
    let pgid = common::read_pid(&project.scratch_file("cleanup-pgid"));
    assert_eq!(common::group_members(pgid), Vec::<i32>::new());
}

#[test]
fn sigterm_stops_the_steps_it_started() {
    let project = Project::new(
        r#"
on: push
jobs:
  long:
    steps:
      - run: |
          echo $$ > "$SCRATCH/pgid"
          sleep 60
"#,
    );
    let child = project
        .sorat(&[
            "run",
            project.repo.to_str().unwrap(),
            "--data",
            project.data.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    common::wait_for_file(&project.scratch_file("pgid"));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let outcome = common::finish(child);
    assert_ne!(outcome.code, 0);
    let pgid = common::read_pid(&project.scratch_file("pgid"));
    // The step runs in its own process group, so a SIGTERM to `sorat` alone (`timeout`, a
    // CI runner cancelling, `docker stop`) reaches it only if `sorat` passes it on.
    let survivors = common::group_members(pgid);
    for pid in &survivors {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    assert_eq!(survivors, Vec::<i32>::new(), "the step outlived sorat");
}

#[test]
fn ctrl_c_stops_the_jobs_services_too() {
    let port = common::free_port();
    let project = Project::new(&format!(
        r#"
on: push
jobs:
  web:
    services:
      files:
        run: echo $$ > "$SCRATCH/service-pid"; exec python3 -m http.server {port} --bind 127.0.0.1
        ready:
          http: http://127.0.0.1:{port}/
    steps:
      - run: |
          echo started > "$SCRATCH/ready"
          sleep 60
"#
    ));
    let child = project
        .sorat(&[
            "run",
            project.repo.to_str().unwrap(),
            "--data",
            project.data.to_str().unwrap(),
            "--output",
            "json",
        ])
        .spawn()
        .unwrap();
    common::wait_for_file(&project.scratch_file("ready"));
    interrupt(&child);
    let outcome = common::finish(child);
    outcome.expect_code(1);
    let record: serde_json::Value = serde_json::from_str(&outcome.stdout).unwrap();
    assert_eq!(job(&record, "web")["status"], "cancelled");
    let pid = common::read_pid(&project.scratch_file("service-pid"));
    assert!(
        !common::process_alive(pid),
        "the service {pid} outlived the run"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
