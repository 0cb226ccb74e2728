//! `publish-artifact` on an agent: the files go to the server's artifact repository. Each
//! file is hashed (SHA-256) here; the server says which blobs it lacks; those are uploaded
//! (streamed from disk, checked against their digest by the server); then the manifest is
//! published, and the server signs it.

use std::future::Future;
use std::io::Read;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use sorat_pipeline::exec::{ArtifactPublisher, Deployer, PublishFiles, PublishedArtifact};

/// Publishes through the server's API with the agent's token.
#[derive(Clone, Debug)]
pub struct HttpPublisher {
    /// The server's base URL.
    pub server: String,
    /// The agent token.
    pub token: String,
    /// The client.
    pub client: reqwest::Client,
    /// The job this agent runs and its lease, sent with a deploy: the server lets an agent
    /// deploy only for a running deployment job that passed its environment's protection.
    pub job: Option<(i64, String)>,
}

/// `sha256:<hex>` of a file, read in blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

impl HttpPublisher {
    async fn answer(response: reqwest::Response) -> Result<Value, String> {
        let status = response.status();
        let text = response.text().await.map_err(|error| error.to_string())?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            Ok(value)
        } else {
            let message = value["error"]["message"]
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            Err(format!("HTTP {}: {message}", status.as_u16()))
        }
    }

    async fn publish_files(&self, request: PublishFiles) -> Result<PublishedArtifact, String> {
        let mut files = Vec::new();
        for (path, disk, mode) in &request.files {
            let disk = disk.clone();
            let digest = tokio::task::spawn_blocking(move || sha256_file(&disk))
                .await
                .map_err(|error| error.to_string())?
                .map_err(|error| format!("{path}: {error}"))?;
            let size = std::fs::metadata(path_on_disk(&request, path))
                .map_err(|error| format!("{path}: {error}"))?
                .len();
            files.push((path.clone(), digest, size, *mode));
        }
        let mut attachments = Vec::new();
        for (kind, disk, media_type) in &request.attachments {
            let disk_path = disk.clone();
            let digest = tokio::task::spawn_blocking(move || sha256_file(&disk_path))
                .await
                .map_err(|error| error.to_string())?
                .map_err(|error| format!("{kind}: {error}"))?;
            attachments.push((kind.clone(), digest, media_type.clone(), disk.clone()));
        }
        let digests: Vec<&str> = files
            .iter()
            .map(|(_, digest, _, _)| digest.as_str())
            .chain(attachments.iter().map(|(_, digest, _, _)| digest.as_str()))
            .collect();
        let missing = Self::answer(
            self.client
                .post(format!("{}/api/v1/artifacts/blobs/missing", self.server))
                .bearer_auth(&self.token)
                .timeout(Duration::from_secs(60))
                .json(&json!({ "digests": digests }))
                .send()
                .await
                .map_err(|error| error.to_string())?,
        )
        .await?;
        let missing: Vec<String> = missing["missing"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let uploads = files
            .iter()
            .map(|(path, digest, _, _)| (path.clone(), digest, path_on_disk(&request, path)))
            .chain(
                attachments
                    .iter()
                    .map(|(kind, digest, _, disk)| (kind.clone(), digest, disk.as_path())),
            );
        let mut sent: Vec<&String> = Vec::new();
        for (path, digest, disk) in uploads {
            if !missing.contains(digest) || sent.contains(&digest) {
                continue;
            }
            sent.push(digest);
            let file = tokio::fs::File::open(disk)
                .await
                .map_err(|error| format!("{path}: {error}"))?;
            let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
            Self::answer(
                self.client
                    .put(format!("{}/api/v1/artifacts/blobs/{digest}", self.server))
                    .bearer_auth(&self.token)
                    .timeout(Duration::from_secs(3600))
                    .body(body)
                    .send()
                    .await
                    .map_err(|error| format!("uploading {path}: {error}"))?,
            )
            .await
            .map_err(|error| format!("uploading {path}: {error}"))?;
        }
        let origin = &request.origin;
        let body = json!({
            "name": request.name,
            "version": request.version,
            "moving": request.moving,
            "files": files.iter().map(|(path, digest, size, mode)| json!({
                "path": path, "digest": digest, "size": size, "mode": mode,
            })).collect::<Vec<_>>(),
            "attachments": attachments.iter().map(|(kind, digest, media_type, _)| json!({
                "kind": kind, "digest": digest, "media_type": media_type,
            })).collect::<Vec<_>>(),
            "metadata": {
                "project": origin.project,
                "commit": origin.commit,
                "git_ref": origin.git_ref,
                "run": origin.run,
                "job": origin.job,
                "publisher": null,
            },
        });
        let published = Self::answer(
            self.client
                .post(format!("{}/api/v1/artifacts", self.server))
                .bearer_auth(&self.token)
                .timeout(Duration::from_secs(60))
                .json(&body)
                .send()
                .await
                .map_err(|error| error.to_string())?,
        )
        .await?;
        Ok(PublishedArtifact {
            digest: published["artifact"]["digest"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            created: published["created"].as_bool().unwrap_or(true),
            size: published["artifact"]["size"].as_u64().unwrap_or(0),
        })
    }
}

fn path_on_disk<'a>(request: &'a PublishFiles, path: &str) -> &'a Path {
    request
        .files
        .iter()
        .find(|(name, _, _)| name == path)
        .map_or(Path::new(""), |(_, disk, _)| disk.as_path())
}

impl ArtifactPublisher for HttpPublisher {
    fn publish(
        &self,
        request: PublishFiles,
    ) -> Pin<Box<dyn Future<Output = Result<PublishedArtifact, String>> + Send>> {
        let publisher = self.clone();
        Box::pin(async move { publisher.publish_files(request).await })
    }
}

impl Deployer for HttpPublisher {
    fn deploy(
        &self,
        environment: String,
        artifact: String,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> {
        let publisher = self.clone();
        Box::pin(async move {
            let response = publisher
                .client
                .post(format!(
                    "{}/api/v1/environments/{environment}/deploy",
                    publisher.server
                ))
                .bearer_auth(&publisher.token)
                // A deploy may bake for long, or wait for a person's decision; the job's own
                // `timeout-minutes` bounds it, not this request.
                .timeout(Duration::from_secs(24 * 3600))
                .json(&match &publisher.job {
                    Some((job, lease)) => {
                        json!({ "artifact": artifact, "job": job, "lease": lease })
                    }
                    None => json!({ "artifact": artifact }),
                })
                .send()
                .await
                .map_err(|error| error.to_string())?;
            let status = response.status();
            let report: Value = response.json().await.map_err(|error| error.to_string())?;
            if status.is_success() {
                return Ok(format!(
                    "release {} on {} host(s) in {} ms",
                    report["release"],
                    report["hosts"].as_array().map_or(0, Vec::len),
                    report["elapsed_ms"]
                ));
            }
            match report["reason"]
                .as_str()
                .or(report["error"]["message"].as_str())
            {
                Some(reason) => Err(format!(
                    "{} ({})",
                    reason,
                    report["outcome"].as_str().unwrap_or("refused")
                )),
                None => Err(format!("HTTP {}", status.as_u16())),
            }
        })
    }
}
