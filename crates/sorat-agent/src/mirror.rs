//! Bare mirrors of the repositories an agent builds, one per URL, fetched only when a
//! job's commit is not in it yet. Jobs check out from the mirror (`git clone --shared`), so a
//! repository crosses the network once per new commit, not once per job.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::Command;

/// The mirrors under one folder.
pub struct Mirrors {
    root: PathBuf,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Mirrors {
    /// Mirrors kept under `root`.
    pub fn new(root: PathBuf) -> Mirrors {
        Mirrors {
            root,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// The mirror of `url` with `sha` in it: fetched when the commit is missing.
    pub async fn fetch(&self, url: &str, sha: &str) -> Result<PathBuf, String> {
        if sha.is_empty() || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("`{sha}` is not a commit id"));
        }
        let (dir, lock) = self.open(url).await?;
        let _guard = lock.lock().await;
        if has_commit(&dir, sha).await {
            return Ok(dir);
        }
        fetch_all(&dir, url).await?;
        if !has_commit(&dir, sha).await {
            // A commit no branch or tag points at (a pull request's head): ask for it.
            git(&dir, &["fetch", "--quiet", url, sha]).await?;
        }
        if has_commit(&dir, sha).await {
            Ok(dir)
        } else {
            Err(format!("commit {sha} is not in {url}"))
        }
    }
}

impl Mirrors {
    /// Fetches `url` once and resolves the first of `candidates` that names a commit; its
    /// index and the commit id.
    pub async fn resolve_first(
        &self,
        url: &str,
        candidates: &[String],
    ) -> Result<(usize, String), String> {
        if candidates
            .iter()
            .any(|candidate| candidate.starts_with('-'))
        {
            return Err("a ref cannot start with `-`".into());
        }
        let (dir, lock) = self.open(url).await?;
        let _guard = lock.lock().await;
        fetch_all(&dir, url).await?;
        for (index, candidate) in candidates.iter().enumerate() {
            let spec = format!("{candidate}^{{commit}}");
            if let Ok(sha) = git(&dir, &["rev-parse", "--verify", "--quiet", &spec]).await {
                return Ok((index, sha));
            }
        }
        Err(format!(
            "`{}` is not a branch, tag or commit of {url}",
            candidates.last().map_or("", String::as_str)
        ))
    }

    /// Fetches `url` and resolves `reference` (a full ref, a branch, a tag or a commit) to a
    /// commit id.
    pub async fn resolve(&self, url: &str, reference: &str) -> Result<String, String> {
        if reference.starts_with('-') {
            return Err(format!("`{reference}` is not a ref"));
        }
        let (dir, lock) = self.open(url).await?;
        let _guard = lock.lock().await;
        fetch_all(&dir, url).await?;
        git(
            &dir,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{reference}^{{commit}}"),
            ],
        )
        .await
        .map_err(|_| format!("`{reference}` is not a branch, tag or commit of {url}"))
    }
}

impl Mirrors {
    /// The mirror folder of `url` (created empty when new) and the lock that serialises
    /// the work on it.
    async fn open(&self, url: &str) -> Result<(PathBuf, Arc<tokio::sync::Mutex<()>>), String> {
        let name = blake3::hash(url.as_bytes()).to_hex()[..24].to_string();
        let dir = self.root.join(format!("{name}.git"));
        let lock = {
            let mut locks = self.locks.lock().map_err(|_| "mirror lock poisoned")?;
            Arc::clone(locks.entry(name).or_default())
        };
        {
            let _guard = lock.lock().await;
            if !dir.join("HEAD").exists() {
                tokio::fs::create_dir_all(&dir)
                    .await
                    .map_err(|error| format!("{}: {error}", dir.display()))?;
                git(&dir, &["init", "--quiet", "--bare"]).await?;
            }
        }
        Ok((dir, lock))
    }
}

/// Every branch and tag of `url` into the mirror, moved and pruned as upstream has them.
async fn fetch_all(dir: &Path, url: &str) -> Result<String, String> {
    git(
        dir,
        &[
            "fetch",
            "--quiet",
            "--force",
            "--prune",
            url,
            "+refs/heads/*:refs/heads/*",
            "+refs/tags/*:refs/tags/*",
        ],
    )
    .await
}

async fn has_commit(dir: &Path, sha: &str) -> bool {
    git(dir, &["cat-file", "-e", &format!("{sha}^{{commit}}")])
        .await
        .is_ok()
}

async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let run = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .map_err(|_| format!("git {} took more than 10 minutes", args.join(" ")))?
        .map_err(|error| format!("git: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
