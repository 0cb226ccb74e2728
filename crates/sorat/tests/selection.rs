//! Which jobs a run holds: `--job` with what it needs, the events and filters of `on:`, and
//! manual runs with typed inputs.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{Project, job, step};

const CHAIN: &str = r#"
on: push
jobs:
  build:
    steps:
      - run: touch "$SCRATCH/build"
  test:
    needs: build
    steps:
      - run: touch "$SCRATCH/test"
  package:
    needs: test
    steps:
      - run: touch "$SCRATCH/package"
  lint:
    steps:
      - run: touch "$SCRATCH/lint"
"#;

#[test]
fn job_flag_runs_that_job_and_what_it_needs_only() {
    let project = Project::new(CHAIN);
    let (outcome, record) = project.run_json(&["--job", "test"]);
    outcome.expect_code(0);
    assert_eq!(common::job_names(&record), ["build", "test"]);
    assert!(project.scratch_file("build").exists());
    assert!(project.scratch_file("test").exists());
    assert!(!project.scratch_file("package").exists());
    assert!(!project.scratch_file("lint").exists());
}

#[test]
fn an_unknown_job_flag_exits_2_with_a_did_you_mean() {
    let project = Project::new(CHAIN);
    let outcome = project.run(&["--job", "packge"]);
    outcome.expect_code(2);
    assert!(
        outcome
            .stderr
            .contains("there is no job `packge` in the pipeline; did you mean `package`?"),
        "stderr: {}",
        outcome.stderr
    );
    assert!(!project.scratch_file("build").exists());
    assert!(!project.data.join("runs").exists());
}

const RELEASE_ONLY: &str = r#"
on:
  push:
    branches: ["release/*"]
jobs:
  ship:
    steps:
      - run: touch "$SCRATCH/shipped"
"#;

#[test]
fn a_push_filter_that_excludes_the_branch_runs_nothing_and_exits_0() {
    let project = Project::new(RELEASE_ONLY);
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    assert!(
        outcome.stderr.contains(
            "the pipeline does not run for this push event: branch `main` does not pass `on.push.branches`"
        ),
        "stderr: {}",
        outcome.stderr
    );
    assert_eq!(record["status"], "skipped");
    assert_eq!(record["jobs"], serde_json::json!([]));
    assert!(!project.scratch_file("shipped").exists());
    assert!(!project.data.join("runs").exists());
}

#[test]
fn a_push_filter_that_matches_the_branch_runs() {
    let project = Project::new(RELEASE_ONLY);
    project.git(&["checkout", "-q", "-b", "release/1.0"]);
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    assert_eq!(record["status"], "success");
    assert_eq!(record["ref"], "refs/heads/release/1.0");
    assert!(project.scratch_file("shipped").exists());
}

#[test]
fn an_event_the_pipeline_does_not_declare_runs_nothing() {
    let project = Project::new(RELEASE_ONLY);
    let outcome = project.run(&["--event", "manual"]);
    outcome.expect_code(0);
    assert!(
        outcome.stderr.contains("the pipeline has no `on: manual`"),
        "stderr: {}",
        outcome.stderr
    );
    assert!(!project.scratch_file("shipped").exists());
}

const MANUAL: &str = r#"
on:
  push:
  workflow_dispatch:
    inputs:
      n:
        type: number
        required: true
      name:
        type: string
        default: world
      flag:
        type: boolean
      level:
        type: choice
        options: [low, high]
        default: low
jobs:
  show:
    steps:
      - id: inputs
        run: |
          echo "n=${{ toJSON(inputs.n) }}" >> "$GITHUB_OUTPUT"
          echo "name=${{ inputs.name }}" >> "$GITHUB_OUTPUT"
          echo "flag=${{ toJSON(inputs.flag) }}" >> "$GITHUB_OUTPUT"
          echo "level=${{ inputs.level }}" >> "$GITHUB_OUTPUT"
          echo "event_n=${{ github.event.inputs.n }}" >> "$GITHUB_OUTPUT"
          echo "event=${{ github.event_name }}" >> "$GITHUB_OUTPUT"
          echo "greater=${{ inputs.n > 2 }}" >> "$GITHUB_OUTPUT"
"#;

#[test]
fn manual_inputs_are_typed_defaulted_and_visible_to_steps() {
    let project = Project::new(MANUAL);
    let (outcome, record) = project.run_json(&["--event", "manual", "--input", "n=3"]);
    outcome.expect_code(0);
    assert_eq!(record["event"], "workflow_dispatch");
    let inputs = &step(job(&record, "show"), "inputs")["outputs"];
    assert_eq!(
        inputs["n"], "3",
        "a number input is a number, not the text \"3\""
    );
    assert_eq!(inputs["name"], "world");
    assert_eq!(inputs["flag"], "false");
    assert_eq!(inputs["level"], "low");
    assert_eq!(inputs["event_n"], "3");
    assert_eq!(inputs["event"], "workflow_dispatch");
    assert_eq!(inputs["greater"], "true");
}

#[test]
fn manual_inputs_given_override_the_defaults() {
    let project = Project::new(MANUAL);
    let (outcome, record) = project.run_json(&[
        "--event",
        "manual",
        "--input",
        "n=2.5",
        "--input",
        "name=sorat",
        "--input",
        "flag=true",
        "--input",
        "level=high",
    ]);
    outcome.expect_code(0);
    let inputs = &step(job(&record, "show"), "inputs")["outputs"];
    assert_eq!(inputs["n"], "2.5");
    assert_eq!(inputs["name"], "sorat");
    assert_eq!(inputs["flag"], "true");
    assert_eq!(inputs["level"], "high");
    assert_eq!(inputs["greater"], "true");
}

#[test]
fn a_number_input_that_is_not_a_number_exits_2() {
    let project = Project::new(MANUAL);
    let outcome = project.run(&["--event", "manual", "--input", "n=x"]);
    outcome.expect_code(2);
    assert!(
        outcome
            .stderr
            .contains("--input n: the value must be a number, not `x`"),
        "stderr: {}",
        outcome.stderr
    );
    assert!(!project.data.join("runs").exists());
}

#[test]
fn a_choice_input_outside_its_options_exits_2() {
    let project = Project::new(MANUAL);
    let outcome = project.run(&[
        "--event",
        "manual",
        "--input",
        "n=1",
        "--input",
        "level=max",
    ]);
    outcome.expect_code(2);
    assert!(
        outcome
            .stderr
            .contains("--input level: the value must be one of `low`, `high`, not `max`"),
        "stderr: {}",
        outcome.stderr
    );
}

#[test]
fn a_missing_required_input_exits_2() {
    let project = Project::new(MANUAL);
    let outcome = project.run(&["--event", "manual"]);
    outcome.expect_code(2);
    assert!(
        outcome
            .stderr
            .contains("the input `n` is required: pass --input n=…"),
        "stderr: {}",
        outcome.stderr
    );
    assert!(!project.data.join("runs").exists());
}

#[test]
fn every_input_problem_is_reported_at_once() {
    let project = Project::new(MANUAL);
    let outcome = project.run(&[
        "--event",
        "manual",
        "--input",
        "flag=maybe",
        "--input",
        "nmae=x",
    ]);
    outcome.expect_code(2);
    for expected in [
        "--input flag: the value must be true or false, not `maybe`",
        "--input nmae: no such input",
        "the input `n` is required",
    ] {
        assert!(
            outcome.stderr.contains(expected),
            "`{expected}` missing from stderr: {}",
            outcome.stderr
        );
    }
}
