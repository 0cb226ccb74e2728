//! `api-list`: `GET /api/v1/runs?limit=50` under load, with the state in SQLite and in
//! PostgreSQL, side by side.
//!
//! For each backend it stores `--runs` finished runs (three jobs each) through
//! `sorat_state::Store` — the same calls the server makes, before the server starts — then
//! starts `sorat up` on that database (no local agent, so nothing writes meanwhile), checks
//! that the first page holds 50 runs, warms up for two seconds with `wrk`, and runs `wrk`
//! (`-t2 -c16 -d10s --latency` by default) with the admin token. It prints requests/s, the
//! latency percentiles wrk reports, the server's CPU time per request, and the ratios
//! SQLite ÷ PostgreSQL.
//!
//! PostgreSQL gets a fresh database for the run, created on the server `--postgres` points
//! at (`eval "$(.ci/postgres)"` starts one and sets `SORAT_TEST_POSTGRES`) and dropped at
//! the end. Without one, only SQLite runs.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark's report is its output, and its progress goes to standard error"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::json;
use sorat_bench::command::first_line;
use sorat_bench::report::{Table, millis, seconds};
use sorat_bench::server::{ADMIN_TOKEN, Server, ServerSpec, init_repo, now_millis, process_cpu};
use sorat_state::{JobStatus, NewJob, NewProject, NewRun, RunStatus, SecretKey, Store};
use sqlx::Connection as _;
use sqlx::Executor as _;

/// Times the runs list under `wrk` on SQLite and on PostgreSQL.
#[derive(Parser, Debug)]
#[command(name = "api-list")]
struct Args {
    /// The `sorat` binary (build it with `cargo build --release -p sorat`).
    #[arg(long, default_value = "target/release/sorat")]
    sorat: PathBuf,
    /// Runs stored before the server starts.
    #[arg(long, default_value_t = 10_000)]
    runs: usize,
    /// A PostgreSQL server to make a fresh database on (any database of it works as the
    /// URL's path). Without one, only SQLite is measured.
    #[arg(long, env = "SORAT_TEST_POSTGRES")]
    postgres: Option<String>,
    /// wrk's threads.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// wrk's connections.
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// wrk's duration, in seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// The path requested.
    #[arg(long, default_value = "/api/v1/runs?limit=50")]
    path: String,
    /// Where to work: a temporary folder is made in it and removed at the end.
    #[arg(long, env = "SORAT_BENCH_DIR", default_value_os_t = std::env::temp_dir())]
    work_dir: PathBuf,
}

const PROJECT: &str = "shop";

/// A pipeline of a realistic size (the runs table keeps each run's pipeline text).
const PIPELINE: &str = r#"on:
  push:
    branches: [main, "release/**"]
    paths-ignore: ["docs/**", "*.md"]
  pull_request:
  manual:
    inputs:
      deploy:
        type: boolean
        default: false
concurrency:
  group: shop-${{ github.ref }}
  cancel-in-progress: true
env:
  CARGO_TERM_COLOR: always
  RUST_BACKTRACE: 1
jobs:
  build:
    runs-on: [linux]
    steps:
      - uses: checkout
      - uses: actions/cache@v4
        with:
          path: target
          key: cargo-${{ hashFiles('Cargo.lock') }}
      - run: cargo build --release --locked
      - uses: upload-artifact
        with:
          name: shop
          path: target/release/shop
  test:
    needs: build
    runs-on: [linux]
    strategy:
      matrix:
        partition: [1, 2]
    steps:
      - uses: checkout
      - run: cargo test --locked -- --partition ${{ matrix.partition }}/2
      - uses: junit
        with:
          path: target/junit/*.xml
  scan:
    needs: build
    steps:
      - uses: checkout
      - run: sorat scan secrets . && sorat scan deps . --db /var/lib/osv
"#;

/// One backend's results.
struct Measured {
    backend: &'static str,
    seed_time: Duration,
    response_bytes: usize,
    wrk: WrkResult,
    server_cpu: Option<Duration>,
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("api-list: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    if args.runs < 50 {
        bail!("--runs must be at least 50 (one full page)");
    }
    let sorat = std::path::absolute(&args.sorat)?;
    if !sorat.is_file() {
        bail!(
            "{} is not a file: build it with `cargo build --release -p sorat` or pass --sorat",
            sorat.display()
        );
    }
    let wrk_version = first_line("wrk", &["-v"])
        .split(" [")
        .next()
        .unwrap_or_default()
        .to_string();
    if Command::new("wrk").arg("-v").output().is_err() {
        bail!("wrk is missing: apt-get update && apt-get install -y wrk");
    }
    std::fs::create_dir_all(&args.work_dir)?;
    let temp = tempfile::Builder::new()
        .prefix("api-list-")
        .tempdir_in(&args.work_dir)
        .with_context(|| format!("creating a folder in {}", args.work_dir.display()))?;
    let repo = temp.path().join("repo");
    init_repo(&repo, PIPELINE)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    let mut measured = Vec::new();
    let sqlite_dir = temp.path().join("sqlite");
    std::fs::create_dir_all(&sqlite_dir)?;
    let data = sqlite_dir.join("data");
    measured.push(measure(
        args,
        &runtime,
        &sorat,
        &repo,
        &sqlite_dir,
        "SQLite",
        &data.to_string_lossy(),
        None,
    )?);

    let mut postgres_version = None;
    if let Some(admin_url) = &args.postgres {
        let name = format!("sorat_bench_api_list_{}", std::process::id());
        let (url, version) = runtime.block_on(create_database(admin_url, &name))?;
        postgres_version = Some(version);
        let postgres_dir = temp.path().join("postgres");
        std::fs::create_dir_all(&postgres_dir)?;
        let result = measure(
            args,
            &runtime,
            &sorat,
            &repo,
            &postgres_dir,
            "PostgreSQL",
            &url,
            Some(url.clone()),
        );
        let dropped = runtime.block_on(drop_database(admin_url, &name));
        measured.push(result?);
        dropped?;
    } else {
        eprintln!("api-list: no --postgres (or SORAT_TEST_POSTGRES): SQLite only");
    }
    print_report(
        args,
        &sorat,
        &wrk_version,
        postgres_version.as_deref(),
        &measured,
    );
    Ok(())
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call per backend, all named above"
)]
fn measure(
    args: &Args,
    runtime: &tokio::runtime::Runtime,
    sorat: &Path,
    repo: &Path,
    dir: &Path,
    backend: &'static str,
    store_url: &str,
    database: Option<String>,
) -> anyhow::Result<Measured> {
    eprintln!("{backend}: storing {} runs", args.runs);
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let seed_time = runtime.block_on(seed(store_url, &data, repo, args.runs))?;
    eprintln!("{backend}: stored in {}", seconds(seed_time));
    let spec = ServerSpec {
        sorat: sorat.to_path_buf(),
        dir: dir.to_path_buf(),
        server_yaml: "  local_agent: { enabled: false }".to_string(),
        projects_yaml: format!("  - name: {PROJECT}\n    repo: {}\n", repo.display()),
        database,
    };
    let mut server = Server::start(&spec)?;
    let api = server.admin()?;
    let (status, page) = api.get(&args.path)?;
    let count = page["runs"].as_array().map_or(0, Vec::len);
    if status != 200 || count != 50.min(args.runs) {
        bail!(
            "{backend}: GET {} gave HTTP {status} with {count} runs",
            args.path
        );
    }
    let response_bytes = page.to_string().len();
    let url = format!("{}{}", server.url, args.path);
    eprintln!("{backend}: warm-up");
    wrk(args, &url, 2)?;
    let pid = server.pid();
    let cpu_before = pid.and_then(process_cpu);
    eprintln!("{backend}: wrk for {} s", args.duration);
    let result = wrk(args, &url, args.duration)?;
    let cpu_after = pid.and_then(process_cpu);
    server.stop()?;
    let server_cpu = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    Ok(Measured {
        backend,
        seed_time,
        response_bytes,
        wrk: result,
        server_cpu,
    })
}

/// Stores `count` finished runs of three jobs each, the way the server does (create the run
/// and its jobs, then end each job, then the run), four writers at a time.
async fn seed(url: &str, data: &Path, repo: &Path, count: usize) -> anyhow::Result<Duration> {
    let key = SecretKey::load_or_create(&data.join("secret.key"))?;
    let store = Store::open(url, key).await?;
    store
        .upsert_project(&NewProject {
            name: PROJECT.into(),
            repo: repo.to_string_lossy().into_owned(),
            pipeline_path: ".sorat/pipeline.yaml".into(),
            settings: json!({}),
        })
        .await?;
    let started = Instant::now();
    let writers = 4;
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let store = store.clone();
        tasks.spawn(async move {
            let mut index = writer;
            while index < count {
                store_run(&store, index, count).await?;
                index += writers;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let elapsed = started.elapsed();
    store.close().await;
    Ok(elapsed)
}

async fn store_run(store: &Store, index: usize, count: usize) -> anyhow::Result<()> {
    // Spread over the past: one run a minute, the newest a minute ago.
    let age = i64::try_from(count - index).unwrap_or(i64::MAX);
    let queued_at = now_millis() - age * 60_000;
    let sha = blake3::hash(index.to_string().as_bytes()).to_hex()[..40].to_string();
    let run = NewRun {
        project: PROJECT.into(),
        event: "push".into(),
        git_ref: "refs/heads/main".into(),
        sha: sha.clone(),
        before: Some("0".repeat(40)),
        title: format!("Change number {index}: make the checkout page faster"),
        actor: "tess".into(),
        trigger: json!({
            "source": "webhook",
            "forge": "github",
            "delivery": format!("d-{index}"),
            "pull_request": null,
            "link": format!("https://example.com/team/shop/commit/{sha}"),
        }),
        inputs: json!({}),
        pipeline: PIPELINE.into(),
        concurrency: Some("shop-refs/heads/main".into()),
    };
    let job = |key: &str, needs: &[&str]| NewJob {
        key: key.into(),
        name: key.into(),
        needs: needs.iter().map(|need| (*need).to_string()).collect(),
        runs_on: vec!["linux".into()],
        concurrency: None,
        max_attempts: 2,
        environment: None,
    };
    let jobs = [
        job("build", &[]),
        job("test", &["build"]),
        job("scan", &["build"]),
    ];
    let (stored, created) = store.create_run(&run, &jobs, queued_at).await?;
    let failed = index % 10 == 7;
    for (position, job) in created.iter().enumerate() {
        let status = if failed && position == 1 {
            JobStatus::Failure
        } else {
            JobStatus::Success
        };
        let ended_at = queued_at + 30_000 + 10_000 * i64::try_from(position).unwrap_or(0);
        store
            .transition_job(
                job.id,
                &[JobStatus::Queued, JobStatus::Pending],
                status,
                None,
                ended_at,
            )
            .await?;
    }
    let (status, reason) = if failed {
        (RunStatus::Failure, Some("job `test` failed"))
    } else {
        (RunStatus::Success, None)
    };
    store
        .transition_run(
            stored.id,
            &[RunStatus::Queued],
            status,
            reason,
            queued_at + 60_000,
        )
        .await?;
    Ok(())
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .context("the PostgreSQL URL has no `://`")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let query = path.split_once('?').map(|(_, query)| query);
    Ok(match query {
        Some(query) => format!("{scheme}://{authority}/{name}?{query}"),
        None => format!("{scheme}://{authority}/{name}"),
    })
}

/// Creates the database `name` on the server of `admin_url`; its URL and the server's version.
async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<(String, String)> {
    let mut connection = sqlx::PgConnection::connect(admin_url)
        .await
        .context("connecting to PostgreSQL")?;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut connection)
        .await?;
    connection
        .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
        .await?;
    connection
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .with_context(|| format!("creating database {name}"))?;
    connection.close().await?;
    Ok((with_database(admin_url, name)?, version))
}

async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut connection = sqlx::PgConnection::connect(admin_url).await?;
    connection
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .with_context(|| format!("dropping database {name}"))?;
    connection.close().await?;
    Ok(())
}

/// What one wrk run reported.
#[derive(Clone, Debug, Default)]
struct WrkResult {
    requests_per_second: f64,
    requests: u64,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

fn wrk(args: &Args, url: &str, seconds: u64) -> anyhow::Result<WrkResult> {
    let output = Command::new("wrk")
        .args([
            &format!("-t{}", args.threads),
            &format!("-c{}", args.connections),
            &format!("-d{seconds}s"),
            "--latency",
            "-H",
            &format!("Authorization: Bearer {ADMIN_TOKEN}"),
            url,
        ])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {text}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_wrk(&text)
}

fn parse_wrk(text: &str) -> anyhow::Result<WrkResult> {
    let mut result = WrkResult::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => result.requests_per_second = value.parse()?,
            ["Latency", _avg, _stdev, max, ..] => result.max = parse_time(max)?,
            ["50%", value] => result.p50 = parse_time(value)?,
            ["90%", value] => result.p90 = parse_time(value)?,
            ["99%", value] => result.p99 = parse_time(value)?,
            [count, "requests", "in", ..] => result.requests = count.parse()?,
            ["Non-2xx", ..] | ["Socket", "errors:", ..] => {
                bail!("wrk saw failures: {line}\n{text}")
            }
            _ => {}
        }
    }
    if result.requests == 0 || result.p99.is_zero() {
        bail!("no results in wrk's output:\n{text}");
    }
    Ok(result)
}

/// wrk's times: `812.00us`, `4.12ms`, `1.02s`, `2.00m`.
fn parse_time(text: &str) -> anyhow::Result<Duration> {
    let (number, scale) = if let Some(number) = text.strip_suffix("us") {
        (number, 1e-6)
    } else if let Some(number) = text.strip_suffix("ms") {
        (number, 1e-3)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix('m') {
        (number, 60.0)
    } else {
        bail!("`{text}` is not a wrk time");
    };
    let value: f64 = number
        .parse()
        .with_context(|| format!("`{text}` is not a wrk time"))?;
    Ok(Duration::from_secs_f64(value * scale))
}

fn print_report(
    args: &Args,
    sorat: &Path,
    wrk_version: &str,
    postgres_version: Option<&str>,
    measured: &[Measured],
) {
    println!(
        "## GET {} with {} runs stored: SQLite vs PostgreSQL\n",
        args.path, args.runs
    );
    println!(
        "sorat: {} ({}); {}; PostgreSQL: {}; wrk -t{} -c{} -d{}s --latency with the admin token, after a 2 s warm-up, on the same machine as the server.\n",
        sorat.display(),
        first_line(&sorat.to_string_lossy(), &["--version"]),
        wrk_version,
        postgres_version.unwrap_or("not measured"),
        args.threads,
        args.connections,
        args.duration
    );
    let mut table = Table::new(&[
        "state store",
        "requests/s",
        "p50",
        "p90",
        "p99",
        "max",
        "server CPU per request",
        "response",
        "storing the runs",
    ]);
    for m in measured {
        let cpu = match m.server_cpu {
            Some(cpu) if m.wrk.requests > 0 => {
                let per = cpu.as_secs_f64() * 1e6 / m.wrk.requests as f64;
                format!("{per:.0} µs")
            }
            _ => "–".to_string(),
        };
        table.row(vec![
            m.backend.to_string(),
            format!("{:.0}", m.wrk.requests_per_second),
            millis(m.wrk.p50),
            millis(m.wrk.p90),
            millis(m.wrk.p99),
            millis(m.wrk.max),
            cpu,
            format!("{:.1} KiB", m.response_bytes as f64 / 1024.0),
            format!(
                "{} ({:.0} runs/s)",
                seconds(m.seed_time),
                args.runs as f64 / m.seed_time.as_secs_f64().max(1e-9)
            ),
        ]);
    }
    println!("{}", table.render());
    if let [sqlite, postgres] = measured {
        println!(
            "SQLite ÷ PostgreSQL: requests/s {:.2}x (above 1: SQLite served more); p99 {:.2}x (below 1: SQLite answered faster).",
            sqlite.wrk.requests_per_second / postgres.wrk.requests_per_second.max(1e-9),
            sqlite.wrk.p99.as_secs_f64() / postgres.wrk.p99.as_secs_f64().max(1e-12)
        );
        println!(
            "Server CPU counts the `sorat up` process only: PostgreSQL's own backends work outside it."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = "Running 10s test @ http://127.0.0.1:1/api/v1/runs?limit=50
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.12ms    1.20ms  20.00ms   80.00%
    Req/Sec     1.60k   100.00     1.80k    70.00%
  Latency Distribution
     50%  812.00us
     75%    5.50ms
     90%    6.20ms
     99%    1.02s
  32000 requests in 10.00s, 100.00MB read
Requests/sec:   3200.50
Transfer/sec:     10.00MB
";
        let result = parse_wrk(text).unwrap_or_default();
        assert_eq!(result.requests, 32_000);
        assert_eq!(result.p50, Duration::from_micros(812));
        assert_eq!(result.p99, Duration::from_millis(1020));
        assert_eq!(result.max, Duration::from_millis(20));
        assert!((result.requests_per_second - 3200.5).abs() < 1e-9);
        assert!(parse_wrk(&format!("{text}  Non-2xx or 3xx responses: 4\n")).is_err());
    }

    #[test]
    fn swaps_the_database_name() {
        let cases = [
            ("postgres://u@h:1/db", "postgres://u@h:1/other"),
            (
                "postgres://u@h:1/db?sslmode=disable",
                "postgres://u@h:1/other?sslmode=disable",
            ),
            ("postgresql://u@h", "postgresql://u@h/other"),
        ];
        for (url, expected) in cases {
            assert_eq!(with_database(url, "other").unwrap_or_default(), expected);
        }
    }
}
