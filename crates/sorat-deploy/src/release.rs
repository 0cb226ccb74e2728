//! Numbered releases in a host's folder and the `current` symlink that says which one runs.
//!
//! The layout of a host's folder:
//!
//! ```text
//! releases/<n>/              a complete release: its files and release.json
//! releases/<n>.partial/      a release being copied (never looks complete; removed on retry)
//! releases/.last             the highest number ever completed here (numbers are never reused)
//! current -> releases/<n>    the release that runs, switched by renaming a new symlink over it
//! ```
//!
//! Every step that must survive a crash is a rename of something complete, followed by an
//! fsync of the folder that holds it: a release appears whole or not at all, and `current`
//! always names a release (the old one or the new one, never nothing and never a half).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The name of the symlink to the running release.
pub const CURRENT: &str = "current";
/// The folder of the releases.
pub const RELEASES: &str = "releases";
/// The file in each release that describes it.
pub const RELEASE_JSON: &str = "release.json";
/// The file that holds the highest release number ever completed on a host.
const LAST: &str = ".last";
/// The suffix of a release still being copied.
const PARTIAL: &str = ".partial";

/// What can go wrong with a host's releases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("cannot copy", …).
        action: &'static str,
        /// The path it concerned.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A copied file does not have the digest it was given.
    #[error("{path}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The file's path inside the release.
        path: PathBuf,
        /// The digest it should have.
        expected: String,
        /// The digest of what was copied.
        actual: String,
    },
    /// A digest is not `sha256:` followed by 64 hexadecimal digits.
    #[error("invalid digest `{0}`: expected `sha256:` and 64 hexadecimal digits")]
    InvalidDigest(String),
    /// A file's path inside a release is absolute, empty, or leaves the release.
    #[error("invalid path `{0}` in a release: it must be relative and stay inside the release")]
    InvalidPath(PathBuf),
    /// The release number is 0, exists already, or is not above every number used on the host.
    #[error("release {number} cannot be prepared on host {host}: {reason}")]
    NumberUsed {
        /// The host.
        host: String,
        /// The number asked for.
        number: u32,
        /// Why it cannot be used.
        reason: String,
    },
    /// The release does not exist on the host.
    #[error("release {number} does not exist on host {host}")]
    NotFound {
        /// The host.
        host: String,
        /// The missing release.
        number: u32,
    },
    /// Pruning would remove a release that must stay.
    #[error(
        "refusing to remove release {number} on host {host}: it is {why}; keep more releases or remove another one"
    )]
    Refused {
        /// The host.
        host: String,
        /// The release that must stay.
        number: u32,
        /// Why it must stay ("the current release", "protected (a rollback needs it)").
        why: &'static str,
    },
    /// A command on a host reached over SSH failed (or the host could not be reached).
    #[error("{action}: {message}")]
    Remote {
        /// The host.
        host: String,
        /// What was being done ("cannot connect", "cannot upload", …).
        action: &'static str,
        /// What the host or the SSH client said.
        message: String,
    },
    /// `release.json` cannot be read or written.
    #[error("{path}: {message}")]
    Record {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

fn io_error<'path>(
    action: &'static str,
    path: &'path Path,
) -> impl FnOnce(io::Error) -> ReleaseError + 'path {
    move |source| ReleaseError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Checks that `digest` reads `sha256:<64 hex digits>` and returns it in lower case.
pub fn parse_digest(digest: &str) -> Result<String, ReleaseError> {
    let hex_part = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| ReleaseError::InvalidDigest(digest.to_owned()))?;
    if hex_part.len() != 64 || !hex_part.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(ReleaseError::InvalidDigest(digest.to_owned()));
    }
    Ok(format!("sha256:{}", hex_part.to_ascii_lowercase()))
}

/// The `sha256:<hex>` digest of a file's content.
pub fn digest_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// One file of a release: where it goes, where it comes from, its mode and its digest.
#[derive(Clone, Debug)]
pub struct ReleaseFile {
    /// Its path inside the release (relative; may contain folders).
    pub path: PathBuf,
    /// The file to copy.
    pub source: PathBuf,
    /// Its Unix permission bits (`0o755` for a program).
    pub mode: u32,
    /// The digest its copy must have, `sha256:<hex>`.
    pub digest: String,
}

/// Where a release stands on a host, as written in its `release.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseStatus {
    /// Copied and verified; not yet running (or its deploy was abandoned before it ran).
    Prepared,
    /// It ran here and passed its health checks.
    Deployed,
    /// It was switched to here and failed (health checks, or the service would not stay up).
    Failed,
    /// It passed here but was replaced by a rollback.
    RolledBack,
}

/// A file as listed in `release.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedFile {
    /// Its path inside the release.
    pub path: PathBuf,
    /// Its digest.
    pub digest: String,
    /// Its mode.
    pub mode: u32,
}

/// The content of `release.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// The release's number in its environment.
    pub number: u32,
    /// The artifact, `name@version`.
    pub artifact: String,
    /// The artifact's digest.
    pub digest: String,
    /// When the release was prepared on this host.
    pub created: jiff::Timestamp,
    /// Who deployed it.
    pub who: String,
    /// Where it stands.
    pub status: ReleaseStatus,
    /// Its files.
    pub files: Vec<RecordedFile>,
    /// How its service was configured when it was deployed (absent in releases written
    /// before Sorat kept it): a rollback to it runs it that way again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ReleaseConfig>,
}

/// The part of an environment's configuration that belongs to a release: how its service
/// runs. A release is its artifact and this snapshot, so a rollback restores both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseConfig {
    /// The service's command.
    pub command: String,
    /// Its environment variables.
    pub env: Vec<(String, String)>,
    /// The folder inside the release it ran in (none: the release's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

/// What a release is, apart from its files: the part of `release.json` given by the caller.
#[derive(Clone, Debug)]
pub struct ReleaseMeta {
    /// The artifact, `name@version`.
    pub artifact: String,
    /// The artifact's digest.
    pub digest: String,
    /// Who deploys it.
    pub who: String,
    /// The service's configuration to record with it (the deploy fills it in from the
    /// environment).
    pub config: Option<ReleaseConfig>,
}

/// A host's folder: its releases and its `current` symlink.
///
/// All methods are blocking file operations; call them from `spawn_blocking` in async code.
#[derive(Clone, Debug)]
pub struct Host {
    name: String,
    root: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other process or thread uses at the same time.
fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn fsync_dir(path: &Path) -> Result<(), ReleaseError> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("cannot fsync", path))
}

fn check_relative(path: &Path) -> Result<(), ReleaseError> {
    let mut any = false;
    for component in path.components() {
        match component {
            Component::Normal(_) => any = true,
            Component::CurDir => {}
            _ => return Err(ReleaseError::InvalidPath(path.to_path_buf())),
        }
    }
    if any {
        Ok(())
    } else {
        Err(ReleaseError::InvalidPath(path.to_path_buf()))
    }
}

/// Writes `bytes` to `path` through a temporary file renamed over it, so readers see the old
/// content or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ReleaseError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let temp = parent.join(format!(".tmp-{}", unique_suffix()));
    let result = (|| {
        let mut file = File::create(&temp).map_err(io_error("cannot create", &temp))?;
        file.write_all(bytes)
            .map_err(io_error("cannot write", &temp))?;
        file.sync_all().map_err(io_error("cannot fsync", &temp))?;
        fs::rename(&temp, path).map_err(io_error("cannot rename into", path))?;
        fsync_dir(parent)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

impl Host {
    /// A host named `name` whose folder is `root` (created when needed by [`Host::prepare`]).
    pub fn new(name: impl Into<String>, root: impl Into<PathBuf>) -> Host {
        Host {
            name: name.into(),
            root: root.into(),
        }
    }

    /// The host's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of the `current` symlink (a service's working directory).
    pub fn current_path(&self) -> PathBuf {
        self.root.join(CURRENT)
    }

    /// The folder of release `number`.
    pub fn release_path(&self, number: u32) -> PathBuf {
        self.root.join(RELEASES).join(number.to_string())
    }

    fn releases_dir(&self) -> PathBuf {
        self.root.join(RELEASES)
    }

    /// The highest release number ever completed on this host (0 when none).
    pub fn last_number(&self) -> Result<u32, ReleaseError> {
        let path = self.releases_dir().join(LAST);
        let recorded = match fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<u32>()
                .map_err(|error| ReleaseError::Record {
                    path: path.clone(),
                    message: error.to_string(),
                })?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => 0,
            Err(error) => return Err(io_error("cannot read", &path)(error)),
        };
        // A crash between the release's rename and the write of `.last` leaves `.last` behind.
        let highest_present = self.releases()?.last().copied().unwrap_or(0);
        Ok(recorded.max(highest_present))
    }

    /// Copies `files` into `releases/<number>.partial/`, verifies each copy's SHA-256 against
    /// its digest, writes `release.json` (status [`ReleaseStatus::Prepared`]), then renames the
    /// folder to `releases/<number>/`. On any error the partial folder is removed and no
    /// `releases/<number>/` exists.
    pub fn prepare(
        &self,
        number: u32,
        meta: &ReleaseMeta,
        files: &[ReleaseFile],
    ) -> Result<ReleaseRecord, ReleaseError> {
        let releases = self.releases_dir();
        fs::create_dir_all(&releases).map_err(io_error("cannot create", &releases))?;
        let used = |reason: String| ReleaseError::NumberUsed {
            host: self.name.clone(),
            number,
            reason,
        };
        if number == 0 {
            return Err(used("release numbers start at 1".to_owned()));
        }
        let last = self.last_number()?;
        if number <= last {
            return Err(used(format!(
                "numbers are never reused and {last} was already used here"
            )));
        }
        let mut recorded = Vec::with_capacity(files.len());
        for file in files {
            check_relative(&file.path)?;
            recorded.push(RecordedFile {
                path: file.path.clone(),
                digest: parse_digest(&file.digest)?,
                mode: file.mode,
            });
        }
        let meta_digest = parse_digest(&meta.digest)?;

        let partial = releases.join(format!("{number}{PARTIAL}"));
        // A partial folder is what a crashed prepare left: it was never complete, so it goes.
        if partial.exists() {
            fs::remove_dir_all(&partial).map_err(io_error("cannot remove", &partial))?;
        }
        fs::create_dir(&partial).map_err(io_error("cannot create", &partial))?;
        let record = ReleaseRecord {
            number,
            artifact: meta.artifact.clone(),
            digest: meta_digest,
            created: jiff::Timestamp::now(),
            who: meta.who.clone(),
            status: ReleaseStatus::Prepared,
            files: recorded,
            config: meta.config.clone(),
        };
        let result = self.fill_partial(&partial, files, &record);
        if let Err(error) = result {
            let _ = fs::remove_dir_all(&partial);
            return Err(error);
        }
        let final_path = self.release_path(number);
        if let Err(error) = fs::rename(&partial, &final_path) {
            let _ = fs::remove_dir_all(&partial);
            return Err(io_error("cannot rename into", &final_path)(error));
        }
        fsync_dir(&releases)?;
        write_atomically(&releases.join(LAST), number.to_string().as_bytes())?;
        tracing::debug!(host = %self.name, release = number, "release prepared");
        Ok(record)
    }

    fn fill_partial(
        &self,
        partial: &Path,
        files: &[ReleaseFile],
        record: &ReleaseRecord,
    ) -> Result<(), ReleaseError> {
        let mut folders = vec![partial.to_path_buf()];
        for (file, recorded) in files.iter().zip(&record.files) {
            let target = partial.join(&file.path);
            if let Some(parent) = target.parent()
                && parent != partial
            {
                fs::create_dir_all(parent).map_err(io_error("cannot create", parent))?;
                folders.push(parent.to_path_buf());
            }
            let mut source =
                File::open(&file.source).map_err(io_error("cannot open", &file.source))?;
            let mut copy = File::create(&target).map_err(io_error("cannot create", &target))?;
            io::copy(&mut source, &mut copy).map_err(io_error("cannot copy to", &target))?;
            copy.set_permissions(fs::Permissions::from_mode(file.mode))
                .map_err(io_error("cannot set the mode of", &target))?;
            copy.sync_all().map_err(io_error("cannot fsync", &target))?;
            drop(copy);
            // The copy is read back, so what is checked is what a service will run.
            let actual = digest_file(&target).map_err(io_error("cannot read", &target))?;
            if actual != recorded.digest {
                return Err(ReleaseError::DigestMismatch {
                    path: file.path.clone(),
                    expected: recorded.digest.clone(),
                    actual,
                });
            }
        }
        let json = serde_json::to_vec_pretty(record).map_err(|error| ReleaseError::Record {
            path: partial.join(RELEASE_JSON),
            message: error.to_string(),
        })?;
        let json_path = partial.join(RELEASE_JSON);
        let mut json_file =
            File::create(&json_path).map_err(io_error("cannot create", &json_path))?;
        json_file
            .write_all(&json)
            .and_then(|()| json_file.sync_all())
            .map_err(io_error("cannot write", &json_path))?;
        folders.sort();
        folders.dedup();
        for folder in folders.iter().rev() {
            fsync_dir(folder)?;
        }
        Ok(())
    }

    /// Points `current` at release `number`: a new symlink is made beside it and renamed over
    /// it, and the folder is fsynced, so `current` names the old release or the new one at
    /// every instant, also across a crash.
    pub fn switch(&self, number: u32) -> Result<(), ReleaseError> {
        if !self.release_path(number).is_dir() {
            return Err(ReleaseError::NotFound {
                host: self.name.clone(),
                number,
            });
        }
        let temp = self.root.join(format!("{CURRENT}.tmp-{}", unique_suffix()));
        let target = Path::new(RELEASES).join(number.to_string());
        std::os::unix::fs::symlink(&target, &temp).map_err(io_error("cannot create", &temp))?;
        let current = self.current_path();
        if let Err(error) = fs::rename(&temp, &current) {
            let _ = fs::remove_file(&temp);
            return Err(io_error("cannot rename into", &current)(error));
        }
        fsync_dir(&self.root)?;
        tracing::debug!(host = %self.name, release = number, "current switched");
        Ok(())
    }

    /// Removes `current` (the host runs nothing): used when the first deploy to a host fails.
    pub fn clear_current(&self) -> Result<(), ReleaseError> {
        let current = self.current_path();
        match fs::remove_file(&current) {
            Ok(()) => fsync_dir(&self.root),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(io_error("cannot remove", &current)(error)),
        }
    }

    /// The release `current` points at, if any.
    pub fn current(&self) -> Result<Option<u32>, ReleaseError> {
        let current = self.current_path();
        let target = match fs::read_link(&current) {
            Ok(target) => target,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error("cannot read the link", &current)(error)),
        };
        let number = target
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.parse::<u32>().ok())
            .ok_or_else(|| ReleaseError::Record {
                path: current.clone(),
                message: format!("points at {}, which is not a release", target.display()),
            })?;
        Ok(Some(number))
    }

    /// The complete releases on the host, in increasing order (partial ones are not listed).
    pub fn releases(&self) -> Result<Vec<u32>, ReleaseError> {
        let dir = self.releases_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io_error("cannot list", &dir)(error)),
        };
        let mut numbers = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("cannot list", &dir))?;
            if let Some(number) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
                && entry.path().is_dir()
            {
                numbers.push(number);
            }
        }
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// The release before `number` among those present (what a rollback from it goes to).
    pub fn previous(&self, number: u32) -> Result<Option<u32>, ReleaseError> {
        Ok(self
            .releases()?
            .into_iter()
            .filter(|candidate| *candidate < number)
            .max())
    }

    /// Reads `release.json` of release `number`.
    pub fn record(&self, number: u32) -> Result<ReleaseRecord, ReleaseError> {
        let path = self.release_path(number).join(RELEASE_JSON);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(ReleaseError::NotFound {
                    host: self.name.clone(),
                    number,
                });
            }
            Err(error) => return Err(io_error("cannot read", &path)(error)),
        };
        serde_json::from_slice(&bytes).map_err(|error| ReleaseError::Record {
            path,
            message: error.to_string(),
        })
    }

    /// Sets the status in `release.json` of release `number` (written atomically).
    pub fn set_status(&self, number: u32, status: ReleaseStatus) -> Result<(), ReleaseError> {
        let mut record = self.record(number)?;
        record.status = status;
        let path = self.release_path(number).join(RELEASE_JSON);
        let json = serde_json::to_vec_pretty(&record).map_err(|error| ReleaseError::Record {
            path: path.clone(),
            message: error.to_string(),
        })?;
        write_atomically(&path, &json)
    }

    /// Removes release `number`, refusing the current release and any in `protect`.
    pub fn remove(&self, number: u32, protect: &[u32]) -> Result<(), ReleaseError> {
        self.check_removable(number, protect)?;
        let path = self.release_path(number);
        if !path.is_dir() {
            return Err(ReleaseError::NotFound {
                host: self.name.clone(),
                number,
            });
        }
        self.remove_release_dir(number)
    }

    fn check_removable(&self, number: u32, protect: &[u32]) -> Result<(), ReleaseError> {
        let refused = |why| ReleaseError::Refused {
            host: self.name.clone(),
            number,
            why,
        };
        if self.current()? == Some(number) {
            return Err(refused("the current release"));
        }
        if protect.contains(&number) {
            return Err(refused("protected (a rollback needs it)"));
        }
        Ok(())
    }

    fn remove_release_dir(&self, number: u32) -> Result<(), ReleaseError> {
        let path = self.release_path(number);
        // Renamed first, so a crash halfway through the removal leaves no incomplete
        // folder that looks like a release.
        let doomed = self
            .releases_dir()
            .join(format!(".removing-{number}-{}", unique_suffix()));
        fs::rename(&path, &doomed).map_err(io_error("cannot rename", &path))?;
        fsync_dir(&self.releases_dir())?;
        fs::remove_dir_all(&doomed).map_err(io_error("cannot remove", &doomed))?;
        tracing::debug!(host = %self.name, release = number, "release removed");
        Ok(())
    }

    /// Keeps the last `keep` releases and removes the older ones. Refuses, before removing
    /// anything, when an older one is the current release or is in `protect` (the release a
    /// rollback would need). Returns the removed numbers.
    pub fn prune(&self, keep: usize, protect: &[u32]) -> Result<Vec<u32>, ReleaseError> {
        let releases = self.releases()?;
        let doomed: Vec<u32> = releases.iter().rev().skip(keep).rev().copied().collect();
        for number in &doomed {
            self.check_removable(*number, protect)?;
        }
        for number in &doomed {
            self.remove_release_dir(*number)?;
        }
        Ok(doomed)
    }
}
