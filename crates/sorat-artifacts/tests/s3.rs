//! The artifact store on S3-compatible object storage, against a real server: moto's
//! (`moto[server]` from PyPI, installed by `.ci/s3`). Each test starts its own server on
//! 127.0.0.1 at a free port as a child process (stopped when the test drops it), with one
//! bucket. The credentials test has the server check every request's SigV4 signature
//! against one IAM user's key (see `s3_server.py` for why the others do not).
//!
//! The store is opened as the server opens it: an `s3://bucket/prefix` URL, the endpoint and
//! the credentials in the `AWS_*` variables. The tests look into the bucket, or corrupt an
//! object in it, with an S3 client of their own.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutMode, PutOptions};
use sorat_artifacts::{
    ArtifactError, ArtifactStore, Attachment, Digest, FileRef, Metadata, PublishRequest, Retention,
    SigningKey, StorageConfig, verify_signature,
};
use tempfile::TempDir;

/// The bucket each server is started with.
const BUCKET: &str = "sorat-artifacts";
/// The prefix inside it that most tests store under.
const PREFIX: &str = "teams/platform/artifacts";

/// moto's S3 server, started by `tests/s3_server.py`; killed when dropped (and, should the
/// test process die first, it exits when its standard input closes).
struct S3Server {
    child: Child,
    port: u16,
    access_key_id: String,
    secret_access_key: String,
    _log: TempDir,
}

impl S3Server {
    /// Starts a server with [`BUCKET`] that takes any credentials. Panics, naming `.ci/s3`,
    /// when moto is not installed.
    fn start() -> S3Server {
        S3Server::start_with(&[BUCKET])
    }

    /// Starts a server with [`BUCKET`] that refuses requests not signed with its key.
    fn start_checking_signatures() -> S3Server {
        S3Server::start_with(&["--check-signatures", BUCKET])
    }

    fn start_with(args: &[&str]) -> S3Server {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3_server.py");
        let log_dir = tempfile::tempdir().unwrap();
        let log_path = log_dir.path().join("s3-server.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = match Command::new("python3")
            .arg(&script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
        {
            Ok(child) => child,
            Err(error) => panic!(
                "cannot run python3 for the S3 server of these tests ({error}): install python3, then run .ci/s3"
            ),
        };
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = receiver
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_default();
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let ["ready", port, access_key_id, secret_access_key] = fields[..]
            && let Ok(port) = port.parse()
        {
            return S3Server {
                port,
                access_key_id: access_key_id.to_owned(),
                secret_access_key: secret_access_key.to_owned(),
                child,
                _log: log_dir,
            };
        }
        let _ = child.kill();
        let status = match child.wait() {
            Ok(status) => status.to_string(),
            Err(error) => error.to_string(),
        };
        let output = std::fs::read_to_string(&log_path).unwrap_or_default();
        panic!(
            "the S3 server of these tests (moto's) did not start: run .ci/s3, which installs moto[server] \
             ({status}; its output:\n{output})"
        );
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Opens the store at `s3://BUCKET/<prefix>` with this server's key.
    async fn open(&self, prefix: &str) -> ArtifactStore {
        let url = format!("s3://{BUCKET}/{prefix}");
        open_s3(
            &url,
            &self.endpoint(),
            &self.access_key_id,
            &self.secret_access_key,
        )
        .await
        .unwrap()
    }

    /// An S3 client of the tests' own on the bucket, to look into it or change it behind the
    /// store's back.
    fn bucket(&self) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(BUCKET)
            .with_access_key_id(&self.access_key_id)
            .with_secret_access_key(&self.secret_access_key)
            .build()
            .unwrap()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Orders the tests' changes of the process environment (the store reads its S3 settings
/// from the `AWS_*` variables when it is opened).
static ENVIRONMENT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Opens `url` as the server does, with the endpoint and credentials in the environment.
async fn open_s3(
    url: &str,
    endpoint: &str,
    access_key_id: &str,
    secret_access_key: &str,
) -> Result<ArtifactStore, ArtifactError> {
    let _environment = ENVIRONMENT.lock().await;
    set_aws_environment(&[
        ("AWS_ENDPOINT", endpoint),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", access_key_id),
        ("AWS_SECRET_ACCESS_KEY", secret_access_key),
    ]);
    ArtifactStore::open_with_key(StorageConfig::ObjectStore { url: url.into() }, key(1)).await
}

/// Replaces every `AWS_*` variable with `settings` (so that nothing of the machine's own,
/// a session token say, gets in).
#[allow(unsafe_code)]
fn set_aws_environment(settings: &[(&str, &str)]) {
    let stale: Vec<_> = std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| name.to_str().is_some_and(|name| name.starts_with("AWS_")))
        .collect();
    // SAFETY: only these tests change the environment, one at a time (under ENVIRONMENT), and
    // what reads it meanwhile is Rust code going through std, which orders reads and writes.
    // No C code reads it concurrently: the servers are reached at IP addresses, so no name
    // resolver runs.
    unsafe {
        for name in stale {
            std::env::remove_var(name);
        }
        for (name, value) in settings {
            std::env::set_var(name, value);
        }
    }
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// Stores `content` and returns a file of it at `path`.
async fn file(store: &ArtifactStore, path: &str, content: &[u8]) -> FileRef {
    let digest = store
        .put_blob_bytes(Bytes::copy_from_slice(content))
        .await
        .unwrap();
    assert_eq!(digest, Digest::of(content));
    FileRef {
        path: path.into(),
        digest,
        size: content.len() as u64,
        mode: 0o644,
    }
}

fn request(name: &str, version: &str, files: Vec<FileRef>) -> PublishRequest {
    PublishRequest {
        name: name.into(),
        version: version.into(),
        files,
        ..PublishRequest::default()
    }
}

fn chunks(data: &[u8], size: usize) -> Vec<Result<Bytes, std::io::Error>> {
    data.chunks(size)
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect()
}

/// Bytes that do not repeat in a way a server could dedupe or compress away.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

/// Every key in the bucket, sorted.
async fn keys(bucket: &AmazonS3) -> Vec<String> {
    let mut keys: Vec<String> = bucket
        .list(None)
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

/// The key of a blob under `prefix` (`""`: at the bucket's root).
fn blob_key(prefix: &str, digest: &Digest) -> ObjectPath {
    let hex = digest.hex();
    let key = format!("blobs/sha256/{}/{hex}", &hex[..2]);
    if prefix.is_empty() {
        ObjectPath::from(key)
    } else {
        ObjectPath::from(format!("{prefix}/{key}"))
    }
}

#[tokio::test]
async fn publish_list_download_and_verify() {
    let server = S3Server::start();
    let store = server.open(PREFIX).await;
    let bucket = server.bucket();

    // A few MiB sent as one put, more than one upload part sent as a multipart upload, and
    // small files.
    let library = pseudo_random(3 * 1024 * 1024 + 5, 1);
    let archive = pseudo_random(9 * 1024 * 1024 + 17, 2);
    let library_digest = store
        .put_blob(futures_util::stream::iter(chunks(&library, 64 * 1024)))
        .await
        .unwrap();
    let archive_digest = store
        .put_blob_expecting(
            &Digest::of(&archive),
            futures_util::stream::iter(chunks(&archive, 256 * 1024)),
        )
        .await
        .unwrap();
    assert_eq!(library_digest, Digest::of(&library));
    assert_eq!(archive_digest, Digest::of(&archive));
    let app = file(&store, "bin/app", b"#!/bin/sh\necho hello\n").await;
    let config = file(&store, "etc/app.toml", b"port = 8080\n").await;
    let empty = file(&store, "var/.keep", b"").await;
    let sbom = store
        .put_blob_bytes(Bytes::from_static(br#"{"bomFormat":"CycloneDX"}"#))
        .await
        .unwrap();

    let version = "1.4.0+build.7";
    let published = store
        .publish(&PublishRequest {
            name: "web-app".into(),
            version: version.into(),
            files: vec![
                FileRef {
                    mode: 0o755,
                    ..app.clone()
                },
                config.clone(),
                empty.clone(),
                FileRef {
                    path: "lib/libapp.so".into(),
                    digest: library_digest.clone(),
                    size: library.len() as u64,
                    mode: 0o644,
                },
                FileRef {
                    path: "share/assets.tar".into(),
                    digest: archive_digest.clone(),
                    size: archive.len() as u64,
                    mode: 0o644,
                },
            ],
            attachments: vec![Attachment {
                kind: "sbom".into(),
                digest: sbom.clone(),
                media_type: "application/vnd.cyclonedx+json".into(),
            }],
            metadata: Metadata {
                project: Some("web".into()),
                commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
                run: Some(42),
                ..Metadata::default()
            },
            moving: false,
        })
        .await
        .unwrap();
    assert!(published.created);
    let artifact = published.artifact;
    assert_eq!(
        artifact
            .files
            .iter()
            .map(|file| file.path.as_str())
            .collect::<Vec<_>>(),
        [
            "bin/app",
            "etc/app.toml",
            "lib/libapp.so",
            "share/assets.tar",
            "var/.keep"
        ]
    );
    assert_eq!(
        artifact.size,
        (library.len() + archive.len() + 21 + 12) as u64
    );

    // What is in the bucket: everything under the prefix, nothing left in tmp/.
    let stored = keys(&bucket).await;
    assert!(
        stored
            .iter()
            .all(|key| key.starts_with(&format!("{PREFIX}/"))),
        "{stored:?}"
    );
    assert!(
        !stored.iter().any(|key| key.contains("/tmp/")),
        "{stored:?}"
    );
    assert!(stored.contains(&format!("{PREFIX}/manifests/web-app/{version}.json")));
    assert_eq!(
        stored
            .iter()
            .filter(|key| key.contains("/blobs/sha256/"))
            .count(),
        6,
        "{stored:?}"
    );

    // A second store on the same bucket (another server process) sees the same artifact.
    let reader = server.open(PREFIX).await;
    let got = reader.get("web-app", version).await.unwrap().unwrap();
    assert_eq!(got, artifact);
    assert_eq!(reader.list(None).await.unwrap(), vec![artifact.clone()]);
    assert_eq!(
        reader.list(Some("web-app")).await.unwrap(),
        vec![artifact.clone()]
    );
    assert!(reader.list(Some("web")).await.unwrap().is_empty());
    assert!(reader.get("web-app", "1.4.0").await.unwrap().is_none());

    // Download every file: its bytes hash to its digest and are the ones uploaded.
    for file in &got.files {
        let bytes = reader.read_blob(&file.digest).await.unwrap();
        assert_eq!(Digest::of(&bytes), file.digest, "{}", file.path);
        assert_eq!(bytes.len() as u64, file.size, "{}", file.path);
        assert_eq!(
            reader.blob_size(&file.digest).await.unwrap(),
            Some(file.size)
        );
    }
    assert_eq!(
        &reader.read_blob(&library_digest).await.unwrap()[..],
        library
    );
    assert_eq!(
        &reader.read_blob(&archive_digest).await.unwrap()[..],
        archive
    );

    // The signature: over the canonical manifest, by the store's key, and the manifest's
    // digest is the digest of those bytes.
    let canonical = got.canonical_manifest();
    assert_eq!(got.digest, Digest::of(&canonical));
    assert!(verify_signature(
        &canonical,
        &got.signature,
        &store.public_key()
    ));
    assert!(!verify_signature(
        &canonical,
        &got.signature,
        &key(2).verifying_key().to_bytes()
    ));
    let report = reader.verify("web-app", version, None).await.unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert!(report.signature_ok);
    let other_key = key(2).verifying_key().to_bytes();
    let report = reader
        .verify("web-app", version, Some(&other_key))
        .await
        .unwrap();
    assert!(!report.ok && !report.signature_ok);

    // Publishing the same files again changes nothing.
    let again = store
        .publish(&request(
            "web-app",
            version,
            got.files.iter().rev().cloned().collect(),
        ))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.artifact, got);

    // Uploading bytes already stored does not rewrite the blob; it marks it fresh.
    assert_eq!(
        store
            .put_blob_bytes(Bytes::from_static(b"port = 8080\n"))
            .await
            .unwrap(),
        config.digest
    );
    assert!(store.touch_blob(&app.digest).await.unwrap());
    assert!(
        !store
            .touch_blob(&Digest::of(b"never uploaded"))
            .await
            .unwrap()
    );
    let stored = keys(&bucket).await;
    assert!(stored.contains(&format!("{PREFIX}/recent/sha256/{}", config.digest.hex())));
    assert!(stored.contains(&format!("{PREFIX}/recent/sha256/{}", app.digest.hex())));
    assert!(
        !stored.iter().any(|key| key.contains("/tmp/")),
        "{stored:?}"
    );
    assert!(matches!(
        reader.read_blob(&Digest::of(b"absent")).await,
        Err(ArtifactError::NotFound { .. })
    ));
}

#[tokio::test]
async fn failed_uploads_leave_nothing_in_the_bucket() {
    let server = S3Server::start();
    // At the root of the bucket this time, without a prefix.
    let store = server.open("").await;
    let bucket = server.bucket();

    // A claimed digest that the bytes do not have (one put).
    let claimed = Digest::of(b"what the sender says");
    let error = store
        .put_blob_expecting(
            &claimed,
            futures_util::stream::iter(chunks(b"other bytes", 4)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, ArtifactError::DigestMismatch { .. }),
        "{error:?}"
    );
    // The same, past one upload part (a multipart upload, completed then dropped).
    let big = pseudo_random(8 * 1024 * 1024 + 3, 3);
    let error = store
        .put_blob_expecting(
            &claimed,
            futures_util::stream::iter(chunks(&big, 1024 * 1024)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, ArtifactError::DigestMismatch { .. }),
        "{error:?}"
    );
    // A stream that breaks after a part was sent (the multipart upload is aborted).
    let mut broken = chunks(&big, 1024 * 1024);
    broken.push(Err(std::io::Error::other("connection reset by the client")));
    let error = store
        .put_blob(futures_util::stream::iter(broken))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("connection reset by the client"),
        "{error}"
    );
    assert!(keys(&bucket).await.is_empty(), "{:?}", keys(&bucket).await);
    assert!(!store.has_blob(&Digest::of(&big)).await.unwrap());

    // And a good one lands at the root.
    let digest = store
        .put_blob_bytes(Bytes::from_static(b"fine"))
        .await
        .unwrap();
    assert_eq!(keys(&bucket).await, vec![blob_key("", &digest).to_string()]);
}

#[tokio::test]
async fn versions_are_immutable_and_moving_tags_move() {
    let server = S3Server::start();
    let store = server.open(PREFIX).await;
    let one = file(&store, "app", b"version one").await;
    let two = file(&store, "app", b"version two").await;

    let first = store
        .publish(&request("api", "2.0.0", vec![one.clone()]))
        .await
        .unwrap();
    assert!(first.created);
    let error = store
        .publish(&request("api", "2.0.0", vec![two.clone()]))
        .await
        .unwrap_err();
    assert!(matches!(error, ArtifactError::Conflict { .. }), "{error:?}");
    assert_eq!(error.status_code(), 409);
    assert!(error.to_string().contains("immutable"), "{error}");
    assert_eq!(
        store.get("api", "2.0.0").await.unwrap().unwrap().files,
        vec![one.clone()]
    );
    // Asking for a moving tag does not make an immutable version replaceable.
    let error = store
        .publish(&PublishRequest {
            moving: true,
            ..request("api", "2.0.0", vec![two.clone()])
        })
        .await
        .unwrap_err();
    assert!(matches!(error, ArtifactError::Conflict { .. }), "{error:?}");

    // A moving tag moves, and each of its manifests verifies.
    let latest = |file: &FileRef| PublishRequest {
        moving: true,
        ..request("api", "latest", vec![file.clone()])
    };
    assert!(store.publish(&latest(&one)).await.unwrap().created);
    let moved = store.publish(&latest(&two)).await.unwrap();
    assert!(moved.created);
    let got = store.get("api", "latest").await.unwrap().unwrap();
    assert_eq!(got.files, vec![two.clone()]);
    assert!(got.moving);
    assert_eq!(got, moved.artifact);
    assert!(store.verify("api", "latest", None).await.unwrap().ok);
    assert!(!store.publish(&latest(&two)).await.unwrap().created);
    assert!(store.publish(&latest(&one)).await.unwrap().created);
    assert_eq!(
        store.get("api", "latest").await.unwrap().unwrap().files,
        vec![one.clone()]
    );

    // The server refuses to create an object that exists (If-None-Match), which is what
    // keeps two processes from both creating one version.
    let bucket = server.bucket();
    let manifest = ObjectPath::from(format!("{PREFIX}/manifests/api/2.0.0.json"));
    let refused = bucket
        .put_opts(
            &manifest,
            Bytes::from_static(b"{}").into(),
            PutOptions::from(PutMode::Create),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, object_store::Error::AlreadyExists { .. }),
        "{refused:?}"
    );

    // Two stores (two server processes) publishing the same new versions with other files
    // at once: for each version one wins, the other is told of the conflict, and what is
    // stored is the winner's. (Both typically find the version absent before either writes,
    // so it is the server's If-None-Match that turns the second away.)
    let other = server.open(PREFIX).await;
    for round in 0..4 {
        let version = format!("3.0.{round}");
        let (with_one, with_two) = (
            request("api", &version, vec![one.clone()]),
            request("api", &version, vec![two.clone()]),
        );
        let (a, b) = tokio::join!(store.publish(&with_one), other.publish(&with_two));
        let winner = match (a, b) {
            (Ok(won), Err(ArtifactError::Conflict { .. }))
            | (Err(ArtifactError::Conflict { .. }), Ok(won)) => won,
            other => panic!("{version}: {other:?}"),
        };
        assert!(winner.created);
        let stored = other.get("api", &version).await.unwrap().unwrap();
        assert_eq!(stored, winner.artifact);
        assert!(store.verify("api", &version, None).await.unwrap().ok);
    }
}

#[tokio::test]
async fn gc_removes_unreferenced_blobs_and_keeps_referenced_and_pinned_ones() {
    let server = S3Server::start();
    let store = server.open(PREFIX).await;
    let bucket = server.bucket();

    let shared = file(&store, "lib/shared.so", b"used by every version").await;
    let mut versions = Vec::new();
    for version in ["1.0", "1.1", "1.2", "1.3"] {
        let own = file(&store, "bin/app", format!("app {version}").as_bytes()).await;
        store
            .publish(&request("app", version, vec![own.clone(), shared.clone()]))
            .await
            .unwrap();
        versions.push((version, own));
    }
    store.set_pinned("app", "1.0", true).await.unwrap();
    assert!(store.get("app", "1.0").await.unwrap().unwrap().pinned);
    // Uploaded but never published, and an upload abandoned half-way by a crash.
    let orphan = store
        .put_blob_bytes(Bytes::from_static(b"published by nobody"))
        .await
        .unwrap();
    bucket
        .put(
            &ObjectPath::from(format!("{PREFIX}/tmp/abandoned-upload")),
            Bytes::from_static(b"half of something").into(),
        )
        .await
        .unwrap();

    // Keep the newest (1.3), the pinned (1.0) and the deployed (1.1): 1.2 goes. With a long
    // grace period no blob is old enough to go yet.
    let deployed: HashSet<(String, String)> = [("app".to_owned(), "1.1".to_owned())].into();
    let patient = Retention {
        keep_last: 1,
        grace: Duration::from_secs(3600),
    };
    let report = store.gc(&patient, &deployed).await.unwrap();
    assert_eq!(
        report.manifests_deleted,
        vec![("app".to_owned(), "1.2".to_owned())]
    );
    assert_eq!((report.blobs_deleted, report.uploads_deleted), (0, 0));
    assert!(store.has_blob(&orphan).await.unwrap());
    assert!(store.has_blob(&versions[2].1.digest).await.unwrap());

    // Without grace: the blob only 1.2 used, the orphan and the abandoned upload go.
    let eager = Retention {
        keep_last: 1,
        grace: Duration::ZERO,
    };
    let report = store.gc(&eager, &deployed).await.unwrap();
    assert!(report.manifests_deleted.is_empty());
    assert_eq!(report.blobs_deleted, 2, "{report:?}");
    assert_eq!(
        report.bytes_freed,
        ("app 1.2".len() + "published by nobody".len()) as u64
    );
    assert_eq!(report.uploads_deleted, 1);
    assert!(!store.has_blob(&orphan).await.unwrap());
    assert!(!store.has_blob(&versions[2].1.digest).await.unwrap());
    assert!(store.get("app", "1.2").await.unwrap().is_none());
    for (version, own) in [&versions[0], &versions[1], &versions[3]] {
        assert!(store.has_blob(&own.digest).await.unwrap(), "{version}");
        let report = store.verify("app", version, None).await.unwrap();
        assert!(report.ok, "{version}: {:?}", report.problems);
    }
    assert!(store.has_blob(&shared.digest).await.unwrap());
    let stored = keys(&bucket).await;
    assert!(
        !stored
            .iter()
            .any(|key| key.contains("/tmp/") || key.contains("/recent/")),
        "{stored:?}"
    );
    assert_eq!(
        store
            .list(Some("app"))
            .await
            .unwrap()
            .iter()
            .map(|artifact| artifact.version.as_str())
            .collect::<Vec<_>>(),
        ["1.3", "1.1", "1.0"]
    );

    // Unpinned and no longer deployed, the old versions go too, and their blobs with them.
    store.set_pinned("app", "1.0", false).await.unwrap();
    let report = store.gc(&eager, &HashSet::new()).await.unwrap();
    assert_eq!(
        report.manifests_deleted,
        vec![
            ("app".to_owned(), "1.1".to_owned()),
            ("app".to_owned(), "1.0".to_owned())
        ]
    );
    assert_eq!(report.blobs_deleted, 2);
    let mut left = vec![
        blob_key(PREFIX, &versions[3].1.digest).to_string(),
        blob_key(PREFIX, &shared.digest).to_string(),
        format!("{PREFIX}/manifests/app/1.3.json"),
    ];
    left.sort();
    assert_eq!(keys(&bucket).await, left);
}

#[tokio::test]
async fn a_blob_corrupted_in_the_bucket_is_detected() {
    let server = S3Server::start();
    let store = server.open(PREFIX).await;
    let bucket = server.bucket();
    let content = pseudo_random(200_000, 4);
    let data = file(&store, "data.bin", &content).await;
    let app = file(&store, "bin/app", b"#!/bin/sh\necho hello\n").await;
    store
        .publish(&request("app", "1.0", vec![data.clone(), app.clone()]))
        .await
        .unwrap();
    assert!(store.verify("app", "1.0", None).await.unwrap().ok);

    // One bit flipped, through the S3 API, behind the store's back.
    let mut corrupted = content.clone();
    corrupted[100_000] ^= 0x01;
    bucket
        .put(
            &blob_key(PREFIX, &data.digest),
            Bytes::from(corrupted.clone()).into(),
        )
        .await
        .unwrap();
    let error = store.read_blob(&data.digest).await.unwrap_err();
    match &error {
        ArtifactError::Corrupt { digest } => assert_eq!(*digest, data.digest),
        other => panic!("{other:?}"),
    }
    assert_eq!(error.status_code(), 500);
    assert_eq!(
        error.to_string(),
        format!(
            "blob {} is corrupt: its bytes do not hash to its digest",
            data.digest
        )
    );
    let report = store.verify("app", "1.0", None).await.unwrap();
    assert!(!report.ok);
    assert!(report.signature_ok);
    assert_eq!(
        report.problems,
        vec![format!(
            "file `data.bin`: blob {} is corrupt (its bytes hash to {})",
            data.digest,
            Digest::of(&corrupted)
        )]
    );
    // The other file still reads.
    assert_eq!(
        &store.read_blob(&app.digest).await.unwrap()[..],
        b"#!/bin/sh\necho hello\n"
    );

    // Cut short: still caught.
    bucket
        .put(
            &blob_key(PREFIX, &data.digest),
            Bytes::copy_from_slice(&content[..1000]).into(),
        )
        .await
        .unwrap();
    assert!(matches!(
        store.read_blob(&data.digest).await,
        Err(ArtifactError::Corrupt { .. })
    ));
    assert!(!store.verify("app", "1.0", None).await.unwrap().ok);

    // Gone from the bucket.
    bucket
        .delete(&blob_key(PREFIX, &data.digest))
        .await
        .unwrap();
    assert!(matches!(
        store.read_blob(&data.digest).await,
        Err(ArtifactError::NotFound { .. })
    ));
    assert_eq!(
        store.verify("app", "1.0", None).await.unwrap().problems,
        vec![format!("file `data.bin`: blob {} is missing", data.digest)]
    );

    // A manifest edited in the bucket no longer verifies.
    let manifest = ObjectPath::from(format!("{PREFIX}/manifests/app/1.0.json"));
    let stored = bucket.get(&manifest).await.unwrap().bytes().await.unwrap();
    let edited = String::from_utf8(stored.to_vec())
        .unwrap()
        .replace("\"bin/app\"", "\"bin/evil\"");
    assert_ne!(edited.as_bytes(), &stored[..]);
    bucket
        .put(&manifest, Bytes::from(edited).into())
        .await
        .unwrap();
    let report = store.verify("app", "1.0", None).await.unwrap();
    assert!(!report.ok && !report.signature_ok, "{report:?}");
}

#[tokio::test]
async fn wrong_credentials_and_a_missing_bucket_are_clear_errors() {
    let server = S3Server::start_checking_signatures();
    let url = format!("s3://{BUCKET}/{PREFIX}");

    // With the server's key, requests go through.
    let store = server.open(PREFIX).await;
    let digest = store
        .put_blob_bytes(Bytes::from_static(b"signed right"))
        .await
        .unwrap();
    assert!(store.has_blob(&digest).await.unwrap());
    assert!(store.get("app", "1.0").await.unwrap().is_none());

    // A wrong secret: the server refuses the signature, for writes and reads alike (a
    // refused read is an error, never taken for "absent").
    let wrong_secret = open_s3(
        &url,
        &server.endpoint(),
        &server.access_key_id,
        "not-the-secret",
    )
    .await
    .unwrap();
    let error = wrong_secret
        .put_blob_bytes(Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(error, ArtifactError::Storage(_)), "{error:?}");
    assert_eq!(error.status_code(), 500);
    let message = error.to_string();
    assert!(message.contains("403 Forbidden"), "{message}");
    assert!(message.contains("SignatureDoesNotMatch"), "{message}");
    let error = wrong_secret.get("app", "1.0").await.unwrap_err();
    assert!(
        error.to_string().contains("SignatureDoesNotMatch"),
        "{error}"
    );
    let error = wrong_secret.has_blob(&digest).await.unwrap_err();
    assert!(error.to_string().contains("403 Forbidden"), "{error}");
    let error = wrong_secret.read_blob(&digest).await.unwrap_err();
    assert!(
        error.to_string().contains("SignatureDoesNotMatch"),
        "{error}"
    );
    let error = wrong_secret.verify("app", "1.0", None).await.unwrap_err();
    assert!(
        error.to_string().contains("SignatureDoesNotMatch"),
        "{error}"
    );

    // An access key the server does not know.
    let unknown = open_s3(&url, &server.endpoint(), "AKIAUNKNOWNKEY000000", "secret")
        .await
        .unwrap();
    let error = unknown
        .put_blob_bytes(Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("InvalidAccessKeyId"), "{error}");

    // A bucket that does not exist.
    let missing = open_s3(
        "s3://no-such-bucket/artifacts",
        &server.endpoint(),
        &server.access_key_id,
        &server.secret_access_key,
    )
    .await
    .unwrap();
    let error = missing
        .put_blob_bytes(Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(error, ArtifactError::Storage(_)), "{error:?}");
    assert!(error.to_string().contains("NoSuchBucket"), "{error}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_clear_error() {
    // Nothing listens there (no server is needed for this one).
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = open_s3(
        &format!("s3://{BUCKET}/{PREFIX}"),
        &format!("http://127.0.0.1:{closed_port}"),
        "AKIAEXAMPLE",
        "secret",
    )
    .await
    .unwrap();
    // One request, retried with backoff (object_store's policy) before the error comes.
    let error = store.get("app", "1.0").await.unwrap_err();
    assert!(matches!(error, ArtifactError::Storage(_)), "{error:?}");
    assert_eq!(error.status_code(), 500);
    let message = error.to_string();
    assert!(
        message.contains(&format!("http://127.0.0.1:{closed_port}/")),
        "{message}"
    );
    // Why, and not only "error sending request".
    assert!(message.contains("Connection refused"), "{message}");
}
