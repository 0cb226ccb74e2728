//! `webhook-latency`: from a signed GitHub push webhook to the run's first step running.
//!
//! It starts `sorat up` (the local agent inside, capacity 4) with one project whose pipeline
//! is one job with one step, `date +%s%N > <stamps>/<run id>`: the step writes the moment
//! its process ran. Then it sends `--webhooks` push deliveries one after another, each
//! with a real HMAC-SHA256 signature, and for each one measures from the moment the POST was
//! sent (the wall clock, read just before) to:
//!
//! - the server's answer (202, the run created and its first job queued);
//! - the job claimed by the agent (the job's `started_at`, server's clock);
//! - the step started (the step's `started_at` from `GET /api/v1/runs/{id}`, set by the
//!   engine just before it spawns the step's shell; milliseconds);
//! - the step's own `date +%s%N` (nanoseconds): the number the target is read on.
//!
//! Everything runs on one machine, so the clocks are one clock. Each delivery waits for its
//! run to end before the next is sent, so runs never overlap. Deliveries come in two kinds:
//! a push of a commit the server has not seen (a new commit is made in the repository just
//! before the POST, untimed, as a push would; the server and the agent must each fetch it)
//! and a re-delivery of a commit both already have. Five of each kind are sent first and
//! not counted (the first one creates both mirrors).
//!
//! There is no peer in this run: the tool Sorat replaces here (GitHub Actions) is hosted,
//! and its queue time cannot be measured from this machine.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark's report is its output, and its progress goes to standard error"
)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use serde_json::Value;
use sorat_bench::command::first_line;
use sorat_bench::report::{Table, mean, millis, percentile};
use sorat_bench::server::{
    Api, Server, ServerSpec, commit_change, init_repo, now_millis, now_nanos,
};
use sorat_bench::webhook::{github_push, github_signature};

/// Times webhook → first step started on `sorat up` with its local agent.
#[derive(Parser, Debug)]
#[command(name = "webhook-latency")]
struct Args {
    /// The `sorat` binary (build it with `cargo build --release -p sorat`).
    #[arg(long, default_value = "target/release/sorat")]
    sorat: PathBuf,
    /// Timed deliveries of each kind.
    #[arg(long, default_value_t = 200)]
    webhooks: usize,
    /// Which deliveries: pushes of new commits, re-deliveries of a known commit, or both.
    #[arg(long, value_enum, default_value_t = Commits::Both)]
    commits: Commits,
    /// The local agent's capacity.
    #[arg(long, default_value_t = 4)]
    capacity: u32,
    /// Where to work: a temporary folder is made in it and removed at the end.
    #[arg(long, env = "SORAT_BENCH_DIR", default_value_os_t = std::env::temp_dir())]
    work_dir: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Commits {
    New,
    Same,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    NewCommit,
    KnownCommit,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::NewCommit => "new commit",
            Kind::KnownCommit => "known commit",
        }
    }
}

const SECRET: &str = "bench-hook-secret-0123456789";
const PROJECT: &str = "bench";
const TARGET: Duration = Duration::from_millis(50);

/// One delivery's times, each from the moment the POST was sent.
#[derive(Clone, Copy, Debug)]
struct Sample {
    answered: Duration,
    claimed: Duration,
    step_started: Duration,
    step_ran: Duration,
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("webhook-latency: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    if args.webhooks == 0 || args.capacity == 0 {
        bail!("--webhooks and --capacity must be at least 1");
    }
    let sorat = std::path::absolute(&args.sorat)?;
    if !sorat.is_file() {
        bail!(
            "{} is not a file: build it with `cargo build --release -p sorat` or pass --sorat",
            sorat.display()
        );
    }
    std::fs::create_dir_all(&args.work_dir)?;
    let temp = tempfile::Builder::new()
        .prefix("webhook-latency-")
        .tempdir_in(&args.work_dir)
        .with_context(|| format!("creating a folder in {}", args.work_dir.display()))?;
    let dir = temp.path();
    let stamps = dir.join("stamps");
    std::fs::create_dir_all(&stamps)?;
    let pipeline = format!(
        "on:\n  push:\n    branches: [main]\njobs:\n  first:\n    steps:\n      - run: date +%s%N > '{}'/${{{{ github.run_id }}}}\n",
        stamps.display()
    );
    let repo = dir.join("repo");
    let mut head = init_repo(&repo, &pipeline)?;
    let spec = ServerSpec {
        sorat: sorat.clone(),
        dir: dir.to_path_buf(),
        server_yaml: format!("  local_agent: {{ capacity: {} }}", args.capacity),
        projects_yaml: format!(
            "  - name: {PROJECT}\n    repo: {}\n    webhook: {{ secret: '${{{{ secrets.HOOK }}}}' }}\n",
            repo.display()
        ),
        database: None,
    };
    let mut server = Server::start(&spec)?;
    let api = server.admin()?;
    api.set_secret(PROJECT, "HOOK", SECRET)?;

    let kinds: Vec<Kind> = match args.commits {
        Commits::New => vec![Kind::NewCommit],
        Commits::Same => vec![Kind::KnownCommit],
        Commits::Both => vec![Kind::NewCommit, Kind::KnownCommit],
    };
    let mut delivery = 0usize;
    let mut results = Vec::new();
    for kind in kinds {
        let mut samples = Vec::with_capacity(args.webhooks);
        for round in 0..5 + args.webhooks {
            delivery += 1;
            let before = head.clone();
            if kind == Kind::NewCommit || delivery == 1 {
                head = commit_change(&repo, &format!("change {delivery}"))?;
            }
            let sample = deliver(&server, &api, &stamps, delivery, &before, &head)
                .with_context(|| format!("delivery {delivery} ({})", kind.label()))?;
            if round >= 5 {
                samples.push(sample);
            }
            if round % 50 == 49 {
                eprintln!(
                    "{}: {} of {} deliveries",
                    kind.label(),
                    round + 1,
                    5 + args.webhooks
                );
            }
        }
        results.push((kind, samples));
    }
    server.stop()?;
    print_report(args, &sorat, &results);
    Ok(())
}

/// Sends one signed push of `before..after` and waits for its run's step, then its end.
fn deliver(
    server: &Server,
    api: &Api,
    stamps: &Path,
    delivery: usize,
    before: &str,
    after: &str,
) -> anyhow::Result<Sample> {
    let body = github_push("refs/heads/main", before, after, &["change.txt"]);
    let signature = github_signature(SECRET.as_bytes(), &body);
    let request = api
        .http()
        .post(format!("{}/hooks/{PROJECT}", server.url))
        .header("content-type", "application/json")
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", format!("bench-{delivery}"))
        .header("X-Hub-Signature-256", signature)
        .body(body);
    let sent_nanos = now_nanos();
    let sent_millis = now_millis();
    let sent = Instant::now();
    let response = request.send().context("POST /hooks")?;
    let answered = sent.elapsed();
    let status = response.status().as_u16();
    let answer: Value = response.json().unwrap_or(Value::Null);
    let Some(run_id) = answer["run"].as_i64().filter(|_| status == 202) else {
        bail!("the webhook was not accepted: HTTP {status}: {answer}");
    };
    let stamp = stamps.join(run_id.to_string());
    let deadline = Instant::now() + Duration::from_secs(60);
    let ran_nanos = loop {
        if let Ok(text) = std::fs::read_to_string(&stamp)
            && text.ends_with('\n')
            && let Ok(nanos) = text.trim().parse::<i128>()
        {
            break nanos;
        }
        if Instant::now() > deadline {
            bail!(
                "run {run_id}'s step did not write {} within a minute:\n{}",
                stamp.display(),
                server.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let run = api.wait_run(run_id, Duration::from_millis(10), Duration::from_secs(60))?;
    if run["status"] != "success" {
        bail!("run {run_id} ended {}: {run}", run["status"]);
    }
    let job = &run["jobs"][0];
    let (Some(claimed_at), Some(step_started_at)) = (
        job["started_at"].as_i64(),
        job["steps"][0]["started_at"].as_i64(),
    ) else {
        bail!("run {run_id} has no job or step start time: {run}");
    };
    let since =
        |millis: i64| Duration::from_millis(u64::try_from(millis - sent_millis).unwrap_or(0));
    let ran = u64::try_from(ran_nanos - sent_nanos).unwrap_or(0);
    Ok(Sample {
        answered,
        claimed: since(claimed_at),
        step_started: since(step_started_at),
        step_ran: Duration::from_nanos(ran),
    })
}

/// Which time of a sample a table row shows.
type Pick = fn(&Sample) -> Duration;

fn print_report(args: &Args, sorat: &Path, results: &[(Kind, Vec<Sample>)]) {
    println!("## Webhook → first step started (sorat up, local agent)\n");
    println!(
        "sorat: {} ({}); git: {}; {} timed deliveries of each kind, sequential, each after the previous run ended; local agent capacity {}.\n",
        sorat.display(),
        first_line(&sorat.to_string_lossy(), &["--version"]),
        first_line("git", &["--version"]),
        args.webhooks,
        args.capacity
    );
    println!(
        "Times from the webhook POST being sent. The server's times (`started_at`) are whole milliseconds; the step's own time is `date +%s%N`.\n"
    );
    let mut table = Table::new(&[
        "delivery",
        "from POST sent to",
        "p50",
        "p90",
        "p99",
        "max",
        "mean",
    ]);
    for (kind, samples) in results {
        let rows: [(&str, Pick); 4] = [
            ("202 answer", |s| s.answered),
            ("job claimed (server)", |s| s.claimed),
            ("step started (API)", |s| s.step_started),
            ("step's process ran (`date`)", |s| s.step_ran),
        ];
        for (label, pick) in rows {
            let times: Vec<Duration> = samples.iter().map(pick).collect();
            table.row(vec![
                kind.label().to_string(),
                label.to_string(),
                millis(percentile(&times, 0.5)),
                millis(percentile(&times, 0.9)),
                millis(percentile(&times, 0.99)),
                millis(percentile(&times, 1.0)),
                millis(mean(&times)),
            ]);
        }
    }
    println!("{}", table.render());
    for (kind, samples) in results {
        let ran: Vec<Duration> = samples.iter().map(|s| s.step_ran).collect();
        let p50 = percentile(&ran, 0.5);
        println!(
            "Target p50 < {} (POST sent → step's process ran), {}: p50 {} — {}.",
            millis(TARGET),
            kind.label(),
            millis(p50),
            if p50 < TARGET { "met" } else { "not met" }
        );
    }
    println!(
        "\nNo peer: GitHub Actions, the tool replaced here, is hosted, and its webhook-to-job time cannot be measured from this machine."
    );
}
