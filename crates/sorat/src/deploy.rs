//! `sorat deploy`, `sorat rollback`, `sorat releases`: environments through the server's API.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use serde_json::{Value, json};

use crate::exit;
use crate::server::{Client, ClientArgs, Failed, with_client};

/// Arguments of `sorat deploy`.
#[derive(clap::Args)]
pub(crate) struct DeployArgs {
    /// The environment.
    environment: String,
    /// The artifact, `NAME@VERSION`.
    #[arg(long)]
    artifact: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// Arguments of `sorat rollback`.
#[derive(clap::Args)]
pub(crate) struct RollbackArgs {
    /// The environment.
    environment: String,
    /// The release to go back to (default: the previous one on each host).
    #[arg(long)]
    to: Option<u32>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Arguments of `sorat releases`.
#[derive(clap::Args)]
pub(crate) struct ReleasesArgs {
    /// The environment.
    environment: String,
    /// Also list the environment's deployments and rollbacks, newest first.
    #[arg(long)]
    history: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Arguments of `sorat promote` and `sorat abort`.
#[derive(clap::Args)]
pub(crate) struct DecideArgs {
    /// The environment whose deploy waits for a decision.
    environment: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// `sorat promote ENV` / `sorat abort ENV`: answers a paused deploy (an inconclusive
/// analysis, or a blue-green release waiting to be promoted).
pub(crate) fn decide(args: DecideArgs, promote: bool) -> u8 {
    let path = format!(
        "/api/v1/environments/{}/{}",
        args.environment,
        if promote { "promote" } else { "abort" }
    );
    with_client(&args.client, |client| async move {
        let answer = client.send(reqwest::Method::POST, &path, None).await?;
        println!(
            "{}: {} release {} (analysis {}: {})",
            answer["environment"].as_str().unwrap_or(""),
            if promote { "promoted" } else { "aborted" },
            answer["paused"]["release"],
            answer["paused"]["analysis"].as_str().unwrap_or(""),
            answer["paused"]["reason"].as_str().unwrap_or("")
        );
        Ok(exit::SUCCESS)
    })
}

/// Arguments of `sorat approve`.
#[derive(clap::Args)]
pub(crate) struct ApproveArgs {
    /// The run's id.
    run: i64,
    /// The job's key (its id in the pipeline, `deploy-production`).
    job: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// `sorat approve RUN JOB`: a deployment job waiting for its environment's approval starts.
pub(crate) fn approve(args: ApproveArgs) -> u8 {
    let path = format!("/api/v1/runs/{}/jobs/{}/approve", args.run, args.job);
    with_client(&args.client, |client| async move {
        let answer = client.send(reqwest::Method::POST, &path, None).await?;
        println!(
            "approved: run {} job {} may deploy to `{}` (by {})",
            answer["run"],
            answer["job"].as_str().unwrap_or(""),
            answer["environment"].as_str().unwrap_or(""),
            answer["approved_by"].as_str().unwrap_or("")
        );
        Ok(exit::SUCCESS)
    })
}

/// Prints a deploy or rollback report; exit 0 when it succeeded, 1 otherwise.
fn print_report(report: &Value) -> u8 {
    for host in report["hosts"].as_array().into_iter().flatten() {
        let errors: Vec<&str> = host["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "{:<16} {:<18} release {} (was {}){}",
            host["host"].as_str().unwrap_or(""),
            host["outcome"].as_str().unwrap_or(""),
            host["current"],
            host["previous"],
            if errors.is_empty() {
                String::new()
            } else {
                format!(": {}", errors.join("; "))
            }
        );
    }
    for analysis in report["analyses"].as_array().into_iter().flatten() {
        let measured = &analysis["report"];
        let count: usize = measured["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|metric| metric["measurements"].as_array().map_or(0, Vec::len))
            .sum();
        println!(
            "analysis {:<12} {:<12} {count} measurement(s){}",
            analysis["name"].as_str().unwrap_or(""),
            measured["outcome"]["status"].as_str().unwrap_or(""),
            measured["outcome"]["reason"]
                .as_str()
                .map(|reason| format!(": {reason}"))
                .unwrap_or_default()
        );
    }
    if let Some(bake) = report["bake"].as_object() {
        println!(
            "bake window {}{}",
            bake.get("outcome").and_then(Value::as_str).unwrap_or(""),
            bake.get("reason")
                .and_then(Value::as_str)
                .map(|reason| format!(": {reason}"))
                .unwrap_or_default()
        );
    }
    let outcome = report["outcome"].as_str().unwrap_or("");
    match report["reason"].as_str() {
        Some(reason) => println!(
            "{}: {outcome}: {reason} ({} ms)",
            report["environment"].as_str().unwrap_or(""),
            report["elapsed_ms"]
        ),
        None => println!(
            "{}: {outcome}, release {} ({} ms)",
            report["environment"].as_str().unwrap_or(""),
            report["release"],
            report["elapsed_ms"]
        ),
    }
    if outcome == "succeeded" {
        exit::SUCCESS
    } else {
        exit::FAILURE
    }
}

/// Sends a deploy or rollback; a 409 carrying a report is the work failing (exit 1).
/// `POST path`, a deploy or rollback of `environment`: its steps are shown on standard error
/// as they happen (asked for every half second while the answer is awaited), then its
/// report on standard output.
async fn act(client: &Client, environment: &str, path: &str, body: Value) -> Result<u8, Failed> {
    let steps = format!("/api/v1/environments/{environment}/progress");
    // This action's steps are those told after the last one told before it.
    let mut after = show_steps(client, &steps, None).await;
    let request = client
        .http
        .post(format!("{}{path}", client.base))
        .bearer_auth(&client.token)
        .json(&body)
        .send();
    tokio::pin!(request);
    let response = loop {
        tokio::select! {
            response = &mut request => break response,
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {
                after = show_steps(client, &steps, after).await;
            }
        }
    };
    // The steps told between the last ask and the answer.
    show_steps(client, &steps, after).await;
    let response = response.map_err(|error| Failed(error.to_string(), exit::FAILURE))?;
    let status = response.status();
    let value: Value = response
        .json()
        .await
        .map_err(|error| Failed(error.to_string(), exit::FAILURE))?;
    if value.get("hosts").is_some() {
        return Ok(print_report(&value));
    }
    let message = value["error"]["message"].as_str().unwrap_or("").to_string();
    let code = if status.is_client_error() {
        exit::INVALID
    } else {
        exit::FAILURE
    };
    Err(Failed(format!("HTTP {}: {message}", status.as_u16()), code))
}

/// Prints the steps told after step `after` (none: only learns the last step's number) and
/// returns the number of the last step seen. Steps are a view: when they cannot be read (a
/// server without them), nothing is shown and the action goes on.
async fn show_steps(client: &Client, path: &str, after: Option<u64>) -> Option<u64> {
    let query = format!("{path}?after={}", after.unwrap_or(u64::MAX));
    let Ok(answer) = client.send(reqwest::Method::GET, &query, None).await else {
        return after;
    };
    if after.is_some() {
        for step in answer["steps"].as_array().into_iter().flatten() {
            let message = step["message"].as_str().unwrap_or_default();
            match step["host"].as_str() {
                Some(host) => eprintln!("  {host}: {message}"),
                None => eprintln!("  {message}"),
            }
        }
    }
    answer["last"].as_u64().or(after)
}

/// `sorat deploy ENV --artifact NAME@VERSION`.
pub(crate) fn deploy(args: DeployArgs) -> u8 {
    let path = format!("/api/v1/environments/{}/deploy", args.environment);
    let body = json!({ "artifact": args.artifact });
    with_client(&args.client, |client| async move {
        act(&client, &args.environment, &path, body).await
    })
}

/// `sorat rollback ENV [--to N]`.
pub(crate) fn rollback(args: RollbackArgs) -> u8 {
    let path = format!("/api/v1/environments/{}/rollback", args.environment);
    let body = json!({ "to": args.to });
    with_client(&args.client, |client| async move {
        act(&client, &args.environment, &path, body).await
    })
}

/// `sorat releases ENV`: a table per host.
pub(crate) fn releases(args: ReleasesArgs) -> u8 {
    let environment = args.environment.clone();
    with_client(&args.client, |client| async move {
        let answer = client
            .send(
                reqwest::Method::GET,
                &format!("/api/v1/environments/{environment}/releases"),
                None,
            )
            .await?;
        for host in answer["hosts"].as_array().into_iter().flatten() {
            println!("{}", host["host"].as_str().unwrap_or(""));
            println!(
                "  {:>3} {:<28} {:<14} {:<16} {:<26} {:<10}",
                "#", "ARTIFACT", "DIGEST", "WHO", "WHEN", "STATUS"
            );
            for release in host["releases"].as_array().into_iter().flatten() {
                let digest = release["digest"].as_str().unwrap_or("");
                println!(
                    "{} {:>3} {:<28} {:<14} {:<16} {:<26} {:<10}",
                    if release["current"].as_bool() == Some(true) {
                        "*"
                    } else {
                        " "
                    },
                    release["number"].as_u64().unwrap_or(0),
                    release["artifact"].as_str().unwrap_or(""),
                    digest.get(..14).unwrap_or(digest),
                    release["who"].as_str().unwrap_or(""),
                    release["created"].as_str().unwrap_or(""),
                    release["status"].as_str().unwrap_or(""),
                );
            }
        }
        if args.history {
            let history = client
                .send(
                    reqwest::Method::GET,
                    &format!("/api/v1/environments/{environment}/deployments"),
                    None,
                )
                .await?;
            println!("history");
            println!(
                "  {:>4} {:<9} {:>3} {:<28} {:<16} {:<12} REASON",
                "ID", "KIND", "#", "ARTIFACT", "WHO", "OUTCOME"
            );
            for deployment in history["deployments"].as_array().into_iter().flatten() {
                println!(
                    "  {:>4} {:<9} {:>3} {:<28} {:<16} {:<12} {}",
                    deployment["id"],
                    deployment["kind"].as_str().unwrap_or(""),
                    deployment["release"]
                        .as_u64()
                        .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                    deployment["artifact"].as_str().unwrap_or("-"),
                    deployment["who"].as_str().unwrap_or(""),
                    deployment["outcome"].as_str().unwrap_or(""),
                    deployment["reason"].as_str().unwrap_or(""),
                );
            }
        }
        Ok(exit::SUCCESS)
    })
}
