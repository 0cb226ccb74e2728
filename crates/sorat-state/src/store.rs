//! `Store`: opening, and every query. Each query is written once and runs on both backends.
//!
//! # Why `sqlx::Any`
//!
//! The store talks to SQLite and PostgreSQL through sqlx's `Any` driver rather than an enum
//! of `SqlitePool`/`PgPool`. With the enum, every method would need a `match` with the same
//! query twice (sqlx's typed executors cannot be abstracted over without a generic maze of
//! `for<'c> &'c mut DB::Connection: Executor<'c>` bounds); with `Any`, each query is one
//! string and one decoding function, so the two backends cannot drift apart. What `Any`
//! costs is a small type vocabulary (integers, floats, text, bytes), which is all the schema
//! uses by design: times are `BIGINT` milliseconds, JSON is `TEXT`, enums are words. The SQL
//! is the common dialect: `$1` placeholders (SQLite accepts them), `RETURNING`,
//! `ON CONFLICT … DO UPDATE/NOTHING`; the DDL differences live in `migrations`.
//!
//! # Concurrency
//!
//! Every compare-and-set (claiming a job, heartbeats, releasing and finishing leases, status
//! transitions) is a single conditional `UPDATE … WHERE status … AND lease_token …`, judged
//! by the rows it touched or returned. PostgreSQL re-checks the `WHERE` of a row another
//! transaction changed meanwhile; SQLite runs one writer at a time. Multi-statement writes
//! (creating a run with its jobs) are transactions that begin with a write, and on SQLite
//! with `BEGIN IMMEDIATE`, so they never fail by upgrading a stale read snapshot.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};

use crate::key::{SecretKey, random_bytes};
use crate::rows::{
    self, DEPLOYMENT_COLUMNS, JOB_COLUMNS, PROJECT_COLUMNS, RUN_COLUMNS, RUN_LIST_COLUMNS,
    TOKEN_COLUMNS, to_json,
};
use crate::types::{
    AgentInfo, AuditEntry, Backend, Deployment, Job, JobOutcome, JobStatus, Lease, LogChunk,
    NewAudit, NewDeployment, NewJob, NewProject, NewRun, NewToken, Project, Role, Run, RunFilter,
    RunStatus, SecretInfo, StepState, TestCase, Token, User,
};
use crate::{Millis, Result, StateError};

/// How long a SQLite connection waits for another writer before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections per pool. SQLite has one writer at a time anyway; readers run beside it.
const SQLITE_CONNECTIONS: u32 = 8;
const POSTGRES_CONNECTIONS: u32 = 10;

/// The server's state store: a cheap handle (clone it freely) over a connection pool and the
/// key that seals secrets.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    key: SecretKey,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// A value bound to a query built at run time.
enum Arg {
    Int(i64),
    Text(String),
}

/// "All projects" / "global" in the `grants.project` and `secrets.project` columns.
const ALL_PROJECTS: &str = "";

fn scope(project: Option<&str>) -> &str {
    project.unwrap_or(ALL_PROJECTS)
}

/// `status IN ('a', 'b')` from the enums' own words (static text, never caller input).
fn status_in<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    let list: Vec<String> = words.into_iter().map(|w| format!("'{w}'")).collect();
    format!("status IN ({})", list.join(", "))
}

fn clamp_limit(limit: i64, max: i64) -> i64 {
    limit.clamp(1, max)
}

/// The wall clock, for the few writes whose API takes no `now`.
fn wall_clock() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Maps a foreign-key violation to `NotFound` (the row it refers to is missing).
fn missing(what: impl FnOnce() -> String) -> impl FnOnce(sqlx::Error) -> StateError {
    move |error| match error.as_database_error() {
        Some(db) if db.is_foreign_key_violation() => StateError::NotFound { what: what() },
        _ => StateError::from(error),
    }
}

/// The URL with any password replaced by `***`, for error messages.
fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((credentials, host)) = rest.split_once('@')
        && let Some((user, _password)) = credentials.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_owned()
}

/// Percent-encodes what sqlx's SQLite URL parser would otherwise take as syntax.
fn sqlite_url(path: &Path) -> Result<String> {
    let text = path.to_str().ok_or_else(|| StateError::BadUrl {
        url: path.display().to_string(),
        reason: "the path is not UTF-8".into(),
    })?;
    let mut encoded = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' => encoded.push_str("%25"),
            '?' => encoded.push_str("%3F"),
            '#' => encoded.push_str("%23"),
            _ => encoded.push(c),
        }
    }
    Ok(format!("sqlite://{encoded}?mode=rwc"))
}

/// Decodes `%XX` escapes (a URL's path: `%3F` for `?`, `%25` for `%`).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Where the database is.
enum Target {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Target {
    fn parse(url: &str) -> Result<Target> {
        let bad = |reason: &str| StateError::BadUrl {
            url: redact(url),
            reason: reason.into(),
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target::Postgres(url.to_owned()));
        }
        if let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if rest.is_empty() || rest.contains('?') || rest.starts_with(":memory:") {
                return Err(bad(
                    "give a file: sqlite:///path/to/state.db (no parameters, not in memory)",
                ));
            }
            let path = percent_decode(rest).ok_or_else(|| bad("bad %-escape in the path"))?;
            return Ok(Target::Sqlite(PathBuf::from(path)));
        }
        if url.contains("://") {
            return Err(bad(
                "expected postgres://…, sqlite://<file> or a data folder",
            ));
        }
        if url.is_empty() {
            return Err(bad("empty"));
        }
        let folder = Path::new(url);
        if folder.is_file() {
            return Err(bad("is a file: give its folder, or sqlite://<file>"));
        }
        Ok(Target::Sqlite(folder.join("state.db")))
    }
}

impl Store {
    /// Opens the store: `postgres://…` (or `postgresql://…`), `sqlite://<file>`, or a path to
    /// a data folder (then `<folder>/state.db`; the folder is created when missing). Creates
    /// the database file when needed and applies every pending migration.
    ///
    /// SQLite runs in WAL mode with `synchronous=FULL` (a commit is on disk when it returns),
    /// foreign keys on and a busy timeout, so concurrent writers wait instead of failing.
    pub async fn open(url: &str, key: SecretKey) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let store = match Target::parse(url)? {
            Target::Sqlite(file) => {
                if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|error| StateError::BadUrl {
                        url: url.to_owned(),
                        reason: format!("cannot create {}: {error}", parent.display()),
                    })?;
                }
                let pool = AnyPoolOptions::new()
                    .max_connections(SQLITE_CONNECTIONS)
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            let busy = SQLITE_BUSY_TIMEOUT.as_millis();
                            conn.execute(format!("PRAGMA busy_timeout = {busy}").as_str())
                                .await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            conn.execute("PRAGMA synchronous = FULL").await?;
                            Ok(())
                        })
                    })
                    .connect(&sqlite_url(&file)?)
                    .await
                    .map_err(|error| connect_error(url, error))?;
                // WAL is a property of the file: set once here, kept by every connection.
                let mode: String = sqlx::query("PRAGMA journal_mode = WAL")
                    .fetch_one(&pool)
                    .await?
                    .try_get(0)?;
                if !mode.eq_ignore_ascii_case("wal") {
                    return Err(StateError::Database(format!(
                        "{}: cannot switch to WAL mode (got `{mode}`)",
                        file.display()
                    )));
                }
                Store {
                    pool,
                    backend: Backend::Sqlite,
                    key,
                }
            }
            Target::Postgres(url) => {
                let pool = AnyPoolOptions::new()
                    .max_connections(POSTGRES_CONNECTIONS)
                    .connect(&url)
                    .await
                    .map_err(|error| connect_error(&url, error))?;
                Store {
                    pool,
                    backend: Backend::Postgres,
                    key,
                }
            }
        };
        crate::migrations::migrate(&store, wall_clock()).await?;
        Ok(store)
    }

    /// Which database the store is on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool: waits for connections in use to come back, then closes them all
    /// (on SQLite this checkpoints the WAL). Clones of this store stop working.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction that will write: on SQLite it takes the write lock at once.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    async fn fetch_all(&self, sql: &str, args: Vec<Arg>) -> Result<Vec<AnyRow>> {
        let mut query = sqlx::query::<Any>(sql);
        for arg in args {
            query = match arg {
                Arg::Int(value) => query.bind(value),
                Arg::Text(value) => query.bind(value),
            };
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    // ---- projects ----

    /// Creates the project, or updates its repo, pipeline path and settings (by name).
    /// `updated_at` moves only when one of them changed.
    pub async fn upsert_project(&self, p: &NewProject) -> Result<Project> {
        let now = wall_clock();
        let settings = to_json(&p.settings)?;
        let sql = format!(
            "INSERT INTO projects (name, repo, pipeline_path, settings, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (name) DO UPDATE SET repo = excluded.repo,
                 pipeline_path = excluded.pipeline_path, settings = excluded.settings,
                 updated_at = excluded.updated_at
             WHERE projects.repo <> excluded.repo OR projects.pipeline_path <> excluded.pipeline_path
                 OR projects.settings <> excluded.settings
             RETURNING {PROJECT_COLUMNS}"
        );
        let changed = sqlx::query(&sql)
            .bind(&p.name)
            .bind(&p.repo)
            .bind(&p.pipeline_path)
            .bind(settings)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        match changed {
            Some(row) => rows::project(&row),
            None => self
                .project(&p.name)
                .await?
                .ok_or_else(|| StateError::NotFound {
                    what: format!("project `{}`", p.name),
                }),
        }
    }

    /// The project called `name`.
    pub async fn project(&self, name: &str) -> Result<Option<Project>> {
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE name = $1");
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::project).transpose()
    }

    /// Every project, by name.
    pub async fn projects(&self) -> Result<Vec<Project>> {
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects ORDER BY name");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(rows::project).collect()
    }

    // ---- runs ----

    /// Creates a run and its jobs in one transaction. The run's number is the project's
    /// previous highest + 1 (a counter on the project, so concurrent creations get distinct
    /// numbers and a deleted run's number is never reused). The run starts `Queued`; jobs
    /// whose `needs` is empty start `Queued` (queued at `now`), the others `Pending`.
    /// `NotFound` when the project does not exist.
    pub async fn create_run(
        &self,
        run: &NewRun,
        jobs: &[NewJob],
        now: Millis,
    ) -> Result<(Run, Vec<Job>)> {
        let trigger = to_json(&run.trigger)?;
        let inputs = to_json(&run.inputs)?;
        let mut tx = self.begin_write().await?;
        let numbered = sqlx::query(
            "UPDATE projects SET last_run_number = last_run_number + 1 WHERE name = $1
             RETURNING id, last_run_number",
        )
        .bind(&run.project)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StateError::NotFound {
            what: format!("project `{}`", run.project),
        })?;
        let project_id: i64 = numbered.try_get("id")?;
        let number: i64 = numbered.try_get("last_run_number")?;
        let run_id: i64 = sqlx::query(
            "INSERT INTO runs (project_id, number, status, event, git_ref, sha, before_sha, title,
                 actor, trigger_info, inputs, pipeline, concurrency, queued_at)
             VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             RETURNING id",
        )
        .bind(project_id)
        .bind(number)
        .bind(&run.event)
        .bind(&run.git_ref)
        .bind(&run.sha)
        .bind(&run.before)
        .bind(&run.title)
        .bind(&run.actor)
        .bind(&trigger)
        .bind(&inputs)
        .bind(&run.pipeline)
        .bind(&run.concurrency)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;

        let mut created = Vec::with_capacity(jobs.len());
        for job in jobs {
            let (status, queued_at) = if job.needs.is_empty() {
                (JobStatus::Queued, Some(now))
            } else {
                (JobStatus::Pending, None)
            };
            let max_attempts = job.max_attempts.max(1);
            let id: i64 = sqlx::query(
                "INSERT INTO jobs (run_id, job_key, name, needs, runs_on, concurrency, status,
                     max_attempts, outputs, record, queued_at, environment)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '{}', 'null', $9, $10)
                 RETURNING id",
            )
            .bind(run_id)
            .bind(&job.key)
            .bind(&job.name)
            .bind(to_json(&job.needs)?)
            .bind(to_json(&job.runs_on)?)
            .bind(&job.concurrency)
            .bind(status.as_str())
            .bind(max_attempts)
            .bind(queued_at)
            .bind(&job.environment)
            .fetch_one(&mut *tx)
            .await?
            .try_get("id")?;
            created.push(Job {
                id,
                run_id,
                key: job.key.clone(),
                name: job.name.clone(),
                needs: job.needs.clone(),
                runs_on: job.runs_on.clone(),
                concurrency: job.concurrency.clone(),
                status,
                waiting: None,
                agent: None,
                attempt: 0,
                max_attempts,
                lease_token: None,
                lease_until: None,
                outputs: serde_json::json!({}),
                record: serde_json::Value::Null,
                reason: None,
                queued_at,
                started_at: None,
                finished_at: None,
                environment: job.environment.clone(),
                approved_by: None,
                approved_at: None,
            });
        }
        tx.commit().await?;
        let stored = Run {
            id: run_id,
            project: run.project.clone(),
            number,
            status: RunStatus::Queued,
            event: run.event.clone(),
            git_ref: run.git_ref.clone(),
            sha: run.sha.clone(),
            before: run.before.clone(),
            title: run.title.clone(),
            actor: run.actor.clone(),
            trigger: run.trigger.clone(),
            inputs: run.inputs.clone(),
            pipeline: run.pipeline.clone(),
            concurrency: run.concurrency.clone(),
            reason: None,
            queued_at: now,
            started_at: None,
            finished_at: None,
        };
        Ok((stored, created))
    }

    /// The run with this id.
    pub async fn run(&self, id: i64) -> Result<Option<Run>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN projects p ON p.id = r.project_id WHERE r.id = $1"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::run).transpose()
    }

    /// The run with this number in this project.
    pub async fn run_by_number(&self, project: &str, number: i64) -> Result<Option<Run>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN projects p ON p.id = r.project_id
             WHERE p.name = $1 AND r.number = $2"
        );
        let row = sqlx::query(&sql)
            .bind(project)
            .bind(number)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::run).transpose()
    }

    /// Runs, newest first, that pass the filter. `before` is a cursor (only runs with a
    /// smaller id: pass the last id of the previous page); the limit is clamped to 1..=500.
    /// A list leaves each run's `pipeline` empty; [`Store::run`] has it.
    pub async fn runs(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        let mut sql = format!(
            "SELECT {RUN_LIST_COLUMNS} FROM runs r JOIN projects p ON p.id = r.project_id WHERE 1 = 1"
        );
        let mut args = Vec::new();
        if let Some(project) = &filter.project {
            args.push(Arg::Text(project.clone()));
            sql += &format!(" AND p.name = ${}", args.len());
        }
        if let Some(status) = filter.status {
            args.push(Arg::Text(status.as_str().to_owned()));
            sql += &format!(" AND r.status = ${}", args.len());
        }
        if let Some(git_ref) = &filter.git_ref {
            args.push(Arg::Text(git_ref.clone()));
            sql += &format!(" AND r.git_ref = ${}", args.len());
        }
        if let Some(before) = filter.before {
            args.push(Arg::Int(before));
            sql += &format!(" AND r.id < ${}", args.len());
        }
        args.push(Arg::Int(clamp_limit(filter.limit, 500)));
        sql += &format!(" ORDER BY r.id DESC LIMIT ${}", args.len());
        self.fetch_all(&sql, args)
            .await?
            .iter()
            .map(rows::run)
            .collect()
    }

    /// How many runs have each status; every status is listed, zeros included.
    pub async fn count_runs_by_status(&self) -> Result<Vec<(RunStatus, i64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM runs GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        let mut counts: Vec<(RunStatus, i64)> = RunStatus::ALL.iter().map(|s| (*s, 0)).collect();
        for row in &rows {
            let status = rows::word::<RunStatus>(row, "status")?;
            let n: i64 = row.try_get("n")?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == status) {
                slot.1 = n;
            }
        }
        Ok(counts)
    }

    /// Sets the run's status when its current status is in `from`: `started_at` when it
    /// becomes `Running` (and was unset), `finished_at` when it becomes terminal, `reason`
    /// when given. Returns false (and changes nothing) otherwise.
    pub async fn transition_run(
        &self,
        id: i64,
        from: &[RunStatus],
        to: RunStatus,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<bool> {
        if from.is_empty() {
            return Ok(false);
        }
        let started = (to == RunStatus::Running).then_some(now);
        let finished = to.is_terminal().then_some(now);
        let sql = format!(
            "UPDATE runs SET status = $1, reason = COALESCE($2, reason),
                 started_at = COALESCE(started_at, $3), finished_at = COALESCE($4, finished_at)
             WHERE id = $5 AND {}",
            status_in(from.iter().map(|s| s.as_str()))
        );
        let done = sqlx::query(&sql)
            .bind(to.as_str())
            .bind(reason)
            .bind(started)
            .bind(finished)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Runs not yet finished (queued or running), oldest first: what the scheduler picks up
    /// after a restart.
    pub async fn active_runs(&self) -> Result<Vec<Run>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN projects p ON p.id = r.project_id
             WHERE r.{} ORDER BY r.id",
            status_in([RunStatus::Queued.as_str(), RunStatus::Running.as_str()])
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(rows::run).collect()
    }

    // ---- jobs ----

    /// The run's jobs, in creation order.
    pub async fn jobs(&self, run_id: i64) -> Result<Vec<Job>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE run_id = $1 ORDER BY id");
        let rows = sqlx::query(&sql).bind(run_id).fetch_all(&self.pool).await?;
        rows.iter().map(rows::job).collect()
    }

    /// The job with this id.
    pub async fn job(&self, id: i64) -> Result<Option<Job>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::job).transpose()
    }

    /// Compare-and-set of a job's status: only when its status is in `from`. Becoming
    /// `Queued` sets `queued_at`; becoming terminal sets `finished_at`; `reason` replaces the
    /// stored reason when given. Any status but `Running` drops the lease (so an agent whose
    /// job was cancelled learns it at its next heartbeat) and, unless still waiting
    /// (`Pending`/`Queued`), the waiting text. Returns whether it changed.
    pub async fn transition_job(
        &self,
        id: i64,
        from: &[JobStatus],
        to: JobStatus,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<bool> {
        if from.is_empty() {
            return Ok(false);
        }
        let queued = (to == JobStatus::Queued).then_some(now);
        let finished = to.is_terminal().then_some(now);
        let lease = if to == JobStatus::Running {
            ""
        } else {
            ", lease_token = NULL, lease_until = NULL"
        };
        let waiting = if matches!(to, JobStatus::Pending | JobStatus::Queued) {
            ""
        } else {
            ", waiting = NULL"
        };
        let sql = format!(
            "UPDATE jobs SET status = $1, reason = COALESCE($2, reason),
                 queued_at = COALESCE($3, queued_at), finished_at = COALESCE($4, finished_at)
                 {lease}{waiting}
             WHERE id = $5 AND {}",
            status_in(from.iter().map(|s| s.as_str()))
        );
        let done = sqlx::query(&sql)
            .bind(to.as_str())
            .bind(reason)
            .bind(queued)
            .bind(finished)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets (or clears) why the job is still waiting.
    pub async fn set_job_waiting(&self, id: i64, why: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE jobs SET waiting = $1 WHERE id = $2")
            .bind(why)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records that `who` approved job `id` (its environment needs an approval). False when
    /// the job is not queued (it ran, ended, or waits for its needs) or was approved already.
    pub async fn approve_job(&self, id: i64, who: &str, now: Millis) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET approved_by = $1, approved_at = $2
             WHERE id = $3 AND approved_by IS NULL AND status IN ('queued', 'pending')",
        )
        .bind(who)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a deployment or rollback; returns its id.
    pub async fn record_deployment(&self, deployment: &NewDeployment) -> Result<i64> {
        let id: i64 = sqlx::query(
            "INSERT INTO deployments (environment, kind, release_number, artifact, digest, who,
                 outcome, reason, report, started_at, finished_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             RETURNING id",
        )
        .bind(&deployment.environment)
        .bind(&deployment.kind)
        .bind(deployment.release)
        .bind(&deployment.artifact)
        .bind(&deployment.digest)
        .bind(&deployment.who)
        .bind(&deployment.outcome)
        .bind(&deployment.reason)
        .bind(to_json(&deployment.report)?)
        .bind(deployment.started_at)
        .bind(deployment.finished_at)
        .fetch_one(&self.pool)
        .await?
        .try_get("id")?;
        Ok(id)
    }

    /// The deployments of `environment`, newest first, at most `limit` (clamped to 1..=1000).
    pub async fn deployments(&self, environment: &str, limit: i64) -> Result<Vec<Deployment>> {
        let sql = format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE environment = $1
             ORDER BY id DESC LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(environment)
            .bind(limit.clamp(1, 1000))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::deployment).collect()
    }

    /// Queued jobs of every run, the longest-queued first, at most `limit` (clamped to
    /// 1..=10000).
    pub async fn queued_jobs(&self, limit: i64) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'queued' ORDER BY queued_at, id LIMIT $1"
        );
        let rows = sqlx::query(&sql)
            .bind(clamp_limit(limit, 10_000))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::job).collect()
    }

    /// Claims a queued job for `agent`, atomically: only if it is still `Queued`, it becomes
    /// `Running` with the agent, the next attempt, a new random lease token and
    /// `lease_until`; `started_at` is set on the first claim. `None` when it was not queued
    /// (someone else got it, or it was cancelled).
    pub async fn claim_job(
        &self,
        id: i64,
        agent: &str,
        lease_until: Millis,
        now: Millis,
    ) -> Result<Option<Lease>> {
        let token = hex::encode(random_bytes::<16>());
        let row = sqlx::query(
            "UPDATE jobs SET status = 'running', agent = $1, attempt = attempt + 1,
                 lease_token = $2, lease_until = $3, started_at = COALESCE(started_at, $4),
                 waiting = NULL
             WHERE id = $5 AND status = 'queued'
             RETURNING attempt",
        )
        .bind(agent)
        .bind(&token)
        .bind(lease_until)
        .bind(now)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Some(Lease {
                job_id: id,
                attempt: row.try_get("attempt")?,
                token,
                lease_until,
            })),
            None => Ok(None),
        }
    }

    /// Extends the lease to `lease_until` if `token` still holds it (the job is running with
    /// that token). false: the lease is lost and the agent must stop the job.
    pub async fn heartbeat(&self, job_id: i64, token: &str, lease_until: Millis) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND status = 'running' AND lease_token = $3",
        )
        .bind(lease_until)
        .bind(job_id)
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Running jobs whose lease ended before `now`, the longest-expired first.
    pub async fn expired_leases(&self, now: Millis) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'running' AND lease_until < $1
             ORDER BY lease_until, id"
        );
        let rows = sqlx::query(&sql).bind(now).fetch_all(&self.pool).await?;
        rows.iter().map(rows::job).collect()
    }

    /// Gives up a lease that `token` still holds: the job goes back to `Queued` (lease
    /// cleared, queued at `now`) while it has attempts left, else to `Failure`; `reason` is
    /// stored either way. Returns the new status, or `None` when the token no longer holds
    /// the lease (nothing changes).
    pub async fn release_lease(
        &self,
        job_id: i64,
        token: &str,
        reason: &str,
        now: Millis,
    ) -> Result<Option<JobStatus>> {
        // One statement: the SET expressions all see the row as it was, so `attempt <
        // max_attempts` decides every column consistently.
        let row = sqlx::query(
            "UPDATE jobs SET
                 status = CASE WHEN attempt < max_attempts THEN 'queued' ELSE 'failure' END,
                 queued_at = CASE WHEN attempt < max_attempts THEN $1 ELSE queued_at END,
                 finished_at = CASE WHEN attempt < max_attempts THEN finished_at ELSE $1 END,
                 reason = $2, lease_token = NULL, lease_until = NULL
             WHERE id = $3 AND status = 'running' AND lease_token = $4
             RETURNING status",
        )
        .bind(now)
        .bind(reason)
        .bind(job_id)
        .bind(token)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(|row| rows::word::<JobStatus>(row, "status"))
            .transpose()
    }

    /// Records how a job ended if `token` still holds its lease: the terminal status, its
    /// outputs and record, the reason and `finished_at`; the lease is cleared. false: the
    /// lease was lost and nothing was written. `Invalid` when the status is not terminal.
    pub async fn finish_job(
        &self,
        job_id: i64,
        token: &str,
        outcome: &JobOutcome,
        now: Millis,
    ) -> Result<bool> {
        if !outcome.status.is_terminal() {
            return Err(StateError::Invalid {
                what: format!("job outcome `{}`: not a terminal status", outcome.status),
            });
        }
        let done = sqlx::query(
            "UPDATE jobs SET status = $1, outputs = $2, record = $3, reason = $4, finished_at = $5,
                 lease_token = NULL, lease_until = NULL, waiting = NULL
             WHERE id = $6 AND status = 'running' AND lease_token = $7",
        )
        .bind(outcome.status.as_str())
        .bind(to_json(&outcome.outputs)?)
        .bind(to_json(&outcome.record)?)
        .bind(outcome.reason.as_deref())
        .bind(now)
        .bind(job_id)
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- steps ----

    /// Stores a step's state, replacing what was stored for the same (job, attempt, index).
    pub async fn upsert_step(&self, step: &StepState) -> Result<()> {
        sqlx::query(
            "INSERT INTO steps (job_id, attempt, step_index, name, status, started_at, finished_at, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (job_id, attempt, step_index) DO UPDATE SET name = excluded.name,
                 status = excluded.status, started_at = excluded.started_at,
                 finished_at = excluded.finished_at, reason = excluded.reason",
        )
        .bind(step.job_id)
        .bind(step.attempt)
        .bind(step.index)
        .bind(&step.name)
        .bind(&step.status)
        .bind(step.started_at)
        .bind(step.finished_at)
        .bind(&step.reason)
        .execute(&self.pool)
        .await
        .map_err(missing(|| format!("job {}", step.job_id)))?;
        Ok(())
    }

    /// The steps of the job's current attempt (its `attempt`), by index.
    pub async fn steps(&self, job_id: i64) -> Result<Vec<StepState>> {
        let rows = sqlx::query(
            "SELECT job_id, attempt, step_index, name, status, started_at, finished_at, reason
             FROM steps WHERE job_id = $1 AND attempt = (SELECT attempt FROM jobs WHERE id = $1)
             ORDER BY step_index",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::step).collect()
    }

    // ---- logs ----

    /// Stores a chunk of log lines. Returns false when that (job, attempt, seq) is already
    /// stored (an agent resending after a reconnect): nothing changes.
    pub async fn append_log(&self, chunk: &LogChunk) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO log_chunks (job_id, attempt, seq, content, at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (job_id, attempt, seq) DO NOTHING",
        )
        .bind(chunk.job_id)
        .bind(chunk.attempt)
        .bind(chunk.seq)
        .bind(&chunk.text)
        .bind(chunk.at)
        .execute(&self.pool)
        .await
        .map_err(missing(|| format!("job {}", chunk.job_id)))?;
        Ok(done.rows_affected() == 1)
    }

    /// Chunks of the job's `attempt` (by default its current attempt) with `seq > after`, in
    /// seq order, at most `limit` (clamped to 1..=10000). A follower that streams a log
    /// should pass the attempt explicitly, since a re-claimed job starts its seqs anew.
    pub async fn log_chunks(
        &self,
        job_id: i64,
        attempt: Option<i64>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<LogChunk>> {
        let rows = sqlx::query(
            "SELECT job_id, attempt, seq, content, at FROM log_chunks
             WHERE job_id = $1 AND attempt = COALESCE($2, (SELECT attempt FROM jobs WHERE id = $1))
                 AND seq > $3
             ORDER BY seq LIMIT $4",
        )
        .bind(job_id)
        .bind(attempt)
        .bind(after)
        .bind(clamp_limit(limit, 10_000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(LogChunk {
                    job_id: row.try_get("job_id")?,
                    attempt: row.try_get("attempt")?,
                    seq: row.try_get("seq")?,
                    text: row.try_get("content")?,
                    at: row.try_get("at")?,
                })
            })
            .collect()
    }

    // ---- test results ----

    /// Replaces the job's test cases with `cases` (in one transaction).
    pub async fn put_test_cases(&self, job_id: i64, cases: &[TestCase]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM test_cases WHERE job_id = $1")
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        for case in cases {
            sqlx::query(
                "INSERT INTO test_cases (job_id, suite, name, status, duration_ms, message)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(job_id)
            .bind(&case.suite)
            .bind(&case.name)
            .bind(&case.status)
            .bind(case.duration_ms)
            .bind(&case.message)
            .execute(&mut *tx)
            .await
            .map_err(missing(|| format!("job {job_id}")))?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The job's test cases, in the order they were put.
    pub async fn test_cases(&self, job_id: i64) -> Result<Vec<TestCase>> {
        let rows = sqlx::query(
            "SELECT suite, name, status, duration_ms, message FROM test_cases WHERE job_id = $1 ORDER BY id",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::test_case).collect()
    }

    // ---- users, grants, tokens ----

    /// Creates a user. `Conflict` when the name is taken.
    pub async fn create_user(&self, name: &str, now: Millis) -> Result<User> {
        let row = sqlx::query(
            "INSERT INTO users (name, created_at) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING RETURNING id, name, created_at",
        )
        .bind(name)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StateError::Conflict {
            what: format!("user `{name}`"),
        })?;
        rows::user(&row)
    }

    /// The user called `name`.
    pub async fn user(&self, name: &str) -> Result<Option<User>> {
        let row = sqlx::query("SELECT id, name, created_at FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::user).transpose()
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query("SELECT id, name, created_at FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::user).collect()
    }

    /// Grants `role` on `project` (`None`: on all projects), replacing the user's grant for
    /// that scope. `NotFound` when the user does not exist.
    pub async fn grant(&self, user_id: i64, project: Option<&str>, role: Role) -> Result<()> {
        sqlx::query(
            "INSERT INTO grants (user_id, project, role) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, project) DO UPDATE SET role = excluded.role",
        )
        .bind(user_id)
        .bind(scope(project))
        .bind(role.as_str())
        .execute(&self.pool)
        .await
        .map_err(missing(|| format!("user {user_id}")))?;
        Ok(())
    }

    /// Removes the user's grant for that scope. Returns whether there was one.
    pub async fn revoke_grant(&self, user_id: i64, project: Option<&str>) -> Result<bool> {
        let done = sqlx::query("DELETE FROM grants WHERE user_id = $1 AND project = $2")
            .bind(user_id)
            .bind(scope(project))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The highest role the user has on `project`, from a grant for that project or for all
    /// projects. With `project` `None`, only the all-projects grant counts.
    pub async fn role_of(&self, user_id: i64, project: Option<&str>) -> Result<Option<Role>> {
        let rows =
            sqlx::query("SELECT role FROM grants WHERE user_id = $1 AND project IN ($2, $3)")
                .bind(user_id)
                .bind(ALL_PROJECTS)
                .bind(scope(project))
                .fetch_all(&self.pool)
                .await?;
        let mut best = None;
        for row in &rows {
            best = best.max(Some(rows::word::<Role>(row, "role")?));
        }
        Ok(best)
    }

    /// Stores a token by the SHA-256 of its secret. `Conflict` when that hash is stored
    /// already; `NotFound` when `user_id` names no user.
    pub async fn create_token(&self, t: &NewToken, now: Millis) -> Result<Token> {
        let sql = format!(
            "INSERT INTO tokens (name, kind, user_id, hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {TOKEN_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&t.name)
            .bind(t.kind.as_str())
            .bind(t.user_id)
            .bind(t.hash.to_vec())
            .bind(now)
            .bind(t.expires_at)
            .fetch_one(&self.pool)
            .await
            .map_err(|error| match error.as_database_error() {
                Some(db) if db.is_unique_violation() => StateError::Conflict {
                    what: "a token with this hash".into(),
                },
                Some(db) if db.is_foreign_key_violation() => StateError::NotFound {
                    what: format!("user {:?}", t.user_id),
                },
                _ => StateError::from(error),
            })?;
        rows::token(&row)
    }

    /// The token whose secret hashes to `hash`, revoked and expired ones included: the
    /// caller checks `Token::is_usable`.
    pub async fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<Token>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1");
        let row = sqlx::query(&sql)
            .bind(hash.to_vec())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::token).transpose()
    }

    /// Records that the token was used at `now`.
    pub async fn touch_token(&self, id: i64, now: Millis) -> Result<()> {
        sqlx::query("UPDATE tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every token, oldest first.
    pub async fn tokens(&self) -> Result<Vec<Token>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(rows::token).collect()
    }

    /// Revokes the token. Returns false when it does not exist or was revoked already.
    pub async fn revoke_token(&self, id: i64, now: Millis) -> Result<bool> {
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- secrets ----

    /// Sets a secret (`project` `None`: global), sealed with the store's key; the plaintext is
    /// never stored.
    pub async fn put_secret(
        &self,
        project: Option<&str>,
        name: &str,
        value: &str,
        now: Millis,
    ) -> Result<()> {
        let sealed = self.key.seal(scope(project), name, value)?;
        sqlx::query(
            "INSERT INTO secrets (project, name, sealed, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (project, name) DO UPDATE SET sealed = excluded.sealed,
                 updated_at = excluded.updated_at",
        )
        .bind(scope(project))
        .bind(name)
        .bind(sealed)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A secret's value. `Decrypt` when the store's key cannot open it.
    pub async fn secret(&self, project: Option<&str>, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT sealed FROM secrets WHERE project = $1 AND name = $2")
            .bind(scope(project))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => {
                let sealed: Vec<u8> = row.try_get("sealed")?;
                Ok(Some(self.key.open(scope(project), name, &sealed)?))
            }
            None => Ok(None),
        }
    }

    /// The values a job of `project` may see among `names`: each name's project secret, or
    /// else its global one; names with neither are left out. In the order of `names`.
    pub async fn secrets_for(
        &self,
        project: &str,
        names: &[String],
    ) -> Result<Vec<(String, String)>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let rows =
            sqlx::query("SELECT project, name, sealed FROM secrets WHERE project IN ($1, $2)")
                .bind(project)
                .bind(ALL_PROJECTS)
                .fetch_all(&self.pool)
                .await?;
        let mut out: Vec<(String, String)> = Vec::new();
        for name in names {
            if out.iter().any(|(seen, _)| seen == name) {
                continue;
            }
            let mut found: Option<(String, Vec<u8>)> = None;
            for row in &rows {
                let row_name: String = row.try_get("name")?;
                if &row_name != name {
                    continue;
                }
                let row_scope: String = row.try_get("project")?;
                let is_project = row_scope == project && row_scope != ALL_PROJECTS;
                if found.is_none() || is_project {
                    found = Some((row_scope, row.try_get("sealed")?));
                }
            }
            if let Some((row_scope, sealed)) = found {
                out.push((name.clone(), self.key.open(&row_scope, name, &sealed)?));
            }
        }
        Ok(out)
    }

    /// The names of the secrets in one scope (`None`: global), with when they were set;
    /// never their values.
    pub async fn secret_names(&self, project: Option<&str>) -> Result<Vec<SecretInfo>> {
        let rows = sqlx::query(
            "SELECT project, name, updated_at FROM secrets WHERE project = $1 ORDER BY name",
        )
        .bind(scope(project))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::secret_info).collect()
    }

    /// Deletes a secret. Returns whether it existed.
    pub async fn delete_secret(&self, project: Option<&str>, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM secrets WHERE project = $1 AND name = $2")
            .bind(scope(project))
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- agents ----

    /// Stores what an agent says about itself (by name).
    pub async fn upsert_agent(&self, a: &AgentInfo) -> Result<()> {
        sqlx::query(
            "INSERT INTO agents (name, labels, capacity, version, last_seen) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET labels = excluded.labels, capacity = excluded.capacity,
                 version = excluded.version, last_seen = excluded.last_seen",
        )
        .bind(&a.name)
        .bind(to_json(&a.labels)?)
        .bind(a.capacity)
        .bind(&a.version)
        .bind(a.last_seen)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every agent ever seen, by name.
    pub async fn agents(&self) -> Result<Vec<AgentInfo>> {
        let rows = sqlx::query(
            "SELECT name, labels, capacity, version, last_seen FROM agents ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::agent).collect()
    }

    // ---- audit ----

    /// Appends an audit record.
    pub async fn audit(&self, e: &NewAudit) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit (at, actor, action, target, source, status, details)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(e.at)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.target)
        .bind(&e.source)
        .bind(e.status)
        .bind(to_json(&e.details)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Audit records, newest first; `before` is a cursor (ids below it), the limit is
    /// clamped to 1..=500.
    pub async fn audit_log(&self, before: Option<i64>, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, source, status, details FROM audit
             WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(clamp_limit(limit, 500))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::audit).collect()
    }

    // ---- meta ----

    /// A small named value (a poller's last seen refs, a schedule's last tick).
    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM meta WHERE name = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("value")).transpose()?)
    }

    /// Sets a small named value.
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

fn connect_error(url: &str, error: sqlx::Error) -> StateError {
    match error {
        sqlx::Error::Configuration(reason) => StateError::BadUrl {
            url: redact(url),
            reason: reason.to_string(),
        },
        other => StateError::Database(format!("cannot connect to {}: {other}", redact(url))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn sqlite_connections_are_configured_for_durability() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), SecretKey::random())
            .await
            .unwrap();
        // Every connection of the pool, not just the first: hold several at once.
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(store.pool.acquire().await.unwrap());
        }
        for conn in &mut held {
            let mut get = async |pragma: &str| -> i64 {
                sqlx::query(pragma)
                    .fetch_one(&mut **conn)
                    .await
                    .unwrap()
                    .try_get(0)
                    .unwrap()
            };
            assert_eq!(get("PRAGMA synchronous").await, 2, "FULL");
            assert_eq!(get("PRAGMA foreign_keys").await, 1);
            assert_eq!(get("PRAGMA busy_timeout").await, 30_000);
            let mode: String = sqlx::query("PRAGMA journal_mode")
                .fetch_one(&mut **conn)
                .await
                .unwrap()
                .try_get(0)
                .unwrap();
            assert_eq!(mode, "wal");
        }
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(redact("postgres://u:pw@h:5/db"), "postgres://u:***@h:5/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("/data"), "/data");
    }

    #[test]
    fn sqlite_paths_become_urls_that_keep_their_characters() {
        assert_eq!(
            sqlite_url(Path::new("/a b/c?d#e%f/state.db")).unwrap(),
            "sqlite:///a b/c%3Fd%23e%25f/state.db?mode=rwc"
        );
    }

    #[test]
    fn urls_are_sorted_into_backends() {
        assert!(matches!(
            Target::parse("postgres://x/y"),
            Ok(Target::Postgres(_))
        ));
        assert!(
            matches!(Target::parse("sqlite:///tmp/x.db"), Ok(Target::Sqlite(p)) if p == Path::new("/tmp/x.db"))
        );
        assert!(
            matches!(Target::parse("/nonexistent/data"), Ok(Target::Sqlite(p)) if p == Path::new("/nonexistent/data/state.db"))
        );
        assert!(
            matches!(Target::parse("sqlite:///a%20b%3F.db"), Ok(Target::Sqlite(p)) if p == Path::new("/a b?.db"))
        );
        assert!(matches!(
            Target::parse("sqlite:///a%2"),
            Err(StateError::BadUrl { .. })
        ));
        assert!(matches!(
            Target::parse("mysql://x"),
            Err(StateError::BadUrl { .. })
        ));
        assert!(matches!(
            Target::parse("sqlite::memory:"),
            Err(StateError::BadUrl { .. })
        ));
        assert!(matches!(Target::parse(""), Err(StateError::BadUrl { .. })));
    }
}
