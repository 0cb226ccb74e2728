//! `rollback`: how long a rollback of an environment of three `local` hosts takes, Sorat
//! against a shell doing the same by hand.
//!
//! Both sides serve the same small Python HTTP service from `releases/<n>/` with a `current`
//! symlink, on three hosts (folders) with their own ports, and go between release 1 and 2.
//!
//! - **Sorat**: `sorat up` with an `environments.bench` of the three hosts; two artifacts are
//!   published and deployed; then `POST /api/v1/environments/bench/rollback {"to": n}`,
//!   alternating 1 and 2. Timed from the request to the answer (the rollback waits until
//!   every host is healthy again), and Sorat's own part read from the report: the switch and
//!   the restart signal per host (the slowest host), which excludes the service's start-up.
//! - **Peer**: what one would script without Sorat, for each host in parallel: `ln -sfn` of a
//!   new link then `mv -T` over `current`, kill the service's process, start it again from
//!   `current`, and poll its `/healthz` every 20 ms until it answers (the same health loop
//!   Sorat runs, which polls every `--interval`).
//!
//! It asserts no time; it prints medians, p90 and the ratio peer ÷ Sorat.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark's report is its output, and its progress goes to standard error"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::{Value, json};
use sha2::Digest as _;
use sorat_bench::report::{Table, median, millis, percentile, ratio};
use sorat_bench::server::{ADMIN_TOKEN, Api, Server, ServerSpec, free_port};

const SERVICE: &str = r#"import http.server, os
version = open("VERSION").read().strip()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (version if self.path == "/version" else "ok").encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

/// Times rollbacks of three local hosts: Sorat against a shell script.
#[derive(Parser, Debug)]
#[command(name = "rollback")]
struct Args {
    /// The `sorat` binary.
    #[arg(long, default_value = "target/release/sorat")]
    sorat: PathBuf,
    /// Where to work (a temporary folder is made inside).
    #[arg(long, default_value = "/tmp")]
    work_dir: PathBuf,
    /// Timed rollbacks per side.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rollback: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn publish(api: &Api, base: &str, version: &str) -> anyhow::Result<()> {
    let files = [
        ("app.py", SERVICE.to_string()),
        ("VERSION", format!("{version}\n")),
    ];
    let mut entries = Vec::new();
    for (path, content) in &files {
        let digest = format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(content.as_bytes()))
        );
        let response = api
            .http()
            .put(format!("{base}/api/v1/artifacts/blobs/{digest}"))
            .bearer_auth(ADMIN_TOKEN)
            .body(content.clone())
            .send()?;
        if !response.status().is_success() {
            bail!("uploading {path}: HTTP {}", response.status());
        }
        entries
            .push(json!({ "path": path, "digest": digest, "size": content.len(), "mode": 0o644 }));
    }
    let (status, body) = api.post(
        "/api/v1/artifacts",
        &json!({ "name": "app", "version": version, "files": entries, "attachments": [],
                 "metadata": {}, "moving": false }),
    )?;
    if status != 201 && status != 200 {
        bail!("publishing app@{version}: HTTP {status}: {body}");
    }
    Ok(())
}

/// The slowest host's switch + restart time in a report, in ms.
fn own_time(report: &Value) -> Duration {
    let mut slowest: f64 = 0.0;
    for host in report["hosts"].as_array().into_iter().flatten() {
        let own: f64 = host["timings_ms"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|timing| {
                matches!(
                    timing["phase"].as_str(),
                    Some("rollback_switch" | "rollback_restart")
                )
            })
            .filter_map(|timing| timing["ms"].as_f64())
            .sum();
        slowest = slowest.max(own);
    }
    Duration::from_secs_f64(slowest / 1000.0)
}

fn run(args: &Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.work_dir)?;
    let temp = tempfile::Builder::new()
        .prefix("rollback-")
        .tempdir_in(&args.work_dir)?;
    let sorat = std::fs::canonicalize(&args.sorat).with_context(|| {
        format!(
            "{} (build it: cargo build --release -p sorat)",
            args.sorat.display()
        )
    })?;

    // Sorat.
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_, _>>()?;
    let targets: String = ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("      - local: {{ dir: hosts/h{i}, port: {port} }}\n"))
        .collect();
    // The same three hosts' service blue-green: a rollback within the scale-down delay is a
    // switch of the routers back to the release still running.
    let mut bg_targets = String::new();
    for i in 0..3 {
        let (port, blue, green) = (free_port()?, free_port()?, free_port()?);
        bg_targets.push_str(&format!(
            "      - local: {{ dir: hosts/bg{i}, port: {port}, slots: [{blue}, {green}] }}\n"
        ));
    }
    let spec = ServerSpec {
        sorat,
        dir: temp.path().to_path_buf(),
        server_yaml: "  local_agent: { enabled: false }\n".into(),
        projects_yaml: format!(
            "  []\nenvironments:\n  bench:\n    targets:\n{targets}    service: {{ command: exec python3 app.py }}\n    health: {{ http: {{ path: /healthz }}, interval: 20ms }}\n    strategy: all-at-once\n  bench-bg:\n    targets:\n{bg_targets}    service: {{ command: exec python3 app.py }}\n    health: {{ http: {{ path: /healthz }}, interval: 20ms }}\n    strategy: {{ blue_green: {{ scale_down_delay: 1h }} }}\n"
        ),
        database: None,
    };
    let mut server = Server::start(&spec)?;
    let api = server.admin()?;
    for version in ["1", "2"] {
        publish(&api, &server.url, version)?;
        for environment in ["bench", "bench-bg"] {
            let (status, report) = api.post(
                &format!("/api/v1/environments/{environment}/deploy"),
                &json!({ "artifact": format!("app@{version}") }),
            )?;
            if status != 200 {
                bail!("deploying app@{version} to {environment}: HTTP {status}: {report}");
            }
        }
    }
    eprintln!("sorat: {} rollbacks", args.rounds);
    let mut sorat_wall = Vec::new();
    let mut sorat_own = Vec::new();
    for round in 0..args.rounds {
        let to = if round % 2 == 0 { 1 } else { 2 };
        let started = Instant::now();
        let (status, report) =
            api.post("/api/v1/environments/bench/rollback", &json!({ "to": to }))?;
        let wall = started.elapsed();
        if status != 200 {
            bail!("rollback to {to}: HTTP {status}: {report}");
        }
        sorat_wall.push(wall);
        sorat_own.push(own_time(&report));
    }
    eprintln!("sorat blue-green: {} rollbacks", args.rounds);
    let mut bg_wall = Vec::new();
    let mut bg_own = Vec::new();
    for round in 0..args.rounds {
        let to = if round % 2 == 0 { 1 } else { 2 };
        let started = Instant::now();
        let (status, report) = api.post(
            "/api/v1/environments/bench-bg/rollback",
            &json!({ "to": to }),
        )?;
        let wall = started.elapsed();
        if status != 200 {
            bail!("blue-green rollback to {to}: HTTP {status}: {report}");
        }
        bg_wall.push(wall);
        bg_own.push(own_time(&report));
    }
    server.stop()?;

    // The peer: the same layout by hand.
    let peer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_, _>>()?;
    let hosts: Vec<PathBuf> = (0..3)
        .map(|i| temp.path().join(format!("peer/h{i}")))
        .collect();
    for host in &hosts {
        for version in ["1", "2"] {
            let dir = host.join("releases").join(version);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("app.py"), SERVICE)?;
            std::fs::write(dir.join("VERSION"), format!("{version}\n"))?;
        }
        switch(host, "2")?;
    }
    let mut services: Vec<Child> = hosts
        .iter()
        .zip(&peer_ports)
        .map(|(host, port)| start_service(host, *port))
        .collect::<Result<_, _>>()?;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    for port in &peer_ports {
        wait_healthy(&client, *port)?;
    }
    eprintln!("peer: {} rollbacks", args.rounds);
    let mut peer_wall = Vec::new();
    for round in 0..args.rounds {
        let to = if round % 2 == 0 { "1" } else { "2" };
        let started = Instant::now();
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let mut handles = Vec::new();
            for ((host, port), service) in hosts.iter().zip(&peer_ports).zip(services.iter_mut()) {
                let client = &client;
                handles.push(scope.spawn(move || -> anyhow::Result<()> {
                    switch(host, to)?;
                    let _ = service.kill();
                    let _ = service.wait();
                    *service = start_service(host, *port)?;
                    wait_healthy(client, *port)
                }));
            }
            for handle in handles {
                handle
                    .join()
                    .map_err(|_| anyhow::anyhow!("a peer thread panicked"))??;
            }
            Ok(())
        })?;
        peer_wall.push(started.elapsed());
    }
    for mut service in services {
        let _ = service.kill();
        let _ = service.wait();
    }

    let mut table = Table::new(&["rollback of 3 hosts", "median", "p90", "max"]);
    for (label, times) in [
        ("Sorat, request → every host healthy", &sorat_wall),
        (
            "Sorat's own time (switch + restart, slowest host)",
            &sorat_own,
        ),
        (
            "Sorat blue-green, request → every host switched back",
            &bg_wall,
        ),
        (
            "Sorat blue-green's own time (switch, slowest host)",
            &bg_own,
        ),
        (
            "peer: ln -sfn + mv -T, kill, start, poll /healthz",
            &peer_wall,
        ),
    ] {
        table.row(vec![
            label.to_owned(),
            millis(median(times)),
            millis(percentile(times, 0.9)),
            millis(times.iter().max().copied().unwrap_or_default()),
        ]);
    }
    println!(
        "## Rollback of three local hosts ({} rounds each)\n",
        args.rounds
    );
    print!("{}", table.render());
    println!(
        "\nRatio peer ÷ Sorat (whole rollback, medians): {} (above 1: Sorat faster).",
        ratio(median(&peer_wall), median(&sorat_wall))
    );
    println!(
        "Ratio peer ÷ Sorat blue-green (whole rollback, medians): {}.",
        ratio(median(&peer_wall), median(&bg_wall))
    );
    println!(
        "Target: Sorat's own time under 1 s for 3 hosts: {} ({}).",
        if median(&sorat_own) < Duration::from_secs(1) {
            "met"
        } else {
            "NOT met"
        },
        millis(median(&sorat_own))
    );
    Ok(())
}

/// `current` → `releases/<to>`, atomically, as a script would do it.
fn switch(host: &Path, to: &str) -> anyhow::Result<()> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ln -sfn releases/{to} current.new && mv -T current.new current"
        ))
        .current_dir(host)
        .status()?;
    if !status.success() {
        bail!("switching {} to {to}", host.display());
    }
    Ok(())
}

fn start_service(host: &Path, port: u16) -> anyhow::Result<Child> {
    Ok(Command::new("python3")
        .arg("app.py")
        .current_dir(host.join("current"))
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

fn wait_healthy(client: &reqwest::blocking::Client, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .is_ok_and(|response| response.status().is_success())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("port {port} never became healthy");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
