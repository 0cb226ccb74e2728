//! The artifact repository's API: blobs by SHA-256 digest (uploaded once, checked against
//! their digest), signed immutable manifests `name@version`, listing, download, verification,
//! pins and garbage collection. Agents publish with their token (`publish-artifact`); people
//! with the developer role.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::TryStreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sorat_artifacts::{ArtifactError, Digest, PublishRequest, Retention};
use sorat_state::{Role, TokenKind};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

impl From<ArtifactError> for ApiError {
    fn from(error: ArtifactError) -> ApiError {
        let message = error.to_string();
        match error {
            ArtifactError::InvalidName { .. } => ApiError::field("name", message),
            ArtifactError::InvalidPath { .. } => ApiError::field("files", message),
            ArtifactError::Conflict { .. } => ApiError::conflict("immutable", message),
            ArtifactError::MissingBlob { .. } => ApiError::field("files", message),
            ArtifactError::DigestMismatch { .. } => ApiError::field("digest", message),
            ArtifactError::NotFound { .. } => ApiError::not_found(message),
            _ => ApiError::internal(message),
        }
    }
}

/// Agents (for their jobs) and developers may publish.
async fn may_publish(state: &Arc<AppState>, caller: &Caller) -> ApiResult<()> {
    if caller.kind == TokenKind::Agent {
        return Ok(());
    }
    caller.require(&state.store, None, Role::Developer).await
}

/// Agents (to download what they deploy) and viewers may read.
async fn may_read(state: &Arc<AppState>, caller: &Caller) -> ApiResult<()> {
    if caller.kind == TokenKind::Agent {
        return Ok(());
    }
    caller.require(&state.store, None, Role::Viewer).await
}

fn parse_digest(text: &str) -> ApiResult<Digest> {
    text.parse::<Digest>().map_err(|_| {
        ApiError::field(
            "digest",
            format!("`{text}` is not a digest; write `sha256:` and 64 hex digits"),
        )
    })
}

/// The body of `POST /api/v1/artifacts/blobs/missing`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digests {
    /// The digests the client has.
    pub digests: Vec<String>,
}

/// `POST /api/v1/artifacts/blobs/missing`: which of these blobs the repository lacks.
pub async fn missing(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<Digests>,
) -> ApiResult<Json<Value>> {
    may_publish(&state, &caller).await?;
    if body.digests.len() > 100_000 {
        return Err(ApiError::field("digests", "at most 100000 digests at once"));
    }
    let mut missing = Vec::new();
    for text in &body.digests {
        let digest = parse_digest(text)?;
        // `touch_blob` also keeps the blob from gc until the publish that counts on it.
        if !state.artifacts.touch_blob(&digest).await? && !missing.contains(text) {
            missing.push(text.clone());
        }
    }
    Ok(Json(json!({ "missing": missing })))
}

/// `PUT /api/v1/artifacts/blobs/{digest}`: the blob's bytes, streamed; refused when they do
/// not hash to the digest (nothing is stored then).
pub async fn put_blob(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(digest): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    may_publish(&state, &caller).await?;
    let digest = parse_digest(&digest)?;
    let stream = body
        .into_data_stream()
        .map_err(|error| std::io::Error::other(error.to_string()));
    let stored = state
        .artifacts
        .put_blob_expecting(&digest, Box::pin(stream))
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "digest": stored }))).into_response())
}

/// `GET /api/v1/artifacts/blobs/{digest}`: the blob, checked against its digest.
pub async fn get_blob(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(digest): Path<String>,
) -> ApiResult<Response> {
    may_read(&state, &caller).await?;
    let digest = parse_digest(&digest)?;
    if !state.artifacts.has_blob(&digest).await? {
        return Err(ApiError::not_found(format!("no blob {digest}")));
    }
    let bytes = state.artifacts.read_blob(&digest).await?;
    Ok(([("content-type", "application/octet-stream")], bytes).into_response())
}

/// `POST /api/v1/artifacts`: publishes a manifest whose blobs were uploaded.
pub async fn publish(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(mut request): Json<PublishRequest>,
) -> ApiResult<Response> {
    may_publish(&state, &caller).await?;
    request.metadata.publisher = Some(caller.name.clone());
    let published = state.artifacts.publish(&request).await?;
    let status = if published.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({ "artifact": published.artifact, "created": published.created })),
    )
        .into_response())
}

/// The query of the artifacts list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this name's versions.
    pub name: Option<String>,
}

/// `GET /api/v1/artifacts`: newest first.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    may_read(&state, &caller).await?;
    let artifacts = state.artifacts.list(query.name.as_deref()).await?;
    Ok(Json(json!({ "artifacts": artifacts })))
}

/// `GET /api/v1/artifacts/{name}/{version}`.
pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    may_read(&state, &caller).await?;
    let artifact = state
        .artifacts
        .get(&name, &version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no artifact {name}@{version}")))?;
    Ok(Json(json!(artifact)))
}

/// `GET /api/v1/artifacts/{name}/{version}/files/{*path}`: one file of the artifact.
pub async fn file(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((name, version, path)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    may_read(&state, &caller).await?;
    let artifact = state
        .artifacts
        .get(&name, &version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no artifact {name}@{version}")))?;
    let entry = artifact
        .files
        .iter()
        .find(|file| file.path == path)
        .ok_or_else(|| ApiError::not_found(format!("{name}@{version} has no file `{path}`")))?;
    let bytes = state.artifacts.read_blob(&entry.digest).await?;
    Ok(([("content-type", "application/octet-stream")], bytes).into_response())
}

/// `POST /api/v1/artifacts/{name}/{version}/verify`: signature and every blob.
pub async fn verify(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    may_read(&state, &caller).await?;
    let report = state.artifacts.verify(&name, &version, None).await?;
    Ok(Json(json!(report)))
}

/// The body of a pin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// Keep it whatever the retention says.
    pub pinned: bool,
}

/// `PUT /api/v1/artifacts/{name}/{version}/pin` (developer).
pub async fn pin(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((name, version)): Path<(String, String)>,
    Json(body): Json<Pin>,
) -> ApiResult<Response> {
    caller.require(&state.store, None, Role::Developer).await?;
    state
        .artifacts
        .set_pinned(&name, &version, body.pinned)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The body of a garbage collection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gc {
    /// Versions kept per name (besides pinned ones).
    pub keep_last: usize,
    /// Blobs younger than this many seconds are kept (uploads in flight); default 3600.
    #[serde(default)]
    pub grace_seconds: Option<u64>,
}

/// `POST /api/v1/artifacts/gc` (admin).
pub async fn gc(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<Gc>,
) -> ApiResult<Json<Value>> {
    caller.require(&state.store, None, Role::Admin).await?;
    if body.keep_last == 0 {
        return Err(ApiError::field(
            "keep_last",
            "keep at least 1 version per name",
        ));
    }
    let policy = Retention {
        keep_last: body.keep_last,
        grace: Duration::from_secs(body.grace_seconds.unwrap_or(3600)),
    };
    // Deployed artifacts are kept too once deployments exist (issue 4's releases).
    let in_use = HashSet::new();
    let report = state.artifacts.gc(&policy, &in_use).await?;
    Ok(Json(json!(report)))
}

/// `GET /api/v1/artifacts/key`: the public key that verifies the repository's signatures.
pub async fn key(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    may_read(&state, &caller).await?;
    Ok(Json(
        json!({ "algorithm": "ed25519", "public_key": hex::encode(state.artifacts.public_key()) }),
    ))
}
