//! `cache-restore`: Sorat's cache restore against GitHub's actions/cache (`tar` + `zstd`).
//!
//! For each input set it writes a seeded tree, saves it once with each system, then restores
//! it `--runs` times with each into fresh empty folders, first with the stored data in the
//! page cache (warm) and then with it evicted (cold-ish; see `sorat_bench::page_cache`).
//! Every restore is checked against the saved tree's fingerprint, and a wrong tree stops the
//! run. In the same run it times plain `cp` and `dd` copies on the same disk, so a restore's
//! throughput can be read against what the disk does. It prints Markdown tables with the
//! medians and the ratio actions/cache ÷ Sorat (above 1: Sorat is faster). It asserts no time.
//!
//! Restored trees stay on disk until the end (about 14 GiB at the defaults) and are
//! evicted from memory after each check; `restore_once` says why. Nothing is left behind:
//! the work happens in a temporary folder inside `--work-dir`, removed at the end.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark's report is its output, and its progress goes to standard error"
)]

mod peer;
mod sorat;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use sorat_bench::command::first_line;
use sorat_bench::disk::{self, CopyReference};
use sorat_bench::fingerprint::TreeFingerprint;
use sorat_bench::inputs::{self, Generated, InputKind};
use sorat_bench::page_cache::{evict, flush, warm};
use sorat_bench::report::{Table, median, mib, mib_per_second, ratio, seconds, spread};

/// Times Sorat's cache restore against actions/cache's `tar` + `zstd` on the same trees.
#[derive(Parser, Debug)]
#[command(name = "cache-restore")]
struct Args {
    /// Multiplies the number of files in every set: 1 is a ~400 MiB, ~2,000-file `target/`
    /// and a ~60,000-file `node_modules/`; 0.25 is a quick run.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Timed restores per system, set and cache state.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seed of the input trees.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Sets to run, by name (`target`, `node_modules`); every set when none is given.
    #[arg(long = "set", value_parser = parse_kind)]
    sets: Vec<InputKind>,
    /// Where to work: a temporary folder is made in it and removed at the end. Pick the disk
    /// you mean to measure, not a tmpfs.
    #[arg(long, env = "SORAT_BENCH_DIR", default_value_os_t = std::env::temp_dir())]
    work_dir: PathBuf,
    /// Size of the file the reference `cp` and `dd` copy, in MiB.
    #[arg(long, default_value_t = 256)]
    copy_mib: u64,
    /// Seconds to wait before each timed restore, so that inodes freed just before (Sorat's
    /// restore frees one per file where reflinks fail) no longer slow file creation down.
    /// By default 65 on ext4 without a journal, where that happens, and 0 elsewhere.
    #[arg(long)]
    settle: Option<u64>,
}

fn parse_kind(text: &str) -> Result<InputKind, String> {
    InputKind::parse(text).ok_or_else(|| {
        let names: Vec<&str> = InputKind::ALL.iter().map(|kind| kind.folder()).collect();
        format!("unknown set `{text}`; the sets are {}", names.join(", "))
    })
}

/// One way of caching a workspace folder: Sorat's store, or the peer's archive.
trait Cache {
    /// The name in reports.
    fn name(&self) -> &'static str;
    /// Saves the folder from `workspace`; returns the time it took.
    fn save(&mut self, workspace: &Path) -> anyhow::Result<Duration>;
    /// Restores the folder into `workspace`; returns the time it took.
    fn restore(&self, workspace: &Path) -> anyhow::Result<Duration>;
    /// What a restore reads, and what the saved cache occupies: a file or a folder.
    fn stored(&self) -> PathBuf;
}

/// Whether the stored data starts a restore in the page cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CacheState {
    Warm,
    ColdIsh,
}

impl CacheState {
    const ALL: [CacheState; 2] = [CacheState::Warm, CacheState::ColdIsh];

    fn label(self) -> &'static str {
        match self {
            CacheState::Warm => "warm",
            CacheState::ColdIsh => "cold-ish",
        }
    }
}

/// Bytes a saved cache takes: its files' lengths, and the blocks they occupy.
#[derive(Clone, Copy, Debug, Default)]
struct Stored {
    apparent: u64,
    allocated: u64,
}

/// Everything measured on one set.
struct SetResult {
    kind: InputKind,
    generated: Generated,
    /// Save times and stored sizes, Sorat first.
    saves: [(Duration, Stored); 2],
    /// Restore times, `[state][system]`, Sorat first.
    restores: [[Vec<Duration>; 2]; 2],
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cache-restore: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    if !args.scale.is_finite() || args.scale <= 0.0 || args.runs == 0 {
        bail!("--scale must be above 0 and --runs at least 1");
    }
    let kinds = if args.sets.is_empty() {
        InputKind::ALL.to_vec()
    } else {
        args.sets.clone()
    };
    let filesystem = filesystem_name(&args.work_dir);
    if filesystem == "tmpfs" {
        eprintln!(
            "cache-restore: warning: {} is a tmpfs; the numbers will say nothing about a disk",
            args.work_dir.display()
        );
    }
    let load_at_start = load_average();
    let work = tempfile::Builder::new()
        .prefix("sorat-bench-")
        .tempdir_in(&args.work_dir)
        .with_context(|| format!("making a work folder in {}", args.work_dir.display()))?;

    eprintln!("reference copies of a {} MiB file…", args.copy_mib);
    let copies = disk::measure(
        &work.path().join("copy"),
        args.copy_mib << 20,
        args.runs,
        args.seed,
    )
    .context("measuring the disk's copy speed")?;

    let settle = Duration::from_secs(args.settle.unwrap_or(
        if filesystem == EXT4_WITHOUT_JOURNAL {
            65
        } else {
            0
        },
    ));
    let mut results = Vec::new();
    for kind in kinds {
        results.push(bench_set(kind, work.path(), args, settle).with_context(|| kind.label())?);
    }
    let loads = (load_at_start, load_average());
    print!(
        "{}",
        report(args, &filesystem, settle, &loads, &copies, &results)
    );
    eprintln!("removing the work folder {}…", work.path().display());
    work.close().context("removing the work folder")?;
    Ok(())
}

fn bench_set(
    kind: InputKind,
    work: &Path,
    args: &Args,
    settle: Duration,
) -> anyhow::Result<SetResult> {
    let label = kind.label();
    let set_dir = work.join(label);
    let workspace = set_dir.join("workspace");
    let source = workspace.join(kind.folder());
    eprintln!("{label}: writing the input tree (scale {})…", args.scale);
    let generated = inputs::generate(kind, &source, args.scale, args.seed)?;
    flush();
    let expected = TreeFingerprint::of(&source)?;
    if (expected.files, expected.bytes) != (generated.files, generated.bytes) {
        bail!("the input tree on disk is not the tree that was written: {expected:?}");
    }
    eprintln!(
        "{label}: {} files, {} symlinks, {}",
        generated.files,
        generated.symlinks,
        mib(generated.bytes)
    );

    let mut caches: [Box<dyn Cache>; 2] = [
        Box::new(sorat::SoratCache::open(
            &set_dir.join("sorat"),
            kind.folder(),
        )?),
        Box::new(peer::ActionsCache::open(
            &set_dir.join("actions-cache"),
            kind.folder(),
        )?),
    ];
    let mut saves = [(Duration::ZERO, Stored::default()); 2];
    for (index, cache) in caches.iter_mut().enumerate() {
        flush();
        let time = cache.save(&workspace)?;
        flush();
        let stored = stored_size(&cache.stored())?;
        eprintln!(
            "{label}: {} saved in {}, {} stored",
            cache.name(),
            seconds(time),
            mib(stored.apparent)
        );
        saves[index] = (time, stored);
    }

    // One untimed restore each first: the first trees made in a run also grow the kernel's
    // inode and dentry caches, a cost that belongs to neither system.
    for cache in &caches {
        restore_once(
            cache.as_ref(),
            kind,
            &set_dir,
            "warm-up",
            CacheState::Warm,
            Duration::ZERO,
            &expected,
        )?;
    }
    let mut restores: [[Vec<Duration>; 2]; 2] = Default::default();
    for (state_index, state) in CacheState::ALL.into_iter().enumerate() {
        for run in 0..args.runs {
            // Alternate who goes first, so that neither always follows the other.
            let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
            for index in order {
                let cache = caches[index].as_ref();
                let name = format!("{} run {} of {}", state.label(), run + 1, args.runs);
                let time = restore_once(cache, kind, &set_dir, &name, state, settle, &expected)?;
                restores[state_index][index].push(time);
            }
        }
    }
    Ok(SetResult {
        kind,
        generated,
        saves,
        restores,
    })
}

/// Restores `cache` once into a new empty folder, from a warm or evicted store, and checks
/// the tree against `expected`. Returns the restore's time; the tree is left in place.
fn restore_once(
    cache: &dyn Cache,
    kind: InputKind,
    set_dir: &Path,
    name: &str,
    state: CacheState,
    settle: Duration,
    expected: &TreeFingerprint,
) -> anyhow::Result<Duration> {
    let label = kind.label();
    let dest = set_dir.join(format!(
        "restore-{}-{}",
        cache.name().replace('/', "-"),
        name.replace(' ', "-")
    ));
    fs::create_dir(&dest)?;
    // Write back what earlier steps left dirty, so that it is not written during this one.
    flush();
    if !settle.is_zero() {
        // ext4 without a journal does not reuse an inode for 60 s after it was freed, or
        // 360 s while its inode-table block is dirty: hence the flush before and after.
        std::thread::sleep(settle);
        flush();
    }
    match state {
        CacheState::Warm => warm(&cache.stored())?,
        CacheState::ColdIsh => evict(&cache.stored())?,
    };
    let time = cache
        .restore(&dest)
        .with_context(|| format!("{} restore ({name})", cache.name()))?;
    let restored = TreeFingerprint::of(&dest.join(kind.folder()))?;
    expected
        .check(&restored)
        .with_context(|| format!("{} restore ({name}) of {label}", cache.name()))?;
    eprintln!(
        "{label}: {} restore, {name}: {} (verified)",
        cache.name(),
        seconds(time)
    );
    // The tree stays on disk until the whole run ends, but leaves memory now. Deleting tens
    // of thousands of files would slow the next restore for the filesystem's own reasons:
    // ext4 without a journal skips inodes freed in the last minute or more when it allocates
    // new ones, with an inode-table lookup for each (`recently_deleted`, fs/ext4/ialloc.c).
    // Keeping the pages would slow it too: once a virtual machine's memory that was never
    // touched is reached, every new page costs a fault in the host, which shows up as a
    // memcpy several times slower. Dropping the tree's clean pages hands the next restore
    // memory that is already backed.
    flush();
    evict(&dest)?;
    Ok(time)
}

/// Lengths and allocated blocks of a file, or of every file under a folder.
fn stored_size(path: &Path) -> anyhow::Result<Stored> {
    use std::os::unix::fs::MetadataExt as _;
    let mut stored = Stored::default();
    for entry in walkdir::WalkDir::new(path) {
        let entry = entry?;
        if entry.file_type().is_file() {
            let metadata = entry.metadata()?;
            stored.apparent += metadata.len();
            stored.allocated += metadata.blocks() * 512;
        }
    }
    Ok(stored)
}

/// How [`filesystem_name`] names ext4 without a journal, which changes how the run goes.
const EXT4_WITHOUT_JOURNAL: &str = "ext4 without a journal";

/// The filesystem `path` is on, by its magic number, for the report.
fn filesystem_name(path: &Path) -> String {
    use nix::sys::statfs::{
        BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, OVERLAYFS_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC,
        statfs,
    };
    match statfs(path) {
        Ok(info) => match info.filesystem_type() {
            // ext2, ext3 and ext4 share one magic number.
            kind if kind == EXT4_SUPER_MAGIC && ext4_without_journal(path) => {
                EXT4_WITHOUT_JOURNAL.to_string()
            }
            kind if kind == EXT4_SUPER_MAGIC => "ext4".to_string(),
            kind if kind == XFS_SUPER_MAGIC => "xfs".to_string(),
            kind if kind == BTRFS_SUPER_MAGIC => "btrfs".to_string(),
            kind if kind == TMPFS_MAGIC => "tmpfs".to_string(),
            kind if kind == OVERLAYFS_SUPER_MAGIC => "overlayfs".to_string(),
            kind => format!("filesystem {kind:?}"),
        },
        Err(error) => format!("unknown filesystem ({error})"),
    }
}

/// The 1-minute load average: on a shared machine, how busy the others kept the cores.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string())
}

/// Whether `path` is on an ext4 filesystem mounted without a journal, where creating files
/// soon after deleting many is slow (see `restore_once`). A journal shows up in
/// `/proc/fs/jbd2/` as `<device>-8`.
fn ext4_without_journal(path: &Path) -> bool {
    let Ok(path) = path.canonicalize() else {
        return false;
    };
    let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    // Each line: id parent major:minor root mount-point options [optional…] - type source …
    let mount = mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let mount_point = *fields.get(4)?;
            let dash = fields.iter().position(|field| *field == "-")?;
            let filesystem = *fields.get(dash + 1)?;
            let source = *fields.get(dash + 2)?;
            path.starts_with(mount_point)
                .then_some((mount_point.len(), filesystem, source))
        })
        .max_by_key(|(length, _, _)| *length);
    match mount {
        Some((_, "ext4", source)) => {
            let device = Path::new(source)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            !Path::new("/proc/fs/jbd2")
                .join(format!("{device}-8"))
                .exists()
        }
        _ => false,
    }
}

fn machine_facts(
    args: &Args,
    filesystem: &str,
    settle: Duration,
    loads: &(String, String),
) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1} GiB", kib as f64 / f64::from(1 << 20)))
        })
        .unwrap_or_else(|| "unknown".to_string());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    format!(
        "- machine: {cores} cores, {memory} memory, Linux {kernel}\n\
         - work folder: {} ({filesystem})\n\
         - peer: {}, {}\n\
         - inputs: scale {}, seed {}; {} timed restores per system, set and state, \
         each after a {} s settle\n\
         - load average (1 min) at start and end: {} and {}\n",
        args.work_dir.display(),
        first_line("tar", &["--version"]),
        first_line("zstd", &["--version"])
            .trim_start_matches("*** ")
            .trim_end_matches(" ***"),
        args.scale,
        args.seed,
        args.runs,
        settle.as_secs(),
        loads.0,
        loads.1,
    )
}

fn report(
    args: &Args,
    filesystem: &str,
    settle: Duration,
    loads: &(String, String),
    copies: &CopyReference,
    results: &[SetResult],
) -> String {
    let mut text = String::from("# Cache restore: Sorat vs actions/cache (tar + zstd)\n\n");
    text.push_str(&machine_facts(args, filesystem, settle, loads));
    if filesystem == EXT4_WITHOUT_JOURNAL {
        text.push_str(
            "\nNote: on ext4 without a journal, creating a file skips every inode freed in the \
             last 1 to 6 minutes, one inode-table lookup each, so any restore that follows \
             mass deletions is slower. Each timed restore waits `--settle` seconds first; a \
             whole run should start 6 minutes after the last one's clean-up.\n",
        );
    }

    text.push_str(&format!(
        "\n## Reference copies of one {} file on the same disk\n\n",
        mib(copies.bytes)
    ));
    let mut table = Table::new(&["copy", "median", "throughput", "runs (s)"]);
    let mut copy_row = |name: &str, times: &[Duration]| {
        table.row(vec![
            name.to_string(),
            seconds(median(times)),
            mib_per_second(copies.bytes, median(times)),
            spread(times),
        ]);
    };
    copy_row("cp, source in page cache", &copies.cp_warm);
    copy_row("cp, source evicted", &copies.cp_cold);
    if copies.dd_direct.is_empty() {
        let reason = copies.dd_error.clone().unwrap_or_default();
        table.row(vec!["dd O_DIRECT".into(), "n/a".into(), reason]);
    } else {
        copy_row("dd O_DIRECT, bs=4M", &copies.dd_direct);
    }
    text.push_str(&table.render());

    text.push_str("\n## Save, once each into an empty store\n\n");
    let mut table = Table::new(&[
        "set",
        "files",
        "bytes",
        "Sorat save",
        "Sorat stored (on disk)",
        "actions/cache save",
        "actions/cache stored",
        "save ratio",
    ]);
    for result in results {
        let [(sorat_time, sorat_stored), (peer_time, peer_stored)] = result.saves;
        table.row(vec![
            result.kind.label().to_string(),
            result.generated.files.to_string(),
            mib(result.generated.bytes),
            seconds(sorat_time),
            format!(
                "{} ({})",
                mib(sorat_stored.apparent),
                mib(sorat_stored.allocated)
            ),
            seconds(peer_time),
            mib(peer_stored.apparent),
            ratio(peer_time, sorat_time),
        ]);
    }
    text.push_str(&table.render());

    text.push_str(&format!(
        "\n## Restore, median of {} into a fresh empty folder, every one verified\n\n",
        args.runs
    ));
    let mut table = Table::new(&[
        "set",
        "stored data",
        "files",
        "bytes",
        "Sorat",
        "actions/cache",
        "ratio",
        "Sorat MiB/s",
        "actions/cache MiB/s",
        "Sorat runs (s)",
        "actions/cache runs (s)",
    ]);
    for result in results {
        for (state_index, state) in CacheState::ALL.into_iter().enumerate() {
            let [sorat, peer] = &result.restores[state_index];
            let bytes = result.generated.bytes;
            table.row(vec![
                result.kind.label().to_string(),
                match state {
                    CacheState::Warm => "in page cache".to_string(),
                    CacheState::ColdIsh => "evicted".to_string(),
                },
                result.generated.files.to_string(),
                mib(bytes),
                seconds(median(sorat)),
                seconds(median(peer)),
                ratio(median(peer), median(sorat)),
                mib_per_second(bytes, median(sorat)),
                mib_per_second(bytes, median(peer)),
                spread(sorat),
                spread(peer),
            ]);
        }
    }
    text.push_str(&table.render());
    text.push_str(
        "\nratio = actions/cache ÷ Sorat; above 1 means Sorat restored faster. \
         Neither side syncs after a restore: times end when the tree is in place in the page cache.\n",
    );
    text
}
