//! The key that seals secrets, and the sealing itself.
//!
//! A sealed value is `nonce (24 bytes) ‖ ciphertext+tag`, XChaCha20-Poly1305 with a random
//! nonce per value (192 bits: random nonces never realistically collide). The associated
//! data names the secret's scope and name, so a sealed value copied onto another row (or
//! another project's secret of the same name) does not open.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};

use crate::{Result, StateError};

const NONCE_LEN: usize = 24;

/// The 256-bit key that seals secrets. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

impl SecretKey {
    /// Reads the key from `path` (32 raw bytes, or its base64 text of 44 characters with an
    /// optional trailing newline), creating it when absent: 32 random bytes in a file of mode
    /// 0600, created exclusively (so two processes starting at once agree on one key) and
    /// fsynced together with its folder before it is used.
    pub fn load_or_create(path: &Path) -> Result<SecretKey> {
        let place = format!("file {}", path.display());
        let failed = |reason: String| StateError::Key {
            place: place.clone(),
            reason,
        };
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => {
                let key = SecretKey::random();
                file.write_all(&key.0)
                    .map_err(|e| failed(format!("cannot write: {e}")))?;
                file.sync_all()
                    .map_err(|e| failed(format!("cannot sync: {e}")))?;
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::File::open(parent)
                        .and_then(|dir| dir.sync_all())
                        .map_err(|e| failed(format!("cannot sync its folder: {e}")))?;
                }
                Ok(key)
            }
            Err(error) if error.kind() == ErrorKind::AlreadyExists => {
                let mut bytes = Vec::new();
                std::fs::File::open(path)
                    .and_then(|mut file| file.read_to_end(&mut bytes))
                    .map_err(|e| failed(format!("cannot read: {e}")))?;
                SecretKey::from_bytes(&bytes, &place)
            }
            Err(error) => Err(failed(format!("cannot create: {error}"))),
        }
    }

    /// Reads the key from its base64 text (standard alphabet, padded: 44 characters), such
    /// as the value of `SORAT_SECRET_KEY`. Surrounding whitespace is ignored.
    pub fn from_base64(text: &str) -> Result<SecretKey> {
        decode_base64(text.trim()).ok_or_else(|| StateError::Key {
            place: "text".into(),
            reason: "not the base64 text of 32 bytes".into(),
        })
    }

    /// A new random key.
    pub fn random() -> SecretKey {
        SecretKey(random_bytes())
    }

    /// The key as base64 text (what `from_base64` reads), for printing once to an operator.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    fn from_bytes(bytes: &[u8], place: &str) -> Result<SecretKey> {
        if let Ok(raw) = <[u8; 32]>::try_from(bytes) {
            return Ok(SecretKey(raw));
        }
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| decode_base64(text.trim()))
            .ok_or_else(|| StateError::Key {
                place: place.to_owned(),
                reason: format!(
                    "holds {} bytes: expected 32 raw bytes or their 44-character base64 text",
                    bytes.len()
                ),
            })
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }

    /// Seals `value` for the secret `name` in `scope` (`""` for global).
    pub(crate) fn seal(&self, scope: &str, name: &str, value: &str) -> Result<Vec<u8>> {
        let nonce: [u8; NONCE_LEN] = random_bytes();
        let aad = associated_data(scope, name);
        let sealed = self
            .cipher()
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| StateError::Invalid {
                what: format!("secret `{name}`: too long to seal"),
            })?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what `seal` made for the same scope and name.
    pub(crate) fn open(&self, scope: &str, name: &str, sealed: &[u8]) -> Result<String> {
        let decrypt_error = || StateError::Decrypt {
            name: name.to_owned(),
        };
        let (nonce, ciphertext) = sealed
            .split_first_chunk::<NONCE_LEN>()
            .ok_or_else(decrypt_error)?;
        let aad = associated_data(scope, name);
        let plain = self
            .cipher()
            .decrypt(
                &(*nonce).into(),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| decrypt_error())?;
        String::from_utf8(plain).map_err(|_| decrypt_error())
    }
}

/// `sorat-secret-v1`, then scope and name, each length-prefixed so that no two
/// (scope, name) pairs give the same bytes.
fn associated_data(scope: &str, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + scope.len() + name.len());
    aad.extend_from_slice(b"sorat-secret-v1");
    for part in [scope, name] {
        aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

fn decode_base64(text: &str) -> Option<SecretKey> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    <[u8; 32]>::try_from(bytes.as_slice()).ok().map(SecretKey)
}

/// Random bytes from the operating system. Failure to get them means the system cannot do
/// cryptography at all; no key or nonce may be made without them, so this panics rather
/// than continuing with predictable bytes.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    bytes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn seal_and_open_round_trip_only_for_the_same_scope_and_name() {
        let key = SecretKey::random();
        let sealed = key.seal("shop", "TOKEN", "s3cret").unwrap();
        assert_eq!(key.open("shop", "TOKEN", &sealed).unwrap(), "s3cret");
        assert!(key.open("", "TOKEN", &sealed).is_err());
        assert!(key.open("shop", "OTHER", &sealed).is_err());
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        let sealed = key.seal("ab", "c", "v").unwrap();
        assert!(key.open("a", "bc", &sealed).is_err());
        assert!(SecretKey::random().open("ab", "c", &sealed).is_err());
    }

    #[test]
    fn key_files_are_created_once_and_read_raw_or_base64() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let created = SecretKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap().len(), 32);
        let again = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(again.0, created.0);

        let text_path = dir.path().join("text.key");
        std::fs::write(&text_path, format!("{}\n", created.to_base64())).unwrap();
        assert_eq!(SecretKey::load_or_create(&text_path).unwrap().0, created.0);
        assert_eq!(
            SecretKey::from_base64(&created.to_base64()).unwrap().0,
            created.0
        );

        std::fs::write(&text_path, "short").unwrap();
        assert!(matches!(
            SecretKey::load_or_create(&text_path),
            Err(StateError::Key { .. })
        ));
        assert!(SecretKey::from_base64("not base64!").is_err());
        assert_eq!(format!("{created:?}"), "SecretKey(***)");
    }
}
