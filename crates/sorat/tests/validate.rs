//! `sorat validate`: every mistake of a pipeline in one run, each at its line and column; and
//! `sorat expr test` over expression vector files.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::Outcome;

/// Runs `sorat ARGS` in `dir`.
fn sorat_in(dir: &Path, args: &[&str]) -> Outcome {
    let child = Command::new(common::sorat_binary())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::finish(child)
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..offset].chars().count() + 1)
}

/// `line:col` of where `anchor` occurs in `text` (once), moved `skip` bytes into it.
fn position(text: &str, anchor: &str, skip: usize) -> String {
    assert_eq!(
        text.matches(anchor).count(),
        1,
        "`{anchor}` must occur once in the fixture"
    );
    let (line, col) = line_col(text, text.find(anchor).unwrap() + skip);
    format!("{line}:{col}")
}

const BROKEN: &str = r#"name: broken
on:
  push:
    branches: ["main", "[abc"]
  schedule:
    - cron: "61 * * * *"
jobs:
  build:
    need: test
    steps:
      - run: echo ${{ github.( }}
  a:
    needs: b
    steps:
      - run: echo a
  b:
    needs: [a, ghost]
    steps:
      - uses: actions/setup-node@v4
      - if: ${{ github.ref }} == 'refs/heads/main'
        run: echo trap
"#;

#[test]
fn validate_reports_every_mistake_at_its_line_and_column() {
    let temp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(temp.path().join(".sorat")).unwrap();
    std::fs::write(temp.path().join(".sorat/pipeline.yaml"), BROKEN).unwrap();
    let outcome = sorat_in(temp.path(), &["validate", ".sorat/pipeline.yaml"]);
    outcome.expect_code(2);

    let file = ".sorat/pipeline.yaml";
    let expected = [
        (
            position(BROKEN, "\"[abc\"", 0),
            "error: invalid pattern `[abc`",
        ),
        (
            position(BROKEN, "\"61 * * * *\"", 0),
            "error: invalid cron expression `61 * * * *`",
        ),
        (
            position(BROKEN, "need: test", 0),
            "error: unknown key `need` in job `build`",
        ),
        (
            position(BROKEN, "github.( ", "github.".len()),
            "error: invalid expression",
        ),
        (
            position(BROKEN, "needs: b\n", "needs: ".len()),
            "error: the jobs' `needs` form a cycle: `a` → `b` → `a`",
        ),
        (
            position(BROKEN, "ghost", 0),
            "error: job `b` needs `ghost`, which is not a job",
        ),
        (
            position(BROKEN, "actions/setup-node@v4", 0),
            "error: unknown step `uses: actions/setup-node@v4`",
        ),
        (
            position(BROKEN, "${{ github.ref }} ==", 0),
            "warning: this `if:` mixes text with `${{ }}`, so it is a non-empty string and always true",
        ),
    ];
    let one_line: Vec<&str> = outcome
        .stderr
        .lines()
        .filter(|line| line.starts_with(&format!("{file}:")))
        .collect();
    for (place, message) in &expected {
        let prefix = format!("{file}:{place}: {message}");
        assert!(
            one_line.iter().any(|line| line.starts_with(&prefix)),
            "missing `{prefix}` in:\n{}",
            one_line.join("\n")
        );
    }
    assert_eq!(
        one_line.len(),
        expected.len(),
        "unexpected diagnostics:\n{}",
        one_line.join("\n")
    );
    // The hints come with them.
    for hint in [
        "hint: did you mean `needs`?",
        "hint: write the whole condition as one expression: `if: github.ref == 'refs/heads/main'`",
    ] {
        assert!(
            outcome.stderr.contains(hint),
            "no `{hint}` in: {}",
            outcome.stderr
        );
    }
    assert!(
        outcome.stderr.contains("7 errors, 1 warning in 1 file(s)"),
        "stderr: {}",
        outcome.stderr
    );
}

/// `line:col` of the `n`-th (from 0) occurrence of `anchor` in `text`.
fn nth_position(text: &str, anchor: &str, n: usize) -> String {
    let (offset, _) = text
        .match_indices(anchor)
        .nth(n)
        .unwrap_or_else(|| panic!("`{anchor}` does not occur {} times", n + 1));
    let (line, col) = line_col(text, offset);
    format!("{line}:{col}")
}

const BROKEN_JOB: &str = r#"on: [push]
jobs:
  loop:
    needs: loop
    container: node:20
    timeout-minutes: 5m
    steps:
      - id: same
        run: echo one
      - id: same
        run: echo two
      - uses: actions/checkout@v4
        with:
          fetch-deph: 1
      - run: echo both
        uses: junit
      - shell: fish
        run: echo fish
      - retry: 500
        run: echo again
"#;

#[test]
fn validate_locates_job_and_step_mistakes() {
    let temp = tempfile::tempdir().unwrap();
    std::fs::write(temp.path().join("p.yaml"), BROKEN_JOB).unwrap();
    let outcome = sorat_in(temp.path(), &["validate", "p.yaml"]);
    outcome.expect_code(2);
    let expected = [
        (
            position(BROKEN_JOB, "needs: loop", "needs: ".len()),
            "job `loop` needs itself",
        ),
        (
            position(BROKEN_JOB, "container", 0),
            "`container` needs a container runtime",
        ),
        (
            position(BROKEN_JOB, "5m", 0),
            "`timeout-minutes` must be a number, found `5m`",
        ),
        (
            nth_position(BROKEN_JOB, "same", 1),
            "duplicate step id `same`",
        ),
        (
            position(BROKEN_JOB, "fetch-deph", 0),
            "`checkout` has no input `fetch-deph`",
        ),
        (
            position(BROKEN_JOB, "run: echo both", 0),
            "step 4 of job `loop` has both `run` and `uses`",
        ),
        (
            position(BROKEN_JOB, "shell: fish", "shell: ".len()),
            "unknown shell `fish`",
        ),
        (
            position(BROKEN_JOB, "500", 0),
            "`retry` count must be from 0 to 100",
        ),
    ];
    let one_line: Vec<&str> = outcome
        .stderr
        .lines()
        .filter(|line| line.starts_with("p.yaml:"))
        .collect();
    for (place, message) in &expected {
        let prefix = format!("p.yaml:{place}: error: {message}");
        assert!(
            one_line.iter().any(|line| line.starts_with(&prefix)),
            "missing `{prefix}` in:\n{}",
            one_line.join("\n")
        );
    }
    assert_eq!(one_line.len(), expected.len(), "{}", one_line.join("\n"));
    for hint in [
        "did you mean `fetch-depth`?",
        "for a duration string use `timeout:`",
    ] {
        assert!(
            outcome.stderr.contains(hint),
            "no `{hint}` in: {}",
            outcome.stderr
        );
    }
}

/// Found by fuzzing: a `timeout-minutes` too large for a duration made the loader panic.
const OUT_OF_RANGE_TIMEOUTS: &str = r#"on: [push]
jobs:
  huge:
    timeout-minutes: 1e300
    steps:
      - run: echo huge
        timeout-minutes: 0
"#;

#[test]
fn validate_refuses_timeouts_out_of_range_at_their_place() {
    let temp = tempfile::tempdir().unwrap();
    std::fs::write(temp.path().join("p.yaml"), OUT_OF_RANGE_TIMEOUTS).unwrap();
    let outcome = sorat_in(temp.path(), &["validate", "p.yaml"]);
    outcome.expect_code(2);
    for (place, problem) in [
        (position(OUT_OF_RANGE_TIMEOUTS, "1e300", 0), "is too large"),
        (
            position(
                OUT_OF_RANGE_TIMEOUTS,
                "timeout-minutes: 0",
                "timeout-minutes: ".len(),
            ),
            "0 is not more than 0",
        ),
    ] {
        let prefix = format!(
            "p.yaml:{place}: error: `timeout-minutes` must be a positive number of minutes"
        );
        assert!(
            outcome
                .stderr
                .lines()
                .any(|line| line.starts_with(&prefix) && line.ends_with(problem)),
            "no `{prefix} ... {problem}` in:\n{}",
            outcome.stderr
        );
    }
}

#[test]
fn validate_accepts_a_valid_pipeline() {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("pipeline.yaml");
    std::fs::write(
        &path,
        "on: [push, pull_request]\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - run: make\n",
    )
    .unwrap();
    let outcome = sorat_in(temp.path(), &["validate", "pipeline.yaml"]);
    outcome.expect_code(0);
    assert!(
        outcome
            .stdout
            .contains("1 file(s) valid (0 errors, 0 warnings)"),
        "stdout: {}",
        outcome.stdout
    );
    assert!(
        !outcome.stderr.contains("error"),
        "stderr: {}",
        outcome.stderr
    );
}

#[test]
fn validate_with_warnings_only_exits_0_and_shows_them() {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("pipeline.yaml");
    let text = "on: push\njobs:\n  build:\n    steps:\n      - if: ${{ github.ref }} == 'refs/heads/main'\n        run: make\n";
    std::fs::write(&path, text).unwrap();
    let outcome = sorat_in(temp.path(), &["validate", "pipeline.yaml"]);
    outcome.expect_code(0);
    let place = position(text, "${{ github.ref }}", 0);
    assert!(
        outcome.stderr.contains(&format!(
            "pipeline.yaml:{place}: warning: this `if:` mixes text"
        )),
        "stderr: {}",
        outcome.stderr
    );
    assert!(
        outcome
            .stdout
            .contains("1 file(s) valid (0 errors, 1 warning)"),
        "stdout: {}",
        outcome.stdout
    );
}

#[test]
fn validate_a_missing_file_exits_2() {
    let temp = tempfile::tempdir().unwrap();
    let outcome = sorat_in(temp.path(), &["validate", "nowhere.yaml"]);
    outcome.expect_code(2);
    assert!(
        outcome
            .stderr
            .contains("nowhere.yaml: no such file or folder"),
        "stderr: {}",
        outcome.stderr
    );
}

#[test]
fn validate_of_a_folder_checks_every_pipeline_in_it() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("workflows");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("good.yml"),
        "on: push\njobs:\n  a:\n    steps:\n      - run: echo a\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("bad.yaml"),
        "on: push\njobs:\n  a:\n    stepz: []\n",
    )
    .unwrap();
    let outcome = sorat_in(temp.path(), &["validate", "workflows"]);
    outcome.expect_code(2);
    assert!(
        outcome
            .stderr
            .contains("workflows/bad.yaml:4:5: error: unknown key `stepz`"),
        "stderr: {}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("in 2 file(s)"),
        "stderr: {}",
        outcome.stderr
    );
}

#[test]
fn expr_test_passes_the_shared_conformance_vectors() {
    let folder =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/expressions");
    if !folder.is_dir() {
        println!(
            "skipped: the conformance vectors are not at {}",
            folder.display()
        );
        return;
    }
    let outcome = sorat_in(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &["expr", "test", "../../../shared/conformance/expressions"],
    );
    outcome.expect_code(0);
    let last = outcome.stdout.lines().last().unwrap_or("");
    let (passed, failed) = last
        .split_once(" passed, ")
        .unwrap_or_else(|| panic!("{last}"));
    assert_eq!(failed, "0 failed", "{}", outcome.stdout);
    assert!(passed.parse::<usize>().unwrap() > 100, "{last}");
}

#[test]
fn expr_test_with_a_wrong_expectation_fails_with_1_failed() {
    let temp = tempfile::tempdir().unwrap();
    std::fs::write(
        temp.path().join("vectors.json"),
        r#"{
  "right": [{
    "expr": "1 == 1",
    "result": { "kind": "Boolean", "value": true }
  }],
  "wrong": [{
    "expr": "'abc' == 'abc'",
    "result": { "kind": "Boolean", "value": false }
  }],
  "context": [{
    "expr": "format('{0}-{1}', a.b, 2)",
    "result": { "kind": "String", "value": "x-2" },
    "contexts": { "a": { "b": "x" } }
  }]
}
"#,
    )
    .unwrap();
    let outcome = sorat_in(temp.path(), &["expr", "test", "vectors.json"]);
    outcome.expect_code(1);
    assert_eq!(
        outcome.stdout.lines().last(),
        Some("2 passed, 1 failed"),
        "stdout: {}",
        outcome.stdout
    );
    assert!(
        outcome.stdout.contains("FAIL vectors.json: wrong"),
        "stdout: {}",
        outcome.stdout
    );
}

#[test]
fn validate_reads_sorat_yaml_as_the_platform_config() {
    let temp = tempfile::tempdir().unwrap();
    std::fs::write(
        temp.path().join("sorat.yaml"),
        "server:\n  listen: 127.0.0.1:8080\n  lease: 0s\n  time_zone: Mars/Olympus\nprojects:\n  - name: shop\n    repo: .\n",
    )
    .unwrap();
    let outcome = sorat_in(temp.path(), &["validate", "sorat.yaml"]);
    outcome.expect_code(2);
    for expected in [
        "sorat.yaml:3:10: error: `server.lease` must be at least 1s",
        "sorat.yaml:4:14: error: `server.time_zone`: `Mars/Olympus` is not a time zone",
    ] {
        assert!(
            outcome.stderr.contains(expected),
            "no `{expected}` in:\n{}",
            outcome.stderr
        );
    }
    std::fs::write(
        temp.path().join("sorat.yaml"),
        "server:\n  time_zone: Europe/Berlin\nprojects:\n  - name: shop\n    repo: .\n",
    )
    .unwrap();
    sorat_in(temp.path(), &["validate", "sorat.yaml"]).expect_code(0);
}
