//! Matrices: expansion with `include`/`exclude`, `fail-fast`, `max-parallel`, and `--jobs`.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{Project, job};
use serde_json::json;

/// Asserts that the `start X` / `end X` lines of `order` never interleave: each start is
/// followed by the end of the same instance.
fn assert_serial(order: &str, expected_instances: usize) {
    let lines: Vec<&str> = order.lines().collect();
    assert_eq!(lines.len(), 2 * expected_instances, "{order}");
    for pair in lines.chunks(2) {
        let started = pair[0]
            .strip_prefix("start ")
            .unwrap_or_else(|| panic!("{order}"));
        assert_eq!(
            pair[1],
            format!("end {started}"),
            "instances overlapped:\n{order}"
        );
    }
}

#[test]
fn axes_include_and_exclude_expand_into_the_records_job_list() {
    let project = Project::new(
        r#"
on: push
jobs:
  test:
    strategy:
      matrix:
        os: [linux, mac]
        version: [1, 2]
        exclude:
          - os: mac
            version: 1
        include:
          - os: linux
            version: 2
            extra: yes
          - os: bsd
            version: 9
    steps:
      - id: show
        run: |
          echo "os=${{ matrix.os }}" >> "$GITHUB_OUTPUT"
          echo "version=${{ matrix.version }}" >> "$GITHUB_OUTPUT"
          echo "extra=${{ matrix.extra }}" >> "$GITHUB_OUTPUT"
          echo "index=${{ strategy.job-index }}" >> "$GITHUB_OUTPUT"
          echo "total=${{ strategy.job-total }}" >> "$GITHUB_OUTPUT"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    assert_eq!(
        common::job_names(&record),
        [
            "test (linux, 1)",
            "test (linux, 2, yes)",
            "test (mac, 2)",
            "test (bsd, 9)"
        ]
    );
    let jobs = record["jobs"].as_array().unwrap();
    let matrices: Vec<&serde_json::Value> = jobs.iter().map(|job| &job["matrix"]).collect();
    assert_eq!(
        matrices,
        [
            &json!({"os": "linux", "version": 1}),
            &json!({"os": "linux", "version": 2, "extra": "yes"}),
            &json!({"os": "mac", "version": 2}),
            &json!({"os": "bsd", "version": 9}),
        ]
    );
    for (index, job) in jobs.iter().enumerate() {
        assert_eq!(job["id"], "test");
        assert_eq!(job["status"], "success");
        let outputs = &common::step(job, "show")["outputs"];
        assert_eq!(outputs["os"], job["matrix"]["os"]);
        assert_eq!(outputs["version"], job["matrix"]["version"].to_string());
        assert_eq!(outputs["index"], index.to_string());
        assert_eq!(outputs["total"], "4");
    }
    assert_eq!(
        common::step(&jobs[1], "show")["outputs"]["extra"],
        "yes",
        "an include entry that fits a combination adds its keys to it"
    );
}

#[test]
fn fail_fast_cancels_a_running_sibling_when_one_instance_fails() {
    let project = Project::new(
        r#"
on: push
jobs:
  test:
    strategy:
      fail-fast: true
      matrix:
        kind: [fails, sleeps]
    steps:
      - run: |
          if [ "${{ matrix.kind }}" = fails ]; then
            # Fail only once the sibling runs, so there is a running sibling to cancel.
            for i in $(seq 600); do
              [ -s "$SCRATCH/sleeper-started" ] && exit 1
              sleep 0.05
            done
            echo "the sibling never started"
            exit 2
          fi
          echo $$ > "$SCRATCH/sleeper-started"
          sleep 30
          touch "$SCRATCH/sleeper-finished"
"#,
    );
    let (outcome, record) = project.run_json(&["--jobs", "4"]);
    outcome.expect_code(1);
    assert_eq!(record["status"], "failure");
    assert_eq!(job(&record, "test (fails)")["status"], "failure");
    assert_eq!(job(&record, "test (fails)")["steps"][0]["exit_code"], 1);
    let sleeper = job(&record, "test (sleeps)");
    assert_eq!(sleeper["status"], "cancelled", "{sleeper:#}");
    assert!(!project.scratch_file("sleeper-finished").exists());
    let pid = common::read_pid(&project.scratch_file("sleeper-started"));
    assert!(
        common::group_members(pid).is_empty(),
        "the cancelled sibling's processes still run"
    );
}

#[test]
fn without_fail_fast_the_siblings_of_a_failed_instance_finish() {
    // The surviving instance finishes only after the run has recorded the failure of its
    // sibling (`run.partial.json` is written after fail-fast would have cancelled it).
    let project = Project::new(
        r#"
on: push
jobs:
  test:
    strategy:
      fail-fast: false
      matrix:
        kind: [fails, survives]
    steps:
      - run: |
          if [ "${{ matrix.kind }}" = fails ]; then exit 1; fi
          partial="$GITHUB_WORKSPACE/../../run.partial.json"
          for i in $(seq 600); do
            if grep -q '"failure"' "$partial" 2>/dev/null; then
              touch "$SCRATCH/survivor-finished"
              exit 0
            fi
            sleep 0.05
          done
          echo "the sibling's failure was never recorded"
          exit 2
"#,
    );
    let (outcome, record) = project.run_json(&["--jobs", "4"]);
    outcome.expect_code(1);
    assert_eq!(record["status"], "failure");
    assert_eq!(job(&record, "test (fails)")["status"], "failure");
    assert_eq!(job(&record, "test (survives)")["status"], "success");
    assert!(project.scratch_file("survivor-finished").exists());
}

#[test]
fn matrix_instances_run_at_the_same_time_without_max_parallel() {
    // The control for the test below: each instance waits until both have started.
    let project = Project::new(
        r#"
on: push
jobs:
  test:
    strategy:
      matrix:
        n: [1, 2]
    steps:
      - run: |
          touch "$SCRATCH/started-${{ matrix.n }}"
          for i in $(seq 600); do
            [ -e "$SCRATCH/started-1" ] && [ -e "$SCRATCH/started-2" ] && exit 0
            sleep 0.05
          done
          exit 1
"#,
    );
    let (outcome, record) = project.run_json(&["--jobs", "4"]);
    outcome.expect_code(0);
    assert_eq!(record["status"], "success");
}

#[test]
fn max_parallel_1_runs_matrix_instances_one_at_a_time() {
    let project = Project::new(
        r#"
on: push
jobs:
  test:
    strategy:
      max-parallel: 1
      matrix:
        n: [1, 2, 3]
    steps:
      - run: |
          echo "start ${{ matrix.n }}" >> "$SCRATCH/order"
          sleep 0.3
          echo "end ${{ matrix.n }}" >> "$SCRATCH/order"
"#,
    );
    let outcome = project.run(&["--jobs", "4"]);
    outcome.expect_code(0);
    assert_serial(&project.read_scratch("order"), 3);
    assert!(
        outcome
            .stdout
            .contains("waiting: `strategy.max-parallel` is 1 and 1 are running"),
        "stdout: {}",
        outcome.stdout
    );
    let record = project.stored_record(1);
    assert_eq!(record["jobs"].as_array().unwrap().len(), 3);
}

#[test]
fn jobs_1_runs_independent_jobs_one_at_a_time_and_says_why_they_wait() {
    let project = Project::new(
        r#"
on: push
jobs:
  x:
    steps:
      - run: |
          echo "start x" >> "$SCRATCH/order"
          sleep 0.3
          echo "end x" >> "$SCRATCH/order"
  y:
    steps:
      - run: |
          echo "start y" >> "$SCRATCH/order"
          sleep 0.3
          echo "end y" >> "$SCRATCH/order"
  z:
    steps:
      - run: |
          echo "start z" >> "$SCRATCH/order"
          sleep 0.3
          echo "end z" >> "$SCRATCH/order"
"#,
    );
    let outcome = project.run(&["--jobs", "1"]);
    outcome.expect_code(0);
    assert_serial(&project.read_scratch("order"), 3);
    assert!(
        outcome
            .stdout
            .contains("waiting: all 1 job slots are busy (--jobs 1)"),
        "stdout: {}",
        outcome.stdout
    );
}

#[test]
fn fail_fast_cancels_queued_siblings_before_they_start() {
    let project = Project::new(
        r#"
on: push
jobs:
  test:
    strategy:
      max-parallel: 1
      matrix:
        n: [1, 2, 3]
    steps:
      - run: |
          touch "$SCRATCH/ran-${{ matrix.n }}"
          exit 1
"#,
    );
    let (outcome, record) = project.run_json(&["--jobs", "4"]);
    outcome.expect_code(1);
    assert_eq!(job(&record, "test (1)")["status"], "failure");
    for n in [2, 3] {
        let queued = job(&record, &format!("test ({n})"));
        assert_eq!(queued["status"], "cancelled", "{queued:#}");
        assert!(!project.scratch_file(&format!("ran-{n}")).exists());
    }
}

#[test]
fn a_matrix_from_an_expression_expands_from_a_needed_jobs_output() {
    let project = Project::new(
        r#"
on: push
jobs:
  plan:
    outputs:
      matrix: ${{ steps.plan.outputs.matrix }}
    steps:
      - id: plan
        run: echo 'matrix={"os":["linux","mac"],"include":[{"os":"bsd","n":1}]}' >> "$GITHUB_OUTPUT"
  test:
    needs: plan
    strategy:
      matrix: ${{ fromJSON(needs.plan.outputs.matrix) }}
    steps:
      - id: show
        run: echo "os=${{ matrix.os }}" >> "$GITHUB_OUTPUT"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    assert_eq!(
        common::job_names(&record),
        ["plan", "test (linux)", "test (mac)", "test (bsd, 1)"]
    );
    assert_eq!(
        common::step(job(&record, "test (bsd, 1)"), "show")["outputs"]["os"],
        "bsd"
    );
}

#[test]
fn a_job_name_can_use_the_matrix() {
    let project = Project::new(
        r#"
on: push
jobs:
  test:
    name: test on ${{ matrix.os }}
    strategy:
      matrix:
        os: [linux, mac]
    steps:
      - run: echo "${{ matrix.os }}"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    assert_eq!(common::job_names(&record), ["test on linux", "test on mac"]);
}
