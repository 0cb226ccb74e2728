//! The pipeline as written: the typed form of `.sorat/pipeline.yaml`.
//!
//! Everything here is data. Values that may hold `${{ }}` are [`Located`] templates, kept
//! unevaluated: the engine evaluates them when their contexts exist (a job's `env` after its
//! `needs` finished, a step's `with` after the steps before it).

use std::time::Duration;

use indexmap::IndexMap;
use sorat_config::{SourceFile, Span};
use sorat_expr::{Expr, Template, Value};

/// A value and the span of the file it came from, so that errors found later (at run time)
/// still point at the right place.
#[derive(Clone, Debug)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub span: Span,
}

impl<T> Located<T> {
    /// Wraps `value` found at `span`.
    pub fn new(value: T, span: Span) -> Located<T> {
        Located { value, span }
    }
}

/// A whole pipeline file.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// The file it was loaded from.
    pub file: SourceFile,
    /// `name:`, shown in summaries.
    pub name: Option<String>,
    /// `run-name:`, a template for the name of each run.
    pub run_name: Option<Located<Template>>,
    /// `on:`, the events that start the pipeline.
    pub triggers: Triggers,
    /// Pipeline-level `env:`.
    pub env: EnvMap,
    /// `vars:`: default values of configuration variables (`${{ vars.X }}`), overridable with
    /// `--var`.
    pub vars: IndexMap<String, String>,
    /// `defaults.run`: shell and working directory for `run` steps.
    pub defaults: RunDefaults,
    /// Pipeline-level `concurrency:`.
    pub concurrency: Option<Concurrency>,
    /// The jobs in the order written.
    pub jobs: IndexMap<String, Job>,
}

/// Environment variables whose values are templates.
pub type EnvMap = IndexMap<String, Located<Template>>;

/// `on:`.
#[derive(Clone, Debug, Default)]
pub struct Triggers {
    /// `push`, with its filters.
    pub push: Option<PushFilter>,
    /// `pull_request`, with its filters.
    pub pull_request: Option<PullRequestFilter>,
    /// `schedule`: cron entries.
    pub schedule: Vec<Located<CronSchedule>>,
    /// `manual` (GitHub: `workflow_dispatch`) with typed inputs.
    pub manual: Option<Manual>,
}

/// Filters of a `push` trigger. Empty lists filter nothing.
#[derive(Clone, Debug, Default)]
pub struct PushFilter {
    /// `branches` / `branches-ignore`.
    pub branches: RefFilter,
    /// `tags` / `tags-ignore`.
    pub tags: RefFilter,
    /// `paths` / `paths-ignore`.
    pub paths: RefFilter,
}

/// Filters of a `pull_request` trigger.
#[derive(Clone, Debug, Default)]
pub struct PullRequestFilter {
    /// `branches` (the base branch) / `branches-ignore`.
    pub branches: RefFilter,
    /// `paths` / `paths-ignore`.
    pub paths: RefFilter,
    /// `types` (opened, synchronize, ...); empty means GitHub's default set.
    pub types: Vec<String>,
}

/// An include/exclude list of GitHub-style globs; `!pattern` in an include list excludes
/// again, and the last matching pattern decides, as in GitHub.
#[derive(Clone, Debug, Default)]
pub struct RefFilter {
    /// Patterns, in order; `negated` patterns exclude.
    pub patterns: Vec<FilterPattern>,
    /// Whether the list came from a `-ignore` key (a match excludes).
    pub is_ignore_list: bool,
}

/// One compiled filter pattern.
#[derive(Clone, Debug)]
pub struct FilterPattern {
    /// The pattern as written, without a leading `!`.
    pub text: String,
    /// Whether it was written with a leading `!`.
    pub negated: bool,
    /// The compiled matcher.
    pub matcher: globset::GlobMatcher,
}

impl RefFilter {
    /// Whether the filter has any pattern.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `name` passes: with no patterns, everything passes.
    pub fn allows(&self, name: &str) -> bool {
        if self.patterns.is_empty() {
            return true;
        }
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.matcher.is_match(name) {
                matched = !pattern.negated;
            }
        }
        if self.is_ignore_list {
            !matched
        } else {
            matched
        }
    }

    /// For `paths`: whether any of the changed files passes (GitHub: a push runs when at least
    /// one changed path matches `paths`, and not every changed path matches `paths-ignore`).
    pub fn allows_any(&self, paths: &[String]) -> bool {
        self.patterns.is_empty() || paths.iter().any(|path| self.allows(path))
    }
}

/// A `schedule` entry.
#[derive(Clone, Debug)]
pub struct CronSchedule {
    /// The cron expression as written.
    pub expression: String,
    /// The parsed schedule.
    pub cron: croner::Cron,
}

/// `manual` / `workflow_dispatch`.
#[derive(Clone, Debug, Default)]
pub struct Manual {
    /// The inputs in order.
    pub inputs: IndexMap<String, ManualInput>,
}

/// One typed input of a manual trigger.
#[derive(Clone, Debug)]
pub struct ManualInput {
    /// `description`.
    pub description: Option<String>,
    /// `required`.
    pub required: bool,
    /// `default`, already checked against the type.
    pub default: Option<Value>,
    /// `type` and, for `choice`, its options.
    pub kind: InputKind,
    /// Where the input was declared.
    pub span: Span,
}

/// The type of a manual input.
#[derive(Clone, Debug, PartialEq)]
pub enum InputKind {
    /// Any text.
    String,
    /// `true` or `false`.
    Boolean,
    /// A number.
    Number,
    /// One of the listed options.
    Choice(Vec<String>),
    /// The name of an environment (text).
    Environment,
}

/// `defaults.run`.
#[derive(Clone, Debug, Default)]
pub struct RunDefaults {
    /// Default shell for `run` steps.
    pub shell: Option<String>,
    /// Default working directory for `run` steps.
    pub working_directory: Option<Located<Template>>,
}

/// `concurrency:` of a pipeline or a job.
#[derive(Clone, Debug)]
pub struct Concurrency {
    /// The group name (a template).
    pub group: Located<Template>,
    /// Whether a newer member of the group cancels the one in progress.
    pub cancel_in_progress: bool,
}

/// A boolean that may be written as an expression (`continue-on-error: ${{ matrix.experimental }}`).
#[derive(Clone, Debug)]
pub enum BoolOrTemplate {
    /// A literal.
    Literal(bool),
    /// An expression evaluated when needed.
    Template(Located<Template>),
}

impl BoolOrTemplate {
    /// The value: a literal as written, an expression by its truthiness; `default` when the
    /// expression fails to evaluate.
    pub fn evaluate(
        &self,
        context: &sorat_expr::Context,
        host: &dyn sorat_expr::Host,
        default: bool,
    ) -> bool {
        match self {
            BoolOrTemplate::Literal(value) => *value,
            BoolOrTemplate::Template(template) => template
                .value
                .eval(context, host)
                .map(|value| value.is_truthy())
                .unwrap_or(default),
        }
    }
}

/// A time limit: `timeout: 90s` or GitHub's `timeout-minutes: 5` (which may be an expression).
#[derive(Clone, Debug)]
pub enum Timeout {
    /// A fixed duration.
    Fixed(Duration),
    /// `timeout-minutes: ${{ ... }}`, evaluated when the job or step starts.
    Minutes(Located<Template>),
}

/// `retry:`: run again on failure.
#[derive(Clone, Debug)]
pub struct Retry {
    /// How many times to retry after the first attempt.
    pub count: u32,
    /// Retry only on these exit codes; empty means any failure (not a timeout or cancel).
    pub exit_codes: Vec<i32>,
    /// Pause between attempts.
    pub delay: Duration,
}

/// A condition: `if:`.
#[derive(Clone, Debug)]
pub struct Condition {
    /// How it evaluates.
    pub kind: ConditionKind,
    /// The text as written, for the record and messages.
    pub text: String,
    /// Where it was written.
    pub span: Span,
}

/// The two shapes an `if:` can take.
#[derive(Clone, Debug)]
pub enum ConditionKind {
    /// One expression: written bare (`if: github.ref == 'refs/heads/main'`) or wholly inside
    /// `${{ }}`.
    Expr(Expr),
    /// Text mixed with `${{ }}` (`if: ${{ a }} == b`). GitHub Actions evaluates this as a string,
    /// which is true whenever it is not empty; Sorat keeps that meaning and `sorat validate`
    /// warns about it.
    Mixed(Template),
}

/// One job.
#[derive(Clone, Debug)]
pub struct Job {
    /// The job's id (its key under `jobs`).
    pub id: String,
    /// Where the id was written.
    pub id_span: Span,
    /// `name:`.
    pub name: Option<Located<Template>>,
    /// `needs:`, with the span of each name.
    pub needs: Vec<Located<String>>,
    /// `if:`.
    pub condition: Option<Condition>,
    /// `runs-on:` labels (agents use them; `sorat run` runs everything locally).
    pub runs_on: Vec<Located<Template>>,
    /// `strategy:`.
    pub strategy: Strategy,
    /// `timeout` / `timeout-minutes`; GitHub's default is 360 minutes.
    pub timeout: Option<Timeout>,
    /// `retry:` of the whole job.
    pub retry: Option<Retry>,
    /// `continue-on-error:`.
    pub continue_on_error: Option<BoolOrTemplate>,
    /// `outputs:`: templates evaluated when the job ends.
    pub outputs: IndexMap<String, Located<Template>>,
    /// `environment:`, used by deployments.
    pub environment: Option<EnvironmentRef>,
    /// `concurrency:`.
    pub concurrency: Option<Concurrency>,
    /// `services:`: background processes for the job's duration.
    pub services: IndexMap<String, Service>,
    /// `env:`.
    pub env: EnvMap,
    /// `defaults.run`.
    pub defaults: RunDefaults,
    /// `steps:`.
    pub steps: Vec<Step>,
}

/// `environment:` of a deploy job.
#[derive(Clone, Debug)]
pub struct EnvironmentRef {
    /// The environment's name (a template).
    pub name: Located<Template>,
    /// Its URL (a template), when given.
    pub url: Option<Located<Template>>,
}

/// `strategy:`.
#[derive(Clone, Debug, Default)]
pub struct Strategy {
    /// The matrix, if any.
    pub matrix: Option<Matrix>,
    /// `fail-fast` (default true): a failed instance cancels its siblings.
    pub fail_fast: Option<BoolOrTemplate>,
    /// `max-parallel`: how many instances run at once.
    pub max_parallel: Option<u32>,
}

/// `strategy.matrix`.
#[derive(Clone, Debug)]
pub enum Matrix {
    /// Axes with include and exclude, as written.
    Axes {
        /// Each axis and its values (a value may itself hold templates).
        axes: IndexMap<String, Located<MatrixValues>>,
        /// `include` entries.
        include: Located<MatrixValues>,
        /// `exclude` entries.
        exclude: Located<MatrixValues>,
    },
    /// The whole matrix as one expression (`${{ fromJSON(needs.plan.outputs.matrix) }}`).
    Template(Located<Template>),
}

/// The values of one axis, or the entries of `include`/`exclude`: literal values whose strings
/// may be templates, or a single template producing the list.
#[derive(Clone, Debug)]
pub enum MatrixValues {
    /// Values written out.
    Literal(Vec<Value>),
    /// `${{ }}` producing an array.
    Template(Template),
}

/// A background process for the duration of a job: a database, a mock server.
#[derive(Clone, Debug)]
pub struct Service {
    /// The service's name (its key).
    pub name: String,
    /// The command line, run by the job's default shell.
    pub run: Located<Template>,
    /// `env:`.
    pub env: EnvMap,
    /// `working-directory:` relative to the workspace.
    pub working_directory: Option<Located<Template>>,
    /// The readiness probe; without one the service counts as ready once started.
    pub ready: Option<ReadinessProbe>,
}

/// How to know that a service is ready.
#[derive(Clone, Debug)]
pub struct ReadinessProbe {
    /// What to check.
    pub check: ProbeCheck,
    /// How often to check.
    pub interval: Duration,
    /// How long to wait before the job fails.
    pub timeout: Duration,
}

/// The check of a [`ReadinessProbe`].
#[derive(Clone, Debug)]
pub enum ProbeCheck {
    /// A TCP connection to `host:port` succeeds.
    Tcp(Located<Template>),
    /// An HTTP GET of the URL answers 2xx.
    Http(Located<Template>),
    /// A command exits 0.
    Run(Located<Template>),
}

/// One step.
#[derive(Clone, Debug)]
pub struct Step {
    /// Position in the job, from 0.
    pub index: usize,
    /// `id:`.
    pub id: Option<Located<String>>,
    /// `name:`.
    pub name: Option<Located<Template>>,
    /// `if:`.
    pub condition: Option<Condition>,
    /// `env:`.
    pub env: EnvMap,
    /// `continue-on-error:`.
    pub continue_on_error: Option<BoolOrTemplate>,
    /// `timeout` / `timeout-minutes`.
    pub timeout: Option<Timeout>,
    /// `retry:`.
    pub retry: Option<Retry>,
    /// What the step does.
    pub action: StepAction,
    /// Where the step starts in the file.
    pub span: Span,
}

/// What a step does.
#[derive(Clone, Debug)]
pub enum StepAction {
    /// `run:` a script.
    Run {
        /// The script (a template).
        script: Located<Template>,
        /// The script as written, for the step's default name.
        script_source: String,
        /// `shell:`, or `None` for the default.
        shell: Option<String>,
        /// `working-directory:`.
        working_directory: Option<Located<Template>>,
    },
    /// `uses:` a built-in step.
    Uses {
        /// Which built-in.
        builtin: Builtin,
        /// The name as written (`actions/checkout@v4`).
        written: Located<String>,
        /// `with:` inputs (templates).
        with: IndexMap<String, Located<Template>>,
    },
}

/// The built-in steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    /// Put the run's commit into the workspace.
    Checkout,
    /// Restore a cache now, save it when the job succeeds.
    Cache,
    /// Store files as a named artifact of the run.
    UploadArtifact,
    /// Fetch a named artifact of the run.
    DownloadArtifact,
    /// Read JUnit XML reports into the run's test results.
    Junit,
    /// Publish files to the artifact repository as `name@version` (signed, immutable).
    PublishArtifact,
    /// Deploy an artifact to the job's environment through the server.
    Deploy,
}

impl Builtin {
    /// Every built-in with its canonical name.
    pub const ALL: [(Builtin, &'static str); 7] = [
        (Builtin::Checkout, "checkout"),
        (Builtin::Cache, "cache"),
        (Builtin::UploadArtifact, "upload-artifact"),
        (Builtin::DownloadArtifact, "download-artifact"),
        (Builtin::Junit, "junit"),
        (Builtin::PublishArtifact, "publish-artifact"),
        (Builtin::Deploy, "deploy"),
    ];

    /// The canonical name.
    pub fn name(self) -> &'static str {
        Builtin::ALL
            .iter()
            .find(|(builtin, _)| *builtin == self)
            .map_or("?", |(_, name)| name)
    }

    /// Resolves a `uses:` value: a built-in's own name, or the GitHub action it stands in for
    /// (`actions/checkout@v4`, any ref).
    pub fn from_uses(uses: &str) -> Option<Builtin> {
        let name = match uses.split_once('@') {
            Some((name, _version)) => name.strip_prefix("actions/")?,
            None => uses,
        };
        Builtin::ALL
            .iter()
            .find(|(_, canonical)| *canonical == name)
            .map(|(builtin, _)| *builtin)
    }

    /// The inputs the built-in understands, required ones marked `true`.
    pub fn inputs(self) -> &'static [(&'static str, bool)] {
        match self {
            Builtin::Checkout => &[
                ("path", false),
                ("ref", false),
                ("fetch-depth", false),
                ("repository", false),
                ("token", false),
                ("persist-credentials", false),
                ("clean", false),
                ("submodules", false),
                ("lfs", false),
                ("fetch-tags", false),
                ("sparse-checkout", false),
                ("show-progress", false),
            ],
            Builtin::Cache => &[
                ("key", true),
                ("path", true),
                ("restore-keys", false),
                ("enableCrossOsArchive", false),
                ("fail-on-cache-miss", false),
                ("lookup-only", false),
                ("save-always", false),
            ],
            Builtin::UploadArtifact => &[
                ("name", false),
                ("path", true),
                ("if-no-files-found", false),
                ("retention-days", false),
                ("compression-level", false),
                ("overwrite", false),
                ("include-hidden-files", false),
            ],
            Builtin::DownloadArtifact => &[
                ("name", false),
                ("path", false),
                ("pattern", false),
                ("merge-multiple", false),
                ("github-token", false),
                ("repository", false),
                ("run-id", false),
            ],
            Builtin::Junit => &[
                ("path", true),
                ("fail-on-failure", false),
                ("if-no-files-found", false),
            ],
            Builtin::PublishArtifact => &[
                ("name", true),
                ("path", true),
                ("version", false),
                ("moving", false),
                ("attachments", false),
            ],
            Builtin::Deploy => &[("artifact", true), ("environment", false)],
        }
    }

    /// Inputs accepted for compatibility with the GitHub action but without effect locally.
    pub fn ignored_inputs(self) -> &'static [&'static str] {
        match self {
            Builtin::Checkout => &[
                "repository",
                "token",
                "persist-credentials",
                "submodules",
                "lfs",
                "fetch-tags",
                "sparse-checkout",
                "show-progress",
                "clean",
            ],
            Builtin::Cache => &["enableCrossOsArchive", "save-always"],
            Builtin::UploadArtifact => &["retention-days", "compression-level"],
            Builtin::DownloadArtifact => &["github-token", "repository", "run-id"],
            Builtin::Junit | Builtin::PublishArtifact | Builtin::Deploy => &[],
        }
    }
}
