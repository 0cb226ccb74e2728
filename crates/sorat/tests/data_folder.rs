//! Where a run keeps its things: run folders numbered in the data folder (by default inside
//! `.git`, so the working copy stays clean), workspaces removed unless kept.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::Project;

const SIMPLE: &str = r#"
on: push
jobs:
  one:
    steps:
      - run: echo "$GITHUB_WORKSPACE" > "$SCRATCH/workspace-$GITHUB_RUN_ID"
"#;

#[test]
fn without_data_the_run_lives_in_the_git_folder_and_the_working_copy_stays_clean() {
    let project = Project::new(SIMPLE);
    let outcome = common::finish(
        project
            .sorat(&["run", project.repo.to_str().unwrap()])
            .spawn()
            .unwrap(),
    );
    outcome.expect_code(0);
    let record = project.repo.join(".git/sorat/runs/1/run.json");
    assert!(record.is_file(), "no record at {}", record.display());
    assert_eq!(project.git(&["status", "--porcelain"]), "");
}

#[test]
fn runs_are_numbered_and_each_keeps_its_record() {
    let project = Project::new(SIMPLE);
    for expected in 1..=3 {
        let (outcome, record) = project.run_json(&[]);
        outcome.expect_code(0);
        assert_eq!(record["id"], expected);
        assert_eq!(project.stored_record(expected)["id"], expected);
    }
}

#[test]
fn two_runs_at_once_on_one_data_folder_get_their_own_run_folders() {
    let project = Project::new(SIMPLE);
    let args = [
        "run",
        project.repo.to_str().unwrap(),
        "--data",
        project.data.to_str().unwrap(),
        "--output",
        "json",
    ];
    let first = project.sorat(&args).spawn().unwrap();
    let second = project.sorat(&args).spawn().unwrap();
    let outcomes = [common::finish(first), common::finish(second)];
    let mut ids: Vec<u64> = outcomes
        .iter()
        .map(|outcome| {
            outcome.expect_code(0);
            let record: serde_json::Value = serde_json::from_str(&outcome.stdout).unwrap();
            record["id"].as_u64().unwrap()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2]);
    assert_ne!(
        project.read_scratch("workspace-1"),
        project.read_scratch("workspace-2")
    );
}

#[test]
fn workspaces_are_removed_unless_kept() {
    let project = Project::new(SIMPLE);
    project.run(&[]).expect_code(0);
    let workspace = project.read_scratch("workspace-1").trim().to_string();
    assert!(workspace.starts_with(project.data.to_str().unwrap()));
    assert!(!std::path::Path::new(&workspace).exists());

    project.run(&["--keep-workspaces"]).expect_code(0);
    let kept = project.read_scratch("workspace-2").trim().to_string();
    assert!(std::path::Path::new(&kept).is_dir(), "{kept} was removed");
}
