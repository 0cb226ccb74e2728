//! What flows between steps and jobs: `needs` order, step and job outputs, `$GITHUB_ENV`,
//! `$GITHUB_PATH`, `$GITHUB_STEP_SUMMARY`, and the variables every step starts with.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{Project, job, step};

/// The index of the first line of `lines` equal to `wanted`.
fn position(lines: &[&str], wanted: &str) -> usize {
    lines
        .iter()
        .position(|line| *line == wanted)
        .unwrap_or_else(|| panic!("`{wanted}` not in {lines:?}"))
}

#[test]
fn jobs_start_only_after_the_jobs_they_need_have_ended() {
    // a → b → c, and d needs a and c; each job notes its start and end in a shared file.
    let step = |name: &str| {
        format!(
            "      - run: |\n          echo \"start {name}\" >> \"$SCRATCH/order\"\n          sleep 0.2\n          echo \"end {name}\" >> \"$SCRATCH/order\"\n"
        )
    };
    let pipeline = format!(
        "on: push\njobs:\n  d:\n    needs: [a, c]\n    steps:\n{}  c:\n    needs: b\n    steps:\n{}  b:\n    needs: [a]\n    steps:\n{}  a:\n    steps:\n{}",
        step("d"),
        step("c"),
        step("b"),
        step("a")
    );
    let project = Project::new(&pipeline);
    let (outcome, record) = project.run_json(&["--jobs", "4"]);
    outcome.expect_code(0);
    let order = project.read_scratch("order");
    let lines: Vec<&str> = order.lines().collect();
    assert_eq!(lines.len(), 8, "{order}");
    for (needed, dependent) in [("a", "b"), ("b", "c"), ("a", "d"), ("c", "d")] {
        assert!(
            position(&lines, &format!("end {needed}"))
                < position(&lines, &format!("start {dependent}")),
            "`{dependent}` started before `{needed}` ended:\n{order}"
        );
    }
    // The record lists jobs in the order the pipeline declares them.
    assert_eq!(common::job_names(&record), ["d", "c", "b", "a"]);
}

#[test]
fn outputs_and_results_flow_through_needs() {
    let project = Project::new(
        r#"
on: push
jobs:
  produce:
    outputs:
      plain: ${{ steps.gh.outputs.plain }}
      sorat: ${{ steps.native.outputs.native }}
      multi: ${{ steps.gh.outputs.multi }}
    steps:
      - id: gh
        run: |
          echo "plain=from github output" >> "$GITHUB_OUTPUT"
          {
            echo "multi<<EOF_MARK"
            echo "line one"
            echo "line two = still two"
            echo "EOF_MARK"
          } >> "$GITHUB_OUTPUT"
      - id: native
        run: echo "native=from sorat output" >> "$SORAT_OUTPUT"
  consume:
    needs: produce
    steps:
      - id: read
        env:
          PLAIN: ${{ needs.produce.outputs.plain }}
          NATIVE: ${{ needs.produce.outputs.sorat }}
          MULTI: ${{ needs.produce.outputs.multi }}
          RESULT: ${{ needs.produce.result }}
        run: |
          echo "plain=$PLAIN" >> "$GITHUB_OUTPUT"
          echo "native=$NATIVE" >> "$GITHUB_OUTPUT"
          echo "result=$RESULT" >> "$GITHUB_OUTPUT"
          printf 'multi<<END\n%s\nEND\n' "$MULTI" >> "$GITHUB_OUTPUT"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    let produce = job(&record, "produce");
    let gh = step(produce, "gh");
    assert_eq!(gh["outputs"]["plain"], "from github output");
    assert_eq!(gh["outputs"]["multi"], "line one\nline two = still two");
    assert_eq!(
        step(produce, "native")["outputs"]["native"],
        "from sorat output"
    );
    assert_eq!(produce["outputs"]["plain"], "from github output");
    assert_eq!(produce["outputs"]["sorat"], "from sorat output");
    assert_eq!(
        produce["outputs"]["multi"],
        "line one\nline two = still two"
    );

    let read = step(job(&record, "consume"), "read");
    assert_eq!(read["outputs"]["plain"], "from github output");
    assert_eq!(read["outputs"]["native"], "from sorat output");
    assert_eq!(read["outputs"]["multi"], "line one\nline two = still two");
    assert_eq!(read["outputs"]["result"], "success");
}

#[test]
fn needs_result_tells_a_later_job_that_a_needed_job_failed() {
    let project = Project::new(
        r#"
on: push
jobs:
  ok:
    steps:
      - run: echo fine
  broken:
    steps:
      - run: exit 1
  report:
    needs: [ok, broken]
    if: always()
    steps:
      - id: results
        run: |
          echo "ok=${{ needs.ok.result }}" >> "$GITHUB_OUTPUT"
          echo "broken=${{ needs.broken.result }}" >> "$GITHUB_OUTPUT"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    let results = step(job(&record, "report"), "results");
    assert_eq!(results["outputs"]["ok"], "success");
    assert_eq!(results["outputs"]["broken"], "failure");
}

#[test]
fn github_env_is_visible_to_later_steps_only() {
    let project = Project::new(
        r#"
on: push
jobs:
  env:
    steps:
      - id: set
        run: |
          echo "GREETING=hello from step one" >> "$GITHUB_ENV"
          echo "NATIVE_VAR=native" >> "$SORAT_ENV"
          {
            echo "LONG<<END"
            echo "first"
            echo "second"
            echo "END"
          } >> "$GITHUB_ENV"
          echo "same_step=${GREETING:-unset}" >> "$GITHUB_OUTPUT"
      - id: get
        run: |
          echo "greeting=$GREETING" >> "$GITHUB_OUTPUT"
          echo "native=$NATIVE_VAR" >> "$GITHUB_OUTPUT"
          printf 'long<<X\n%s\nX\n' "$LONG" >> "$GITHUB_OUTPUT"
      - id: expr
        run: echo "via_context=${{ env.GREETING }}" >> "$GITHUB_OUTPUT"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    let env_job = job(&record, "env");
    assert_eq!(step(env_job, "set")["outputs"]["same_step"], "unset");
    let get = step(env_job, "get");
    assert_eq!(get["outputs"]["greeting"], "hello from step one");
    assert_eq!(get["outputs"]["native"], "native");
    assert_eq!(get["outputs"]["long"], "first\nsecond");
    assert_eq!(
        step(env_job, "expr")["outputs"]["via_context"],
        "hello from step one"
    );
}

#[test]
fn github_path_prepends_a_folder_to_path_for_later_steps() {
    let project = Project::new(
        r#"
on: push
jobs:
  path:
    steps:
      - id: add
        run: |
          mkdir -p "$RUNNER_TEMP/mytools"
          printf '#!/bin/sh\necho "mytool says hi"\n' > "$RUNNER_TEMP/mytools/mytool"
          chmod +x "$RUNNER_TEMP/mytools/mytool"
          echo "$RUNNER_TEMP/mytools" >> "$GITHUB_PATH"
          echo "dir=$RUNNER_TEMP/mytools" >> "$GITHUB_OUTPUT"
          if command -v mytool; then echo "same_step=found" >> "$GITHUB_OUTPUT"; else echo "same_step=missing" >> "$GITHUB_OUTPUT"; fi
      - id: use
        run: |
          echo "first=${PATH%%:*}" >> "$GITHUB_OUTPUT"
          echo "says=$(mytool)" >> "$GITHUB_OUTPUT"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    let path_job = job(&record, "path");
    let add = step(path_job, "add");
    assert_eq!(add["outputs"]["same_step"], "missing");
    let dir = add["outputs"]["dir"].as_str().unwrap();
    let used = step(path_job, "use");
    assert_eq!(used["outputs"]["first"], dir);
    assert_eq!(used["outputs"]["says"], "mytool says hi");
}

#[test]
fn the_step_summary_lands_in_the_record() {
    let project = Project::new(
        r####"
on: push
jobs:
  sum:
    steps:
      - id: with_summary
        run: |
          echo "### Results" >> "$GITHUB_STEP_SUMMARY"
          echo "- all good" >> "$SORAT_STEP_SUMMARY"
      - id: without_summary
        run: echo nothing
"####,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    let sum = job(&record, "sum");
    assert_eq!(
        step(sum, "with_summary")["summary"],
        "### Results\n- all good\n"
    );
    assert!(step(sum, "without_summary").get("summary").is_none());
    assert_eq!(
        project.stored_record(1)["jobs"][0]["steps"][0]["summary"],
        "### Results\n- all good\n"
    );
}

#[test]
fn steps_see_the_commit_ref_workspace_and_ci_variables() {
    let project = Project::new(
        r#"
on: push
jobs:
  vars:
    steps:
      - id: env
        run: |
          for name in GITHUB_SHA GITHUB_REF GITHUB_REF_NAME GITHUB_WORKSPACE GITHUB_JOB GITHUB_EVENT_NAME CI SORAT SORAT_SHA SORAT_REF SORAT_WORKSPACE SORAT_JOB SORAT_RUN_ID GITHUB_RUN_ID; do
            echo "$name=$(printenv "$name")" >> "$GITHUB_OUTPUT"
          done
          echo "pwd=$(pwd -P)" >> "$GITHUB_OUTPUT"
      - id: context
        run: |
          echo "sha=${{ github.sha }}" >> "$GITHUB_OUTPUT"
          echo "ref=${{ github.ref }}" >> "$GITHUB_OUTPUT"
          echo "workspace=${{ github.workspace }}" >> "$GITHUB_OUTPUT"
"#,
    );
    let head = project.head();
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    let vars = job(&record, "vars");
    let env = &step(vars, "env")["outputs"];
    assert_eq!(env["GITHUB_SHA"], head.as_str());
    assert_eq!(env["SORAT_SHA"], head.as_str());
    assert_eq!(env["GITHUB_REF"], "refs/heads/main");
    assert_eq!(env["SORAT_REF"], "refs/heads/main");
    assert_eq!(env["GITHUB_REF_NAME"], "main");
    assert_eq!(env["GITHUB_JOB"], "vars");
    assert_eq!(env["SORAT_JOB"], "vars");
    assert_eq!(env["GITHUB_EVENT_NAME"], "push");
    assert_eq!(env["CI"], "true");
    assert_eq!(env["SORAT"], "true");
    assert_eq!(env["SORAT_RUN_ID"], "1");
    assert_eq!(env["GITHUB_RUN_ID"], "1");
    let workspace = env["GITHUB_WORKSPACE"].as_str().unwrap();
    assert_eq!(env["SORAT_WORKSPACE"], workspace);
    // The workspace is the step's working folder, inside the run's folder, never the repo.
    assert_eq!(
        std::path::Path::new(workspace),
        project.run_dir(1).join("work").join("vars")
    );
    assert_eq!(
        std::path::Path::new(env["pwd"].as_str().unwrap()),
        project
            .run_dir(1)
            .canonicalize()
            .unwrap()
            .join("work")
            .join("vars")
    );
    let context = &step(vars, "context")["outputs"];
    assert_eq!(context["sha"], head.as_str());
    assert_eq!(context["ref"], "refs/heads/main");
    assert_eq!(context["workspace"], workspace);
    assert_eq!(record["sha"], head.as_str());
    assert_eq!(record["ref"], "refs/heads/main");
}

#[test]
fn github_path_lines_of_one_step_put_the_last_line_first() {
    let project = Project::new(
        r#"
on: push
jobs:
  path:
    steps:
      - run: |
          echo /added/first >> "$GITHUB_PATH"
          echo /added/second >> "$GITHUB_PATH"
      - run: echo /added/third >> "$GITHUB_PATH"
      - id: show
        run: echo "prefix=${PATH%%:/[!a]*}" >> "$GITHUB_OUTPUT"
"#,
    );
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    // The GitHub runner keeps the added folders in a list and puts them in PATH reversed:
    // the newest first, whether it came from a later step or a later line.
    assert_eq!(
        step(job(&record, "path"), "show")["outputs"]["prefix"],
        "/added/third:/added/second:/added/first"
    );
}

#[test]
fn github_env_cannot_overwrite_the_runners_own_variables() {
    let project = Project::new(
        r#"
on: push
jobs:
  env:
    steps:
      - run: |
          echo "GITHUB_SHA=fake" >> "$GITHUB_ENV"
          echo "RUNNER_TEMP=/nowhere" >> "$GITHUB_ENV"
          echo "GITHUB_OUTPUT=$SCRATCH/stolen" >> "$GITHUB_ENV"
      - id: later
        run: |
          echo "sha=$GITHUB_SHA" >> "$GITHUB_OUTPUT"
          echo "temp=$RUNNER_TEMP" >> "$GITHUB_OUTPUT"
"#,
    );
    let head = project.head();
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    assert!(
        !project.scratch_file("stolen").exists(),
        "a later step's outputs went to the file named through $GITHUB_ENV"
    );
    let later = &step(job(&record, "env"), "later")["outputs"];
    assert_eq!(later["sha"], head.as_str());
    assert_ne!(later["temp"], "/nowhere");
}
