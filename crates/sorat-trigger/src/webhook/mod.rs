//! Forge webhooks: which forge sent a delivery, whether it is signed with our secret, and what
//! it asks for.
//!
//! A server handles a delivery in three calls, each of which only reads:
//!
//! 1. [`detect`] names the [`Forge`] from the headers;
//! 2. [`verify`] checks the signature (every comparison in constant time);
//! 3. [`parse`] reads the body into [`Parsed`]: a [`TriggerEvent`], a ping, or the reason the
//!    delivery starts nothing.
//!
//! Supported forges and events:
//!
//! | forge | event header | events read |
//! |---|---|---|
//! | GitHub | `X-GitHub-Event` | `push`, `pull_request`, `ping` |
//! | GitLab | `X-Gitlab-Event` | `Push Hook`, `Tag Push Hook`, `Merge Request Hook` |
//! | Gitea | `X-Gitea-Event` | `push` (branches and tags), `pull_request` |
//! | Forgejo | `X-Forgejo-Event` | `push` (branches and tags), `pull_request` |
//!
//! Every other event is [`Parsed::Ignored`] with the reason. Gitea and Forgejo send a
//! `create` event beside the `push` of a new tag or branch; Sorat starts runs from the `push`
//! alone, so the same tag never starts two runs. Bitbucket (Cloud and Data Center) is not
//! supported: its deliveries are unsigned unless configured, and its payloads share nothing
//! with the four above; [`detect`] reports them as unknown.
//!
//! Pull request actions are reported in GitHub's vocabulary (`opened`, `synchronize`,
//! `reopened`, `closed`, `edited`, `labeled`, ...) whatever the forge, so
//! `on.pull_request.types` means the same thing everywhere; [`PullRequest::forge_action`]
//! keeps the forge's own word.

mod json;
mod payload;
mod signature;

use http::{HeaderMap, StatusCode};
use sorat_pipeline::spec::Triggers;
use sorat_pipeline::trigger::{EventFacts, EventKind, matches};

pub use payload::parse;
pub use signature::{STANDARD_WEBHOOKS_TOLERANCE, verify, verify_at};

/// A forge that sends webhooks Sorat reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Forge {
    /// GitHub (github.com and GitHub Enterprise Server).
    GitHub,
    /// GitLab (gitlab.com and self-managed).
    GitLab,
    /// Gitea.
    Gitea,
    /// Forgejo (a Gitea fork that still sends Gitea's headers too).
    Forgejo,
}

impl Forge {
    /// The lowercase name, as used in URLs and configuration (`github`, `gitlab`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::GitLab => "gitlab",
            Forge::Gitea => "gitea",
            Forge::Forgejo => "forgejo",
        }
    }

    /// Parses [`Forge::name`]'s spelling.
    pub fn from_name(name: &str) -> Option<Forge> {
        match name {
            "github" => Some(Forge::GitHub),
            "gitlab" => Some(Forge::GitLab),
            "gitea" => Some(Forge::Gitea),
            "forgejo" => Some(Forge::Forgejo),
            _ => None,
        }
    }
}

impl std::fmt::Display for Forge {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Forge::GitHub => "GitHub",
            Forge::GitLab => "GitLab",
            Forge::Gitea => "Gitea",
            Forge::Forgejo => "Forgejo",
        })
    }
}

/// The headers [`detect`] looks for, in the order it prefers them.
pub const DETECTION_HEADERS: &str = "X-Forgejo-Event, X-Forgejo-Signature, X-Gitea-Event, \
     X-Gitea-Signature, X-Gitlab-Event, X-Gitlab-Token, X-GitHub-Event";

/// Tells the forge from the delivery's headers.
///
/// Forgejo also sends Gitea's headers, and Gitea (like Forgejo) also sends `X-GitHub-Event`
/// for GitHub-compatible receivers, so the more specific headers win: Forgejo, then Gitea,
/// then GitLab, then GitHub.
pub fn detect(headers: &HeaderMap) -> Result<Forge, WebhookError> {
    let has = |name: &str| headers.contains_key(name);
    if has("x-forgejo-event") || has("x-forgejo-signature") {
        Ok(Forge::Forgejo)
    } else if has("x-gitea-event") || has("x-gitea-signature") {
        Ok(Forge::Gitea)
    } else if has("x-gitlab-event") || has("x-gitlab-token") {
        Ok(Forge::GitLab)
    } else if has("x-github-event") {
        Ok(Forge::GitHub)
    } else {
        Err(WebhookError::UnknownForge {
            looked_for: DETECTION_HEADERS,
        })
    }
}

/// Why a delivery was refused. [`WebhookError::status`] gives the HTTP status a server
/// answers with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// No header tells which forge sent the delivery.
    #[error("not a webhook from a known forge: none of the headers {looked_for} is present")]
    UnknownForge {
        /// The headers looked for.
        looked_for: &'static str,
    },
    /// A header the forge always sends is missing.
    #[error("header `{header}` is missing")]
    MissingHeader {
        /// The header's name.
        header: &'static str,
    },
    /// A header is present but cannot be read (not text, not the expected form).
    #[error("header `{header}` is invalid: {reason}")]
    InvalidHeader {
        /// The header's name.
        header: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The delivery carries no signature (or token) although a secret is configured.
    #[error("the delivery is not signed: header `{header}` is missing")]
    MissingSignature {
        /// The header that should carry the signature.
        header: &'static str,
    },
    /// The signature is malformed or does not match the body and the secret.
    #[error("the signature in header `{header}` is not valid: {reason}")]
    BadSignature {
        /// The header that carries the signature.
        header: &'static str,
        /// Malformed, or not matching.
        reason: String,
    },
    /// A correctly signed Standard Webhooks delivery whose timestamp is too far from now
    /// (a replay, or a clock far off).
    #[error(
        "header `webhook-timestamp` is {skew_seconds}s away from now; at most {tolerance_seconds}s is accepted"
    )]
    StaleTimestamp {
        /// Timestamp minus now, in seconds.
        skew_seconds: i64,
        /// The tolerance, in seconds.
        tolerance_seconds: i64,
    },
    /// The configured secret cannot be used (empty, or a `whsec_` secret that is not base64).
    #[error("the webhook secret configured for this repository cannot be used: {reason}")]
    InvalidSecret {
        /// What is wrong with it.
        reason: String,
    },
    /// The body is not JSON.
    #[error("the body is not JSON: {reason}")]
    NotJson {
        /// The JSON parser's message (with line and column).
        reason: String,
    },
    /// A field the event needs is missing (or null).
    #[error("the payload has no `{path}`")]
    MissingField {
        /// The field's path in the payload, like `pull_request.head.sha`.
        path: String,
    },
    /// A field has the right type but a value that cannot be right (a commit id that is not
    /// hex, ...).
    #[error("`{path}` in the payload is invalid: {reason}")]
    InvalidField {
        /// The field's path in the payload.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A field has the wrong JSON type.
    #[error("`{path}` in the payload must be {expected}, not {found}")]
    WrongType {
        /// The field's path in the payload, like `commits[0].added`.
        path: String,
        /// The type wanted (`a string`, `an object`, ...).
        expected: &'static str,
        /// The type found.
        found: &'static str,
    },
}

impl WebhookError {
    /// The HTTP status a server answers with: 401 for anything about the signature, 400 for
    /// a delivery that cannot be read, 500 for an unusable configured secret.
    pub fn status(&self) -> StatusCode {
        match self {
            WebhookError::MissingSignature { .. }
            | WebhookError::BadSignature { .. }
            | WebhookError::StaleTimestamp { .. } => StatusCode::UNAUTHORIZED,
            WebhookError::InvalidSecret { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            WebhookError::UnknownForge { .. }
            | WebhookError::MissingHeader { .. }
            | WebhookError::InvalidHeader { .. }
            | WebhookError::NotJson { .. }
            | WebhookError::MissingField { .. }
            | WebhookError::InvalidField { .. }
            | WebhookError::WrongType { .. } => StatusCode::BAD_REQUEST,
        }
    }
}

/// What a delivery asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// An event that may start a run (subject to the pipeline's `on:`).
    Event(Box<TriggerEvent>),
    /// The forge checking that the hook works (GitHub's `ping`).
    Ping,
    /// A delivery that never starts a run, with the reason (for the delivery log).
    Ignored(String),
}

/// The pull request actions that start a run when `on.pull_request.types` is not given
/// (GitHub's default).
pub const DEFAULT_PULL_REQUEST_TYPES: [&str; 3] = ["opened", "synchronize", "reopened"];

/// A push or a pull request, as every forge's delivery is read into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TriggerEvent {
    /// Who sent it.
    pub forge: Forge,
    /// [`EventKind::Push`] or [`EventKind::PullRequest`].
    pub kind: EventKind,
    /// The full ref: `refs/heads/main`, `refs/tags/v1`; for a pull request the forge's ref of
    /// its head (`refs/pull/7/head` on GitHub, Gitea and Forgejo,
    /// `refs/merge-requests/7/head` on GitLab), which can be fetched from the base repository
    /// even when the pull request comes from a fork.
    pub git_ref: String,
    /// The commit to build: the pushed commit, or the pull request's head. For a tag it is
    /// the tagged commit, not an annotated tag's object (GitLab's `checkout_sha`, GitHub's
    /// and Gitea's `head_commit`). All zeros when [`TriggerEvent::deleted`].
    pub sha: String,
    /// The commit the ref pointed at before a push; `None` for a new ref and for pull
    /// requests.
    pub before: Option<String>,
    /// Whether the push deleted the ref (the forge sends all zeros as the new commit).
    pub deleted: bool,
    /// The head commit's author for a push (the pusher when there is no head commit, as for
    /// a deletion); for a pull request its author on GitHub, Gitea and Forgejo, and the user
    /// who acted on GitLab (whose payload names the author only by id).
    pub author: Option<Author>,
    /// The forge account that caused the delivery (pusher or actor), when the payload says.
    pub sender: Option<String>,
    /// The head commit's message (GitLab merge requests: the last commit's).
    pub message: Option<String>,
    /// Files the push touched: the union of `added`, `modified` and `removed` over the
    /// pushed commits, sorted. Forges do not list files for pull requests, so this is empty
    /// for them; see [`TriggerEvent::changed_files_complete`].
    pub changed_files: Vec<String>,
    /// Whether [`TriggerEvent::changed_files`] is the whole change. It is not for pull
    /// requests, for new refs (whose commits the forge may have seen before) and for pushes
    /// whose commit list the forge cut short (GitHub and GitLab list at most 20 commits). A
    /// caller that checks `paths` filters fills the list from git (`git diff --name-only
    /// base...head`) first when this is false.
    pub changed_files_complete: bool,
    /// The pull request, for [`EventKind::PullRequest`].
    pub pull_request: Option<PullRequest>,
    /// The repository the event happened in (for a pull request, the base repository).
    pub repo: Repo,
    /// Where a person looks at the change: the compare view of a push, the pull request's
    /// page.
    pub link: Option<String>,
}

/// A commit author or forge user. Empty strings from the forge are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Author {
    /// The display name.
    pub name: Option<String>,
    /// The e-mail address.
    pub email: Option<String>,
    /// The forge account name.
    pub login: Option<String>,
}

/// A pull request (GitLab: merge request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequest {
    /// The number shown in the forge (GitLab's `iid`).
    pub number: u64,
    /// What happened, in GitHub's words (`opened`, `synchronize`, `reopened`, `closed`,
    /// `edited`, `labeled`, `unlabeled`, `assigned`, `milestoned`, ...). Actions without a
    /// GitHub counterpart keep the forge's word (GitLab's `approved`, Gitea's `reviewed`).
    pub action: String,
    /// The action as the forge wrote it (GitLab `open`, Gitea `synchronized`, ...).
    pub forge_action: String,
    /// The title.
    pub title: String,
    /// The branch with the changes (its name, not a ref).
    pub head_ref: String,
    /// The head commit.
    pub head_sha: String,
    /// The branch the changes go into (its name).
    pub base_ref: String,
    /// Whether it has been merged.
    pub merged: bool,
}

/// The repository an event belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repo {
    /// `owner/name` (GitLab: the full namespace path, `group/subgroup/name`).
    pub full_name: String,
    /// The HTTPS clone URL, when the payload carries it.
    pub clone_url: Option<String>,
    /// The repository's web page, when the payload carries it.
    pub html_url: Option<String>,
}

impl TriggerEvent {
    /// The branch name of a push to a branch, or of a pull request's base.
    pub fn branch(&self) -> Option<&str> {
        match &self.pull_request {
            Some(pull_request) => Some(&pull_request.base_ref),
            None => self.git_ref.strip_prefix("refs/heads/"),
        }
    }

    /// The tag name of a push of a tag.
    pub fn tag(&self) -> Option<&str> {
        self.git_ref.strip_prefix("refs/tags/")
    }

    /// What `sorat_pipeline::trigger::matches` checks.
    pub fn facts(&self) -> EventFacts<'_> {
        EventFacts {
            kind: self.kind,
            git_ref: &self.git_ref,
            changed_files: &self.changed_files,
            base_branch: self
                .pull_request
                .as_ref()
                .map_or("", |pull_request| pull_request.base_ref.as_str()),
        }
    }

    /// Whether the event starts a pipeline whose `on:` has no filters: a push that does not
    /// delete its ref, or a pull request `opened`, `synchronize`d or `reopened`
    /// ([`DEFAULT_PULL_REQUEST_TYPES`]). Labels, milestones, assignees, edits, reviews and
    /// closing do not change the code, so they start nothing by default.
    pub fn starts_pipeline_by_default(&self) -> bool {
        match &self.pull_request {
            Some(pull_request) => {
                DEFAULT_PULL_REQUEST_TYPES.contains(&pull_request.action.as_str())
            }
            None => !self.deleted,
        }
    }

    /// `Ok(())` when the pipeline's `on:` starts a run for this event, or the reason it does
    /// not.
    ///
    /// This is `sorat_pipeline::trigger::matches` plus what it does not check: a deleted
    /// ref never runs, and a pull request's action must be in `on.pull_request.types`
    /// (or [`DEFAULT_PULL_REQUEST_TYPES`] when none are given). `paths` filters are checked
    /// against [`TriggerEvent::changed_files`] as it is: fill it first when
    /// [`TriggerEvent::changed_files_complete`] is false.
    pub fn passes(&self, triggers: &Triggers) -> Result<(), String> {
        if self.deleted {
            return Err(format!(
                "`{}` was deleted, and a deletion starts no run",
                self.git_ref
            ));
        }
        matches(triggers, &self.facts())?;
        if let (Some(pull_request), Some(filter)) = (&self.pull_request, &triggers.pull_request) {
            let action = pull_request.action.as_str();
            if filter.types.is_empty() {
                if !DEFAULT_PULL_REQUEST_TYPES.contains(&action) {
                    return Err(format!(
                        "pull request action `{action}` is not one of the default types \
                         (opened, synchronize, reopened); list it in `on.pull_request.types`"
                    ));
                }
            } else if !filter.types.iter().any(|wanted| wanted == action) {
                return Err(format!(
                    "pull request action `{action}` is not in `on.pull_request.types` ({})",
                    filter.types.join(", ")
                ));
            }
        }
        Ok(())
    }
}
