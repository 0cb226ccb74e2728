//! Polling a git remote: for repositories that cannot send webhooks (a plain git server, a
//! mirror, a local path), the branches and tags are listed with `git ls-remote` now and then,
//! and the refs that moved start runs.
//!
//! The caller keeps the previous listing (in the state store) and turns each [`RefChange`]
//! into a push event; this module only lists and compares.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// How long [`remote_heads`] waits for `git ls-remote`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a remote could not be listed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// The URL cannot be given to git (empty, or starting with `-`, which git would read as
    /// an option).
    #[error("cannot poll `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `git` could not be started.
    #[error("cannot run `git`: {0}")]
    Spawn(#[source] std::io::Error),
    /// `git ls-remote` failed (unreachable host, no such repository, authentication needed).
    #[error("`git ls-remote {url}` failed ({status}): {stderr}")]
    Failed {
        /// The URL.
        url: String,
        /// The exit status.
        status: String,
        /// What git said, trimmed.
        stderr: String,
    },
    /// `git ls-remote` did not finish in time (it was killed).
    #[error("`git ls-remote {url}` did not finish within {}s", timeout.as_secs())]
    TimedOut {
        /// The URL.
        url: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// A line of git's output is not `<sha>\t<ref>`.
    #[error("`git ls-remote` printed an unexpected line {line_number}: `{line}`")]
    BadOutput {
        /// The line's number, from 1.
        line_number: usize,
        /// The line.
        line: String,
    },
}

/// A ref that is new or moved between two listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefChange {
    /// The full ref (`refs/heads/main`, `refs/tags/v1`).
    pub git_ref: String,
    /// The commit it pointed at before; `None` for a new ref.
    pub before: Option<String>,
    /// The commit it points at now.
    pub after: String,
}

/// Lists the remote's branches and tags as `(full ref, commit)`, in git's order, with
/// [`DEFAULT_TIMEOUT`]. See [`remote_heads_with_timeout`].
pub async fn remote_heads(url: &str) -> Result<Vec<(String, String)>, PollError> {
    remote_heads_with_timeout(url, DEFAULT_TIMEOUT).await
}

/// Lists the remote's branches and tags as `(full ref, commit)`, in git's order.
///
/// Runs `git ls-remote --heads --tags <url>` with prompts off (`GIT_TERMINAL_PROMPT=0`, no
/// standard input), so a remote that wants a password fails instead of waiting. `url` is
/// anything git accepts: `https://`, `ssh://`, `file://` or a local path. An annotated tag is
/// reported with the commit it points to (git's peeled `^{}` line), not the tag object, so
/// tags compare like branches.
pub async fn remote_heads_with_timeout(
    url: &str,
    timeout: Duration,
) -> Result<Vec<(String, String)>, PollError> {
    if url.is_empty() {
        return Err(PollError::InvalidUrl {
            url: url.to_string(),
            reason: "it is empty",
        });
    }
    if url.starts_with('-') {
        return Err(PollError::InvalidUrl {
            url: url.to_string(),
            reason: "it starts with `-`",
        });
    }
    let mut command = Command::new("git");
    command
        // The `ext::` transport runs commands; a URL from configuration must not reach it.
        .args(["-c", "protocol.ext.allow=never"])
        .args(["ls-remote", "--heads", "--tags", url])
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env("SSH_ASKPASS", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().map_err(PollError::Spawn)?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(result) => result.map_err(PollError::Spawn)?,
        // Dropping the future drops the child, which kills it (`kill_on_drop`).
        Err(_) => {
            return Err(PollError::TimedOut {
                url: url.to_string(),
                timeout,
            });
        }
    };
    if !output.status.success() {
        return Err(PollError::Failed {
            url: url.to_string(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    parse_ls_remote(&String::from_utf8_lossy(&output.stdout))
}

/// Reads `git ls-remote` output: `<sha>\t<ref>` lines, where `<ref>^{}` gives the commit an
/// annotated tag points to and replaces the tag object's id.
pub fn parse_ls_remote(output: &str) -> Result<Vec<(String, String)>, PollError> {
    let mut refs: Vec<(String, String)> = Vec::new();
    let mut index_of: HashMap<String, usize> = HashMap::new();
    for (line_index, line) in output.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || PollError::BadOutput {
            line_number: line_index + 1,
            line: line.to_string(),
        };
        let (sha, name) = line.split_once('\t').ok_or_else(bad)?;
        if sha.is_empty() || !sha.bytes().all(|byte| byte.is_ascii_hexdigit()) || name.is_empty() {
            return Err(bad());
        }
        let (name, peeled) = match name.strip_suffix("^{}") {
            Some(name) => (name, true),
            None => (name, false),
        };
        match index_of.get(name) {
            Some(&index) => {
                if peeled {
                    refs[index].1 = sha.to_string();
                }
            }
            None => {
                index_of.insert(name.to_string(), refs.len());
                refs.push((name.to_string(), sha.to_string()));
            }
        }
    }
    Ok(refs)
}

/// The refs of `current` that are new or point elsewhere than in `previous`, in `current`'s
/// order. Refs that disappeared are not reported: a deletion starts no run.
pub fn changes(previous: &HashMap<String, String>, current: &[(String, String)]) -> Vec<RefChange> {
    current
        .iter()
        .filter_map(|(git_ref, sha)| match previous.get(git_ref) {
            Some(before) if before == sha => None,
            before => Some(RefChange {
                git_ref: git_ref.clone(),
                before: before.cloned(),
                after: sha.clone(),
            }),
        })
        .collect()
}
