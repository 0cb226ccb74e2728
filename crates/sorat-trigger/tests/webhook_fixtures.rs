//! Every webhook fixture in `shared/conformance/webhooks` (real payloads collected by the
//! Woodpecker project) through `detect`, `verify` and `parse`, one named test per file, with
//! the values read from each file by hand.
//!
//! Deliveries carry no signature in the fixtures: each test signs the body with a test secret
//! the way its forge does. Bitbucket's fixtures are not Sorat's to read (see `webhook`'s docs).
//! Where the shared folder is absent (a fresh clone), the tests say so and pass.

#![allow(clippy::print_stderr, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit as _, Mac as _};
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;
use sorat_pipeline::trigger::EventKind;
use sorat_trigger::webhook::{self, Forge, Parsed, TriggerEvent};

const SECRET: &[u8] = b"fixture secret";

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/webhooks")
}

fn forge_folder(forge: Forge) -> &'static str {
    match forge {
        Forge::GitHub => "github",
        Forge::GitLab => "gitlab",
        Forge::Gitea => "gitea",
        Forge::Forgejo => "forgejo",
    }
}

fn hex_hmac(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The headers the forge sends with `event`, signed over `body`.
fn delivery_headers(forge: Forge, event: &str, body: &[u8]) -> HeaderMap {
    let signature = hex_hmac(body);
    let pairs: Vec<(&str, String)> = match forge {
        Forge::GitHub => vec![
            ("X-GitHub-Event", event.into()),
            (
                "X-GitHub-Delivery",
                "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
            ),
            ("X-Hub-Signature-256", format!("sha256={signature}")),
        ],
        Forge::GitLab => vec![
            ("X-Gitlab-Event", event.into()),
            (
                "X-Gitlab-Token",
                String::from_utf8(SECRET.to_vec()).unwrap(),
            ),
        ],
        // Gitea also sends GitHub's and Gogs's headers; detection must not be fooled.
        Forge::Gitea => vec![
            ("X-Gitea-Event", event.into()),
            ("X-Gitea-Signature", signature.clone()),
            ("X-GitHub-Event", event.into()),
            ("X-Gogs-Event", event.into()),
            ("X-Hub-Signature-256", format!("sha256={signature}")),
        ],
        // Forgejo sends Gitea's headers too.
        Forge::Forgejo => vec![
            ("X-Forgejo-Event", event.into()),
            ("X-Forgejo-Signature", signature.clone()),
            ("X-Gitea-Event", event.into()),
            ("X-Gitea-Signature", signature.clone()),
            ("X-GitHub-Event", event.into()),
        ],
    };
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(&value).unwrap(),
        );
    }
    headers
}

/// Reads, detects, verifies and parses a fixture; `None` when the shared folder is absent.
fn parse_fixture(forge: Forge, file: &str, event: &str) -> Option<Parsed> {
    let path = fixtures_root()
        .join(forge_folder(forge))
        .join("fixtures")
        .join(file);
    if !fixtures_root().is_dir() {
        eprintln!(
            "skipped: {} is absent (the shared conformance folder is not checked out here)",
            fixtures_root().display()
        );
        return None;
    }
    let body = std::fs::read(&path).unwrap();
    let headers = delivery_headers(forge, event, &body);
    assert_eq!(webhook::detect(&headers).unwrap(), forge);
    webhook::verify(forge, &headers, &body, SECRET).unwrap();
    Some(webhook::parse(forge, &headers, &body).unwrap())
}

type Person = (
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

struct Push {
    git_ref: &'static str,
    sha: &'static str,
    before: Option<&'static str>,
    /// name, email, login
    author: Person,
    sender: Option<&'static str>,
    message_starts: &'static str,
    files: &'static [&'static str],
    complete: bool,
    repo: &'static str,
    clone_url: Option<&'static str>,
    link: Option<&'static str>,
}

struct Pr {
    number: u64,
    action: &'static str,
    forge_action: &'static str,
    title: &'static str,
    head_ref: &'static str,
    head_sha: &'static str,
    base_ref: &'static str,
    merged: bool,
    author: Person,
    sender: Option<&'static str>,
    repo: &'static str,
    link: Option<&'static str>,
}

enum Expect {
    Push(Push),
    Pr(Pr),
    Ignored(&'static str),
}

fn event_of(parsed: Parsed) -> TriggerEvent {
    match parsed {
        Parsed::Event(event) => *event,
        other => panic!("expected an event, got {other:?}"),
    }
}

fn person(author: &Option<webhook::Author>) -> (Option<&str>, Option<&str>, Option<&str>) {
    match author {
        Some(author) => (
            author.name.as_deref(),
            author.email.as_deref(),
            author.login.as_deref(),
        ),
        None => (None, None, None),
    }
}

fn check(forge: Forge, parsed: Parsed, expect: Expect) {
    match expect {
        Expect::Ignored(reason_part) => match parsed {
            Parsed::Ignored(reason) => assert!(
                reason.contains(reason_part),
                "reason `{reason}` lacks `{reason_part}`"
            ),
            other => panic!("expected Ignored, got {other:?}"),
        },
        Expect::Push(want) => {
            let event = event_of(parsed);
            assert_eq!(event.forge, forge);
            assert_eq!(event.kind, EventKind::Push);
            assert_eq!(event.git_ref, want.git_ref);
            assert_eq!(event.sha, want.sha);
            assert_eq!(event.before.as_deref(), want.before);
            assert!(!event.deleted);
            assert_eq!(person(&event.author), want.author);
            assert_eq!(event.sender.as_deref(), want.sender);
            let message = event.message.clone().unwrap_or_default();
            assert!(
                message.starts_with(want.message_starts),
                "message `{message}` does not start with `{}`",
                want.message_starts
            );
            assert_eq!(event.changed_files, want.files);
            assert_eq!(event.changed_files_complete, want.complete);
            assert_eq!(event.pull_request, None);
            assert_eq!(event.repo.full_name, want.repo);
            assert_eq!(event.repo.clone_url.as_deref(), want.clone_url);
            assert_eq!(event.link.as_deref(), want.link);
            assert!(event.starts_pipeline_by_default());
            let facts = event.facts();
            assert_eq!(facts.git_ref, want.git_ref);
            assert_eq!(facts.changed_files, want.files);
        }
        Expect::Pr(want) => {
            let event = event_of(parsed);
            assert_eq!(event.forge, forge);
            assert_eq!(event.kind, EventKind::PullRequest);
            let git_ref = match forge {
                Forge::GitLab => format!("refs/merge-requests/{}/head", want.number),
                _ => format!("refs/pull/{}/head", want.number),
            };
            assert_eq!(event.git_ref, git_ref);
            assert_eq!(event.sha, want.head_sha);
            assert_eq!(event.before, None);
            assert!(event.changed_files.is_empty());
            assert!(!event.changed_files_complete);
            assert_eq!(person(&event.author), want.author);
            assert_eq!(event.sender.as_deref(), want.sender);
            assert_eq!(event.repo.full_name, want.repo);
            assert_eq!(event.link.as_deref(), want.link);
            let pull_request = event.pull_request.clone().unwrap();
            assert_eq!(pull_request.number, want.number);
            assert_eq!(pull_request.action, want.action);
            assert_eq!(pull_request.forge_action, want.forge_action);
            assert_eq!(pull_request.title, want.title);
            assert_eq!(pull_request.head_ref, want.head_ref);
            assert_eq!(pull_request.head_sha, want.head_sha);
            assert_eq!(pull_request.base_ref, want.base_ref);
            assert_eq!(pull_request.merged, want.merged);
            let starts = matches!(want.action, "opened" | "synchronize" | "reopened");
            assert_eq!(event.starts_pipeline_by_default(), starts);
            assert_eq!(event.facts().base_branch, want.base_ref);
        }
    }
}

macro_rules! fixture_tests {
    ($($test:ident: $forge:ident $file:literal $event:literal => $expect:expr;)*) => {
        $(
            #[test]
            fn $test() {
                let Some(parsed) = parse_fixture(Forge::$forge, $file, $event) else {
                    return;
                };
                check(Forge::$forge, parsed, $expect);
            }
        )*

        /// Every fixture file named above, to check that none in the folder is left out.
        const COVERED: &[(Forge, &str)] = &[$((Forge::$forge, $file)),*];
    };
}

// ---------------------------------------------------------------------------------------
// Shared values of fixtures that describe the same pull request in several states.

const GITHUB_PR_1: Pr = Pr {
    number: 1,
    action: "opened",
    forge_action: "opened",
    title: "Some ned more AAAA",
    head_ref: "6543-patch-1",
    head_sha: "36b5813240a9d2daa29b05046d56a53e18f39a3e",
    base_ref: "main",
    merged: false,
    author: (None, None, Some("6543")),
    sender: Some("demoaccount2-commits"),
    repo: "6543/test_ci_tmp",
    link: None,
};

const GITHUB_PR_62: Pr = Pr {
    number: 62,
    action: "closed",
    forge_action: "closed",
    title: "Change file",
    head_ref: "anbraten-patch-3",
    head_sha: "c88b9ee719285134957cbc698c9b7ef9b78007bf",
    base_ref: "main",
    merged: false,
    author: (None, None, Some("anbraten")),
    sender: Some("anbraten"),
    repo: "anbraten/test-ready-release-go",
    link: Some("https://github.com/anbraten/test-ready-release-go/pull/62"),
};

const GITLAB_MR_3: Pr = Pr {
    number: 3,
    action: "edited",
    forge_action: "update",
    title: "Edit README for more text to read",
    head_ref: "real6543-main-patch-42541",
    head_sha: "2f7670508b771e7e77839402be8b34b13787aba8",
    base_ref: "main",
    merged: false,
    // GitLab hides the address as `[REDACTED]`, read as no address.
    author: (Some("6543"), None, Some("real6543")),
    sender: Some("real6543"),
    repo: "demoaccount2-commits-group/test_ci_tmp",
    link: Some("https://gitlab.com/demoaccount2-commits-group/test_ci_tmp/-/merge_requests/3"),
};

const GITLAB_MR_ANBRATEN_3: Pr = Pr {
    number: 3,
    action: "edited",
    forge_action: "update",
    title: "Update client.go 🎉",
    head_ref: "anbraten-main-patch-05373",
    head_sha: "c136499ec574e1034b24c5d306de9acda3005367",
    base_ref: "main",
    merged: false,
    author: (Some("Anbraten"), Some("some@mail.info"), Some("anbraten")),
    sender: Some("anbraten"),
    repo: "anbraten/woodpecker",
    link: Some("https://gitlab.com/anbraten/woodpecker/-/merge_requests/3"),
};

const GITLAB_MR_4: Pr = Pr {
    number: 4,
    action: "closed",
    forge_action: "close",
    title: "Add new file",
    head_ref: "patch-1",
    head_sha: "3e4db3586b65dd401de8c77b3ac343fd24cbf89b",
    base_ref: "main",
    merged: false,
    author: (Some("Anbraten"), None, Some("anbraten")),
    sender: Some("anbraten"),
    repo: "anbraten/woodpecker-test",
    link: Some("https://gitlab.com/anbraten/woodpecker-test/-/merge_requests/4"),
};

const GITLAB_MR_1: Pr = Pr {
    number: 1,
    action: "reopened",
    forge_action: "reopen",
    title: "Some ned more AAAA",
    head_ref: "6543-patch-1",
    head_sha: "36b5813240a9d2daa29b05046d56a53e18f39a3e",
    base_ref: "main",
    merged: false,
    author: (Some("6543"), None, Some("real6543")),
    sender: Some("real6543"),
    repo: "demoaccount2-commits-group/test_ci_tmp",
    link: Some("https://gitlab.com/demoaccount2-commits-group/test_ci_tmp/-/merge_requests/1"),
};

const GITEA_PR_7: Pr = Pr {
    number: 7,
    action: "labeled",
    forge_action: "label_updated",
    title: "somepull",
    head_ref: "jony-patch-1",
    head_sha: "07977177c2cd7d46bad37b8472a9d50e7acb9d1f",
    base_ref: "main",
    merged: false,
    author: (Some("Jony"), Some("jony@noreply.example.org"), Some("jony")),
    sender: Some("a_nice_user"),
    repo: "a_nice_user/hello_world_ci",
    link: Some("https://gitea.com/a_nice_user/hello_world_ci/pulls/7"),
};

const GITEA_PR_TEST_REPO_1: Pr = Pr {
    number: 1,
    action: "closed",
    forge_action: "closed",
    title: "Adjust file",
    head_ref: "anbraten-patch-1",
    head_sha: "d555a5dd07f4d0148a58d4686ec381502ae6a2d4",
    base_ref: "main",
    merged: false,
    author: (None, Some("anbraten@gitea.com"), Some("anbraten")),
    sender: Some("anbraten"),
    repo: "anbraten/test-repo",
    link: Some("https://gitea.com/anbraten/test-repo/pulls/1"),
};

const CODEBERG_PR_1: Pr = Pr {
    number: 1,
    action: "reopened",
    forge_action: "reopened",
    title: "Some ned more AAAA",
    head_ref: "6543-patch-1",
    head_sha: "36b5813240a9d2daa29b05046d56a53e18f39a3e",
    base_ref: "main",
    merged: false,
    // Gitea sends an empty `full_name`, read as no name.
    author: (None, Some("6543@obermui.de"), Some("6543")),
    sender: Some("6543"),
    repo: "test_it/test_ci_thing",
    link: Some("https://codeberg.org/test_it/test_ci_thing/pulls/1"),
};

const LOCAL_PR_2: Pr = Pr {
    number: 2,
    action: "synchronize",
    forge_action: "synchronized",
    title: "New Pull",
    head_ref: "test-patch-1",
    head_sha: "788ed8d02d3b7fcfcf6386dbcbca696aa1d4dc25",
    base_ref: "main",
    merged: false,
    author: (None, Some("test@noreply.localhost"), Some("test")),
    sender: Some("test"),
    repo: "Test-CI/multi-line-secrets",
    link: Some("http://127.0.0.1:3000/Test-CI/multi-line-secrets/pulls/2"),
};

const GORDON_PUSH_FILES: &[&str] = &["CHANGELOG.md", "app/controller/application.rb"];
const MULTI_PUSH_FILES: &[&str] = &["aa", "aaa"];

fixture_tests! {
    // ---- GitHub ----
    github_deploy_is_ignored: GitHub "HookDeploy.json" "deployment"
        => Expect::Ignored("event `deployment` does not start runs");
    github_release_is_ignored: GitHub "HookRelease.json" "release"
        => Expect::Ignored("event `release` does not start runs");
    github_push: GitHub "HookPush.json" "push" => Expect::Push(Push {
        git_ref: "refs/heads/main",
        sha: "366701fde727cb7a9e7f21eb88264f59f6f9b89c",
        before: Some("2f780193b136b72bfea4eeb640786a8c4450c7a2"),
        // `head_commit` has another address than `commits[0]`; the head commit is read.
        author: (Some("Philipp"), Some("admin@philipp.info"), Some("nupplaphil")),
        sender: Some("6543"),
        message_starts: "Fix multiline secrets replacer (#700)",
        files: &["pipeline/shared/replace_secrets.go", "pipeline/shared/replace_secrets_test.go"],
        complete: true,
        repo: "woodpecker-ci/woodpecker",
        clone_url: Some("https://github.com/woodpecker-ci/woodpecker.git"),
        link: Some("https://github.com/woodpecker-ci/woodpecker/compare/2f780193b136...366701fde727"),
    });
    github_push_forced: GitHub "HookPushForced.json" "push" => Expect::Push(Push {
        git_ref: "refs/heads/main",
        sha: "f7220f1f753260bf6f1c533357c70213e9fd4abe",
        before: Some("5ea737297f2e2e88f4cdf796e72cbcb12d40fd9c"),
        author: (Some("6543"), Some("6543@obermui.de"), Some("6543")),
        sender: Some("6543"),
        message_starts: "feat: initial implementation",
        files: &[
            ".clippy.toml", ".gitignore", ".woodpecker/build.yml", ".woodpecker/lint.yml",
            "Cargo.lock", "Cargo.toml", "LICENSE", "README.md", "contrib/example.toml",
            "rustfmt.toml", "src/cli.rs", "src/config.rs", "src/main.rs", "src/proxy/mod.rs",
            "src/proxy/tcp.rs", "src/proxy/udp.rs", "src/socket_opts.rs",
        ],
        complete: true,
        repo: "6543/oxiduct",
        clone_url: Some("https://github.com/6543/oxiduct.git"),
        link: Some("https://github.com/6543/oxiduct/compare/5ea737297f2e...f7220f1f7532"),
    });
    github_tag: GitHub "HookTag.json" "push" => Expect::Push(Push {
        git_ref: "refs/tags/the-tag-v1",
        sha: "67012991d6c69b1c58378346fca366b864d8d1a1",
        before: None,
        author: (Some("6543"), Some("6543@obermui.de"), Some("6543")),
        sender: Some("6543"),
        message_starts: "Update .woodpecker.yml",
        files: &[],
        complete: false,
        repo: "6543/test_ci_tmp",
        clone_url: Some("https://github.com/6543/test_ci_tmp.git"),
        link: Some("https://github.com/6543/test_ci_tmp/compare/the-tag-v1"),
    });
    github_pull_request_opened: GitHub "HookPullRequest.json" "pull_request" => Expect::Pr(Pr {
        number: 1,
        action: "opened",
        forge_action: "opened",
        title: "Update the README with new information",
        head_ref: "changes",
        head_sha: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
        base_ref: "main",
        merged: false,
        author: (None, None, Some("baxterthehacker")),
        sender: Some("octocat"),
        repo: "baxterthehacker/public-repo",
        link: Some("https://github.com/baxterthehacker/public-repo/pull/1"),
    });
    github_pull_request_assignee_added: GitHub "HookPullRequestAssigneeAdded.json" "pull_request"
        => Expect::Pr(Pr { action: "assigned", forge_action: "assigned", ..GITHUB_PR_1 });
    github_pull_request_assignee_removed: GitHub "HookPullRequestAssigneeRemoved.json" "pull_request"
        => Expect::Pr(Pr { action: "unassigned", forge_action: "unassigned", sender: Some("6543"), ..GITHUB_PR_1 });
    github_pull_request_closed: GitHub "HookPullRequestClosed.json" "pull_request"
        => Expect::Pr(GITHUB_PR_62);
    github_pull_request_edited: GitHub "HookPullRequestEdited.json" "pull_request"
        => Expect::Pr(Pr { action: "edited", forge_action: "edited", ..GITHUB_PR_62 });
    github_pull_request_merged: GitHub "HookPullRequestMerged.json" "pull_request"
        => Expect::Pr(Pr { merged: true, ..GITHUB_PR_62 });
    github_pull_request_label_added: GitHub "HookPullRequestLabelAdded.json" "pull_request"
        => Expect::Pr(Pr { action: "labeled", forge_action: "labeled", ..GITHUB_PR_1 });
    github_pull_request_label_removed: GitHub "HookPullRequestLabelRemoved.json" "pull_request"
        => Expect::Pr(Pr { action: "unlabeled", forge_action: "unlabeled", ..GITHUB_PR_1 });
    github_pull_request_labels_cleared: GitHub "HookPullRequestLabelsCleared.json" "pull_request"
        => Expect::Pr(Pr {
            action: "unlabeled",
            forge_action: "unlabeled",
            sender: Some("6543"),
            link: Some("https://github.com/6543/test_ci_tmp/pull/1"),
            ..GITHUB_PR_1
        });
    github_pull_request_milestone_added: GitHub "HookPullRequestMilestoneAdded.json" "pull_request"
        => Expect::Pr(Pr { action: "milestoned", forge_action: "milestoned", ..GITHUB_PR_1 });
    github_pull_request_milestone_removed: GitHub "HookPullRequestMilestoneRemoved.json" "pull_request"
        => Expect::Pr(Pr { action: "demilestoned", forge_action: "demilestoned", ..GITHUB_PR_1 });
    github_pull_request_reopened: GitHub "HookPullRequestReopened.json" "pull_request"
        => Expect::Pr(Pr {
            action: "reopened",
            forge_action: "reopened",
            sender: Some("6543"),
            link: Some("https://github.com/6543/test_ci_tmp/pull/1"),
            ..GITHUB_PR_1
        });
    github_pull_request_review_requested: GitHub "HookPullRequestReviewRequested.json" "pull_request"
        => Expect::Pr(Pr { action: "review_requested", forge_action: "review_requested", ..GITHUB_PR_1 });

    // ---- GitLab ----
    gitlab_push: GitLab "HookPush.json" "Push Hook" => Expect::Push(Push {
        git_ref: "refs/heads/main",
        sha: "16862e368d8ab812e48833b741dad720d6e2cb7f",
        before: Some("ffe8eb4f91d1fe6bc49f1e610e50e4b5767f0104"),
        author: (Some("the test"), Some("test@test.test"), None),
        sender: Some("test"),
        message_starts: "Update main.go",
        files: &["cmd/cli/main.go"],
        complete: true,
        repo: "test/woodpecker",
        clone_url: Some("http://10.40.8.5:3200/test/woodpecker.git"),
        link: Some("http://10.40.8.5:3200/test/woodpecker/-/compare/ffe8eb4f91d1fe6bc49f1e610e50e4b5767f0104...16862e368d8ab812e48833b741dad720d6e2cb7f"),
    });
    // `after` is the annotated tag's object (fabed3d9...); the commit is `checkout_sha`.
    gitlab_tag: GitLab "HookTag.json" "Tag Push Hook" => Expect::Push(Push {
        git_ref: "refs/tags/v22",
        sha: "16862e368d8ab812e48833b741dad720d6e2cb7f",
        before: None,
        author: (Some("the test"), Some("test@test.test"), None),
        sender: Some("test"),
        message_starts: "Update main.go",
        files: &["cmd/cli/main.go"],
        complete: false,
        repo: "test/woodpecker",
        clone_url: Some("http://10.40.8.5:3200/test/woodpecker.git"),
        link: None,
    });
    gitlab_release_is_ignored: GitLab "WebhookReleaseBody.json" "Release Hook"
        => Expect::Ignored("event `Release Hook` does not start runs");
    gitlab_merge_request_opened: GitLab "HookPullRequestOpened.json" "Merge Request Hook"
        => Expect::Pr(Pr {
            action: "opened",
            forge_action: "open",
            title: "Edit README.md for more text to read",
            ..GITLAB_MR_3
        });
    gitlab_merge_request_updated_with_commits: GitLab "HookPullRequestUpdated.json" "Merge Request Hook"
        => Expect::Pr(Pr { action: "synchronize", ..GITLAB_MR_ANBRATEN_3 });
    gitlab_merge_request_updated_without_commits: GitLab "HookPullRequestWithoutChanges.json" "Merge Request Hook"
        => Expect::Pr(GITLAB_MR_ANBRATEN_3);
    gitlab_merge_request_approved: GitLab "HookPullRequestApproved.json" "Merge Request Hook"
        => Expect::Pr(Pr { action: "approved", forge_action: "approved", ..GITLAB_MR_ANBRATEN_3 });
    gitlab_merge_request_unapproved: GitLab "HookPullRequestUnapproved.json" "Merge Request Hook"
        => Expect::Pr(Pr { action: "unapproved", forge_action: "unapproved", ..GITLAB_MR_3 });
    gitlab_merge_request_assigned: GitLab "HookPullRequestAssigned.json" "Merge Request Hook"
        => Expect::Pr(Pr { action: "assigned", ..GITLAB_MR_3 });
    // One assignee replaced by another: someone was assigned, which GitHub also reports.
    gitlab_merge_request_unassigned: GitLab "HookPullRequestUnassigned.json" "Merge Request Hook"
        => Expect::Pr(Pr { action: "assigned", ..GITLAB_MR_3 });
    gitlab_merge_request_edited: GitLab "HookPullRequestEdited.json" "Merge Request Hook"
        => Expect::Pr(GITLAB_MR_3);
    gitlab_merge_request_labels_added: GitLab "HookPullRequestLabelsAdded.json" "Merge Request Hook"
        => Expect::Pr(Pr { action: "labeled", ..GITLAB_MR_3 });
    gitlab_merge_request_labels_updated: GitLab "HookPullRequestLabelsUpdated.json" "Merge Request Hook"
        => Expect::Pr(Pr { action: "labeled", ..GITLAB_MR_3 });
    gitlab_merge_request_labels_cleared: GitLab "HookPullRequestLabelsCleared.json" "Merge Request Hook"
        => Expect::Pr(Pr { action: "unlabeled", ..GITLAB_MR_3 });
    gitlab_merge_request_milestoned: GitLab "HookPullRequestMilestoned.json" "Merge Request Hook"
        => Expect::Pr(Pr { action: "milestoned", ..GITLAB_MR_3 });
    gitlab_merge_request_demilestoned: GitLab "HookPullRequestDemilestoned.json" "Merge Request Hook"
        => Expect::Pr(Pr { action: "demilestoned", ..GITLAB_MR_3 });
    gitlab_merge_request_review_requested: GitLab "HookPullRequestReviewRequested.json" "Merge Request Hook"
        => Expect::Pr(Pr { action: "review_requested", ..GITLAB_MR_3 });
    gitlab_merge_request_review_request_removed: GitLab "HookPullRequestReviewRequestDel.json" "Merge Request Hook"
        => Expect::Pr(Pr { action: "review_request_removed", ..GITLAB_MR_3 });
    gitlab_merge_request_closed: GitLab "HookPullRequestClosed.json" "Merge Request Hook"
        => Expect::Pr(GITLAB_MR_4);
    gitlab_merge_request_merged: GitLab "HookPullRequestMerged.json" "Merge Request Hook"
        => Expect::Pr(Pr { forge_action: "merge", merged: true, ..GITLAB_MR_4 });
    gitlab_merge_request_reopened: GitLab "HookPullRequestReopened.json" "Merge Request Hook"
        => Expect::Pr(GITLAB_MR_1);
    gitlab_merge_request_unknown_action_is_kept: GitLab "HookPullRequestUnsupportedAction.json" "Merge Request Hook"
        => Expect::Pr(Pr {
            action: "action_we_do_not_support",
            forge_action: "action_we_do_not_support",
            ..GITLAB_MR_1
        });

    // ---- Gitea ----
    gitea_push: Gitea "HookPush.json" "push" => Expect::Push(Push {
        git_ref: "refs/heads/main",
        sha: "ef98532add3b2feb7a137426bba1248724367df5",
        before: Some("4b2626259b5a97b6b4eab5e6cca66adb986b672b"),
        author: (Some("Gordon the Gopher"), Some("gordon@golang.org"), Some("gordon")),
        sender: Some("gordon"),
        message_starts: "bump",
        files: GORDON_PUSH_FILES,
        complete: true,
        repo: "gordon/hello-world",
        clone_url: Some("http://gitea.golang.org/gordon/hello-world.git"),
        link: Some("http://gitea.golang.org/gordon/hello-world/compare/4b2626259b5a97b6b4eab5e6cca66adb986b672b...ef98532add3b2feb7a137426bba1248724367df5"),
    });
    gitea_push_new_branch: Gitea "HookPushBranch.json" "push" => Expect::Push(Push {
        git_ref: "refs/heads/fdsafdsa",
        sha: "28c3613ae62640216bea5e7dc71aa65356e4298b",
        before: None,
        author: (Some("meisam"), Some("meisam@noreply.codeberg.org"), Some("meisam")),
        sender: Some("6543"),
        message_starts: "Delete '.woodpecker/.check.yml'",
        files: &[],
        complete: false,
        repo: "meisam/woodpecktester",
        clone_url: Some("https://codeberg.org/meisam/woodpecktester.git"),
        link: Some("https://codeberg.org/meisam/woodpecktester/compare/main...28c3613ae62640216bea5e7dc71aa65356e4298b"),
    });
    gitea_push_of_three_commits: Gitea "HookPushMulti.json" "push" => Expect::Push(Push {
        git_ref: "refs/heads/main",
        sha: "29be01c073851cf0db0c6a466e396b725a670453",
        before: Some("6efcf5b7c98f3e7a491675164b7a2e7acac27941"),
        author: (Some("6543"), Some("6543@obermui.de"), Some("test-user")),
        sender: Some("test-user"),
        message_starts: "add some text",
        files: MULTI_PUSH_FILES,
        complete: true,
        repo: "Test-CI/multi-line-secrets",
        clone_url: Some("http://127.0.0.1:3000/Test-CI/multi-line-secrets.git"),
        link: Some("http://127.0.0.1:3000/Test-CI/multi-line-secrets/compare/6efcf5b7c98f3e7a491675164b7a2e7acac27941...29be01c073851cf0db0c6a466e396b725a670453"),
    });
    gitea_tag_create_is_left_to_the_push: Gitea "HookTag.json" "create"
        => Expect::Ignored("sends a `push` for the same tag");
    gitea_release_is_ignored: Gitea "HookRelease.json" "release"
        => Expect::Ignored("event `release` does not start runs");
    gitea_pull_request_opened: Gitea "HookPullRequest.json" "pull_request" => Expect::Pr(Pr {
        number: 1,
        action: "opened",
        forge_action: "opened",
        title: "Update the README with new information",
        head_ref: "feature/changes",
        head_sha: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
        base_ref: "main",
        merged: false,
        author: (Some("Gordon the Gopher"), Some("gordon@golang.org"), Some("gordon")),
        sender: Some("gordon"),
        repo: "gordon/hello-world",
        link: Some("http://gitea.golang.org/gordon/hello-world/pull/1"),
    });
    gitea_pull_request_add_label: Gitea "HookPullRequestAddLabel.json" "pull_request"
        => Expect::Pr(GITEA_PR_7);
    gitea_pull_request_change_label: Gitea "HookPullRequestChangeLabel.json" "pull_request"
        => Expect::Pr(GITEA_PR_7);
    gitea_pull_request_remove_label: Gitea "HookPullRequestRemoveLabel.json" "pull_request"
        => Expect::Pr(Pr { action: "unlabeled", forge_action: "label_cleared", ..GITEA_PR_7 });
    gitea_pull_request_add_milestone: Gitea "HookPullRequestAddMile.json" "pull_request"
        => Expect::Pr(Pr { action: "milestoned", forge_action: "milestoned", ..GITEA_PR_7 });
    gitea_pull_request_change_milestone: Gitea "HookPullRequestChangeMile.json" "pull_request"
        => Expect::Pr(Pr { action: "milestoned", forge_action: "milestoned", ..GITEA_PR_7 });
    gitea_pull_request_remove_milestone: Gitea "HookPullRequestRemoveMile.json" "pull_request"
        => Expect::Pr(Pr { action: "demilestoned", forge_action: "demilestoned", ..GITEA_PR_7 });
    gitea_pull_request_add_review_request: Gitea "HookPullRequestAddReviewRequest.json" "pull_request"
        => Expect::Pr(Pr { action: "review_requested", forge_action: "review_requested", ..GITEA_PR_7 });
    gitea_pull_request_assignees_added: Gitea "HookPullRequestAssigneesAdded.json" "pull_request"
        => Expect::Pr(Pr { action: "assigned", forge_action: "assigned", ..GITEA_PR_7 });
    gitea_pull_request_assignees_removed: Gitea "HookPullRequestAssigneesRemoved.json" "pull_request"
        => Expect::Pr(Pr { action: "unassigned", forge_action: "unassigned", ..GITEA_PR_7 });
    gitea_pull_request_change_body: Gitea "HookPullRequestChangeBody.json" "pull_request"
        => Expect::Pr(Pr { action: "edited", forge_action: "edited", ..GITEA_PR_7 });
    gitea_pull_request_change_title: Gitea "HookPullRequestChangeTitle.json" "pull_request"
        => Expect::Pr(Pr { action: "edited", forge_action: "edited", title: "Edit pull title :D", ..GITEA_PR_7 });
    // Reviews come under their own event names, which start nothing.
    gitea_pull_request_review_approved_is_ignored: Gitea "HookPullRequestReviewAck.json" "pull_request_approved"
        => Expect::Ignored("event `pull_request_approved` does not start runs");
    gitea_pull_request_review_comment_is_ignored: Gitea "HookPullRequestReviewComment.json" "pull_request_comment"
        => Expect::Ignored("event `pull_request_comment` does not start runs");
    gitea_pull_request_review_rejected_is_ignored: Gitea "HookPullRequestReviewDeny.json" "pull_request_rejected"
        => Expect::Ignored("event `pull_request_rejected` does not start runs");
    gitea_pull_request_closed: Gitea "HookPullRequestClosed.json" "pull_request"
        => Expect::Pr(GITEA_PR_TEST_REPO_1);
    gitea_pull_request_merged: Gitea "HookPullRequestMerged.json" "pull_request"
        => Expect::Pr(Pr {
            merged: true,
            author: (None, Some("anbraten@noreply.gitea.com"), Some("anbraten")),
            ..GITEA_PR_TEST_REPO_1
        });
    gitea_pull_request_reopened: Gitea "HookPullRequestReopened.json" "pull_request"
        => Expect::Pr(CODEBERG_PR_1);
    gitea_pull_request_synchronized: Gitea "HookPullRequestUpdated.json" "pull_request"
        => Expect::Pr(LOCAL_PR_2);

    // ---- Forgejo ----
    forgejo_push: Forgejo "HookPush.json" "push" => Expect::Push(Push {
        git_ref: "refs/heads/main",
        sha: "ef98532add3b2feb7a137426bba1248724367df5",
        before: Some("4b2626259b5a97b6b4eab5e6cca66adb986b672b"),
        author: (Some("Gordon the Gopher"), Some("gordon@golang.org"), Some("gordon")),
        sender: Some("gordon"),
        message_starts: "bump",
        files: GORDON_PUSH_FILES,
        complete: true,
        repo: "gordon/hello-world",
        clone_url: Some("http://forgejo.golang.org/gordon/hello-world.git"),
        link: Some("http://forgejo.golang.org/gordon/hello-world/compare/4b2626259b5a97b6b4eab5e6cca66adb986b672b...ef98532add3b2feb7a137426bba1248724367df5"),
    });
    forgejo_push_new_branch: Forgejo "HookPushBranch.json" "push" => Expect::Push(Push {
        git_ref: "refs/heads/fdsafdsa",
        sha: "28c3613ae62640216bea5e7dc71aa65356e4298b",
        before: None,
        author: (Some("meisam"), Some("meisam@noreply.codeberg.org"), Some("meisam")),
        sender: Some("6543"),
        message_starts: "Delete '.woodpecker/.check.yml'",
        files: &[],
        complete: false,
        repo: "meisam/woodpecktester",
        clone_url: Some("https://codeberg.org/meisam/woodpecktester.git"),
        link: Some("https://codeberg.org/meisam/woodpecktester/compare/main...28c3613ae62640216bea5e7dc71aa65356e4298b"),
    });
    forgejo_push_of_three_commits: Forgejo "HookPushMulti.json" "push" => Expect::Push(Push {
        git_ref: "refs/heads/main",
        sha: "29be01c073851cf0db0c6a466e396b725a670453",
        before: Some("6efcf5b7c98f3e7a491675164b7a2e7acac27941"),
        author: (Some("6543"), Some("6543@obermui.de"), Some("test-user")),
        sender: Some("test-user"),
        message_starts: "add some text",
        files: MULTI_PUSH_FILES,
        complete: true,
        repo: "Test-CI/multi-line-secrets",
        clone_url: Some("http://127.0.0.1:3000/Test-CI/multi-line-secrets.git"),
        link: Some("http://127.0.0.1:3000/Test-CI/multi-line-secrets/compare/6efcf5b7c98f3e7a491675164b7a2e7acac27941...29be01c073851cf0db0c6a466e396b725a670453"),
    });
    forgejo_tag_create_is_left_to_the_push: Forgejo "HookTag.json" "create"
        => Expect::Ignored("Forgejo sends a `push` for the same tag");
    forgejo_release_is_ignored: Forgejo "HookRelease.json" "release"
        => Expect::Ignored("event `release` does not start runs");
    forgejo_pull_request_opened: Forgejo "HookPullRequest.json" "pull_request" => Expect::Pr(Pr {
        number: 1,
        action: "opened",
        forge_action: "opened",
        title: "Update the README with new information",
        head_ref: "feature/changes",
        head_sha: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
        base_ref: "main",
        merged: false,
        author: (Some("Gordon the Gopher"), Some("gordon@golang.org"), Some("gordon")),
        sender: Some("gordon"),
        repo: "gordon/hello-world",
        link: Some("http://forgejo.golang.org/gordon/hello-world/pull/1"),
    });
    forgejo_pull_request_assignee_cleared: Forgejo "HookPullRequestAssigneeCleared.json" "pull_request"
        => Expect::Pr(Pr { action: "unassigned", forge_action: "unassigned", ..CODEBERG_PR_1 });
    forgejo_pull_request_assignees_added: Forgejo "HookPullRequestAssigneesAdded.json" "pull_request"
        => Expect::Pr(Pr { action: "assigned", forge_action: "assigned", ..CODEBERG_PR_1 });
    forgejo_pull_request_label_added: Forgejo "HookPullRequestLabelAdded.json" "pull_request"
        => Expect::Pr(Pr { action: "labeled", forge_action: "label_updated", ..CODEBERG_PR_1 });
    forgejo_pull_request_labels_updated: Forgejo "HookPullRequestLabelsUpdated.json" "pull_request"
        => Expect::Pr(Pr { action: "labeled", forge_action: "label_updated", ..CODEBERG_PR_1 });
    forgejo_pull_request_labels_cleared: Forgejo "HookPullRequestLabelsCleared.json" "pull_request"
        => Expect::Pr(Pr { action: "unlabeled", forge_action: "label_cleared", ..CODEBERG_PR_1 });
    forgejo_pull_request_milestone_added: Forgejo "HookPullRequestMilestoneAdded.json" "pull_request"
        => Expect::Pr(Pr { action: "milestoned", forge_action: "milestoned", ..CODEBERG_PR_1 });
    forgejo_pull_request_milestone_changed: Forgejo "HookPullRequestMilestoneChanged.json" "pull_request"
        => Expect::Pr(Pr { action: "milestoned", forge_action: "milestoned", ..CODEBERG_PR_1 });
    forgejo_pull_request_milestone_cleared: Forgejo "HookPullRequestMilestoneCleared.json" "pull_request"
        => Expect::Pr(Pr { action: "demilestoned", forge_action: "demilestoned", ..CODEBERG_PR_1 });
    forgejo_pull_request_reopened: Forgejo "HookPullRequestReopened.json" "pull_request"
        => Expect::Pr(CODEBERG_PR_1);
    forgejo_pull_request_synchronized: Forgejo "HookPullRequestUpdated.json" "pull_request"
        => Expect::Pr(LOCAL_PR_2);
    forgejo_pull_request_closed: Forgejo "HookPullRequestClosed.json" "pull_request"
        => Expect::Pr(Pr {
            author: (None, Some("anbraten@forgejo.com"), Some("anbraten")),
            link: Some("https://forgejo.com/anbraten/test-repo/pulls/1"),
            ..GITEA_PR_TEST_REPO_1
        });
    forgejo_pull_request_edited: Forgejo "HookPullRequestEdited.json" "pull_request"
        => Expect::Pr(Pr {
            action: "edited",
            forge_action: "edited",
            author: (None, Some("anbraten@forgejo.com"), Some("anbraten")),
            link: Some("https://forgejo.com/anbraten/test-repo/pulls/1"),
            ..GITEA_PR_TEST_REPO_1
        });
    forgejo_pull_request_merged: Forgejo "HookPullRequestMerged.json" "pull_request"
        => Expect::Pr(Pr {
            merged: true,
            author: (None, Some("anbraten@noreply.forgejo.com"), Some("anbraten")),
            link: Some("https://forgejo.com/anbraten/test-repo/pulls/1"),
            ..GITEA_PR_TEST_REPO_1
        });
}

#[test]
fn every_fixture_of_the_four_forges_has_a_test() {
    let root = fixtures_root();
    if !root.is_dir() {
        eprintln!("skipped: {} is absent", root.display());
        return;
    }
    let mut missing = Vec::new();
    for forge in [Forge::GitHub, Forge::GitLab, Forge::Gitea, Forge::Forgejo] {
        let folder = root.join(forge_folder(forge)).join("fixtures");
        for entry in std::fs::read_dir(&folder).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") && !COVERED.contains(&(forge, name.as_str())) {
                missing.push(format!("{}/{name}", forge_folder(forge)));
            }
        }
    }
    assert!(missing.is_empty(), "fixtures without a test: {missing:?}");
}

/// Gitea and Forgejo send tag pushes as `push` with a `refs/tags/` ref; that is what starts
/// the run for a tag (their `create` is ignored). No fixture has one, so one is made from the
/// branch push.
#[test]
fn gitea_tag_push_is_a_push_of_the_tag() {
    let root = fixtures_root();
    if !root.is_dir() {
        eprintln!("skipped: {} is absent", root.display());
        return;
    }
    let text = std::fs::read_to_string(root.join("gitea/fixtures/HookPush.json")).unwrap();
    let body = text.replace("\"refs/heads/main\"", "\"refs/tags/v1.0.0\"");
    let headers = delivery_headers(Forge::Gitea, "push", body.as_bytes());
    let event = event_of(webhook::parse(Forge::Gitea, &headers, body.as_bytes()).unwrap());
    assert_eq!(event.git_ref, "refs/tags/v1.0.0");
    assert_eq!(event.tag(), Some("v1.0.0"));
    assert_eq!(event.branch(), None);
    assert_eq!(event.sha, "ef98532add3b2feb7a137426bba1248724367df5");
}
