//! `remote_heads` against real repositories made with the git CLI, and `changes`.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use sorat_trigger::poll::{self, PollError, RefChange};

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.test")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.test")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn commit(dir: &Path, file: &str, message: &str) -> String {
    std::fs::write(dir.join(file), message).unwrap();
    git(dir, &["add", file]);
    git(dir, &["commit", "-q", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

/// A repository with `main`, `feature`, a lightweight tag and an annotated tag.
struct Fixture {
    _temp: tempfile::TempDir,
    repo: std::path::PathBuf,
    first: String,
    second: String,
    feature: String,
    annotated_tag_object: String,
}

fn fixture() -> Fixture {
    let temp = tempfile::tempdir().unwrap();
    let repo = temp.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let first = commit(&repo, "a.txt", "first");
    git(&repo, &["tag", "light", &first]);
    let second = commit(&repo, "b.txt", "second");
    git(&repo, &["tag", "-a", "v1.0", "-m", "release 1.0"]);
    let annotated_tag_object = git(&repo, &["rev-parse", "refs/tags/v1.0"]);
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    let feature = commit(&repo, "c.txt", "feature work");
    git(&repo, &["checkout", "-q", "main"]);
    Fixture {
        _temp: temp,
        repo,
        first,
        second,
        feature,
        annotated_tag_object,
    }
}

fn as_map(refs: &[(String, String)]) -> HashMap<String, String> {
    refs.iter().cloned().collect()
}

#[tokio::test]
async fn lists_branches_and_tags_with_annotated_tags_peeled() {
    let fixture = fixture();
    let heads = poll::remote_heads(fixture.repo.to_str().unwrap())
        .await
        .unwrap();
    let map = as_map(&heads);
    assert_eq!(heads.len(), 4, "{heads:?}");
    assert_eq!(map["refs/heads/main"], fixture.second);
    assert_eq!(map["refs/heads/feature"], fixture.feature);
    assert_eq!(map["refs/tags/light"], fixture.first);
    // The commit, not the tag object.
    assert_eq!(map["refs/tags/v1.0"], fixture.second);
    assert_ne!(fixture.annotated_tag_object, fixture.second);
    assert!(heads.iter().all(|(name, _)| !name.ends_with("^{}")));
}

#[tokio::test]
async fn file_urls_work_too() {
    let fixture = fixture();
    let url = format!("file://{}", fixture.repo.display());
    let heads = poll::remote_heads(&url).await.unwrap();
    assert_eq!(as_map(&heads)["refs/heads/main"], fixture.second);
}

#[tokio::test]
async fn a_second_poll_reports_what_moved() {
    let fixture = fixture();
    let url = fixture.repo.to_str().unwrap().to_string();
    let before = as_map(&poll::remote_heads(&url).await.unwrap());

    let third = commit(&fixture.repo, "d.txt", "third");
    git(&fixture.repo, &["branch", "new-branch", &fixture.first]);
    git(&fixture.repo, &["tag", "-a", "v2.0", "-m", "release 2.0"]);
    git(&fixture.repo, &["branch", "-D", "feature"]);

    let after = poll::remote_heads(&url).await.unwrap();
    let mut changes = poll::changes(&before, &after);
    changes.sort_by(|left, right| left.git_ref.cmp(&right.git_ref));
    assert_eq!(
        changes,
        [
            RefChange {
                git_ref: "refs/heads/main".into(),
                before: Some(fixture.second.clone()),
                after: third.clone(),
            },
            RefChange {
                git_ref: "refs/heads/new-branch".into(),
                before: None,
                after: fixture.first.clone(),
            },
            RefChange {
                git_ref: "refs/tags/v2.0".into(),
                before: None,
                after: third,
            },
        ]
    );
    // Nothing moved since: nothing to report.
    assert!(poll::changes(&as_map(&after), &after).is_empty());
}

#[tokio::test]
async fn a_missing_repository_is_an_error_with_git_s_words() {
    let temp = tempfile::tempdir().unwrap();
    let missing = temp.path().join("nothing-here");
    let error = poll::remote_heads(missing.to_str().unwrap())
        .await
        .unwrap_err();
    let PollError::Failed { stderr, .. } = &error else {
        panic!("{error:?}");
    };
    assert!(!stderr.is_empty());
}

#[tokio::test]
async fn option_like_and_empty_urls_are_refused() {
    for url in ["--upload-pack=touch /tmp/x", "-h", ""] {
        let error = poll::remote_heads(url).await.unwrap_err();
        assert!(
            matches!(error, PollError::InvalidUrl { .. }),
            "{url}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_remote_that_never_answers_times_out() {
    // A listener on loopback that never accepts: the kernel completes the connection, git
    // sends its request and waits for an answer that never comes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("git://{}/repo.git", listener.local_addr().unwrap());
    let started = std::time::Instant::now();
    let result = poll::remote_heads_with_timeout(&url, std::time::Duration::from_millis(500)).await;
    assert!(
        matches!(result, Err(PollError::TimedOut { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    drop(listener);
}

#[test]
fn ls_remote_output_is_read_strictly() {
    let sha = "1111111111111111111111111111111111111111";
    let peeled = "2222222222222222222222222222222222222222";
    let text =
        format!("{sha}\trefs/heads/main\n{sha}\trefs/tags/v1\n{peeled}\trefs/tags/v1^{{}}\n");
    assert_eq!(
        poll::parse_ls_remote(&text).unwrap(),
        [
            ("refs/heads/main".to_string(), sha.to_string()),
            ("refs/tags/v1".to_string(), peeled.to_string()),
        ]
    );
    let error =
        poll::parse_ls_remote(&format!("{sha}\trefs/heads/main\nwarning: odd\n")).unwrap_err();
    assert!(
        matches!(error, PollError::BadOutput { line_number: 2, .. }),
        "{error:?}"
    );
}

#[test]
fn changes_ignores_deleted_refs_and_keeps_order() {
    let previous: HashMap<String, String> = [
        ("refs/heads/main".to_string(), "a".to_string()),
        ("refs/heads/gone".to_string(), "b".to_string()),
        ("refs/heads/same".to_string(), "c".to_string()),
    ]
    .into_iter()
    .collect();
    let current = vec![
        ("refs/tags/new".to_string(), "d".to_string()),
        ("refs/heads/same".to_string(), "c".to_string()),
        ("refs/heads/main".to_string(), "e".to_string()),
    ];
    assert_eq!(
        poll::changes(&previous, &current),
        [
            RefChange {
                git_ref: "refs/tags/new".into(),
                before: None,
                after: "d".into()
            },
            RefChange {
                git_ref: "refs/heads/main".into(),
                before: Some("a".into()),
                after: "e".into()
            },
        ]
    );
}
