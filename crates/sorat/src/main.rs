//! The `sorat` binary: parses the command line, wires the libraries, owns the terminal.
//!
//! No domain logic lives here: each command reads its arguments, calls a library, and turns
//! the result into output and an exit code (0 success, 1 the work failed, 2 invalid input).

mod artifacts;
mod deploy;
mod diagnostics;
mod expr;
mod reaper;
mod run;
mod server;
mod validate;
mod view;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Sorat: from commit to production, and then watching it.
#[derive(Parser)]
#[command(name = "sorat", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline on this machine, as CI would.
    Run(run::RunArgs),
    /// Check pipeline files; print every error as `file:line:col: message`.
    Validate(validate::ValidateArgs),
    /// The expression language.
    Expr {
        #[command(subcommand)]
        command: ExprCommand,
    },
    /// Start the server with a local agent: API, webhooks, polling, schedules.
    Up(server::UpArgs),
    /// Run jobs for a server: claim, run, stream logs back.
    Agent(server::AgentArgs),
    /// Start a manual run of a project on the server.
    Trigger(server::TriggerArgs),
    /// Logs of runs on the server.
    Logs {
        #[command(subcommand)]
        command: LogsCommand,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Secrets (stored encrypted; given only to the jobs that reference them).
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Deploy an artifact to an environment (verified, by its strategy, rolled back on failure).
    Deploy(deploy::DeployArgs),
    /// Take an environment back to its previous (or a given) release.
    Rollback(deploy::RollbackArgs),
    /// An environment's releases on each host; `*` marks the current one.
    Releases(deploy::ReleasesArgs),
    /// Approve a deployment job that waits for its environment's approval.
    Approve(deploy::ApproveArgs),
    /// Let a paused deploy go on: one whose analysis was inconclusive, or a blue-green one
    /// waiting to switch traffic (`auto_promote: false`).
    Promote(deploy::DecideArgs),
    /// Stop a paused deploy: roll it back, or stop the blue-green release never switched to.
    Abort(deploy::DecideArgs),
    /// The artifact repository of a server: list, download, verify.
    Artifacts {
        #[command(subcommand)]
        command: artifacts::ArtifactsCommand,
    },
    /// (internal) Kills the process groups of a process that died; see `reaper.rs`.
    #[command(name = "__reap", hide = true)]
    Reap,
    /// (internal) The blue-green router of an SSH host, uploaded and started there by Sorat;
    /// see `sorat_deploy::router::serve_folder`.
    #[command(name = "__route", hide = true)]
    Route(server::RouteArgs),
}

#[derive(Subcommand)]
enum LogsCommand {
    /// Print a run's logs as they come, until it ends.
    Follow(server::LogsFollowArgs),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token (for a user with a role, or for an agent); it is printed once.
    Create(server::TokenCreateArgs),
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Set a secret's value (from standard input unless --value).
    Set(server::SecretSetArgs),
}

#[derive(Subcommand)]
enum ExprCommand {
    /// Run expression test-vector files (the format of `actions/languageservices`).
    Test {
        /// Vector files, or folders of them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print every case, not only failures.
        #[arg(long, short)]
        verbose: bool,
    },
}

/// The exit codes of every command.
pub(crate) mod exit {
    /// The work succeeded.
    pub(crate) const SUCCESS: u8 = 0;
    /// The work failed (a job, a test).
    pub(crate) const FAILURE: u8 = 1;
    /// The input was invalid; nothing ran.
    pub(crate) const INVALID: u8 = 2;
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() {
                exit::INVALID
            } else {
                exit::SUCCESS
            };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    let code = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Validate(args) => validate::validate(args),
        Command::Expr {
            command: ExprCommand::Test { files, verbose },
        } => expr::test(&files, verbose),
        Command::Reap => reaper::reap(),
        Command::Route(args) => server::route(args),
        Command::Artifacts { command } => artifacts::command(command),
        Command::Deploy(args) => deploy::deploy(args),
        Command::Rollback(args) => deploy::rollback(args),
        Command::Releases(args) => deploy::releases(args),
        Command::Approve(args) => deploy::approve(args),
        Command::Promote(args) => deploy::decide(args, true),
        Command::Abort(args) => deploy::decide(args, false),
        Command::Up(args) => server::up(args),
        Command::Agent(args) => server::agent(args),
        Command::Trigger(args) => server::trigger(args),
        Command::Logs {
            command: LogsCommand::Follow(args),
        } => server::logs_follow(args),
        Command::Token {
            command: TokenCommand::Create(args),
        } => server::token_create(args),
        Command::Secret {
            command: SecretCommand::Set(args),
        } => server::secret_set(args),
    };
    ExitCode::from(code)
}
