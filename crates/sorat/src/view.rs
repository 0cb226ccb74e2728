//! The terminal side of a run: a live view on a terminal, plain timestamped lines elsewhere,
//! and the summary at the end.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sorat_pipeline::events::{JobKey, RunEvent};
use sorat_pipeline::record::{LogLine, RunRecord, Status};
use tokio::sync::mpsc::UnboundedReceiver;

/// How the run is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutputMode {
    /// A live view on the terminal: a line per running job, failures' tails, a summary.
    Live,
    /// Timestamped, prefixed log lines on standard output.
    Plain,
    /// Plain lines on standard error; the record as JSON on standard output at the end.
    Json,
}

/// Lines of one step printed in plain mode before the rest is left to the log file.
const PLAIN_LINE_LIMIT: u64 = 10_000;
/// Lines of a failed step's log shown in the live view.
const FAILURE_TAIL: usize = 20;

fn symbol(status: Status) -> &'static str {
    match status {
        Status::Success => "✓",
        Status::Failure => "✗",
        Status::Cancelled => "⊘",
        Status::Skipped => "-",
    }
}

fn seconds(duration: Duration) -> String {
    sorat_config::duration::format_duration(duration)
}

/// Consumes the run's events until the engine drops its sender.
pub(crate) fn watch(events: UnboundedReceiver<RunEvent>, mode: OutputMode) {
    match mode {
        OutputMode::Live => live(events),
        OutputMode::Plain => plain(events, &mut std::io::stdout()),
        OutputMode::Json => plain(events, &mut std::io::stderr()),
    }
}

#[derive(Default)]
struct StepLines {
    printed: u64,
    suppressed: u64,
}

fn plain(mut events: UnboundedReceiver<RunEvent>, out: &mut dyn Write) {
    let now = || format!("{:.3}", jiff::Timestamp::now());
    let mut counts: HashMap<JobKey, StepLines> = HashMap::new();
    let mut names: HashMap<JobKey, String> = HashMap::new();
    while let Some(event) = events.blocking_recv() {
        let _ = match event {
            RunEvent::RunStarted { id, dir, jobs } => writeln!(
                out,
                "{} run {id} started: {} job(s); record and logs in {}",
                now(),
                jobs.len(),
                dir.display()
            ),
            RunEvent::JobWaiting { key, name, reason } => {
                names.insert(key.clone(), name.clone());
                writeln!(out, "{} [{name}] waiting: {reason}", now())
            }
            RunEvent::JobPlanned { instances, .. } => {
                for (key, name) in instances {
                    names.insert(key, name);
                }
                Ok(())
            }
            RunEvent::JobStarted { key, name, steps } => {
                names.insert(key.clone(), name.clone());
                writeln!(out, "{} [{name}] started ({steps} steps)", now())
            }
            RunEvent::StepStarted { key, index, name } => {
                counts.insert(key.clone(), StepLines::default());
                let job = names.get(&key).cloned().unwrap_or_else(|| key.to_string());
                writeln!(out, "{} [{job}] ▶ step {}: {name}", now(), index + 1)
            }
            RunEvent::Log { key, line } => {
                let lines = counts.entry(key.clone()).or_default();
                if lines.printed < PLAIN_LINE_LIMIT {
                    lines.printed += 1;
                    let job = names.get(&key).map_or(key.0.as_str(), String::as_str);
                    writeln!(out, "{} [{job}] | {}", line.t, line.line)
                } else {
                    lines.suppressed += 1;
                    Ok(())
                }
            }
            RunEvent::StepFinished {
                key,
                name,
                status,
                reason,
                duration,
                log_path,
                tail,
                ..
            } => {
                let job = names.get(&key).cloned().unwrap_or_else(|| key.to_string());
                let lines = counts.remove(&key).unwrap_or_default();
                if lines.suppressed > 0 {
                    let path = log_path
                        .as_ref()
                        .map_or_else(String::new, |p| p.display().to_string());
                    let _ = writeln!(
                        out,
                        "{} [{job}] … {} more lines not shown here; the whole log: {path}",
                        now(),
                        lines.suppressed
                    );
                    let shown = tail.len().min(lines.suppressed as usize).min(FAILURE_TAIL);
                    for line in &tail[tail.len() - shown..] {
                        let _ = writeln!(out, "{} [{job}] | {}", line.t, line.line);
                    }
                }
                writeln!(
                    out,
                    "{} [{job}] {} step {name}: {}{} ({})",
                    now(),
                    symbol(status),
                    status.as_str(),
                    reason.map(|r| format!(": {r}")).unwrap_or_default(),
                    seconds(duration)
                )
            }
            RunEvent::JobFinished {
                name,
                status,
                reason,
                duration,
                ..
            } => writeln!(
                out,
                "{} [{name}] {} {}{} ({})",
                now(),
                symbol(status),
                status.as_str(),
                reason.map(|r| format!(": {r}")).unwrap_or_default(),
                seconds(duration)
            ),
            RunEvent::Warning { message } => writeln!(out, "{} warning: {message}", now()),
        };
    }
    let _ = out.flush();
}

fn live(mut events: UnboundedReceiver<RunEvent>) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
    let running_style =
        ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {msg} {elapsed:.dim}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let waiting_style = ProgressStyle::with_template("  {prefix:.dim} {msg:.dim}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut bars: HashMap<JobKey, ProgressBar> = HashMap::new();
    let mut step_totals: HashMap<JobKey, usize> = HashMap::new();
    let mut names: HashMap<JobKey, String> = HashMap::new();
    let print = |multi: &MultiProgress, text: String| {
        let _ = multi.println(text);
    };
    while let Some(event) = events.blocking_recv() {
        match event {
            RunEvent::RunStarted { id, jobs, .. } => {
                print(&multi, format!("run {id}: {} job(s)", jobs.len()));
            }
            RunEvent::JobWaiting { key, name, reason } => {
                names.insert(key.clone(), name.clone());
                let bar = bars.entry(key).or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(waiting_style.clone());
                    bar.set_prefix(name.clone());
                    bar
                });
                bar.set_message(format!("waiting: {reason}"));
            }
            RunEvent::JobPlanned { job, instances } => {
                if let Some(bar) = bars.remove(&job) {
                    bar.finish_and_clear();
                    multi.remove(&bar);
                }
                for (key, name) in instances {
                    names.insert(key, name);
                }
            }
            RunEvent::JobStarted { key, name, steps } => {
                names.insert(key.clone(), name.clone());
                step_totals.insert(key.clone(), steps);
                let bar = bars
                    .entry(key)
                    .or_insert_with(|| multi.add(ProgressBar::new_spinner()));
                bar.set_style(running_style.clone());
                bar.set_prefix(name);
                bar.reset_elapsed();
                bar.set_message("starting");
                bar.enable_steady_tick(Duration::from_millis(100));
            }
            RunEvent::StepStarted { key, index, name } => {
                if let Some(bar) = bars.get(&key) {
                    let total = step_totals.get(&key).copied().unwrap_or(0);
                    let position = if index < total {
                        format!("{}/{total} ", index + 1)
                    } else {
                        "post ".to_string()
                    };
                    bar.set_message(format!("{position}{name}"));
                }
            }
            RunEvent::Log { .. } => {}
            RunEvent::StepFinished {
                key,
                name,
                status,
                reason,
                log_path,
                tail,
                lines,
                ..
            } => {
                if status == Status::Failure {
                    let job = names.get(&key).cloned().unwrap_or_else(|| key.to_string());
                    print(
                        &multi,
                        failure_block(
                            &job,
                            &name,
                            reason.as_deref(),
                            &tail,
                            lines,
                            log_path.as_deref(),
                        ),
                    );
                }
            }
            RunEvent::JobFinished {
                key,
                name,
                status,
                reason,
                duration,
            } => {
                if let Some(bar) = bars.remove(&key) {
                    bar.finish_and_clear();
                    multi.remove(&bar);
                }
                let detail = match (status, reason) {
                    (Status::Success, _) | (_, None) => String::new(),
                    (_, Some(reason)) => format!(" — {reason}"),
                };
                print(
                    &multi,
                    format!(
                        "{} {name} {} ({}){detail}",
                        symbol(status),
                        status.as_str(),
                        seconds(duration)
                    ),
                );
            }
            RunEvent::Warning { message } => print(&multi, format!("warning: {message}")),
        }
    }
    for bar in bars.values() {
        bar.finish_and_clear();
    }
    let _ = multi.clear();
}

fn failure_block(
    job: &str,
    step: &str,
    reason: Option<&str>,
    tail: &[LogLine],
    lines: u64,
    log_path: Option<&Path>,
) -> String {
    let mut text = format!(
        "── {job} › {step} failed{} ──",
        reason.map(|r| format!(": {r}")).unwrap_or_default()
    );
    let shown = tail.len().min(FAILURE_TAIL);
    if lines as usize > shown {
        text.push_str(&format!("\n   … {} earlier lines", lines as usize - shown));
    }
    for line in &tail[tail.len() - shown..] {
        text.push_str(&format!("\n   {}", line.line));
    }
    if let Some(path) = log_path {
        text.push_str(&format!("\n   whole log: {}", path.display()));
    }
    text
}

/// Prints the end of the run: the record as JSON, or a summary table.
#[allow(clippy::print_stdout)]
pub(crate) fn summary(record: &RunRecord, mode: OutputMode, run_dir: &Path) {
    if mode == OutputMode::Json {
        match serde_json::to_string_pretty(record) {
            Ok(json) => println!("{json}"),
            Err(error) => println!("{{\"status\": \"failure\", \"error\": \"{error}\"}}"),
        }
        return;
    }
    let width = record
        .jobs
        .iter()
        .map(|job| job.name.chars().count())
        .max()
        .unwrap_or(3)
        .max(3);
    println!();
    println!(
        "{} run {} {} in {} — {}",
        symbol(record.status),
        record.id,
        record.status.as_str(),
        seconds(Duration::from_millis(record.duration_ms)),
        record.name
    );
    println!("  {:<width$}  {:<9}  {:>8}  NOTES", "JOB", "STATUS", "TIME");
    for job in &record.jobs {
        let mut notes = Vec::new();
        if !job.tests.is_empty() {
            notes.push(format!(
                "tests: {} passed, {} failed, {} skipped",
                job.tests.passed, job.tests.failed, job.tests.skipped
            ));
        }
        if job.attempts > 1 {
            notes.push(format!("{} attempts", job.attempts));
        }
        if job.status != Status::Success
            && let Some(reason) = &job.reason
        {
            notes.push(reason.lines().next().unwrap_or("").to_string());
        }
        println!(
            "{} {:<width$}  {:<9}  {:>8}  {}",
            symbol(job.status),
            job.name,
            job.status.as_str(),
            seconds(Duration::from_millis(job.duration_ms)),
            notes.join("; ")
        );
    }
    if !record.tests.is_empty() {
        println!(
            "tests: {} in all, {} passed, {} failed, {} skipped",
            record.tests.total, record.tests.passed, record.tests.failed, record.tests.skipped
        );
        for failure in record.tests.failures.iter().take(20) {
            let name = if failure.classname.is_empty() {
                failure.name.clone()
            } else {
                format!("{}::{}", failure.classname, failure.name)
            };
            println!("  FAILED {name}: {}", failure.message);
        }
    }
    println!("record: {}", run_dir.join("run.json").display());
}
