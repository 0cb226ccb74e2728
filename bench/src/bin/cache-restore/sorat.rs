//! Sorat's side: the content-addressed store, used as the `cache` step uses it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sorat_pipeline::cas::{Snapshot, Store};

use crate::Cache;

/// A store and one saved entry, laid out as the engine lays out its data folder: blobs in
/// `cas/`, the entry's snapshot as JSON in `cache/`.
pub(crate) struct SoratCache {
    root: PathBuf,
    store: Store,
    entry: PathBuf,
    folder: &'static str,
}

impl SoratCache {
    /// Opens an empty store in `root` for the workspace folder `folder`.
    pub(crate) fn open(root: &Path, folder: &'static str) -> anyhow::Result<SoratCache> {
        let store = Store::open(root.join("cas"))
            .with_context(|| format!("opening a store in {}", root.display()))?;
        fs::create_dir_all(root.join("cache"))?;
        Ok(SoratCache {
            root: root.to_path_buf(),
            store,
            entry: root.join("cache").join("entry.json"),
            folder,
        })
    }
}

impl Cache for SoratCache {
    fn name(&self) -> &'static str {
        "sorat"
    }

    /// What the `cache` step's post action does: store the tree, make the blobs durable
    /// (`Store::sync`), then write the entry durably (written, synced, renamed into place).
    fn save(&mut self, workspace: &Path) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let snapshot = self
            .store
            .store_tree(&workspace.join(self.folder))
            .context("Store::store_tree")?;
        self.store.sync().context("Store::sync")?;
        let json = serde_json::to_vec(&snapshot)?;
        let temporary = self.entry.with_extension("tmp");
        fs::write(&temporary, json)?;
        fs::File::open(&temporary)?.sync_all()?;
        fs::rename(&temporary, &self.entry)?;
        Ok(started.elapsed())
    }

    /// What the `cache` step does on a hit: read the entry, then `Store::restore_tree`.
    fn restore(&self, workspace: &Path) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let json = fs::read(&self.entry)?;
        let snapshot: Snapshot = serde_json::from_slice(&json)?;
        self.store
            .restore_tree(&snapshot, &workspace.join(self.folder))
            .context("Store::restore_tree")?;
        Ok(started.elapsed())
    }

    fn stored(&self) -> PathBuf {
        self.root.clone()
    }
}
