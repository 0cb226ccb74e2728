//! Deployments through the server: a signed artifact to three `local` hosts with a real HTTP
//! service, rolling; a broken release rolled back on its own; `sorat rollback`; the
//! releases table; a tampered artifact refused; services back after a restart.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::Digest as _;

use crate::support::{Api, Server, free_port};

const SERVICE: &str = r#"import http.server, os, sys
version = open("VERSION").read().strip()
if version == "broken":
    sys.exit(3)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/greeting":
            body = os.environ.get("GREETING", "").encode()
        else:
            body = (version if self.path == "/version" else "ok").encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
print("serving version", version, "on", os.environ["PORT"], flush=True)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

/// Publishes `app@version` with the service and its VERSION file through the API.
fn publish(api: &Api, version: &str) {
    let files = [
        ("app.py", SERVICE.to_string()),
        ("VERSION", format!("{version}\n")),
    ];
    let mut entries = Vec::new();
    for (path, content) in &files {
        let digest = format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(content.as_bytes()))
        );
        let response = api
            .http
            .put(format!("{}/api/v1/artifacts/blobs/{digest}", api.base))
            .bearer_auth(&api.token)
            .body(content.clone())
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        entries
            .push(json!({ "path": path, "digest": digest, "size": content.len(), "mode": 0o644 }));
    }
    let (status, body) = api.post(
        "/api/v1/artifacts",
        json!({ "name": "app", "version": version, "files": entries, "attachments": [], "metadata": {}, "moving": false }),
    );
    assert_eq!(status, 201, "{body}");
}

/// A client asking `GET /version` on a port every 10 ms in a thread of its own, until
/// [`Asker::answers`] stops it.
struct Asker {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Option<String>>>,
}

impl Asker {
    fn start(port: u16) -> Asker {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                seen.push(version_on(port));
                std::thread::sleep(Duration::from_millis(10));
            }
            seen
        });
        Asker { stop, thread }
    }

    /// Stops asking; asserts that every request was answered and returns the versions seen,
    /// each run of the same one once.
    fn answers(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = self.thread.join().unwrap();
        let failures = seen.iter().filter(|answer| answer.is_none()).count();
        assert_eq!(failures, 0, "{failures} of {} requests failed", seen.len());
        let mut versions: Vec<String> = Vec::new();
        for answer in seen.into_iter().flatten() {
            if versions.last() != Some(&answer) {
                versions.push(answer);
            }
        }
        versions
    }
}

/// The `sorat.yaml` target `web-<i>` on the test sshd, in `<hosts>/web<i>`, with `extra`
/// keys (`port: …`).
fn ssh_target_yaml(sshd: &crate::sshd::Sshd, i: usize, extra: &str) -> String {
    format!(
        "      - name: web-{i}\n        ssh: {{ host: 127.0.0.1, ssh_port: {}, user: {}, key: {}, known_hosts: {}, dir: {}, {extra} }}\n",
        sshd.port,
        sshd.user,
        sshd.key.display(),
        sshd.known_hosts.display(),
        sshd.hosts_dir().join(format!("web{i}")).display()
    )
}

fn version_on(port: u16) -> Option<String> {
    reqwest::blocking::get(format!("http://127.0.0.1:{port}/version"))
        .ok()?
        .text()
        .ok()
}

#[test]
fn deploy_roll_back_and_refuse_what_does_not_verify() {
    let temp = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let targets: String = ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("      - local: {{ dir: hosts/h{i}, port: {port} }}\n"))
        .collect();
    let config_extra = format!(
        "environments:\n  staging:\n    targets:\n{targets}    service:\n      command: exec python3 app.py\n      stop_grace: 5s\n    health:\n      http: {{ path: /healthz }}\n      interval: 100ms\n      timeout: 10s\n    strategy: {{ rolling: {{ batch: 1 }} }}\n    keep_releases: 3\n"
    );
    // `Server::start` writes `projects:` last: the environments go in the server part's tail.
    let mut server = Server::start(temp.path(), "", &format!("  []\n{config_extra}"));
    let admin = server.admin();
    publish(&admin, "1");
    publish(&admin, "2");
    publish(&admin, "broken");

    let first = server.cli(&["deploy", "staging", "--artifact", "app@1"]);
    let out = String::from_utf8_lossy(&first.stdout);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for port in &ports {
        assert_eq!(version_on(*port).as_deref(), Some("1"));
    }
    let second = server.cli(&["deploy", "staging", "--artifact", "app@2"]);
    assert_eq!(
        second.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&second.stdout)
    );
    for port in &ports {
        assert_eq!(version_on(*port).as_deref(), Some("2"));
    }
    // The staging folder keeps only the files of the artifact deployed last.
    let staged = walk(&temp.path().join("data/deploy-staging/staging")).len();
    let (code, artifact) = admin.get("/api/v1/artifacts/app/2");
    assert_eq!(code, 200, "{artifact}");
    let files_of_2 = artifact["files"].as_array().map_or(0, Vec::len);
    assert!(files_of_2 > 0);
    assert_eq!(staged, files_of_2, "staged files besides app@2's");

    // A release whose service exits at once: the first host goes back to 2, the others are
    // never switched, and the command says so with exit 1.
    let broken = server.cli(&["deploy", "staging", "--artifact", "app@broken"]);
    let out = String::from_utf8_lossy(&broken.stdout);
    assert_eq!(broken.status.code(), Some(1), "{out}");
    assert!(out.contains("rolled_back"), "{out}");
    for port in &ports {
        assert_eq!(version_on(*port).as_deref(), Some("2"), "{out}");
    }

    // What the services wrote is kept, tagged with host and release.
    let (status, logs) = admin.get("/api/v1/environments/staging/logs");
    assert_eq!(status, 200);
    let lines = logs["lines"].as_array().unwrap();
    assert!(
        lines.iter().any(|line| line["line"]
            .as_str()
            .is_some_and(|text| text.starts_with("serving version 2 on"))
            && line["host"] == "staging-1"
            && line["release"] == 2
            && line["stream"] == "stdout"),
        "{logs:#}"
    );

    // Nothing waits for a decision: promote says so (exit 2), and the list shows no pause.
    let promote = server.cli(&["promote", "staging"]);
    assert_eq!(promote.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&promote.stderr)
            .contains("no deploy to `staging` is waiting for a decision"),
        "{}",
        String::from_utf8_lossy(&promote.stderr)
    );
    let (_, environments) = admin.get("/api/v1/environments");
    assert_eq!(
        environments["environments"][0]["paused"],
        serde_json::Value::Null
    );

    // The releases table marks the current one.
    let table = server.cli(&["releases", "staging"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("*   2 app@2"), "{table}");

    // Rollback: to 1 on every host.
    let back = server.cli(&["rollback", "staging"]);
    assert_eq!(
        back.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&back.stdout)
    );
    for port in &ports {
        assert_eq!(version_on(*port).as_deref(), Some("1"));
    }
    // Rolling back to a release that is not there is refused before anything changes.
    let missing = server.cli(&["rollback", "staging", "--to", "99"]);
    assert_eq!(missing.status.code(), Some(2));

    // A tampered blob: the artifact no longer verifies, and nothing is deployed.
    for entry in walk(&temp.path().join("data/artifacts")) {
        if std::fs::read(&entry).is_ok_and(|bytes| bytes == b"2\n") {
            std::fs::write(&entry, b"3\n").unwrap();
        }
    }
    let refused = server.cli(&["deploy", "staging", "--artifact", "app@2"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.contains("does not verify"), "{err}");
    for port in &ports {
        assert_eq!(version_on(*port).as_deref(), Some("1"));
    }

    // A restart of the server starts the current release's services again.
    server.kill9();
    // The services were the server's children; the reaper stops them with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ports.iter().any(|port| version_on(*port).is_some()) {
        assert!(Instant::now() < deadline, "services outlived their server");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ports
        .iter()
        .any(|port| version_on(*port).as_deref() != Some("1"))
    {
        assert!(
            Instant::now() < deadline,
            "services not back after a restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, listed) = server.admin().get("/api/v1/environments");
    let hosts = listed["environments"][0]["hosts"]
        .as_array()
        .unwrap()
        .clone();
    assert!(hosts.iter().all(|h| h["current"] == 1), "{listed:#}");
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

#[test]
fn a_pipeline_builds_publishes_and_deploys_to_staging_then_production() {
    let temp = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let repo_dir = temp.path().join("repo");
    std::fs::create_dir_all(repo_dir.join(".sorat")).unwrap();
    std::fs::write(repo_dir.join("app.py"), SERVICE).unwrap();
    std::fs::write(
        repo_dir.join(".sorat/pipeline.yaml"),
        r#"on: push
jobs:
  build:
    steps:
      - uses: actions/checkout@v4
      - run: mkdir -p dist && cp app.py dist/ && echo "${{ github.run_number }}" > dist/VERSION && echo '{"bomFormat":"CycloneDX"}' > sbom.cdx.json
      - uses: publish-artifact
        with:
          name: app
          path: dist
          version: "${{ github.run_number }}"
          attachments: "sbom: sbom.cdx.json"
  staging:
    needs: build
    environment: staging
    steps:
      - uses: deploy
        with:
          artifact: app@${{ github.run_number }}
  production:
    needs: staging
    environment: production
    steps:
      - uses: deploy
        with:
          artifact: app@${{ github.run_number }}
"#,
    )
    .unwrap();
    crate::support::git(&repo_dir, &["init", "-q", "-b", "main"]);
    crate::support::git(&repo_dir, &["add", "-A"]);
    crate::support::git(&repo_dir, &["commit", "-q", "-m", "app"]);
    let environment = |name: &str, ports: &[u16], requires: &str| {
        let targets: String = ports
            .iter()
            .enumerate()
            .map(|(i, port)| format!("      - local: {{ dir: hosts/{name}{i}, port: {port} }}\n"))
            .collect();
        format!(
            "  {name}:\n    targets:\n{targets}    service: {{ command: exec python3 app.py }}\n    health: {{ http: {{ path: /healthz }}, interval: 100ms }}\n{requires}"
        )
    };
    let config = format!(
        "  - name: shop\n    repo: {}\nenvironments:\n{}{}",
        repo_dir.display(),
        environment("staging", &ports[..1], ""),
        environment(
            "production",
            &ports[1..],
            "    requires: [staging]\n    approval: admin\n    branches: [main, release/*]\n"
        ),
    );
    let server = Server::start(temp.path(), "", &config);
    let admin = server.admin();

    // Straight to production: refused, staging has not run it.
    publish(&admin, "direct");
    let (status, body) = admin.post(
        "/api/v1/environments/production/deploy",
        json!({ "artifact": "app@direct" }),
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("must be deployed to `staging` first"),
        "{body}"
    );

    let id = admin.trigger("shop", json!({}));
    // Staging deploys; production waits for an admin's approval and says how to give it.
    let started = Instant::now();
    let waiting = loop {
        let (_, jobs) = admin.get(&format!("/api/v1/runs/{id}/jobs"));
        let production = jobs["jobs"]
            .as_array()
            .and_then(|jobs| jobs.iter().find(|job| job["key"] == "production"))
            .cloned()
            .unwrap_or_default();
        if let Some(waiting) = production["waiting"].as_str()
            && waiting.contains("waiting for approval")
        {
            break waiting.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{jobs:#}\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        waiting.contains(&format!("sorat approve {id} production")),
        "{waiting}"
    );
    assert_eq!(
        version_on(ports[1]),
        None,
        "production must not have started"
    );
    // A developer may not approve what needs an admin.
    let developer = server.client(&server.token("dev", "developer"));
    let (status, body) = developer.post(
        &format!("/api/v1/runs/{id}/jobs/production/approve"),
        json!({}),
    );
    assert_eq!(status, 403, "{body}");
    // An agent token cannot deploy on its own: only for a running deployment job whose lease
    // it holds.
    let agent = server.client(&server.token("rogue", "agent"));
    let (status, body) = agent.post(
        "/api/v1/environments/staging/deploy",
        json!({ "artifact": "app@direct" }),
    );
    assert_eq!(status, 403, "{body}");
    let (status, body) = agent.post(
        "/api/v1/environments/staging/deploy",
        json!({ "artifact": "app@direct", "job": 1, "lease": "0123456789abcdef0123456789abcdef" }),
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not running under this lease"),
        "{body}"
    );
    // Nor go around the approval by deploying by hand.
    let (status, body) = developer.post(
        "/api/v1/environments/production/deploy",
        json!({ "artifact": "app@1" }),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("admin"),
        "{body}"
    );
    let approve = Command::new(env!("CARGO_BIN_EXE_sorat"))
        .args([
            "approve",
            &id.to_string(),
            "production",
            "--server",
            &server.url,
        ])
        .env("SORAT_TOKEN", crate::support::ADMIN)
        .output()
        .unwrap();
    assert_eq!(
        approve.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&approve.stdout),
        String::from_utf8_lossy(&approve.stderr)
    );
    let run = server.wait_run(id, Duration::from_secs(120));
    assert_eq!(run["status"], "success", "{run:#}");
    let number = run["number"].as_i64().unwrap().to_string();
    for port in &ports {
        assert_eq!(version_on(*port).as_deref(), Some(number.as_str()));
    }
    let (_, log) = admin.text(&format!("/api/v1/runs/{id}/jobs/production/logs"));
    assert!(log.contains("deployed `app@1` to `production`"), "{log}");
    // The SBOM went with the artifact, through the agent's upload.
    let (status, artifact) = admin.get("/api/v1/artifacts/app/1");
    assert_eq!(status, 200, "{artifact}");
    let text = artifact.to_string();
    assert!(
        text.contains("\"kind\":\"sbom\"") && text.contains("application/vnd.cyclonedx+json"),
        "{artifact:#}"
    );
    // A second approval is refused; the deployment is on record with its report.
    let (status, _) = admin.post(
        &format!("/api/v1/runs/{id}/jobs/production/approve"),
        json!({}),
    );
    assert_eq!(status, 409);
    let (_, history) = admin.get("/api/v1/environments/production/deployments");
    let deployments = history["deployments"].as_array().unwrap();
    assert_eq!(deployments.len(), 1, "{history:#}");
    assert_eq!(deployments[0]["outcome"], "succeeded");
    assert_eq!(deployments[0]["artifact"], "app@1");
    assert!(
        deployments[0]["who"]
            .as_str()
            .unwrap_or_default()
            .ends_with("(run shop #1, job production)"),
        "{history:#}"
    );
    assert_eq!(
        deployments[0]["report"]["hosts"][0]["outcome"], "deployed",
        "{history:#}"
    );
    assert_eq!(
        deployments[0]["report"]["hosts"].as_array().unwrap().len(),
        2
    );

    // A run of a branch production does not accept: its production job fails with why,
    // before anything is asked of anyone.
    crate::support::git(&repo_dir, &["checkout", "-q", "-b", "feature/x"]);
    crate::support::git(
        &repo_dir,
        &["commit", "-q", "--allow-empty", "-m", "feature"],
    );
    let id = admin.trigger("shop", json!({ "ref": "feature/x" }));
    let run = server.wait_run(id, Duration::from_secs(120));
    assert_eq!(run["status"], "failure", "{run:#}");
    let (_, jobs) = admin.get(&format!("/api/v1/runs/{id}/jobs"));
    let production = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["key"] == "production")
        .unwrap();
    assert_eq!(production["status"], "failure", "{jobs:#}");
    assert!(
        production["reason"].as_str().unwrap_or_default().contains(
            "accepts deployments from branches `main`, `release/*` only; this run is on `feature/x`"
        ),
        "{production:#}"
    );
    for port in &ports[1..] {
        assert_eq!(version_on(*port).as_deref(), Some(number.as_str()));
    }
}

#[test]
fn deploys_to_ssh_hosts_from_sorat_yaml_and_their_services_outlive_the_server() {
    let temp = tempfile::tempdir().unwrap();
    let sshd = crate::sshd::Sshd::start();
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let targets: String = ports
        .iter()
        .enumerate()
        .map(|(i, port)| ssh_target_yaml(&sshd, i, &format!("port: {port}")))
        .collect();
    let config = format!(
        "  []\nenvironments:\n  remote:\n    targets:\n{targets}    service: {{ command: exec python3 app.py, stop_grace: 5s }}\n    health: {{ http: {{ path: /healthz }}, interval: 100ms, timeout: 15s }}\n    strategy: all-at-once\n"
    );
    let mut server = Server::start(temp.path(), "", &config);
    let admin = server.admin();
    publish(&admin, "1");
    publish(&admin, "2");
    for version in ["1", "2"] {
        let (code, out) =
            server.cli_text(&["deploy", "remote", "--artifact", &format!("app@{version}")]);
        assert_eq!(
            code,
            Some(0),
            "{out}\n{}\n{}",
            server.log_text(),
            sshd.log()
        );
        for port in &ports {
            assert_eq!(version_on(*port).as_deref(), Some(version), "{out}");
        }
    }
    // What the services on the hosts write reaches the environment's log, tagged.
    let started = Instant::now();
    loop {
        let (_, logs) = admin.get("/api/v1/environments/remote/logs");
        let found = logs["lines"].as_array().into_iter().flatten().any(|line| {
            line["host"] == "web-0"
                && line["release"] == 2
                && line["line"]
                    .as_str()
                    .is_some_and(|text| text.starts_with("serving version 2 on"))
        });
        if found {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{logs:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, table) = server.cli_text(&["releases", "remote", "--history"]);
    assert_eq!(code, Some(0), "{table}");
    assert!(table.contains("web-1"), "{table}");
    assert!(table.contains("*   2 app@2"), "{table}");
    assert!(table.contains("deploy"), "{table}");
    let (code, out) = server.cli_text(&["rollback", "remote"]);
    assert_eq!(code, Some(0), "{out}");
    for port in &ports {
        assert_eq!(version_on(*port).as_deref(), Some("1"), "{out}");
    }
    // The services run on the hosts, not under Sorat: a server restart leaves them up, and
    // the new server sees what runs there.
    let pids = || -> Vec<String> {
        (0..2)
            .map(|i| {
                std::fs::read_to_string(sshd.hosts_dir().join(format!("web{i}/service/pid")))
                    .unwrap_or_default()
            })
            .collect()
    };
    let before = pids();
    server.terminate();
    for port in &ports {
        assert_eq!(version_on(*port).as_deref(), Some("1"));
    }
    server.spawn();
    let (status, environments) = admin.get("/api/v1/environments");
    assert_eq!(status, 200);
    let hosts = environments["environments"][0]["hosts"].as_array().unwrap();
    assert!(
        hosts
            .iter()
            .all(|host| host["kind"] == "ssh" && host["current"] == 1),
        "{environments:#}"
    );
    // Watched, not restarted: the same supervisors run.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pids(), before, "{}", server.log_text());
    assert!(
        server
            .log_text()
            .contains("the service runs on the host: watching it"),
        "{}",
        server.log_text()
    );
    let (code, out) = server.cli_text(&["deploy", "remote", "--artifact", "app@2"]);
    assert_eq!(code, Some(0), "{out}");
    for port in &ports {
        assert_eq!(version_on(*port).as_deref(), Some("2"), "{out}");
    }

    // The same hosts turn blue-green: the router takes the port the plain service held.
    let plain = std::fs::read_to_string(&server.config).unwrap();
    let mut slotted = plain.replace("strategy: all-at-once", "strategy: blue-green");
    for port in &ports {
        slotted = slotted.replace(
            &format!("port: {port} }}"),
            &format!("port: {port}, slots: [{}, {}] }}", free_port(), free_port()),
        );
    }
    let switch_config = |server: &mut Server, text: &str| {
        server.terminate();
        std::fs::write(&server.config, text).unwrap();
        server.spawn();
    };
    // Then back: the plain service takes the port from the router. Each time the unit that
    // gave the port up is stopped.
    for (config, version, given_up) in [(&slotted, "1", "service"), (&plain, "2", "router")] {
        switch_config(&mut server, config);
        let artifact = format!("app@{version}");
        let (code, out) = server.cli_text(&["deploy", "remote", "--artifact", &artifact]);
        assert_eq!(code, Some(0), "{out}\n{}", server.log_text());
        for (i, port) in ports.iter().enumerate() {
            assert_eq!(version_on(*port).as_deref(), Some(version), "{out}");
            let state = sshd.hosts_dir().join(format!("web{i}/{given_up}/state"));
            assert_eq!(std::fs::read_to_string(state).unwrap().trim(), "stopped");
        }
    }
    // The services' process groups go when `sshd` is dropped.
}

#[test]
fn deploys_through_an_agent_chosen_by_label() {
    let temp = tempfile::tempdir().unwrap();
    let port = free_port();
    let host_dir = temp.path().join("agent-host");
    let config = format!(
        "  []\nenvironments:\n  fleet:\n    targets:\n      - name: web-a\n        agent: {{ labels: [web], dir: {}, port: {port} }}\n    service:\n      command: echo \"greeting is $GREETING\"; exec python3 app.py\n      env: {{ GREETING: \"${{{{ secrets.GREETING }}}}\" }}\n      stop_grace: 5s\n    health: {{ http: {{ path: /healthz }}, interval: 100ms, timeout: 15s }}\n  lost:\n    targets:\n      - agent: {{ labels: [nowhere], dir: {}, port: {} }}\n    service: {{ command: exec python3 app.py }}\n",
        host_dir.display(),
        temp.path().join("lost").display(),
        free_port()
    );
    let server = Server::start(temp.path(), "", &config);
    let admin = server.admin();
    publish(&admin, "1");
    publish(&admin, "2");
    let secret = "open sesame 4711";
    let (status, _) = admin.put("/api/v1/secrets/GREETING", json!({ "value": secret }));
    assert_eq!(status, 204);
    let mut agent_process = crate::support::AgentProcess::start(
        &server,
        &server.token("web-agent", "agent"),
        "web-a",
        &["web"],
    );
    // The agent comes online with its first claim.
    let started = Instant::now();
    loop {
        let (_, agents) = admin.get("/api/v1/agents");
        if agents.to_string().contains("web-a") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{agents:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for version in ["1", "2"] {
        let (code, out) =
            server.cli_text(&["deploy", "fleet", "--artifact", &format!("app@{version}")]);
        assert_eq!(code, Some(0), "{out}\n{}", server.log_text());
        assert_eq!(version_on(port).as_deref(), Some(version), "{out}");
        // The deploy's steps are shown as they happen, each once, before the report.
        for step in [
            format!("  deploy of release {version} (app@{version}) to 1 host(s) starts\n"),
            format!("  web-a: release {version} prepared in "),
            format!("  web-a: serves release {version} (switch "),
            "  deploy ended: succeeded\n".to_owned(),
        ] {
            assert_eq!(out.matches(&step).count(), 1, "{step:?} in\n{out}");
        }
    }
    // The steps through the API: numbered, and asked for after a number.
    let (status, steps) = admin.get("/api/v1/environments/fleet/progress?after=0");
    assert_eq!(status, 200, "{steps}");
    let last = steps["last"].as_u64().unwrap();
    assert_eq!(
        steps["steps"].as_array().unwrap().len() as u64,
        last,
        "{steps:#}"
    );
    let (_, tail) = admin.get(&format!(
        "/api/v1/environments/fleet/progress?after={}",
        last - 1
    ));
    assert_eq!(
        tail["steps"][0]["message"], "deploy ended: succeeded",
        "{tail:#}"
    );
    assert_eq!(tail["steps"][0]["seq"], last, "{tail:#}");
    let (status, _) = admin.get("/api/v1/environments/fleet/progress?before=3");
    assert_eq!(status, 400);
    // The agent keeps the host's folder: releases, current, release.json.
    assert_eq!(
        std::fs::read_link(host_dir.join("current")).unwrap(),
        std::path::Path::new("releases/2")
    );
    let (code, out) = server.cli_text(&["rollback", "fleet"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(version_on(port).as_deref(), Some("1"), "{out}");
    assert!(
        out.contains("  web-a: back on release 1 (rollback_switch "),
        "{out}"
    );
    assert!(out.contains("  rollback ended: succeeded\n"), "{out}");
    // The service's state is read from the agent now and then: it reaches `running`.
    let started = Instant::now();
    let environments = loop {
        let (_, environments) = admin.get("/api/v1/environments");
        if environments["environments"][0]["hosts"][0]["service"]["state"] == "running"
            || started.elapsed() > Duration::from_secs(10)
        {
            break environments;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let fleet = &environments["environments"][0]["hosts"][0];
    assert_eq!(fleet["kind"], "agent", "{environments:#}");
    assert_eq!(fleet["current"], 1, "{environments:#}");
    assert_eq!(fleet["service"]["state"], "running", "{environments:#}");
    let (code, table) = server.cli_text(&["releases", "fleet"]);
    assert_eq!(code, Some(0), "{table}");
    assert!(table.contains("*   1 app@1"), "{table}");

    // What the services wrote on the agent's host reaches the environment's log, tagged
    // with the target's name and the release.
    let started = Instant::now();
    let lines = loop {
        let (_, logs) = admin.get("/api/v1/environments/fleet/logs");
        let lines = logs["lines"].as_array().cloned().unwrap_or_default();
        let complete = [1, 2].iter().all(|release| {
            lines.iter().any(|line| {
                line["host"] == "web-a"
                    && line["release"] == *release
                    && line["stream"] == "stdout"
                    && line["line"]
                        .as_str()
                        .unwrap_or_default()
                        .starts_with(&format!("serving version {release} on {port}"))
            })
        });
        if complete || started.elapsed() > Duration::from_secs(10) {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        lines.iter().any(|line| line["release"] == 2),
        "{lines:#?}\n{}",
        server.log_text()
    );
    assert!(lines.iter().any(|line| line["release"] == 1), "{lines:#?}");
    // The service got its secret; the agent's own log has the line, masked.
    let greeting = reqwest::blocking::get(format!("http://127.0.0.1:{port}/greeting"))
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(greeting, secret);
    let agent_log = std::fs::read_to_string(&agent_process.log).unwrap();
    assert!(agent_log.contains("greeting is ***"), "{agent_log}");
    assert!(!agent_log.contains("sesame"), "{agent_log}");
    // Only agents send lines, in the documented shape.
    let agent = server.client(&server.token("another-agent", "agent"));
    let (status, body) = admin.post(
        "/api/v1/agent/lines",
        json!({ "name": "web-a", "lines": [] }),
    );
    assert_eq!(status, 403, "{body}");
    let line =
        |stream: &str| json!({ "host": "web-a", "release": 1, "stream": stream, "line": "x" });
    let (status, body) = agent.post(
        "/api/v1/agent/lines",
        json!({ "name": "web-a", "lines": [line("stdin")] }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("`stdout` or `stderr`"), "{body}");
    let many: Vec<Value> = (0..1001).map(|_| line("stdout")).collect();
    let (status, body) = agent.post(
        "/api/v1/agent/lines",
        json!({ "name": "web-a", "lines": many }),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = agent.post(
        "/api/v1/agent/lines",
        json!({ "name": "web-a", "lines": [line("stdout")], "extra": 1 }),
    );
    assert_eq!(status, 422, "{body}");
    // A host no agent target of that agent has: counted, not kept.
    let (status, body) = agent.post(
        "/api/v1/agent/lines",
        json!({ "name": "web-a", "lines": [{ "host": "nobody", "release": 1, "stream": "stdout", "line": "x" }] }),
    );
    assert_eq!((status, body["ignored"].as_u64()), (200, Some(1)), "{body}");

    // No agent has the labels: the deploy is refused, saying so, and nothing changes.
    let (status, body) = admin.post(
        "/api/v1/environments/lost/deploy",
        json!({ "artifact": "app@1" }),
    );
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no online agent has the labels `nowhere`"),
        "{body}"
    );

    // The agent dies: its service's state turns `unknown`, saying why, rather than staying
    // `running` (the server waits 10 s for an answer).
    let service_of = || {
        let (_, environments) = admin.get("/api/v1/environments");
        environments["environments"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|environment| environment["name"] == "fleet")
            .map(|environment| environment["hosts"][0]["service"].clone())
            .unwrap_or_default()
    };
    assert_eq!(service_of()["state"], "running", "{}", service_of());
    agent_process.kill9();
    let started = Instant::now();
    let service = loop {
        let service = service_of();
        if service["state"] == "unknown" {
            break service;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "{service}\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        service["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("agent `web-a` did not answer within 10s"),
        "{service}"
    );
    // The list still answers, in a few seconds, with why the host's releases are missing.
    let (status, environments) = admin.get("/api/v1/environments");
    assert_eq!(status, 200);
    let fleet = environments["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|environment| environment["name"] == "fleet")
        .unwrap();
    assert_eq!(
        fleet["hosts"][0]["error"], "the host did not answer within 5s",
        "{fleet:#}"
    );
    assert_eq!(fleet["hosts"][0]["current"], Value::Null, "{fleet:#}");
}

/// Blue-green on an agent's host: the agent starts each release in the idle slot, checks it
/// there and switches its router; a client asking the whole time gets every answer, and a
/// rollback within the scale-down delay switches back to the release still running.
#[test]
fn blue_green_through_an_agent() {
    let temp = tempfile::tempdir().unwrap();
    let (port, blue, green) = (free_port(), free_port(), free_port());
    let host_dir = temp.path().join("agent-host");
    let config = format!(
        "  []\nenvironments:\n  fleet:\n    targets:\n      - name: web-a\n        agent: {{ labels: [web], dir: {}, port: {port}, slots: [{blue}, {green}] }}\n    service:\n      command: echo \"greeting is $GREETING\"; exec python3 app.py\n      env: {{ GREETING: \"${{{{ secrets.GREETING }}}}\" }}\n      stop_grace: 5s\n    health: {{ http: {{ path: /healthz }}, interval: 100ms, timeout: 15s }}\n    strategy: {{ blue_green: {{ scale_down_delay: 10m }} }}\n",
        host_dir.display(),
    );
    let server = Server::start(temp.path(), "", &config);
    let admin = server.admin();
    publish(&admin, "1");
    publish(&admin, "2");
    let secret = "blue green sesame";
    let (status, _) = admin.put("/api/v1/secrets/GREETING", json!({ "value": secret }));
    assert_eq!(status, 204);
    let agent = crate::support::AgentProcess::start(
        &server,
        &server.token("web-agent", "agent"),
        "web-a",
        &["web"],
    );
    let started = Instant::now();
    while !admin.get("/api/v1/agents").1.to_string().contains("web-a") {
        assert!(started.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(100));
    }
    let deploy = |version: &str| {
        admin.post(
            "/api/v1/environments/fleet/deploy",
            json!({ "artifact": format!("app@{version}") }),
        )
    };
    let (status, body) = deploy("1");
    assert_eq!(status, 200, "{body:#}\n{}", server.log_text());
    assert_eq!(version_on(port).as_deref(), Some("1"));
    assert_eq!(
        version_on(blue).as_deref(),
        Some("1"),
        "release 1 runs in blue"
    );

    // A client asks all along the deploy of 2 and the rollback.
    let asker = Asker::start(port);
    std::thread::sleep(Duration::from_millis(200));
    let (status, body) = deploy("2");
    assert_eq!(status, 200, "{body:#}\n{}", server.log_text());
    std::thread::sleep(Duration::from_millis(200));
    let (_, environments) = admin.get("/api/v1/environments");
    let slots = environments["environments"][0]["hosts"][0]["slots"].clone();
    assert_eq!(
        slots["serving"],
        json!({ "slot": "green", "release": 2 }),
        "{environments:#}"
    );
    assert_eq!(
        slots["standby"],
        json!({ "slot": "blue", "release": 1 }),
        "{environments:#}"
    );
    assert_eq!(
        std::fs::read_link(host_dir.join("current")).unwrap(),
        std::path::Path::new("releases/2")
    );
    let (status, body) = admin.post("/api/v1/environments/fleet/rollback", json!({}));
    assert_eq!(status, 200, "{body:#}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(asker.answers(), ["1", "2", "1"]);
    // The rollback switched back to the release 1 still running: it started once (the
    // agent sends its lines within 200 ms).
    std::thread::sleep(Duration::from_millis(600));
    let (_, logs) = admin.get("/api/v1/environments/fleet/logs");
    let starts = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|line| {
            line["line"]
                .as_str()
                .unwrap_or_default()
                .starts_with("serving version 1 ")
        })
        .count();
    assert_eq!(starts, 1, "{logs:#}");
    let (_, environments) = admin.get("/api/v1/environments");
    let slots = environments["environments"][0]["hosts"][0]["slots"].clone();
    assert_eq!(
        slots["serving"],
        json!({ "slot": "blue", "release": 1 }),
        "{environments:#}"
    );
    // Each slot's service got the secret; the agent's own log has their lines masked.
    let greeting = reqwest::blocking::get(format!("http://127.0.0.1:{port}/greeting"))
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(greeting, secret);
    let agent_log = std::fs::read_to_string(&agent.log).unwrap();
    assert_eq!(
        agent_log.matches("greeting is ***").count(),
        2,
        "{agent_log}"
    );
    assert!(!agent_log.contains("sesame"), "{agent_log}");
}

/// A blue-green SSH target whose `router` is built for another architecture than the host's
/// (an ELF header for aarch64 here): the deploy is refused, saying what the host runs and what
/// to give, before the release starts there; nothing is uploaded as the router.
#[test]
fn an_ssh_host_that_cannot_run_the_router_is_refused_before_the_release_starts() {
    let temp = tempfile::tempdir().unwrap();
    let sshd = crate::sshd::Sshd::start();
    let mut head = vec![0u8; 64];
    head[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    head[16..18].copy_from_slice(&3u16.to_le_bytes());
    head[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    head[20..24].copy_from_slice(&1u32.to_le_bytes());
    let router = temp.path().join("sorat-aarch64");
    std::fs::write(&router, &head).unwrap();
    let (port, blue, green) = (free_port(), free_port(), free_port());
    let target = ssh_target_yaml(
        &sshd,
        0,
        &format!(
            "port: {port}, slots: [{blue}, {green}], router: {}",
            router.display()
        ),
    );
    let config = format!(
        "  []\nenvironments:\n  remote:\n    targets:\n{target}    service: {{ command: exec python3 app.py }}\n    health: {{ http: {{ path: /healthz }}, interval: 100ms, timeout: 5s }}\n    strategy: blue-green\n"
    );
    let server = Server::start(temp.path(), "", &config);
    let admin = server.admin();
    publish(&admin, "1");
    let (status, body) = admin.post(
        "/api/v1/environments/remote/deploy",
        json!({ "artifact": "app@1" }),
    );
    let text = body.to_string();
    assert_eq!(
        (status, &body["outcome"]),
        (409, &json!("aborted")),
        "{body:#}"
    );
    assert_eq!(body["hosts"][0]["outcome"], "preview_failed", "{body:#}");
    let here = format!("the host runs Linux {}", std::env::consts::ARCH);
    assert!(text.contains(&here), "{body:#}");
    assert!(
        text.contains(&format!(
            "but the router {} is built for Linux aarch64: give the target `router:`",
            router.display()
        )),
        "{body:#}"
    );
    let host = sshd.hosts_dir().join("web0");
    assert!(!host.join("current").exists(), "nothing serves");
    let uploaded = std::fs::read_dir(host.join("router"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(uploaded, 0, "no router was uploaded");
    assert!(version_on(port).is_none() && version_on(blue).is_none());
}

/// Blue-green on two SSH hosts: Sorat uploads its own executable to each host and runs it
/// there as the router, under the host's supervisor. Each release starts in the idle slot
/// and is checked there; a client asking both hosts the whole time gets every answer; a
/// rollback within the scale-down delay switches back to the release still running; a
/// release failing in its slot never serves; a server restart finds the slots and the
/// router running and watches them.
#[test]
fn blue_green_on_ssh_hosts_through_sorats_router_there() {
    let temp = tempfile::tempdir().unwrap();
    let sshd = crate::sshd::Sshd::start();
    let hosts: Vec<[u16; 3]> = (0..2)
        .map(|_| [free_port(), free_port(), free_port()])
        .collect();
    let targets: String = hosts
        .iter()
        .enumerate()
        .map(|(i, [port, blue, green])| {
            ssh_target_yaml(&sshd, i, &format!("port: {port}, slots: [{blue}, {green}]"))
        })
        .collect();
    let config = format!(
        "  []\nenvironments:\n  remote:\n    targets:\n{targets}    service: {{ command: exec python3 app.py, stop_grace: 5s }}\n    health: {{ http: {{ path: /healthz }}, interval: 100ms, timeout: 5s }}\n    strategy: {{ blue_green: {{ scale_down_delay: 10m }} }}\n"
    );
    let mut server = Server::start(temp.path(), "", &config);
    let admin = server.admin();
    for version in ["1", "2", "broken"] {
        publish(&admin, version);
    }
    let host_dir = |i: usize| sshd.hosts_dir().join(format!("web{i}"));
    let read = |path: std::path::PathBuf| std::fs::read_to_string(path).unwrap_or_default();
    let deploy = |version: &str| {
        admin.post(
            "/api/v1/environments/remote/deploy",
            json!({ "artifact": format!("app@{version}") }),
        )
    };
    let slots_of = |i: usize| {
        let (_, environments) = admin.get("/api/v1/environments");
        environments["environments"][0]["hosts"][i]["slots"].clone()
    };

    let (status, body) = deploy("1");
    assert_eq!(
        status,
        200,
        "{body:#}\n{}\n{}",
        server.log_text(),
        sshd.log()
    );
    for (i, [port, blue, _]) in hosts.iter().enumerate() {
        assert_eq!(version_on(*port).as_deref(), Some("1"));
        assert_eq!(version_on(*blue).as_deref(), Some("1"), "release 1 in blue");
        // The router is Sorat's own executable, uploaded once, named by its digest.
        let uploaded: Vec<String> = std::fs::read_dir(host_dir(i).join("router"))
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("sorat-"))
            .collect();
        assert_eq!(uploaded.len(), 1, "{uploaded:?}");
        let ours = std::fs::read(env!("CARGO_BIN_EXE_sorat")).unwrap();
        assert!(
            std::fs::read(host_dir(i).join("router").join(&uploaded[0])).unwrap() == ours,
            "the uploaded router is not this sorat"
        );
    }
    let router_pids: Vec<String> = (0..2)
        .map(|i| read(host_dir(i).join("router/router.pid")))
        .collect();

    // Clients ask both hosts all along the deploy of 2 and the rollback.
    let askers: Vec<Asker> = hosts
        .iter()
        .map(|[port, _, _]| Asker::start(*port))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let (status, body) = deploy("2");
    assert_eq!(status, 200, "{body:#}\n{}", server.log_text());
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..2 {
        let slots = slots_of(i);
        assert_eq!(
            slots["serving"],
            json!({ "slot": "green", "release": 2 }),
            "{slots:#}"
        );
        assert_eq!(
            slots["standby"],
            json!({ "slot": "blue", "release": 1 }),
            "{slots:#}"
        );
        assert_eq!(
            std::fs::read_link(host_dir(i).join("current")).unwrap(),
            std::path::Path::new("releases/2")
        );
    }
    let blue_pids: Vec<String> = (0..2)
        .map(|i| read(host_dir(i).join("slots/blue/pid")))
        .collect();
    let (status, body) = admin.post("/api/v1/environments/remote/rollback", json!({}));
    assert_eq!(status, 200, "{body:#}\n{}", server.log_text());
    std::thread::sleep(Duration::from_millis(200));
    for asker in askers {
        assert_eq!(asker.answers(), ["1", "2", "1"]);
    }
    // The rollback switched back to release 1, still running: its supervisors are the same.
    for (i, blue_pid) in blue_pids.iter().enumerate() {
        assert_eq!(&read(host_dir(i).join("slots/blue/pid")), blue_pid);
        assert_eq!(
            slots_of(i)["serving"],
            json!({ "slot": "blue", "release": 1 })
        );
    }

    // A release that fails in its slot never serves; the hosts stay on 1.
    let (status, body) = deploy("broken");
    assert_eq!(status, 409, "{body:#}");
    assert_eq!(body["outcome"], "aborted", "{body:#}");
    for (i, [port, _, _]) in hosts.iter().enumerate() {
        assert_eq!(body["hosts"][i]["outcome"], "preview_failed", "{body:#}");
        assert_eq!(version_on(*port).as_deref(), Some("1"));
    }

    // The slots and the routers run on the hosts: a server restart leaves them serving, and
    // the new server watches them rather than starting anything.
    server.terminate();
    for [port, _, _] in &hosts {
        assert_eq!(version_on(*port).as_deref(), Some("1"));
    }
    server.spawn();
    let started = Instant::now();
    while server
        .log_text()
        .matches("the slots run on the host: watching them")
        .count()
        < 2
    {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (i, (router_pid, blue_pid)) in router_pids.iter().zip(&blue_pids).enumerate() {
        assert_eq!(&read(host_dir(i).join("router/router.pid")), router_pid);
        assert_eq!(&read(host_dir(i).join("slots/blue/pid")), blue_pid);
        assert_eq!(
            slots_of(i)["serving"],
            json!({ "slot": "blue", "release": 1 })
        );
    }
    let (status, body) = deploy("2");
    assert_eq!(status, 200, "{body:#}\n{}", server.log_text());
    for [port, _, green] in &hosts {
        assert_eq!(version_on(*port).as_deref(), Some("2"));
        assert_eq!(version_on(*green).as_deref(), Some("2"));
    }

    // A router killed with SIGKILL is started again by its supervisor on the host, and
    // routes as its file says.
    let [port, _, _] = hosts[0];
    let killed = read(host_dir(0).join("router/router.pid"));
    let status = Command::new("kill")
        .args(["-KILL", killed.trim()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    while version_on(port).as_deref() != Some("2") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the router did not come back: {}",
            read(host_dir(0).join("router/log"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(read(host_dir(0).join("router/router.pid")), killed);
    // The routers and slots go when `sshd` is dropped.
}

/// A service's environment may name a secret: the service gets its value, the release
/// record keeps the reference, and the value is masked in the service's lines. A secret
/// that is not set stops the deploy before anything changes, saying which.
#[test]
fn service_secrets_reach_the_service_but_no_record_or_log() {
    let temp = tempfile::tempdir().unwrap();
    let port = free_port();
    let host_dir = temp.path().join("host");
    let config = format!(
        "  []\nenvironments:\n  web:\n    targets: [ {{ local: {{ dir: {}, port: {port} }} }} ]\n    service:\n      command: echo \"greeting is $GREETING\"; exec python3 app.py\n      env: {{ GREETING: \"${{{{ secrets.GREETING }}}}\" }}\n    health: {{ http: {{ path: /healthz }}, interval: 100ms, timeout: 15s }}\n",
        host_dir.display()
    );
    let server = Server::start(temp.path(), "", &config);
    let admin = server.admin();
    publish(&admin, "1");
    let deploy = || {
        admin.post(
            "/api/v1/environments/web/deploy",
            json!({ "artifact": "app@1" }),
        )
    };
    // Not set yet: refused, nothing started.
    let (status, body) = deploy();
    assert_ne!(status, 200, "{body:#}");
    assert!(
        body.to_string()
            .contains("`service.env.GREETING` needs the secret `GREETING`, which is not set"),
        "{body:#}"
    );
    assert!(version_on(port).is_none());
    assert!(
        !host_dir.join("releases/1").exists(),
        "nothing was prepared"
    );

    let secret = "open sesame 4711";
    let (status, _) = admin.put("/api/v1/secrets/GREETING", json!({ "value": secret }));
    assert_eq!(status, 204);
    let (status, body) = deploy();
    assert_eq!(status, 200, "{body:#}\n{}", server.log_text());
    let greeting = reqwest::blocking::get(format!("http://127.0.0.1:{port}/greeting"))
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(greeting, secret);
    let record = std::fs::read_to_string(host_dir.join("releases/1/release.json")).unwrap();
    assert!(record.contains("${{ secrets.GREETING }}"), "{record}");
    assert!(!record.contains("sesame"), "{record}");
    // The line the service printed is kept masked, in the API and in Sorat's own log.
    let started = Instant::now();
    let line = loop {
        let (_, logs) = admin.get("/api/v1/environments/web/logs");
        let found = logs["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|line| {
                line["line"]
                    .as_str()
                    .filter(|text| text.starts_with("greeting is"))
                    .map(str::to_owned)
            });
        if let Some(found) = found {
            break found;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{logs:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(line, "greeting is ***");
    assert!(server.log_text().contains("greeting is ***"));
    assert!(!server.log_text().contains("sesame"));
}
