//! Reading a file of a repository at a commit, from the server's mirror.

use std::path::Path;
use std::time::Duration;

/// The text of `path` at `sha`, or why not.
pub async fn show_file(mirror: &Path, sha: &str, path: &str) -> Result<String, String> {
    let run = tokio::process::Command::new("git")
        .args(["show", &format!("{sha}:{path}")])
        .current_dir(mirror)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .map_err(|_| "git show took more than a minute".to_string())?
        .map_err(|error| format!("git: {error}"))?;
    if !output.status.success() {
        return Err(format!("there is no `{path}` in that commit"));
    }
    String::from_utf8(output.stdout).map_err(|_| format!("`{path}` is not UTF-8 text"))
}

async fn git_lines(mirror: &Path, args: &[&str]) -> Vec<String> {
    let output = tokio::process::Command::new("git")
        .args(args)
        .current_dir(mirror)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    match output {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// The files a push changed: between `before` and `after`, or those of `after` alone when
/// the ref is new.
pub async fn changed_files(mirror: &Path, before: Option<&str>, after: &str) -> Vec<String> {
    match before {
        Some(before) => {
            git_lines(
                mirror,
                &["diff", "--name-only", "--no-renames", before, after],
            )
            .await
        }
        None => {
            git_lines(
                mirror,
                &["show", "--name-only", "--format=", "--no-renames", after],
            )
            .await
        }
    }
}

/// The first line of a commit's message.
pub async fn subject(mirror: &Path, sha: &str) -> String {
    git_lines(mirror, &["log", "-1", "--format=%s", sha])
        .await
        .into_iter()
        .next()
        .unwrap_or_default()
}
