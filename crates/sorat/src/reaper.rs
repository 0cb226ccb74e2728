//! The reaper: a small child process that kills the process groups of running steps when
//! this process dies without stopping them (`kill -9`, an out-of-memory kill). The engine
//! tells it of every group it starts and ends over a pipe; when the pipe closes (this
//! process is gone, whatever the way), the reaper kills every group still listed and exits.
//! So an agent that is killed leaves no step running, and a job that its lease moves to
//! another agent never runs twice at once.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Mutex;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use sorat_pipeline::exec::{GroupWatcher, watch_process_groups};

struct PipeWatcher {
    pipe: Mutex<ChildStdin>,
}

impl PipeWatcher {
    fn send(&self, line: String) {
        if let Ok(mut pipe) = self.pipe.lock() {
            let _ = pipe.write_all(line.as_bytes());
            let _ = pipe.flush();
        }
    }
}

impl GroupWatcher for PipeWatcher {
    fn started(&self, pgid: i32) {
        self.send(format!("+{pgid}\n"));
    }

    fn ended(&self, pgid: i32) {
        self.send(format!("-{pgid}\n"));
    }
}

/// Starts the reaper and makes the engine report to it. Without it (it could not start),
/// everything works the same, except that a `kill -9` leaves steps running.
pub(crate) fn start() {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let child = Command::new(exe)
        .arg("__reap")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own group: a Ctrl-C or a signal to this process's group does not reach it.
        .process_group(0)
        .spawn();
    let Ok(mut child) = child else {
        return;
    };
    let Some(pipe) = child.stdin.take() else {
        return;
    };
    watch_process_groups(Box::new(PipeWatcher {
        pipe: Mutex::new(pipe),
    }));
    // The reaper outlives this process on purpose; it is not waited for.
    std::mem::forget(child);
}

/// `sorat __reap`: reads `+pgid` / `-pgid` lines until end of input, then kills every
/// group still listed.
pub(crate) fn reap() -> u8 {
    let mut groups: HashSet<i32> = HashSet::new();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let (sign, number) = line.split_at(line.len().min(1));
        let Ok(pgid) = number.trim().parse::<i32>() else {
            continue;
        };
        if pgid <= 1 {
            continue;
        }
        match sign {
            "+" => {
                groups.insert(pgid);
            }
            "-" => {
                groups.remove(&pgid);
            }
            _ => {}
        }
    }
    for pgid in groups {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    0
}
