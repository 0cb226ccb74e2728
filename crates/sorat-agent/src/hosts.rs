//! The agent's part in `agent` targets: it takes operations on its host's release folders
//! from the server (`POST /api/v1/agent/ops`, a long poll), carries them out with
//! `sorat-deploy`'s [`HostExecutor`] — fetching a release's files by digest from the
//! server's artifact repository first, and checking each — and answers
//! (`POST /api/v1/agent/ops/{id}`). The services it starts are its children: they stop
//! when the agent stops.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use sorat_deploy::agent::{HostExecutor, HostOp};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::AgentOptions;
use crate::publish::sha256_file;

/// An operation as the server hands it out.
#[derive(Debug, Deserialize)]
struct Taken {
    id: u64,
    dir: String,
    op: HostOp,
}

/// Takes and carries out operations until `stop` is cancelled; then stops the services.
pub(crate) async fn serve(
    options: Arc<AgentOptions>,
    client: reqwest::Client,
    stop: CancellationToken,
) {
    let (lines, mut receiver) = tokio::sync::mpsc::channel(1024);
    let executor = Arc::new(HostExecutor::new(Some(lines)));
    // The services' lines go to the agent's log and, in batches, to the server, which puts
    // them in their environments' logs.
    let forward = (Arc::clone(&options), client.clone(), Arc::clone(&executor));
    tokio::spawn(async move {
        let (options, client, executor) = forward;
        let mut batch: Vec<Value> = Vec::new();
        let mut warned = false;
        while let Some(first) = receiver.recv().await {
            let deadline = tokio::time::Instant::now() + LINE_BATCH_WAIT;
            let mut next = Some(first);
            while let Some(mut line) = next.take() {
                // The server masks them too; this keeps the service's secrets out of the
                // agent's own log.
                line.line = executor.mask(&line.line);
                tracing::info!(
                    target: "sorat::service",
                    host = %line.host,
                    release = line.release,
                    "{}",
                    line.line
                );
                batch.push(json!({
                    "host": line.host,
                    "release": line.release,
                    "stream": match line.stream {
                        sorat_deploy::Stream::Stdout => "stdout",
                        sorat_deploy::Stream::Stderr => "stderr",
                    },
                    "line": line.line,
                }));
                if batch.len() < LINE_BATCH {
                    next = tokio::time::timeout_at(deadline, receiver.recv())
                        .await
                        .ok()
                        .flatten();
                }
            }
            let sent = client
                .post(format!("{}/api/v1/agent/lines", options.server))
                .bearer_auth(&options.token)
                .timeout(Duration::from_secs(10))
                .json(&json!({ "name": options.name, "lines": batch }))
                .send()
                .await
                .map_err(|error| error.to_string())
                .and_then(|response| {
                    if response.status().is_success() {
                        Ok(())
                    } else {
                        Err(format!("HTTP {}", response.status().as_u16()))
                    }
                });
            match sent {
                Ok(()) => warned = false,
                Err(error) if !warned => {
                    warned = true;
                    tracing::warn!(%error, "cannot send the services' lines to the server; they stay in this log");
                }
                Err(_) => {}
            }
            batch.clear();
        }
    });
    let mut backoff = Duration::from_millis(100);
    loop {
        let taken = tokio::select! {
            taken = take(&options, &client) => taken,
            () = stop.cancelled() => break,
        };
        match taken {
            Ok(Some(taken)) => {
                backoff = Duration::from_millis(100);
                let executor = Arc::clone(&executor);
                let options = Arc::clone(&options);
                let client = client.clone();
                tokio::spawn(async move {
                    let id = taken.id;
                    let result = carry_out(&options, &client, &executor, taken).await;
                    let body = match result {
                        Ok(value) => json!({ "ok": true, "value": value }),
                        Err(error) => json!({ "ok": false, "error": error }),
                    };
                    let sent = client
                        .post(format!("{}/api/v1/agent/ops/{id}", options.server))
                        .bearer_auth(&options.token)
                        .timeout(Duration::from_secs(30))
                        .json(&body)
                        .send()
                        .await;
                    if let Err(error) = sent {
                        tracing::warn!(operation = id, %error, "cannot answer a host operation");
                    }
                });
            }
            Ok(None) => backoff = Duration::from_millis(100),
            Err(error) => {
                tracing::debug!(%error, "taking host operations failed; retrying in {backoff:?}");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    executor.stop_all(Duration::from_secs(10)).await;
}

async fn take(options: &AgentOptions, client: &reqwest::Client) -> Result<Option<Taken>, String> {
    let response = client
        .post(format!("{}/api/v1/agent/ops", options.server))
        .bearer_auth(&options.token)
        .timeout(Duration::from_secs(40))
        .json(&json!({ "name": options.name, "wait_ms": 20_000 }))
        .send()
        .await
        .map_err(|error| error.to_string())?;
    match response.status().as_u16() {
        200 => response
            .json::<Taken>()
            .await
            .map(Some)
            .map_err(|error| error.to_string()),
        204 => Ok(None),
        code => Err(format!("HTTP {code}")),
    }
}

async fn carry_out(
    options: &AgentOptions,
    client: &reqwest::Client,
    executor: &HostExecutor,
    taken: Taken,
) -> Result<Value, String> {
    let dir = PathBuf::from(&taken.dir);
    let cache = options.data_dir.join(BLOB_CACHE);
    let mut op = taken.op;
    if let HostOp::Prepare { files, .. } = &mut op {
        for file in files {
            file.source = Some(fetch(options, client, &cache, &file.digest).await?);
        }
    }
    let prune = matches!(op, HostOp::Prune { .. });
    let result = executor.execute(&options.name, &dir, op).await;
    if prune && result.is_ok() {
        let host = dir.clone();
        let removed = tokio::task::spawn_blocking(move || prune_cache(&cache, &host, CACHE_GRACE))
            .await
            .unwrap_or_default();
        if removed > 0 {
            tracing::debug!(dir = %dir.display(), removed, "deploy blobs removed from the cache");
        }
    }
    result
}

/// The folder, in the agent's data folder, that caches release files by digest.
const BLOB_CACHE: &str = "deploy-blobs";

/// At most this many service lines go to the server in one request...
const LINE_BATCH: usize = 500;
/// ...gathered for at most this long after the first.
const LINE_BATCH_WAIT: Duration = Duration::from_millis(200);

/// How long a cached blob no release of the pruned folder uses stays (another folder's
/// deploy may be using it).
const CACHE_GRACE: Duration = Duration::from_secs(600);

/// After a prune of `host`'s releases: removes the cached blobs that none of its releases
/// uses and that were not written for `grace` (a cache miss costs a download, nothing
/// else: release files are copies). Returns how many were removed.
fn prune_cache(cache: &Path, host: &Path, grace: Duration) -> usize {
    let folder = sorat_deploy::Host::new("", host);
    let mut used: Vec<String> = Vec::new();
    for number in folder.releases().unwrap_or_default() {
        if let Ok(record) = folder.record(number) {
            used.extend(
                record
                    .files
                    .iter()
                    .filter_map(|file| file.digest.strip_prefix("sha256:"))
                    .map(str::to_owned),
            );
        }
    }
    let Ok(entries) = std::fs::read_dir(cache) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let hex = name.strip_suffix(".partial").unwrap_or(&name);
        if used.iter().any(|digest| digest == hex) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|metadata| metadata.modified())
            .is_ok_and(|modified| now.duration_since(modified).unwrap_or_default() >= grace);
        if old && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The blob `digest` in the local cache, downloaded from the server when missing and checked
/// against its digest either way.
async fn fetch(
    options: &AgentOptions,
    client: &reqwest::Client,
    cache: &Path,
    digest: &str,
) -> Result<PathBuf, String> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()))
        .ok_or_else(|| format!("invalid digest `{digest}`"))?;
    tokio::fs::create_dir_all(cache)
        .await
        .map_err(|error| format!("{}: {error}", cache.display()))?;
    let path = cache.join(hex);
    if verified(&path, digest).await {
        return Ok(path);
    }
    let mut response = client
        .get(format!(
            "{}/api/v1/artifacts/blobs/{digest}",
            options.server
        ))
        .bearer_auth(&options.token)
        .timeout(Duration::from_secs(3600))
        .send()
        .await
        .map_err(|error| format!("fetching {digest}: {error}"))?;
    if !response.status().is_success() {
        return Err(format!(
            "fetching {digest}: HTTP {}",
            response.status().as_u16()
        ));
    }
    let partial = cache.join(format!("{hex}.partial"));
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(|error| format!("{}: {error}", partial.display()))?;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| format!("fetching {digest}: {error}"))?
    {
        file.write_all(&chunk)
            .await
            .map_err(|error| format!("{}: {error}", partial.display()))?;
    }
    file.sync_all()
        .await
        .map_err(|error| format!("{}: {error}", partial.display()))?;
    drop(file);
    if !verified(&partial, digest).await {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(format!(
            "{digest}: what the server sent does not have this digest"
        ));
    }
    tokio::fs::rename(&partial, &path)
        .await
        .map_err(|error| format!("{}: {error}", path.display()))?;
    Ok(path)
}

async fn verified(path: &Path, digest: &str) -> bool {
    let path = path.to_path_buf();
    let digest = digest.to_owned();
    tokio::task::spawn_blocking(move || sha256_file(&path).is_ok_and(|actual| actual == digest))
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_cache_keeps_what_the_folders_releases_use_and_what_is_recent() {
        let temp = tempfile::tempdir().unwrap();
        let cache = temp.path().join("deploy-blobs");
        std::fs::create_dir_all(&cache).unwrap();
        let host_dir = temp.path().join("host");
        let source = temp.path().join("app.py");
        std::fs::write(&source, "print('hi')").unwrap();
        let digest = sorat_deploy::digest_file(&source).unwrap();
        sorat_deploy::Host::new("h", &host_dir)
            .prepare(
                1,
                &sorat_deploy::ReleaseMeta {
                    artifact: "app@1".to_owned(),
                    digest: digest.clone(),
                    who: "test".to_owned(),
                    config: None,
                },
                &[sorat_deploy::ReleaseFile {
                    path: "app.py".into(),
                    source,
                    mode: 0o644,
                    digest: digest.clone(),
                }],
            )
            .unwrap();
        let used = digest.strip_prefix("sha256:").unwrap().to_owned();
        let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        let put = |name: &str, old: bool| {
            let path = cache.join(name);
            std::fs::write(&path, name).unwrap();
            if old {
                std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_modified(an_hour_ago)
                    .unwrap();
            }
        };
        let unused_old = "ab".repeat(32);
        let unused_new = "cd".repeat(32);
        put(&used, true);
        put(&unused_old, true);
        put(&unused_new, false);
        put(&format!("{}.partial", "ef".repeat(32)), true);
        assert_eq!(prune_cache(&cache, &host_dir, Duration::from_secs(600)), 2);
        let mut left: Vec<String> = std::fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut expected = vec![used, unused_new];
        expected.sort();
        assert_eq!(left, expected);
    }
}
