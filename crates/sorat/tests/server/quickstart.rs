//! The README's first command: `sorat up examples/quickstart` registers the example project
//! and runs its pipeline on `main` with the local agent, and prints the URL.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{ADMIN, free_port, signal};

#[test]
fn sorat_up_on_the_quickstart_runs_its_pipeline() {
    let checkout = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let has_main = Command::new("git")
        .arg("-C")
        .arg(&checkout)
        .args(["rev-parse", "--verify", "--quiet", "refs/heads/main"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !has_main {
        eprintln!("skipped: this checkout has no `main` branch for the quickstart to run");
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = temp.path().join("up.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sorat"))
        .args(["up", "examples/quickstart", "--data"])
        .arg(temp.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .current_dir(&checkout)
        .env("SORAT_ADMIN_TOKEN", ADMIN)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let run = loop {
        let answer = client
            .get(format!("{url}/api/v1/runs/1"))
            .bearer_auth(ADMIN)
            .send()
            .ok()
            .and_then(|response| response.json::<serde_json::Value>().ok());
        if let Some(run) = answer
            && matches!(
                run["status"].as_str(),
                Some("success" | "failure" | "cancelled")
            )
        {
            break run;
        }
        if Instant::now() > deadline {
            signal(child.id(), "KILL");
            panic!("no run ended:\n{}", std::fs::read_to_string(&log).unwrap());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    signal(child.id(), "TERM");
    let status = child.wait().unwrap();
    let printed = std::fs::read_to_string(&log).unwrap();
    assert_eq!(run["status"], "success", "{run:#}\n{printed}");
    assert_eq!(run["project"], "quickstart");
    assert_eq!(run["git_ref"], "refs/heads/main");
    let jobs: Vec<&str> = run["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["key"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, ["lint", "test", "package", "smoke"], "{run:#}");
    assert!(
        printed.contains(&format!("Sorat is up at {url}")),
        "{printed}"
    );
    assert!(status.success(), "{printed}");
}
