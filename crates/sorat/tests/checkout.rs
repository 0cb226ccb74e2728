//! What a job's workspace holds: the HEAD commit by default, the working copy with
//! `--dirty`, other commits and folders with `actions/checkout`'s `ref` and `path`, and a
//! monorepo project's folder as the workspace.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{Project, job, step};

const LOOK: &str = r#"
on: push
jobs:
  look:
    steps:
      - uses: actions/checkout@v4
      - id: look
        run: |
          echo "a=$(cat a.txt)" >> "$GITHUB_OUTPUT"
          for f in gone.txt new.txt ignored.log; do
            if [ -e "$f" ]; then echo "$f=present"; else echo "$f=absent"; fi >> "$GITHUB_OUTPUT"
          done
"#;

fn project_with_local_changes() -> Project {
    let project = Project::with_files(
        LOOK,
        &[
            ("a.txt", "committed"),
            ("gone.txt", "to be deleted"),
            (".gitignore", "*.log\n"),
        ],
    );
    project.write("a.txt", "edited");
    std::fs::remove_file(project.repo.join("gone.txt")).unwrap();
    project.write("new.txt", "untracked");
    project.write("ignored.log", "ignored by git");
    project
}

#[test]
fn a_run_checks_out_the_head_commit_not_the_working_copy() {
    let project = project_with_local_changes();
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    assert_eq!(record["dirty"], false);
    assert_eq!(record["sha"], project.head().as_str());
    let look = &step(job(&record, "look"), "look")["outputs"];
    assert_eq!(look["a"], "committed");
    assert_eq!(look["gone.txt"], "present");
    assert_eq!(look["new.txt"], "absent");
    assert_eq!(look["ignored.log"], "absent");
}

#[test]
fn dirty_runs_the_working_copy_with_modified_untracked_and_deleted_files() {
    let project = project_with_local_changes();
    let (outcome, record) = project.run_json(&["--dirty"]);
    outcome.expect_code(0);
    assert_eq!(record["dirty"], true);
    let look = &step(job(&record, "look"), "look")["outputs"];
    assert_eq!(look["a"], "edited");
    assert_eq!(look["gone.txt"], "absent");
    assert_eq!(look["new.txt"], "present");
    // Ignored files are not part of the working copy's changes.
    assert_eq!(look["ignored.log"], "absent");
}

#[test]
fn an_uncommitted_pipeline_file_is_pointed_out() {
    let project = Project::new("on: push\njobs:\n  one:\n    steps:\n      - run: echo old\n");
    project.write(
        ".sorat/pipeline.yaml",
        "on: push\njobs:\n  one:\n    steps:\n      - run: echo new\n",
    );
    let outcome = project.run(&[]);
    outcome.expect_code(0);
    assert!(
        outcome
            .stderr
            .contains("warning: .sorat/pipeline.yaml has uncommitted changes"),
        "stderr: {}",
        outcome.stderr
    );
    let quiet = project.run(&["--dirty"]);
    quiet.expect_code(0);
    assert!(!quiet.stderr.contains("uncommitted changes"));
}

#[test]
fn checkout_with_ref_and_path_puts_another_commit_in_a_subfolder() {
    let project = Project::with_files(
        r#"
on: push
jobs:
  two:
    steps:
      - uses: actions/checkout@v4
      - id: old
        uses: actions/checkout@v4
        with:
          ref: v1
          path: old
      - id: look
        run: |
          echo "current=$(cat a.txt)" >> "$GITHUB_OUTPUT"
          echo "old=$(cat old/a.txt)" >> "$GITHUB_OUTPUT"
          echo "old_has_b=$(test -e old/b.txt && echo yes || echo no)" >> "$GITHUB_OUTPUT"
"#,
        &[("a.txt", "version one")],
    );
    let first = project.head();
    project.git(&["tag", "v1"]);
    project.write("a.txt", "version two");
    project.write("b.txt", "added later");
    project.commit("second");
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    let two = job(&record, "two");
    let look = &step(two, "look")["outputs"];
    assert_eq!(look["current"], "version two");
    assert_eq!(look["old"], "version one");
    assert_eq!(look["old_has_b"], "no");
    assert_eq!(step(two, "old")["outputs"]["commit"], first.as_str());
}

#[test]
fn checkout_of_an_unknown_ref_fails_the_step() {
    let project = Project::new(
        r#"
on: push
jobs:
  bad:
    steps:
      - id: checkout
        uses: actions/checkout@v4
        with:
          ref: no-such-branch
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    let checkout = step(job(&record, "bad"), "checkout");
    assert_eq!(checkout["status"], "failure");
    assert!(
        checkout["reason"]
            .as_str()
            .unwrap()
            .contains("`ref: no-such-branch`"),
        "{checkout:#}"
    );
}

#[test]
fn a_pipeline_in_a_subfolder_gets_that_folder_as_its_workspace() {
    let project = Project::empty();
    project.write("top.txt", "at the top");
    project.write("proj/marker.txt", "in the project");
    project.write(
        "proj/.sorat/pipeline.yaml",
        r#"
on: push
jobs:
  sub:
    steps:
      - uses: actions/checkout@v4
      - id: look
        run: |
          echo "pwd=$(basename "$(pwd)")" >> "$GITHUB_OUTPUT"
          echo "workspace=$GITHUB_WORKSPACE" >> "$GITHUB_OUTPUT"
          echo "marker=$(cat marker.txt)" >> "$GITHUB_OUTPUT"
          echo "top=$(cat ../top.txt)" >> "$GITHUB_OUTPUT"
"#,
    );
    project.commit("monorepo");
    let outcome = common::finish(
        project
            .sorat(&[
                "run",
                project.repo.join("proj").to_str().unwrap(),
                "--data",
                project.data.to_str().unwrap(),
                "--output",
                "json",
            ])
            .spawn()
            .unwrap(),
    );
    outcome.expect_code(0);
    let record: serde_json::Value = serde_json::from_str(&outcome.stdout).unwrap();
    let look = &step(job(&record, "sub"), "look")["outputs"];
    assert_eq!(look["pwd"], "proj");
    assert!(
        look["workspace"].as_str().unwrap().ends_with("/proj"),
        "{look:#}"
    );
    assert_eq!(look["marker"], "in the project");
    assert_eq!(look["top"], "at the top");
}

#[test]
fn sorat_run_without_a_path_finds_the_pipeline_of_the_repository_around_it() {
    let project = Project::new(
        "on: push\njobs:\n  found:\n    steps:\n      - run: touch \"$SCRATCH/found\"\n",
    );
    project.write("deep/er/file.txt", "x");
    project.commit("deeper");
    let mut command = project.sorat(&["run", "--data", project.data.to_str().unwrap()]);
    command.current_dir(project.repo.join("deep/er"));
    let outcome = common::finish(command.spawn().unwrap());
    outcome.expect_code(0);
    assert!(project.scratch_file("found").exists());
}

#[test]
fn a_repository_without_a_commit_is_refused_without_dirty() {
    let project = Project::empty();
    project.write(
        ".sorat/pipeline.yaml",
        "on: push\njobs:\n  one:\n    steps:\n      - run: touch \"$SCRATCH/ran\"\n",
    );
    let outcome = project.run(&[]);
    outcome.expect_code(2);
    assert!(
        outcome.stderr.contains("the repository has no commit yet"),
        "stderr: {}",
        outcome.stderr
    );
    assert!(!project.scratch_file("ran").exists());
}

#[test]
fn dirty_runs_a_repository_without_a_commit() {
    let project = Project::empty();
    project.write(
        ".sorat/pipeline.yaml",
        "on: push\njobs:\n  one:\n    steps:\n      - run: touch \"$SCRATCH/ran\"\n",
    );
    // Without `--dirty` the message says: "the repository has no commit yet (commit first,
    // or run with --dirty)".
    let outcome = project.run(&["--dirty"]);
    outcome.expect_code(0);
    assert!(project.scratch_file("ran").exists());
}
