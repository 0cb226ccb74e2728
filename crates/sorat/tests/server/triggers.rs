//! Polling a repository, commit statuses back to a forge, and an agent that keeps streaming
//! through a server restart.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{AgentProcess, Server, git, repo_with};

#[test]
fn polling_runs_new_branches_and_commits_and_honours_path_filters() {
    let temp = tempfile::tempdir().unwrap();
    let pipeline = "on:\n  push:\n    paths-ignore: ['docs/**']\njobs:\n  build:\n    steps:\n      - run: echo built\n";
    let repo = repo_with(temp.path(), pipeline);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    let server = Server::start(
        temp.path(),
        "",
        &format!(
            "  - name: shop\n    repo: file://{}\n    poll: 1s\n",
            repo.display()
        ),
    );
    // The first look at a project that never ran runs its default branch.
    let runs = server.wait_runs(Duration::from_secs(30), |runs| runs.len() == 1);
    assert_eq!(runs[0]["sha"], first);
    assert_eq!(runs[0]["git_ref"], "refs/heads/main");

    // A new branch, then a commit on main: one run each, with what moved.
    git(&repo, &["branch", "feature"]);
    let runs = server.wait_runs(Duration::from_secs(30), |runs| runs.len() == 2);
    assert_eq!(runs[0]["git_ref"], "refs/heads/feature");
    assert_eq!(runs[0]["before"], Value::Null);
    std::fs::write(repo.join("app.txt"), "v2\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "second commit"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    let runs = server.wait_runs(Duration::from_secs(30), |runs| runs.len() == 3);
    assert_eq!(runs[0]["sha"], second);
    assert_eq!(runs[0]["before"], first);
    assert_eq!(runs[0]["title"], "second commit");
    assert_eq!(runs[0]["actor"], "poll");

    // A commit that touches only ignored paths starts nothing.
    std::fs::create_dir_all(repo.join("docs")).unwrap();
    std::fs::write(repo.join("docs/guide.md"), "words\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "docs only"]);
    std::fs::write(repo.join("app.txt"), "v3\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "third"]);
    let third = git(&repo, &["rev-parse", "HEAD"]);
    // (The two commits may land in one poll or two; either way only `third` runs.)
    let runs = server.wait_runs(Duration::from_secs(30), |runs| {
        runs.iter().any(|run| run["sha"] == third)
    });
    std::thread::sleep(Duration::from_secs(2));
    let (_, list) = server.admin().get("/api/v1/runs?limit=100");
    let shas: Vec<&str> = list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["sha"].as_str().unwrap())
        .collect();
    let docs_only = git(&repo, &["rev-parse", "HEAD~1"]);
    assert!(!shas.contains(&docs_only.as_str()), "{runs:#?}");
    assert_eq!(shas.len(), 4, "{shas:?}");
}

/// What the fake forge saw: each request's path, `Authorization` header and JSON body.
type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A forge's status API on loopback: records each request's path, token and body.
fn fake_forge() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0;
            let mut auth = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "authorization" => auth = value.trim().to_string(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
            record.lock().unwrap().push((
                path,
                auth,
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            ));
            let _ = stream.write_all(
                b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
            );
        }
    });
    (url, seen)
}

#[test]
fn run_states_are_reported_to_the_forge_as_commit_statuses() {
    let temp = tempfile::tempdir().unwrap();
    let repo = repo_with(
        temp.path(),
        "on: push\njobs:\n  build:\n    steps:\n      - run: echo ok\n",
    );
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let (forge, seen) = fake_forge();
    let server = Server::start(
        temp.path(),
        "",
        &format!(
            "  - name: shop\n    repo: {}\n    status:\n      api: {forge}\n      repository: team/shop\n      token: '${{{{ secrets.FORGE_TOKEN }}}}'\n",
            repo.display()
        ),
    );
    let admin = server.admin();
    assert_eq!(
        admin
            .put(
                "/api/v1/secrets/FORGE_TOKEN",
                json!({ "value": "ghp_forge" })
            )
            .0,
        204
    );
    let id = admin.trigger("shop", json!({}));
    assert_eq!(
        server.wait_run(id, Duration::from_secs(60))["status"],
        "success"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let requests = seen.lock().unwrap().clone();
        let states: Vec<&str> = requests
            .iter()
            .map(|(_, _, body)| body["state"].as_str().unwrap_or(""))
            .collect();
        if states.contains(&"success") {
            assert!(states.contains(&"pending"), "{requests:#?}");
            for (path, auth, body) in &requests {
                assert_eq!(path, &format!("/repos/team/shop/statuses/{sha}"));
                assert_eq!(auth, "Bearer ghp_forge");
                assert_eq!(body["context"], "sorat/shop");
                assert!(
                    body["target_url"]
                        .as_str()
                        .unwrap()
                        .ends_with(&format!("/api/v1/runs/{id}"))
                );
            }
            break;
        }
        assert!(Instant::now() < deadline, "{requests:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_agent_keeps_its_job_and_its_log_through_a_server_restart() {
    let temp = tempfile::tempdir().unwrap();
    let repo = repo_with(
        temp.path(),
        "on: push\njobs:\n  talk:\n    steps:\n      - run: for i in $(seq 1 30); do echo \"line $i\"; sleep 0.2; done\n",
    );
    let mut server = Server::start(
        temp.path(),
        "  lease: 15s\n  local_agent: { enabled: false }\n",
        &format!("  - name: shop\n    repo: {}\n", repo.display()),
    );
    let token = server.token("remote", "agent");
    let _agent = AgentProcess::start(&server, &token, "remote-1", &[]);
    let admin = server.admin();
    let id = admin.trigger("shop", json!({}));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = admin.text(&format!("/api/v1/runs/{id}/jobs/talk/logs"));
        if text.contains("line 5\n") {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The server goes away without a word, for a second, mid-log.
    server.kill9();
    std::thread::sleep(Duration::from_secs(1));
    server.spawn();
    let run = server.wait_run(id, Duration::from_secs(60));
    assert_eq!(run["status"], "success", "{run:#}");
    assert_eq!(
        run["jobs"][0]["attempt"], 1,
        "the agent kept its lease: {run:#}"
    );
    let (_, text) = server
        .admin()
        .text(&format!("/api/v1/runs/{id}/jobs/talk/logs"));
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("line ")).collect();
    let expected: Vec<String> = (1..=30).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected, "every line once, in order:\n{text}");
}

#[test]
fn a_cron_schedule_starts_runs_in_the_configured_time_zone() {
    let temp = tempfile::tempdir().unwrap();
    let repo = repo_with(
        temp.path(),
        "on:\n  schedule:\n    - cron: '* * * * *'\njobs:\n  nightly:\n    steps:\n      - run: echo \"scheduled ${{ github.event_name }}\"\n",
    );
    let server = Server::start(
        temp.path(),
        "  time_zone: Asia/Kolkata\n",
        &format!("  - name: shop\n    repo: {}\n", repo.display()),
    );
    // Every minute; the server looks every 20 s, so one comes within 80 s.
    let runs = server.wait_runs(Duration::from_secs(100), |runs| !runs.is_empty());
    assert_eq!(runs[0]["event"], "schedule");
    assert_eq!(runs[0]["actor"], "schedule");
    assert_eq!(runs[0]["git_ref"], "refs/heads/main");
    let id = runs[0]["id"].as_i64().unwrap();
    server.wait_run(id, Duration::from_secs(60));
    let (_, log) = server
        .admin()
        .text(&format!("/api/v1/runs/{id}/jobs/nightly/logs"));
    assert!(log.contains("scheduled schedule"), "{log}");
}
