//! `concurrency` groups: members never overlap, and `cancel-in-progress` stops the member
//! that holds the group in favour of the newer one.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{Project, job};

#[test]
fn members_of_a_concurrency_group_never_overlap() {
    // Each instance takes a lock (`mkdir` fails when the folder exists) for its whole step.
    // Two members only: with a third, GitHub would cancel the pending second one.
    let project = Project::new(
        r#"
on: push
jobs:
  deploy:
    concurrency:
      group: shared-target
    strategy:
      fail-fast: false
      matrix:
        n: [1, 2]
    steps:
      - run: |
          if ! mkdir "$SCRATCH/lock"; then
            echo "the lock is held: two members of the group overlap"
            exit 1
          fi
          echo "${{ matrix.n }}" >> "$SCRATCH/order"
          sleep 0.3
          rmdir "$SCRATCH/lock"
"#,
    );
    let outcome = project.run(&["--jobs", "4"]);
    outcome.expect_code(0);
    let record = project.stored_record(1);
    for n in 1..=2 {
        assert_eq!(job(&record, &format!("deploy ({n})"))["status"], "success");
    }
    assert_eq!(project.read_scratch("order").lines().count(), 2);
    assert!(
        outcome
            .stdout
            .contains("waiting: concurrency group `shared-target` is held by `deploy (1)`"),
        "stdout: {}",
        outcome.stdout
    );
}

#[test]
fn a_group_from_an_expression_separates_members_by_its_value() {
    // `group: g-${{ matrix.target }}`: the two `a` instances share a group, `b` does not,
    // so `b` runs alongside whichever `a` holds the group.
    let project = Project::new(
        r#"
on: push
jobs:
  deploy:
    concurrency:
      group: g-${{ matrix.target }}
    strategy:
      matrix:
        include:
          - target: a
            n: 1
          - target: a
            n: 2
          - target: b
            n: 3
    steps:
      - run: |
          if ! mkdir "$SCRATCH/lock-${{ matrix.target }}"; then exit 1; fi
          sleep 0.3
          rmdir "$SCRATCH/lock-${{ matrix.target }}"
"#,
    );
    let outcome = project.run(&["--jobs", "4"]);
    outcome.expect_code(0);
    assert!(
        outcome
            .stdout
            .contains("waiting: concurrency group `g-a` is held by"),
        "stdout: {}",
        outcome.stdout
    );
    assert!(
        !outcome.stdout.contains("concurrency group `g-b`"),
        "stdout: {}",
        outcome.stdout
    );
}

#[test]
fn cancel_in_progress_cancels_the_member_that_holds_the_group() {
    let project = Project::new(
        r#"
on: push
jobs:
  deploy:
    concurrency:
      group: shared-target
      cancel-in-progress: true
    strategy:
      fail-fast: false
      matrix:
        n: [1, 2]
    steps:
      - run: |
          if [ "${{ matrix.n }}" = 1 ]; then
            sleep 30
            touch "$SCRATCH/first-finished"
          else
            touch "$SCRATCH/second-ran"
          fi
"#,
    );
    let outcome = project.run(&["--jobs", "4"]);
    let record = project.stored_record(1);
    let first = job(&record, "deploy (1)");
    let second = job(&record, "deploy (2)");
    assert_eq!(first["status"], "cancelled", "{first:#}");
    assert_eq!(second["status"], "success", "{second:#}");
    assert!(!project.scratch_file("first-finished").exists());
    assert!(project.scratch_file("second-ran").exists());
    assert!(
        outcome.stdout.contains(
            "waiting: cancelling `deploy (1)`, which holds concurrency group `shared-target`"
        ),
        "stdout: {}",
        outcome.stdout
    );
}

#[test]
fn a_group_keeps_one_pending_member_and_cancels_the_older_pending_one() {
    // Three members: the first holds the group, the second is pending until the third is
    // queued, which takes its place (GitHub's rule). The run is cancelled-free otherwise.
    let project = Project::new(
        r#"
on: push
jobs:
  deploy:
    concurrency:
      group: one-target
    strategy:
      fail-fast: false
      matrix:
        n: [1, 2, 3]
    steps:
      - run: |
          echo "${{ matrix.n }}" >> "$SCRATCH/ran"
          sleep 0.2
"#,
    );
    let outcome = project.run(&["--jobs", "4"]);
    let record = project.stored_record(1);
    assert_eq!(job(&record, "deploy (1)")["status"], "success");
    assert_eq!(job(&record, "deploy (2)")["status"], "cancelled");
    assert!(
        job(&record, "deploy (2)")["reason"]
            .as_str()
            .unwrap()
            .contains("superseded"),
        "{record:#}"
    );
    assert_eq!(job(&record, "deploy (3)")["status"], "success");
    assert_eq!(
        project.read_scratch("ran").lines().collect::<Vec<_>>(),
        ["1", "3"]
    );
    // A cancelled member makes the run cancelled, not failed.
    assert_eq!(record["status"], "cancelled");
    outcome.expect_code(1);
}
