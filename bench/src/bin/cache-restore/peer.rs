//! The peer's side: GitHub's actions/cache, which archives with the real `tar` and `zstd`.
//!
//! The commands are the ones `@actions/cache` runs on Linux with GNU tar and zstd installed
//! (its `ZstdWithoutLong` method, the one it picks whenever zstd is present):
//!
//! ```text
//! save:    tar --posix -cf cache.tzst --exclude cache.tzst -P -C <workspace> \
//!              --files-from manifest.txt --use-compress-program zstdmt
//! restore: tar -xf cache.tzst -P -C <workspace> --use-compress-program unzstd
//! ```
//!
//! Only the local part is measured: actions/cache also uploads and downloads the archive.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use sorat_bench::command::timed;

use crate::Cache;

/// A folder holding one archive and its manifest.
pub(crate) struct ActionsCache {
    root: PathBuf,
    archive: PathBuf,
    folder: &'static str,
}

impl ActionsCache {
    /// An empty cache folder in `root` for the workspace folder `folder`.
    pub(crate) fn open(root: &Path, folder: &'static str) -> anyhow::Result<ActionsCache> {
        fs::create_dir_all(root)?;
        Ok(ActionsCache {
            root: root.to_path_buf(),
            archive: root.join("cache.tzst"),
            folder,
        })
    }
}

impl Cache for ActionsCache {
    fn name(&self) -> &'static str {
        "actions/cache"
    }

    fn save(&mut self, workspace: &Path) -> anyhow::Result<Duration> {
        let manifest = self.root.join("manifest.txt");
        fs::write(&manifest, self.folder)?;
        let mut tar = Command::new("tar");
        tar.current_dir(&self.root)
            .args([
                "--posix",
                "-cf",
                "cache.tzst",
                "--exclude",
                "cache.tzst",
                "-P",
                "-C",
            ])
            .arg(workspace)
            .args(["--files-from", "manifest.txt"])
            .args(["--use-compress-program", "zstdmt"]);
        timed(&mut tar).context("saving with tar and zstdmt (is the zstd package installed?)")
    }

    fn restore(&self, workspace: &Path) -> anyhow::Result<Duration> {
        let mut tar = Command::new("tar");
        tar.arg("-xf")
            .arg(&self.archive)
            .args(["-P", "-C"])
            .arg(workspace)
            .args(["--use-compress-program", "unzstd"]);
        timed(&mut tar).context("restoring with tar and unzstd")
    }

    fn stored(&self) -> PathBuf {
        self.archive.clone()
    }
}
