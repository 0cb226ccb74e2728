//! A tree reduced to counts and one digest, to check that a restore wrote what was saved.
//!
//! [`TreeFingerprint::of`] walks a tree in name order and hashes, for every entry, its kind,
//! its path, and then a file's permission bits, size and BLAKE3 content hash, or a link's
//! target. Two trees with the same digest have the same names, contents, modes and links.
//! Modification times and owners are left out: Sorat does not restore times, and comparing
//! them would fail every run for a reason unrelated to correctness.

use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Counts and a digest of a tree; see the module's documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeFingerprint {
    /// Regular files.
    pub files: u64,
    /// Bytes in regular files.
    pub bytes: u64,
    /// Directories below the root.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// BLAKE3 over every entry's record, in name order.
    pub digest: blake3::Hash,
    /// Each entry's path and the hash of its record, to name the first difference.
    entries: Vec<(String, blake3::Hash)>,
}

/// How a restored tree differs from the saved one.
#[derive(Debug, thiserror::Error)]
#[error("the restored tree differs from the saved one: {detail}")]
pub struct Mismatch {
    /// What differs first: a count, or the first entry that is missing, extra or changed.
    pub detail: String,
}

impl TreeFingerprint {
    /// Fingerprints the tree under `root` (the root itself is not an entry).
    pub fn of(root: &Path) -> io::Result<TreeFingerprint> {
        let mut fingerprint = TreeFingerprint {
            files: 0,
            bytes: 0,
            dirs: 0,
            symlinks: 0,
            digest: blake3::Hasher::new().finalize(),
            entries: Vec::new(),
        };
        let mut tree = blake3::Hasher::new();
        for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
            let entry = entry.map_err(io::Error::other)?;
            let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
            let mut record = blake3::Hasher::new();
            let file_type = entry.file_type();
            if file_type.is_dir() {
                record.update(b"dir\0");
                record.update(relative.as_os_str().as_bytes());
                fingerprint.dirs += 1;
            } else if file_type.is_symlink() {
                let target = std::fs::read_link(entry.path())?;
                record.update(b"link\0");
                record.update(relative.as_os_str().as_bytes());
                record.update(b"\0");
                record.update(target.as_os_str().as_bytes());
                fingerprint.symlinks += 1;
            } else if file_type.is_file() {
                let metadata = entry.metadata().map_err(io::Error::other)?;
                let content = content_hash(entry.path(), metadata.len())?;
                record.update(b"file\0");
                record.update(relative.as_os_str().as_bytes());
                record.update(b"\0");
                record.update(&(metadata.permissions().mode() & 0o7777).to_le_bytes());
                record.update(&metadata.len().to_le_bytes());
                record.update(content.as_bytes());
                fingerprint.files += 1;
                fingerprint.bytes += metadata.len();
            } else {
                return Err(io::Error::other(format!(
                    "{} is neither a file, a folder nor a link",
                    entry.path().display()
                )));
            }
            let record = record.finalize();
            tree.update(record.as_bytes());
            fingerprint
                .entries
                .push((relative.to_string_lossy().into_owned(), record));
        }
        fingerprint.digest = tree.finalize();
        Ok(fingerprint)
    }

    /// Checks that `actual` is the same tree as `self`, naming the first difference.
    pub fn check(&self, actual: &TreeFingerprint) -> Result<(), Mismatch> {
        if self.digest == actual.digest {
            return Ok(());
        }
        let counts = [
            ("files", self.files, actual.files),
            ("bytes", self.bytes, actual.bytes),
            ("folders", self.dirs, actual.dirs),
            ("symlinks", self.symlinks, actual.symlinks),
        ];
        let mut details: Vec<String> = counts
            .iter()
            .filter(|(_, expected, got)| expected != got)
            .map(|(what, expected, got)| format!("{got} {what} where {expected} were saved"))
            .collect();
        let first_difference = self
            .entries
            .iter()
            .zip(&actual.entries)
            .find(|(expected, got)| expected != got);
        match first_difference {
            Some((expected, got)) if expected.0 != got.0 => details.push(format!(
                "`{}` was saved, `{}` came back in its place",
                expected.0, got.0
            )),
            Some((expected, _)) => details.push(format!("`{}` changed", expected.0)),
            None if self.entries.len() > actual.entries.len() => details.push(format!(
                "`{}` is missing",
                self.entries[actual.entries.len()].0
            )),
            None if actual.entries.len() > self.entries.len() => details.push(format!(
                "`{}` is extra",
                actual.entries[self.entries.len()].0
            )),
            None => details.push("the digests differ".to_string()),
        }
        Err(Mismatch {
            detail: details.join("; "),
        })
    }
}

/// BLAKE3 of a file's bytes; large files are memory-mapped and hashed on every core.
fn content_hash(path: &Path, size: u64) -> io::Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    if size >= 1 << 20 {
        hasher.update_mmap_rayon(path)?;
    } else {
        hasher.update_reader(File::open(path)?)?;
    }
    Ok(hasher.finalize())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn sample(root: &Path) {
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::create_dir_all(root.join("empty")).unwrap();
        fs::write(root.join("a/one"), "one").unwrap();
        fs::write(root.join("a/b/two"), "two").unwrap();
        symlink("a/one", root.join("link")).unwrap();
    }

    /// A case's name, how it changes a copy of the sample, and what the error must say.
    type Case = (&'static str, fn(&Path), &'static str);

    /// Each case changes a copy of the sample one way; every change must be caught and named.
    #[test]
    fn every_kind_of_difference_is_caught_and_named() {
        let cases: &[Case] = &[
            (
                "a changed byte",
                |root| fs::write(root.join("a/one"), "onE").unwrap(),
                "`a/one` changed",
            ),
            (
                "a longer file",
                |root| fs::write(root.join("a/one"), "one!").unwrap(),
                "7 bytes where 6",
            ),
            (
                "a missing file",
                |root| fs::remove_file(root.join("a/b/two")).unwrap(),
                "1 files where 2",
            ),
            (
                "an extra file",
                |root| fs::write(root.join("zzz"), "").unwrap(),
                "`zzz` is extra",
            ),
            (
                "a lost executable bit",
                |root| {
                    fs::set_permissions(root.join("a/one"), fs::Permissions::from_mode(0o755))
                        .unwrap()
                },
                "`a/one` changed",
            ),
            (
                "a missing empty folder",
                |root| fs::remove_dir(root.join("empty")).unwrap(),
                "folders",
            ),
            (
                "a retargeted link",
                |root| {
                    fs::remove_file(root.join("link")).unwrap();
                    symlink("a/b/two", root.join("link")).unwrap();
                },
                "`link` changed",
            ),
        ];
        let temp = tempfile::tempdir().unwrap();
        let saved = temp.path().join("saved");
        sample(&saved);
        let expected = TreeFingerprint::of(&saved).unwrap();
        assert_eq!(
            (
                expected.files,
                expected.bytes,
                expected.dirs,
                expected.symlinks
            ),
            (2, 6, 3, 1)
        );
        for (index, (name, change, message)) in cases.iter().enumerate() {
            let copy = temp.path().join(format!("copy{index}"));
            sample(&copy);
            expected
                .check(&TreeFingerprint::of(&copy).unwrap())
                .unwrap();
            change(&copy);
            let error = expected
                .check(&TreeFingerprint::of(&copy).unwrap())
                .expect_err(name)
                .to_string();
            assert!(error.contains(message), "{name}: {error}");
        }
    }
}
