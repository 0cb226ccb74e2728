//! Webhooks with real signatures: GitHub (HMAC-SHA256), GitLab (token, and Standard
//! Webhooks), Gitea. A bad or missing signature gets 401 and queues nothing; a malformed
//! payload 400; `on:` decides whether a run starts.

use std::time::Duration;

use base64::Engine;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::support::{Server, git, repo_with};

const PIPELINE: &str = r#"on:
  push:
    branches: [main]
    paths-ignore: ["docs/**"]
  pull_request:
jobs:
  build:
    steps:
      - run: echo "built ${{ github.sha }} for ${{ github.event_name }}"
"#;

const SECRET: &str = "hook-secret-42";

fn sign(body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn github_push(git_ref: &str, before: &str, after: &str, files: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": git_ref,
        "before": before,
        "after": after,
        "created": false,
        "deleted": false,
        "forced": false,
        "compare": "https://example.com/compare",
        "commits": [{
            "id": after,
            "message": "change things\n\nmore",
            "timestamp": "2026-11-26T00:00:00Z",
            "author": { "name": "Tess", "email": "tess@example.com", "username": "tess" },
            "committer": { "name": "Tess", "email": "tess@example.com", "username": "tess" },
            "added": [],
            "removed": [],
            "modified": files,
        }],
        "head_commit": {
            "id": after,
            "message": "change things\n\nmore",
            "timestamp": "2026-11-26T00:00:00Z",
            "author": { "name": "Tess", "email": "tess@example.com", "username": "tess" },
            "committer": { "name": "Tess", "email": "tess@example.com", "username": "tess" },
            "added": [],
            "removed": [],
            "modified": files,
        },
        "repository": {
            "id": 1,
            "name": "shop",
            "full_name": "team/shop",
            "clone_url": "https://example.com/team/shop.git",
            "html_url": "https://example.com/team/shop",
            "default_branch": "main",
            "owner": { "login": "team", "name": "team" },
        },
        "pusher": { "name": "tess", "email": "tess@example.com" },
        "sender": { "login": "tess", "id": 7 },
    }))
    .unwrap()
}

fn post(server: &Server, headers: &[(&str, String)], body: &[u8]) -> (u16, Value) {
    let client = reqwest::blocking::Client::new();
    let mut request = client
        .post(format!("{}/hooks/shop", server.url))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let value = response.json().unwrap_or(Value::Null);
    (status, value)
}

fn run_count(server: &Server) -> usize {
    server.admin().get("/api/v1/runs").1["runs"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn github_pushes_are_verified_filtered_and_run() {
    let temp = tempfile::tempdir().unwrap();
    let repo = repo_with(temp.path(), PIPELINE);
    let before = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("app.txt"), "v2\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "v2"]);
    let after = git(&repo, &["rev-parse", "HEAD"]);
    let projects = format!(
        "  - name: shop\n    repo: {}\n    webhook: {{ secret: '${{{{ secrets.SHOP_HOOK }}}}' }}\n",
        repo.display()
    );
    let server = Server::start(temp.path(), "", &projects);

    // The secret is not set yet: the server says so, and runs nothing.
    let body = github_push("refs/heads/main", &before, &after, &["app.txt"]);
    let good = vec![
        ("X-GitHub-Event", "push".to_string()),
        ("X-GitHub-Delivery", "d-1".to_string()),
        ("X-Hub-Signature-256", format!("sha256={}", sign(&body))),
    ];
    let (status, answer) = post(&server, &good, &body);
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SHOP_HOOK")
    );
    assert_eq!(
        server
            .admin()
            .put(
                "/api/v1/secrets/SHOP_HOOK?project=shop",
                json!({ "value": SECRET })
            )
            .0,
        204
    );

    // Missing, wrong and tampered signatures: 401, nothing queued.
    let (status, answer) = post(&server, &good[..2], &body);
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["field"], "X-Hub-Signature-256");
    let wrong = vec![
        good[0].clone(),
        ("X-Hub-Signature-256", format!("sha256={}", "0".repeat(64))),
    ];
    assert_eq!(post(&server, &wrong, &body).0, 401);
    let mut tampered = body.clone();
    let last = tampered.len() - 2;
    tampered[last] = b' ';
    assert_eq!(post(&server, &good, &tampered).0, 401);
    assert_eq!(run_count(&server), 0);

    // Signed but malformed: 400 with the reason.
    let junk = b"{\"ref\": 12}".to_vec();
    let signed_junk = vec![
        good[0].clone(),
        ("X-Hub-Signature-256", format!("sha256={}", sign(&junk))),
    ];
    let (status, answer) = post(&server, &signed_junk, &junk);
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]["message"].as_str().is_some());
    // Not from a forge at all: 400.
    assert_eq!(post(&server, &[], &body).0, 400);
    // A ping is answered, and starts nothing.
    let ping = b"{\"zen\":\"Keep it simple.\",\"hook_id\":1}".to_vec();
    let ping_headers = vec![
        ("X-GitHub-Event", "ping".to_string()),
        ("X-Hub-Signature-256", format!("sha256={}", sign(&ping))),
    ];
    assert_eq!(post(&server, &ping_headers, &ping).0, 200);
    assert_eq!(run_count(&server), 0);

    // A delivery larger than axum's default limit (2 MiB) but within `server.max_body`.
    let mut padded: Value = serde_json::from_slice(&body).unwrap();
    padded["padding"] = Value::String("x".repeat(3 << 20));
    let padded = serde_json::to_vec(&padded).unwrap();
    let headers = vec![
        good[0].clone(),
        ("X-Hub-Signature-256", format!("sha256={}", sign(&padded))),
    ];
    let (status, answer) = post(&server, &headers, &padded);
    assert_eq!(status, 202, "{answer}");
    let padded_run = answer["run"].as_i64().unwrap();
    server.wait_run(padded_run, Duration::from_secs(60));

    // A good push runs, with what the payload said.
    let (status, answer) = post(&server, &good, &body);
    assert_eq!(status, 202, "{answer}");
    let id = answer["run"].as_i64().unwrap();
    let run = server.wait_run(id, Duration::from_secs(60));
    assert_eq!(run["status"], "success", "{run:#}");
    assert_eq!(run["sha"], after);
    assert_eq!(run["before"], before);
    assert_eq!(run["git_ref"], "refs/heads/main");
    assert_eq!(run["title"], "change things");
    assert_eq!(run["trigger"]["forge"], "github");
    let (_, log) = server
        .admin()
        .text(&format!("/api/v1/runs/{id}/jobs/build/logs"));
    assert!(log.contains(&format!("built {after} for push")), "{log}");

    // Filters: another branch, or only ignored paths, start nothing (and say why).
    let other = github_push("refs/heads/feature", &before, &after, &["app.txt"]);
    let headers = vec![
        good[0].clone(),
        ("X-Hub-Signature-256", format!("sha256={}", sign(&other))),
    ];
    let (status, answer) = post(&server, &headers, &other);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["started"], false);
    assert!(
        answer["reason"].as_str().unwrap().contains("feature"),
        "{answer}"
    );
    let docs = github_push("refs/heads/main", &before, &after, &["docs/guide.md"]);
    let headers = vec![
        good[0].clone(),
        ("X-Hub-Signature-256", format!("sha256={}", sign(&docs))),
    ];
    let (status, answer) = post(&server, &headers, &docs);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["started"], false, "{answer}");
    assert_eq!(run_count(&server), 2);

    // The audit log has the deliveries, from `webhook`.
    let (_, audit) = server.admin().get("/api/v1/audit");
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "webhook" && e["status"] == 401)
    );
}

#[test]
fn gitlab_and_gitea_deliveries_are_verified_their_own_way() {
    let temp = tempfile::tempdir().unwrap();
    let repo = repo_with(temp.path(), PIPELINE);
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let projects = format!(
        "  - name: shop\n    repo: {}\n    webhook: {{ secret: '${{{{ secrets.HOOK }}}}' }}\n",
        repo.display()
    );
    let server = Server::start(temp.path(), "", &projects);
    // A secret for every project works too.
    assert_eq!(
        server
            .admin()
            .put("/api/v1/secrets/HOOK", json!({ "value": SECRET }))
            .0,
        204
    );
    let zero = "0".repeat(40);
    let gitlab = serde_json::to_vec(&json!({
        "object_kind": "push",
        "event_name": "push",
        "before": zero,
        "after": sha,
        "ref": "refs/heads/main",
        "checkout_sha": sha,
        "user_name": "Tess",
        "user_username": "tess",
        "user_email": "tess@example.com",
        "project": {
            "id": 1, "name": "shop", "path_with_namespace": "team/shop",
            "web_url": "https://gitlab.example.com/team/shop",
            "git_http_url": "https://gitlab.example.com/team/shop.git",
            "default_branch": "main"
        },
        "commits": [{
            "id": sha, "message": "first commit", "title": "first commit",
            "timestamp": "2026-11-26T00:00:00Z",
            "author": { "name": "Tess", "email": "tess@example.com" },
            "added": ["README.md"], "modified": [], "removed": []
        }],
        "total_commits_count": 1,
        "repository": { "name": "shop", "url": "https://gitlab.example.com/team/shop.git", "homepage": "https://gitlab.example.com/team/shop" }
    }))
    .unwrap();
    // The token header: a wrong one is refused, the right one runs.
    let wrong = vec![
        ("X-Gitlab-Event", "Push Hook".to_string()),
        ("X-Gitlab-Token", "nope".to_string()),
    ];
    assert_eq!(post(&server, &wrong, &gitlab).0, 401);
    let token = vec![
        ("X-Gitlab-Event", "Push Hook".to_string()),
        ("X-Gitlab-Token", SECRET.to_string()),
    ];
    let (status, answer) = post(&server, &token, &gitlab);
    assert_eq!(status, 202, "{answer}");
    // Standard Webhooks: HMAC over `{id}.{timestamp}.{body}`.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("msg_1.{now}.").as_bytes());
    mac.update(&gitlab);
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let standard = vec![
        ("X-Gitlab-Event", "Push Hook".to_string()),
        ("webhook-id", "msg_1".to_string()),
        ("webhook-timestamp", now.clone()),
        ("webhook-signature", format!("v1,{signature}")),
    ];
    assert_eq!(post(&server, &standard, &gitlab).0, 202);
    let stale = vec![
        ("X-Gitlab-Event", "Push Hook".to_string()),
        ("webhook-id", "msg_1".to_string()),
        ("webhook-timestamp", "1000000000".to_string()),
        ("webhook-signature", format!("v1,{signature}")),
    ];
    assert_eq!(post(&server, &stale, &gitlab).0, 401);

    // Gitea: a hex HMAC of the body.
    let gitea = github_push("refs/heads/main", &zero, &sha, &["README.md"]);
    let headers = vec![
        ("X-Gitea-Event", "push".to_string()),
        ("X-Gitea-Signature", sign(&gitea)),
    ];
    let (status, answer) = post(&server, &headers, &gitea);
    assert_eq!(status, 202, "{answer}");
    let bad = vec![
        ("X-Gitea-Event", "push".to_string()),
        ("X-Gitea-Signature", sign(b"something else")),
    ];
    assert_eq!(post(&server, &bad, &gitea).0, 401);

    let runs = server.wait_runs(Duration::from_secs(60), |runs| {
        runs.len() == 3 && runs.iter().all(|r| r["status"] == "success")
    });
    assert!(runs.iter().all(|r| r["sha"] == sha));

    // The body limit: a delivery over `server.max_body` is refused before anything else.
    // (Headers only: the server answers from `Content-Length` without reading a byte.)
    use std::io::{Read, Write};
    let address = server.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "POST /hooks/shop HTTP/1.1\r\nHost: {address}\r\nX-Gitlab-Event: Push Hook\r\nX-Gitlab-Token: {SECRET}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        26 << 20
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("too_large"), "{answer}");
}
