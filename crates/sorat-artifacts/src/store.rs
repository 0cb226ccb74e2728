//! `ArtifactStore`: blobs, manifests, pins, verification, retention and garbage collection
//! over one `object_store` backend.
//!
//! # Why `gc` is safe while uploads and publishes run
//!
//! The danger is a blob deleted while something still counts on it: an upload that has
//! been acknowledged but not yet published, or a publish whose manifest is about to refer to
//! it. Three rules close it:
//!
//! 1. **One lock orders gc against writers.** `gc` holds `gc_lock` exclusively from reading
//!    the manifests until its last deletion. Every step that makes a blob count holds it
//!    shared: the end of an upload (the check "is it there?" and the move into place or the
//!    freshness mark), [`ArtifactStore::touch_blob`], and a publish from its "every blob
//!    exists" check to the manifest's write. So a publish either finishes before gc reads the
//!    manifests (gc then sees the manifest and keeps its blobs), or starts after gc's
//!    deletions (and then finds a deleted blob missing and is refused with `MissingBlob`: a
//!    refusal, never a manifest that points at nothing).
//! 2. **The grace period covers the gap between upload and publish.** Between `put_blob`
//!    returning and `publish` the blob is referenced by nothing. gc deletes an unreferenced
//!    blob only when it is older than `grace` at the time gc took the lock, where a blob's age
//!    counts from its write *or* from its freshness mark (`recent/sha256/<hex>`): uploading
//!    bytes that are already stored does not rewrite the blob, it writes that mark. So an
//!    acknowledged upload stays for at least `grace`, whether it was new or not.
//! 3. **Uploads in flight are invisible to gc until they are whole.** Bytes go to
//!    `tmp/<random>` and are moved to `blobs/` only after they hashed right. gc never removes
//!    the temporary object of an upload this process is still writing, and removes another
//!    only when it is older than `grace` (an upload abandoned by a crash, or another
//!    process's).
//!
//! The lock is in memory, so these guarantees hold among the clones of one `ArtifactStore`
//! (one server process). Publishes from several processes into one bucket stay correct among
//! themselves (an immutable version is created with a conditional put), but `gc` must run in
//! one process that also does the publishing, or while no other process publishes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectMeta, ObjectStore, PutMode, PutOptions, PutPayload};
use sha2::{Digest as _, Sha256};
use tokio::sync::{Mutex, RwLock};

use crate::model::validate_attachment;
use crate::{
    Artifact, ArtifactError, Digest, FileRef, GcReport, PublishRequest, Published, Retention,
    SigningKey, VerifyReport, key, validate_file_path, validate_name, validate_version,
};

/// Uploads are sent in parts of at least this size (S3 wants 5 MiB or more per part but the
/// last); smaller uploads are one put.
const PART_SIZE: usize = 8 << 20;

/// How many objects are read at once when listing manifests.
const READ_CONCURRENCY: usize = 16;

/// Where blobs and manifests live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageConfig {
    /// A folder on the local disk (created when missing).
    Local(PathBuf),
    /// An object store by URL: `s3://bucket/prefix` (credentials, region and endpoint from
    /// the usual `AWS_*` variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT` (or `AWS_ENDPOINT_URL`) for S3-compatible servers, `AWS_ALLOW_HTTP=true` for a
    /// plain-HTTP one), `file:///folder` (the same as `Local`), or `memory://` (in memory,
    /// for tests).
    ObjectStore {
        /// The URL.
        url: String,
    },
}

/// The artifact repository's storage. Cloning is cheap and clones share everything,
/// including the lock that keeps `gc` safe (see the module documentation).
#[derive(Clone)]
pub struct ArtifactStore {
    inner: Arc<Inner>,
}

struct Inner {
    objects: Arc<dyn ObjectStore>,
    /// The folder behind `objects` when it is the local disk: written files are fsynced
    /// there, as `object_store` does not.
    local_root: Option<PathBuf>,
    key: SigningKey,
    public_key: [u8; 32],
    /// Shared by steps that make a blob count, exclusive for gc (see the module doc).
    gc_lock: RwLock<()>,
    /// Orders publishes' read-compare-write of manifests within this process.
    publish_lock: Mutex<()>,
    /// The names of this process's temporary upload objects still being written: gc never
    /// removes them, however long the upload takes.
    uploads_in_flight: std::sync::Mutex<HashSet<String>>,
}

/// Keeps a temporary upload's name in `uploads_in_flight` while it lives.
struct InFlight<'a> {
    inner: &'a Inner,
    name: String,
}

impl<'a> InFlight<'a> {
    fn new(inner: &'a Inner) -> InFlight<'a> {
        let name = random_hex();
        in_flight(inner).insert(name.clone());
        InFlight { inner, name }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        in_flight(self.inner).remove(&self.name);
    }
}

/// The set of uploads in flight; a panic elsewhere while it was held does not corrupt a set
/// of names, so a poisoned lock is used as it is.
fn in_flight(inner: &Inner) -> std::sync::MutexGuard<'_, HashSet<String>> {
    inner
        .uploads_in_flight
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStore")
            .field("objects", &self.inner.objects.to_string())
            .field("public_key", &hex::encode(self.inner.public_key))
            .finish_non_exhaustive()
    }
}

impl ArtifactStore {
    /// Opens the storage (creating the folder for `Local`) and the signing key at
    /// `key_path`: an ed25519 secret key, created on first open (random, mode 0600, created
    /// exclusively and fsynced; see [`ArtifactError::Key`] for what is refused).
    pub async fn open(
        storage: StorageConfig,
        key_path: &Path,
    ) -> Result<ArtifactStore, ArtifactError> {
        let key_path = key_path.to_path_buf();
        let key = tokio::task::spawn_blocking(move || key::load_or_create(&key_path))
            .await
            .map_err(|error| ArtifactError::Storage(error.to_string()))??;
        ArtifactStore::open_with_key(storage, key).await
    }

    /// Opens the storage with a signing key given directly (tests, or a key held elsewhere).
    pub async fn open_with_key(
        storage: StorageConfig,
        key: SigningKey,
    ) -> Result<ArtifactStore, ArtifactError> {
        let (objects, local_root) = open_storage(storage).await?;
        let public_key = key.verifying_key().to_bytes();
        Ok(ArtifactStore {
            inner: Arc::new(Inner {
                objects,
                local_root,
                key,
                public_key,
                gc_lock: RwLock::new(()),
                publish_lock: Mutex::new(()),
                uploads_in_flight: std::sync::Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The public key (32 bytes) that verifies this store's signatures.
    pub fn public_key(&self) -> [u8; 32] {
        self.inner.public_key
    }

    /// The public key in hex (64 digits).
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.inner.public_key)
    }

    // ----- blobs -----

    /// Stores the bytes of `data` as a blob named by their SHA-256. Streams: the bytes are
    /// hashed while they are written to a temporary object, which is then moved into place
    /// (`blobs/sha256/<hh>/<hex>`). Idempotent: a blob already stored is not rewritten (the
    /// temporary object is dropped, and the blob is marked as freshly uploaded so that `gc`
    /// keeps it for the grace period). An error from `data` stores nothing.
    pub async fn put_blob(
        &self,
        data: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin,
    ) -> Result<Digest, ArtifactError> {
        self.put_blob_checked(None, data).await
    }

    /// Like [`put_blob`](Self::put_blob), with the digest the sender claims: when the bytes do
    /// not hash to it, the upload is refused (`DigestMismatch`) and nothing is stored.
    pub async fn put_blob_expecting(
        &self,
        expected: &Digest,
        data: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin,
    ) -> Result<Digest, ArtifactError> {
        self.put_blob_checked(Some(expected), data).await
    }

    /// Stores bytes already in memory as a blob (see [`put_blob`](Self::put_blob)).
    pub async fn put_blob_bytes(&self, data: Bytes) -> Result<Digest, ArtifactError> {
        self.put_blob(futures_util::stream::iter([Ok(data)])).await
    }

    async fn put_blob_checked(
        &self,
        expected: Option<&Digest>,
        mut data: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin,
    ) -> Result<Digest, ArtifactError> {
        let objects = &self.inner.objects;
        let upload_name = InFlight::new(&self.inner);
        let temporary = ObjectPath::from_iter(["tmp", &upload_name.name]);
        let mut hasher = Sha256::new();
        let mut pending: Vec<Bytes> = Vec::new();
        let mut pending_len = 0usize;
        let mut upload: Option<Box<dyn object_store::MultipartUpload>> = None;
        let written: Result<(), ArtifactError> = async {
            while let Some(chunk) = data.next().await {
                let chunk = chunk.map_err(|error| {
                    ArtifactError::Storage(format!("reading the upload: {error}"))
                })?;
                hasher.update(&chunk);
                pending_len += chunk.len();
                pending.push(chunk);
                if pending_len >= PART_SIZE {
                    let part: PutPayload = std::mem::take(&mut pending).into_iter().collect();
                    pending_len = 0;
                    let upload = match &mut upload {
                        Some(upload) => upload,
                        None => upload.insert(objects.put_multipart(&temporary).await?),
                    };
                    upload.put_part(part).await?;
                }
            }
            let last: PutPayload = std::mem::take(&mut pending).into_iter().collect();
            match &mut upload {
                None => {
                    objects.put(&temporary, last).await?;
                }
                Some(upload) => {
                    if last.content_length() > 0 {
                        upload.put_part(last).await?;
                    }
                    upload.complete().await?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(error) = written {
            if let Some(mut upload) = upload {
                let _ = upload.abort().await;
            }
            let _ = objects.delete(&temporary).await;
            return Err(error);
        }

        let actual = Digest::from_hasher(hasher);
        if let Some(expected) = expected
            && *expected != actual
        {
            let _ = objects.delete(&temporary).await;
            return Err(ArtifactError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }

        let _gc = self.inner.gc_lock.read().await;
        let blob = blob_path(&actual);
        if self.head(&blob).await?.is_some() {
            let _ = objects.delete(&temporary).await;
            self.mark_recent(&actual).await?;
        } else {
            if let Err(error) = objects.rename(&temporary, &blob).await {
                let _ = objects.delete(&temporary).await;
                return Err(error.into());
            }
            self.sync_local(&blob).await?;
        }
        Ok(actual)
    }

    /// Whether the blob is stored.
    pub async fn has_blob(&self, digest: &Digest) -> Result<bool, ArtifactError> {
        Ok(self.head(&blob_path(digest)).await?.is_some())
    }

    /// Whether the blob is stored; when it is, `gc` keeps it for at least the grace period
    /// from now, as if it had just been uploaded. Use this rather than
    /// [`has_blob`](Self::has_blob) when telling a client that it need not upload a blob it
    /// is about to publish: an old blob that no manifest refers to could otherwise be
    /// collected between that answer and the publish.
    pub async fn touch_blob(&self, digest: &Digest) -> Result<bool, ArtifactError> {
        let _gc = self.inner.gc_lock.read().await;
        if self.head(&blob_path(digest)).await?.is_none() {
            return Ok(false);
        }
        self.mark_recent(digest).await?;
        Ok(true)
    }

    /// The blob's size in bytes, or `None` when it is not stored.
    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, ArtifactError> {
        Ok(self.head(&blob_path(digest)).await?.map(|meta| meta.size))
    }

    /// The blob's bytes, checked against its digest (`Corrupt` when they do not match;
    /// `NotFound` when it is not stored).
    pub async fn read_blob(&self, digest: &Digest) -> Result<Bytes, ArtifactError> {
        let bytes = match self.inner.objects.get(&blob_path(digest)).await {
            Ok(result) => result.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(ArtifactError::NotFound {
                    what: format!("blob {digest}"),
                });
            }
            Err(error) => return Err(error.into()),
        };
        if Digest::of(&bytes) != *digest {
            return Err(ArtifactError::Corrupt {
                digest: digest.clone(),
            });
        }
        Ok(bytes)
    }

    /// Streams the blob's bytes and returns what they hash to and their length, or `None`
    /// when the blob is not stored.
    async fn hash_blob(&self, digest: &Digest) -> Result<Option<(Digest, u64)>, ArtifactError> {
        let mut stream = match self.inner.objects.get(&blob_path(digest)).await {
            Ok(result) => result.into_stream(),
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.try_next().await? {
            hasher.update(&chunk);
            size += chunk.len() as u64;
        }
        Ok(Some((Digest::from_hasher(hasher), size)))
    }

    // ----- manifests -----

    /// Publishes name@version. Every file's and attachment's blob must be stored
    /// (`MissingBlob`) and every file's size must be its blob's (`InvalidPath`). The manifest
    /// (files sorted by path, attachments by kind) is signed with the store's key and stored
    /// with its signature.
    ///
    /// Versions are immutable: publishing name@version again with the same files returns the
    /// stored artifact (`created: false`; the new metadata and attachments are not taken);
    /// with other files it is a `Conflict`, unless the request is a moving tag
    /// (`moving: true`) and the stored one is one too, in which case it is replaced. A
    /// version first published as immutable never becomes replaceable.
    pub async fn publish(&self, request: &PublishRequest) -> Result<Published, ArtifactError> {
        validate_name(&request.name)?;
        validate_version(&request.version)?;
        let mut files = request.files.clone();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        for file in &files {
            validate_file_path(&file.path)?;
        }
        for pair in files.windows(2) {
            if pair[0].path == pair[1].path {
                return Err(ArtifactError::InvalidPath {
                    path: pair[0].path.clone(),
                    reason: "is listed twice".to_owned(),
                });
            }
        }
        let mut attachments = request.attachments.clone();
        for attachment in &attachments {
            validate_attachment(attachment)?;
        }
        attachments.sort();
        attachments.dedup();

        // From the blob check to the manifest's write, gc waits (see the module doc).
        let _gc = self.inner.gc_lock.read().await;
        self.check_blobs(&files, &attachments).await?;

        let _publishing = self.inner.publish_lock.lock().await;
        let path = manifest_path(&request.name, &request.version);
        let existing = self.read_manifest(&request.name, &request.version).await?;
        let replace = match existing {
            Some(mut existing) if existing.files == files => {
                existing.pinned = self
                    .head(&pin_path(&existing.name, &existing.version))
                    .await?
                    .is_some();
                return Ok(Published {
                    artifact: existing,
                    created: false,
                });
            }
            Some(existing) if existing.moving && request.moving => true,
            Some(_) => {
                return Err(ArtifactError::Conflict {
                    name: request.name.clone(),
                    version: request.version.clone(),
                });
            }
            None => false,
        };

        let mut artifact = Artifact {
            name: request.name.clone(),
            version: request.version.clone(),
            size: files.iter().map(|file| file.size).sum(),
            files,
            attachments,
            metadata: request.metadata.clone(),
            created_at: jiff::Timestamp::now().to_string(),
            digest: Digest::of(b""),
            signature: String::new(),
            pinned: false,
            moving: request.moving,
        };
        let canonical = artifact.canonical_manifest();
        artifact.digest = Digest::of(&canonical);
        artifact.signature = key::sign(&self.inner.key, &canonical);

        // An immutable version is created only if absent, so that another process that
        // published it meanwhile is not overwritten.
        let mode = if replace {
            PutMode::Overwrite
        } else {
            PutMode::Create
        };
        let stored = Bytes::from(artifact.stored_form());
        match self
            .inner
            .objects
            .put_opts(&path, stored.into(), PutOptions::from(mode))
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                return match self.read_manifest(&request.name, &request.version).await? {
                    Some(existing) if existing.files == artifact.files => Ok(Published {
                        artifact: existing,
                        created: false,
                    }),
                    _ => Err(ArtifactError::Conflict {
                        name: request.name.clone(),
                        version: request.version.clone(),
                    }),
                };
            }
            Err(error) => return Err(error.into()),
        }
        self.sync_local(&path).await?;
        artifact.pinned = self
            .head(&pin_path(&artifact.name, &artifact.version))
            .await?
            .is_some();
        Ok(Published {
            artifact,
            created: true,
        })
    }

    async fn check_blobs(
        &self,
        files: &[FileRef],
        attachments: &[crate::Attachment],
    ) -> Result<(), ArtifactError> {
        for file in files {
            let Some(meta) = self.head(&blob_path(&file.digest)).await? else {
                return Err(ArtifactError::MissingBlob {
                    digest: file.digest.clone(),
                });
            };
            if meta.size != file.size {
                return Err(ArtifactError::InvalidPath {
                    path: file.path.clone(),
                    reason: format!(
                        "its size is given as {} bytes, but blob {} holds {}",
                        file.size, file.digest, meta.size
                    ),
                });
            }
        }
        for attachment in attachments {
            if self.head(&blob_path(&attachment.digest)).await?.is_none() {
                return Err(ArtifactError::MissingBlob {
                    digest: attachment.digest.clone(),
                });
            }
        }
        Ok(())
    }

    /// name@version, or `None` when it was never published (or was removed by retention).
    pub async fn get(&self, name: &str, version: &str) -> Result<Option<Artifact>, ArtifactError> {
        validate_name(name)?;
        validate_version(version)?;
        let Some(mut artifact) = self.read_manifest(name, version).await? else {
            return Ok(None);
        };
        artifact.pinned = self.head(&pin_path(name, version)).await?.is_some();
        Ok(Some(artifact))
    }

    /// The artifacts of `name` (all names when `None`), newest first by `created_at`.
    pub async fn list(&self, name: Option<&str>) -> Result<Vec<Artifact>, ArtifactError> {
        if let Some(name) = name {
            validate_name(name)?;
        }
        let mut artifacts = self.read_all_manifests(name).await?;
        sort_newest_first(&mut artifacts);
        Ok(artifacts)
    }

    /// Checks name@version: the manifest's signature with this store's public key (or
    /// `public_key` when given), that the manifest names the name@version it is stored as,
    /// and that every file's and attachment's blob is stored, of the right size, and hashes
    /// to its digest (each blob is read whole, streamed). A manifest that cannot be read is a
    /// problem in the report, not an error; an absent one is `NotFound`.
    pub async fn verify(
        &self,
        name: &str,
        version: &str,
        public_key: Option<&[u8; 32]>,
    ) -> Result<VerifyReport, ArtifactError> {
        validate_name(name)?;
        validate_version(version)?;
        let Some(bytes) = self.get_object(&manifest_path(name, version)).await? else {
            return Err(ArtifactError::NotFound {
                what: format!("artifact {name}@{version}"),
            });
        };
        let artifact = match Artifact::from_stored_form(&bytes) {
            Ok(artifact) => artifact,
            Err(reason) => {
                return Ok(VerifyReport {
                    ok: false,
                    signature_ok: false,
                    problems: vec![format!("the manifest cannot be read: {reason}")],
                });
            }
        };
        let mut problems = Vec::new();
        let public_key = public_key.unwrap_or(&self.inner.public_key);
        let signature_ok = crate::verify_signature(
            &artifact.canonical_manifest(),
            &artifact.signature,
            public_key,
        );
        if !signature_ok {
            problems.push(format!(
                "the manifest's signature does not verify with key {}",
                hex::encode(public_key)
            ));
        }
        if artifact.name != name || artifact.version != version {
            problems.push(format!(
                "the manifest is the one of {}@{}, stored as {name}@{version}",
                artifact.name, artifact.version
            ));
        }
        let blobs = artifact
            .files
            .iter()
            .map(|file| {
                (
                    format!("file `{}`", file.path),
                    &file.digest,
                    Some(file.size),
                )
            })
            .chain(artifact.attachments.iter().map(|attachment| {
                (
                    format!("attachment `{}`", attachment.kind),
                    &attachment.digest,
                    None,
                )
            }));
        for (what, digest, size) in blobs {
            match self.hash_blob(digest).await? {
                None => problems.push(format!("{what}: blob {digest} is missing")),
                Some((actual, _)) if actual != *digest => problems.push(format!(
                    "{what}: blob {digest} is corrupt (its bytes hash to {actual})"
                )),
                Some((_, actual_size)) if size.is_some_and(|size| size != actual_size) => problems
                    .push(format!(
                        "{what}: the manifest says {} bytes, blob {digest} holds {actual_size}",
                        size.unwrap_or_default()
                    )),
                Some(_) => {}
            }
        }
        Ok(VerifyReport {
            ok: signature_ok && problems.is_empty(),
            signature_ok,
            problems,
        })
    }

    /// Pins or unpins name@version (`NotFound` when it does not exist). A pinned version is
    /// kept by retention; the pin is stored beside the manifest, which stays as signed.
    pub async fn set_pinned(
        &self,
        name: &str,
        version: &str,
        pinned: bool,
    ) -> Result<(), ArtifactError> {
        validate_name(name)?;
        validate_version(version)?;
        // gc decides retention under its lock; a pin lands before or after, never during.
        let _gc = self.inner.gc_lock.read().await;
        if self.head(&manifest_path(name, version)).await?.is_none() {
            return Err(ArtifactError::NotFound {
                what: format!("artifact {name}@{version}"),
            });
        }
        let path = pin_path(name, version);
        if pinned {
            let since = format!("{{\"pinned_at\":\"{}\"}}", jiff::Timestamp::now());
            self.inner
                .objects
                .put(&path, Bytes::from(since).into())
                .await?;
            self.sync_local(&path).await?;
        } else {
            self.delete_if_present(&path).await?;
        }
        Ok(())
    }

    // ----- retention and garbage collection -----

    /// Retention, then garbage collection.
    ///
    /// Retention: per name, the newest `policy.keep_last` versions (by `created_at`), every
    /// pinned one and every (name, version) in `in_use` (deployed somewhere) are kept; the
    /// other manifests are deleted. Collection: a blob is deleted when no remaining manifest
    /// refers to it and it is older than `policy.grace` (counted from its upload, or from its
    /// last re-upload or [`touch_blob`](Self::touch_blob)); abandoned uploads older than the
    /// grace period are deleted too. Safe while uploads and publishes run: see the module
    /// documentation for the argument: publishes, pins and the last step of uploads wait
    /// while gc runs (uploading the bytes does not). A manifest that cannot be read stops gc
    /// before anything is deleted (its blobs must not be collected).
    pub async fn gc(
        &self,
        policy: &Retention,
        in_use: &HashSet<(String, String)>,
    ) -> Result<GcReport, ArtifactError> {
        let _gc = self.inner.gc_lock.write().await;
        let grace = i64::try_from(policy.grace.as_millis()).unwrap_or(i64::MAX);
        let cutoff_ms = jiff::Timestamp::now()
            .as_millisecond()
            .saturating_sub(grace);
        let mut report = GcReport::default();

        let mut by_name: BTreeMap<String, Vec<Artifact>> = BTreeMap::new();
        for artifact in self.read_all_manifests(None).await? {
            by_name
                .entry(artifact.name.clone())
                .or_default()
                .push(artifact);
        }
        let mut referenced: HashSet<Digest> = HashSet::new();
        for (name, mut versions) in by_name {
            sort_newest_first(&mut versions);
            for (index, artifact) in versions.into_iter().enumerate() {
                let keep = index < policy.keep_last
                    || artifact.pinned
                    || in_use.contains(&(name.clone(), artifact.version.clone()));
                if keep {
                    referenced.extend(artifact.blob_digests().cloned());
                } else {
                    self.delete_if_present(&manifest_path(&name, &artifact.version))
                        .await?;
                    report
                        .manifests_deleted
                        .push((name.clone(), artifact.version));
                }
            }
        }

        let recent: HashMap<String, i64> = self
            .list_objects("recent/sha256")
            .await?
            .into_iter()
            .filter_map(|meta| {
                let hex = meta.location.filename()?.to_owned();
                Some((hex, meta.last_modified.timestamp_millis()))
            })
            .collect();

        for meta in self.list_objects("blobs/sha256").await? {
            let Some(digest) = meta.location.filename().and_then(Digest::from_hex) else {
                continue;
            };
            let fresh_ms = recent
                .get(digest.hex())
                .copied()
                .unwrap_or(i64::MIN)
                .max(meta.last_modified.timestamp_millis());
            if referenced.contains(&digest) || fresh_ms >= cutoff_ms {
                continue;
            }
            if self.delete_if_present(&meta.location).await? {
                report.blobs_deleted += 1;
                report.bytes_freed += meta.size;
            }
        }
        for (hex, modified_ms) in &recent {
            if *modified_ms < cutoff_ms {
                self.delete_if_present(&ObjectPath::from_iter(["recent", "sha256", hex]))
                    .await?;
            }
        }
        for meta in self.list_objects("tmp").await? {
            let in_flight = meta
                .location
                .filename()
                .is_some_and(|name| in_flight(&self.inner).contains(name));
            if !in_flight
                && meta.last_modified.timestamp_millis() < cutoff_ms
                && self.delete_if_present(&meta.location).await?
            {
                report.uploads_deleted += 1;
            }
        }
        Ok(report)
    }

    // ----- helpers -----

    async fn head(&self, path: &ObjectPath) -> Result<Option<ObjectMeta>, ArtifactError> {
        match self.inner.objects.head(path).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    async fn get_object(&self, path: &ObjectPath) -> Result<Option<Bytes>, ArtifactError> {
        match self.inner.objects.get(path).await {
            Ok(result) => Ok(Some(result.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes an object; false when it was not there.
    async fn delete_if_present(&self, path: &ObjectPath) -> Result<bool, ArtifactError> {
        match self.inner.objects.delete(path).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    async fn list_objects(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ArtifactError> {
        let prefix = ObjectPath::from(prefix);
        Ok(self
            .inner
            .objects
            .list(Some(&prefix))
            .try_collect::<Vec<_>>()
            .await?)
    }

    async fn mark_recent(&self, digest: &Digest) -> Result<(), ArtifactError> {
        let path = ObjectPath::from_iter(["recent", "sha256", digest.hex()]);
        self.inner.objects.put(&path, PutPayload::new()).await?;
        Ok(())
    }

    /// The manifest stored as name@version (pinned left false), checked to name itself.
    async fn read_manifest(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<Artifact>, ArtifactError> {
        let Some(bytes) = self.get_object(&manifest_path(name, version)).await? else {
            return Ok(None);
        };
        parse_manifest(&bytes, name, version).map(Some)
    }

    /// Every manifest of `name` (of all names when `None`), with its pinned state.
    async fn read_all_manifests(&self, name: Option<&str>) -> Result<Vec<Artifact>, ArtifactError> {
        let prefix = match name {
            Some(name) => format!("manifests/{name}"),
            None => "manifests".to_owned(),
        };
        let manifests: Vec<ObjectMeta> = self
            .list_objects(&prefix)
            .await?
            .into_iter()
            .filter(|meta| meta.location.extension() == Some("json"))
            .collect();
        let pins: HashSet<ObjectPath> = self
            .list_objects("pins")
            .await?
            .into_iter()
            .map(|meta| meta.location)
            .collect();
        let objects = &self.inner.objects;
        let read: Vec<Result<Option<Artifact>, ArtifactError>> =
            futures_util::stream::iter(manifests)
                .map(|meta| async move {
                    let bytes = match objects.get(&meta.location).await {
                        Ok(result) => result.bytes().await?,
                        // Removed between the listing and the read (by another process's gc).
                        Err(object_store::Error::NotFound { .. }) => return Ok(None),
                        Err(error) => return Err(error.into()),
                    };
                    let artifact = Artifact::from_stored_form(&bytes).map_err(|reason| {
                        ArtifactError::CorruptManifest {
                            manifest: meta.location.to_string(),
                            reason,
                        }
                    })?;
                    if manifest_path(&artifact.name, &artifact.version) != meta.location {
                        return Err(ArtifactError::CorruptManifest {
                            manifest: format!("{}@{}", artifact.name, artifact.version),
                            reason: format!("it is stored as {}", meta.location),
                        });
                    }
                    Ok(Some(artifact))
                })
                .buffer_unordered(READ_CONCURRENCY)
                .collect()
                .await;
        let mut artifacts = Vec::with_capacity(read.len());
        for artifact in read {
            if let Some(mut artifact) = artifact? {
                artifact.pinned = pins.contains(&pin_path(&artifact.name, &artifact.version));
                artifacts.push(artifact);
            }
        }
        Ok(artifacts)
    }

    /// Makes a written object durable on the local disk (file and folder fsynced);
    /// nothing to do for other stores, which acknowledge only what they made durable.
    async fn sync_local(&self, path: &ObjectPath) -> Result<(), ArtifactError> {
        let Some(root) = &self.inner.local_root else {
            return Ok(());
        };
        let file = root.join(path.as_ref());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::File::open(&file)?.sync_all()?;
            if let Some(folder) = file.parent() {
                std::fs::File::open(folder)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|error| ArtifactError::Storage(error.to_string()))?
        .map_err(|error| ArtifactError::Storage(format!("syncing {path}: {error}")))
    }
}

fn parse_manifest(bytes: &[u8], name: &str, version: &str) -> Result<Artifact, ArtifactError> {
    let corrupt = |reason: String| ArtifactError::CorruptManifest {
        manifest: format!("{name}@{version}"),
        reason,
    };
    let artifact = Artifact::from_stored_form(bytes).map_err(corrupt)?;
    if artifact.name != name || artifact.version != version {
        return Err(corrupt(format!(
            "it is the manifest of {}@{}",
            artifact.name, artifact.version
        )));
    }
    Ok(artifact)
}

fn sort_newest_first(artifacts: &mut [Artifact]) {
    artifacts.sort_by(|a, b| {
        b.created_timestamp()
            .cmp(&a.created_timestamp())
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.version.cmp(&b.version))
    });
}

async fn open_storage(
    storage: StorageConfig,
) -> Result<(Arc<dyn ObjectStore>, Option<PathBuf>), ArtifactError> {
    let url = match storage {
        StorageConfig::Local(folder) => return open_local(folder).await,
        StorageConfig::ObjectStore { url } => url,
    };
    let unsupported = || {
        ArtifactError::Storage(format!(
            "unsupported storage URL `{url}`: expected s3://bucket[/prefix], file:///folder or memory://"
        ))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(unsupported)?;
    match scheme {
        "memory" => Ok((Arc::new(InMemory::new()), None)),
        "file" => open_local(PathBuf::from(rest)).await,
        "s3" | "s3a" => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(unsupported());
            }
            let s3 = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|error| ArtifactError::Storage(format!("opening {url}: {error}")))?;
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                Ok((Arc::new(s3), None))
            } else {
                Ok((Arc::new(PrefixStore::new(s3, prefix)), None))
            }
        }
        _ => Err(unsupported()),
    }
}

async fn open_local(
    folder: PathBuf,
) -> Result<(Arc<dyn ObjectStore>, Option<PathBuf>), ArtifactError> {
    let failed = |error: &dyn std::fmt::Display| {
        ArtifactError::Storage(format!("opening the folder {}: {error}", folder.display()))
    };
    let root = {
        let folder = folder.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<PathBuf> {
            std::fs::create_dir_all(&folder)?;
            std::fs::canonicalize(&folder)
        })
        .await
        .map_err(|e| failed(&e))?
        .map_err(|e| failed(&e))?
    };
    let local = LocalFileSystem::new_with_prefix(&root).map_err(|e| failed(&e))?;
    Ok((Arc::new(local), Some(root)))
}

fn blob_path(digest: &Digest) -> ObjectPath {
    let hex = digest.hex();
    ObjectPath::from_iter(["blobs", "sha256", &hex[..2], hex])
}

fn manifest_path(name: &str, version: &str) -> ObjectPath {
    ObjectPath::from_iter(["manifests", name, &format!("{version}.json")])
}

fn pin_path(name: &str, version: &str) -> ObjectPath {
    ObjectPath::from_iter(["pins", name, &format!("{version}.pin")])
}

fn random_hex() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut bytes = [0u8; 16];
    // Without the random source, the process id, the time and a counter still keep
    // temporary names apart.
    if getrandom::fill(&mut bytes).is_err() {
        let fallback = format!(
            "{}-{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        return hex::encode(Sha256::digest(fallback.as_bytes()));
    }
    hex::encode(bytes)
}
