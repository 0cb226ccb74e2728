//! What an artifact is: the request to publish one, the stored artifact, its canonical
//! (signed) manifest, and the checks on names and paths.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{ArtifactError, Digest};

/// The value of the manifest's `schema` key: what the signature covers is a Sorat artifact
/// manifest of this shape, and nothing else signed with the same key.
pub(crate) const MANIFEST_SCHEMA: &str = "sorat-artifact/1";

/// What to publish: name@version made of files (and attachments) whose blobs are already
/// stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishRequest {
    /// The artifact's name (see [`validate_name`]).
    pub name: String,
    /// Its version (see [`validate_version`]).
    pub version: String,
    /// Its files.
    pub files: Vec<FileRef>,
    /// Reports about it (SBOM, scan results, test results).
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// Where it came from.
    #[serde(default)]
    pub metadata: Metadata,
    /// A moving tag (like `latest`): publishing it again with other files replaces it.
    #[serde(default)]
    pub moving: bool,
}

/// One file of an artifact.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileRef {
    /// The path inside the artifact: relative, `/`-separated, without `.` or `..` parts (see
    /// [`validate_file_path`]).
    pub path: String,
    /// The blob holding its bytes.
    pub digest: Digest,
    /// Its size in bytes (checked against the blob when publishing).
    pub size: u64,
    /// Its Unix permission bits (`0o755` for executables).
    pub mode: u32,
}

/// A report attached to an artifact.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Attachment {
    /// What it is: `sbom`, `sarif`, `junit`, …
    pub kind: String,
    /// The blob holding it.
    pub digest: Digest,
    /// Its media type (`application/vnd.cyclonedx+json`, …).
    pub media_type: String,
}

/// Where an artifact came from. Every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The project that built it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The commit it was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The ref (`refs/heads/main`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// The run number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<i64>,
    /// The job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Who published it (a user or an agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
}

/// A published artifact, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// The name.
    pub name: String,
    /// The version.
    pub version: String,
    /// The files, sorted by path.
    pub files: Vec<FileRef>,
    /// The attachments, sorted by kind then digest.
    pub attachments: Vec<Attachment>,
    /// Where it came from.
    pub metadata: Metadata,
    /// When it was published (RFC 3339, UTC).
    pub created_at: String,
    /// The sum of the files' sizes.
    pub size: u64,
    /// The SHA-256 of [`Artifact::canonical_manifest`].
    pub digest: Digest,
    /// The store key's ed25519 signature of [`Artifact::canonical_manifest`], in hex.
    pub signature: String,
    /// Whether retention must keep it (not signed: pinning does not change the manifest).
    pub pinned: bool,
    /// Whether it is a moving tag.
    pub moving: bool,
}

impl Artifact {
    /// The bytes that are signed: a JSON object with `schema` (`"sorat-artifact/1"`),
    /// `name`, `version`, `files`, `attachments`, `metadata` (absent fields left out),
    /// `created_at` and `moving`; keys sorted at every level, no whitespace. The signature,
    /// digest, size and pinned state are not part of it (the digest and size follow from it).
    pub fn canonical_manifest(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_canonical(&self.manifest_value(), &mut out);
        out
    }

    /// The manifest as a JSON value, built field by field so that its shape is this
    /// function's, whatever serde attributes the types carry.
    fn manifest_value(&self) -> Value {
        let files = self
            .files
            .iter()
            .map(|file| {
                object([
                    ("path", Value::from(file.path.as_str())),
                    ("digest", Value::from(file.digest.as_str())),
                    ("size", Value::from(file.size)),
                    ("mode", Value::from(file.mode)),
                ])
            })
            .collect();
        let attachments = self
            .attachments
            .iter()
            .map(|attachment| {
                object([
                    ("kind", Value::from(attachment.kind.as_str())),
                    ("digest", Value::from(attachment.digest.as_str())),
                    ("media_type", Value::from(attachment.media_type.as_str())),
                ])
            })
            .collect();
        let metadata = &self.metadata;
        let mut metadata_object = Map::new();
        for (key, value) in [
            ("project", metadata.project.as_deref()),
            ("commit", metadata.commit.as_deref()),
            ("git_ref", metadata.git_ref.as_deref()),
            ("job", metadata.job.as_deref()),
            ("publisher", metadata.publisher.as_deref()),
        ] {
            if let Some(value) = value {
                metadata_object.insert(key.to_owned(), Value::from(value));
            }
        }
        if let Some(run) = metadata.run {
            metadata_object.insert("run".to_owned(), Value::from(run));
        }
        object([
            ("schema", Value::from(MANIFEST_SCHEMA)),
            ("name", Value::from(self.name.as_str())),
            ("version", Value::from(self.version.as_str())),
            ("files", Value::Array(files)),
            ("attachments", Value::Array(attachments)),
            ("metadata", Value::Object(metadata_object)),
            ("created_at", Value::from(self.created_at.as_str())),
            ("moving", Value::from(self.moving)),
        ])
    }

    /// The stored form: `{"manifest":<canonical manifest>,"signature":"<hex>"}`.
    pub(crate) fn stored_form(&self) -> Vec<u8> {
        let mut out = b"{\"manifest\":".to_vec();
        out.extend(self.canonical_manifest());
        out.extend(b",\"signature\":");
        out.extend(
            Value::from(self.signature.as_str())
                .to_string()
                .into_bytes(),
        );
        out.push(b'}');
        out
    }

    /// Reads the stored form back; `pinned` is false (pins are stored apart). Unknown keys
    /// are refused: what is not signed must not be there.
    pub(crate) fn from_stored_form(bytes: &[u8]) -> Result<Artifact, String> {
        let stored: StoredManifest =
            serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
        let body = stored.manifest;
        if body.schema != MANIFEST_SCHEMA {
            return Err(format!(
                "schema `{}` is not `{MANIFEST_SCHEMA}`",
                body.schema
            ));
        }
        let mut artifact = Artifact {
            name: body.name,
            version: body.version,
            size: body.files.iter().map(|file| file.size).sum(),
            files: body.files,
            attachments: body.attachments,
            metadata: body.metadata,
            created_at: body.created_at,
            digest: Digest::of(b""),
            signature: stored.signature,
            pinned: false,
            moving: body.moving,
        };
        artifact.digest = Digest::of(&artifact.canonical_manifest());
        Ok(artifact)
    }

    /// When it was published, for ordering (an unreadable time sorts as the oldest).
    pub(crate) fn created_timestamp(&self) -> jiff::Timestamp {
        self.created_at
            .parse()
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    /// The blobs it refers to: its files', then its attachments'.
    pub(crate) fn blob_digests(&self) -> impl Iterator<Item = &Digest> {
        self.files
            .iter()
            .map(|file| &file.digest)
            .chain(self.attachments.iter().map(|attachment| &attachment.digest))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredManifest {
    manifest: ManifestBody,
    signature: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestBody {
    schema: String,
    name: String,
    version: String,
    files: Vec<FileRef>,
    attachments: Vec<Attachment>,
    metadata: Metadata,
    created_at: String,
    moving: bool,
}

fn object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Object(
        entries
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect(),
    )
}

/// Compact JSON with every object's keys in byte order (the workspace's `serde_json` keeps
/// insertion order, so the order is imposed here rather than assumed).
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (index, (key, value)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                out.extend(Value::from(key.as_str()).to_string().into_bytes());
                out.push(b':');
                write_canonical(value, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend(scalar.to_string().into_bytes()),
    }
}

/// The result of publishing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The artifact as stored (the existing one when `created` is false).
    pub artifact: Artifact,
    /// False when the same name@version with the same files was already there.
    pub created: bool,
}

/// What [`verify`](crate::ArtifactStore::verify) found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The signature verifies and every blob is present and intact.
    pub ok: bool,
    /// The manifest's signature verifies with the key used.
    pub signature_ok: bool,
    /// One sentence per problem (`file `a/b`: blob sha256:… is missing`).
    pub problems: Vec<String>,
}

/// What [`gc`](crate::ArtifactStore::gc) keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Per name, the newest this many versions are kept (besides pinned and in-use ones).
    pub keep_last: usize,
    /// An unreferenced blob (or leftover upload) younger than this is kept: it may belong to
    /// a publish still in flight. Make it longer than any upload-then-publish takes, plus the
    /// clock skew between this host and the object store (hours, not seconds).
    pub grace: Duration,
}

/// What [`gc`](crate::ArtifactStore::gc) removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    /// The (name, version) manifests retention removed.
    pub manifests_deleted: Vec<(String, String)>,
    /// How many blobs were removed.
    pub blobs_deleted: usize,
    /// Their bytes.
    pub bytes_freed: u64,
    /// How many abandoned uploads (temporary objects older than the grace period) were
    /// removed.
    pub uploads_deleted: usize,
}

/// Checks an artifact name: 1–128 characters of `A-Z a-z 0-9 . _ -`, not starting with `.`.
pub fn validate_name(name: &str) -> Result<(), ArtifactError> {
    let reason = if name.is_empty() || name.len() > 128 {
        Some("must be 1 to 128 characters long")
    } else if name.starts_with('.') {
        Some("must not start with `.`")
    } else if !name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    {
        Some("may hold only letters, digits, `.`, `_` and `-`")
    } else {
        None
    };
    invalid("name", name, reason)
}

/// Checks a version: 1–128 characters of `A-Z a-z 0-9 . _ + -`.
pub fn validate_version(version: &str) -> Result<(), ArtifactError> {
    let reason = if version.is_empty() || version.len() > 128 {
        Some("must be 1 to 128 characters long")
    } else if !version
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'+' | b'-'))
    {
        Some("may hold only letters, digits, `.`, `_`, `+` and `-`")
    } else {
        None
    };
    invalid("version", version, reason)
}

fn invalid(field: &'static str, value: &str, reason: Option<&str>) -> Result<(), ArtifactError> {
    match reason {
        None => Ok(()),
        Some(reason) => Err(ArtifactError::InvalidName {
            field,
            value: value.to_owned(),
            reason: reason.to_owned(),
        }),
    }
}

/// Checks a file path inside an artifact: relative, `/`-separated, at most 4096 bytes, no
/// empty, `.` or `..` part, no leading or trailing `/`, no backslash or control character. So
/// a path from a manifest can be joined to a folder without escaping it.
pub fn validate_file_path(path: &str) -> Result<(), ArtifactError> {
    let reason = if path.is_empty() {
        Some("is empty")
    } else if path.len() > 4096 {
        Some("is longer than 4096 bytes")
    } else if path.starts_with('/') {
        Some("must be relative (no leading `/`)")
    } else if path.chars().any(|c| c.is_control() || c == '\\') {
        Some("must not hold a backslash or a control character")
    } else if path.split('/').any(|part| part == "..") {
        Some("must not hold a `..` part")
    } else if path.split('/').any(|part| part.is_empty() || part == ".") {
        Some("must not hold an empty or `.` part (`a//b`, `./a`, `a/`)")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(ArtifactError::InvalidPath {
            path: path.to_owned(),
            reason: reason.to_owned(),
        }),
    }
}

/// Checks an attachment's kind (1–64 of `A-Z a-z 0-9 . _ -`) and media type (1–255
/// characters, no control character).
pub(crate) fn validate_attachment(attachment: &Attachment) -> Result<(), ArtifactError> {
    let kind = &attachment.kind;
    let kind_reason = if kind.is_empty() || kind.len() > 64 {
        Some("must be 1 to 64 characters long")
    } else if !kind
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    {
        Some("may hold only letters, digits, `.`, `_` and `-`")
    } else {
        None
    };
    invalid("attachment kind", kind, kind_reason)?;
    let media_type = &attachment.media_type;
    let media_reason = if media_type.is_empty() || media_type.len() > 255 {
        Some("must be 1 to 255 characters long")
    } else if media_type.chars().any(char::is_control) {
        Some("must not hold a control character")
    } else {
        None
    };
    invalid("media type", media_type, media_reason)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> Artifact {
        Artifact {
            name: "app".into(),
            version: "1.0".into(),
            files: vec![FileRef {
                path: "bin/app".into(),
                digest: Digest::of(b"x"),
                size: 1,
                mode: 0o755,
            }],
            attachments: vec![Attachment {
                kind: "sbom".into(),
                digest: Digest::of(b"sbom"),
                media_type: "application/vnd.cyclonedx+json".into(),
            }],
            metadata: Metadata {
                commit: Some("abc".into()),
                run: Some(7),
                ..Metadata::default()
            },
            created_at: "2026-01-02T03:04:05Z".into(),
            size: 1,
            digest: Digest::of(b""),
            signature: "00".into(),
            pinned: true,
            moving: false,
        }
    }

    #[test]
    fn canonical_manifest_has_sorted_keys_and_no_whitespace() {
        let text = String::from_utf8(sample().canonical_manifest()).unwrap();
        let x = Digest::of(b"x");
        let sbom = Digest::of(b"sbom");
        assert_eq!(
            text,
            format!(
                concat!(
                    r#"{{"attachments":[{{"digest":"{sbom}","kind":"sbom","media_type":"application/vnd.cyclonedx+json"}}],"#,
                    r#""created_at":"2026-01-02T03:04:05Z","#,
                    r#""files":[{{"digest":"{x}","mode":493,"path":"bin/app","size":1}}],"#,
                    r#""metadata":{{"commit":"abc","run":7}},"moving":false,"name":"app","#,
                    r#""schema":"sorat-artifact/1","version":"1.0"}}"#
                ),
                sbom = sbom,
                x = x
            )
        );
    }

    #[test]
    fn signature_pin_and_digest_are_not_signed() {
        let a = sample();
        let mut b = sample();
        b.signature = "ff".into();
        b.pinned = false;
        b.digest = Digest::of(b"other");
        assert_eq!(a.canonical_manifest(), b.canonical_manifest());
        b.moving = true;
        assert_ne!(a.canonical_manifest(), b.canonical_manifest());
    }

    #[test]
    fn stored_form_round_trips_and_refuses_unknown_keys() {
        let mut artifact = sample();
        artifact.pinned = false;
        artifact.digest = Digest::of(&artifact.canonical_manifest());
        let stored = artifact.stored_form();
        assert_eq!(Artifact::from_stored_form(&stored).unwrap(), artifact);
        let text = String::from_utf8(stored).unwrap();
        let extra = text.replacen("{\"manifest\":{", "{\"manifest\":{\"extra\":1,", 1);
        assert!(Artifact::from_stored_form(extra.as_bytes()).is_err());
    }

    #[test]
    fn names_versions_and_paths_are_checked() {
        for good in ["app", "a", "my-app_2.x", &"a".repeat(128)] {
            validate_name(good).unwrap();
        }
        for bad in ["", ".hidden", "a/b", "a b", "ü", &"a".repeat(129), ".."] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        for good in ["1.0.0", "1.0.0+build.5", "latest", "1.0-rc.1", "..", "_"] {
            validate_version(good).unwrap();
        }
        for bad in ["", "1/0", "1 0", "v1:2", &"1".repeat(129)] {
            assert!(validate_version(bad).is_err(), "{bad}");
        }
        for good in ["a", "bin/app", "a/b/c.txt", ".env", "a/..b/c", "x..y"] {
            validate_file_path(good).unwrap();
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/..",
            "a//b",
            "./a",
            "a/.",
            "a/",
            "a\\b",
            "a\nb",
        ] {
            assert!(validate_file_path(bad).is_err(), "{bad:?}");
        }
    }
}
