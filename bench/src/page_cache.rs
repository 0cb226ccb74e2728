//! The page cache, as far as a process without privileges can steer it.
//!
//! Dropping every cache (`echo 3 > /proc/sys/vm/drop_caches`) needs root and clears the
//! whole machine, so benchmarks do not. Instead, [`flush`] writes dirty pages back with
//! `sync(2)`, and then [`evict`] asks the kernel with `posix_fadvise(POSIX_FADV_DONTNEED)` to
//! drop the clean pages of the files a restore will read. That empties the page cache of
//! those files' data, but not the kernel's cache of their inodes and directory entries, nor
//! any cache below the filesystem (a virtual machine's host may still hold the disk image):
//! hence "cold-ish". [`warm`] reads files once so that a warm run starts from memory.

use std::fs::File;
use std::io;
use std::path::Path;

use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};

/// Writes every dirty page of every filesystem back to its disk (`sync(2)`), so that what a
/// run before wrote is not flushed during the next one, and so that [`evict`] can drop pages.
pub fn flush() {
    nix::unistd::sync();
}

/// Asks the kernel to drop the cached pages of `path`, a file or every file under a folder.
/// Pages must be clean to be dropped: call [`flush`] first. Returns the number of files.
pub fn evict(path: &Path) -> io::Result<u64> {
    each_file(path, |file| {
        posix_fadvise(file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).map_err(io::Error::from)
    })
}

/// Reads `path`, a file or every file under a folder, into the page cache. Returns the
/// number of files.
pub fn warm(path: &Path) -> io::Result<u64> {
    each_file(path, |mut file| {
        io::copy(&mut file, &mut io::sink()).map(|_| ())
    })
}

fn each_file(path: &Path, mut action: impl FnMut(File) -> io::Result<()>) -> io::Result<u64> {
    let mut count = 0;
    for entry in walkdir::WalkDir::new(path) {
        let entry = entry.map_err(io::Error::other)?;
        if entry.file_type().is_file() {
            action(File::open(entry.path())?)?;
            count += 1;
        }
    }
    Ok(count)
}
