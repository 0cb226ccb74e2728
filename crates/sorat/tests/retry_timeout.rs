//! `retry` (of steps and jobs) and time limits (`timeout`, `timeout-minutes`), including that
//! a timed-out step leaves no process behind.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{Project, job, step};

/// A script that counts its runs in `$SCRATCH/<counter>` and exits with `code` until run
/// `passes_at` (0: never passes).
fn counting_script(counter: &str, code: u8, passes_at: u32) -> String {
    format!(
        r#"n=$(cat "$SCRATCH/{counter}" 2>/dev/null || echo 0)
          n=$((n + 1))
          echo "$n" > "$SCRATCH/{counter}"
          echo "attempt $n"
          if [ {passes_at} -ne 0 ] && [ "$n" -ge {passes_at} ]; then exit 0; fi
          exit {code}"#
    )
}

#[test]
fn a_flaky_step_with_retry_passes_on_its_second_attempt() {
    let project = Project::new(&format!(
        r#"
on: push
jobs:
  flaky:
    steps:
      - id: flaky
        retry: 2
        run: |
          {}
      - id: after
        run: echo after
"#,
        counting_script("count", 1, 2)
    ));
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    let flaky = step(job(&record, "flaky"), "flaky");
    assert_eq!(flaky["status"], "success");
    assert_eq!(flaky["attempts"], 2);
    assert_eq!(flaky["exit_code"], 0);
    assert_eq!(project.read_scratch("count").trim(), "2");
    // The step's output tells of the failed attempt.
    assert!(outcome.showed("attempt 1"), "{}", outcome.stderr);
    assert!(
        outcome.showed("sorat: attempt 1 failed with exit code 1; retrying (1 of 2)"),
        "{}",
        outcome.stderr
    );
    assert!(outcome.showed("attempt 2"), "{}", outcome.stderr);
}

#[test]
fn retry_with_exit_codes_does_not_retry_another_exit_code() {
    let project = Project::new(&format!(
        r#"
on: push
jobs:
  picky:
    steps:
      - id: picky
        retry:
          count: 2
          exit-codes: [3]
        run: |
          {}
"#,
        counting_script("count", 1, 0)
    ));
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    let picky = step(job(&record, "picky"), "picky");
    assert_eq!(picky["status"], "failure");
    assert_eq!(picky["exit_code"], 1);
    assert_eq!(picky["attempts"], 1);
    assert_eq!(project.read_scratch("count").trim(), "1");
}

#[test]
fn retry_with_exit_codes_retries_a_listed_exit_code_up_to_its_count() {
    let project = Project::new(&format!(
        r#"
on: push
jobs:
  picky:
    steps:
      - id: picky
        retry:
          count: 2
          exit-codes: [3]
        run: |
          {}
"#,
        counting_script("count", 3, 0)
    ));
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    let picky = step(job(&record, "picky"), "picky");
    assert_eq!(picky["status"], "failure");
    assert_eq!(picky["exit_code"], 3);
    assert_eq!(picky["attempts"], 3);
    assert_eq!(project.read_scratch("count").trim(), "3");
}

#[test]
fn a_job_with_retry_runs_again_after_a_failed_attempt() {
    let project = Project::new(&format!(
        r#"
on: push
jobs:
  whole:
    retry: 1
    steps:
      - run: echo "first step" >> "$SCRATCH/first-step-runs"
      - id: flaky
        run: |
          {}
"#,
        counting_script("count", 1, 2)
    ));
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    let whole = job(&record, "whole");
    assert_eq!(whole["status"], "success");
    assert_eq!(whole["attempts"], 2);
    assert_eq!(step(whole, "flaky")["status"], "success");
    // The whole job ran again, its first step too.
    assert_eq!(project.read_scratch("first-step-runs").lines().count(), 2);
}

#[test]
fn a_step_timeout_kills_the_step_and_its_background_processes() {
    let project = Project::new(
        r#"
on: push
jobs:
  slow:
    steps:
      - id: slow
        timeout: 1s
        run: |
          echo $$ > "$SCRATCH/pgid"
          sleep 30 &
          echo $! > "$SCRATCH/pid"
          ( trap '' TERM; sleep 30 ) &
          echo $! > "$SCRATCH/stubborn-pid"
          wait
      - id: after
        run: echo never
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    let slow_job = job(&record, "slow");
    assert_eq!(slow_job["status"], "failure");
    let slow = step(slow_job, "slow");
    assert_eq!(slow["status"], "failure");
    let reason = slow["reason"].as_str().unwrap();
    assert!(reason.contains("timed out after 1s"), "reason: {reason}");
    assert_eq!(step(slow_job, "after")["status"], "skipped");
    assert!(
        slow_job["reason"].as_str().unwrap().contains("timed out"),
        "{slow_job:#}"
    );
    let pid = common::read_pid(&project.scratch_file("pid"));
    let stubborn = common::read_pid(&project.scratch_file("stubborn-pid"));
    let pgid = common::read_pid(&project.scratch_file("pgid"));
    assert!(
        !common::process_alive(pid),
        "the background sleep {pid} survived"
    );
    assert!(
        !common::process_alive(stubborn),
        "the background process {stubborn} that ignores SIGTERM survived"
    );
    assert_eq!(common::group_members(pgid), Vec::<i32>::new());
}

#[test]
fn a_timed_out_step_is_not_retried() {
    let project = Project::new(
        r#"
on: push
jobs:
  slow:
    steps:
      - id: slow
        timeout: 1s
        retry: 2
        run: |
          echo run >> "$SCRATCH/runs"
          sleep 30
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    let slow = step(job(&record, "slow"), "slow");
    assert_eq!(slow["attempts"], 1);
    assert_eq!(project.read_scratch("runs").lines().count(), 1);
}

#[test]
fn a_job_timeout_fails_the_job_and_says_so() {
    let project = Project::new(
        r#"
on: push
jobs:
  slow:
    timeout: 1s
    steps:
      - run: |
          echo $$ > "$SCRATCH/pgid"
          sleep 30
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    let slow = job(&record, "slow");
    assert_eq!(slow["status"], "failure");
    assert_eq!(slow["reason"], "the job timed out after 1s");
    let pgid = common::read_pid(&project.scratch_file("pgid"));
    assert_eq!(common::group_members(pgid), Vec::<i32>::new());
}

#[test]
fn timeout_minutes_is_accepted_on_jobs_and_steps() {
    let project = Project::new(
        r#"
on: push
jobs:
  quick:
    timeout-minutes: 5
    steps:
      - id: fraction
        timeout-minutes: 0.5
        run: echo quick
      - id: expression
        timeout-minutes: ${{ github.ref == 'refs/heads/main' && 2 || 3 }}
        run: echo also quick
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    let quick = job(&record, "quick");
    assert_eq!(step(quick, "fraction")["status"], "success");
    assert_eq!(step(quick, "expression")["status"], "success");
}
