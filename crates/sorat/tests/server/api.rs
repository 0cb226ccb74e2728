//! The API: tokens and roles, manual runs, live logs, secrets, cancel, re-run, restarts,
//! metrics, the audit log and graceful shutdown.

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{ADMIN, Server, repo_with};

const PIPELINE: &str = r#"on:
  push:
  workflow_dispatch:
    inputs:
      who:
        type: string
        default: world
jobs:
  build:
    outputs:
      greeting: ${{ steps.hello.outputs.greeting }}
    steps:
      - id: hello
        run: |
          echo "hello ${{ inputs.who }}"
          echo "greeting=hi-${{ inputs.who }}" >> "$GITHUB_OUTPUT"
  test:
    needs: build
    steps:
      - run: |
          for i in 1 2 3 4 5; do echo "line $i of ${{ needs.build.outputs.greeting }}"; sleep 0.2; done
"#;

fn project(repo: &std::path::Path) -> String {
    format!("  - name: shop\n    repo: {}\n", repo.display())
}

#[test]
fn tokens_and_roles_decide_who_may_do_what() {
    let temp = tempfile::tempdir().unwrap();
    let repo = repo_with(temp.path(), PIPELINE);
    let server = Server::start(temp.path(), "", &project(&repo));

    // No token, a malformed header, an unknown token: 401 in the JSON error shape.
    let response = reqwest::blocking::get(format!("{}/api/v1/runs", server.url)).unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = response.json().unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(body["error"]["field"], "Authorization");
    let (status, _) = server.client("sorat_not_a_token").get("/api/v1/runs");
    assert_eq!(status, 401);
    // The health endpoints and metrics need none.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = reqwest::blocking::get(format!("{}{path}", server.url)).unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }

    let viewer = server.client(&server.token("vera", "viewer"));
    let developer = server.client(&server.token("dev", "developer"));
    let agent = server.client(&server.token("builder-1", "agent"));

    let (status, _) = viewer.get("/api/v1/runs");
    assert_eq!(status, 200);
    let (status, body) = viewer.post("/api/v1/projects/shop/runs", json!({}));
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("developer")
    );
    let id = developer.trigger("shop", json!({ "inputs": { "who": "dev" } }));
    let (status, _) = developer.post("/api/v1/tokens", json!({ "name": "x", "role": "admin" }));
    assert_eq!(status, 403);
    let (status, _) = agent.get("/api/v1/runs");
    assert_eq!(status, 403, "agent tokens only claim and report");
    let (status, _) = viewer.post(
        "/api/v1/agent/claim",
        json!({ "name": "sneaky", "labels": [], "capacity": 1, "running": 0, "version": "0", "wait_ms": 0 }),
    );
    assert_eq!(status, 403, "user tokens cannot claim jobs");

    let run = server.wait_run(id, Duration::from_secs(60));
    assert_eq!(run["status"], "success", "{run:#}");
    assert_eq!(run["actor"], "dev");

    // A revoked token stops working at once.
    let (_, tokens) = server.admin().get("/api/v1/tokens");
    let vera = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "vera")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let response = server
        .admin()
        .http
        .delete(format!("{}/api/v1/tokens/{vera}", server.url))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    assert_eq!(viewer.get("/api/v1/runs").0, 401);

    // Every change is in the audit log, with who did it; reading it is for admins.
    assert_eq!(developer.get("/api/v1/audit").0, 403);
    let (status, audit) = server.admin().get("/api/v1/audit");
    assert_eq!(status, 200);
    let entries = audit["entries"].as_array().unwrap();
    let has = |actor: &str, action: &str, status: i64| {
        entries
            .iter()
            .any(|e| e["actor"] == actor && e["action"] == action && e["status"] == status)
    };
    assert!(
        has("dev", "POST /api/v1/projects/{name}/runs", 201),
        "{audit:#}"
    );
    assert!(
        has("vera", "POST /api/v1/projects/{name}/runs", 403),
        "{audit:#}"
    );
    assert!(has("admin", "DELETE /api/v1/tokens/{id}", 204), "{audit:#}");
    assert!(entries.iter().all(|e| e["source"] == "127.0.0.1"));
}

#[test]
fn a_manual_run_runs_jobs_in_order_and_its_log_can_be_followed_live() {
    let temp = tempfile::tempdir().unwrap();
    let repo = repo_with(temp.path(), PIPELINE);
    let server = Server::start(temp.path(), "", &project(&repo));
    let admin = server.admin();

    // Bad requests: a 4xx with the field named, and no run.
    let (status, body) = admin.post(
        "/api/v1/projects/shop/runs",
        json!({ "inputs": { "whom": "x" } }),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "inputs");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `who`")
    );
    let (status, body) = admin.post("/api/v1/projects/shop/runs", json!({ "ref": "nope" }));
    assert_eq!(status, 400, "{body}");
    assert_eq!(admin.post("/api/v1/projects/none/runs", json!({})).0, 404);
    let (_, list) = admin.get("/api/v1/runs");
    assert_eq!(list["runs"].as_array().unwrap().len(), 0);

    let id = admin.trigger("shop", json!({ "inputs": { "who": "ada" } }));
    // Follow `test` live with Server-Sent Events from before it starts.
    let response = admin
        .http
        .get(format!(
            "{}/api/v1/runs/{id}/jobs/test/logs?follow=true",
            server.url
        ))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut lines = Vec::new();
    let mut ids = Vec::new();
    let mut event = String::new();
    for line in BufReader::new(response).lines() {
        let line = line.unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            if event == "end" {
                lines.push(format!("END {data}"));
                break;
            }
            lines.push(data.to_string());
        } else if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_string();
        } else if let Some(seq) = line.strip_prefix("id: ") {
            ids.push(seq.parse::<i64>().unwrap());
        } else if line.is_empty() {
            event.clear();
        }
    }
    let numbered: Vec<&String> = lines.iter().filter(|l| l.starts_with("line ")).collect();
    assert_eq!(
        numbered,
        (1..=5)
            .map(|i| format!("line {i} of hi-ada"))
            .collect::<Vec<_>>()
            .iter()
            .collect::<Vec<_>>(),
        "{lines:#?}"
    );
    assert_eq!(lines.last().unwrap(), "END success");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in order: {ids:?}");

    let run = server.wait_run(id, Duration::from_secs(30));
    assert_eq!(run["status"], "success");
    let jobs = run["jobs"].as_array().unwrap();
    assert_eq!(jobs[0]["key"], "build");
    assert_eq!(jobs[0]["outputs"]["greeting"], "hi-ada");
    assert!(jobs[1]["started_at"].as_i64() >= jobs[0]["finished_at"].as_i64());
    assert_eq!(jobs[1]["agent"], "local");
    assert!(!jobs[1]["steps"].as_array().unwrap().is_empty());

    // The whole log as text; resuming after an event id gives only what came after.
    let (status, text) = admin.text(&format!("/api/v1/runs/{id}/jobs/test/logs"));
    assert_eq!(status, 200);
    assert!(text.contains("line 5 of hi-ada"), "{text}");
    let (_, tail) = admin.text(&format!(
        "/api/v1/runs/{id}/jobs/test/logs?after={}",
        ids[0]
    ));
    assert!(tail.len() < text.len());

    // `sorat logs follow` prints the same and exits 0 for a run that succeeded.
    let output = Command::new(env!("CARGO_BIN_EXE_sorat"))
        .args(["logs", "follow", &id.to_string(), "--server", &server.url])
        .env("SORAT_TOKEN", ADMIN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("[test] line 3 of hi-ada"), "{stdout}");
    assert!(stdout.contains(&format!("run {id}: success")), "{stdout}");

    // Pagination: newest first with a cursor.
    for _ in 0..2 {
        admin.trigger("shop", json!({}));
    }
    let (_, page) = admin.get("/api/v1/runs?limit=2");
    let page_ids: Vec<i64> = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(page_ids.len(), 2);
    assert!(page_ids[0] > page_ids[1]);
    let (_, next) = admin.get(&format!("/api/v1/runs?limit=2&before={}", page["next"]));
    assert_eq!(next["runs"][0]["id"].as_i64().unwrap(), id);
    assert_eq!(admin.get("/api/v1/runs?limit=0").0, 400);
    assert_eq!(admin.get("/api/v1/runs?status=sideways").0, 400);
}

#[test]
fn secrets_go_only_to_jobs_that_reference_them_and_never_into_logs() {
    let temp = tempfile::tempdir().unwrap();
    let pipeline = r#"on: push
jobs:
  uses-it:
    steps:
      - run: echo "the key is ${{ secrets.DEPLOY_KEY }}"
  does-not:
    steps:
      - run: echo "visible=[${{ secrets.DEPLOY_KEY_OTHER }}] env=[${DEPLOY_KEY:-}]"
"#;
    let repo = repo_with(temp.path(), pipeline);
    let server = Server::start(temp.path(), "", &project(&repo));
    let admin = server.admin();
    let (status, body) = admin.put(
        "/api/v1/secrets/DEPLOY_KEY?project=shop",
        json!({ "value": "s3cr3t-v4lue" }),
    );
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        admin
            .put("/api/v1/secrets/9bad?project=shop", json!({ "value": "x" }))
            .0,
        400
    );
    // Names only, never values.
    let (_, names) = admin.get("/api/v1/secrets?project=shop");
    assert_eq!(names["secrets"][0]["name"], "DEPLOY_KEY");
    assert!(!names.to_string().contains("s3cr3t"));

    let id = admin.trigger("shop", json!({}));
    let run = server.wait_run(id, Duration::from_secs(60));
    assert_eq!(run["status"], "success", "{run:#}");
    let (_, uses) = admin.text(&format!("/api/v1/runs/{id}/jobs/uses-it/logs"));
    assert!(uses.contains("the key is ***"), "{uses}");
    let (_, other) = admin.text(&format!("/api/v1/runs/{id}/jobs/does-not/logs"));
    assert!(other.contains("visible=[] env=[]"), "{other}");
    // Not in the database file in the clear either.
    let db = std::fs::read(temp.path().join("data/state.db")).unwrap();
    assert!(!db.windows(12).any(|w| w == b"s3cr3t-v4lue"));
}

#[test]
fn a_cancelled_run_stops_its_running_steps() {
    let temp = tempfile::tempdir().unwrap();
    let marker = temp.path().join("still-running");
    let pipeline = format!(
        "on: push\njobs:\n  slow:\n    steps:\n      - run: sleep 0.5; sleep 120; touch {}\n  after:\n    needs: slow\n    steps:\n      - run: echo never\n",
        marker.display()
    );
    let repo = repo_with(temp.path(), &pipeline);
    let server = Server::start(temp.path(), "", &project(&repo));
    let admin = server.admin();
    let id = admin.trigger("shop", json!({}));
    let deadline = Instant::now() + Duration::from_secs(30);
    while admin.get(&format!("/api/v1/runs/{id}")).1["jobs"][0]["status"] != "running" {
        assert!(Instant::now() < deadline, "never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let (status, body) = admin.post(&format!("/api/v1/runs/{id}/cancel"), json!({}));
    assert_eq!(status, 200, "{body}");
    let run = server.wait_run(id, Duration::from_secs(30));
    assert_eq!(run["status"], "cancelled");
    // The job ends when its agent has stopped it (the next heartbeat tells it).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, run) = admin.get(&format!("/api/v1/runs/{id}"));
        if run["jobs"][0]["status"] == "cancelled" {
            assert_eq!(run["jobs"][1]["status"], "cancelled");
            break;
        }
        assert!(Instant::now() < deadline, "{run:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(!marker.exists());
    // Cancelling again is a conflict; re-running failed jobs starts them again.
    assert_eq!(
        admin
            .post(&format!("/api/v1/runs/{id}/cancel"), json!({}))
            .0,
        409
    );
}

#[test]
fn a_restart_mid_run_loses_no_run_and_the_job_runs_again() {
    let temp = tempfile::tempdir().unwrap();
    let pipeline = "on: push\njobs:\n  first:\n    steps:\n      - run: echo done-first\n  second:\n    needs: first\n    steps:\n      - run: sleep 3 && echo done-second\n";
    let repo = repo_with(temp.path(), pipeline);
    let mut server = Server::start(temp.path(), "  lease: 2s\n", &project(&repo));
    let admin = server.admin();
    let id = admin.trigger("shop", json!({}));
    let deadline = Instant::now() + Duration::from_secs(30);
    while admin.get(&format!("/api/v1/runs/{id}")).1["jobs"][1]["status"] != "running" {
        assert!(Instant::now() < deadline, "never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // kill -9 of the whole server (and so of its local agent) mid-run.
    server.kill9();
    server.spawn();
    let run = server.wait_run(id, Duration::from_secs(60));
    assert_eq!(run["status"], "success", "{run:#}");
    assert_eq!(run["jobs"][0]["attempt"], 1);
    assert_eq!(
        run["jobs"][1]["attempt"], 2,
        "the lost attempt was run again"
    );
    let (_, log) = admin.text(&format!("/api/v1/runs/{id}/jobs/second/logs"));
    assert!(log.contains("done-second"), "{log}");
    let (_, first) = admin.text(&format!("/api/v1/runs/{id}/jobs/first/logs"));
    assert!(
        first.contains("done-first"),
        "acknowledged logs survive: {first}"
    );
}

#[test]
fn sigterm_lets_running_steps_finish_and_metrics_count_runs() {
    let temp = tempfile::tempdir().unwrap();
    let pipeline =
        "on: push\njobs:\n  work:\n    steps:\n      - run: sleep 1.5 && echo finished-work\n";
    let repo = repo_with(temp.path(), pipeline);
    let mut server = Server::start(temp.path(), "  shutdown_grace: 20s\n", &project(&repo));
    let admin = server.admin();
    let done = admin.trigger("shop", json!({}));
    server.wait_run(done, Duration::from_secs(30));
    let metrics = reqwest::blocking::get(format!("{}/metrics", server.url))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("sorat_runs{status=\"success\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sorat_queue_wait_seconds_count 1"),
        "{metrics}"
    );
    assert!(metrics.contains("sorat_agents_online 1"), "{metrics}");
    assert!(
        metrics.contains("sorat_http_request_duration_seconds_count{method=\"POST\",route=\"/api/v1/projects/{name}/runs\",code=\"201\"} 1"),
        "{metrics}"
    );

    let id = admin.trigger("shop", json!({}));
    let deadline = Instant::now() + Duration::from_secs(30);
    while admin.get(&format!("/api/v1/runs/{id}")).1["jobs"][0]["status"] != "running" {
        assert!(Instant::now() < deadline, "never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = server.terminate();
    assert!(status.success(), "{status}");
    server.spawn();
    let run = server.admin().get(&format!("/api/v1/runs/{id}")).1;
    assert_eq!(
        run["status"], "success",
        "the step finished before the server stopped: {run:#}"
    );
    assert_eq!(run["jobs"][0]["attempt"], 1);
}

#[test]
fn refs_reruns_artifacts_and_roles_that_never_go_down() {
    let temp = tempfile::tempdir().unwrap();
    let pipeline = r#"on:
  push:
    paths: ['src/**']
jobs:
  build:
    steps:
      - run: mkdir -p out && echo "${{ github.ref }}" > out/ref.txt
      - uses: actions/upload-artifact@v4
        with:
          name: built
          path: out/ref.txt
"#;
    let repo = repo_with(temp.path(), pipeline);
    crate::support::git(&repo, &["tag", "v1.2"]);
    let sha = crate::support::git(&repo, &["rev-parse", "HEAD"]);
    let server = Server::start(temp.path(), "", &project(&repo));
    let admin = server.admin();

    // A tag by its short name, and a commit by a short sha.
    let tagged = admin.trigger("shop", json!({ "ref": "v1.2" }));
    let run = server.wait_run(tagged, Duration::from_secs(60));
    assert_eq!(run["git_ref"], "refs/tags/v1.2", "{run:#}");
    let short = admin.trigger("shop", json!({ "ref": &sha[..8] }));
    let run = server.wait_run(short, Duration::from_secs(60));
    assert_eq!(run["sha"], sha.as_str());
    assert_eq!(run["status"], "success", "{run:#}");

    // What a job uploaded is listed.
    let (status, listed) = admin.get(&format!("/api/v1/runs/{short}/artifacts"));
    assert_eq!(status, 200);
    assert_eq!(listed["artifacts"][0]["name"], "built", "{listed:#}");
    assert_eq!(listed["artifacts"][0]["files"], 1);
    assert_eq!(listed["artifacts"][0]["job"], "build");

    // A re-run repeats the run, even though its `paths` filter would not pass now.
    let (status, again) = admin.post(&format!("/api/v1/runs/{short}/rerun"), json!({}));
    assert_eq!(status, 201, "{again}");
    let rerun = server.wait_run(again["id"].as_i64().unwrap(), Duration::from_secs(60));
    assert_eq!(rerun["status"], "success");
    assert_eq!(rerun["trigger"]["of"], short);

    // A viewer token made for `admin` does not take the admin's rights away.
    let (status, _) = admin.post(
        "/api/v1/tokens",
        json!({ "name": "admin", "role": "viewer" }),
    );
    assert_eq!(status, 201);
    assert_eq!(admin.get("/api/v1/audit").0, 200);
}

#[test]
fn https_with_rustls_and_the_local_agent_still_runs_jobs() {
    let temp = tempfile::tempdir().unwrap();
    let cert = temp.path().join("cert.pem");
    let key = temp.path().join("key.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    match made {
        Ok(output) if output.status.success() => {}
        _ => {
            eprintln!("skipped: openssl is not available to make a test certificate");
            return;
        }
    }
    let repo = repo_with(temp.path(), PIPELINE);
    let port = crate::support::free_port();
    std::fs::write(
        temp.path().join("sorat.yaml"),
        format!(
            "server:\n  listen: 127.0.0.1:{port}\n  data: data\n  tls: {{ cert: cert.pem, key: key.pem }}\nprojects:\n{}",
            project(&repo)
        ),
    )
    .unwrap();
    let log = std::fs::File::create(temp.path().join("up.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sorat"))
        .args(["up", "--config"])
        .arg(temp.path().join("sorat.yaml"))
        .env("SORAT_ADMIN_TOKEN", ADMIN)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let pem = std::fs::read(&cert).unwrap();
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{url}/readyz")).send().is_err() {
        assert!(Instant::now() < deadline, "no HTTPS answer");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Plain HTTP on the same port gets no API.
    let plain = reqwest::blocking::get(format!("http://127.0.0.1:{port}/readyz"));
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // `sorat trigger` over HTTPS, trusting the test CA, and the run succeeds.
    let output = Command::new(env!("CARGO_BIN_EXE_sorat"))
        .args(["trigger", "shop", "--follow", "--server", &url, "--ca-cert"])
        .arg(&cert)
        .env("SORAT_TOKEN", ADMIN)
        .output()
        .unwrap();
    crate::support::signal(child.id(), "KILL");
    let _ = child.wait();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("line 5 of hi-world"), "{stdout}");
}

#[test]
fn re_running_failed_jobs_keeps_the_run_and_what_succeeded() {
    let temp = tempfile::tempdir().unwrap();
    let flag = temp.path().join("fixed");
    let pipeline = format!(
        "on: push\njobs:\n  good:\n    outputs:\n      v: ${{{{ steps.s.outputs.v }}}}\n    steps:\n      - id: s\n        run: echo v=42 >> \"$GITHUB_OUTPUT\"\n  flaky:\n    needs: good\n    steps:\n      - run: test -e {} && echo \"got ${{{{ needs.good.outputs.v }}}}\"\n",
        flag.display()
    );
    let repo = repo_with(temp.path(), &pipeline);
    let server = Server::start(temp.path(), "", &project(&repo));
    let admin = server.admin();
    let id = admin.trigger("shop", json!({}));
    let run = server.wait_run(id, Duration::from_secs(60));
    assert_eq!(run["status"], "failure", "{run:#}");
    assert_eq!(run["reason"], "job `flaky` failed");
    // Re-running a run that has not ended, or all of it while it runs, is refused.
    std::fs::write(&flag, "").unwrap();
    let (status, body) = admin.post(
        &format!("/api/v1/runs/{id}/rerun"),
        json!({ "failed_only": true }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jobs"], 1);
    let run = server.wait_run(id, Duration::from_secs(60));
    assert_eq!(run["status"], "success", "{run:#}");
    assert_eq!(
        run["jobs"][0]["attempt"], 1,
        "the good job was not run again"
    );
    assert_eq!(run["jobs"][1]["attempt"], 2);
    let (_, log) = admin.text(&format!("/api/v1/runs/{id}/jobs/flaky/logs"));
    assert!(
        log.contains("got 42"),
        "the re-run job sees the kept outputs: {log}"
    );
    // Nothing failed now: re-running failed jobs has nothing to do.
    let (_, body) = admin.post(
        &format!("/api/v1/runs/{id}/rerun"),
        json!({ "failed_only": true }),
    );
    assert_eq!(body["jobs"], 0);
}

#[test]
fn a_concurrency_group_runs_one_run_at_a_time_and_queues_the_rest() {
    let temp = tempfile::tempdir().unwrap();
    let pipeline =
        "on: push\nconcurrency: deploy\njobs:\n  deploy:\n    steps:\n      - run: sleep 0.7\n";
    let repo = repo_with(temp.path(), pipeline);
    let server = Server::start(temp.path(), "", &project(&repo));
    let admin = server.admin();
    let ids: Vec<i64> = (0..3).map(|_| admin.trigger("shop", json!({}))).collect();
    // While the first runs, the others wait and say why.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, third) = admin.get(&format!("/api/v1/runs/{}", ids[2]));
        if third["jobs"][0]["waiting"] == "concurrency group `deploy` is busy" {
            break;
        }
        assert!(Instant::now() < deadline, "{third:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let runs: Vec<Value> = ids
        .iter()
        .map(|id| server.wait_run(*id, Duration::from_secs(60)))
        .collect();
    for pair in runs.windows(2) {
        assert_eq!(pair[1]["status"], "success");
        let (earlier, later) = (&pair[0]["jobs"][0], &pair[1]["jobs"][0]);
        assert!(
            later["started_at"].as_i64().unwrap() >= earlier["finished_at"].as_i64().unwrap(),
            "one at a time, in order: {earlier:#} {later:#}"
        );
    }
}

#[test]
fn the_first_start_shows_an_admin_token_once_and_keeps_it_private() {
    use std::os::unix::fs::PermissionsExt;
    let temp = tempfile::tempdir().unwrap();
    let port = crate::support::free_port();
    std::fs::write(
        temp.path().join("sorat.yaml"),
        format!("server:\n  listen: 127.0.0.1:{port}\n  data: data\n"),
    )
    .unwrap();
    let start = || {
        let log = temp.path().join("up.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sorat"))
            .args(["up", "sorat.yaml", "--log-format", "json"])
            .current_dir(temp.path())
            .env_remove("SORAT_ADMIN_TOKEN")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::blocking::get(format!("http://127.0.0.1:{port}/readyz")).is_err() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(50));
        }
        (child, log)
    };
    let (mut child, log) = start();
    let file = temp.path().join("data/admin-token");
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(token.starts_with("sorat_"), "{token}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(temp.path().join("data/secret.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // The server answers before `sorat up` has printed its banner: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut printed = std::fs::read_to_string(&log).unwrap();
    while !printed.contains("admin token") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        printed = std::fs::read_to_string(&log).unwrap();
    }
    assert_eq!(printed.matches(&token).count(), 1, "{printed}");

    // The CLI makes tokens with it (read from .sorat/admin-token when not given).
    let output = Command::new(env!("CARGO_BIN_EXE_sorat"))
        .args(["token", "create", "ci", "--role", "developer"])
        .args(["--server", &format!("http://127.0.0.1:{port}")])
        .env("SORAT_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let made = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(made.starts_with("sorat_") && made != token);
    let response = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v1/runs"))
        .bearer_auth(&made)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // An unknown role is refused with exit 2 and the field named.
    let output = Command::new(env!("CARGO_BIN_EXE_sorat"))
        .args(["token", "create", "x", "--role", "owner"])
        .args(["--server", &format!("http://127.0.0.1:{port}")])
        .env("SORAT_TOKEN", &token)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("role"));

    // Structured logs: one JSON object per line.
    crate::support::signal(child.id(), "TERM");
    child.wait().unwrap();
    let printed = std::fs::read_to_string(&log).unwrap();
    assert!(
        printed
            .lines()
            .filter(|line| line.starts_with('{'))
            .all(|line| serde_json::from_str::<Value>(line).is_ok()),
        "{printed}"
    );
    // A second start does not show or change the token.
    let (mut child, log) = start();
    crate::support::signal(child.id(), "TERM");
    child.wait().unwrap();
    assert!(!std::fs::read_to_string(&log).unwrap().contains(&token));
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
}
