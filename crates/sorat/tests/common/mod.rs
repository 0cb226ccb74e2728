//! Helpers for the end-to-end tests: a real git repository in a temporary folder, the real
//! `sorat` binary run against it, and readers for what a run leaves behind (its JSON record,
//! its zstd logs, its processes).
//!
//! Every test owns its own [`Project`]: its repository, its `--data` folder and a scratch
//! folder outside every workspace (steps find it as `$SCRATCH`), so tests never share state
//! and can run in parallel.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any one `sorat` invocation may take before the test gives up on it. This guards
/// against hangs; no test asserts on how long anything took.
pub(crate) const DEADLINE: Duration = Duration::from_secs(240);

/// The `sorat` binary under test.
pub(crate) fn sorat_binary() -> &'static str {
    env!("CARGO_BIN_EXE_sorat")
}

/// What a finished command printed and how it exited.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The exit code (-1 when killed by a signal).
    pub(crate) code: i32,
    /// Standard output.
    pub(crate) stdout: String,
    /// Standard error.
    pub(crate) stderr: String,
}

impl Outcome {
    /// Standard output and standard error together, for "never printed anywhere" checks.
    pub(crate) fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// The step output lines `sorat run` showed (`<time> [<job>] | <line>`, on standard
    /// output in plain mode and on standard error with `--output json`), without their prefix.
    pub(crate) fn shown_lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .chain(self.stderr.lines())
            .filter_map(|line| line.split_once("] | ").map(|(_, rest)| rest))
            .collect()
    }

    /// Whether a step output line equal to `line` was shown.
    pub(crate) fn showed(&self, line: &str) -> bool {
        self.shown_lines().contains(&line)
    }

    /// Fails the test with both streams when the exit code is not `expected`.
    pub(crate) fn expect_code(&self, expected: i32) -> &Outcome {
        assert_eq!(
            self.code, expected,
            "expected exit code {expected}, got {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Reads a child's pipes on threads and waits for it, killing it at [`DEADLINE`].
pub(crate) fn finish(mut child: Child) -> Outcome {
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out_thread = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let err_thread = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for sorat") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sorat did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_thread.join().expect("stdout reader");
    let stderr = err_thread.join().expect("stderr reader");
    Outcome {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// A git repository with a pipeline, a data folder and a scratch folder, all temporary.
pub(crate) struct Project {
    /// Owns every folder below; removed when the test ends.
    pub(crate) temp: tempfile::TempDir,
    /// The repository's work tree.
    pub(crate) repo: PathBuf,
    /// The `--data` folder of every run.
    pub(crate) data: PathBuf,
    /// A folder outside the repository and every workspace, `$SCRATCH` in steps.
    pub(crate) scratch: PathBuf,
}

impl Project {
    /// An empty repository on branch `main`, without a commit.
    pub(crate) fn empty() -> Project {
        let temp = tempfile::tempdir().expect("temp dir");
        let repo = temp.path().join("repo");
        let data = temp.path().join("data");
        let scratch = temp.path().join("scratch");
        for dir in [&repo, &scratch] {
            std::fs::create_dir_all(dir).expect("create dir");
        }
        let project = Project {
            temp,
            repo,
            data,
            scratch,
        };
        project.git(&["init", "-q", "-b", "main"]);
        project
    }

    /// A repository whose first commit holds `.sorat/pipeline.yaml` with `pipeline`.
    pub(crate) fn new(pipeline: &str) -> Project {
        Project::with_files(pipeline, &[])
    }

    /// Like [`Project::new`], with more files in the first commit.
    pub(crate) fn with_files(pipeline: &str, files: &[(&str, &str)]) -> Project {
        let project = Project::empty();
        project.write(".sorat/pipeline.yaml", pipeline);
        for (path, content) in files {
            project.write(path, content);
        }
        project.commit("first");
        project
    }

    /// Writes a file of the work tree, creating its folders.
    pub(crate) fn write(&self, relative: &str, content: &str) {
        let path = self.repo.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(&path, content).expect("write file");
    }

    /// Commits everything in the work tree.
    pub(crate) fn commit(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            message,
        ]);
    }

    /// Runs git in the repository and returns its trimmed output.
    pub(crate) fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(args)
            .output()
            .expect("run git");
        assert!(
            output.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// The `HEAD` commit.
    pub(crate) fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// A `sorat` command in the repository, with `$SCRATCH` set for the steps.
    pub(crate) fn sorat(&self, args: &[&str]) -> Command {
        let mut command = Command::new(sorat_binary());
        command
            .args(args)
            .current_dir(&self.repo)
            .env("SCRATCH", &self.scratch)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// `sorat run <repo> --data <data> ARGS` to its end (plain output, as stdout is a pipe).
    pub(crate) fn run(&self, args: &[&str]) -> Outcome {
        let repo = self.repo.display().to_string();
        let data = self.data.display().to_string();
        let mut all = vec!["run", repo.as_str(), "--data", data.as_str()];
        all.extend_from_slice(args);
        finish(self.sorat(&all).spawn().expect("start sorat"))
    }

    /// `sorat run … --output json ARGS`, and the record it printed.
    pub(crate) fn run_json(&self, args: &[&str]) -> (Outcome, Value) {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let outcome = self.run(&all);
        let record = serde_json::from_str(&outcome.stdout).unwrap_or_else(|error| {
            panic!(
                "stdout is not a JSON record ({error}); exit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                outcome.code, outcome.stdout, outcome.stderr
            )
        });
        (outcome, record)
    }

    /// The folder of run `id`.
    pub(crate) fn run_dir(&self, id: u64) -> PathBuf {
        self.data.join("runs").join(id.to_string())
    }

    /// The record a run stored in `<data>/runs/<id>/run.json`.
    pub(crate) fn stored_record(&self, id: u64) -> Value {
        let path = self.run_dir(id).join("run.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        serde_json::from_str(&text).expect("run.json is JSON")
    }

    /// Every stored log file of every run, with as much of its text as can be decompressed
    /// (an unfinished zstd frame still yields what it holds: for "never written to disk"
    /// checks, what is on disk matters, finished or not).
    pub(crate) fn all_logs(&self) -> Vec<(PathBuf, String)> {
        let mut found = Vec::new();
        collect_logs(&self.data.join("runs"), &mut found);
        found.sort();
        found
    }

    /// A file in the scratch folder.
    pub(crate) fn scratch_file(&self, name: &str) -> PathBuf {
        self.scratch.join(name)
    }

    /// The text of a scratch file, or an empty string when it does not exist.
    pub(crate) fn read_scratch(&self, name: &str) -> String {
        std::fs::read_to_string(self.scratch_file(name)).unwrap_or_default()
    }
}

fn collect_logs(dir: &Path, found: &mut Vec<(PathBuf, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_logs(&path, found);
        } else if path.to_string_lossy().ends_with(".log.zst") {
            let text = read_log_lossy(&path);
            found.push((path, text));
        }
    }
}

/// A stored log, decompressed: one `timestamp line` per line.
pub(crate) fn read_log(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let text = zstd::decode_all(bytes.as_slice())
        .unwrap_or_else(|error| panic!("{} is not zstd: {error}", path.display()));
    String::from_utf8(text).expect("a log is UTF-8")
}

/// As much of a stored log as decompresses, whether or not its zstd frame was finished.
pub(crate) fn read_log_lossy(path: &Path) -> String {
    let file =
        std::fs::File::open(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let mut text = Vec::new();
    if let Ok(mut decoder) = zstd::Decoder::new(file) {
        let mut buffer = [0u8; 64 * 1024];
        while let Ok(n) = decoder.read(&mut buffer) {
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buffer[..n]);
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The lines of a stored log without their timestamps.
pub(crate) fn log_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(|line| line.split_once(' ').map_or("", |(_, rest)| rest))
        .collect()
}

/// The job record named `name` (the display name, `test (1)` for a matrix instance).
pub(crate) fn job<'a>(record: &'a Value, name: &str) -> &'a Value {
    let jobs = record["jobs"].as_array().expect("`jobs` is a list");
    jobs.iter()
        .find(|job| job["name"] == name)
        .unwrap_or_else(|| {
            let names: Vec<&str> = jobs.iter().filter_map(|j| j["name"].as_str()).collect();
            panic!("no job named `{name}` in the record; its jobs are {names:?}")
        })
}

/// The step of `job` whose `id` is `id`.
pub(crate) fn step<'a>(job: &'a Value, id: &str) -> &'a Value {
    let steps = job["steps"].as_array().expect("`steps` is a list");
    steps
        .iter()
        .find(|step| step["id"] == id)
        .unwrap_or_else(|| {
            panic!(
                "no step with id `{id}` in job `{}`; steps: {}",
                job["name"],
                serde_json::to_string_pretty(steps).unwrap_or_default()
            )
        })
}

/// The names of the record's jobs, in order.
pub(crate) fn job_names(record: &Value) -> Vec<String> {
    record["jobs"]
        .as_array()
        .expect("`jobs` is a list")
        .iter()
        .map(|job| job["name"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The state letter of a process (`R`, `S`, `Z`...), or `None` when it does not exist.
fn process_state(stat: &str) -> Option<(char, i32)> {
    // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Whether process `pid` exists and is not a zombie (this machine's init may not reap the
/// orphans a killed step leaves, so a zombie counts as dead).
pub(crate) fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| process_state(&stat))
        .is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// The live (non-zombie) processes of process group `pgid`.
pub(crate) fn group_members(pgid: i32) -> Vec<i32> {
    let mut members = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return members;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some((state, pgrp)) = process_state(&stat)
            && pgrp == pgid
            && state != 'Z'
            && state != 'X'
        {
            members.push(pid);
        }
    }
    members
}

/// Reads a pid a step wrote to a file.
pub(crate) fn read_pid(path: &Path) -> i32 {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{} holds `{text}`, not a pid", path.display()))
}

/// Waits until `path` exists and is not empty; fails the test after [`DEADLINE`].
pub(crate) fn wait_for_file(path: &Path) {
    let started = Instant::now();
    while !std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
        assert!(
            started.elapsed() < DEADLINE,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address").port()
}
