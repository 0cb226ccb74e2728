//! Agents as separate processes: labels, leases, `kill -9`, and jobs that wait and say why.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{AgentProcess, Server, repo_with};

/// Three jobs that each take a few seconds and hold a lock while they run: if one job ever
/// ran on two agents at once, its second copy would find the lock taken and fail.
fn pipeline(locks: &std::path::Path) -> String {
    let mut text = String::from("on: push\njobs:\n");
    for job in ["one", "two", "three"] {
        text.push_str(&format!(
            "  {job}:\n    runs-on: [linux]\n    steps:\n      - run: |\n          mkdir {locks}/{job} || {{ echo \"{job} is running twice\"; exit 1; }}\n          echo $$ > {locks}/{job}.pid\n          sleep 4\n          rmdir {locks}/{job}\n          echo \"{job} done\"\n",
            locks = locks.display()
        ));
    }
    text
}

#[test]
fn three_agents_a_kill_9_and_no_job_lost_or_run_twice() {
    let temp = tempfile::tempdir().unwrap();
    let locks = temp.path().join("locks");
    std::fs::create_dir_all(&locks).unwrap();
    let repo = repo_with(temp.path(), &pipeline(&locks));
    let server = Server::start(
        temp.path(),
        "  lease: 2s\n  local_agent: { enabled: false }\n",
        &format!("  - name: shop\n    repo: {}\n", repo.display()),
    );
    let token = server.token("builders", "agent");
    let mut agents: Vec<AgentProcess> = ["a1", "a2", "a3"]
        .iter()
        .map(|name| AgentProcess::start(&server, &token, name, &["linux"]))
        .collect();
    let admin = server.admin();
    let id = admin.trigger("shop", json!({}));

    // Wait until all three run, then kill -9 the agent of job `two`.
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        let (_, run) = admin.get(&format!("/api/v1/runs/{id}"));
        let jobs = run["jobs"].as_array().unwrap();
        if jobs.iter().all(|job| job["status"] == "running") {
            break jobs[1]["agent"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "{run:#}\n{}", server.log_text());
        std::thread::sleep(Duration::from_millis(50));
    };
    // Its step has started (it wrote its pid) before the agent is killed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(locks.join("two.pid")).map_or(true, |t| !t.ends_with('\n')) {
        assert!(Instant::now() < deadline, "job two's step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let index = agents.iter().position(|a| a.name == victim).unwrap();
    agents[index].kill9();
    // The dead agent's step does not go on: its reaper killed the step's process group
    // (the step's shell leads it, so its pid is the group's id).
    let pid: i32 = std::fs::read_to_string(locks.join("two.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), None).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the killed agent's step (group {pid}) still runs"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // It died holding the job's lock; the lock goes (as a workspace would be cleaned),
    // and a second copy of the job would still find it if both ran at once.
    let _ = std::fs::remove_dir(locks.join("two"));

    let run = server.wait_run(id, Duration::from_secs(90));
    let logs: Vec<String> = agents
        .iter()
        .map(|a| std::fs::read_to_string(&a.log).unwrap_or_default())
        .collect();
    assert_eq!(run["status"], "success", "{run:#}\n{logs:#?}");
    let two = &run["jobs"][1];
    assert_eq!(two["attempt"], 2, "{run:#}");
    assert_ne!(two["agent"].as_str().unwrap(), victim, "{run:#}");
    for job in [&run["jobs"][0], &run["jobs"][2]] {
        assert_eq!(job["attempt"], 1, "{run:#}");
    }
    let (_, log) = admin.text(&format!("/api/v1/runs/{id}/jobs/two/logs"));
    assert!(log.contains("two done"), "{log}");
    assert!(!log.contains("running twice"), "{log}");
    // Every agent that was heard from is listed; the dead one is among them.
    let (_, listed) = admin.get("/api/v1/agents");
    let names: Vec<&str> = listed["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    for name in ["a1", "a2", "a3"] {
        assert!(names.contains(&name), "{listed:#}");
    }
}

#[test]
fn a_job_no_agent_can_take_says_why_and_fails_after_the_queue_timeout() {
    let temp = tempfile::tempdir().unwrap();
    let repo = repo_with(
        temp.path(),
        "on: push\njobs:\n  gpu:\n    runs-on: [gpu]\n    steps:\n      - run: echo never\n  after:\n    needs: gpu\n    steps:\n      - run: echo never\n",
    );
    let server = Server::start(
        temp.path(),
        "  queue_timeout: 3s\n  local_agent: { labels: [linux] }\n",
        &format!("  - name: shop\n    repo: {}\n", repo.display()),
    );
    let admin = server.admin();
    let id = admin.trigger("shop", json!({}));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut reasons = Vec::new();
    loop {
        let (_, run) = admin.get(&format!("/api/v1/runs/{id}"));
        if let Some(why) = run["jobs"][0]["waiting"].as_str() {
            reasons.push(why.to_string());
        }
        if let Some(why) = run["jobs"][1]["waiting"].as_str() {
            reasons.push(why.to_string());
        }
        if run["status"] == "failure" {
            assert_eq!(run["jobs"][0]["status"], "failure", "{run:#}");
            assert!(
                run["jobs"][0]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("no agent with labels `gpu` within 3s"),
                "{run:#}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{run:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        reasons.iter().any(|r| r == "no agent with labels `gpu`"),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r == "needs `gpu`"), "{reasons:?}");
}
