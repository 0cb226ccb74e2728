//! Pipelines: the format of `.sorat/pipeline.yaml` and the engine that runs it.
//!
//! - [`spec`] is the pipeline as written ([`spec::Pipeline`], [`spec::Job`], [`spec::Step`]),
//!   and [`load::load`] builds it from a file with every mistake located.
//! - [`matrix`] expands `strategy.matrix`; [`trigger`] decides whether an event starts a run.
//! - [`exec::run`] runs a pipeline on this machine: jobs in parallel in fresh workspaces,
//!   steps as process groups, secrets masked, logs stored whole. It reports progress as
//!   [`events::RunEvent`]s and ends with a [`record::RunRecord`].
//! - [`cas`] is the content-addressed store under caches and artifacts; [`junit`] reads test
//!   reports; [`mask`] hides secrets.
//!
//! The crate never prints: the binary turns events into a terminal view. It knows nothing
//! of servers or agents; they call [`exec::run`] with a [`exec::RunRequest`].

pub mod cas;
pub mod contexts;
pub mod events;
pub mod exec;
pub mod git;
pub mod inputs;
pub mod junit;
pub mod load;
pub mod mask;
pub mod matrix;
pub mod record;
pub mod spec;
pub mod trigger;
