//! `agents-throughput`: how close three `sorat agent`s get to the ideal on a queue of runs.
//!
//! It starts `sorat up` without its local agent, with a project whose pipeline is a small
//! DAG: job `a`, then `b` and `c` (both `needs: a`), each one step `sleep <--sleep>`. It
//! queues `--runs` manual runs (default 100) while no agent is connected, then starts
//! `--agents` `sorat agent` processes (default 3, capacity 1 each) and measures the wall time
//! from starting them to the last run's end (`finished_at` of the last run, server clock).
//! The time includes the agents' start and each agent's first fetch of the repository.
//!
//! The ideal: with capacity-1 agents, every job holds one agent for at least its sleep, so no
//! schedule finishes before `runs × jobs × sleep ÷ agents` (300 × 0.1 s ÷ 3 = 10 s at the
//! defaults); the DAG's critical path (`2 × sleep` per run) is shorter than that with 100 runs
//! in the queue, so it does not bind. (Summing each run's critical path and dividing by the
//! agents, 100 × 0.2 s ÷ 3 = 6.7 s, is not reachable: `b` and `c` run at once only on two
//! agents, so a run still takes three agent-sleeps.) It also prints a second ideal from what
//! the jobs measured: the sum of every job's claim-to-finish time ÷ agents, which counts each
//! job's own overhead (workspace, shell, reporting) and leaves only the agents' idle time
//! between jobs as the loss. Efficiency = ideal ÷ measured.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark's report is its output, and its progress goes to standard error"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::Value;
use sorat_bench::command::first_line;
use sorat_bench::report::{Table, millis, seconds};
use sorat_bench::server::{AgentProcess, Server, ServerSpec, init_repo, now_millis};

/// Times a queue of DAG runs on `sorat agent` processes against the ideal.
#[derive(Parser, Debug)]
#[command(name = "agents-throughput")]
struct Args {
    /// The `sorat` binary (build it with `cargo build --release -p sorat`).
    #[arg(long, default_value = "target/release/sorat")]
    sorat: PathBuf,
    /// Runs queued before the agents start.
    #[arg(long, default_value_t = 100)]
    runs: usize,
    /// `sorat agent` processes, capacity 1 each.
    #[arg(long, default_value_t = 3)]
    agents: u32,
    /// Seconds each job's step sleeps.
    #[arg(long, default_value_t = 0.1)]
    sleep: f64,
    /// `sqlite` (default) or a `postgres://` URL for the server's state.
    #[arg(long)]
    database: Option<String>,
    /// Where to work: a temporary folder is made in it and removed at the end.
    #[arg(long, env = "SORAT_BENCH_DIR", default_value_os_t = std::env::temp_dir())]
    work_dir: PathBuf,
}

const PROJECT: &str = "dag";
const JOBS_PER_RUN: usize = 3;

/// One job as the server recorded it.
#[derive(Clone, Debug)]
struct JobTimes {
    agent: String,
    claimed: i64,
    finished: i64,
    step_started: i64,
    step_finished: i64,
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("agents-throughput: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    if args.runs == 0 || args.runs > 500 || args.agents == 0 {
        bail!("--runs must be from 1 to 500 and --agents at least 1");
    }
    if !args.sleep.is_finite() || args.sleep < 0.0 {
        bail!("--sleep must be a number of seconds, 0 or more");
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
        .prefix("agents-throughput-")
        .tempdir_in(&args.work_dir)
        .with_context(|| format!("creating a folder in {}", args.work_dir.display()))?;
    let dir = temp.path();
    let sleep = format!("{}", args.sleep);
    let pipeline = format!(
        "on:\n  push:\n    branches: [main]\njobs:\n  a:\n    steps:\n      - run: sleep {sleep}\n  b:\n    needs: a\n    steps:\n      - run: sleep {sleep}\n  c:\n    needs: a\n    steps:\n      - run: sleep {sleep}\n"
    );
    let repo = dir.join("repo");
    init_repo(&repo, &pipeline)?;
    let spec = ServerSpec {
        sorat: sorat.clone(),
        dir: dir.to_path_buf(),
        server_yaml: "  local_agent: { enabled: false }".to_string(),
        projects_yaml: format!("  - name: {PROJECT}\n    repo: {}\n", repo.display()),
        database: args.database.clone(),
    };
    let mut server = Server::start(&spec)?;
    let api = server.admin()?;

    eprintln!("queueing {} runs", args.runs);
    let queueing = Instant::now();
    let mut ids = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        ids.push(api.trigger(PROJECT)?);
    }
    let queue_time = queueing.elapsed();
    let tokens: Vec<String> = (1..=args.agents)
        .map(|n| api.agent_token(&format!("bench-agent-{n}")))
        .collect::<anyhow::Result<_>>()?;

    eprintln!("starting {} agents", args.agents);
    let started_millis = now_millis();
    let started = Instant::now();
    let mut agents = Vec::new();
    for (n, token) in (1..=args.agents).zip(&tokens) {
        agents.push(AgentProcess::start(
            &sorat,
            &server.url,
            token,
            &format!("agent-{n}"),
            1,
            dir,
        )?);
    }
    let ideal_sleeps = Duration::from_secs_f64(
        args.sleep * (args.runs * JOBS_PER_RUN) as f64 / f64::from(args.agents),
    );
    let within = ideal_sleeps * 10 + Duration::from_secs(120);
    let limit = args.runs.max(1);
    loop {
        let (status, list) = api.get(&format!("/api/v1/runs?project={PROJECT}&limit={limit}"))?;
        if status != 200 {
            bail!("listing runs: HTTP {status}: {list}");
        }
        let runs = list["runs"].as_array().cloned().unwrap_or_default();
        if let Some(bad) = runs
            .iter()
            .find(|run| matches!(run["status"].as_str(), Some("failure" | "cancelled")))
        {
            let detail = api.run(bad["id"].as_i64().unwrap_or(0))?;
            bail!("a run did not succeed: {detail}\n{}", agents_logs(&agents));
        }
        let done = runs.iter().filter(|run| run["status"] == "success").count();
        if done == args.runs {
            break;
        }
        if started.elapsed() > within {
            bail!(
                "only {done} of {} runs ended within {within:?}\n{}",
                args.runs,
                agents_logs(&agents)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let polled = started.elapsed();
    for agent in &mut agents {
        agent.stop()?;
    }

    let mut jobs = Vec::new();
    let mut last_finished = started_millis;
    for id in &ids {
        let run = api.run(*id)?;
        last_finished = last_finished.max(run["finished_at"].as_i64().unwrap_or(0));
        for job in run["jobs"].as_array().into_iter().flatten() {
            jobs.push(job_times(job).with_context(|| format!("run {id}: {job}"))?);
        }
    }
    server.stop()?;
    let wall = Duration::from_millis(u64::try_from(last_finished - started_millis).unwrap_or(0));
    print_report(args, &sorat, queue_time, wall, polled, &jobs);
    Ok(())
}

fn job_times(job: &Value) -> anyhow::Result<JobTimes> {
    let agent = job["agent"].as_str().context("no agent")?.to_string();
    let claimed = job["started_at"].as_i64().context("no started_at")?;
    let finished = job["finished_at"].as_i64().context("no finished_at")?;
    let step = &job["steps"][0];
    let step_started = step["started_at"].as_i64().context("no step started_at")?;
    let step_finished = step["finished_at"]
        .as_i64()
        .context("no step finished_at")?;
    Ok(JobTimes {
        agent,
        claimed,
        finished,
        step_started,
        step_finished,
    })
}

fn agents_logs(agents: &[AgentProcess]) -> String {
    agents
        .iter()
        .map(|agent| format!("--- {}:\n{}", agent.name, agent.log_tail()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ms(millis: i64) -> Duration {
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

fn print_report(
    args: &Args,
    sorat: &Path,
    queue_time: Duration,
    wall: Duration,
    polled: Duration,
    jobs: &[JobTimes],
) {
    let agents = f64::from(args.agents);
    let job_count = jobs.len();
    let sleeps = Duration::from_secs_f64(args.sleep * job_count as f64 / agents);
    let critical = Duration::from_secs_f64(2.0 * args.sleep);
    let ideal_sleeps = sleeps.max(critical);
    let per_run_critical = Duration::from_secs_f64(args.runs as f64 * 2.0 * args.sleep / agents);
    let job_total: Duration = jobs.iter().map(|job| ms(job.finished - job.claimed)).sum();
    let step_total: Duration = jobs
        .iter()
        .map(|job| ms(job.step_finished - job.step_started))
        .sum();
    let before_step: Duration = jobs
        .iter()
        .map(|job| ms(job.step_started - job.claimed))
        .sum();
    let after_step: Duration = jobs
        .iter()
        .map(|job| ms(job.finished - job.step_finished))
        .sum();
    let ideal_jobs = job_total.div_f64(agents);
    let efficiency = |ideal: Duration| {
        format!(
            "{:.0}%",
            100.0 * ideal.as_secs_f64() / wall.as_secs_f64().max(1e-9)
        )
    };
    let count = u32::try_from(job_count.max(1)).unwrap_or(u32::MAX);

    println!(
        "## {} runs of a → (b, c) on {} agents (capacity 1), steps `sleep {}`\n",
        args.runs, args.agents, args.sleep
    );
    println!(
        "sorat: {} ({}); state: {}; {} runs queued by `POST /api/v1/projects/{PROJECT}/runs` in {} before any agent ran; wall time from starting the agents to the last run's `finished_at` (the poller saw it at {}).\n",
        sorat.display(),
        first_line(&sorat.to_string_lossy(), &["--version"]),
        args.database
            .as_deref()
            .map_or("SQLite", |url| if url.starts_with("postgres") {
                "PostgreSQL"
            } else {
                "SQLite"
            }),
        args.runs,
        seconds(queue_time),
        seconds(polled)
    );
    let mut table = Table::new(&["", "time", "efficiency (ideal ÷ measured)"]);
    table.row(vec![
        "measured wall time".into(),
        seconds(wall),
        String::new(),
    ]);
    table.row(vec![
        format!(
            "ideal from the sleeps: {job_count} jobs × {} s ÷ {} agents",
            args.sleep, args.agents
        ),
        seconds(ideal_sleeps),
        efficiency(ideal_sleeps),
    ]);
    table.row(vec![
        format!(
            "ideal from the jobs' own times: Σ claim→finish ÷ {}",
            args.agents
        ),
        seconds(ideal_jobs),
        efficiency(ideal_jobs),
    ]);
    table.row(vec![
        format!("(not reachable) Σ runs' critical paths ÷ {}", args.agents),
        seconds(per_run_critical),
        efficiency(per_run_critical),
    ]);
    println!("{}", table.render());

    let mut per_job = Table::new(&["per job (mean)", "time"]);
    per_job.row(vec![
        "claimed → finished (server)".into(),
        millis(job_total / count),
    ]);
    per_job.row(vec![
        "its step (agent's clock)".into(),
        millis(step_total / count),
    ]);
    per_job.row(vec![
        "job overhead beyond the step".into(),
        millis(job_total.saturating_sub(step_total) / count),
    ]);
    per_job.row(vec![
        "— of it, claimed → step started".into(),
        millis(before_step / count),
    ]);
    per_job.row(vec![
        "— of it, step finished → job finished".into(),
        millis(after_step / count),
    ]);
    let mut by_agent: BTreeMap<&str, Vec<&JobTimes>> = BTreeMap::new();
    for job in jobs {
        by_agent.entry(job.agent.as_str()).or_default().push(job);
    }
    let mut gaps = Vec::new();
    let mut agents_table = Table::new(&[
        "agent",
        "jobs",
        "busy (Σ claim→finish)",
        "busy share of wall",
        "mean gap finish→next claim",
    ]);
    for (agent, mut list) in by_agent {
        list.sort_by_key(|job| job.claimed);
        let busy: Duration = list.iter().map(|job| ms(job.finished - job.claimed)).sum();
        let agent_gaps: Vec<Duration> = list
            .windows(2)
            .map(|pair| ms(pair[1].claimed - pair[0].finished))
            .collect();
        let gap_count = u32::try_from(agent_gaps.len().max(1)).unwrap_or(u32::MAX);
        let mean_gap = agent_gaps.iter().sum::<Duration>() / gap_count;
        gaps.extend(agent_gaps);
        agents_table.row(vec![
            agent.to_string(),
            list.len().to_string(),
            seconds(busy),
            format!(
                "{:.0}%",
                100.0 * busy.as_secs_f64() / wall.as_secs_f64().max(1e-9)
            ),
            millis(mean_gap),
        ]);
    }
    let gap_count = u32::try_from(gaps.len().max(1)).unwrap_or(u32::MAX);
    per_job.row(vec![
        "agent idle between jobs (finish → next claim)".into(),
        millis(gaps.iter().sum::<Duration>() / gap_count),
    ]);
    println!("{}", per_job.render());
    println!("{}", agents_table.render());
    println!("No peer: the ideal above is the reference (a scheduler with no overhead at all).");
}
