//! Whether an event starts a pipeline: the `on:` filters against what the run knows.

use crate::spec::Triggers;

/// The events a local run can stand for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A push of a branch or tag.
    Push,
    /// A pull request.
    PullRequest,
    /// A scheduled run.
    Schedule,
    /// A manual run (`workflow_dispatch`).
    Manual,
}

impl EventKind {
    /// The name in GitHub's spelling, as `github.event_name` shows it.
    pub fn github_name(self) -> &'static str {
        match self {
            EventKind::Push => "push",
            EventKind::PullRequest => "pull_request",
            EventKind::Schedule => "schedule",
            EventKind::Manual => "workflow_dispatch",
        }
    }

    /// Parses the CLI's spelling.
    pub fn parse(text: &str) -> Option<EventKind> {
        match text {
            "push" => Some(EventKind::Push),
            "pull_request" => Some(EventKind::PullRequest),
            "schedule" => Some(EventKind::Schedule),
            "manual" | "workflow_dispatch" => Some(EventKind::Manual),
            _ => None,
        }
    }
}

/// What the filters are checked against.
#[derive(Clone, Debug)]
pub struct EventFacts<'a> {
    /// The event.
    pub kind: EventKind,
    /// The full ref (`refs/heads/main`, `refs/tags/v1`).
    pub git_ref: &'a str,
    /// Files the change touched.
    pub changed_files: &'a [String],
    /// For pull requests: the base branch.
    pub base_branch: &'a str,
}

/// `Ok(())` when the triggers start a run for the event, or the reason they do not.
pub fn matches(triggers: &Triggers, facts: &EventFacts<'_>) -> Result<(), String> {
    match facts.kind {
        EventKind::Push => {
            let Some(push) = &triggers.push else {
                return Err("the pipeline has no `on: push`".into());
            };
            if let Some(branch) = facts.git_ref.strip_prefix("refs/heads/") {
                if push.branches.is_empty() && !push.tags.is_empty() {
                    return Err(format!(
                        "`on.push` filters tags only, and `{branch}` is a branch"
                    ));
                }
                if !push.branches.allows(branch) {
                    return Err(format!(
                        "branch `{branch}` does not pass `on.push.branches`"
                    ));
                }
            } else if let Some(tag) = facts.git_ref.strip_prefix("refs/tags/") {
                if push.tags.is_empty() && !push.branches.is_empty() {
                    return Err(format!(
                        "`on.push` filters branches only, and `{tag}` is a tag"
                    ));
                }
                if !push.tags.allows(tag) {
                    return Err(format!("tag `{tag}` does not pass `on.push.tags`"));
                }
            }
            if !push.paths.allows_any(facts.changed_files) {
                return Err("no changed file passes `on.push.paths`".into());
            }
            Ok(())
        }
        EventKind::PullRequest => {
            let Some(pull_request) = &triggers.pull_request else {
                return Err("the pipeline has no `on: pull_request`".into());
            };
            if !pull_request.branches.allows(facts.base_branch) {
                return Err(format!(
                    "base branch `{}` does not pass `on.pull_request.branches`",
                    facts.base_branch
                ));
            }
            if !pull_request.paths.allows_any(facts.changed_files) {
                return Err("no changed file passes `on.pull_request.paths`".into());
            }
            Ok(())
        }
        EventKind::Schedule => {
            if triggers.schedule.is_empty() {
                Err("the pipeline has no `on: schedule`".into())
            } else {
                Ok(())
            }
        }
        EventKind::Manual => {
            if triggers.manual.is_none() {
                Err("the pipeline has no `on: manual` (or `workflow_dispatch`)".into())
            } else {
                Ok(())
            }
        }
    }
}
