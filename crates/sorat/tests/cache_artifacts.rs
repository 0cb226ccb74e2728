//! `actions/cache` across runs and `upload-artifact` / `download-artifact` between jobs: what
//! comes back is byte for byte (and mode for mode) what went in.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Project, job, step};

/// Every file under `root`: its relative path, its bytes and its permission bits.
fn tree(root: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, (Vec<u8>, u32)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, files);
            } else {
                let relative = path.strip_prefix(root).unwrap().display().to_string();
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                files.insert(relative, (std::fs::read(&path).unwrap(), mode));
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(root, root, &mut files);
    files
}

const CACHE_PIPELINE: &str = r#"
on: push
jobs:
  build:
    steps:
      - uses: actions/checkout@v4
      - id: cache
        uses: actions/cache@v4
        with:
          path: deps
          key: deps-${{ hashFiles('lock.txt') }}
          RESTORE_KEYS
      - id: report
        run: |
          echo "hit=${{ steps.cache.outputs.cache-hit }}" >> "$GITHUB_OUTPUT"
          echo "primary=${{ steps.cache.outputs.cache-primary-key }}" >> "$GITHUB_OUTPUT"
          echo "matched=${{ steps.cache.outputs.cache-matched-key }}" >> "$GITHUB_OUTPUT"
          if [ -d deps ]; then echo "restored=yes"; else echo "restored=no"; fi >> "$GITHUB_OUTPUT"
          if [ ! -d deps ]; then
            mkdir -p deps/nested
            head -c 100000 /dev/urandom > deps/blob.bin
            echo "made for $(cat lock.txt)" > deps/nested/tool.sh
            chmod 755 deps/nested/tool.sh
          fi
          mkdir -p "$SCRATCH/run-$GITHUB_RUN_ID"
          cp -a deps "$SCRATCH/run-$GITHUB_RUN_ID/"
"#;

fn cache_pipeline(restore_keys: bool) -> String {
    CACHE_PIPELINE.replace(
        "RESTORE_KEYS",
        if restore_keys {
            "restore-keys: |\n            deps-"
        } else {
            ""
        },
    )
}

#[test]
fn cache_misses_then_saves_then_hits_with_identical_files() {
    let project = Project::with_files(&cache_pipeline(false), &[("lock.txt", "v1\n")]);

    let (first, record) = project.run_json(&[]);
    first.expect_code(0);
    let build = job(&record, "build");
    let report = &step(build, "report")["outputs"];
    assert_eq!(report["hit"], "false");
    assert_eq!(report["restored"], "no");
    let key = report["primary"].as_str().unwrap().to_string();
    assert!(
        key.starts_with("deps-") && key.len() > "deps-".len(),
        "the key holds a hash of lock.txt: {key}"
    );
    // The cache is saved by a post step at the end of the job.
    let steps = build["steps"].as_array().unwrap();
    let post = steps.last().unwrap();
    assert_eq!(post["name"], format!("Post cache {key}"));
    assert_eq!(post["status"], "success");

    let (second, record) = project.run_json(&[]);
    second.expect_code(0);
    let build = job(&record, "build");
    let report = &step(build, "report")["outputs"];
    assert_eq!(report["hit"], "true");
    assert_eq!(report["restored"], "yes");
    assert_eq!(report["primary"], key.as_str());
    assert_eq!(report["matched"], key.as_str());
    // An exact hit is not saved again.
    assert!(
        !build["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|step| step["name"].as_str().unwrap().starts_with("Post cache")),
        "{build:#}"
    );
    let saved = tree(&project.scratch_file("run-1/deps"));
    let restored = tree(&project.scratch_file("run-2/deps"));
    assert_eq!(
        saved.keys().collect::<Vec<_>>(),
        ["blob.bin", "nested/tool.sh"]
    );
    assert_eq!(saved["nested/tool.sh"].1, 0o755);
    assert!(
        saved == restored,
        "the restored files differ from the saved ones"
    );
}

#[test]
fn a_changed_key_restores_the_older_entry_by_restore_key_without_a_hit() {
    let project = Project::with_files(&cache_pipeline(true), &[("lock.txt", "v1\n")]);
    let (first, record) = project.run_json(&[]);
    first.expect_code(0);
    let old_key = step(job(&record, "build"), "report")["outputs"]["primary"]
        .as_str()
        .unwrap()
        .to_string();

    project.write("lock.txt", "v2\n");
    project.commit("new lock");
    let (second, record) = project.run_json(&[]);
    second.expect_code(0);
    let build = job(&record, "build");
    let report = &step(build, "report")["outputs"];
    assert_eq!(report["hit"], "false");
    assert_eq!(report["restored"], "yes");
    assert_ne!(report["primary"], old_key.as_str());
    assert_eq!(report["matched"], old_key.as_str());
    // The older entry's files came back, even though the lock file changed.
    let saved = tree(&project.scratch_file("run-1/deps"));
    let restored = tree(&project.scratch_file("run-2/deps"));
    assert!(
        saved == restored,
        "the restored files differ from the older entry"
    );
    // Not an exact hit, so the new key is saved at the end.
    let last = build["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last["name"],
        format!("Post cache {}", report["primary"].as_str().unwrap())
    );

    let (third, record) = project.run_json(&[]);
    third.expect_code(0);
    assert_eq!(
        step(job(&record, "build"), "report")["outputs"]["hit"],
        "true"
    );
}

const ARTIFACT_PIPELINE: &str = r#"
on: push
jobs:
  produce:
    steps:
      - run: |
          mkdir -p out/dir/nested out/empty-sibling
          echo "top" > out/top.txt
          printf 'deep\000binary\377' > out/dir/nested/deep.bin
          printf '#!/bin/sh\necho "tool ran"\n' > out/tool.sh
          chmod 755 out/tool.sh
          chmod 600 out/dir/nested/deep.bin
          cp -a out "$SCRATCH/original"
      - uses: actions/upload-artifact@v4
        with:
          name: bundle
          path: out
  consume:
    needs: produce
    steps:
      - id: download
        uses: actions/download-artifact@v4
        with:
          name: bundle
          path: got
      - id: use
        run: |
          cp -a got "$SCRATCH/downloaded"
          echo "says=$(./got/tool.sh)" >> "$GITHUB_OUTPUT"
"#;

#[test]
fn an_artifact_comes_back_in_a_later_job_with_contents_and_modes() {
    let project = Project::new(ARTIFACT_PIPELINE);
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    let consume = job(&record, "consume");
    assert_eq!(step(consume, "use")["outputs"]["says"], "tool ran");
    let download_path = step(consume, "download")["outputs"]["download-path"]
        .as_str()
        .unwrap();
    assert!(download_path.ends_with("/got"), "{download_path}");
    let original = tree(&project.scratch_file("original"));
    let downloaded = tree(&project.scratch_file("downloaded"));
    assert_eq!(
        original.keys().collect::<Vec<_>>(),
        ["dir/nested/deep.bin", "tool.sh", "top.txt"]
    );
    assert_eq!(original["tool.sh"].1, 0o755);
    assert_eq!(
        downloaded.keys().collect::<Vec<_>>(),
        original.keys().collect::<Vec<_>>()
    );
    for (path, (bytes, mode)) in &original {
        let (got_bytes, got_mode) = &downloaded[path];
        assert!(got_bytes == bytes, "{path}: contents differ");
        assert_eq!(got_mode, mode, "{path}: mode {got_mode:o}, not {mode:o}");
    }
}

#[test]
fn downloading_an_unknown_artifact_fails_and_lists_the_available_ones() {
    let pipeline = format!(
        "{ARTIFACT_PIPELINE}  wrong:\n    needs: produce\n    steps:\n      - id: download\n        uses: actions/download-artifact@v4\n        with:\n          name: bundel\n"
    );
    let project = Project::new(&pipeline);
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    let wrong = job(&record, "wrong");
    assert_eq!(wrong["status"], "failure");
    let download = step(wrong, "download");
    assert_eq!(download["status"], "failure");
    let reason = download["reason"].as_str().unwrap();
    assert!(
        reason.contains("artifact `bundel` not found") && reason.contains("`bundle`"),
        "reason: {reason}"
    );
    assert_eq!(job(&record, "consume")["status"], "success");
}

#[test]
fn a_cache_is_not_saved_from_a_failed_job() {
    let project = Project::new(
        r#"
on: push
jobs:
  build:
    steps:
      - id: cache
        uses: actions/cache@v4
        with:
          path: deps
          key: deps-fixed
      - id: report
        run: |
          echo "hit=${{ steps.cache.outputs.cache-hit }}" >> "$GITHUB_OUTPUT"
          mkdir -p deps && echo data > deps/file
      - run: test -e "$SCRATCH/pass"
"#,
    );
    let (failed, record) = project.run_json(&[]);
    failed.expect_code(1);
    let build = job(&record, "build");
    assert_eq!(step(build, "report")["outputs"]["hit"], "false");
    assert!(
        !build["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|step| step["name"].as_str().unwrap().starts_with("Post cache")),
        "{build:#}"
    );
    std::fs::write(project.scratch_file("pass"), "").unwrap();
    let (passed, record) = project.run_json(&[]);
    passed.expect_code(0);
    assert_eq!(
        step(job(&record, "build"), "report")["outputs"]["hit"],
        "false",
        "the failed run saved its cache"
    );
    let (third, record) = project.run_json(&[]);
    third.expect_code(0);
    assert_eq!(
        step(job(&record, "build"), "report")["outputs"]["hit"],
        "true"
    );
}

#[test]
fn globbed_artifacts_keep_paths_below_the_glob_and_download_all_into_named_folders() {
    let project = Project::new(
        r#"
on: push
jobs:
  up:
    steps:
      - run: |
          mkdir -p out/a out/b
          echo 1 > out/a/x.txt
          echo 2 > out/a/y.tmp
          echo 3 > out/b/z.txt
          echo r > report.txt
      - uses: actions/upload-artifact@v4
        with:
          name: globbed
          path: |
            out/**
            !out/**/*.tmp
      - uses: actions/upload-artifact@v4
        with:
          name: report
          path: report.txt
  down:
    needs: up
    steps:
      - uses: actions/download-artifact@v4
        with:
          path: all
      - run: cp -a all "$SCRATCH/all"
"#,
    );
    let (outcome, _) = project.run_json(&[]);
    outcome.expect_code(0);
    let all = tree(&project.scratch_file("all"));
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        ["globbed/a/x.txt", "globbed/b/z.txt", "report/report.txt"]
    );
    assert_eq!(all["globbed/b/z.txt"].0, b"3\n");
}
