//! Running a peer's real program and timing it, from spawn to exit.

use std::io;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `command` to completion and returns the wall-clock time from spawn to exit. A
/// program that fails is an error carrying its status and standard error: a benchmark whose
/// peer failed has nothing to report.
pub fn timed(command: &mut Command) -> io::Result<Duration> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let output = command.output()?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(elapsed)
}

/// The first line a program prints for `args` (such as `--version`), or why it could not run.
pub fn first_line(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(output) => String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        Err(error) => format!("{program} cannot run: {error}"),
    }
}
