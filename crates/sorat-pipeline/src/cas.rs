//! A content-addressed file store: caches and artifacts keep each distinct content once.
//!
//! Blobs are named by the BLAKE3 hash of their bytes (`blobs/ab/abcdef…`). A [`Snapshot`]
//! lists a tree's files, directories and symlinks. A large file is a blob of its own, stored
//! once however many trees hold it, and restored with `copy_file_range` or a reflink. Small
//! files (a `node_modules` has tens of thousands) are concatenated into *packs* of up to
//! [`PACK_BYTES`], each a blob: restoring reads a pack in one sequential read instead of one
//! random read per file, which is what makes a cold restore of many small files as fast as
//! unpacking one archive. Equal trees still give equal packs, stored once.
//! Blobs are copied, never hard-linked, into workspaces: a step that edits a restored file
//! must not corrupt the cache.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// The store: a folder of blobs.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// A tree of files as stored: everything needed to write it out again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Regular files.
    pub files: Vec<FileEntry>,
    /// Directories (so that empty ones come back too).
    pub dirs: Vec<String>,
    /// Symbolic links, stored as links.
    pub symlinks: Vec<SymlinkEntry>,
    /// The packs holding the small files, by blob hash; [`FileEntry::pack`] indexes this.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packs: Vec<String>,
}

/// One file of a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the snapshot's root, `/`-separated; empty when the root is the file.
    pub path: String,
    /// Unix permission bits.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 hash of the content, hex.
    pub hash: String,
    /// Where a small file lies in a pack; `None` for a file stored as its own blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<PackSlot>,
}

/// A file's place in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackSlot {
    /// Index into [`Snapshot::packs`].
    pub index: usize,
    /// Byte offset of the file's content in the pack.
    pub offset: u64,
}

/// One symbolic link of a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SymlinkEntry {
    /// Path relative to the snapshot's root.
    pub path: String,
    /// Where the link points, as written in the link.
    pub target: String,
}

impl Snapshot {
    /// Total bytes of file content.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|file| file.size).sum()
    }
}

/// How many files are copied at once: I/O waits overlap, and hashing uses every core.
fn workers() -> usize {
    // Twice the cores: creating many small files waits on the filesystem as much as it
    // computes, and hashing large ones is spread by BLAKE3 itself.
    std::thread::available_parallelism()
        .map_or(2, |n| n.get() * 2)
        .clamp(4, 16)
}

impl Store {
    /// Opens (creating) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Store> {
        let root = root.into();
        fs::create_dir_all(root.join("tmp"))?;
        // The 256 fan-out folders exist up front, so storing a blob never checks for one.
        let blobs = root.join("blobs");
        if !blobs.join("ff").is_dir() {
            for prefix in 0..=255u8 {
                fs::create_dir_all(blobs.join(format!("{prefix:02x}")))?;
            }
        }
        Ok(Store { root })
    }

    fn blob_path(&self, hash: &str) -> PathBuf {
        let prefix = hash.get(..2).unwrap_or("00");
        self.root.join("blobs").join(prefix).join(hash)
    }

    /// Whether the store holds the blob.
    pub fn contains(&self, hash: &str) -> bool {
        self.blob_path(hash).exists()
    }

    /// Stores a file's content; returns its hash and size. Content the store holds already
    /// is only read, not written again. Blobs are not synced one by one: whoever records a
    /// snapshot calls [`Store::sync`] once before the record that points at them.
    pub fn put_file(&self, path: &Path) -> io::Result<(String, u64)> {
        let size = fs::metadata(path)?.len();
        if size <= SMALL_FILE {
            // One read: hash the bytes in memory and write them from there.
            let bytes = fs::read(path)?;
            let hash = blake3::hash(&bytes).to_hex().to_string();
            if !self.contains(&hash) {
                let tmp = self.tmp_path();
                if let Err(error) = fs::write(&tmp, &bytes) {
                    let _ = fs::remove_file(&tmp);
                    return Err(error);
                }
                // A rename is atomic: a reader sees the whole blob or none, and two writers
                // of the same content race harmlessly.
                fs::rename(&tmp, self.blob_path(&hash))?;
            }
            return Ok((hash, bytes.len() as u64));
        }
        let (hash, size) = hash_file(path)?;
        if self.contains(&hash) {
            return Ok((hash, size));
        }
        // Copy while hashing again: if the file changed since it was hashed, the blob is
        // named by what was really copied.
        let tmp = self.tmp_path();
        let copied = (|| {
            let mut source = File::open(path)?;
            let mut target = File::create(&tmp)?;
            let mut hasher = blake3::Hasher::new();
            let mut buffer = vec![0u8; 256 * 1024];
            let mut size = 0u64;
            loop {
                let n = source.read(&mut buffer)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
                target.write_all(&buffer[..n])?;
                size += n as u64;
            }
            Ok::<_, io::Error>((hasher.finalize().to_hex().to_string(), size))
        })();
        let (hash, size) = match copied {
            Ok(result) => result,
            Err(error) => {
                let _ = fs::remove_file(&tmp);
                return Err(error);
            }
        };
        fs::rename(&tmp, self.blob_path(&hash))?;
        Ok((hash, size))
    }

    /// Makes every blob written so far durable: one `syncfs` of the store's filesystem
    /// instead of an `fsync` per blob (tens of thousands for a `node_modules`).
    pub fn sync(&self) -> io::Result<()> {
        let root = File::open(&self.root)?;
        nix::unistd::syncfs(&root).map_err(io::Error::from)
    }

    fn tmp_path(&self) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{}-{n}", std::process::id()))
    }

    /// Writes a blob out to `dest` with `mode`. Small blobs are written from memory into a
    /// file created with its mode; large ones are reflinked or copied in the kernel. An
    /// existing file (or symlink) at `dest` is replaced, never written through.
    pub fn copy_out(&self, hash: &str, dest: &Path, mode: u32, size: u64) -> io::Result<()> {
        let blob = self.blob_path(hash);
        let context = |error: io::Error| {
            io::Error::new(
                error.kind(),
                format!("cannot copy blob {hash} to {}: {error}", dest.display()),
            )
        };
        let mode = mode & 0o7777;
        if size <= SMALL_FILE {
            let bytes = fs::read(&blob).map_err(context)?;
            let mut file = create_new_replacing(dest, mode).map_err(context)?;
            file.write_all(&bytes).map_err(context)?;
            // The creation mode passed through the umask; set the exact one on the open file.
            return file
                .set_permissions(fs::Permissions::from_mode(mode))
                .map_err(context);
        }
        if dest.symlink_metadata().is_ok() {
            fs::remove_file(dest).map_err(context)?;
        }
        reflink_copy::reflink_or_copy(&blob, dest).map_err(context)?;
        fs::set_permissions(dest, fs::Permissions::from_mode(mode))
    }

    /// Stores every file under `root` (a directory or a single file) and returns the tree.
    pub fn store_tree(&self, root: &Path) -> io::Result<Snapshot> {
        let mut snapshot = Snapshot::default();
        let metadata = fs::symlink_metadata(root)?;
        let mut pending: Vec<(String, PathBuf, u32)> = Vec::new();
        if metadata.is_file() {
            pending.push((
                String::new(),
                root.to_path_buf(),
                metadata.permissions().mode(),
            ));
        } else {
            for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
                let entry = entry.map_err(io::Error::other)?;
                let relative = relative_slash(root, entry.path());
                let file_type = entry.file_type();
                if file_type.is_dir() {
                    snapshot.dirs.push(relative);
                } else if file_type.is_symlink() {
                    let target = fs::read_link(entry.path())?;
                    snapshot.symlinks.push(SymlinkEntry {
                        path: relative,
                        target: target.to_string_lossy().into_owned(),
                    });
                } else if file_type.is_file() {
                    let mode = entry
                        .metadata()
                        .map_err(io::Error::other)?
                        .permissions()
                        .mode();
                    pending.push((relative, entry.path().to_path_buf(), mode));
                }
            }
        }
        let stored = self.store_files(pending)?;
        snapshot.files = stored.files;
        snapshot.packs = stored.packs;
        Ok(snapshot)
    }

    /// Stores the listed files (path relative to the snapshot, file on disk, mode): large
    /// ones as blobs, small ones in packs. The result lists them sorted by path.
    pub fn store_files(&self, files: Vec<(String, PathBuf, u32)>) -> io::Result<Snapshot> {
        let sized: Vec<(String, PathBuf, u32, u64)> =
            parallel_map(files, |(relative, path, mode)| {
                let size = fs::metadata(&path)?.len();
                Ok((relative, path, mode, size))
            })
            .into_iter()
            .collect::<io::Result<_>>()?;
        let (small, large): (Vec<_>, Vec<_>) = sized
            .into_iter()
            .partition(|(_, _, _, size)| *size <= SMALL_FILE);
        let mut snapshot = Snapshot::default();
        let large_entries = parallel_map(large, |(relative, path, mode, _)| {
            let (hash, size) = self.put_file(&path)?;
            Ok(FileEntry {
                path: relative,
                mode,
                size,
                hash,
                pack: None,
            })
        });
        for entry in large_entries {
            snapshot.files.push(entry?);
        }
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0u64;
        for file in small {
            if chunk_bytes + file.3 > PACK_BYTES && !chunk.is_empty() {
                self.store_pack(std::mem::take(&mut chunk), &mut snapshot)?;
                chunk_bytes = 0;
            }
            chunk_bytes += file.3;
            chunk.push(file);
        }
        if !chunk.is_empty() {
            self.store_pack(chunk, &mut snapshot)?;
        }
        snapshot.files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(snapshot)
    }

    /// Reads small files (several at a time), concatenates them into one pack blob and
    /// records where each lies.
    fn store_pack(
        &self,
        files: Vec<(String, PathBuf, u32, u64)>,
        snapshot: &mut Snapshot,
    ) -> io::Result<()> {
        let contents = parallel_map(files, |(relative, path, mode, _)| {
            let bytes = fs::read(&path)?;
            Ok((relative, mode, bytes))
        });
        let index = snapshot.packs.len();
        let mut pack = Vec::new();
        for content in contents {
            let (relative, mode, bytes) = content?;
            snapshot.files.push(FileEntry {
                path: relative,
                mode,
                size: bytes.len() as u64,
                hash: blake3::hash(&bytes).to_hex().to_string(),
                pack: Some(PackSlot {
                    index,
                    offset: pack.len() as u64,
                }),
            });
            pack.extend_from_slice(&bytes);
        }
        snapshot.packs.push(self.put_bytes(&pack)?);
        Ok(())
    }

    /// Stores bytes as a blob; returns its hash.
    fn put_bytes(&self, bytes: &[u8]) -> io::Result<String> {
        let hash = blake3::hash(bytes).to_hex().to_string();
        if !self.contains(&hash) {
            let tmp = self.tmp_path();
            if let Err(error) = fs::write(&tmp, bytes) {
                let _ = fs::remove_file(&tmp);
                return Err(error);
            }
            // A rename is atomic: a reader sees the whole blob or none, and two writers of
            // the same content race harmlessly.
            fs::rename(&tmp, self.blob_path(&hash))?;
        }
        Ok(hash)
    }

    /// Writes a snapshot out under `dest` (a directory, or the file itself when the
    /// snapshot's root was a file).
    pub fn restore_tree(&self, snapshot: &Snapshot, dest: &Path) -> io::Result<()> {
        for dir in &snapshot.dirs {
            fs::create_dir_all(join_relative(dest, dir)?)?;
        }
        let mut parents: Vec<PathBuf> = snapshot
            .files
            .iter()
            .filter_map(|file| join_relative(dest, &file.path).ok())
            .filter_map(|path| path.parent().map(Path::to_path_buf))
            .collect();
        parents.sort();
        parents.dedup();
        for parent in parents {
            fs::create_dir_all(parent)?;
        }
        let (packed, loose): (Vec<&FileEntry>, Vec<&FileEntry>) =
            snapshot.files.iter().partition(|file| file.pack.is_some());
        let results = parallel_map(loose, |file| {
            let target = join_relative(dest, &file.path)?;
            self.copy_out(&file.hash, &target, file.mode, file.size)
        });
        for result in results {
            result?;
        }
        for (index, pack_hash) in snapshot.packs.iter().enumerate() {
            // One sequential read of the pack, then its files written from memory.
            let pack = fs::read(self.blob_path(pack_hash))?;
            let members: Vec<&FileEntry> = packed
                .iter()
                .copied()
                .filter(|file| file.pack.is_some_and(|slot| slot.index == index))
                .collect();
            let results = parallel_map(members, |file| {
                let slot = file.pack.map_or(0, |slot| slot.offset);
                let start = usize::try_from(slot).unwrap_or(usize::MAX);
                let end = start.saturating_add(usize::try_from(file.size).unwrap_or(usize::MAX));
                let bytes = pack.get(start..end).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} lies outside its pack {pack_hash}", file.path),
                    )
                })?;
                let target = join_relative(dest, &file.path)?;
                let mode = file.mode & 0o7777;
                let mut out = create_new_replacing(&target, mode)?;
                out.write_all(bytes)?;
                out.set_permissions(fs::Permissions::from_mode(mode))
            });
            for result in results {
                result?;
            }
        }
        if packed.iter().any(|file| {
            file.pack
                .is_some_and(|slot| slot.index >= snapshot.packs.len())
        }) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a file names a pack the snapshot does not have",
            ));
        }
        for link in &snapshot.symlinks {
            let path = join_relative(dest, &link.path)?;
            if path.symlink_metadata().is_ok() {
                fs::remove_file(&path)?;
            }
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            symlink(&link.target, &path)?;
        }
        Ok(())
    }
}

/// Files up to this size go into packs (and are read into memory whole).
const SMALL_FILE: u64 = 256 * 1024;
/// The size a pack grows to before the next one starts.
pub const PACK_BYTES: u64 = 64 * 1024 * 1024;

/// Creates `path` afresh (`O_EXCL`, so a symlink there is not followed), replacing whatever
/// was there.
fn create_new_replacing(path: &Path, mode: u32) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = || {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
    };
    match open() {
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(path)?;
            open()
        }
        other => other,
    }
}

/// Hashes a file with BLAKE3, memory-mapped and multi-threaded for large files.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut hasher = blake3::Hasher::new();
    let size = fs::metadata(path)?.len();
    if size >= 1 << 20 {
        hasher.update_mmap_rayon(path)?;
    } else {
        hasher.update_reader(File::open(path)?)?;
    }
    Ok((hasher.finalize().to_hex().to_string(), size))
}

/// `path` relative to `root`, with `/` separators.
pub fn relative_slash(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative
        .components()
        .map(|component| component.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Joins a stored relative path to `dest`, refusing paths that would escape it: a snapshot
/// read from disk is input, and `../../etc/passwd` in one must not write outside.
pub fn join_relative(dest: &Path, relative: &str) -> io::Result<PathBuf> {
    if relative.is_empty() {
        return Ok(dest.to_path_buf());
    }
    let mut path = dest.to_path_buf();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("refusing a stored path that leaves its folder: {relative}"),
                ));
            }
            part if part.starts_with('/') => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("refusing an absolute stored path: {relative}"),
                ));
            }
            part => path.push(part),
        }
    }
    Ok(path)
}

/// Runs `work` over `items` on a few threads, keeping the input order in the output.
fn parallel_map<T: Send, R: Send>(
    items: Vec<T>,
    work: impl Fn(T) -> io::Result<R> + Sync,
) -> Vec<io::Result<R>> {
    let count = items.len();
    if count < 8 {
        return items.into_iter().map(work).collect();
    }
    let queue = std::sync::Mutex::new(items.into_iter().enumerate());
    let results: std::sync::Mutex<Vec<Option<io::Result<R>>>> =
        std::sync::Mutex::new((0..count).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers() {
            scope.spawn(|| {
                loop {
                    let next = match queue.lock() {
                        Ok(mut queue) => queue.next(),
                        Err(_) => None,
                    };
                    let Some((index, item)) = next else { break };
                    let result = work(item);
                    if let Ok(mut results) = results.lock() {
                        results[index] = Some(result);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|result| result.unwrap_or_else(|| Err(io::Error::other("a worker thread failed"))))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_round_trips_and_equal_content_is_stored_once() {
        let temp = tempfile::tempdir().unwrap();
        let source = temp.path().join("src");
        fs::create_dir_all(source.join("a/b")).unwrap();
        fs::create_dir_all(source.join("empty")).unwrap();
        for i in 0..20 {
            fs::write(source.join(format!("a/file{i}")), "same content").unwrap();
        }
        fs::write(source.join("a/b/script.sh"), "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(
            source.join("a/b/script.sh"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        symlink("a/b/script.sh", source.join("link")).unwrap();

        // Three equal large files are one blob.
        let large = vec![7u8; 300 * 1024];
        for i in 0..3 {
            fs::write(source.join(format!("a/large{i}")), &large).unwrap();
        }

        let store = Store::open(temp.path().join("cas")).unwrap();
        let count_blobs = || {
            walkdir::WalkDir::new(temp.path().join("cas/blobs"))
                .into_iter()
                .filter(|e| e.as_ref().unwrap().file_type().is_file())
                .count()
        };
        let snapshot = store.store_tree(&source).unwrap();
        assert_eq!(snapshot.files.len(), 24);
        assert_eq!(snapshot.packs.len(), 1, "the 21 small files share one pack");
        assert_eq!(
            count_blobs(),
            2,
            "one pack and one blob for the three large files"
        );
        // The same tree again adds nothing.
        let again = store.store_tree(&source).unwrap();
        assert_eq!(again, snapshot);
        assert_eq!(count_blobs(), 2);

        let dest = temp.path().join("dest");
        store.restore_tree(&snapshot, &dest).unwrap();
        assert_eq!(
            fs::read_to_string(dest.join("a/file7")).unwrap(),
            "same content"
        );
        let mode = fs::metadata(dest.join("a/b/script.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            fs::read_link(dest.join("link")).unwrap(),
            Path::new("a/b/script.sh")
        );
        assert!(dest.join("empty").is_dir());

        // Editing a restored file leaves the store alone.
        fs::write(dest.join("a/file7"), "changed").unwrap();
        let again = temp.path().join("again");
        store.restore_tree(&snapshot, &again).unwrap();
        assert_eq!(
            fs::read_to_string(again.join("a/file7")).unwrap(),
            "same content"
        );
    }

    #[test]
    fn stored_paths_cannot_escape() {
        let dest = Path::new("/tmp/x");
        assert!(join_relative(dest, "../etc/passwd").is_err());
        assert!(join_relative(dest, "a/../../b").is_err());
        assert_eq!(join_relative(dest, "a/b").unwrap(), Path::new("/tmp/x/a/b"));
    }
}
