//! The artifact repository through a server: `publish-artifact` from a job on the local
//! agent, listing, download with `sorat artifacts get`, signatures, immutability, and a
//! tampered blob found by `sorat artifacts verify`.

use std::time::Duration;

use serde_json::json;

use crate::support::{ADMIN, Server, git, repo_with};

const PIPELINE: &str = r#"on: push
jobs:
  build:
    steps:
      - run: |
          mkdir -p dist/bin
          echo "calc ${{ github.sha }}" > dist/bin/calc
          chmod +x dist/bin/calc
          echo "notes" > dist/NOTES.txt
      - id: publish
        uses: publish-artifact
        with:
          name: calc
          path: dist
          version: "1.0.0"
      - run: echo "digest ${{ steps.publish.outputs.digest }}"
"#;

#[test]
fn published_artifacts_are_signed_immutable_and_verified() {
    let temp = tempfile::tempdir().unwrap();
    let repo = repo_with(temp.path(), PIPELINE);
    let server = Server::start(
        temp.path(),
        "",
        &format!("  - name: shop\n    repo: {}\n", repo.display()),
    );
    let admin = server.admin();
    let id = admin.trigger("shop", json!({}));
    let run = server.wait_run(id, Duration::from_secs(60));
    assert_eq!(run["status"], "success", "{run:#}");

    let (status, list) = admin.get("/api/v1/artifacts?name=calc");
    assert_eq!(status, 200);
    let artifact = &list["artifacts"][0];
    assert_eq!(artifact["name"], "calc");
    assert_eq!(artifact["version"], "1.0.0");
    assert_eq!(artifact["metadata"]["run"], id);
    assert_eq!(artifact["metadata"]["job"], "build");
    assert_eq!(artifact["metadata"]["publisher"], "local-agent");
    let paths: Vec<&str> = artifact["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 2, "{artifact:#}");
    assert!(
        paths.contains(&"bin/calc") && paths.contains(&"NOTES.txt"),
        "{paths:?}"
    );
    let (_, log) = admin.text(&format!("/api/v1/runs/{id}/jobs/build/logs"));
    assert!(
        log.contains(&format!("digest {}", artifact["digest"].as_str().unwrap())),
        "{log}"
    );

    // Download: every file, checked, with its mode.
    let out = temp.path().join("got");
    let got = server.cli(&[
        "artifacts",
        "get",
        "calc@1.0.0",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    assert_eq!(
        std::fs::read_to_string(out.join("bin/calc")).unwrap(),
        format!("calc {sha}\n")
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(out.join("bin/calc"))
            .unwrap()
            .permissions()
            .mode()
            & 0o111,
        0o111
    );
    let verified = server.cli(&["artifacts", "verify", "calc@1.0.0"]);
    assert_eq!(
        verified.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    let listed = server.cli(&["artifacts", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("1.0.0"));

    // The same version again with other content (a new commit changes bin/calc): refused,
    // and the job says why.
    std::fs::write(repo.join("README.md"), "changed\n").unwrap();
    git(&repo, &["commit", "-qam", "change"]);
    let again = admin.trigger("shop", json!({}));
    let run = server.wait_run(again, Duration::from_secs(60));
    assert_eq!(run["status"], "failure", "{run:#}");
    let (_, log) = admin.text(&format!("/api/v1/runs/{again}/jobs/build/logs"));
    assert!(log.contains("409"), "{log}");
    assert_eq!(
        admin.get("/api/v1/artifacts?name=calc").1["artifacts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A blob changed on disk is found by verification (and by downloads).
    let blobs = temp.path().join("data/artifacts");
    let mut changed = false;
    for entry in walk(&blobs) {
        if std::fs::read(&entry).is_ok_and(|bytes| bytes == b"notes\n") {
            std::fs::write(&entry, b"NOTES\n").unwrap();
            changed = true;
        }
    }
    assert!(
        changed,
        "found the blob of NOTES.txt under {}",
        blobs.display()
    );
    let verified = server.cli(&["artifacts", "verify", "calc@1.0.0"]);
    let stdout = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(verified.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("NOTES.txt"), "{stdout}");

    // Uploading bytes that do not match their digest is refused.
    let response = admin
        .http
        .put(format!(
            "{}/api/v1/artifacts/blobs/sha256:{}",
            server.url,
            "0".repeat(64)
        ))
        .bearer_auth(ADMIN)
        .body("not those bytes")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    // Viewers cannot publish.
    let viewer = server.client(&server.token("vic", "viewer"));
    let (status, _) = viewer.post(
        "/api/v1/artifacts",
        json!({ "name": "x", "version": "1", "files": [], "attachments": [], "metadata": {}, "moving": false }),
    );
    assert_eq!(status, 403);
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
