//! Running one job of a run whose other jobs ended elsewhere (the server's agents run a
//! pipeline job by job): `RunRequest::given` feeds `needs` and decides whether the job runs.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use indexmap::IndexMap;
use sorat_config::SourceFile;
use sorat_pipeline::exec::{self, Cancel, GivenJob, RunIdentity, RunRequest};
use sorat_pipeline::record::Status;
use sorat_pipeline::trigger::EventKind;

const PIPELINE: &str = r#"on: push
jobs:
  build:
    runs-on: linux
    outputs:
      version: ${{ steps.v.outputs.version }}
    steps:
      - id: v
        run: echo "version=1.0" >> "$GITHUB_OUTPUT"
  test:
    needs: build
    outputs:
      seen: ${{ steps.s.outputs.seen }}
    steps:
      - id: s
        run: echo "seen=${{ needs.build.result }}/${{ needs.build.outputs.version }}/${{ github.run_number }}/${{ github.actor }}" >> "$GITHUB_OUTPUT"
"#;

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

async fn run_test_job(given: IndexMap<String, GivenJob>) -> sorat_pipeline::record::RunRecord {
    let temp = tempfile::tempdir().expect("tempdir");
    let repo = temp.path().join("repo");
    std::fs::create_dir_all(repo.join(".sorat")).expect("mkdir");
    std::fs::write(repo.join(".sorat/pipeline.yaml"), PIPELINE).expect("write");
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let file = SourceFile::new(repo.join(".sorat/pipeline.yaml"), PIPELINE);
    let (pipeline, diagnostics) = sorat_pipeline::load::load(&file);
    let pipeline = pipeline.unwrap_or_else(|| panic!("{diagnostics:?}"));
    let request = RunRequest {
        pipeline: Arc::new(pipeline),
        repo: sorat_pipeline::git::repo_state(&repo).expect("repo state"),
        dirty: false,
        project_dir: String::new(),
        event: EventKind::Push,
        inputs: IndexMap::new(),
        secrets: IndexMap::new(),
        vars: IndexMap::new(),
        only_job: Some("test".into()),
        parallelism: 2,
        data_dir: temp.path().join("data"),
        keep_workspaces: false,
        given,
        identity: Some(RunIdentity {
            run_id: 40,
            run_number: 7,
            attempt: 1,
            actor: "alice".into(),
            repository: "team/shop".into(),
            server_url: "http://127.0.0.1:1".into(),
        }),
        artifacts_dir: None,
        publisher: None,
        deployer: None,
    };
    let (events, _receiver) = tokio::sync::mpsc::unbounded_channel();
    let cancel = Cancel {
        soft: Default::default(),
        hard: Default::default(),
    };
    exec::run(request, events, cancel)
        .await
        .expect("run starts")
}

#[tokio::test]
async fn a_given_job_feeds_needs_and_is_not_run_again() {
    let given = IndexMap::from([(
        "build".to_string(),
        GivenJob {
            status: Status::Success,
            outputs: IndexMap::from([("version".to_string(), "2.5".to_string())]),
        },
    )]);
    let record = run_test_job(given).await;
    let ids: Vec<&str> = record.jobs.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(ids, ["test"], "only `test` runs: {record:?}");
    assert_eq!(record.jobs[0].status, Status::Success);
    assert_eq!(
        record.jobs[0].outputs.get("seen").map(String::as_str),
        Some("success/2.5/7/alice")
    );
}

#[tokio::test]
async fn a_given_failed_need_skips_the_job() {
    let given = IndexMap::from([(
        "build".to_string(),
        GivenJob {
            status: Status::Failure,
            outputs: IndexMap::new(),
        },
    )]);
    let record = run_test_job(given).await;
    assert_eq!(record.jobs.len(), 1, "{record:?}");
    assert_eq!(record.jobs[0].id, "test");
    assert_eq!(record.jobs[0].status, Status::Skipped);
}
