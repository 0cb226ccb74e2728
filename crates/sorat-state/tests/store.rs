//! Every store method, on both backends: each test below runs as `name::sqlite` and
//! `name::postgres` (the latter needs `SORAT_TEST_POSTGRES`; `.ci/postgres` starts a server).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

#[macro_use]
mod support;

use std::collections::BTreeSet;

use serde_json::json;
use sorat_state::{
    AgentInfo, JobOutcome, JobStatus, LogChunk, NewAudit, NewDeployment, NewToken, Role, RunFilter,
    RunStatus, SecretKey, StateError, StepState, TestCase, TokenKind,
};
use support::{job, project, push};

const T0: i64 = 1_700_000_000_000;

fn success(outputs: serde_json::Value) -> JobOutcome {
    JobOutcome {
        status: JobStatus::Success,
        outputs,
        record: json!({"steps": [{"name": "make", "status": "success"}]}),
        reason: None,
    }
}

fn filter(limit: i64) -> RunFilter {
    RunFilter {
        limit,
        ..RunFilter::default()
    }
}

backend_tests! {
    fn projects_are_upserted_by_name(h) {
        let created = h.upsert_project(&project("shop")).await.unwrap();
        assert_eq!(created.name, "shop");
        assert_eq!(created.settings, json!({"branch": "main"}));
        assert_eq!(created.created_at, created.updated_at);

        // The same content again changes nothing, not even updated_at.
        let same = h.upsert_project(&project("shop")).await.unwrap();
        assert_eq!(same, created);

        let mut changed = project("shop");
        changed.repo = "/srv/git/shop".into();
        changed.settings = json!({"branch": "trunk"});
        let updated = h.upsert_project(&changed).await.unwrap();
        assert_eq!(updated.id, created.id);
        assert_eq!(updated.repo, "/srv/git/shop");
        assert_eq!(updated.settings, json!({"branch": "trunk"}));
        assert_eq!(updated.created_at, created.created_at);

        h.upsert_project(&project("api")).await.unwrap();
        assert_eq!(h.project("shop").await.unwrap(), Some(updated));
        assert_eq!(h.project("nope").await.unwrap(), None);
        let names: Vec<String> = h.projects().await.unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["api", "shop"]);
    }

    fn runs_are_numbered_per_project_and_jobs_start_queued_or_pending(h) {
        h.upsert_project(&project("shop")).await.unwrap();
        h.upsert_project(&project("api")).await.unwrap();
        let jobs = [job("build", &[]), job("lint", &[]), job("test", &["build"]), job("deploy", &["test", "lint"])];
        let (first, first_jobs) = h.create_run(&push("shop", "refs/heads/main"), &jobs, T0).await.unwrap();
        let (second, _) = h.create_run(&push("shop", "refs/heads/main"), &[], T0 + 1).await.unwrap();
        let (other, _) = h.create_run(&push("api", "refs/heads/main"), &[], T0 + 2).await.unwrap();
        assert_eq!((first.number, second.number, other.number), (1, 2, 1));
        assert_eq!(first.status, RunStatus::Queued);
        assert_eq!(first.queued_at, T0);

        let statuses: Vec<(String, JobStatus, Option<i64>)> =
            first_jobs.iter().map(|j| (j.key.clone(), j.status, j.queued_at)).collect();
        assert_eq!(
            statuses,
            [
                ("build".into(), JobStatus::Queued, Some(T0)),
                ("lint".into(), JobStatus::Queued, Some(T0)),
                ("test".into(), JobStatus::Pending, None),
                ("deploy".into(), JobStatus::Pending, None),
            ]
        );
        // What create_run returned is what the store holds.
        assert_eq!(h.run(first.id).await.unwrap(), Some(first.clone()));
        assert_eq!(h.jobs(first.id).await.unwrap(), first_jobs);
        assert_eq!(h.job(first_jobs[3].id).await.unwrap().unwrap().needs, ["test", "lint"]);
        assert_eq!(h.run_by_number("shop", 2).await.unwrap().unwrap().id, second.id);
        assert_eq!(h.run_by_number("api", 2).await.unwrap(), None);
        assert_eq!(h.run(999_999).await.unwrap(), None);

        let stored = h.run(first.id).await.unwrap().unwrap();
        assert_eq!(stored.trigger, json!({"kind": "webhook", "delivery": "d1"}));
        assert_eq!(stored.before.as_deref(), Some("fedcba9876543210fedcba9876543210fedcba98"));
        assert!(stored.pipeline.contains("runs-on: linux"));
    }

    fn a_deployment_job_is_approved_once_while_it_waits_and_deployments_are_recorded(h) {
        h.upsert_project(&project("shop")).await.unwrap();
        let mut deploy = job("deploy", &[]);
        deploy.environment = Some("production".into());
        let mut later = job("later", &["deploy"]);
        later.environment = Some("production".into());
        let (_, jobs) = h.create_run(&push("shop", "refs/heads/main"), &[deploy, later], T0).await.unwrap();
        assert_eq!(jobs[0].environment.as_deref(), Some("production"));
        assert!(h.approve_job(jobs[0].id, "alice", T0 + 5).await.unwrap());
        // Once only: the first approval stands.
        assert!(!h.approve_job(jobs[0].id, "bob", T0 + 6).await.unwrap());
        let stored = h.job(jobs[0].id).await.unwrap().unwrap();
        assert_eq!((stored.approved_by.as_deref(), stored.approved_at), (Some("alice"), Some(T0 + 5)));
        // A job that ran cannot be approved any more.
        h.claim_job(jobs[0].id, "agent", T0 + 60_000, T0 + 7).await.unwrap().unwrap();
        let mut other = job("x", &[]);
        other.environment = Some("staging".into());
        let (_, others) = h.create_run(&push("shop", "refs/heads/main"), &[other], T0).await.unwrap();
        h.claim_job(others[0].id, "agent", T0 + 60_000, T0 + 7).await.unwrap().unwrap();
        assert!(!h.approve_job(others[0].id, "alice", T0 + 8).await.unwrap());

        for (index, outcome) in ["succeeded", "rolled_back"].into_iter().enumerate() {
            h.record_deployment(&NewDeployment {
                environment: "production".into(),
                kind: "deploy".into(),
                release: Some(index as i64 + 1),
                artifact: Some(format!("web@1.{index}")),
                digest: Some(format!("sha256:{}", "a".repeat(64))),
                who: "alice".into(),
                outcome: outcome.into(),
                reason: (index == 1).then(|| "analysis failed".into()),
                report: json!({"hosts": [{"host": "web-1"}], "analyses": []}),
                started_at: T0 + index as i64,
                finished_at: T0 + 10 + index as i64,
            })
            .await
            .unwrap();
        }
        let listed = h.deployments("production", 10).await.unwrap();
        let releases: Vec<Option<i64>> = listed.iter().map(|d| d.release).collect();
        assert_eq!(releases, [Some(2), Some(1)]);
        assert_eq!(listed[0].reason.as_deref(), Some("analysis failed"));
        assert_eq!(listed[0].report["hosts"][0]["host"], "web-1");
        assert!(h.deployments("staging", 10).await.unwrap().is_empty());
    }

    fn a_run_of_an_unknown_project_is_not_found(h) {
        let error = h.create_run(&push("ghost", "refs/heads/main"), &[job("a", &[])], T0).await.unwrap_err();
        assert!(matches!(error, StateError::NotFound { .. }), "{error:?}");
        assert!(h.runs(&filter(10)).await.unwrap().is_empty());
    }

    fn concurrent_run_creation_gives_distinct_numbers(h) {
        h.upsert_project(&project("shop")).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = h.store.clone();
            tasks.push(tokio::spawn(async move {
                store.create_run(&push("shop", "refs/heads/main"), &[job("build", &[])], T0 + i).await.unwrap().0.number
            }));
        }
        let mut numbers = BTreeSet::new();
        for task in tasks {
            numbers.insert(task.await.unwrap());
        }
        assert_eq!(numbers, (1..=8).collect());
    }

    fn runs_are_listed_newest_first_with_a_cursor(h) {
        h.upsert_project(&project("shop")).await.unwrap();
        h.upsert_project(&project("api")).await.unwrap();
        for i in 0..120 {
            let (name, git_ref) = if i % 3 == 0 { ("api", "refs/heads/dev") } else { ("shop", "refs/heads/main") };
            h.create_run(&push(name, git_ref), &[], T0 + i).await.unwrap();
        }
        // Every run exactly once, newest first, in pages of 25.
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = h.runs(&RunFilter { before, limit: 25, ..RunFilter::default() }).await.unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 25);
            before = page.last().map(|r| r.id);
            seen.extend(page.into_iter().map(|r| r.id));
        }
        assert_eq!(seen.len(), 120);
        assert!(seen.windows(2).all(|w| w[0] > w[1]));

        let api = h.runs(&RunFilter { project: Some("api".into()), limit: 500, ..RunFilter::default() }).await.unwrap();
        assert_eq!(api.len(), 40);
        assert!(api.iter().all(|r| r.project == "api" && r.git_ref == "refs/heads/dev"));
        assert_eq!(api[0].number, 40);
        let main = h.runs(&RunFilter { git_ref: Some("refs/heads/main".into()), limit: 500, ..RunFilter::default() }).await.unwrap();
        assert_eq!(main.len(), 80);

        // Cursor and project together: the shop's runs older than its 10th newest.
        let shop = h.runs(&RunFilter { project: Some("shop".into()), limit: 10, ..RunFilter::default() }).await.unwrap();
        let older = h.runs(&RunFilter { project: Some("shop".into()), before: Some(shop[9].id), limit: 500, ..RunFilter::default() }).await.unwrap();
        assert_eq!(shop.len() + older.len(), 80);
        assert_eq!(older[0].number, shop[9].number - 1);

        // Limits are clamped to 1..=500.
        assert_eq!(h.runs(&filter(0)).await.unwrap().len(), 1);
        assert_eq!(h.runs(&filter(-5)).await.unwrap().len(), 1);
        assert_eq!(h.runs(&filter(10_000)).await.unwrap().len(), 120);

        let done = h.runs(&filter(3)).await.unwrap();
        h.transition_run(done[0].id, &[RunStatus::Queued], RunStatus::Success, None, T0).await.unwrap();
        let successes = h.runs(&RunFilter { status: Some(RunStatus::Success), limit: 10, ..RunFilter::default() }).await.unwrap();
        assert_eq!(successes.iter().map(|r| r.id).collect::<Vec<_>>(), [done[0].id]);
    }

    fn run_transitions_are_compare_and_set(h) {
        h.upsert_project(&project("shop")).await.unwrap();
        let (run, _) = h.create_run(&push("shop", "refs/heads/main"), &[], T0).await.unwrap();
        // Not from the current status: nothing changes.
        assert!(!h.transition_run(run.id, &[RunStatus::Running], RunStatus::Success, Some("x"), T0 + 1).await.unwrap());
        assert!(!h.transition_run(run.id, &[], RunStatus::Running, None, T0 + 1).await.unwrap());
        assert_eq!(h.run(run.id).await.unwrap().unwrap(), run);

        assert!(h.transition_run(run.id, &[RunStatus::Queued], RunStatus::Running, None, T0 + 5).await.unwrap());
        let running = h.run(run.id).await.unwrap().unwrap();
        assert_eq!((running.status, running.started_at, running.finished_at), (RunStatus::Running, Some(T0 + 5), None));
        // Running again (a no-op re-assertion) keeps the first start.
        assert!(h.transition_run(run.id, &[RunStatus::Running], RunStatus::Running, None, T0 + 7).await.unwrap());
        assert_eq!(h.run(run.id).await.unwrap().unwrap().started_at, Some(T0 + 5));

        assert!(h.transition_run(run.id, &[RunStatus::Queued, RunStatus::Running], RunStatus::Failure, Some("job `test` failed"), T0 + 9).await.unwrap());
        let failed = h.run(run.id).await.unwrap().unwrap();
        assert_eq!(failed.status, RunStatus::Failure);
        assert_eq!(failed.finished_at, Some(T0 + 9));
        assert_eq!(failed.reason.as_deref(), Some("job `test` failed"));
        assert!(!h.transition_run(run.id, &[RunStatus::Queued, RunStatus::Running], RunStatus::Cancelled, None, T0 + 10).await.unwrap());
    }

    fn active_runs_and_counts_by_status(h) {
        h.upsert_project(&project("shop")).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(h.create_run(&push("shop", "refs/heads/main"), &[], T0 + i).await.unwrap().0.id);
        }
        h.transition_run(ids[0], &[RunStatus::Queued], RunStatus::Running, None, T0).await.unwrap();
        h.transition_run(ids[1], &[RunStatus::Queued], RunStatus::Success, None, T0).await.unwrap();
        h.transition_run(ids[2], &[RunStatus::Queued], RunStatus::Cancelled, None, T0).await.unwrap();
        let active: Vec<i64> = h.active_runs().await.unwrap().iter().map(|r| r.id).collect();
        assert_eq!(active, [ids[0], ids[3], ids[4]]);
        assert_eq!(
            h.count_runs_by_status().await.unwrap(),
            [
                (RunStatus::Queued, 2),
                (RunStatus::Running, 1),
                (RunStatus::Success, 1),
                (RunStatus::Failure, 0),
                (RunStatus::Cancelled, 1),
            ]
        );
    }

    fn job_transitions_set_times_reasons_and_drop_leases(h) {
        h.upsert_project(&project("shop")).await.unwrap();
        let (_, jobs) = h.create_run(&push("shop", "refs/heads/main"), &[job("build", &[]), job("test", &["build"])], T0).await.unwrap();
        let (build, test) = (&jobs[0], &jobs[1]);

        assert!(!h.transition_job(test.id, &[JobStatus::Queued], JobStatus::Running, None, T0 + 1).await.unwrap());
        assert!(h.transition_job(test.id, &[JobStatus::Pending], JobStatus::Queued, None, T0 + 2).await.unwrap());
        let queued = h.job(test.id).await.unwrap().unwrap();
        assert_eq!((queued.status, queued.queued_at), (JobStatus::Queued, Some(T0 + 2)));

        // Cancelling a running job drops its lease: the agent's next heartbeat fails.
        let lease = h.claim_job(build.id, "a1", T0 + 60_000, T0 + 3).await.unwrap().unwrap();
        assert!(h.transition_job(build.id, &[JobStatus::Queued, JobStatus::Running], JobStatus::Cancelled, Some("cancelled by ana"), T0 + 4).await.unwrap());
        let cancelled = h.job(build.id).await.unwrap().unwrap();
        assert_eq!(cancelled.status, JobStatus::Cancelled);
        assert_eq!(cancelled.finished_at, Some(T0 + 4));
        assert_eq!(cancelled.reason.as_deref(), Some("cancelled by ana"));
        assert_eq!((cancelled.lease_token, cancelled.lease_until), (None, None));
        assert!(!h.heartbeat(build.id, &lease.token, T0 + 90_000).await.unwrap());
        assert!(!h.finish_job(build.id, &lease.token, &success(json!({})), T0 + 5).await.unwrap());

        // A reason given as None keeps the stored one.
        assert!(h.transition_job(test.id, &[JobStatus::Queued], JobStatus::Skipped, Some("needs failed"), T0 + 6).await.unwrap());
        assert!(h.transition_job(test.id, &[JobStatus::Skipped], JobStatus::Skipped, None, T0 + 7).await.unwrap());
        assert_eq!(h.job(test.id).await.unwrap().unwrap().reason.as_deref(), Some("needs failed"));
        assert!(!h.transition_job(test.id, &[], JobStatus::Queued, None, T0).await.unwrap());
    }

    fn queued_jobs_come_oldest_first_with_their_waiting_text(h) {
        h.upsert_project(&project("shop")).await.unwrap();
        let (_, first) = h.create_run(&push("shop", "refs/heads/main"), &[job("a", &[]), job("b", &["a"])], T0 + 10).await.unwrap();
        let (_, second) = h.create_run(&push("shop", "refs/heads/main"), &[job("c", &[])], T0).await.unwrap();
        h.set_job_waiting(first[0].id, Some("no agent has the labels [linux]")).await.unwrap();

        let queued = h.queued_jobs(100).await.unwrap();
        let keys: Vec<&str> = queued.iter().map(|j| j.key.as_str()).collect();
        assert_eq!(keys, ["c", "a"]);
        assert_eq!(queued[1].waiting.as_deref(), Some("no agent has the labels [linux]"));
        assert_eq!(h.queued_jobs(1).await.unwrap()[0].id, second[0].id);

        // Claiming clears the waiting text; clearing it explicitly works too.
        h.set_job_waiting(second[0].id, Some("concurrency group `deploy`")).await.unwrap();
        h.set_job_waiting(second[0].id, None).await.unwrap();
        assert_eq!(h.job(second[0].id).await.unwrap().unwrap().waiting, None);
        h.claim_job(first[0].id, "a1", T0 + 1000, T0).await.unwrap().unwrap();
        assert_eq!(h.job(first[0].id).await.unwrap().unwrap().waiting, None);
        assert_eq!(h.queued_jobs(100).await.unwrap().len(), 1);
    }

    fn exactly_one_of_eight_concurrent_claims_wins(h) {
        h.upsert_project(&project("shop")).await.unwrap();
        for round in 0..5 {
            let (_, jobs) = h.create_run(&push("shop", "refs/heads/main"), &[job("build", &[])], T0).await.unwrap();
            let job_id = jobs[0].id;
            let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
            let mut tasks = Vec::new();
            for agent in 0..8 {
                let store = h.store.clone();
                let barrier = barrier.clone();
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    store.claim_job(job_id, &format!("agent-{agent}"), T0 + 30_000, T0 + 1).await.unwrap().map(|lease| (agent, lease))
                }));
            }
            let mut winners = Vec::new();
            for task in tasks {
                winners.extend(task.await.unwrap());
            }
            assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
            let (agent, lease) = &winners[0];
            assert_eq!(lease.attempt, 1);
            assert_eq!(lease.token.len(), 32);
            let stored = h.job(job_id).await.unwrap().unwrap();
            assert_eq!(stored.status, JobStatus::Running);
            assert_eq!(stored.agent, Some(format!("agent-{agent}")));
            assert_eq!(stored.lease_token.as_deref(), Some(lease.token.as_str()));
            assert_eq!((stored.started_at, stored.lease_until, stored.attempt), (Some(T0 + 1), Some(T0 + 30_000), 1));
        }
    }

    fn expired_leases_requeue_until_attempts_run_out(h) {
        h.upsert_project(&project("shop")).await.unwrap();
        let (_, jobs) = h.create_run(&push("shop", "refs/heads/main"), &[job("build", &[])], T0).await.unwrap();
        let id = jobs[0].id;
        assert_eq!(jobs[0].max_attempts, 2);

        let first = h.claim_job(id, "a1", T0 + 100, T0).await.unwrap().unwrap();
        assert!(h.heartbeat(id, &first.token, T0 + 200).await.unwrap());
        assert!(!h.heartbeat(id, "not-the-token", T0 + 900).await.unwrap());
        assert!(h.expired_leases(T0 + 200).await.unwrap().is_empty(), "lease_until is not before now");
        let expired = h.expired_leases(T0 + 201).await.unwrap();
        assert_eq!(expired.iter().map(|j| j.id).collect::<Vec<_>>(), [id]);

        // First loss: back to the queue, lease cleared.
        assert_eq!(h.release_lease(id, &first.token, "lease expired (agent a1)", T0 + 300).await.unwrap(), Some(JobStatus::Queued));
        let requeued = h.job(id).await.unwrap().unwrap();
        assert_eq!(requeued.status, JobStatus::Queued);
        assert_eq!((requeued.lease_token, requeued.lease_until), (None, None));
        assert_eq!(requeued.queued_at, Some(T0 + 300));
        assert_eq!(requeued.reason.as_deref(), Some("lease expired (agent a1)"));
        assert_eq!(requeued.finished_at, None);
        // The old token is worth nothing now.
        assert_eq!(h.release_lease(id, &first.token, "again", T0 + 301).await.unwrap(), None);
        assert!(!h.heartbeat(id, &first.token, T0 + 9_000).await.unwrap());

        // Second claim: attempt 2, a new token, the first start kept.
        let second = h.claim_job(id, "a2", T0 + 500, T0 + 400).await.unwrap().unwrap();
        assert_eq!(second.attempt, 2);
        assert_ne!(second.token, first.token);
        let running = h.job(id).await.unwrap().unwrap();
        assert_eq!((running.started_at, running.agent.as_deref()), (Some(T0), Some("a2")));

        // Second loss: attempts are used up, the job fails.
        assert_eq!(h.release_lease(id, &second.token, "lease expired (agent a2)", T0 + 600).await.unwrap(), Some(JobStatus::Failure));
        let failed = h.job(id).await.unwrap().unwrap();
        assert_eq!(failed.status, JobStatus::Failure);
        assert_eq!(failed.finished_at, Some(T0 + 600));
        assert_eq!(failed.reason.as_deref(), Some("lease expired (agent a2)"));
        assert_eq!(failed.lease_token, None);
        assert!(h.claim_job(id, "a3", T0 + 900, T0 + 700).await.unwrap().is_none());
        assert!(h.expired_leases(T0 + 10_000).await.unwrap().is_empty());
    }

    fn finishing_needs_the_current_lease(h) {
        h.upsert_project(&project("shop")).await.unwrap();
        let (_, jobs) = h.create_run(&push("shop", "refs/heads/main"), &[job("build", &[])], T0).await.unwrap();
        let id = jobs[0].id;
        let stale = h.claim_job(id, "a1", T0 + 100, T0).await.unwrap().unwrap();
        h.release_lease(id, &stale.token, "lease expired", T0 + 200).await.unwrap();
        let current = h.claim_job(id, "a2", T0 + 1_000, T0 + 300).await.unwrap().unwrap();
        let before = h.job(id).await.unwrap().unwrap();

        // The first agent comes back late: its report is refused and nothing changes.
        assert!(!h.finish_job(id, &stale.token, &success(json!({"v": "stale"})), T0 + 400).await.unwrap());
        assert_eq!(h.job(id).await.unwrap().unwrap(), before);

        let error = h.finish_job(id, &current.token, &JobOutcome { status: JobStatus::Running, ..success(json!({})) }, T0).await.unwrap_err();
        assert!(matches!(error, StateError::Invalid { .. }), "{error:?}");
        assert_eq!(h.job(id).await.unwrap().unwrap(), before);

        assert!(h.finish_job(id, &current.token, &success(json!({"version": "1.2.3"})), T0 + 500).await.unwrap());
        let done = h.job(id).await.unwrap().unwrap();
        assert_eq!(done.status, JobStatus::Success);
        assert_eq!(done.outputs, json!({"version": "1.2.3"}));
        assert_eq!(done.record, json!({"steps": [{"name": "make", "status": "success"}]}));
        assert_eq!((done.finished_at, done.lease_token, done.lease_until, done.reason), (Some(T0 + 500), None, None, None));
        // Once finished, the token holds nothing.
        assert!(!h.finish_job(id, &current.token, &success(json!({})), T0 + 600).await.unwrap());
        assert!(!h.heartbeat(id, &current.token, T0 + 2_000).await.unwrap());
        assert_eq!(h.release_lease(id, &current.token, "x", T0 + 700).await.unwrap(), None);
    }

    fn a_finish_and_a_release_racing_for_one_lease_have_one_winner(h) {
        h.upsert_project(&project("shop")).await.unwrap();
        for _ in 0..5 {
            let (_, jobs) = h.create_run(&push("shop", "refs/heads/main"), &[job("build", &[])], T0).await.unwrap();
            let id = jobs[0].id;
            let lease = h.claim_job(id, "a1", T0 + 100, T0).await.unwrap().unwrap();
            let (store, token) = (h.store.clone(), lease.token.clone());
            let finish = tokio::spawn(async move { store.finish_job(id, &token, &success(json!({})), T0 + 150).await.unwrap() });
            let (store, token) = (h.store.clone(), lease.token.clone());
            let release = tokio::spawn(async move { store.release_lease(id, &token, "lease expired", T0 + 150).await.unwrap() });
            let finished = finish.await.unwrap();
            let released = release.await.unwrap();
            assert!(finished != released.is_some(), "finished {finished}, released {released:?}");
            let status = h.job(id).await.unwrap().unwrap().status;
            assert_eq!(status, if finished { JobStatus::Success } else { JobStatus::Queued });
        }
    }

    fn steps_of_the_current_attempt(h) {
        h.upsert_project(&project("shop")).await.unwrap();
        let (_, jobs) = h.create_run(&push("shop", "refs/heads/main"), &[job("build", &[])], T0).await.unwrap();
        let id = jobs[0].id;
        let lease = h.claim_job(id, "a1", T0 + 100, T0).await.unwrap().unwrap();
        let step = |attempt, index, status: &str| StepState {
            job_id: id,
            attempt,
            index,
            name: format!("step {index}"),
            status: status.into(),
            started_at: Some(T0 + index),
            finished_at: None,
            reason: None,
        };
        h.upsert_step(&step(1, 1, "running")).await.unwrap();
        h.upsert_step(&step(1, 0, "running")).await.unwrap();
        h.upsert_step(&StepState { finished_at: Some(T0 + 9), ..step(1, 0, "success") }).await.unwrap();
        let steps = h.steps(id).await.unwrap();
        assert_eq!(steps, [StepState { finished_at: Some(T0 + 9), ..step(1, 0, "success") }, step(1, 1, "running")]);

        // A second attempt's steps replace the first's in the view.
        h.release_lease(id, &lease.token, "lease expired", T0 + 200).await.unwrap();
        h.claim_job(id, "a2", T0 + 400, T0 + 300).await.unwrap().unwrap();
        assert!(h.steps(id).await.unwrap().is_empty());
        h.upsert_step(&step(2, 0, "failure")).await.unwrap();
        assert_eq!(h.steps(id).await.unwrap(), [step(2, 0, "failure")]);

        let error = h.upsert_step(&StepState { job_id: 999_999, ..step(1, 0, "running") }).await.unwrap_err();
        assert!(matches!(error, StateError::NotFound { .. }), "{error:?}");
    }

    fn log_chunks_are_idempotent_and_paged(h) {
        h.upsert_project(&project("shop")).await.unwrap();
        let (_, jobs) = h.create_run(&push("shop", "refs/heads/main"), &[job("build", &[])], T0).await.unwrap();
        let id = jobs[0].id;
        let lease = h.claim_job(id, "a1", T0 + 100, T0).await.unwrap().unwrap();
        let chunk = |attempt, seq: i64, text: &str| LogChunk { job_id: id, attempt, seq, text: text.into(), at: T0 + seq };
        for seq in 1..=5 {
            assert!(h.append_log(&chunk(1, seq, &format!("line {seq}\n"))).await.unwrap());
        }
        // A resend after a reconnect (even with other text) changes nothing.
        assert!(!h.append_log(&chunk(1, 3, "line 3 again\n")).await.unwrap());
        let all = h.log_chunks(id, None, 0, 100).await.unwrap();
        assert_eq!(all.iter().map(|c| c.text.as_str()).collect::<String>(), "line 1\nline 2\nline 3\nline 4\nline 5\n");
        assert_eq!(h.log_chunks(id, None, 2, 2).await.unwrap(), [chunk(1, 3, "line 3\n"), chunk(1, 4, "line 4\n")]);
        assert!(h.log_chunks(id, None, 5, 100).await.unwrap().is_empty());

        // A second attempt numbers its chunks anew; the default view follows the job's attempt.
        h.release_lease(id, &lease.token, "lease expired", T0 + 200).await.unwrap();
        h.claim_job(id, "a2", T0 + 400, T0 + 300).await.unwrap().unwrap();
        assert!(h.append_log(&chunk(2, 1, "second try\n")).await.unwrap());
        assert_eq!(h.log_chunks(id, None, 0, 100).await.unwrap(), [chunk(2, 1, "second try\n")]);
        assert_eq!(h.log_chunks(id, Some(1), 0, 100).await.unwrap().len(), 5);
        assert!(matches!(h.append_log(&LogChunk { job_id: 999_999, ..chunk(1, 1, "x\n") }).await, Err(StateError::NotFound { .. })));
    }

    fn test_cases_are_replaced_per_job(h) {
        h.upsert_project(&project("shop")).await.unwrap();
        let (_, jobs) = h.create_run(&push("shop", "refs/heads/main"), &[job("test", &[]), job("other", &[])], T0).await.unwrap();
        let case = |name: &str, status: &str| TestCase {
            suite: "cart".into(),
            name: name.into(),
            status: status.into(),
            duration_ms: Some(12),
            message: (status == "failed").then(|| "expected 2, got 3".into()),
        };
        h.put_test_cases(jobs[0].id, &[case("adds", "passed"), case("removes", "failed")]).await.unwrap();
        h.put_test_cases(jobs[1].id, &[case("other", "skipped")]).await.unwrap();
        assert_eq!(h.test_cases(jobs[0].id).await.unwrap(), [case("adds", "passed"), case("removes", "failed")]);
        h.put_test_cases(jobs[0].id, &[case("totals", "error")]).await.unwrap();
        assert_eq!(h.test_cases(jobs[0].id).await.unwrap(), [case("totals", "error")]);
        assert_eq!(h.test_cases(jobs[1].id).await.unwrap(), [case("other", "skipped")]);
        h.put_test_cases(jobs[0].id, &[]).await.unwrap();
        assert!(h.test_cases(jobs[0].id).await.unwrap().is_empty());
    }

    fn users_are_unique_by_name(h) {
        let ana = h.create_user("ana", T0).await.unwrap();
        assert_eq!((ana.name.as_str(), ana.created_at), ("ana", T0));
        assert!(matches!(h.create_user("ana", T0 + 1).await, Err(StateError::Conflict { .. })));
        assert_eq!(h.user("ana").await.unwrap(), Some(ana.clone()));
        assert_eq!(h.user("bob").await.unwrap(), None);
        let bob = h.create_user("bob", T0 + 2).await.unwrap();
        assert_ne!(bob.id, ana.id);
        assert_eq!(h.users().await.unwrap(), [ana, bob]);
    }

    fn role_of_is_the_highest_of_project_and_global_grants(h) {
        let ana = h.create_user("ana", T0).await.unwrap();
        assert_eq!(h.role_of(ana.id, Some("shop")).await.unwrap(), None);

        h.grant(ana.id, None, Role::Developer).await.unwrap();
        h.grant(ana.id, Some("shop"), Role::Admin).await.unwrap();
        h.grant(ana.id, Some("api"), Role::Viewer).await.unwrap();
        assert_eq!(h.role_of(ana.id, Some("shop")).await.unwrap(), Some(Role::Admin));
        assert_eq!(h.role_of(ana.id, Some("api")).await.unwrap(), Some(Role::Developer));
        assert_eq!(h.role_of(ana.id, Some("web")).await.unwrap(), Some(Role::Developer));
        assert_eq!(h.role_of(ana.id, None).await.unwrap(), Some(Role::Developer));

        // A grant replaces the one for the same scope.
        h.grant(ana.id, None, Role::Viewer).await.unwrap();
        assert_eq!(h.role_of(ana.id, Some("web")).await.unwrap(), Some(Role::Viewer));
        assert_eq!(h.role_of(ana.id, Some("shop")).await.unwrap(), Some(Role::Admin));
        h.grant(ana.id, Some("shop"), Role::Viewer).await.unwrap();
        assert_eq!(h.role_of(ana.id, Some("shop")).await.unwrap(), Some(Role::Viewer));
        assert!(h.revoke_grant(ana.id, None).await.unwrap());
        assert!(!h.revoke_grant(ana.id, None).await.unwrap());
        assert_eq!(h.role_of(ana.id, Some("web")).await.unwrap(), None);

        assert!(matches!(h.grant(999_999, None, Role::Admin).await, Err(StateError::NotFound { .. })));
        assert!(Role::Viewer < Role::Developer && Role::Developer < Role::Admin);
    }

    fn tokens_are_found_by_hash_and_revoked(h) {
        let ana = h.create_user("ana", T0).await.unwrap();
        let user_token = NewToken { name: "laptop".into(), kind: TokenKind::User, user_id: Some(ana.id), hash: [7; 32], expires_at: Some(T0 + 1_000) };
        let agent_token = NewToken { name: "agent-1".into(), kind: TokenKind::Agent, user_id: None, hash: [9; 32], expires_at: None };
        let created = h.create_token(&user_token, T0).await.unwrap();
        assert_eq!((created.name.as_str(), created.kind, created.user_id, created.created_at), ("laptop", TokenKind::User, Some(ana.id), T0));
        assert_eq!((created.last_used_at, created.expires_at, created.revoked_at), (None, Some(T0 + 1_000), None));
        let agent = h.create_token(&agent_token, T0 + 1).await.unwrap();

        assert_eq!(h.token_by_hash(&[7; 32]).await.unwrap(), Some(created.clone()));
        assert_eq!(h.token_by_hash(&[9; 32]).await.unwrap(), Some(agent.clone()));
        assert_eq!(h.token_by_hash(&[8; 32]).await.unwrap(), None);
        assert!(matches!(h.create_token(&user_token, T0).await, Err(StateError::Conflict { .. })));
        let orphan = NewToken { user_id: Some(999_999), hash: [1; 32], ..user_token.clone() };
        assert!(matches!(h.create_token(&orphan, T0).await, Err(StateError::NotFound { .. })));

        h.touch_token(created.id, T0 + 50).await.unwrap();
        let touched = h.token_by_hash(&[7; 32]).await.unwrap().unwrap();
        assert_eq!(touched.last_used_at, Some(T0 + 50));
        assert!(touched.is_usable(T0 + 999));
        assert!(!touched.is_usable(T0 + 1_000), "expired");

        assert!(h.revoke_token(agent.id, T0 + 60).await.unwrap());
        assert!(!h.revoke_token(agent.id, T0 + 70).await.unwrap());
        assert!(!h.revoke_token(999_999, T0 + 70).await.unwrap());
        let revoked = h.token_by_hash(&[9; 32]).await.unwrap().unwrap();
        assert_eq!(revoked.revoked_at, Some(T0 + 60));
        assert!(!revoked.is_usable(T0 + 61));
        let listed: Vec<(i64, Option<i64>)> = h.tokens().await.unwrap().iter().map(|t| (t.id, t.revoked_at)).collect();
        assert_eq!(listed, [(created.id, None), (agent.id, Some(T0 + 60))]);
    }

    fn secrets_are_scoped_and_project_ones_come_first(h) {
        h.put_secret(None, "REGISTRY_TOKEN", "global-registry", T0).await.unwrap();
        h.put_secret(None, "SLACK", "global-slack", T0).await.unwrap();
        h.put_secret(Some("shop"), "REGISTRY_TOKEN", "shop-registry", T0 + 1).await.unwrap();
        h.put_secret(Some("api"), "DB", "api-db", T0 + 2).await.unwrap();

        assert_eq!(h.secret(None, "REGISTRY_TOKEN").await.unwrap().as_deref(), Some("global-registry"));
        assert_eq!(h.secret(Some("shop"), "REGISTRY_TOKEN").await.unwrap().as_deref(), Some("shop-registry"));
        assert_eq!(h.secret(Some("shop"), "SLACK").await.unwrap(), None, "secret() reads one scope");

        let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            h.secrets_for("shop", &names(&["SLACK", "REGISTRY_TOKEN", "DB", "SLACK"])).await.unwrap(),
            [("SLACK".to_string(), "global-slack".to_string()), ("REGISTRY_TOKEN".into(), "shop-registry".into())]
        );
        assert_eq!(h.secrets_for("api", &names(&["DB", "REGISTRY_TOKEN"])).await.unwrap(),
            [("DB".to_string(), "api-db".to_string()), ("REGISTRY_TOKEN".into(), "global-registry".into())]);
        assert!(h.secrets_for("shop", &[]).await.unwrap().is_empty());

        // Updating keeps one row and moves updated_at.
        h.put_secret(Some("shop"), "REGISTRY_TOKEN", "rotated", T0 + 10).await.unwrap();
        assert_eq!(h.secret(Some("shop"), "REGISTRY_TOKEN").await.unwrap().as_deref(), Some("rotated"));
        let info = h.secret_names(Some("shop")).await.unwrap();
        assert_eq!(info.len(), 1);
        assert_eq!((info[0].project.as_deref(), info[0].name.as_str(), info[0].updated_at), (Some("shop"), "REGISTRY_TOKEN", T0 + 10));
        let global: Vec<(Option<String>, String)> = h.secret_names(None).await.unwrap().into_iter().map(|i| (i.project, i.name)).collect();
        assert_eq!(global, [(None, "REGISTRY_TOKEN".to_string()), (None, "SLACK".to_string())]);

        assert!(h.delete_secret(Some("shop"), "REGISTRY_TOKEN").await.unwrap());
        assert!(!h.delete_secret(Some("shop"), "REGISTRY_TOKEN").await.unwrap());
        assert_eq!(h.secrets_for("shop", &names(&["REGISTRY_TOKEN"])).await.unwrap(), [("REGISTRY_TOKEN".to_string(), "global-registry".to_string())]);

        // Unicode and empty values survive the round trip.
        h.put_secret(None, "EMPTY", "", T0).await.unwrap();
        h.put_secret(None, "UNICODE", "pässwörd ✓", T0).await.unwrap();
        assert_eq!(h.secret(None, "EMPTY").await.unwrap().as_deref(), Some(""));
        assert_eq!(h.secret(None, "UNICODE").await.unwrap().as_deref(), Some("pässwörd ✓"));
    }

    fn secrets_open_only_with_their_key_and_on_their_row(h) {
        h.put_secret(Some("shop"), "TOKEN", "shop-value", T0).await.unwrap();
        h.put_secret(Some("api"), "TOKEN", "api-value", T0).await.unwrap();
        h.put_secret(None, "OTHER", "other-value", T0).await.unwrap();

        let wrong = h.reopen(SecretKey::random()).await;
        let error = wrong.secret(Some("shop"), "TOKEN").await.unwrap_err();
        assert!(matches!(&error, StateError::Decrypt { name } if name == "TOKEN"), "{error:?}");
        assert!(matches!(wrong.secrets_for("shop", &["TOKEN".into()]).await, Err(StateError::Decrypt { .. })));
        // Names are still listed: they are not secret.
        assert_eq!(wrong.secret_names(Some("shop")).await.unwrap().len(), 1);
        wrong.close().await;

        let right = h.reopen(h.key.clone()).await;
        assert_eq!(right.secret(Some("shop"), "TOKEN").await.unwrap().as_deref(), Some("shop-value"));
        right.close().await;

        // Someone with write access to the database swaps sealed values between rows: they
        // do not open, because the scope and name are bound into each.
        let pool = raw_pool(&h).await;
        sqlx::query("UPDATE secrets SET sealed = (SELECT sealed FROM secrets WHERE project = 'api' AND name = 'TOKEN') WHERE project = 'shop' AND name = 'TOKEN'")
            .execute(&pool).await.unwrap();
        sqlx::query("UPDATE secrets SET sealed = (SELECT sealed FROM secrets WHERE project = '' AND name = 'OTHER') WHERE project = 'api' AND name = 'TOKEN'")
            .execute(&pool).await.unwrap();
        pool.close().await;
        assert!(matches!(h.secret(Some("shop"), "TOKEN").await, Err(StateError::Decrypt { .. })));
        assert!(matches!(h.secret(Some("api"), "TOKEN").await, Err(StateError::Decrypt { .. })));
        assert_eq!(h.secret(None, "OTHER").await.unwrap().as_deref(), Some("other-value"));
    }

    fn agents_are_upserted_by_name(h) {
        let agent = |name: &str, seen| AgentInfo { name: name.into(), labels: vec!["linux".into(), "arch=x64".into()], capacity: 2, version: "0.1.0".into(), last_seen: seen };
        h.upsert_agent(&agent("b", T0)).await.unwrap();
        h.upsert_agent(&agent("a", T0)).await.unwrap();
        let again = AgentInfo { capacity: 4, labels: vec!["gpu".into()], ..agent("b", T0 + 5) };
        h.upsert_agent(&again).await.unwrap();
        assert_eq!(h.agents().await.unwrap(), [agent("a", T0), again]);
    }

    fn the_audit_log_pages_newest_first(h) {
        for i in 0..30 {
            h.audit(&NewAudit {
                at: T0 + i,
                actor: "ana".into(),
                action: if i % 2 == 0 { "POST /api/v1/secrets".into() } else { "token.create".into() },
                target: format!("secret/{i}"),
                source: "127.0.0.1:5555".into(),
                status: 201,
                details: json!({"i": i}),
            })
            .await
            .unwrap();
        }
        let page = h.audit_log(None, 10).await.unwrap();
        assert_eq!(page.len(), 10);
        assert_eq!(page[0].at, T0 + 29);
        assert_eq!(page[0].details, json!({"i": 29}));
        assert_eq!((page[0].action.as_str(), page[0].status, page[0].source.as_str()), ("token.create", 201, "127.0.0.1:5555"));
        let next = h.audit_log(page.last().map(|e| e.id), 100).await.unwrap();
        assert_eq!(next.len(), 20);
        assert_eq!(next[0].at, T0 + 19);
        assert_eq!(h.audit_log(None, 0).await.unwrap().len(), 1);
    }

    fn meta_values_are_set_and_replaced(h) {
        assert_eq!(h.meta("poll:shop").await.unwrap(), None);
        h.set_meta("poll:shop", "{\"refs/heads/main\":\"abc\"}").await.unwrap();
        h.set_meta("poll:shop", "{\"refs/heads/main\":\"def\"}").await.unwrap();
        h.set_meta("schedule:nightly", "1700000000000").await.unwrap();
        assert_eq!(h.meta("poll:shop").await.unwrap().as_deref(), Some("{\"refs/heads/main\":\"def\"}"));
        assert_eq!(h.meta("schedule:nightly").await.unwrap().as_deref(), Some("1700000000000"));
    }

    fn reopening_keeps_everything_and_migrates_once(h) {
        h.upsert_project(&project("shop")).await.unwrap();
        let (run, jobs) = h.create_run(&push("shop", "refs/heads/main"), &[job("build", &[])], T0).await.unwrap();
        h.store.close().await;
        let again = h.reopen(h.key.clone()).await;
        let third = h.reopen(h.key.clone()).await;
        assert_eq!(again.run(run.id).await.unwrap(), Some(run));
        assert_eq!(third.jobs(jobs[0].run_id).await.unwrap(), jobs);
        // The counter carries on after a restart.
        assert_eq!(again.create_run(&push("shop", "refs/heads/main"), &[], T0).await.unwrap().0.number, 2);
        let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM sorat_migrations ORDER BY version")
            .fetch_all(&raw_pool(&h).await).await.unwrap();
        assert_eq!(versions, [1, 2]);
        again.close().await;
        third.close().await;
    }
}

/// A pool on the harness's database without the store, to look at or tamper with rows.
async fn raw_pool(h: &support::Harness) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let url = match &h.dir {
        Some(dir) => format!("sqlite://{}", dir.path().join("data/state.db").display()),
        None => h.url.clone(),
    };
    sqlx::AnyPool::connect(&url).await.unwrap()
}

// ---- SQLite only: the file itself ----

#[tokio::test]
async fn the_sqlite_file_never_holds_a_secret_in_plaintext() {
    let h = support::Harness::sqlite().await;
    let value = "hunter2-Zm9vYmFyYmF6-plaintext-canary";
    h.put_secret(Some("shop"), "CANARY", value, T0)
        .await
        .unwrap();
    h.put_secret(None, "CANARY", value, T0).await.unwrap();
    assert_eq!(
        h.secret(None, "CANARY").await.unwrap().as_deref(),
        Some(value)
    );

    let data = h.dir.as_ref().unwrap().path().join("data");
    // Every byte of the database's files: the main file, the WAL, the shared-memory index.
    let read_all = || {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(&data).unwrap() {
            // A file may go away between listing and reading (the WAL index at close).
            if let Ok(bytes) = std::fs::read(entry.unwrap().path()) {
                all.extend(bytes);
            }
        }
        all
    };
    let contains = |bytes: &[u8], needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(data.join("state.db-wal").exists(), "WAL mode");
    let open_files = read_all();
    h.store.close().await;
    let closed_files = read_all();
    for bytes in [&open_files, &closed_files] {
        assert!(
            !contains(bytes, value.as_bytes()),
            "plaintext in the database files"
        );
        // The name is stored in the clear (it is not secret), which proves the scan sees the rows.
        assert!(contains(bytes, b"CANARY"));
    }
}

#[tokio::test]
async fn open_accepts_a_folder_or_a_sqlite_url_and_rejects_others() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("nested/data");
    let store = sorat_state::Store::open(folder.to_str().unwrap(), SecretKey::random())
        .await
        .unwrap();
    assert!(folder.join("state.db").is_file());
    store.close().await;

    let file = dir.path().join("odd name?#%/other.db");
    let url = format!(
        "sqlite://{}/odd%20name%3F%23%25/other.db",
        dir.path().display()
    );
    let store = sorat_state::Store::open(&url, SecretKey::random())
        .await
        .unwrap();
    store.set_meta("k", "v").await.unwrap();
    store.close().await;
    assert!(file.is_file());

    for bad in ["mysql://localhost/db", "", "sqlite::memory:"] {
        let error = sorat_state::Store::open(bad, SecretKey::random())
            .await
            .unwrap_err();
        assert!(
            matches!(error, StateError::BadUrl { .. }),
            "{bad}: {error:?}"
        );
    }
    let error = sorat_state::Store::open(
        folder.join("state.db").to_str().unwrap(),
        SecretKey::random(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, StateError::BadUrl { .. }),
        "a file given as the data folder: {error:?}"
    );
}
