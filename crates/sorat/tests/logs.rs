//! Logs: stored whole (zstd, every line) however long, shown bounded in plain output with a
//! pointer to the whole log; and jobs that wait say why.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::path::Path;

use common::{Project, job, step};

/// Lines the big step prints: about 30 MB of text.
const BIG_LINES: usize = 300_000;
/// How many lines of one step plain output shows before leaving the rest to the log.
const PLAIN_LINE_LIMIT: usize = 10_000;

fn big_pipeline() -> String {
    format!(
        r#"
on: push
jobs:
  big:
    steps:
      - id: big
        run: python3 -c "import sys; w=sys.stdout.write; [w('%08d %s\n' % (i, 'x'*90)) for i in range({BIG_LINES})]"
"#
    )
}

#[test]
fn plain_output_of_a_30_mb_step_is_bounded_and_says_how_much_it_left_out() {
    let project = Project::new(&big_pipeline());
    let outcome = project.run(&[]);
    outcome.expect_code(0);
    let shown = outcome.shown_lines();
    // The first lines are shown, then a note (the tail after it is checked below).
    assert!(
        shown.len() >= PLAIN_LINE_LIMIT && shown.len() <= PLAIN_LINE_LIMIT + 100,
        "{} step lines shown",
        shown.len()
    );
    assert!(shown[0].starts_with("00000000 x"), "{}", shown[0]);
    let note = format!(
        "… {} more lines not shown here; the whole log: ",
        BIG_LINES - PLAIN_LINE_LIMIT
    );
    assert!(
        outcome.stdout.lines().any(|line| line.contains(&note)),
        "no note `{note}` in plain output"
    );
    assert!(
        outcome.stdout.len() < 3_000_000,
        "plain output is {} bytes",
        outcome.stdout.len()
    );
}

#[test]
fn a_30_mb_step_output_is_stored_whole_and_the_note_names_its_log() {
    let project = Project::new(&big_pipeline());
    let outcome = project.run(&[]);
    outcome.expect_code(0);
    let record = project.stored_record(1);
    let big = step(job(&record, "big"), "big");
    let log = &big["log"];
    assert_eq!(log["lines"], BIG_LINES, "{big:#}");
    let path = log["path"].as_str().unwrap();
    let text = common::read_log(Path::new(path));
    let lines = common::log_lines(&text);
    assert_eq!(lines.len(), BIG_LINES);
    let filler = "x".repeat(90);
    for (index, line) in lines.iter().enumerate() {
        assert_eq!(*line, format!("{index:08} {filler}"), "line {index}");
    }
    assert!(
        outcome
            .stdout
            .contains(&format!("more lines not shown here; the whole log: {path}")),
        "the note names the log file"
    );
    // After the note, plain output shows the log's last lines.
    let shown = outcome.shown_lines();
    let last = format!("{:08} ", BIG_LINES - 1);
    assert!(
        shown.last().unwrap().starts_with(&last),
        "the tail ends with the last line: {}",
        shown.last().unwrap()
    );
}

#[test]
fn every_step_log_is_finished_and_listed_in_the_record() {
    let steps: String = (1..=30)
        .map(|i| format!("      - id: s{i}\n        run: echo line-{i}\n"))
        .collect();
    let project = Project::new(&format!("on: push\njobs:\n  many:\n    steps:\n{steps}"));
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    let many = job(&record, "many");
    let mut missing = Vec::new();
    for i in 1..=30 {
        let record = step(many, &format!("s{i}"));
        match record["log"]["path"].as_str() {
            None => missing.push(format!("s{i}: no `log` in the record")),
            Some(path) => {
                let text = common::read_log(Path::new(path));
                assert_eq!(common::log_lines(&text), [format!("line-{i}")]);
            }
        }
    }
    for (path, _) in project.all_logs() {
        let bytes = std::fs::read(&path).unwrap();
        if let Err(error) = zstd::decode_all(bytes.as_slice()) {
            missing.push(format!("{}: {error}", path.display()));
        }
    }
    assert!(
        missing.is_empty(),
        "unfinished logs:\n{}",
        missing.join("\n")
    );
}

#[test]
fn jobs_waiting_for_needs_say_so_in_plain_output() {
    let project = Project::new(
        r#"
on: push
jobs:
  first:
    steps:
      - run: sleep 0.2
  second:
    needs: first
    steps:
      - run: echo second
  third:
    needs: [second]
    steps:
      - run: echo third
"#,
    );
    let outcome = project.run(&[]);
    outcome.expect_code(0);
    assert!(
        outcome
            .stdout
            .contains("[second] waiting: needs `first` (running)"),
        "stdout: {}",
        outcome.stdout
    );
    assert!(
        outcome
            .stdout
            .contains("[third] waiting: needs `second` (waiting)"),
        "stdout: {}",
        outcome.stdout
    );
    // And each job says when it finally starts.
    assert!(outcome.stdout.contains("[third] started (1 steps)"));
}

#[test]
fn plain_output_shows_each_step_with_its_job_and_status() {
    let project = Project::new(
        r#"
on: push
jobs:
  build:
    steps:
      - name: Say hello
        run: echo hello world
"#,
    );
    let outcome = project.run(&[]);
    outcome.expect_code(0);
    assert!(outcome.stdout.contains("[build] ▶ step 1: Say hello"));
    assert!(outcome.stdout.contains("[build] | hello world"));
    assert!(outcome.stdout.contains("[build] ✓ step Say hello: success"));
    assert!(outcome.stdout.contains("run 1 started: 1 job(s)"));
}
