//! The artifact store against real files in temporary folders and, where the test does not
//! reach into the storage, against the in-memory object store as a second backend.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sorat_artifacts::{
    ArtifactError, ArtifactStore, Attachment, Digest, FileRef, Metadata, PublishRequest, Retention,
    SigningKey, StorageConfig, verify_signature,
};
use tempfile::TempDir;

/// A storage to run a test on; `folder` is the local root, when there is one.
struct Backend {
    _dir: TempDir,
    config: StorageConfig,
    folder: Option<PathBuf>,
}

fn local() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("artifacts");
    Backend {
        config: StorageConfig::Local(folder.clone()),
        folder: Some(folder),
        _dir: dir,
    }
}

fn memory() -> Backend {
    Backend {
        _dir: tempfile::tempdir().unwrap(),
        config: StorageConfig::ObjectStore {
            url: "memory://".into(),
        },
        folder: None,
    }
}

fn backends() -> Vec<Backend> {
    vec![local(), memory()]
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

async fn open(backend: &Backend) -> ArtifactStore {
    ArtifactStore::open_with_key(backend.config.clone(), key(1))
        .await
        .unwrap()
}

/// Stores `content` and returns a file of it at `path`.
async fn file(store: &ArtifactStore, path: &str, content: &str) -> FileRef {
    let digest = store
        .put_blob_bytes(Bytes::from(content.to_owned()))
        .await
        .unwrap();
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

fn blob_file(folder: &Path, digest: &Digest) -> PathBuf {
    folder
        .join("blobs/sha256")
        .join(&digest.hex()[..2])
        .join(digest.hex())
}

fn files_under(folder: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![folder.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

fn set_age(path: &Path, age: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

fn chunks(data: &[u8], size: usize) -> Vec<Result<Bytes, std::io::Error>> {
    data.chunks(size)
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect()
}

#[tokio::test]
async fn blob_round_trip_and_idempotence() {
    for backend in backends() {
        let store = open(&backend).await;
        let digest = store
            .put_blob_bytes(Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(digest, Digest::of(b"hello"));
        assert!(store.has_blob(&digest).await.unwrap());
        assert_eq!(store.blob_size(&digest).await.unwrap(), Some(5));
        assert_eq!(&store.read_blob(&digest).await.unwrap()[..], b"hello");
        let again = store
            .put_blob(futures_util::stream::iter(chunks(b"hello", 2)))
            .await
            .unwrap();
        assert_eq!(again, digest);

        // Larger than one upload part: sent as a multipart upload, read back whole.
        let big: Vec<u8> = (0..9 * 1024 * 1024 + 17u32)
            .map(|i| (i % 253) as u8)
            .collect();
        let big_digest = store
            .put_blob(futures_util::stream::iter(chunks(&big, 64 * 1024)))
            .await
            .unwrap();
        assert_eq!(big_digest, Digest::of(&big));
        assert_eq!(store.read_blob(&big_digest).await.unwrap().len(), big.len());

        let empty = store.put_blob_bytes(Bytes::new()).await.unwrap();
        assert_eq!(empty, Digest::of(b""));
        assert!(store.read_blob(&empty).await.unwrap().is_empty());

        let absent = Digest::of(b"absent");
        assert!(!store.has_blob(&absent).await.unwrap());
        assert!(matches!(
            store.read_blob(&absent).await,
            Err(ArtifactError::NotFound { .. })
        ));

        if let Some(folder) = &backend.folder {
            let mut blobs = files_under(&folder.join("blobs"));
            blobs.sort();
            assert_eq!(blobs.len(), 3, "{blobs:?}");
            assert!(blobs.contains(&blob_file(folder, &digest)));
            assert!(files_under(&folder.join("tmp")).is_empty());
        }
    }
}

#[tokio::test]
async fn digest_mismatch_is_refused_and_nothing_is_stored() {
    for backend in backends() {
        let store = open(&backend).await;
        let claimed = Digest::of(b"what the sender says");
        let error = store
            .put_blob_expecting(
                &claimed,
                futures_util::stream::iter(chunks(b"other bytes", 3)),
            )
            .await
            .unwrap_err();
        match &error {
            ArtifactError::DigestMismatch { expected, actual } => {
                assert_eq!(*expected, claimed);
                assert_eq!(*actual, Digest::of(b"other bytes"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(error.status_code(), 400);
        assert!(!store.has_blob(&Digest::of(b"other bytes")).await.unwrap());
        assert!(!store.has_blob(&claimed).await.unwrap());

        // The right claim is taken.
        let right = Digest::of(b"other bytes");
        let stored = store
            .put_blob_expecting(
                &right,
                futures_util::stream::iter(chunks(b"other bytes", 3)),
            )
            .await
            .unwrap();
        assert_eq!(stored, right);

        // A stream that fails half-way stores nothing either.
        let broken = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"half")),
            Err(std::io::Error::other("connection reset")),
        ]);
        assert!(matches!(
            store.put_blob(broken).await,
            Err(ArtifactError::Storage(_))
        ));
        assert!(!store.has_blob(&Digest::of(b"half")).await.unwrap());

        if let Some(folder) = &backend.folder {
            assert_eq!(files_under(&folder.join("blobs")).len(), 1);
            assert!(files_under(&folder.join("tmp")).is_empty());
        }
    }
}

#[tokio::test]
async fn a_corrupt_blob_is_detected_on_read_and_by_verify() {
    let backend = local();
    let folder = backend.folder.clone().unwrap();
    let store = open(&backend).await;
    let app = file(&store, "bin/app", "#!/bin/sh\necho hello\n").await;
    let digest = app.digest.clone();
    store
        .publish(&request("app", "1.0", vec![app]))
        .await
        .unwrap();

    let path = blob_file(&folder, &digest);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[3] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();

    match store.read_blob(&digest).await {
        Err(ArtifactError::Corrupt { digest: corrupt }) => assert_eq!(corrupt, digest),
        other => panic!("{other:?}"),
    }
    let report = store.verify("app", "1.0", None).await.unwrap();
    assert!(!report.ok);
    assert!(report.signature_ok);
    assert_eq!(report.problems.len(), 1);
    assert!(
        report.problems[0].starts_with(&format!("file `bin/app`: blob {digest} is corrupt")),
        "{:?}",
        report.problems
    );

    std::fs::remove_file(&path).unwrap();
    let report = store.verify("app", "1.0", None).await.unwrap();
    assert_eq!(
        report.problems,
        vec![format!("file `bin/app`: blob {digest} is missing")]
    );
}

#[tokio::test]
async fn publish_get_list() {
    for backend in backends() {
        let store = open(&backend).await;
        let a = file(&store, "bin/app", "binary").await;
        let readme = file(&store, "README.md", "read me").await;
        let sbom = store
            .put_blob_bytes(Bytes::from_static(b"{\"bomFormat\":\"CycloneDX\"}"))
            .await
            .unwrap();
        let metadata = Metadata {
            project: Some("shop".into()),
            commit: Some("0123abc".into()),
            git_ref: Some("refs/heads/main".into()),
            run: Some(42),
            job: Some("build".into()),
            publisher: Some("agent-1".into()),
        };
        let published = store
            .publish(&PublishRequest {
                name: "app".into(),
                version: "1.0.0+build.7".into(),
                files: vec![a.clone(), readme.clone()],
                attachments: vec![Attachment {
                    kind: "sbom".into(),
                    digest: sbom.clone(),
                    media_type: "application/vnd.cyclonedx+json".into(),
                }],
                metadata: metadata.clone(),
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
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>(),
            ["README.md", "bin/app"],
            "files are sorted by path"
        );
        assert_eq!(artifact.size, 6 + 7);
        assert_eq!(artifact.metadata, metadata);
        assert!(!artifact.pinned && !artifact.moving);
        assert_eq!(artifact.digest, Digest::of(&artifact.canonical_manifest()));
        assert!(verify_signature(
            &artifact.canonical_manifest(),
            &artifact.signature,
            &store.public_key()
        ));
        artifact.created_at.parse::<jiff::Timestamp>().unwrap();

        let got = store.get("app", "1.0.0+build.7").await.unwrap().unwrap();
        assert_eq!(got, artifact);
        assert!(store.get("app", "2.0").await.unwrap().is_none());
        assert!(store.get("nothing", "1").await.unwrap().is_none());

        let b = file(&store, "bin/app", "binary 2").await;
        store
            .publish(&request("app", "1.1.0", vec![b]))
            .await
            .unwrap();
        let other = file(&store, "x", "other").await;
        store
            .publish(&request("app2", "1", vec![other.clone()]))
            .await
            .unwrap();
        store
            .publish(&request("app.x", "1", vec![other]))
            .await
            .unwrap();

        let all = store.list(None).await.unwrap();
        let names: Vec<_> = all
            .iter()
            .map(|a| format!("{}@{}", a.name, a.version))
            .collect();
        assert_eq!(
            names,
            ["app.x@1", "app2@1", "app@1.1.0", "app@1.0.0+build.7"]
        );
        let apps = store.list(Some("app")).await.unwrap();
        let versions: Vec<_> = apps.iter().map(|a| a.version.as_str()).collect();
        assert_eq!(versions, ["1.1.0", "1.0.0+build.7"]);
        assert!(store.list(Some("none")).await.unwrap().is_empty());

        store.set_pinned("app", "1.1.0", true).await.unwrap();
        assert!(store.get("app", "1.1.0").await.unwrap().unwrap().pinned);
        assert!(store.list(Some("app")).await.unwrap()[0].pinned);
        store.set_pinned("app", "1.1.0", false).await.unwrap();
        assert!(!store.get("app", "1.1.0").await.unwrap().unwrap().pinned);
        assert!(matches!(
            store.set_pinned("app", "9", true).await,
            Err(ArtifactError::NotFound { .. })
        ));
        // Pinning does not change what was signed.
        assert!(store.verify("app", "1.1.0", None).await.unwrap().ok);
    }
}

#[tokio::test]
async fn versions_are_immutable_and_moving_tags_are_replaced() {
    for backend in backends() {
        let store = open(&backend).await;
        let one = file(&store, "app", "one").await;
        let two = file(&store, "app", "two").await;

        let first = store
            .publish(&request("app", "1.0", vec![one.clone()]))
            .await
            .unwrap();
        assert!(first.created);
        let mut same = request("app", "1.0", vec![one.clone()]);
        same.metadata.run = Some(99);
        let again = store.publish(&same).await.unwrap();
        assert!(!again.created);
        assert_eq!(again.artifact, first.artifact, "the stored one, unchanged");

        let error = store
            .publish(&request("app", "1.0", vec![two.clone()]))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ArtifactError::Conflict { name, version } if name == "app" && version == "1.0")
        );
        assert_eq!(error.status_code(), 409);
        // An immutable version does not become a moving one.
        let mut moving_over = request("app", "1.0", vec![two.clone()]);
        moving_over.moving = true;
        assert!(matches!(
            store.publish(&moving_over).await,
            Err(ArtifactError::Conflict { .. })
        ));
        assert_eq!(
            store.get("app", "1.0").await.unwrap().unwrap().files,
            vec![one.clone()]
        );

        let mut latest = request("app", "latest", vec![one.clone()]);
        latest.moving = true;
        let first_latest = store.publish(&latest).await.unwrap();
        assert!(first_latest.created && first_latest.artifact.moving);
        assert!(!store.publish(&latest).await.unwrap().created);
        latest.files = vec![two.clone()];
        let replaced = store.publish(&latest).await.unwrap();
        assert!(replaced.created);
        let got = store.get("app", "latest").await.unwrap().unwrap();
        assert_eq!(got.files, vec![two.clone()]);
        assert!(store.verify("app", "latest", None).await.unwrap().ok);
        assert_eq!(store.list(Some("app")).await.unwrap().len(), 2);
    }
}

#[tokio::test]
async fn missing_blobs_and_wrong_sizes_are_refused() {
    for backend in backends() {
        let store = open(&backend).await;
        let present = file(&store, "a", "present").await;
        let absent = Digest::of(b"never uploaded");
        let missing = FileRef {
            path: "b".into(),
            digest: absent.clone(),
            size: 14,
            mode: 0o644,
        };
        match store
            .publish(&request("app", "1", vec![present.clone(), missing]))
            .await
        {
            Err(ArtifactError::MissingBlob { digest }) => assert_eq!(digest, absent),
            other => panic!("{other:?}"),
        }
        let mut with_attachment = request("app", "1", vec![present.clone()]);
        with_attachment.attachments.push(Attachment {
            kind: "sarif".into(),
            digest: absent.clone(),
            media_type: "application/sarif+json".into(),
        });
        assert!(matches!(
            store.publish(&with_attachment).await,
            Err(ArtifactError::MissingBlob { .. })
        ));
        let mut wrong_size = present.clone();
        wrong_size.size = 3;
        let error = store
            .publish(&request("app", "1", vec![wrong_size]))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ArtifactError::InvalidPath { .. }),
            "{error}"
        );
        assert!(
            store.list(None).await.unwrap().is_empty(),
            "nothing published"
        );
    }
}

#[tokio::test]
async fn invalid_names_versions_and_paths_are_refused() {
    for backend in backends() {
        let store = open(&backend).await;
        let good = file(&store, "ok", "ok").await;
        let at = |path: &str| FileRef {
            path: path.into(),
            ..good.clone()
        };
        let cases: Vec<(PublishRequest, &str)> = vec![
            (request("", "1", vec![good.clone()]), "name"),
            (request(".hidden", "1", vec![good.clone()]), "name"),
            (request("a/b", "1", vec![good.clone()]), "name"),
            (request(&"n".repeat(129), "1", vec![good.clone()]), "name"),
            (request("app", "", vec![good.clone()]), "version"),
            (request("app", "1/2", vec![good.clone()]), "version"),
            (request("app", "1 2", vec![good.clone()]), "version"),
            (request("app", "1", vec![at("../etc/passwd")]), "path"),
            (request("app", "1", vec![at("/abs")]), "path"),
            (request("app", "1", vec![at("a/../../b")]), "path"),
            (request("app", "1", vec![at("a//b")]), "path"),
            (request("app", "1", vec![at("")]), "path"),
            (request("app", "1", vec![at("x"), at("x")]), "path"),
        ];
        for (request, kind) in cases {
            let error = store.publish(&request).await.unwrap_err();
            let matched = match kind {
                "path" => matches!(error, ArtifactError::InvalidPath { .. }),
                field => {
                    matches!(&error, ArtifactError::InvalidName { field: f, .. } if *f == field)
                }
            };
            assert!(matched, "{request:?}: {error}");
            assert_eq!(error.status_code(), 400);
        }
        let mut bad_attachment = request("app", "1", vec![good.clone()]);
        bad_attachment.attachments.push(Attachment {
            kind: "s b o m".into(),
            digest: good.digest.clone(),
            media_type: "text/plain".into(),
        });
        assert!(matches!(
            store.publish(&bad_attachment).await,
            Err(ArtifactError::InvalidName {
                field: "attachment kind",
                ..
            })
        ));
        assert!(matches!(
            store.get("../x", "1").await,
            Err(ArtifactError::InvalidName { .. })
        ));
        assert!(matches!(
            store.list(Some("a/b")).await,
            Err(ArtifactError::InvalidName { .. })
        ));
        assert!(store.list(None).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn signatures_verify_and_tampering_or_another_key_fails() {
    let backend = local();
    let folder = backend.folder.clone().unwrap();
    let store = open(&backend).await;
    let real = file(&store, "bin/app", "the real binary").await;
    let evil = file(&store, "bin/app", "an evil binary!").await;
    let published = store
        .publish(&request("app", "1.0", vec![real.clone()]))
        .await
        .unwrap()
        .artifact;

    let report = store.verify("app", "1.0", None).await.unwrap();
    assert!(report.ok && report.signature_ok, "{report:?}");
    assert!(report.problems.is_empty());

    let other_key = key(2).verifying_key().to_bytes();
    let report = store.verify("app", "1.0", Some(&other_key)).await.unwrap();
    assert!(!report.ok && !report.signature_ok);
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(!verify_signature(
        &published.canonical_manifest(),
        &published.signature,
        &other_key
    ));
    // A store opened with another key does not vouch for this one's manifests.
    let stranger = ArtifactStore::open_with_key(backend.config.clone(), key(2))
        .await
        .unwrap();
    assert!(
        !stranger
            .verify("app", "1.0", None)
            .await
            .unwrap()
            .signature_ok
    );
    assert!(
        stranger
            .verify("app", "1.0", Some(&store.public_key()))
            .await
            .unwrap()
            .ok
    );

    // Swap the file's digest for another stored blob of the same size in the stored JSON.
    let manifest = folder.join("manifests/app/1.0.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.starts_with("{\"manifest\":{"), "{text}");
    let tampered = text.replace(real.digest.as_str(), evil.digest.as_str());
    assert_ne!(tampered, text);
    std::fs::write(&manifest, &tampered).unwrap();
    let report = store.verify("app", "1.0", None).await.unwrap();
    assert!(!report.ok && !report.signature_ok, "{report:?}");
    assert!(report.problems[0].contains("signature does not verify"));

    // Whitespace alone changes nothing that is signed.
    let pretty: serde_json::Value = serde_json::from_str(&text).unwrap();
    std::fs::write(&manifest, serde_json::to_string_pretty(&pretty).unwrap()).unwrap();
    assert!(store.verify("app", "1.0", None).await.unwrap().ok);

    // A manifest copied under another version is caught though its signature is good.
    std::fs::write(folder.join("manifests/app/2.0.json"), &text).unwrap();
    let report = store.verify("app", "2.0", None).await.unwrap();
    assert!(report.signature_ok && !report.ok);
    assert!(
        report.problems[0].contains("stored as app@2.0"),
        "{report:?}"
    );
    assert!(matches!(
        store.get("app", "2.0").await,
        Err(ArtifactError::CorruptManifest { .. })
    ));

    // Unreadable JSON is a report, not an error; an absent manifest is NotFound.
    std::fs::write(&manifest, "{not json").unwrap();
    let report = store.verify("app", "1.0", None).await.unwrap();
    assert!(!report.ok && !report.signature_ok);
    assert!(matches!(
        store.verify("app", "3.0", None).await,
        Err(ArtifactError::NotFound { .. })
    ));
}

#[tokio::test]
async fn the_key_file_is_created_0600_and_reused_on_reopen() {
    let backend = local();
    let key_path = backend._dir.path().join("keys/artifact-signing.key");
    let store = ArtifactStore::open(backend.config.clone(), &key_path)
        .await
        .unwrap();
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(std::fs::read(&key_path).unwrap().len(), 32);
    assert_eq!(store.public_key_hex(), hex::encode(store.public_key()));
    let a = file(&store, "a", "persisted").await;
    store.publish(&request("app", "1", vec![a])).await.unwrap();
    drop(store);

    let reopened = ArtifactStore::open(backend.config.clone(), &key_path)
        .await
        .unwrap();
    assert_eq!(
        reopened.public_key(),
        SigningKey::from_bytes(&std::fs::read(&key_path).unwrap().try_into().unwrap())
            .verifying_key()
            .to_bytes()
    );
    assert!(reopened.verify("app", "1", None).await.unwrap().ok);

    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    match ArtifactStore::open(backend.config.clone(), &key_path).await {
        Err(ArtifactError::Key { path, reason }) => {
            assert_eq!(path, key_path);
            assert!(reason.contains("chmod 600"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn retention_keeps_the_newest_the_pinned_and_the_deployed() {
    for backend in backends() {
        let store = open(&backend).await;
        let shared = file(&store, "lib", "shared by every version").await;
        let mut own = Vec::new();
        for version in 1..=6 {
            let mine = file(&store, "bin", &format!("version {version}")).await;
            own.push(mine.digest.clone());
            store
                .publish(&request(
                    "app",
                    &format!("v{version}"),
                    vec![shared.clone(), mine],
                ))
                .await
                .unwrap();
        }
        let tool = file(&store, "tool", "another name").await;
        store
            .publish(&request("tool", "1", vec![tool]))
            .await
            .unwrap();
        store.set_pinned("app", "v1", true).await.unwrap();
        let in_use: HashSet<(String, String)> = [("app".to_owned(), "v3".to_owned())].into();

        let young = Retention {
            keep_last: 2,
            grace: Duration::from_secs(3600),
        };
        let report = store.gc(&young, &in_use).await.unwrap();
        assert_eq!(
            report.manifests_deleted,
            vec![("app".into(), "v4".into()), ("app".into(), "v2".into())]
        );
        assert_eq!(
            report.blobs_deleted, 0,
            "their blobs are younger than grace"
        );
        let kept: Vec<_> = store
            .list(Some("app"))
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.version)
            .collect();
        assert_eq!(kept, ["v6", "v5", "v3", "v1"]);
        assert_eq!(store.list(Some("tool")).await.unwrap().len(), 1);

        tokio::time::sleep(Duration::from_millis(20)).await;
        let old = Retention {
            keep_last: 2,
            grace: Duration::ZERO,
        };
        let report = store.gc(&old, &in_use).await.unwrap();
        assert!(report.manifests_deleted.is_empty());
        assert_eq!(report.blobs_deleted, 2, "{report:?}");
        assert_eq!(report.bytes_freed, 2 * "version 2".len() as u64);
        assert!(!store.has_blob(&own[1]).await.unwrap());
        assert!(!store.has_blob(&own[3]).await.unwrap());
        for kept in [0, 2, 4, 5] {
            assert!(store.has_blob(&own[kept]).await.unwrap());
        }
        assert!(store.has_blob(&shared.digest).await.unwrap());
        for version in ["v6", "v5", "v3", "v1"] {
            assert!(store.verify("app", version, None).await.unwrap().ok);
        }

        // Unpinned and no longer deployed, v1 and v3 go the next time.
        store.set_pinned("app", "v1", false).await.unwrap();
        let report = store.gc(&old, &HashSet::new()).await.unwrap();
        assert_eq!(
            report.manifests_deleted,
            vec![("app".into(), "v3".into()), ("app".into(), "v1".into())]
        );
        assert_eq!(report.blobs_deleted, 2);
    }
}

#[tokio::test]
async fn gc_deletes_only_unreferenced_blobs_older_than_grace() {
    // Ages are set on the files, so this runs on the local backend.
    let backend = local();
    let folder = backend.folder.clone().unwrap();
    let store = open(&backend).await;
    let referenced = file(&store, "a", "referenced").await;
    store
        .publish(&request("app", "1", vec![referenced.clone()]))
        .await
        .unwrap();
    let old = store
        .put_blob_bytes(Bytes::from_static(b"old"))
        .await
        .unwrap();
    let young = store
        .put_blob_bytes(Bytes::from_static(b"young"))
        .await
        .unwrap();
    let revived = store
        .put_blob_bytes(Bytes::from_static(b"revived"))
        .await
        .unwrap();
    let touched = store
        .put_blob_bytes(Bytes::from_static(b"touched"))
        .await
        .unwrap();
    let two_hours = Duration::from_secs(7200);
    for digest in [&referenced.digest, &old, &revived, &touched] {
        set_age(&blob_file(&folder, digest), two_hours);
    }
    // Uploading stored bytes again, or saying a client need not upload them, makes them
    // young again without rewriting them.
    assert_eq!(
        store
            .put_blob_bytes(Bytes::from_static(b"revived"))
            .await
            .unwrap(),
        revived
    );
    assert!(store.touch_blob(&touched).await.unwrap());
    assert!(!store.touch_blob(&Digest::of(b"never")).await.unwrap());
    // An upload abandoned long ago, and one in progress.
    std::fs::create_dir_all(folder.join("tmp")).unwrap();
    std::fs::write(folder.join("tmp/abandoned"), b"partial").unwrap();
    set_age(&folder.join("tmp/abandoned"), two_hours);
    std::fs::write(folder.join("tmp/in-progress"), b"partial").unwrap();

    let policy = Retention {
        keep_last: 10,
        grace: Duration::from_secs(3600),
    };
    let report = store.gc(&policy, &HashSet::new()).await.unwrap();
    assert!(report.manifests_deleted.is_empty());
    assert_eq!(report.blobs_deleted, 1, "{report:?}");
    assert_eq!(report.bytes_freed, 3);
    assert_eq!(report.uploads_deleted, 1);
    assert!(!store.has_blob(&old).await.unwrap());
    for kept in [&referenced.digest, &young, &revived, &touched] {
        assert!(store.has_blob(kept).await.unwrap(), "{kept}");
    }
    assert!(!folder.join("tmp/abandoned").exists());
    assert!(folder.join("tmp/in-progress").exists());
    assert!(store.verify("app", "1", None).await.unwrap().ok);

    // Once their marks are old too, the revived and touched blobs go.
    for path in files_under(&folder.join("recent")) {
        set_age(&path, two_hours);
    }
    let report = store.gc(&policy, &HashSet::new()).await.unwrap();
    assert_eq!(report.blobs_deleted, 2, "{report:?}");
    assert!(files_under(&folder.join("recent")).is_empty());
    assert!(store.has_blob(&referenced.digest).await.unwrap());
    assert!(store.has_blob(&young).await.unwrap());
}

#[tokio::test]
async fn gc_stops_before_deleting_when_a_manifest_cannot_be_read() {
    let backend = local();
    let folder = backend.folder.clone().unwrap();
    let store = open(&backend).await;
    let a = file(&store, "a", "a").await;
    store
        .publish(&request("app", "1", vec![a.clone()]))
        .await
        .unwrap();
    std::fs::write(folder.join("manifests/app/2.json"), "garbage").unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let policy = Retention {
        keep_last: 0,
        grace: Duration::ZERO,
    };
    let error = store.gc(&policy, &HashSet::new()).await.unwrap_err();
    assert!(
        matches!(error, ArtifactError::CorruptManifest { .. }),
        "{error}"
    );
    assert!(store.get("app", "1").await.unwrap().is_some());
    assert!(store.has_blob(&a.digest).await.unwrap());
}

/// Several tasks upload and publish (sharing some content, so that old blobs are uploaded
/// again) while gc runs over and over with a short retention; at the end every artifact
/// still listed verifies, the newest versions of every name are there, and no publish
/// ended with a manifest that points at a missing blob.
async fn publish_while_gc_runs(backend: Backend, grace: Duration) -> usize {
    const TASKS: usize = 4;
    const VERSIONS: usize = 60;
    const KEEP: usize = 3;
    let store = open(&backend).await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    let collector = {
        let store = store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let policy = Retention {
                keep_last: KEEP,
                grace,
            };
            let mut runs = 0usize;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                store.gc(&policy, &HashSet::new()).await.unwrap();
                runs += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            runs
        })
    };

    let mut publishers = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        publishers.push(tokio::spawn(async move {
            let mut refusals = 0usize;
            for version in 0..VERSIONS {
                // Content that other versions and tasks also upload (and that gc may have
                // judged unreferenced), and content of this version alone.
                let shared = format!("shared content {}", version % 4);
                let unique = format!("task {task} version {version}");
                loop {
                    let mut files = Vec::new();
                    for (path, content) in [("shared", &shared), ("unique", &unique)] {
                        let digest = store
                            .put_blob(futures_util::stream::iter(chunks(content.as_bytes(), 7)))
                            .await
                            .unwrap();
                        files.push(FileRef {
                            path: path.into(),
                            digest,
                            size: content.len() as u64,
                            mode: 0o644,
                        });
                        tokio::task::yield_now().await;
                    }
                    match store
                        .publish(&request(
                            &format!("app-{task}"),
                            &version.to_string(),
                            files,
                        ))
                        .await
                    {
                        Ok(published) => {
                            assert!(published.created);
                            break;
                        }
                        // gc took a blob between its upload and the publish (possible only
                        // with no grace period): refused, so upload again.
                        Err(ArtifactError::MissingBlob { .. }) => refusals += 1,
                        Err(error) => panic!("{error}"),
                    }
                }
            }
            refusals
        }));
    }
    let mut refusals = 0;
    for publisher in publishers {
        refusals += publisher.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let runs = collector.await.unwrap();
    assert!(runs > 0);
    if !grace.is_zero() {
        assert_eq!(
            refusals, 0,
            "within the grace period no upload is collected"
        );
    }

    let all = store.list(None).await.unwrap();
    for artifact in &all {
        let report = store
            .verify(&artifact.name, &artifact.version, None)
            .await
            .unwrap();
        assert!(
            report.ok,
            "{}@{}: {report:?}",
            artifact.name, artifact.version
        );
    }
    for task in 0..TASKS {
        for version in VERSIONS - KEEP..VERSIONS {
            assert!(
                store
                    .get(&format!("app-{task}"), &version.to_string())
                    .await
                    .unwrap()
                    .is_some()
            );
        }
    }
    // One more collection leaves exactly the newest versions, still whole.
    store
        .gc(
            &Retention {
                keep_last: KEEP,
                grace,
            },
            &HashSet::new(),
        )
        .await
        .unwrap();
    let left = store.list(None).await.unwrap();
    assert_eq!(left.len(), TASKS * KEEP);
    for artifact in &left {
        assert!(
            store
                .verify(&artifact.name, &artifact.version, None)
                .await
                .unwrap()
                .ok
        );
    }
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publish_while_gc_runs_without_grace() {
    for backend in backends() {
        publish_while_gc_runs(backend, Duration::ZERO).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publish_while_gc_runs_with_grace() {
    for backend in backends() {
        publish_while_gc_runs(backend, Duration::from_secs(3600)).await;
    }
}

#[tokio::test]
async fn storage_urls() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("via-url").display());
    let store = ArtifactStore::open_with_key(StorageConfig::ObjectStore { url }, key(1))
        .await
        .unwrap();
    let digest = store
        .put_blob_bytes(Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert!(blob_file(&dir.path().join("via-url"), &digest).exists());
    // Opening an S3 store checks its configuration, not the network.
    ArtifactStore::open_with_key(
        StorageConfig::ObjectStore {
            url: "s3://bucket/some/prefix".into(),
        },
        key(1),
    )
    .await
    .unwrap();
    for bad in ["ftp://host/x", "no scheme", "s3://"] {
        let result =
            ArtifactStore::open_with_key(StorageConfig::ObjectStore { url: bad.into() }, key(1))
                .await;
        assert!(matches!(result, Err(ArtifactError::Storage(_))), "{bad}");
    }
}
