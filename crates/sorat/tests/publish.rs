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

const WITH_ATTACHMENTS: &str = r#"on: push
jobs:
  build:
    steps:
      - uses: actions/checkout@v4
      - id: publish
        uses: publish-artifact
        with:
          name: app
          path: dist
          version: "1.0"
          attachments: |
            sbom: reports/sbom.cdx.json
            junit: reports/junit.xml
"#;

#[test]
fn attachments_are_stored_by_digest_with_their_kind_and_media_type() {
    let project = Project::with_files(
        WITH_ATTACHMENTS,
        &[
            ("dist/app.sh", "echo app\n"),
            ("reports/sbom.cdx.json", "{\"bomFormat\": \"CycloneDX\"}\n"),
            ("reports/junit.xml", "<testsuites/>\n"),
        ],
    );
    let (outcome, _) = project.run_json(&[]);
    outcome.expect_code(0);
    assert!(
        outcome
            .all_output()
            .contains("1 files (9 B) and 2 attachment(s)"),
        "{}",
        outcome.all_output()
    );
    let manifest = project.data.join("artifacts/manifests/app/1.0.json");
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let attachments = stored["manifest"]["attachments"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> = attachments
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap(),
                a["media_type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("junit", "application/xml"),
            ("sbom", "application/vnd.cyclonedx+json")
        ],
        "{stored:#}"
    );
    // Each attachment is a blob of the repository, named by its digest.
    for attachment in attachments {
        let digest = attachment["digest"].as_str().unwrap();
        let hex = digest.strip_prefix("sha256:").unwrap();
        let found = walk(&project.data.join("artifacts"))
            .into_iter()
            .any(|path| {
                path.file_name()
                    .is_some_and(|name| name.to_string_lossy() == hex)
            });
        assert!(found, "no blob {digest}");
    }

    // A missing attachment fails the step and names it.
    let broken = WITH_ATTACHMENTS.replace("reports/junit.xml", "reports/none.xml");
    let project = Project::with_files(
        &broken,
        &[
            ("dist/app.sh", "echo app\n"),
            ("reports/sbom.cdx.json", "{}"),
        ],
    );
    let outcome = project.run(&[]);
    outcome.expect_code(1);
    assert!(
        outcome
            .all_output()
            .contains("`attachments`: junit: no file `reports/none.xml` in the workspace"),
        "{}",
        outcome.all_output()
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}
