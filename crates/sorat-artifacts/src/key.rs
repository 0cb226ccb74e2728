//! The store's ed25519 signing key: its file, and checking signatures.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::ArtifactError;

/// Reads the signing key from `path` (32 raw bytes, or their 64 hex digits with an optional
/// trailing newline), creating it when absent.
///
/// A new key is 32 random bytes written to a temporary file beside `path` (created with
/// `O_EXCL`, mode 0600, fsynced), then hard-linked to `path`: the link either appears whole
/// or fails because another process created the key first, in which case that key is read.
/// So two servers starting at once agree on one key, and no reader sees a half-written one.
/// The folder is fsynced before the key is used. A key file that others can read or write
/// (any of the mode bits 0077) is refused.
pub(crate) fn load_or_create(path: &Path) -> Result<SigningKey, ArtifactError> {
    let failed = |reason: String| ArtifactError::Key {
        path: path.to_path_buf(),
        reason,
    };
    match std::fs::metadata(path) {
        Ok(_) => return read_key(path),
        Err(error) if error.kind() == ErrorKind::NotFound => {}
        Err(error) => return Err(failed(format!("cannot read: {error}"))),
    }
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&folder)
        .map_err(|e| failed(format!("cannot create its folder: {e}")))?;

    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| failed(format!("the random number generator failed: {e}")))?;
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "signing.key".to_owned());
    let temporary = folder.join(format!(
        ".{file_name}.{}.{}.tmp",
        std::process::id(),
        hex::encode(&secret[..4])
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(&secret)?;
            file.sync_all()
        });
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(failed(format!(
            "cannot write {}: {error}",
            temporary.display()
        )));
    }
    let linked = std::fs::hard_link(&temporary, path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => {
            std::fs::File::open(&folder)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| failed(format!("cannot sync its folder: {e}")))?;
            Ok(SigningKey::from_bytes(&secret))
        }
        // Another process created the key between our look and our link: use theirs.
        Err(error) if error.kind() == ErrorKind::AlreadyExists => read_key(path),
        Err(error) => Err(failed(format!("cannot create: {error}"))),
    }
}

fn read_key(path: &Path) -> Result<SigningKey, ArtifactError> {
    let failed = |reason: String| ArtifactError::Key {
        path: path.to_path_buf(),
        reason,
    };
    let metadata = std::fs::metadata(path).map_err(|e| failed(format!("cannot read: {e}")))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(failed(format!(
            "others may read or change it (mode {mode:04o}): `chmod 600` it"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| failed(format!("cannot read: {e}")))?;
    if let Ok(raw) = <[u8; 32]>::try_from(bytes.as_slice()) {
        return Ok(SigningKey::from_bytes(&raw));
    }
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| hex::decode(text.trim()).ok())
        .and_then(|raw| <[u8; 32]>::try_from(raw.as_slice()).ok())
        .map(|raw| SigningKey::from_bytes(&raw))
        .ok_or_else(|| {
            failed(format!(
                "holds {} bytes: expected 32 raw bytes or their 64 hex digits",
                bytes.len()
            ))
        })
}

/// The hex text of `key`'s signature over `message`.
pub(crate) fn sign(key: &SigningKey, message: &[u8]) -> String {
    hex::encode(key.sign(message).to_bytes())
}

/// Whether `signature_hex` (128 hex digits) is a valid ed25519 signature of `manifest_bytes`
/// (an artifact's [`canonical_manifest`](crate::Artifact::canonical_manifest)) by the key
/// whose public half is `public_key`. Strict verification: malleable or small-order forms are
/// refused.
pub fn verify_signature(manifest_bytes: &[u8], signature_hex: &str, public_key: &[u8; 32]) -> bool {
    let Ok(verifying_key) = VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    let Some(signature) = hex::decode(signature_hex.trim())
        .ok()
        .and_then(|raw| <[u8; 64]>::try_from(raw.as_slice()).ok())
    else {
        return false;
    };
    verifying_key
        .verify_strict(manifest_bytes, &Signature::from_bytes(&signature))
        .is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/artifacts.key");
        let first = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create(&path).unwrap();
        assert_eq!(first.verifying_key(), again.verifying_key());
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("keys"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("artifacts.key")]);
    }

    #[test]
    fn key_file_in_hex_is_read_and_loose_modes_or_bad_text_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, format!("{}\n", hex::encode([7u8; 32]))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let key = load_or_create(&path).unwrap();
        assert_eq!(key.to_bytes(), [7u8; 32]);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = load_or_create(&path).unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");

        std::fs::write(&path, "not a key").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let error = load_or_create(&path).unwrap_err().to_string();
        assert!(error.contains("expected 32 raw bytes"), "{error}");
    }

    #[test]
    fn concurrent_creators_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let keys: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| load_or_create(&path).unwrap().to_bytes()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.windows(2).all(|pair| pair[0] == pair[1]));
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let key = SigningKey::from_bytes(&[1u8; 32]);
        let other = SigningKey::from_bytes(&[2u8; 32]);
        let signature = sign(&key, b"manifest");
        let public = key.verifying_key().to_bytes();
        assert!(verify_signature(b"manifest", &signature, &public));
        assert!(!verify_signature(b"manifesT", &signature, &public));
        assert!(!verify_signature(
            b"manifest",
            &signature,
            &other.verifying_key().to_bytes()
        ));
        assert!(!verify_signature(b"manifest", "zz", &public));
        assert!(!verify_signature(b"manifest", &signature[..126], &public));
    }
}
