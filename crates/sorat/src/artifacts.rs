//! `sorat artifacts list|get|verify`: the server's artifact repository from the terminal,
//! and the local repository that `publish-artifact` uses under `sorat run`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use sorat_artifacts::{
    ArtifactStore, Attachment, FileRef, Metadata, PublishRequest, StorageConfig,
};
use sorat_pipeline::exec::{ArtifactPublisher, PublishFiles, PublishedArtifact};

use crate::exit;
use crate::server::{Client, ClientArgs, Failed, finish, runtime};

/// `sorat artifacts ...`.
#[derive(clap::Subcommand)]
pub(crate) enum ArtifactsCommand {
    /// Artifacts, newest first (all names, or one name's versions).
    List {
        /// Only this name.
        name: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Download an artifact's files into a folder, each checked against its digest.
    Get {
        /// `NAME@VERSION`.
        artifact: String,
        /// Where to put the files (default: a folder named NAME-VERSION).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Check an artifact's signature and every file's digest; exit 1 when anything is wrong.
    Verify {
        /// `NAME@VERSION`.
        artifact: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn split(artifact: &str) -> Result<(&str, &str), Failed> {
    artifact
        .rsplit_once('@')
        .filter(|(name, version)| !name.is_empty() && !version.is_empty())
        .ok_or_else(|| Failed(format!("`{artifact}` must be NAME@VERSION"), exit::INVALID))
}

/// Runs a `sorat artifacts` command.
pub(crate) fn command(command: ArtifactsCommand) -> u8 {
    let Some(runtime) = runtime() else {
        return exit::FAILURE;
    };
    finish(runtime.block_on(async move {
        match command {
            ArtifactsCommand::List { name, client } => {
                let client = Client::new(&client)?;
                let query = name.map(|n| format!("?name={n}")).unwrap_or_default();
                let list = client
                    .send(
                        reqwest::Method::GET,
                        &format!("/api/v1/artifacts{query}"),
                        None,
                    )
                    .await?;
                println!(
                    "{:<24} {:<20} {:>10} {:<24} DIGEST",
                    "NAME", "VERSION", "SIZE", "CREATED"
                );
                for artifact in list["artifacts"].as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<20} {:>10} {:<24} {}",
                        artifact["name"].as_str().unwrap_or(""),
                        artifact["version"].as_str().unwrap_or(""),
                        artifact["size"].as_u64().unwrap_or(0),
                        artifact["created_at"].as_str().unwrap_or(""),
                        artifact["digest"].as_str().unwrap_or(""),
                    );
                }
                Ok(exit::SUCCESS)
            }
            ArtifactsCommand::Get {
                artifact,
                out,
                client,
            } => {
                let (name, version) = split(&artifact)?;
                let client = Client::new(&client)?;
                let manifest = client
                    .send(
                        reqwest::Method::GET,
                        &format!("/api/v1/artifacts/{name}/{version}"),
                        None,
                    )
                    .await?;
                let out = out.unwrap_or_else(|| PathBuf::from(format!("{name}-{version}")));
                let mut count = 0;
                for file in manifest["files"].as_array().into_iter().flatten() {
                    let path = file["path"].as_str().unwrap_or("");
                    let digest = file["digest"].as_str().unwrap_or("");
                    let target = safe_join(&out, path).ok_or_else(|| {
                        Failed(
                            format!("unsafe path `{path}` in the manifest"),
                            exit::FAILURE,
                        )
                    })?;
                    let bytes = client
                        .http
                        .get(format!("{}/api/v1/artifacts/blobs/{digest}", client.base))
                        .bearer_auth(&client.token)
                        .send()
                        .await
                        .and_then(reqwest::Response::error_for_status)
                        .map_err(|error| Failed(format!("{path}: {error}"), exit::FAILURE))?
                        .bytes()
                        .await
                        .map_err(|error| Failed(format!("{path}: {error}"), exit::FAILURE))?;
                    let actual = {
                        use sha2::Digest as _;
                        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
                    };
                    if actual != digest {
                        return Err(Failed(
                            format!(
                                "{path}: downloaded bytes are {actual}, the manifest says {digest}"
                            ),
                            exit::FAILURE,
                        ));
                    }
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent).map_err(|error| {
                            Failed(format!("{}: {error}", parent.display()), exit::FAILURE)
                        })?;
                    }
                    std::fs::write(&target, &bytes).map_err(|error| {
                        Failed(format!("{}: {error}", target.display()), exit::FAILURE)
                    })?;
                    if let Some(mode) = file["mode"].as_u64() {
                        use std::os::unix::fs::PermissionsExt;
                        let _ = std::fs::set_permissions(
                            &target,
                            std::fs::Permissions::from_mode(mode as u32 & 0o7777),
                        );
                    }
                    count += 1;
                }
                eprintln!("{count} file(s) of {name}@{version} in {}", out.display());
                Ok(exit::SUCCESS)
            }
            ArtifactsCommand::Verify { artifact, client } => {
                let (name, version) = split(&artifact)?;
                let client = Client::new(&client)?;
                let report = client
                    .send(
                        reqwest::Method::POST,
                        &format!("/api/v1/artifacts/{name}/{version}/verify"),
                        None,
                    )
                    .await?;
                let problems: Vec<&str> = report["problems"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.as_str())
                    .collect();
                for problem in &problems {
                    println!("{problem}");
                }
                if report["ok"].as_bool() == Some(true) {
                    println!("{name}@{version}: signature and every file verified");
                    Ok(exit::SUCCESS)
                } else {
                    println!(
                        "{name}@{version}: NOT verified ({} problem(s))",
                        problems.len()
                    );
                    Ok(exit::FAILURE)
                }
            }
        }
    }))
}

/// `root/path` when `path` is relative and stays inside `root`.
fn safe_join(root: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path);
    let clean = relative
        .components()
        .all(|part| matches!(part, std::path::Component::Normal(_)));
    (clean && !path.is_empty()).then(|| root.join(relative))
}

/// The repository `sorat run` publishes to: `<data>/artifacts`, signed with
/// `<data>/artifacts.key`.
#[derive(Clone, Debug)]
pub(crate) struct LocalPublisher {
    /// The data folder.
    pub(crate) data: PathBuf,
}

impl ArtifactPublisher for LocalPublisher {
    fn publish(
        &self,
        request: PublishFiles,
    ) -> Pin<Box<dyn Future<Output = Result<PublishedArtifact, String>> + Send>> {
        let data = self.data.clone();
        Box::pin(async move {
            let store = ArtifactStore::open(
                StorageConfig::Local(data.join("artifacts")),
                &data.join("artifacts.key"),
            )
            .await
            .map_err(|error| error.to_string())?;
            let mut files = Vec::new();
            for (path, disk, mode) in &request.files {
                let bytes = tokio::fs::read(disk)
                    .await
                    .map_err(|error| format!("{path}: {error}"))?;
                let size = bytes.len() as u64;
                let digest = store
                    .put_blob_bytes(bytes.into())
                    .await
                    .map_err(|error| error.to_string())?;
                files.push(FileRef {
                    path: path.clone(),
                    digest,
                    size,
                    mode: *mode,
                });
            }
            let mut attachments = Vec::new();
            for (kind, disk, media_type) in &request.attachments {
                let bytes = tokio::fs::read(disk)
                    .await
                    .map_err(|error| format!("{kind}: {}: {error}", disk.display()))?;
                let digest = store
                    .put_blob_bytes(bytes.into())
                    .await
                    .map_err(|error| error.to_string())?;
                attachments.push(Attachment {
                    kind: kind.clone(),
                    digest,
                    media_type: media_type.clone(),
                });
            }
            let origin = &request.origin;
            let published = store
                .publish(&PublishRequest {
                    name: request.name.clone(),
                    version: request.version.clone(),
                    files,
                    attachments,
                    metadata: Metadata {
                        project: Some(origin.project.clone()),
                        commit: Some(origin.commit.clone()),
                        git_ref: Some(origin.git_ref.clone()),
                        run: Some(origin.run as i64),
                        job: Some(origin.job.clone()),
                        publisher: std::env::var("USER").ok(),
                    },
                    moving: request.moving,
                })
                .await
                .map_err(|error| error.to_string())?;
            Ok(PublishedArtifact {
                digest: published.artifact.digest.to_string(),
                created: published.created,
                size: published.artifact.size,
            })
        })
    }
}
