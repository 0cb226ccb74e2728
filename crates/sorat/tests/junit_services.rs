//! `uses: junit` test reports, and job services (background processes with a readiness
//! probe, reachable on 127.0.0.1, gone after the job).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{Project, job, step};

const REPORT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
  <testsuite name="calc" tests="3" failures="1" skipped="1">
    <testcase classname="calc.add" name="adds"/>
    <testcase classname="calc.div" name="divides">
      <failure message="expected 3.5, got 3">assert 3 == 3.5</failure>
    </testcase>
    <testcase classname="calc.pow" name="powers"><skipped/></testcase>
  </testsuite>
</testsuites>
"#;

fn junit_pipeline(fail_on_failure: Option<bool>) -> String {
    let option = match fail_on_failure {
        Some(value) => format!("\n          fail-on-failure: {value}"),
        None => String::new(),
    };
    format!(
        r#"
on: push
jobs:
  test:
    steps:
      - uses: actions/checkout@v4
      - run: mkdir -p reports && cp report.xml reports/unit.xml
      - id: junit
        uses: junit
        with:
          path: reports/*.xml{option}
      - id: after
        run: echo after
"#
    )
}

#[test]
fn a_junit_report_with_a_failure_fails_the_step_and_lands_in_the_record() {
    let project = Project::with_files(&junit_pipeline(None), &[("report.xml", REPORT)]);
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    let test = job(&record, "test");
    assert_eq!(test["status"], "failure");
    let junit = step(test, "junit");
    assert_eq!(junit["status"], "failure");
    assert_eq!(junit["reason"], "1 of 3 tests failed");
    assert_eq!(junit["outputs"]["total"], "3");
    assert_eq!(junit["outputs"]["failed"], "1");
    assert_eq!(step(test, "after")["status"], "skipped");
    for tests in [&test["tests"], &record["tests"]] {
        assert_eq!(tests["total"], 3);
        assert_eq!(tests["passed"], 1);
        assert_eq!(tests["failed"], 1);
        assert_eq!(tests["skipped"], 1);
        let failures = tests["failures"].as_array().unwrap();
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0]["classname"], "calc.div");
        assert_eq!(failures[0]["name"], "divides");
        assert_eq!(failures[0]["message"], "expected 3.5, got 3");
    }
    // The plain summary names the failed test too.
    let plain = project.run(&[]);
    plain.expect_code(1);
    assert!(
        plain
            .stdout
            .contains("FAILED calc.div::divides: expected 3.5, got 3"),
        "stdout: {}",
        plain.stdout
    );
}

#[test]
fn a_junit_report_with_fail_on_failure_false_passes_but_keeps_the_counts() {
    let project = Project::with_files(&junit_pipeline(Some(false)), &[("report.xml", REPORT)]);
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    let test = job(&record, "test");
    assert_eq!(test["status"], "success");
    assert_eq!(step(test, "junit")["status"], "success");
    assert_eq!(step(test, "after")["status"], "success");
    assert_eq!(test["tests"]["failed"], 1);
    assert_eq!(record["tests"]["total"], 3);
    assert_eq!(
        record["tests"]["failures"][0]["message"],
        "expected 3.5, got 3"
    );
}

#[test]
fn a_service_is_reachable_from_steps_and_gone_after_the_run() {
    let port = common::free_port();
    let project = Project::new(&format!(
        r#"
on: push
jobs:
  web:
    services:
      files:
        run: echo $$ > "$SCRATCH/service-pid"; exec python3 -m http.server {port} --bind 127.0.0.1
        ready:
          http: http://127.0.0.1:{port}/
          timeout: 60s
    steps:
      - id: fetch
        run: |
          echo "status=$(python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/').status)")" >> "$GITHUB_OUTPUT"
          echo "ready=${{{{ job.services.files.ready }}}}" >> "$GITHUB_OUTPUT"
"#
    ));
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(0);
    let web = job(&record, "web");
    let fetch = step(web, "fetch");
    assert_eq!(fetch["outputs"]["status"], "200");
    assert_eq!(fetch["outputs"]["ready"], "true");
    assert_eq!(web["services"][0]["name"], "files");
    assert_eq!(web["services"][0]["ready"], true);
    let pid = common::read_pid(&project.scratch_file("service-pid"));
    assert!(!common::process_alive(pid), "the service {pid} still runs");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something still listens on the service's port"
    );
}

#[test]
fn a_service_that_exits_before_it_is_ready_fails_the_job_with_its_last_lines() {
    let port = common::free_port();
    let project = Project::new(&format!(
        r#"
on: push
jobs:
  web:
    services:
      broken:
        run: |
          echo "starting up"
          echo "fatal: cannot open the database"
          exit 3
        ready:
          tcp: 127.0.0.1:{port}
    steps:
      - run: touch "$SCRATCH/step-ran"
"#
    ));
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    let web = job(&record, "web");
    assert_eq!(web["status"], "failure");
    let reason = web["reason"].as_str().unwrap();
    assert!(
        reason.contains("service `broken` exited with code 3 before it was ready"),
        "reason: {reason}"
    );
    assert!(
        reason.contains("fatal: cannot open the database"),
        "the reason holds the service's last lines: {reason}"
    );
    assert!(!project.scratch_file("step-ran").exists());
}

#[test]
fn a_service_that_never_gets_ready_fails_the_job_at_its_probe_timeout() {
    let port = common::free_port();
    let project = Project::new(&format!(
        r#"
on: push
jobs:
  web:
    services:
      deaf:
        run: echo $$ > "$SCRATCH/service-pid"; echo "listening nowhere"; exec sleep 60
        ready:
          tcp: 127.0.0.1:{port}
          interval: 100ms
          timeout: 1s
    steps:
      - run: touch "$SCRATCH/step-ran"
"#
    ));
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    let reason = job(&record, "web")["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("service `deaf` was not ready after 1s"),
        "reason: {reason}"
    );
    assert!(reason.contains("listening nowhere"), "reason: {reason}");
    assert!(!project.scratch_file("step-ran").exists());
    let pid = common::read_pid(&project.scratch_file("service-pid"));
    assert!(!common::process_alive(pid), "the service {pid} still runs");
}

#[test]
fn a_job_timeout_also_bounds_the_wait_for_its_services() {
    let port = common::free_port();
    let project = Project::new(&format!(
        r#"
on: push
jobs:
  web:
    timeout: 1s
    services:
      deaf:
        run: echo $$ > "$SCRATCH/service-pid"; exec sleep 60
        ready:
          tcp: 127.0.0.1:{port}
          timeout: 60s
    steps:
      - run: touch "$SCRATCH/step-ran"
"#
    ));
    let (outcome, record) = project.run_json(&[]);
    outcome.expect_code(1);
    let web = job(&record, "web");
    assert_eq!(web["status"], "failure");
    assert_eq!(web["reason"], "the job timed out after 1s");
    assert!(!project.scratch_file("step-ran").exists());
    let pid = common::read_pid(&project.scratch_file("service-pid"));
    assert!(!common::process_alive(pid), "the service {pid} still runs");
}
