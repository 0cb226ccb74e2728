//! `sorat run`'s exit codes: 0 when every job passed, 1 when a job failed, 2 when the input
//! is invalid and nothing ran.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{Project, job};

#[test]
fn exit_code_0_when_every_job_passes() {
    let project = Project::new(
        r#"
on: push
jobs:
  one:
    steps:
      - run: touch "$SCRATCH/one-ran"
  two:
    steps:
      - run: touch "$SCRATCH/two-ran"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    assert_eq!(record["status"], "success");
    assert_eq!(job(&record, "one")["status"], "success");
    assert_eq!(job(&record, "two")["status"], "success");
    assert!(project.scratch_file("one-ran").exists());
    assert!(project.scratch_file("two-ran").exists());
    // The same record is stored in the run's folder.
    let stored = project.stored_record(1);
    assert_eq!(stored["status"], "success");
    assert_eq!(stored["jobs"], record["jobs"]);
}

#[test]
fn exit_code_1_when_a_job_fails() {
    let project = Project::new(
        r#"
on: push
jobs:
  good:
    steps:
      - run: echo fine
  bad:
    steps:
      - id: boom
        run: exit 7
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    assert_eq!(record["status"], "failure");
    assert_eq!(job(&record, "good")["status"], "success");
    let bad = job(&record, "bad");
    assert_eq!(bad["status"], "failure");
    assert_eq!(common::step(bad, "boom")["exit_code"], 7);
    assert_eq!(project.stored_record(1)["status"], "failure");
}

#[test]
fn plain_output_ends_with_a_summary_naming_the_failed_job() {
    let project = Project::new(
        r#"
on: push
jobs:
  bad:
    steps:
      - run: exit 3
"#,
    );
    let outcome = project.run(&[]);
    outcome.expect_code(1);
    assert!(
        outcome.stdout.contains("exit code 3"),
        "stdout: {}",
        outcome.stdout
    );
    assert!(
        outcome.stdout.contains(&format!(
            "record: {}",
            project.run_dir(1).join("run.json").display()
        )),
        "stdout: {}",
        outcome.stdout
    );
}

#[test]
fn exit_code_2_for_an_invalid_pipeline_and_nothing_runs() {
    let project = Project::new(
        r#"
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    stepz:
      - run: touch "$SCRATCH/ran"
"#,
    );
    let outcome = project.run(&[]);
    outcome.expect_code(2);
    assert!(
        outcome.stderr.contains("unknown key `stepz`"),
        "stderr: {}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("nothing ran"),
        "stderr: {}",
        outcome.stderr
    );
    assert!(!project.scratch_file("ran").exists());
    assert!(
        !project.data.join("runs").exists(),
        "an invalid pipeline must not create a run folder"
    );
}

#[test]
fn exit_code_2_for_an_unknown_input() {
    let project = Project::new(
        r#"
on:
  workflow_dispatch:
    inputs:
      level:
        type: string
        default: low
jobs:
  one:
    steps:
      - run: touch "$SCRATCH/ran"
"#,
    );
    let outcome = project.run(&["--event", "manual", "--input", "levle=high"]);
    outcome.expect_code(2);
    assert!(
        outcome.stderr.contains("--input levle: no such input"),
        "stderr: {}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("did you mean `level`?"),
        "stderr: {}",
        outcome.stderr
    );
    assert!(!project.scratch_file("ran").exists());
    assert!(!project.data.join("runs").exists());
}

#[test]
fn exit_code_2_for_an_input_without_equals() {
    let project = Project::new(
        r#"
on: workflow_dispatch
jobs:
  one:
    steps:
      - run: touch "$SCRATCH/ran"
"#,
    );
    let outcome = project.run(&["--input", "novalue"]);
    outcome.expect_code(2);
    assert!(
        outcome.stderr.contains("expected NAME=VALUE"),
        "stderr: {}",
        outcome.stderr
    );
    assert!(!project.scratch_file("ran").exists());
}

#[test]
fn exit_code_2_for_a_secret_without_a_name() {
    let project = Project::new(
        r#"
on: push
jobs:
  one:
    steps:
      - run: touch "$SCRATCH/ran"
"#,
    );
    let outcome = project.run(&["--secret", "=value"]);
    outcome.expect_code(2);
    assert!(
        outcome
            .stderr
            .contains("--secret =value: expected NAME=VALUE or NAME"),
        "stderr: {}",
        outcome.stderr
    );
    assert!(!project.scratch_file("ran").exists());
    assert!(!project.data.join("runs").exists());
}

#[test]
fn exit_code_2_for_a_secret_named_after_a_missing_environment_variable() {
    let project = Project::new(
        r#"
on: push
jobs:
  one:
    steps:
      - run: touch "$SCRATCH/ran"
"#,
    );
    let mut command = project.sorat(&[
        "run",
        project.repo.to_str().unwrap(),
        "--data",
        project.data.to_str().unwrap(),
        "--secret",
        "SORAT_TEST_UNSET_SECRET",
    ]);
    command.env_remove("SORAT_TEST_UNSET_SECRET");
    let outcome = common::finish(command.spawn().unwrap());
    outcome.expect_code(2);
    assert!(
        outcome
            .stderr
            .contains("no value given and no environment variable SORAT_TEST_UNSET_SECRET"),
        "stderr: {}",
        outcome.stderr
    );
    assert!(!project.scratch_file("ran").exists());
}

#[test]
fn exit_code_2_for_an_unknown_flag() {
    let project = Project::new(
        r#"
on: push
jobs:
  one:
    steps:
      - run: touch "$SCRATCH/ran"
"#,
    );
    let outcome = project.run(&["--no-such-flag"]);
    outcome.expect_code(2);
    assert!(!project.scratch_file("ran").exists());
}

#[test]
fn exit_code_2_outside_a_git_repository() {
    let temp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(temp.path().join(".sorat")).unwrap();
    std::fs::write(
        temp.path().join(".sorat/pipeline.yaml"),
        "on: push\njobs:\n  one:\n    steps:\n      - run: echo hi\n",
    )
    .unwrap();
    let mut command = std::process::Command::new(common::sorat_binary());
    command
        .args(["run", temp.path().to_str().unwrap(), "--data"])
        .arg(temp.path().join("data"))
        .current_dir(temp.path())
        .env("GIT_CEILING_DIRECTORIES", temp.path().parent().unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let outcome = common::finish(command.spawn().unwrap());
    outcome.expect_code(2);
    assert!(
        outcome.stderr.contains("runs a commit of a git repository"),
        "stderr: {}",
        outcome.stderr
    );
}

#[test]
fn exit_code_2_when_the_repository_has_no_pipeline() {
    let project = Project::empty();
    project.write("README", "no pipeline here");
    project.commit("first");
    let outcome = project.run(&[]);
    outcome.expect_code(2);
    assert!(
        outcome.stderr.contains("no pipeline at"),
        "stderr: {}",
        outcome.stderr
    );
    assert!(!project.data.join("runs").exists());
}
