//! `detect` and `parse` on made-up deliveries: errors name the header or the field, odd
//! bytes never panic, and `TriggerEvent::passes` applies a pipeline's `on:`.

#![allow(clippy::unwrap_used)]

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proptest::prelude::*;
use sorat_config::source::SourceFile;
use sorat_trigger::webhook::{self, Forge, Parsed, TriggerEvent, WebhookError};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

const SHA_A: &str = "1111111111111111111111111111111111111111";
const SHA_B: &str = "2222222222222222222222222222222222222222";
const ZERO: &str = "0000000000000000000000000000000000000000";

fn github_push(git_ref: &str, before: &str, after: &str, files: &[&str]) -> String {
    serde_json::json!({
        "ref": git_ref,
        "before": before,
        "after": after,
        "repository": {"full_name": "acme/app", "clone_url": "https://example.test/acme/app.git"},
        "pusher": {"name": "ada", "email": "ada@example.test"},
        "sender": {"login": "ada"},
        "commits": [{"id": after, "message": "change", "author": {"name": "Ada", "email": "ada@example.test", "username": "ada"}, "added": [], "removed": [], "modified": files}],
    })
    .to_string()
}

fn github_pull_request(action: &str, base: &str) -> String {
    serde_json::json!({
        "action": action,
        "number": 5,
        "pull_request": {
            "title": "Fix",
            "user": {"login": "ada"},
            "head": {"ref": "fix", "sha": SHA_B},
            "base": {"ref": base, "sha": SHA_A},
            "merged": false
        },
        "repository": {"full_name": "acme/app"},
        "sender": {"login": "ada"}
    })
    .to_string()
}

fn parse_github(event: &str, body: &str) -> Result<Parsed, WebhookError> {
    webhook::parse(
        Forge::GitHub,
        &headers(&[("X-GitHub-Event", event)]),
        body.as_bytes(),
    )
}

fn event(parsed: Parsed) -> TriggerEvent {
    match parsed {
        Parsed::Event(event) => *event,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[test]
fn detect_prefers_the_most_specific_forge() {
    let cases: &[(&[(&str, &str)], Forge)] = &[
        (&[("X-GitHub-Event", "push")], Forge::GitHub),
        (&[("x-github-event", "push")], Forge::GitHub),
        (&[("X-Gitlab-Event", "Push Hook")], Forge::GitLab),
        (&[("X-Gitlab-Token", "t")], Forge::GitLab),
        (
            &[("X-Gitea-Event", "push"), ("X-GitHub-Event", "push")],
            Forge::Gitea,
        ),
        (&[("X-Gitea-Signature", "ab")], Forge::Gitea),
        (
            &[
                ("X-Forgejo-Event", "push"),
                ("X-Gitea-Event", "push"),
                ("X-GitHub-Event", "push"),
            ],
            Forge::Forgejo,
        ),
        (
            &[("X-Forgejo-Signature", "ab"), ("X-Gitea-Signature", "ab")],
            Forge::Forgejo,
        ),
    ];
    for (pairs, forge) in cases {
        assert_eq!(
            webhook::detect(&headers(pairs)).unwrap(),
            *forge,
            "{pairs:?}"
        );
    }
}

#[test]
fn detect_unknown_names_the_headers_looked_for() {
    // Bitbucket's header is not one Sorat reads.
    let error = webhook::detect(&headers(&[("X-Event-Key", "repo:push")])).unwrap_err();
    assert!(matches!(error, WebhookError::UnknownForge { .. }));
    assert_eq!(error.status(), StatusCode::BAD_REQUEST);
    let message = error.to_string();
    for header in [
        "X-GitHub-Event",
        "X-Gitlab-Event",
        "X-Gitea-Event",
        "X-Forgejo-Event",
    ] {
        assert!(message.contains(header), "{message}");
    }
}

#[test]
fn github_ping_and_other_events() {
    assert_eq!(parse_github("ping", "{}").unwrap(), Parsed::Ping);
    assert_eq!(
        parse_github("issues", "not even json").unwrap(),
        Parsed::Ignored("event `issues` does not start runs".into())
    );
}

#[test]
fn missing_event_header_is_named() {
    let error = webhook::parse(Forge::GitLab, &HeaderMap::new(), b"{}").unwrap_err();
    assert_eq!(
        error,
        WebhookError::MissingHeader {
            header: "X-Gitlab-Event"
        }
    );
    assert_eq!(error.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn malformed_json_is_an_error_with_its_place() {
    let error = parse_github("push", "{\"ref\": ").unwrap_err();
    let WebhookError::NotJson { reason } = &error else {
        panic!("{error:?}");
    };
    assert!(reason.contains("line 1"), "{reason}");
    assert_eq!(error.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn missing_and_mistyped_fields_name_their_path() {
    let mut body: serde_json::Value =
        serde_json::from_str(&github_pull_request("opened", "main")).unwrap();
    body["pull_request"]["head"]
        .as_object_mut()
        .unwrap()
        .remove("sha");
    let error = parse_github("pull_request", &body.to_string()).unwrap_err();
    assert_eq!(
        error,
        WebhookError::MissingField {
            path: "pull_request.head.sha".into()
        }
    );
    assert!(error.to_string().contains("pull_request.head.sha"));

    body["pull_request"]["head"] = serde_json::json!("fix");
    let error = parse_github("pull_request", &body.to_string()).unwrap_err();
    assert_eq!(
        error,
        WebhookError::WrongType {
            path: "pull_request.head".into(),
            expected: "an object",
            found: "a string"
        }
    );

    let mut push: serde_json::Value =
        serde_json::from_str(&github_push("refs/heads/main", SHA_A, SHA_B, &["a"])).unwrap();
    push["commits"][0]["modified"][0] = serde_json::json!(7);
    let error = parse_github("push", &push.to_string()).unwrap_err();
    assert_eq!(
        error,
        WebhookError::WrongType {
            path: "commits[0].modified[0]".into(),
            expected: "a string",
            found: "a number"
        }
    );

    push["commits"] = serde_json::json!([]);
    push["after"] = serde_json::json!("not-a-sha; rm -rf /");
    let error = parse_github("push", &push.to_string()).unwrap_err();
    assert!(matches!(&error, WebhookError::InvalidField { path, .. } if path == "after"));

    push["after"] = serde_json::json!(SHA_B);
    push["ref"] = serde_json::json!("--upload-pack=evil");
    let error = parse_github("push", &push.to_string()).unwrap_err();
    assert!(matches!(&error, WebhookError::InvalidField { path, .. } if path == "ref"));

    let error = parse_github("push", "[1, 2]").unwrap_err();
    assert_eq!(
        error,
        WebhookError::WrongType {
            path: "(the payload)".into(),
            expected: "an object",
            found: "an array"
        }
    );
}

#[test]
fn branch_deletion_is_an_event_that_starts_nothing() {
    let body = serde_json::json!({
        "ref": "refs/heads/old",
        "before": SHA_A,
        "after": ZERO,
        "deleted": true,
        "commits": [],
        "head_commit": null,
        "repository": {"full_name": "acme/app"},
        "pusher": {"name": "ada", "email": "ada@example.test"},
        "sender": {"login": "ada"}
    })
    .to_string();
    let event = event(parse_github("push", &body).unwrap());
    assert!(event.deleted);
    assert_eq!(event.before.as_deref(), Some(SHA_A));
    assert_eq!(event.branch(), Some("old"));
    assert!(!event.starts_pipeline_by_default());
    // With no head commit the pusher is the author.
    let author = event.author.clone().unwrap();
    assert_eq!(author.name.as_deref(), Some("ada"));
    assert_eq!(author.login.as_deref(), Some("ada"));
    let triggers = triggers("on: push\n");
    let reason = event.passes(&triggers).unwrap_err();
    assert!(reason.contains("deleted"), "{reason}");
}

#[test]
fn github_push_of_twenty_commits_may_be_cut_short() {
    let commits: Vec<serde_json::Value> = (0..20)
        .map(|index| serde_json::json!({"id": format!("{index:040}"), "modified": [format!("f{index}")]}))
        .collect();
    let body = serde_json::json!({
        "ref": "refs/heads/main", "before": SHA_A, "after": SHA_B,
        "commits": commits, "repository": {"full_name": "acme/app"}
    })
    .to_string();
    let event = event(parse_github("push", &body).unwrap());
    assert_eq!(event.changed_files.len(), 20);
    assert!(!event.changed_files_complete);
}

/// Loads a pipeline with `on` and returns its triggers.
fn triggers(on: &str) -> sorat_pipeline::spec::Triggers {
    let text = format!(
        "{on}jobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - run: 'true'\n"
    );
    let file = SourceFile::new("pipeline.yaml", text);
    let (pipeline, diagnostics) = sorat_pipeline::load::load(&file);
    pipeline
        .unwrap_or_else(|| panic!("{diagnostics:?}"))
        .triggers
}

#[test]
fn passes_applies_branch_and_path_filters_through_sorat_pipeline() {
    let triggers =
        triggers("on:\n  push:\n    branches: [main, 'release/**']\n    paths: ['src/**']\n");
    let push = |git_ref: &str, files: &[&str]| {
        event(parse_github("push", &github_push(git_ref, SHA_A, SHA_B, files)).unwrap())
    };
    push("refs/heads/main", &["src/lib.rs"])
        .passes(&triggers)
        .unwrap();
    push("refs/heads/release/1.0", &["src/lib.rs"])
        .passes(&triggers)
        .unwrap();
    let reason = push("refs/heads/feature", &["src/lib.rs"])
        .passes(&triggers)
        .unwrap_err();
    assert!(reason.contains("feature"), "{reason}");
    let reason = push("refs/heads/main", &["docs/a.md"])
        .passes(&triggers)
        .unwrap_err();
    assert!(reason.contains("paths"), "{reason}");
}

#[test]
fn passes_checks_pull_request_types() {
    let default_types = triggers("on:\n  pull_request:\n    branches: [main]\n");
    let pull = |action: &str, base: &str| {
        event(parse_github("pull_request", &github_pull_request(action, base)).unwrap())
    };
    for action in ["opened", "synchronize", "reopened"] {
        pull(action, "main").passes(&default_types).unwrap();
    }
    for action in ["labeled", "edited", "closed", "assigned"] {
        let reason = pull(action, "main").passes(&default_types).unwrap_err();
        assert!(reason.contains(action), "{reason}");
    }
    let reason = pull("opened", "develop")
        .passes(&default_types)
        .unwrap_err();
    assert!(reason.contains("develop"), "{reason}");

    let labeled_only = triggers("on:\n  pull_request:\n    types: [labeled, closed]\n");
    pull("labeled", "main").passes(&labeled_only).unwrap();
    pull("closed", "main").passes(&labeled_only).unwrap();
    let reason = pull("opened", "main").passes(&labeled_only).unwrap_err();
    assert!(reason.contains("on.pull_request.types"), "{reason}");

    // A push-only pipeline does not run for a pull request.
    let push_only = triggers("on: push\n");
    assert!(pull("opened", "main").passes(&push_only).is_err());
}

fn all_forges() -> impl Strategy<Value = Forge> {
    prop_oneof![
        Just(Forge::GitHub),
        Just(Forge::GitLab),
        Just(Forge::Gitea),
        Just(Forge::Forgejo)
    ]
}

fn event_for(forge: Forge, index: usize) -> (&'static str, &'static str) {
    let events: &[&str] = match forge {
        Forge::GitHub => &["push", "pull_request", "ping"],
        Forge::GitLab => &["Push Hook", "Tag Push Hook", "Merge Request Hook"],
        Forge::Gitea | Forge::Forgejo => &["push", "pull_request", "create"],
    };
    let header = match forge {
        Forge::GitHub => "X-GitHub-Event",
        Forge::GitLab => "X-Gitlab-Event",
        Forge::Gitea => "X-Gitea-Event",
        Forge::Forgejo => "X-Forgejo-Event",
    };
    (header, events[index % events.len()])
}

/// JSON-ish values built from the field names the readers look for, so the fuzzing reaches
/// past the first missing field.
fn payload_like() -> impl Strategy<Value = serde_json::Value> {
    let keys = prop_oneof![
        Just("ref"),
        Just("after"),
        Just("before"),
        Just("commits"),
        Just("head_commit"),
        Just("repository"),
        Just("full_name"),
        Just("pull_request"),
        Just("head"),
        Just("base"),
        Just("sha"),
        Just("number"),
        Just("action"),
        Just("object_attributes"),
        Just("iid"),
        Just("last_commit"),
        Just("id"),
        Just("project"),
        Just("path_with_namespace"),
        Just("changes"),
        Just("labels"),
        Just("previous"),
        Just("current"),
        Just("added"),
        Just("title"),
        Just("source_branch"),
        Just("target_branch"),
        Just("checkout_sha"),
    ];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::from(SHA_A)),
        Just(serde_json::Value::from("refs/heads/main")),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|pairs| {
                serde_json::Value::Object(
                    pairs
                        .into_iter()
                        .map(|(key, value)| (key.to_string(), value))
                        .collect(),
                )
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(
        forge in all_forges(),
        event_index in 0usize..3,
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let (header, event) = event_for(forge, event_index);
        let _ = webhook::parse(forge, &headers(&[(header, event)]), &body);
    }

    #[test]
    fn parse_never_panics_on_payload_shaped_json(
        forge in all_forges(),
        event_index in 0usize..3,
        body in payload_like(),
    ) {
        let (header, event) = event_for(forge, event_index);
        let bytes = body.to_string();
        let _ = webhook::parse(forge, &headers(&[(header, event)]), bytes.as_bytes());
    }

    #[test]
    fn verify_never_panics_on_arbitrary_headers(
        forge in all_forges(),
        value in "[ -~]{0,100}",
        secret in prop::collection::vec(any::<u8>(), 0..40),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        for name in [
            "X-Hub-Signature-256", "X-Gitea-Signature", "X-Forgejo-Signature", "X-Gitlab-Token",
            "webhook-signature", "webhook-timestamp", "webhook-id",
        ] {
            let headers = headers(&[(name, &value)]);
            let _ = webhook::verify(forge, &headers, &body, &secret);
        }
        let all = headers(&[
            ("webhook-id", &value), ("webhook-timestamp", &value), ("webhook-signature", &value),
        ]);
        let _ = webhook::verify(forge, &all, &body, &secret);
    }
}

#[test]
fn annotated_tag_push_builds_the_tagged_commit_not_the_tag_object() {
    let tag_object = "3333333333333333333333333333333333333333";
    let body = serde_json::json!({
        "ref": "refs/tags/v2", "before": ZERO, "after": tag_object,
        "commits": [],
        "head_commit": {"id": SHA_B, "message": "release", "author": {"name": "Ada"}},
        "repository": {"full_name": "acme/app"}
    })
    .to_string();
    let event = event(parse_github("push", &body).unwrap());
    assert_eq!(event.sha, SHA_B);
    assert_eq!(event.tag(), Some("v2"));
    assert_eq!(event.before, None);
    assert!(!event.changed_files_complete);
}
