//! Reading a delivery's body into a [`TriggerEvent`].
//!
//! GitHub, Gitea and Forgejo share one payload shape for pushes and pull requests (Gitea
//! copied GitHub's), so they share one reader; GitLab has its own.

use std::collections::BTreeSet;

use http::HeaderMap;
use serde_json::Value;
use sorat_pipeline::trigger::EventKind;

use super::json::Node;
use super::{Author, Forge, Parsed, PullRequest, Repo, TriggerEvent, WebhookError};

/// Reads a delivery: which event the headers name, then the body.
///
/// Events that never start a run are [`Parsed::Ignored`] without their body being read. An
/// event Sorat reads whose body is not JSON, or lacks a field it needs, is an error naming
/// the field's path (`pull_request.head.sha`).
pub fn parse(forge: Forge, headers: &HeaderMap, body: &[u8]) -> Result<Parsed, WebhookError> {
    let event = event_name(forge, headers)?;
    let event = event.as_str();
    match forge {
        Forge::GitHub => match event {
            "ping" => Ok(Parsed::Ping),
            "push" => github_like_push(forge, &read_json(body)?),
            "pull_request" => github_like_pull_request(forge, &read_json(body)?),
            other => Ok(ignored(other)),
        },
        Forge::Gitea | Forge::Forgejo => match event {
            "push" => github_like_push(forge, &read_json(body)?),
            // Gitea sends `pull_request` for every pull request change (labels, assignees,
            // new commits, ...) and tells them apart by `action`; reviews come as
            // `pull_request_approved`, `_rejected` and `_comment`, which start nothing.
            "pull_request" => github_like_pull_request(forge, &read_json(body)?),
            "create" => Ok(Parsed::Ignored(format!(
                "event `create` does not start runs: {forge} sends a `push` for the same \
                 tag or branch, and that starts the run"
            ))),
            other => Ok(ignored(other)),
        },
        Forge::GitLab => match event {
            "Push Hook" | "Tag Push Hook" => gitlab_push(&read_json(body)?),
            "Merge Request Hook" => gitlab_merge_request(&read_json(body)?),
            other => Ok(ignored(other)),
        },
    }
}

fn ignored(event: &str) -> Parsed {
    Parsed::Ignored(format!("event `{event}` does not start runs"))
}

/// The event's name from the forge's event header.
fn event_name(forge: Forge, headers: &HeaderMap) -> Result<String, WebhookError> {
    let candidates: &[&'static str] = match forge {
        Forge::GitHub => &["X-GitHub-Event"],
        Forge::GitLab => &["X-Gitlab-Event"],
        Forge::Gitea => &["X-Gitea-Event"],
        Forge::Forgejo => &["X-Forgejo-Event", "X-Gitea-Event"],
    };
    for &header in candidates {
        if let Some(value) = headers.get(header) {
            let text = value.to_str().map_err(|_| WebhookError::InvalidHeader {
                header,
                reason: "it is not printable ASCII".into(),
            })?;
            return Ok(text.trim().to_string());
        }
    }
    Err(WebhookError::MissingHeader {
        header: candidates[0],
    })
}

fn read_json(body: &[u8]) -> Result<Value, WebhookError> {
    serde_json::from_slice(body).map_err(|error| WebhookError::NotJson {
        reason: error.to_string(),
    })
}

fn is_zero_sha(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|byte| byte == b'0')
}

/// A commit id: 40 (SHA-1) or 64 (SHA-256) hex digits. Checked because it goes on to `git`.
fn commit_id(node: &Node<'_>) -> Result<String, WebhookError> {
    let text = node.str()?;
    let is_hex = text.bytes().all(|byte| byte.is_ascii_hexdigit());
    if is_hex && (text.len() == 40 || text.len() == 64) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(WebhookError::InvalidField {
            path: node.path(),
            reason: "it is not a commit id (40 or 64 hex digits)".into(),
        })
    }
}

fn opt_commit_id(node: &Node<'_>) -> Result<Option<String>, WebhookError> {
    if node.is_present() {
        commit_id(node).map(Some)
    } else {
        Ok(None)
    }
}

/// A full ref name, checked because it goes on to `git`.
fn full_ref(node: &Node<'_>) -> Result<String, WebhookError> {
    let text = node.str()?;
    check_ref_name(node, text)?;
    if !text.starts_with("refs/") {
        return Err(WebhookError::InvalidField {
            path: node.path(),
            reason: "it is not a full ref (`refs/heads/...`, `refs/tags/...`)".into(),
        });
    }
    Ok(text.to_string())
}

/// A branch name (without `refs/heads/`).
fn branch_name(node: &Node<'_>) -> Result<String, WebhookError> {
    let text = node.str()?;
    check_ref_name(node, text)?;
    Ok(text.to_string())
}

fn check_ref_name(node: &Node<'_>, text: &str) -> Result<(), WebhookError> {
    // Git itself refuses these; refusing them here keeps them out of logs and commands.
    let bad = text.is_empty()
        || text.starts_with('-')
        || text
            .chars()
            .any(|character| character.is_control() || character == ' ');
    if bad {
        return Err(WebhookError::InvalidField {
            path: node.path(),
            reason: "it is not a valid git ref name".into(),
        });
    }
    Ok(())
}

fn author(name: Option<String>, email: Option<String>, login: Option<String>) -> Option<Author> {
    // GitLab puts `[REDACTED]` where a user hides the address.
    let email = email.filter(|email| email != "[REDACTED]");
    if name.is_none() && email.is_none() && login.is_none() {
        None
    } else {
        Some(Author { name, email, login })
    }
}

/// The union of `added`, `modified` and `removed` over the commits, sorted.
fn changed_files(commits: &[Node<'_>]) -> Result<Vec<String>, WebhookError> {
    let mut files = BTreeSet::new();
    for commit in commits {
        for list in ["added", "modified", "removed"] {
            for file in commit.get(list)?.items()? {
                files.insert(file.str()?.to_string());
            }
        }
    }
    Ok(files.into_iter().collect())
}

/// The commit whose `id` is `sha`.
fn find_commit<'a>(commits: &[Node<'a>], sha: &str) -> Result<Option<Node<'a>>, WebhookError> {
    for commit in commits {
        if commit
            .get("id")?
            .opt_str()?
            .is_some_and(|id| id.eq_ignore_ascii_case(sha))
        {
            return Ok(Some(commit.clone()));
        }
    }
    Ok(None)
}

/// GitHub's, Gitea's and Forgejo's `repository`.
fn github_like_repo(root: &Node<'_>) -> Result<Repo, WebhookError> {
    let repository = root.get("repository")?;
    Ok(Repo {
        full_name: repository.get("full_name")?.str()?.to_string(),
        clone_url: repository.get("clone_url")?.non_empty()?,
        html_url: repository.get("html_url")?.non_empty()?,
    })
}

fn github_like_sender(root: &Node<'_>) -> Result<Option<String>, WebhookError> {
    let sender = root.get("sender")?;
    Ok(match sender.get("login")?.non_empty()? {
        Some(login) => Some(login),
        None => sender.get("username")?.non_empty()?,
    })
}

/// A `push` from GitHub, Gitea or Forgejo.
fn github_like_push(forge: Forge, value: &Value) -> Result<Parsed, WebhookError> {
    let root = Node::root(value);
    let git_ref = full_ref(&root.get("ref")?)?;
    let after = commit_id(&root.get("after")?)?;
    let before = opt_commit_id(&root.get("before")?)?.filter(|sha| !is_zero_sha(sha));
    let deleted = is_zero_sha(&after) || root.get("deleted")?.opt_bool()? == Some(true);
    let commits = root.get("commits")?.items()?;

    let head_commit = root.get("head_commit")?;
    let head = if head_commit.is_present() {
        Some(head_commit)
    } else {
        find_commit(&commits, &after)?
    };
    let author = match &head {
        Some(commit) => {
            let commit_author = commit.get("author")?;
            author(
                commit_author.get("name")?.non_empty()?,
                commit_author.get("email")?.non_empty()?,
                commit_author.get("username")?.non_empty()?,
            )
        }
        None => {
            // No head commit (a deletion): the pusher is the best answer.
            let pusher = root.get("pusher")?;
            let name = match pusher.get("full_name")?.non_empty()? {
                Some(name) => Some(name),
                None => pusher.get("name")?.non_empty()?,
            };
            let login = match pusher.get("login")?.non_empty()? {
                Some(login) => Some(login),
                None => github_like_sender(&root)?,
            };
            author(name, pusher.get("email")?.non_empty()?, login)
        }
    };
    let message = match &head {
        Some(commit) => commit.get("message")?.non_empty()?,
        None => None,
    };
    // For an annotated tag `after` is the tag object; the head commit is what it points to.
    let sha = match &head {
        Some(commit) if git_ref.starts_with("refs/tags/") && !deleted => {
            opt_commit_id(&commit.get("id")?)?.unwrap_or_else(|| after.clone())
        }
        _ => after,
    };

    // GitHub lists at most 20 commits and says nothing of the rest; Gitea says how many
    // there were in `total_commits`.
    let truncated = match root.get("total_commits")?.opt_u64()? {
        Some(total) => usize::try_from(total).map_or(true, |total| total > commits.len()),
        None => forge == Forge::GitHub && commits.len() >= 20,
    };
    let link = match root.get("compare")?.non_empty()? {
        Some(link) => Some(link),
        None => root.get("compare_url")?.non_empty()?,
    };

    Ok(Parsed::Event(Box::new(TriggerEvent {
        forge,
        kind: EventKind::Push,
        git_ref,
        changed_files: changed_files(&commits)?,
        changed_files_complete: before.is_some() && !deleted && !truncated,
        sha,
        before,
        deleted,
        author,
        sender: github_like_sender(&root)?,
        message,
        pull_request: None,
        repo: github_like_repo(&root)?,
        link,
    })))
}

/// Gitea's and Forgejo's pull request actions in GitHub's words.
fn gitea_action(action: &str) -> &str {
    match action {
        "synchronized" => "synchronize",
        "label_updated" => "labeled",
        "label_cleared" => "unlabeled",
        other => other,
    }
}

/// A `pull_request` from GitHub, Gitea or Forgejo.
fn github_like_pull_request(forge: Forge, value: &Value) -> Result<Parsed, WebhookError> {
    let root = Node::root(value);
    let pull = root.get("pull_request")?;
    let number = match root.get("number")?.opt_u64()? {
        Some(number) => number,
        None => pull.get("number")?.u64()?,
    };
    let forge_action = root.get("action")?.str()?.to_string();
    let action = match forge {
        Forge::GitHub => forge_action.clone(),
        _ => gitea_action(&forge_action).to_string(),
    };
    let head_sha = commit_id(&pull.at("head.sha")?)?;
    let user = pull.get("user")?;
    let login = match user.get("login")?.non_empty()? {
        Some(login) => Some(login),
        None => user.get("username")?.non_empty()?,
    };
    let pull_request = PullRequest {
        number,
        action,
        forge_action,
        title: pull.get("title")?.str()?.to_string(),
        head_ref: branch_name(&pull.at("head.ref")?)?,
        head_sha: head_sha.clone(),
        base_ref: branch_name(&pull.at("base.ref")?)?,
        merged: pull.get("merged")?.opt_bool()?.unwrap_or(false),
    };
    Ok(Parsed::Event(Box::new(TriggerEvent {
        forge,
        kind: EventKind::PullRequest,
        git_ref: format!("refs/pull/{number}/head"),
        sha: head_sha,
        before: None,
        deleted: false,
        author: author(
            user.get("full_name")?.non_empty()?,
            user.get("email")?.non_empty()?,
            login,
        ),
        sender: github_like_sender(&root)?,
        message: None,
        changed_files: Vec::new(),
        changed_files_complete: false,
        pull_request: Some(pull_request),
        repo: github_like_repo(&root)?,
        link: pull.get("html_url")?.non_empty()?,
    })))
}

/// GitLab's `project`.
fn gitlab_repo(root: &Node<'_>) -> Result<Repo, WebhookError> {
    let project = root.get("project")?;
    let repository = root.get("repository")?;
    Ok(Repo {
        full_name: project.get("path_with_namespace")?.str()?.to_string(),
        clone_url: match project.get("git_http_url")?.non_empty()? {
            Some(url) => Some(url),
            None => repository.get("git_http_url")?.non_empty()?,
        },
        html_url: match project.get("web_url")?.non_empty()? {
            Some(url) => Some(url),
            None => repository.get("homepage")?.non_empty()?,
        },
    })
}

/// GitLab's `Push Hook` and `Tag Push Hook`.
fn gitlab_push(value: &Value) -> Result<Parsed, WebhookError> {
    let root = Node::root(value);
    let git_ref = full_ref(&root.get("ref")?)?;
    let after = commit_id(&root.get("after")?)?;
    let before = opt_commit_id(&root.get("before")?)?.filter(|sha| !is_zero_sha(sha));
    let deleted = is_zero_sha(&after);
    // For an annotated tag `after` is the tag object; `checkout_sha` is the commit.
    let sha = opt_commit_id(&root.get("checkout_sha")?)?.unwrap_or_else(|| after.clone());
    let commits = root.get("commits")?.items()?;
    let head = find_commit(&commits, &sha)?;

    let author = match &head {
        Some(commit) => {
            let commit_author = commit.get("author")?;
            author(
                commit_author.get("name")?.non_empty()?,
                commit_author.get("email")?.non_empty()?,
                None,
            )
        }
        None => author(
            root.get("user_name")?.non_empty()?,
            root.get("user_email")?.non_empty()?,
            root.get("user_username")?.non_empty()?,
        ),
    };
    let message = match &head {
        Some(commit) => commit.get("message")?.non_empty()?,
        None => None,
    };
    let truncated = match root.get("total_commits_count")?.opt_u64()? {
        Some(total) => usize::try_from(total).map_or(true, |total| total > commits.len()),
        None => false,
    };
    let repo = gitlab_repo(&root)?;
    let link = match (&before, &repo.html_url, deleted) {
        (Some(before), Some(web_url), false) => {
            Some(format!("{web_url}/-/compare/{before}...{after}"))
        }
        _ => None,
    };

    Ok(Parsed::Event(Box::new(TriggerEvent {
        forge: Forge::GitLab,
        kind: EventKind::Push,
        git_ref,
        changed_files: changed_files(&commits)?,
        changed_files_complete: before.is_some() && !deleted && !truncated,
        sha,
        before,
        deleted,
        author,
        sender: root.get("user_username")?.non_empty()?,
        message,
        pull_request: None,
        repo,
        link,
    })))
}

/// Whether `current` (a list in GitLab's `changes`) has an item `previous` lacks.
fn gained_item(change: &Node<'_>) -> Result<bool, WebhookError> {
    let previous = change.get("previous")?.items()?;
    let current = change.get("current")?.items()?;
    Ok(current.iter().any(|item| {
        !previous
            .iter()
            .any(|earlier| earlier.value() == item.value())
    }))
}

/// GitLab's merge request actions in GitHub's words. GitLab sends `update` for new commits
/// (with `oldrev`) and for every other change; `changes` tells which.
fn gitlab_action(
    action: &str,
    attributes: &Node<'_>,
    root: &Node<'_>,
) -> Result<String, WebhookError> {
    let word = match action {
        "open" => "opened",
        "reopen" => "reopened",
        "close" | "merge" => "closed",
        "update" => {
            if attributes.get("oldrev")?.is_present() {
                "synchronize"
            } else {
                let changes = root.get("changes")?;
                let labels = changes.get("labels")?;
                let assignees = changes.get("assignees")?;
                let reviewers = changes.get("reviewers")?;
                let milestone = changes.get("milestone_id")?;
                if labels.is_present() {
                    if gained_item(&labels)? {
                        "labeled"
                    } else {
                        "unlabeled"
                    }
                } else if assignees.is_present() {
                    if gained_item(&assignees)? {
                        "assigned"
                    } else {
                        "unassigned"
                    }
                } else if reviewers.is_present() {
                    if gained_item(&reviewers)? {
                        "review_requested"
                    } else {
                        "review_request_removed"
                    }
                } else if milestone.is_present() {
                    if milestone.get("current")?.is_present() {
                        "milestoned"
                    } else {
                        "demilestoned"
                    }
                } else {
                    "edited"
                }
            }
        }
        other => other,
    };
    Ok(word.to_string())
}

/// GitLab's `Merge Request Hook`.
fn gitlab_merge_request(value: &Value) -> Result<Parsed, WebhookError> {
    let root = Node::root(value);
    let attributes = root.get("object_attributes")?;
    let number = attributes.get("iid")?.u64()?;
    let forge_action = attributes.get("action")?.str()?.to_string();
    let action = gitlab_action(&forge_action, &attributes, &root)?;
    let head_sha = commit_id(&attributes.at("last_commit.id")?)?;
    let merged = forge_action == "merge" || attributes.get("state")?.opt_str()? == Some("merged");
    let user = root.get("user")?;
    let pull_request = PullRequest {
        number,
        action,
        forge_action,
        title: attributes.get("title")?.str()?.to_string(),
        head_ref: branch_name(&attributes.get("source_branch")?)?,
        head_sha: head_sha.clone(),
        base_ref: branch_name(&attributes.get("target_branch")?)?,
        merged,
    };
    Ok(Parsed::Event(Box::new(TriggerEvent {
        forge: Forge::GitLab,
        kind: EventKind::PullRequest,
        git_ref: format!("refs/merge-requests/{number}/head"),
        sha: head_sha,
        before: None,
        deleted: false,
        author: author(
            user.get("name")?.non_empty()?,
            user.get("email")?.non_empty()?,
            user.get("username")?.non_empty()?,
        ),
        sender: user.get("username")?.non_empty()?,
        message: attributes.at("last_commit.message")?.non_empty()?,
        changed_files: Vec::new(),
        changed_files_complete: false,
        pull_request: Some(pull_request),
        repo: gitlab_repo(&root)?,
        link: attributes.get("url")?.non_empty()?,
    })))
}
