//! What can go wrong, as values that name their place.

use std::path::PathBuf;

use crate::Digest;

/// An artifact repository failure. [`ArtifactError::status_code`] maps each to the HTTP
/// status an API should answer with.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A name, version, attachment kind, media type or digest text is not allowed.
    #[error("invalid {field} `{value}`: {reason}")]
    InvalidName {
        /// Which field (`name`, `version`, `attachment kind`, `media type`, `digest`).
        field: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file path in a manifest is not a plain relative path, is listed twice, or its size
    /// does not match its blob.
    #[error("file `{path}`: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// name@version exists with other files, and versions are immutable.
    #[error(
        "{name}@{version} was already published with different files: a version is immutable (publish a new version, or use a moving tag)"
    )]
    Conflict {
        /// The artifact name.
        name: String,
        /// The version.
        version: String,
    },
    /// A manifest refers to a blob that is not stored.
    #[error("blob {digest} is missing: upload it before publishing")]
    MissingBlob {
        /// The missing blob.
        digest: Digest,
    },
    /// Uploaded bytes do not hash to the digest the sender claimed; nothing was stored.
    #[error("the uploaded bytes hash to {actual}, not to the expected {expected}")]
    DigestMismatch {
        /// What the sender said.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// A stored blob's bytes no longer hash to its name.
    #[error("blob {digest} is corrupt: its bytes do not hash to its digest")]
    Corrupt {
        /// The blob.
        digest: Digest,
    },
    /// A stored manifest cannot be read (not JSON of the expected shape, or stored under
    /// another name@version than the one it names).
    #[error("the manifest {manifest} cannot be read: {reason}")]
    CorruptManifest {
        /// Which (`app@1.0`, or where it is stored when its name cannot be read).
        manifest: String,
        /// Why.
        reason: String,
    },
    /// The thing asked for does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was asked for (`artifact app@1.0`, `blob sha256:…`).
        what: String,
    },
    /// The signing key file cannot be read or created, or does not hold a key.
    #[error("signing key {}: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The storage (disk or object store) failed.
    #[error("artifact storage: {0}")]
    Storage(String),
}

impl ArtifactError {
    /// The HTTP status an API answers with: 400 for bad input, 404 when absent, 409 for a
    /// conflict with what is stored, 500 for the store's own failures.
    pub fn status_code(&self) -> u16 {
        match self {
            ArtifactError::InvalidName { .. }
            | ArtifactError::InvalidPath { .. }
            | ArtifactError::MissingBlob { .. }
            | ArtifactError::DigestMismatch { .. } => 400,
            ArtifactError::NotFound { .. } => 404,
            ArtifactError::Conflict { .. } => 409,
            ArtifactError::Corrupt { .. }
            | ArtifactError::CorruptManifest { .. }
            | ArtifactError::Key { .. }
            | ArtifactError::Storage(_) => 500,
        }
    }
}

impl From<object_store::Error> for ArtifactError {
    fn from(error: object_store::Error) -> Self {
        ArtifactError::Storage(error.to_string())
    }
}
