//! The artifact repository's storage core: content-addressed blobs, signed immutable
//! manifests, pins, retention and garbage collection, on the local disk or in S3-compatible
//! object storage (one code path through `object_store`).
//!
//! Principal types: [`ArtifactStore`] (opened from a [`StorageConfig`] and an ed25519 signing
//! key), [`Digest`] (`sha256:<hex>`), [`PublishRequest`] → [`Published`] / [`Artifact`],
//! [`VerifyReport`], [`Retention`] → [`GcReport`], and [`ArtifactError`].
//!
//! The layout inside the storage root (a folder or `s3://bucket/prefix`):
//!
//! ```text
//! blobs/sha256/<hh>/<hex>            a blob, named by the SHA-256 of its bytes
//! tmp/<random>                       an upload in progress (moved into blobs/ once hashed)
//! recent/sha256/<hex>                "this existing blob was just uploaded again": keeps it young for gc
//! manifests/<name>/<version>.json    {"manifest": <canonical manifest>, "signature": "<hex>"}
//! pins/<name>/<version>.pin          present = pinned (kept by retention); not part of the signed manifest
//! ```
//!
//! What it must not know: HTTP, pipelines, deployments or the state store. Which versions are
//! deployed somewhere is told to [`ArtifactStore::gc`] by its caller; who may publish is
//! decided above this crate. It never prints.

mod digest;
mod error;
mod key;
mod model;
mod store;

pub use digest::{Digest, digest_file};
pub use ed25519_dalek::SigningKey;
pub use error::ArtifactError;
pub use key::verify_signature;
pub use model::{
    Artifact, Attachment, FileRef, GcReport, Metadata, PublishRequest, Published, Retention,
    VerifyReport, validate_file_path, validate_name, validate_version,
};
pub use store::{ArtifactStore, StorageConfig};
