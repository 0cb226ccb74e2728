//! `if:` and `continue-on-error`, with GitHub's meaning: a failure skips what follows unless
//! it asks for `always()` or `failure()`; a job whose needs failed is skipped.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{Project, job, step};

#[test]
fn a_failed_step_skips_later_steps_except_always_and_failure() {
    let project = Project::new(
        r#"
on: push
jobs:
  steps:
    steps:
      - id: ok
        run: echo fine
      - id: fails
        run: exit 4
      - id: plain
        run: touch "$SCRATCH/plain-ran"
      - id: on_success
        if: success()
        run: touch "$SCRATCH/success-ran"
      - id: on_always
        if: always()
        run: touch "$SCRATCH/always-ran"
      - id: on_failure
        if: failure()
        run: touch "$SCRATCH/failure-ran"
      - id: bare_condition
        if: github.ref == 'refs/heads/main'
        run: touch "$SCRATCH/bare-ran"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    let steps_job = job(&record, "steps");
    assert_eq!(steps_job["status"], "failure");
    let status = |id: &str| step(steps_job, id)["status"].as_str().unwrap().to_string();
    assert_eq!(status("ok"), "success");
    assert_eq!(status("fails"), "failure");
    assert_eq!(status("plain"), "skipped");
    assert_eq!(status("on_success"), "skipped");
    assert_eq!(status("on_always"), "success");
    assert_eq!(status("on_failure"), "success");
    // A condition without a status function gets an implicit `success() &&`.
    assert_eq!(status("bare_condition"), "skipped");
    assert_eq!(step(steps_job, "plain")["reason"], "an earlier step failed");
    assert!(!project.scratch_file("plain-ran").exists());
    assert!(!project.scratch_file("success-ran").exists());
    assert!(!project.scratch_file("bare-ran").exists());
    assert!(project.scratch_file("always-ran").exists());
    assert!(project.scratch_file("failure-ran").exists());
}

#[test]
fn a_step_whose_if_is_false_is_skipped_and_the_job_succeeds() {
    let project = Project::new(
        r#"
on: push
jobs:
  one:
    steps:
      - id: never
        if: github.ref == 'refs/heads/other'
        run: touch "$SCRATCH/never-ran"
      - id: after
        run: touch "$SCRATCH/after-ran"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    let one = job(&record, "one");
    assert_eq!(step(one, "never")["status"], "skipped");
    assert_eq!(step(one, "after")["status"], "success");
    assert!(!project.scratch_file("never-ran").exists());
    assert!(project.scratch_file("after-ran").exists());
}

#[test]
fn a_job_whose_if_is_false_is_skipped() {
    let project = Project::new(
        r#"
on: push
jobs:
  deploy:
    if: github.ref == 'refs/heads/release'
    steps:
      - run: touch "$SCRATCH/deploy-ran"
  build:
    steps:
      - run: echo built
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    assert_eq!(record["status"], "success");
    let deploy = job(&record, "deploy");
    assert_eq!(deploy["status"], "skipped");
    assert!(
        deploy["reason"]
            .as_str()
            .unwrap()
            .contains("its `if` is false"),
        "{deploy:#}"
    );
    assert_eq!(deploy["steps"].as_array().unwrap().len(), 0);
    assert!(!project.scratch_file("deploy-ran").exists());
}

#[test]
fn a_job_needing_a_failed_job_is_skipped_unless_it_asks_for_failure_or_always() {
    let project = Project::new(
        r#"
on: push
jobs:
  broken:
    steps:
      - run: exit 1
  dependent:
    needs: broken
    steps:
      - run: touch "$SCRATCH/dependent-ran"
  transitive:
    needs: dependent
    steps:
      - run: touch "$SCRATCH/transitive-ran"
  on_failure:
    needs: broken
    if: failure()
    steps:
      - run: touch "$SCRATCH/on-failure-ran"
  on_always:
    needs: transitive
    if: always()
    steps:
      - run: touch "$SCRATCH/on-always-ran"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    assert_eq!(record["status"], "failure");
    assert_eq!(job(&record, "broken")["status"], "failure");
    let dependent = job(&record, "dependent");
    assert_eq!(dependent["status"], "skipped");
    assert!(
        dependent["reason"]
            .as_str()
            .unwrap()
            .contains("a job it needs did not succeed"),
        "{dependent:#}"
    );
    assert_eq!(job(&record, "transitive")["status"], "skipped");
    assert_eq!(job(&record, "on_failure")["status"], "success");
    assert_eq!(job(&record, "on_always")["status"], "success");
    assert!(!project.scratch_file("dependent-ran").exists());
    assert!(!project.scratch_file("transitive-ran").exists());
    assert!(project.scratch_file("on-failure-ran").exists());
    assert!(project.scratch_file("on-always-ran").exists());
}

#[test]
fn step_continue_on_error_keeps_the_job_going_and_green() {
    let project = Project::new(
        r#"
on: push
jobs:
  lenient:
    steps:
      - id: flaky
        continue-on-error: true
        run: exit 3
      - id: next
        run: |
          echo "outcome=${{ steps.flaky.outcome }}" >> "$GITHUB_OUTPUT"
          echo "conclusion=${{ steps.flaky.conclusion }}" >> "$GITHUB_OUTPUT"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    assert_eq!(record["status"], "success");
    let lenient = job(&record, "lenient");
    assert_eq!(lenient["status"], "success");
    let flaky = step(lenient, "flaky");
    assert_eq!(flaky["status"], "success");
    assert_eq!(flaky["outcome"], "failure");
    assert_eq!(flaky["exit_code"], 3);
    let next = step(lenient, "next");
    assert_eq!(next["status"], "success");
    assert_eq!(next["outputs"]["outcome"], "failure");
    assert_eq!(next["outputs"]["conclusion"], "success");
}

#[test]
fn step_continue_on_error_from_an_expression() {
    let project = Project::new(
        r#"
on: push
jobs:
  test:
    strategy:
      fail-fast: false
      matrix:
        experimental: [true, false]
    steps:
      - continue-on-error: ${{ matrix.experimental }}
        run: exit 1
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    assert_eq!(job(&record, "test (true)")["status"], "success");
    assert_eq!(job(&record, "test (false)")["status"], "failure");
}

#[test]
fn job_continue_on_error_lets_the_jobs_that_need_it_run() {
    let project = Project::new(
        r#"
on: push
jobs:
  experimental:
    continue-on-error: true
    steps:
      - run: exit 1
  after:
    needs: experimental
    steps:
      - run: touch "$SCRATCH/after-ran"
"#,
    );
    let (_outcome, record) = project.run_json(&[]);
    assert_eq!(job(&record, "experimental")["status"], "failure");
    assert!(
        job(&record, "experimental")["reason"]
            .as_str()
            .unwrap()
            .contains("continue-on-error"),
    );
    assert_eq!(job(&record, "after")["status"], "success");
    assert!(project.scratch_file("after-ran").exists());
}

#[test]
fn job_continue_on_error_failure_does_not_fail_the_run() {
    let project = Project::new(
        r#"
on: push
jobs:
  experimental:
    continue-on-error: true
    steps:
      - run: exit 1
  stable:
    steps:
      - run: echo fine
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    // GitHub Actions: a job that may fail does not fail the workflow; Sorat's own message
    // says "continue-on-error: the run goes on".
    assert_eq!(record["status"], "success", "{record:#}");
    outcome.expect_code(0);
}

#[test]
fn a_failure_absorbed_by_continue_on_error_does_not_trigger_failure_steps() {
    let project = Project::new(
        r#"
on: push
jobs:
  lenient:
    steps:
      - continue-on-error: true
        run: exit 1
      - id: on_failure
        if: failure()
        run: touch "$SCRATCH/failure-ran"
      - id: on_success
        if: success()
        run: touch "$SCRATCH/success-ran"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    let lenient = job(&record, "lenient");
    assert_eq!(step(lenient, "on_failure")["status"], "skipped");
    assert_eq!(step(lenient, "on_success")["status"], "success");
    assert!(!project.scratch_file("failure-ran").exists());
}

#[test]
fn a_mixed_text_if_is_a_non_empty_string_and_always_runs_as_in_github() {
    let project = Project::new(
        r#"
on: push
jobs:
  trap:
    steps:
      - id: trap
        if: ${{ github.ref }} == 'refs/heads/never'
        run: touch "$SCRATCH/trap-ran"
      - id: whole
        if: ${{ github.ref == 'refs/heads/never' }}
        run: touch "$SCRATCH/whole-ran"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    // `sorat run` warns about the trap, like `sorat validate`.
    assert!(
        outcome
            .stderr
            .contains("warning: this `if:` mixes text with `${{ }}`"),
        "stderr: {}",
        outcome.stderr
    );
    let trap = job(&record, "trap");
    assert_eq!(step(trap, "trap")["status"], "success");
    assert_eq!(step(trap, "whole")["status"], "skipped");
    assert!(project.scratch_file("trap-ran").exists());
    assert!(!project.scratch_file("whole-ran").exists());
}

#[test]
fn needs_result_of_a_skipped_job_is_skipped() {
    let project = Project::new(
        r#"
on: push
jobs:
  never:
    if: github.ref == 'refs/heads/nope'
    steps:
      - run: echo never
  report:
    needs: never
    if: always()
    steps:
      - id: result
        run: echo "never=${{ needs.never.result }}" >> "$GITHUB_OUTPUT"
  implicit:
    needs: never
    steps:
      - run: touch "$SCRATCH/implicit-ran"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    assert_eq!(
        step(job(&record, "report"), "result")["outputs"]["never"],
        "skipped"
    );
    assert_eq!(job(&record, "implicit")["status"], "skipped");
    assert!(!project.scratch_file("implicit-ran").exists());
}
