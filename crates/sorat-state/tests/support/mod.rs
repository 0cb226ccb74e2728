//! The harness every store test runs through: a fresh database per test, on SQLite (always,
//! in a temporary folder) and on PostgreSQL (a schema of its own in the server named by
//! `SORAT_TEST_POSTGRES`, so tests run in parallel; `.ci/postgres` starts one).

#![allow(dead_code, reason = "each test binary uses part of the harness")]

use std::ops::Deref;

use sorat_state::{Backend, NewJob, NewProject, NewRun, SecretKey, Store};
use sqlx::Connection;

/// A store on a fresh database, and what it takes to open that database again.
pub(crate) struct Harness {
    pub store: Store,
    pub key: SecretKey,
    /// What `Store::open` was given.
    pub url: String,
    /// The SQLite data folder (kept alive for the test's length).
    pub dir: Option<tempfile::TempDir>,
    /// The PostgreSQL schema, dropped by `finish`.
    schema: Option<String>,
}

impl Deref for Harness {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.store
    }
}

impl Harness {
    /// A store in a new temporary data folder.
    pub(crate) async fn sqlite() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("data").to_str().unwrap().to_owned();
        let key = SecretKey::random();
        let store = Store::open(&url, key.clone()).await.unwrap();
        assert_eq!(store.backend(), Backend::Sqlite);
        Harness {
            store,
            key,
            url,
            dir: Some(dir),
            schema: None,
        }
    }

    /// A store in a new schema of the test server; `None` (after saying so) without one.
    pub(crate) async fn postgres() -> Option<Harness> {
        let Ok(base) = std::env::var("SORAT_TEST_POSTGRES") else {
            eprintln!("skipped: SORAT_TEST_POSTGRES is not set (run .ci/postgres)");
            return None;
        };
        let schema = unique_schema_name();
        let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options[search_path]={schema}");
        let key = SecretKey::random();
        let store = Store::open(&url, key.clone()).await.unwrap();
        assert_eq!(store.backend(), Backend::Postgres);
        Some(Harness {
            store,
            key,
            url,
            dir: None,
            schema: Some(schema),
        })
    }

    /// Opens the same database again (as a restarted server would), with `key`.
    pub(crate) async fn reopen(&self, key: SecretKey) -> Store {
        Store::open(&self.url, key).await.unwrap()
    }

    /// Closes the store and drops the test's PostgreSQL schema.
    pub(crate) async fn finish(self) {
        self.store.close().await;
        if let (Some(schema), Ok(base)) = (self.schema, std::env::var("SORAT_TEST_POSTGRES")) {
            let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&mut admin)
                .await
                .unwrap();
        }
    }
}

fn unique_schema_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "t_{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Generates each test twice: `name::sqlite` and `name::postgres`. The body sees the
/// harness under the given name (it derefs to the `Store`).
#[allow(unused_macros, reason = "durability.rs has no per-backend tests")]
macro_rules! backend_tests {
    ($(fn $name:ident($h:ident) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $h = crate::support::Harness::sqlite().await;
                $body
                $h.finish().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some($h) = crate::support::Harness::postgres().await else { return };
                $body
                $h.finish().await;
            }
        }
    )*};
}

/// A project `name` with a repo and pipeline path.
pub(crate) fn project(name: &str) -> NewProject {
    NewProject {
        name: name.into(),
        repo: format!("https://git.example/{name}.git"),
        pipeline_path: ".sorat/pipeline.yaml".into(),
        settings: serde_json::json!({"branch": "main"}),
    }
}

/// A push run of `project` on `git_ref`.
pub(crate) fn push(project: &str, git_ref: &str) -> NewRun {
    NewRun {
        project: project.into(),
        event: "push".into(),
        git_ref: git_ref.into(),
        sha: "0123456789abcdef0123456789abcdef01234567".into(),
        before: Some("fedcba9876543210fedcba9876543210fedcba98".into()),
        title: "Fix the build".into(),
        actor: "ana".into(),
        trigger: serde_json::json!({"kind": "webhook", "delivery": "d1"}),
        inputs: serde_json::json!({}),
        pipeline: "on: push\njobs:\n  build:\n    runs-on: linux\n    steps: [{run: make}]\n"
            .into(),
        concurrency: None,
    }
}

/// A job `key` that needs `needs`.
pub(crate) fn job(key: &str, needs: &[&str]) -> NewJob {
    NewJob {
        key: key.into(),
        name: key.into(),
        needs: needs.iter().map(|n| n.to_string()).collect(),
        runs_on: vec!["linux".into()],
        concurrency: None,
        max_attempts: 2,
        environment: None,
    }
}
