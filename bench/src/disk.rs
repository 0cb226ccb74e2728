//! What the disk does for plain sequential copies, measured in the same run as the ceiling a
//! restore is judged against.
//!
//! Three copies of one large incompressible file, each with the real programs:
//! - `cp`, warm: the source is in the page cache and nothing waits for the disk. This is
//!   the ceiling for a warm restore, which does not wait for the disk either.
//! - `cp`, cold-ish: the source's pages were dropped first (see [`crate::page_cache`]), so
//!   it is read from the disk; the copy is still only written to the page cache.
//! - `dd iflag=direct oflag=direct bs=4M`: reads and writes bypass the page cache, so this
//!   is the device's own sequential read-and-write speed.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::command::timed;
use crate::page_cache::{evict, flush, warm};
use crate::rng::SplitMix64;

/// Times of each copy, one per run.
#[derive(Clone, Debug, Default)]
pub struct CopyReference {
    /// Size of the copied file.
    pub bytes: u64,
    /// `cp` with the source cached.
    pub cp_warm: Vec<Duration>,
    /// `cp` with the source's pages dropped.
    pub cp_cold: Vec<Duration>,
    /// `dd` with `O_DIRECT` on both sides; empty when the filesystem refuses `O_DIRECT`
    /// (tmpfs does).
    pub dd_direct: Vec<Duration>,
    /// Why `dd` could not run, when it could not.
    pub dd_error: Option<String>,
}

/// Writes a `bytes`-long random file in `dir` and times `runs` copies of each kind.
pub fn measure(dir: &Path, bytes: u64, runs: usize, seed: u64) -> io::Result<CopyReference> {
    fs::create_dir_all(dir)?;
    let source = dir.join("copy-source");
    let target = dir.join("copy-target");
    write_random(&source, bytes, seed)?;
    let mut reference = CopyReference {
        bytes,
        ..CopyReference::default()
    };
    for _ in 0..runs {
        flush();
        warm(&source)?;
        reference
            .cp_warm
            .push(timed(Command::new("cp").arg(&source).arg(&target))?);
        fs::remove_file(&target)?;

        flush();
        evict(&source)?;
        reference
            .cp_cold
            .push(timed(Command::new("cp").arg(&source).arg(&target))?);
        fs::remove_file(&target)?;

        if reference.dd_error.is_none() {
            flush();
            let dd = timed(
                Command::new("dd")
                    .arg(format!("if={}", source.display()))
                    .arg(format!("of={}", target.display()))
                    .args(["bs=4M", "iflag=direct", "oflag=direct", "status=none"]),
            );
            match dd {
                Ok(elapsed) => reference.dd_direct.push(elapsed),
                Err(error) => reference.dd_error = Some(error.to_string()),
            }
            let _ = fs::remove_file(&target);
        }
    }
    fs::remove_file(&source)?;
    flush();
    Ok(reference)
}

fn write_random(path: &Path, bytes: u64, seed: u64) -> io::Result<()> {
    let mut rng = SplitMix64::new(seed);
    let mut file = File::create(path)?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let step = left.min(buffer.len() as u64) as usize;
        rng.fill(&mut buffer[..step]);
        file.write_all(&buffer[..step])?;
        left -= step as u64;
    }
    Ok(())
}
