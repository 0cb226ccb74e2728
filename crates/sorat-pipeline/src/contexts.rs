//! Which contexts and functions an expression may use, by where it is written.
//!
//! Follows GitHub's table of context availability: a job's `if` sees `needs` but no `matrix`,
//! a step sees `steps` and `env`, status functions only appear in `if`, `hashFiles` only in
//! steps. `sorat` is everywhere that `github` is.

use std::sync::OnceLock;

use sorat_expr::NameSet;

/// Where in a pipeline an expression stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// `run-name` and the pipeline's `concurrency`.
    RunName,
    /// The pipeline's `env` and `defaults`.
    PipelineEnv,
    /// A job's `if`.
    JobIf,
    /// A job's `strategy`.
    JobStrategy,
    /// A job's `name`, `env`, `runs-on`, `concurrency`, `timeout-minutes`, services, ...
    Job,
    /// A job's `outputs` and `environment.url`.
    JobOutputs,
    /// A step's `if`.
    StepIf,
    /// Anything else of a step.
    Step,
}

/// The names allowed at `place`.
pub fn names(place: Place) -> &'static NameSet {
    static SETS: OnceLock<[NameSet; 8]> = OnceLock::new();
    let sets = SETS.get_or_init(|| {
        let base = ["github", "sorat", "vars", "inputs"];
        let with = |extra: &[&str]| {
            NameSet::new().with_named_values(base.iter().chain(extra.iter()).copied())
        };
        let job = ["needs", "strategy", "matrix", "secrets", "env"];
        let step = [
            "needs", "strategy", "matrix", "secrets", "env", "steps", "job", "runner",
        ];
        [
            with(&[]),
            with(&["secrets", "env"]),
            with(&["needs"]).with_status_functions(),
            with(&["needs"]),
            with(&job),
            with(&[
                "needs", "strategy", "matrix", "secrets", "env", "steps", "job", "runner",
            ]),
            with(&step).with_status_functions().with_hash_files(),
            with(&step).with_hash_files(),
        ]
    });
    let index = match place {
        Place::RunName => 0,
        Place::PipelineEnv => 1,
        Place::JobIf => 2,
        Place::JobStrategy => 3,
        Place::Job => 4,
        Place::JobOutputs => 5,
        Place::StepIf => 6,
        Place::Step => 7,
    };
    &sets[index]
}
