//! Seeded input trees that look, to a file copier, like what pipelines cache.
//!
//! [`InputKind::TargetLike`] is a Cargo `target/`: a couple of thousand files, most of the
//! bytes in a few large incompressible binaries, the rest in medium object-code-like files
//! and many small text files. [`InputKind::NodeModulesLike`] is a `node_modules/`: tens of
//! thousands of small, compressible text files in a deep tree of nested packages, with
//! identical `LICENSE` files and `.bin` symlinks.
//!
//! [`generate`] writes one with a seed and a scale: the same seed and scale write the same
//! tree, byte for byte, on any machine. The scale multiplies the number of files, never the
//! size of one, so a quick run keeps the shape of a full one.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use crate::rng::SplitMix64;

/// Which tree to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// A Cargo `target/` folder.
    TargetLike,
    /// An npm `node_modules/` folder.
    NodeModulesLike,
}

impl InputKind {
    /// Every kind, in the order the benchmarks report them.
    pub const ALL: [InputKind; 2] = [InputKind::TargetLike, InputKind::NodeModulesLike];

    /// The name printed in reports.
    pub fn label(self) -> &'static str {
        match self {
            InputKind::TargetLike => "target-like",
            InputKind::NodeModulesLike => "node_modules-like",
        }
    }

    /// The folder's name in a workspace, as a pipeline's `path:` would list it.
    pub fn folder(self) -> &'static str {
        match self {
            InputKind::TargetLike => "target",
            InputKind::NodeModulesLike => "node_modules",
        }
    }

    /// Reads a kind from its label or its folder name.
    pub fn parse(text: &str) -> Option<InputKind> {
        InputKind::ALL
            .into_iter()
            .find(|kind| kind.label() == text || kind.folder() == text)
    }

    /// The seed a kind's tree is written with: each kind draws its own stream from the
    /// run's seed, so that selecting one kind does not change the other's bytes.
    fn seed(self, seed: u64) -> u64 {
        let salt = match self {
            InputKind::TargetLike => 0x7461_7267_6574,
            InputKind::NodeModulesLike => 0x6e6f_6465_6d6f,
        };
        seed ^ salt
    }
}

/// What [`generate`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Generated {
    /// Regular files.
    pub files: u64,
    /// Bytes in regular files.
    pub bytes: u64,
    /// Symbolic links.
    pub symlinks: u64,
}

/// Writes the tree of `kind` at `dest` (which must not exist yet).
pub fn generate(kind: InputKind, dest: &Path, scale: f64, seed: u64) -> io::Result<Generated> {
    if dest.symlink_metadata().is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists; inputs are written into a new folder",
                dest.display()
            ),
        ));
    }
    fs::create_dir_all(dest)?;
    let mut rng = SplitMix64::new(kind.seed(seed));
    let text = TextSource::new(&mut rng, kind);
    let mut writer = Writer {
        rng,
        text,
        buffer: Vec::with_capacity(CHUNK),
        generated: Generated::default(),
        taken: HashSet::new(),
        root: dest.to_path_buf(),
    };
    match kind {
        InputKind::TargetLike => target_like(&mut writer, dest, scale)?,
        InputKind::NodeModulesLike => node_modules_like(&mut writer, dest, scale)?,
    }
    Ok(writer.generated)
}

/// `count` scaled, and at least one.
fn scaled(count: u64, scale: f64) -> u64 {
    ((count as f64 * scale).round() as u64).max(1)
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

fn target_like(writer: &mut Writer, root: &Path, scale: f64) -> io::Result<()> {
    let crates = scaled(220, scale);
    let big_binaries = scaled(8, scale);
    let release = root.join("release");
    writer.file(&root.join("CACHEDIR.TAG"), 177, Content::Text, 0o644)?;
    let size = writer.rng.between(KIB, 3 * KIB);
    writer.file(&root.join(".rustc_info.json"), size, Content::Text, 0o644)?;
    writer.file(&release.join(".cargo-lock"), 0, Content::Text, 0o644)?;
    for _ in 0..crates {
        let name = writer.crate_name();
        let hash = writer.hex(16);
        let fingerprint = release.join(".fingerprint").join(format!("{name}-{hash}"));
        writer.file(
            &fingerprint.join(format!("lib-{name}")),
            16,
            Content::Text,
            0o644,
        )?;
        let size = writer.rng.between(200, 2 * KIB);
        writer.file(
            &fingerprint.join(format!("lib-{name}.json")),
            size,
            Content::Text,
            0o644,
        )?;
        let size = writer.rng.between(100, 8 * KIB);
        writer.file(
            &fingerprint.join(format!("dep-lib-{name}")),
            size,
            Content::ObjectCode,
            0o644,
        )?;
        writer.file(
            &fingerprint.join("invoked.timestamp"),
            48,
            Content::Text,
            0o644,
        )?;

        let deps = release.join("deps");
        let size = writer.rng.between(256, 8 * KIB);
        writer.file(
            &deps.join(format!("{name}-{hash}.d")),
            size,
            Content::Text,
            0o644,
        )?;
        for extension in ["rmeta", "rlib"] {
            let size = writer.rng.between(16 * KIB, 512 * KIB);
            writer.file(
                &deps.join(format!("lib{name}-{hash}.{extension}")),
                size,
                Content::ObjectCode,
                0o644,
            )?;
        }

        if writer.rng.chance(0.3) {
            let script = release
                .join("build")
                .join(format!("{name}-{}", writer.hex(16)));
            let size = writer.rng.between(256 * KIB, MIB);
            writer.file(
                &script.join("build-script-build"),
                size,
                Content::ObjectCode,
                0o755,
            )?;
            let run = release
                .join("build")
                .join(format!("{name}-{}", writer.hex(16)));
            let size = writer.rng.between(0, 2 * KIB);
            writer.file(&run.join("output"), size, Content::Text, 0o644)?;
            writer.file(&run.join("stderr"), 0, Content::Text, 0o644)?;
            let size = writer.rng.between(60, 120);
            writer.file(&run.join("root-output"), size, Content::Text, 0o644)?;
            writer.file(&run.join("invoked.timestamp"), 48, Content::Text, 0o644)?;
            // `out/` is often empty: a restore must bring empty folders back too.
            fs::create_dir_all(run.join("out"))?;
            for _ in 0..writer.rng.below(4) {
                let file = format!("{}.rs", writer.text.identifier(&mut writer.rng));
                let size = writer.rng.between(KIB, 64 * KIB);
                writer.file(&run.join("out").join(file), size, Content::Text, 0o644)?;
            }
        }
    }
    for index in 0..big_binaries {
        let name = writer.crate_name();
        let path = if index % 2 == 0 {
            release.join(&name)
        } else {
            release
                .join("deps")
                .join(format!("{name}-{}", writer.hex(16)))
        };
        let size = writer.rng.between(10 * MIB, 50 * MIB);
        writer.file(&path, size, Content::Random, 0o755)?;
    }
    Ok(())
}

/// Folders a package's files go in; a package uses a few of them.
const PACKAGE_FOLDERS: &[&str] = &[
    "lib",
    "dist",
    "src",
    "lib/internal",
    "lib/internal/utils",
    "dist/esm",
    "dist/cjs",
    "dist/esm/internal/helpers",
    "types",
    "build/Release/obj",
];

const SOURCE_EXTENSIONS: &[&str] = &[
    ".js", ".js", ".js", ".mjs", ".cjs", ".d.ts", ".js.map", ".json",
];

fn node_modules_like(writer: &mut Writer, root: &Path, scale: f64) -> io::Result<()> {
    let wanted_files = scaled(60_000, scale);
    // A handful of licence texts shared by many packages: identical files, as in real trees.
    let licenses: Vec<Vec<u8>> = (0..6)
        .map(|_| {
            let mut text = Vec::new();
            let size = writer.rng.between(1000, 1200) as usize;
            writer.text.write(&mut writer.rng, &mut text, size);
            text
        })
        .collect();
    let size = writer.rng.between(64 * KIB, 512 * KIB);
    writer.file(&root.join(".package-lock.json"), size, Content::Text, 0o644)?;

    let mut packages: Vec<(PathBuf, u32)> = Vec::new();
    let mut claimed: HashSet<PathBuf> = HashSet::new();
    while writer.generated.files < wanted_files {
        let mut name = writer.crate_name().replace('_', "-");
        if writer.rng.chance(0.1) {
            name = format!(
                "@{}/{name}",
                writer.text.identifier(&mut writer.rng).to_lowercase()
            );
        }
        // A quarter of packages are nested in another's node_modules, up to four deep.
        let (dir, depth) = match packages.len() {
            0 => (root.join(&name), 0),
            count if writer.rng.chance(0.25) => {
                let (parent, depth) = &packages[writer.rng.below(count as u64) as usize];
                if *depth < 4 {
                    (parent.join("node_modules").join(&name), depth + 1)
                } else {
                    (root.join(&name), 0)
                }
            }
            _ => (root.join(&name), 0),
        };
        if !claimed.insert(dir.clone()) {
            continue;
        }
        let size = writer.rng.between(512, 3 * KIB);
        writer.file(&dir.join("package.json"), size, Content::Text, 0o644)?;
        let size = writer.small_text_size();
        writer.file(&dir.join("README.md"), size, Content::Text, 0o644)?;
        let license = writer.rng.below(licenses.len() as u64) as usize;
        writer.exact(&dir.join("LICENSE"), &licenses[license])?;

        let folder_count = writer.rng.between(1, 5);
        let folders: Vec<&str> = (0..folder_count)
            .map(|_| PACKAGE_FOLDERS[writer.rng.below(PACKAGE_FOLDERS.len() as u64) as usize])
            .collect();
        let unit = writer.rng.unit();
        let file_count = 3 + (unit * unit * 90.0) as u64;
        for index in 0..file_count {
            let folder = folders[writer.rng.below(folders.len() as u64) as usize];
            let extension =
                SOURCE_EXTENSIONS[writer.rng.below(SOURCE_EXTENSIONS.len() as u64) as usize];
            let stem = writer.text.identifier(&mut writer.rng);
            let size = writer.small_text_size();
            writer.file(
                &dir.join(folder).join(format!("{stem}{index}{extension}")),
                size,
                Content::Text,
                0o644,
            )?;
        }

        let command = name.rsplit('/').next().unwrap_or(&name).to_string();
        let bin_link = root.join(".bin").join(&command);
        if writer.rng.chance(0.1) && claimed.insert(bin_link.clone()) {
            let size = writer.small_text_size();
            writer.file(&dir.join("bin/cli.js"), size, Content::Text, 0o755)?;
            let relative = dir.strip_prefix(root).unwrap_or(&dir);
            writer.symlink(
                &Path::new("..").join(relative).join("bin/cli.js"),
                &bin_link,
            )?;
        }
        packages.push((dir, depth));
    }
    Ok(())
}

/// What a file holds, which decides how well it compresses.
#[derive(Clone, Copy, Debug)]
enum Content {
    /// Random bytes: a linked binary's code and data compress little, and these not at all.
    Random,
    /// Blocks of random bytes, zeros and symbol-table-like text, as in `.rlib` and `.o` files.
    ObjectCode,
    /// Source-like text: identifiers, punctuation, indentation, the odd base64 line.
    Text,
}

/// Bytes generated and written per step.
const CHUNK: usize = 1 << 20;

struct Writer {
    rng: SplitMix64,
    text: TextSource,
    buffer: Vec<u8>,
    generated: Generated,
    /// Every path written so far.
    taken: HashSet<PathBuf>,
    /// The tree's root: nothing is written outside it.
    root: PathBuf,
}

impl Writer {
    /// `path`, or when a file was already written there (two random names can meet), the
    /// first free `path-2`, `path-3`…: a file is never overwritten, so the counts are exact.
    fn claim(&mut self, path: &Path) -> io::Result<PathBuf> {
        // Names come from generated words: make sure none ever leads out of the tree.
        let inside = path.starts_with(&self.root)
            && path.strip_prefix(&self.root).is_ok_and(|relative| {
                relative
                    .components()
                    .all(|part| matches!(part, Component::Normal(_)))
            });
        if !inside {
            return Err(io::Error::other(format!(
                "the generator made a path outside {}: {}",
                self.root.display(),
                path.display()
            )));
        }
        let mut candidate = path.to_path_buf();
        let mut suffix = 2;
        while self.taken.contains(&candidate) {
            let mut name = path.as_os_str().to_owned();
            name.push(format!("-{suffix}"));
            candidate = PathBuf::from(name);
            suffix += 1;
        }
        self.taken.insert(candidate.clone());
        Ok(candidate)
    }

    fn file(&mut self, path: &Path, size: u64, content: Content, mode: u32) -> io::Result<()> {
        let path = &self.claim(path)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut file = File::create(path)?;
        let mut left = size;
        while left > 0 {
            let step = left.min(CHUNK as u64) as usize;
            self.buffer.clear();
            match content {
                Content::Random => {
                    self.buffer.resize(step, 0);
                    self.rng.fill(&mut self.buffer);
                }
                Content::ObjectCode => {
                    object_code(&mut self.rng, &self.text, &mut self.buffer, step)
                }
                Content::Text => self.text.write(&mut self.rng, &mut self.buffer, step),
            }
            file.write_all(&self.buffer)?;
            left -= step as u64;
        }
        // Set explicitly so that the tree does not depend on the umask.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        self.generated.files += 1;
        self.generated.bytes += size;
        Ok(())
    }

    fn exact(&mut self, path: &Path, content: &[u8]) -> io::Result<()> {
        let path = &self.claim(path)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(path, content)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o644))?;
        self.generated.files += 1;
        self.generated.bytes += content.len() as u64;
        Ok(())
    }

    fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()> {
        let link = &self.claim(link)?;
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent)?;
        }
        symlink(target, link)?;
        self.generated.symlinks += 1;
        Ok(())
    }

    /// A size between 1 and 20 KiB, most of them small (the mean is near 5 KiB).
    fn small_text_size(&mut self) -> u64 {
        KIB + (19.0 * KIB as f64 * self.rng.unit().powf(3.5)) as u64
    }

    fn crate_name(&mut self) -> String {
        const PARTS: &[&str] = &[
            "serde", "de", "tokio", "util", "hyper", "tracing", "futures", "log", "regex", "syn",
            "quote", "proc", "macro", "http", "bytes", "ring", "json", "yaml", "url", "mio",
            "libc", "sha2", "blake3", "hash", "index", "map", "once", "cell", "lazy", "static",
            "parking", "lot", "small", "vec", "chrono", "time", "uuid", "glob", "walk", "dir",
            "temp", "file", "clap", "term", "color", "core", "derive", "impl", "sys", "rt",
        ];
        let count = self.rng.between(1, 3);
        (0..count)
            .map(|_| PARTS[self.rng.below(PARTS.len() as u64) as usize])
            .collect::<Vec<_>>()
            .join("_")
    }

    fn hex(&mut self, length: usize) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        (0..length)
            .map(|_| char::from(DIGITS[self.rng.below(16) as usize]))
            .collect()
    }
}

/// `size` bytes of object-code-like content: 4 KiB blocks, each random, zero or text.
fn object_code(rng: &mut SplitMix64, text: &TextSource, out: &mut Vec<u8>, size: usize) {
    const BLOCK: usize = 4096;
    let start = out.len();
    while out.len() - start < size {
        let step = BLOCK.min(size - (out.len() - start));
        let roll = rng.unit();
        if roll < 0.45 {
            let from = out.len();
            out.resize(from + step, 0);
            rng.fill(&mut out[from..]);
        } else if roll < 0.6 {
            out.resize(out.len() + step, 0);
        } else {
            text.write(rng, out, step);
        }
    }
}

/// Words to write text from: a kind's keywords and a few hundred made-up identifiers.
struct TextSource {
    words: Vec<String>,
    /// How many of `words` are keywords; the rest are identifiers.
    keywords: usize,
}

impl TextSource {
    fn new(rng: &mut SplitMix64, kind: InputKind) -> TextSource {
        const JS: &[&str] = &[
            "function",
            "const",
            "return",
            "var",
            "let",
            "if",
            "else",
            "this",
            "require",
            "module",
            "exports",
            "undefined",
            "null",
            "typeof",
            "new",
            "prototype",
            "=>",
            "async",
            "await",
            "import",
            "from",
            "export",
            "default",
            "true",
            "false",
        ];
        const RUST: &[&str] = &[
            "/home/runner/work",
            "src",
            "lib.rs",
            "mod.rs",
            "release",
            "deps",
            "rlib",
            "rmeta",
            "fn",
            "pub",
            "impl",
            "struct",
            "\"rustc\"",
            "\"features\"",
            "\"target\"",
            "\"profile\"",
            "\"path\"",
            "\"deps\"",
            "\"local\"",
            "\"rustflags\"",
            "\"config\"",
        ];
        const SYLLABLES: &[&str] = &[
            "get", "set", "value", "node", "item", "list", "map", "parse", "read", "write", "call",
            "error", "state", "option", "handle", "buffer", "stream", "event", "key", "path",
            "config", "index", "token", "scope", "module", "cache", "data", "type",
        ];
        let keywords = match kind {
            InputKind::TargetLike => RUST,
            InputKind::NodeModulesLike => JS,
        };
        let mut words: Vec<String> = keywords.iter().map(|word| (*word).to_string()).collect();
        for _ in 0..600 {
            let parts = rng.between(1, 3);
            let mut word = String::new();
            for part in 0..parts {
                let syllable = SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize];
                if part == 0 {
                    word.push_str(syllable);
                } else {
                    let mut chars = syllable.chars();
                    if let Some(first) = chars.next() {
                        word.extend(first.to_uppercase());
                        word.push_str(chars.as_str());
                    }
                }
            }
            words.push(word);
        }
        TextSource {
            words,
            keywords: keywords.len(),
        }
    }

    /// A made-up identifier (letters only, so it is safe as a file name), common ones far
    /// more often than rare ones.
    fn identifier(&self, rng: &mut SplitMix64) -> String {
        let identifiers = &self.words[self.keywords..];
        let unit = rng.unit();
        let index = (unit * unit * identifiers.len() as f64) as usize;
        identifiers[index.min(identifiers.len() - 1)].clone()
    }

    /// Appends exactly `size` bytes of text to `out`.
    fn write(&self, rng: &mut SplitMix64, out: &mut Vec<u8>, size: usize) {
        const SEPARATORS: &[&str] = &[
            " ", " ", " ", "(", ")", ".", ", ", "; ", " = ", " {", "}", ": ",
        ];
        const BASE64: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let start = out.len();
        while out.len() - start < size {
            if rng.chance(0.02) {
                // A source-map or hash line: compresses far worse than code.
                for _ in 0..rng.between(60, 200) {
                    out.push(BASE64[rng.below(64) as usize]);
                }
            } else {
                for _ in 0..rng.below(5) {
                    out.extend_from_slice(b"  ");
                }
                for _ in 0..rng.between(2, 10) {
                    let unit = rng.unit();
                    let index = (unit * unit * unit * self.words.len() as f64) as usize;
                    out.extend_from_slice(self.words[index.min(self.words.len() - 1)].as_bytes());
                    out.extend_from_slice(
                        SEPARATORS[rng.below(SEPARATORS.len() as u64) as usize].as_bytes(),
                    );
                }
            }
            out.push(b'\n');
        }
        out.truncate(start + size);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::fingerprint::TreeFingerprint;

    #[test]
    fn the_same_seed_writes_the_same_tree_and_another_seed_does_not() {
        let temp = tempfile::tempdir().unwrap();
        for kind in InputKind::ALL {
            let a = temp.path().join(format!("{}-a", kind.label()));
            let b = temp.path().join(format!("{}-b", kind.label()));
            let c = temp.path().join(format!("{}-c", kind.label()));
            let generated_a = generate(kind, &a, 0.01, 42).unwrap();
            let generated_b = generate(kind, &b, 0.01, 42).unwrap();
            generate(kind, &c, 0.01, 43).unwrap();
            assert_eq!(generated_a, generated_b);
            let fingerprint_a = TreeFingerprint::of(&a).unwrap();
            assert_eq!(fingerprint_a, TreeFingerprint::of(&b).unwrap());
            assert_ne!(
                fingerprint_a.digest,
                TreeFingerprint::of(&c).unwrap().digest
            );
            assert_eq!(fingerprint_a.files, generated_a.files);
            assert_eq!(fingerprint_a.bytes, generated_a.bytes);
            assert_eq!(fingerprint_a.symlinks, generated_a.symlinks);
        }
    }

    #[test]
    fn kinds_are_read_from_their_label_or_folder() {
        assert_eq!(InputKind::parse("target"), Some(InputKind::TargetLike));
        assert_eq!(
            InputKind::parse("node_modules-like"),
            Some(InputKind::NodeModulesLike)
        );
        assert_eq!(InputKind::parse("vendor"), None);
    }

    /// A keyword such as `/home/runner/work` once became a file name and was written
    /// outside the tree; names are made of identifiers only, and paths outside are refused.
    #[test]
    fn names_are_identifiers_and_never_leave_the_tree() {
        for kind in InputKind::ALL {
            let mut rng = SplitMix64::new(9);
            let text = TextSource::new(&mut rng, kind);
            for _ in 0..10_000 {
                let name = text.identifier(&mut rng);
                assert!(
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphabetic()),
                    "{name}"
                );
            }
        }
        let temp = tempfile::tempdir().unwrap();
        let mut rng = SplitMix64::new(1);
        let text = TextSource::new(&mut rng, InputKind::TargetLike);
        let mut writer = Writer {
            rng,
            text,
            buffer: Vec::new(),
            generated: Generated::default(),
            taken: HashSet::new(),
            root: temp.path().join("tree"),
        };
        for outside in ["/etc/x", "tree/../x", "elsewhere/x"] {
            let path = temp.path().join(outside);
            assert!(
                writer.file(&path, 1, Content::Text, 0o644).is_err(),
                "{outside}"
            );
        }
        assert!(!temp.path().join("x").exists() && !temp.path().join("elsewhere").exists());
    }

    #[test]
    fn text_is_exactly_as_long_as_asked() {
        let mut rng = SplitMix64::new(3);
        let text = TextSource::new(&mut rng, InputKind::NodeModulesLike);
        for size in [0, 1, 17, 4096, 100_000] {
            let mut out = b"prefix".to_vec();
            text.write(&mut rng, &mut out, size);
            assert_eq!(out.len(), 6 + size);
        }
        let mut out = Vec::new();
        object_code(&mut rng, &text, &mut out, 10_000);
        assert_eq!(out.len(), 10_000);
    }
}
