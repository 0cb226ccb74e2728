//! The few git operations a local run needs, through the `git` command.
//!
//! The `git` program is the reference implementation of its own formats and of the user's
//! configuration (alternates, worktrees, safe.directory, hooks); a library would disagree
//! with it at the edges, and a run needs only a handful of commands.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A git command failed.
#[derive(Debug, thiserror::Error)]
#[error("git {args}: {message}")]
pub struct GitError {
    /// The arguments, for the message.
    pub args: String,
    /// What git said.
    pub message: String,
}

/// Runs git in `dir` and returns its trimmed standard output.
pub fn git(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|error| GitError {
            args: args.join(" "),
            message: format!("cannot start git: {error}"),
        })?;
    if !output.status.success() {
        return Err(GitError {
            args: args.join(" "),
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_string())
}

/// Runs git and returns NUL-separated output entries.
fn git_z(dir: &Path, args: &[&str]) -> Result<Vec<String>, GitError> {
    let output = git(dir, args)?;
    Ok(output
        .split('\0')
        .filter(|entry| !entry.is_empty())
        .map(str::to_string)
        .collect())
}

/// What a local run knows of the repository it runs from.
#[derive(Clone, Debug)]
pub struct RepoState {
    /// The top of the work tree.
    pub root: PathBuf,
    /// The commit (`HEAD`).
    pub sha: String,
    /// `refs/heads/<branch>`, or `refs/tags/<tag>` on a detached tagged commit, or the sha.
    pub git_ref: String,
    /// The short name of the ref.
    pub ref_name: String,
    /// `branch` or `tag`.
    pub ref_type: String,
    /// Files changed by the commit (against its first parent), for `paths` filters.
    pub changed_files: Vec<String>,
    /// The repository's folder name, as `owner/name` is unknown locally.
    pub name: String,
}

/// Finds the repository around `dir` and reads its `HEAD`.
pub fn repo_state(dir: &Path) -> Result<RepoState, GitError> {
    let root = PathBuf::from(git(dir, &["rev-parse", "--show-toplevel"])?);
    // A repository without a commit has no sha; only a `--dirty` run can use it.
    let sha = git(&root, &["rev-parse", "--verify", "-q", "HEAD^{commit}"]).unwrap_or_default();
    let (git_ref, ref_name, ref_type) = match git(&root, &["symbolic-ref", "-q", "HEAD"]) {
        Ok(full) => {
            let short = full
                .strip_prefix("refs/heads/")
                .unwrap_or(&full)
                .to_string();
            (full, short, "branch".to_string())
        }
        Err(_) if sha.is_empty() => (String::new(), String::new(), "branch".to_string()),
        Err(_) => match git(&root, &["describe", "--tags", "--exact-match", "HEAD"]) {
            Ok(tag) => (format!("refs/tags/{tag}"), tag, "tag".to_string()),
            Err(_) => (sha.clone(), sha.clone(), "branch".to_string()),
        },
    };
    let changed_files = if sha.is_empty() {
        git_z(
            &root,
            &[
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
        )
        .unwrap_or_default()
    } else {
        git_z(
            &root,
            &[
                "diff-tree",
                "--no-commit-id",
                "--name-only",
                "-r",
                "-z",
                "--root",
                "HEAD",
            ],
        )
        .unwrap_or_default()
    };
    let name = root.file_name().map_or_else(
        || "repository".to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok(RepoState {
        root,
        sha,
        git_ref,
        ref_name,
        ref_type,
        changed_files,
        name,
    })
}

/// Files of the working copy that differ from `HEAD`: changed or staged (present or deleted)
/// and untracked but not ignored.
pub fn dirty_files(root: &Path) -> Result<Vec<String>, GitError> {
    let has_head = git(root, &["rev-parse", "--verify", "-q", "HEAD^{commit}"]).is_ok();
    let mut files = if has_head {
        git_z(root, &["diff", "--name-only", "-z", "HEAD"])?
    } else {
        // Before the first commit, everything staged differs from the (empty) HEAD.
        git_z(root, &["ls-files", "-z", "--cached"])?
    };
    files.extend(git_z(
        root,
        &["ls-files", "-z", "--others", "--exclude-standard"],
    )?);
    files.sort();
    files.dedup();
    Ok(files)
}

/// Puts `commit` of the repository at `source` into `dest`: a clone that borrows the
/// source's objects (`--shared`), so only the checked-out files are written. Without a commit
/// (a repository before its first one), `dest` becomes an empty repository for the working
/// copy's files to be laid into.
pub fn checkout(source: &Path, commit: &str, dest: &Path) -> Result<(), GitError> {
    if commit.is_empty() {
        std::fs::create_dir_all(dest).map_err(|error| GitError {
            args: "init".into(),
            message: error.to_string(),
        })?;
        git(dest, &["init", "--quiet"])?;
        return Ok(());
    }
    let dest_text = dest.to_string_lossy();
    let source_text = source.to_string_lossy();
    git(
        source,
        &[
            "clone",
            "--quiet",
            "--shared",
            "--no-checkout",
            &source_text,
            &dest_text,
        ],
    )?;
    git(
        dest,
        &[
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "--quiet",
            "--detach",
            commit,
        ],
    )?;
    Ok(())
}

/// Resolves a ref, tag, branch or sha to a commit.
pub fn resolve_commit(root: &Path, reference: &str) -> Result<String, GitError> {
    git(
        root,
        &["rev-parse", "--verify", &format!("{reference}^{{commit}}")],
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// A real repository with one commit, for tests.
    pub(crate) fn repo_with_commit(dir: &Path, files: &[(&str, &str)]) {
        git(dir, &["init", "-q", "-b", "main"]).unwrap();
        for (path, content) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        git(dir, &["add", "-A"]).unwrap();
        git(
            dir,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-q",
                "-m",
                "first",
            ],
        )
        .unwrap();
    }

    #[test]
    fn reads_head_and_checks_out_a_commit() {
        let temp = tempfile::tempdir().unwrap();
        let repo = temp.path().join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        repo_with_commit(&repo, &[("a.txt", "one"), ("dir/b.txt", "two")]);
        std::fs::write(repo.join("a.txt"), "uncommitted").unwrap();
        std::fs::write(repo.join("new.txt"), "untracked").unwrap();

        let state = repo_state(&repo).unwrap();
        assert_eq!(state.git_ref, "refs/heads/main");
        assert_eq!(state.sha.len(), 40);
        assert_eq!(state.changed_files, vec!["a.txt", "dir/b.txt"]);
        assert_eq!(dirty_files(&repo).unwrap(), vec!["a.txt", "new.txt"]);

        let dest = temp.path().join("ws");
        checkout(&repo, &state.sha, &dest).unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("a.txt")).unwrap(), "one");
        assert!(!dest.join("new.txt").exists());
    }
}
