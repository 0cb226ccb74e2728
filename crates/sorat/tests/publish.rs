//! `publish-artifact` under `sorat run`: a local, signed, immutable artifact repository in
//! the data folder.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{Project, job, step};

const PIPELINE: &str = r#"on: push
jobs:
  build:
    steps:
      - uses: actions/checkout@v4
      - id: publish
        uses: publish-artifact
        with:
          name: site
          path: public
          version: "2.1"
"#;

#[test]
fn sorat_run_publishes_once_and_refuses_a_changed_version() {
    let project = Project::with_files(PIPELINE, &[("public/index.html", "<h1>one</h1>\n")]);
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    let digest = step(job(&record, "build"), "publish")["outputs"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    let manifest = project.data.join("artifacts/manifests/site/2.1.json");
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert!(
        stored["signature"].as_str().is_some_and(|s| s.len() == 128),
        "{stored:#}"
    );
    assert!(project.data.join("artifacts.key").exists());

    // The same content again: fine, nothing new.
    let again = project.run(&[]);
    again.expect_code(0);
    assert!(
        again.all_output().contains("already published"),
        "{}",
        again.all_output()
    );

    // Other content under the same version: the step fails and says why.
    project.write("public/index.html", "<h1>two</h1>\n");
    project.commit("two");
    let changed = project.run(&[]);
    changed.expect_code(1);
    assert!(
        changed.all_output().contains("site@2.1"),
        "{}",
        changed.all_output()
    );
}
