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
    let deadline = Instant::now() + Duration::from_secs(180);
    // Both projects' first runs: CI on main, and the release that deploys.
    let runs = loop {
        let answer = client
            .get(format!("{url}/api/v1/runs?limit=10"))
            .bearer_auth(ADMIN)
            .send()
            .ok()
            .and_then(|response| response.json::<serde_json::Value>().ok());
        let ended: Vec<serde_json::Value> = answer
            .as_ref()
            .and_then(|answer| answer["runs"].as_array())
            .into_iter()
            .flatten()
            .filter(|run| {
                matches!(
                    run["status"].as_str(),
                    Some("success" | "failure" | "cancelled")
                )
            })
            .cloned()
            .collect();
        let projects: std::collections::BTreeSet<&str> = ended
            .iter()
            .filter_map(|run| run["project"].as_str())
            .collect();
        if projects.len() == 2 {
            break ended;
        }
        if Instant::now() > deadline {
            signal(child.id(), "KILL");
            panic!(
                "the runs did not end: {answer:#?}\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let detail = |run: &serde_json::Value| -> serde_json::Value {
        client
            .get(format!("{url}/api/v1/runs/{}", run["id"]))
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let ci = detail(
        runs.iter()
            .find(|run| run["project"] == "quickstart")
            .unwrap(),
    );
    let release = detail(
        runs.iter()
            .find(|run| run["project"] == "quickstart-release")
            .unwrap(),
    );
    // The calculator deployed to production answers over HTTP.
    let answered = client
        .get("http://127.0.0.1:8281/calc?q=2+*+21")
        .send()
        .ok()
        .and_then(|response| response.text().ok());
    // Production runs blue-green: a slot serves the current release.
    let environments: serde_json::Value = client
        .get(format!("{url}/api/v1/environments"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let production = environments["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|environment| environment["name"] == "production")
        .cloned()
        .unwrap_or_default();
    signal(child.id(), "TERM");
    let status = child.wait().unwrap();
    let printed = std::fs::read_to_string(&log).unwrap();
    assert_eq!(ci["status"], "success", "{ci:#}\n{printed}");
    assert_eq!(ci["git_ref"], "refs/heads/main");
    let jobs = |run: &serde_json::Value| -> Vec<String> {
        run["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|job| job["key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(jobs(&ci), ["lint", "test", "package", "smoke"], "{ci:#}");
    assert_eq!(release["status"], "success", "{release:#}\n{printed}");
    assert_eq!(jobs(&release), ["package", "staging", "production"]);
    assert_eq!(answered.as_deref(), Some("42\n"), "{printed}");
    for host in production["hosts"].as_array().unwrap() {
        let slot = &host["slots"]["serving"]["slot"];
        assert!(slot == "blue" || slot == "green", "{production:#}");
        assert_eq!(host["current"], host["slots"]["serving"]["release"]);
    }
    assert!(
        printed.contains(&format!("Sorat is up at {url}")),
        "{printed}"
    );
    assert!(status.success(), "{printed}");
}
