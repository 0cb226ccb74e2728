//! How `run` steps run: GitHub's shells (`bash -e` by default, `pipefail` with
//! `shell: bash`, python, custom commands), working directories, `vars`, and malformed
//! command files.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{Project, job, step};

#[test]
fn the_default_shell_stops_at_an_error_but_has_no_pipefail() {
    let project = Project::new(
        r#"
on: push
jobs:
  default:
    steps:
      - id: pipe
        run: |
          false | true
          echo "after the pipe" > "$SCRATCH/after-pipe"
      - id: error
        run: |
          false
          touch "$SCRATCH/after-error"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    let default = job(&record, "default");
    assert_eq!(step(default, "pipe")["status"], "success");
    assert!(project.scratch_file("after-pipe").exists());
    assert_eq!(step(default, "error")["status"], "failure");
    assert_eq!(step(default, "error")["exit_code"], 1);
    assert!(!project.scratch_file("after-error").exists());
}

#[test]
fn shell_bash_fails_a_step_whose_pipeline_fails() {
    let project = Project::new(
        r#"
on: push
jobs:
  strict:
    steps:
      - id: pipe
        shell: bash
        run: |
          false | true
          touch "$SCRATCH/after-pipe"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    assert_eq!(step(job(&record, "strict"), "pipe")["status"], "failure");
    assert!(!project.scratch_file("after-pipe").exists());
}

#[test]
fn python_and_custom_shells_run_the_script() {
    let project = Project::new(
        r#"
on: push
defaults:
  run:
    shell: sh -eu {0}
jobs:
  shells:
    steps:
      - id: python
        shell: python
        run: |
          import os
          with open(os.environ["GITHUB_OUTPUT"], "a") as out:
              out.write("answer=%d\n" % (6 * 7))
      - id: unset
        run: |
          echo "$NO_SUCH_VARIABLE_HERE"
          touch "$SCRATCH/after-unset"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    let shells = job(&record, "shells");
    assert_eq!(step(shells, "python")["outputs"]["answer"], "42");
    // The pipeline's default shell is `sh -eu`: an unset variable is an error.
    assert_eq!(step(shells, "unset")["status"], "failure");
    assert!(!project.scratch_file("after-unset").exists());
}

#[test]
fn working_directories_come_from_defaults_and_steps() {
    let project = Project::with_files(
        r#"
on: push
jobs:
  dirs:
    defaults:
      run:
        working-directory: app
    steps:
      - uses: actions/checkout@v4
      - id: default
        run: echo "file=$(cat name.txt)" >> "$GITHUB_OUTPUT"
      - id: own
        working-directory: lib/inner
        run: echo "file=$(cat name.txt)" >> "$GITHUB_OUTPUT"
      - id: missing
        working-directory: nowhere
        run: echo never
"#,
        &[
            ("app/name.txt", "the app"),
            ("lib/inner/name.txt", "the inner lib"),
        ],
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    let dirs = job(&record, "dirs");
    assert_eq!(step(dirs, "default")["outputs"]["file"], "the app");
    assert_eq!(step(dirs, "own")["outputs"]["file"], "the inner lib");
    let missing = step(dirs, "missing");
    assert_eq!(missing["status"], "failure");
    assert!(
        missing["reason"]
            .as_str()
            .unwrap()
            .contains("nowhere does not exist"),
        "{missing:#}"
    );
}

#[test]
fn vars_have_pipeline_defaults_and_command_line_overrides() {
    let project = Project::new(
        r#"
on: push
vars:
  REGION: eu-west
  SIZE: small
jobs:
  show:
    steps:
      - id: vars
        run: |
          echo "region=${{ vars.REGION }}" >> "$GITHUB_OUTPUT"
          echo "size=${{ vars.SIZE }}" >> "$GITHUB_OUTPUT"
          echo "extra=${{ vars.EXTRA }}" >> "$GITHUB_OUTPUT"
"#,
    );
    let (outcome, record) = project.run_json(&["--var", "SIZE=large", "--var", "EXTRA=1"]);
    outcome.expect_code(0);
    let vars = &step(job(&record, "show"), "vars")["outputs"];
    assert_eq!(vars["region"], "eu-west");
    assert_eq!(vars["size"], "large");
    assert_eq!(vars["extra"], "1");
}

#[test]
fn env_precedence_is_pipeline_then_job_then_step() {
    let project = Project::new(
        r#"
on: push
env:
  LEVEL: pipeline
  ONLY_PIPELINE: p
jobs:
  env:
    env:
      LEVEL: job
      ONLY_JOB: j
    steps:
      - id: job_level
        run: echo "level=$LEVEL;p=$ONLY_PIPELINE;j=$ONLY_JOB" >> "$GITHUB_OUTPUT"
      - id: step_level
        env:
          LEVEL: step
        run: echo "level=$LEVEL" >> "$GITHUB_OUTPUT"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    let env = job(&record, "env");
    assert_eq!(step(env, "job_level")["outputs"]["level"], "job;p=p;j=j");
    assert_eq!(step(env, "step_level")["outputs"]["level"], "step");
}

#[test]
fn a_malformed_output_file_fails_the_step_and_says_where() {
    let project = Project::new(
        r#"
on: push
jobs:
  bad:
    steps:
      - id: bad
        run: |
          echo "good=1" >> "$GITHUB_OUTPUT"
          echo "not a key value line" >> "$GITHUB_OUTPUT"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    let bad = step(job(&record, "bad"), "bad");
    assert_eq!(bad["status"], "failure");
    assert_eq!(bad["exit_code"], 0);
    let reason = bad["reason"].as_str().unwrap();
    assert!(reason.contains("line 2"), "reason: {reason}");
}
