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
        ArtifactError::Storage(with_causes(&error))
    }
}

/// The error's message, followed by each of its causes that the message does not already
/// hold. `object_store` leaves out why a request failed (its message ends with "error
/// sending request"): a refused connection, a name that does not resolve or a TLS failure
/// is only in the causes.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !text.is_empty() && !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = inner.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a message and an optional cause, like those `object_store` wraps.
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|inner| inner as _)
        }
    }

    #[test]
    fn storage_errors_keep_their_causes_once() {
        let refused = Layer("Connection refused (os error 111)", None);
        let connect = Layer("tcp connect error", Some(Box::new(refused)));
        let sending = Layer("error sending request", Some(Box::new(connect)));
        let error = object_store::Error::Generic {
            store: "S3",
            source: Box::new(sending),
        };
        let ArtifactError::Storage(message) = ArtifactError::from(error) else {
            panic!("not a storage error");
        };
        // The generic error's own message already holds "error sending request".
        assert_eq!(
            message,
            "Generic S3 error: error sending request: tcp connect error: Connection refused (os error 111)"
        );
    }
}
