//! Sorat's state store: everything the server must remember across restarts, in SQLite (the
//! default, one file in the data folder, WAL mode) or PostgreSQL (`--database postgres://…`),
//! with the same migrations and the same behaviour on both.
//!
//! It owns: projects, runs, jobs (with their leases), steps, log chunks, test results,
//! outputs, users, tokens (hashed), secrets (sealed with an AEAD before they are stored),
//! agents, the audit log and small named values (`meta`) such as a poller's last seen refs.
//!
//! It must not know: HTTP, pipelines' YAML beyond storing its text, how jobs run. Callers
//! pass times in (`now`), so behaviour is testable without sleeping.
//!
//! Every write that returns `Ok` is committed (durable on SQLite with `synchronous=FULL` in
//! WAL mode; on PostgreSQL by its commit): what the store acknowledged survives `kill -9`.
//!
//! Times are milliseconds since the Unix epoch ([`Millis`]); ids are database-assigned `i64`.
//!
//! Principal types: [`Store`], a cheap cloneable handle over a connection pool, opened from a
//! URL or a data folder with a [`SecretKey`], with every query; [`SecretKey`], which seals
//! secrets (XChaCha20-Poly1305, the scope and name bound in as associated data); and plain
//! values ([`Run`], [`Job`], [`Lease`], [`Token`], …) that the server returns as JSON.
//! Inside: `store` (each query written once for both backends through sqlx's `Any` driver;
//! its doc says why), `migrations` (the schema, one ordered list), `rows` (row decoding),
//! `key` (the key file and sealing).

mod key;
mod migrations;
mod rows;
mod store;
mod types;

pub use key::SecretKey;
pub use store::Store;
pub use types::{
    AgentInfo, AuditEntry, Backend, Deployment, Job, JobOutcome, JobStatus, Lease, LogChunk,
    NewAudit, NewDeployment, NewJob, NewProject, NewRun, NewToken, Project, Role, Run, RunFilter,
    RunStatus, SecretInfo, StepState, TestCase, Token, TokenKind, User,
};

/// Milliseconds since the Unix epoch (UTC).
pub type Millis = i64;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The database URL is not one the store can open.
    #[error("database URL `{url}`: {reason}")]
    BadUrl {
        /// The URL as given (with any password replaced by `***`).
        url: String,
        /// Why.
        reason: String,
    },
    /// A row that must exist does not.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for (`project \`shop\``).
        what: String,
    },
    /// A unique name is taken.
    #[error("{what} already exists")]
    Conflict {
        /// What collided.
        what: String,
    },
    /// A stored secret could not be opened (wrong key, or tampered).
    #[error("secret `{name}` cannot be decrypted with this key")]
    Decrypt {
        /// The secret's name.
        name: String,
    },
    /// The database failed.
    #[error("database: {0}")]
    Database(String),
    /// The secret key file cannot be read or created, or its text is not a key.
    #[error("secret key {place}: {reason}")]
    Key {
        /// Where the key came from (`file /data/secret.key`, `text`).
        place: String,
        /// Why it is unusable.
        reason: String,
    },
    /// The caller passed a value the store does not accept (a non-terminal outcome for
    /// `finish_job`, an unknown role name).
    #[error("invalid {what}")]
    Invalid {
        /// What was wrong, with the value.
        what: String,
    },
}

/// Shorthand.
pub type Result<T, E = StateError> = std::result::Result<T, E>;

impl From<sqlx::Error> for StateError {
    fn from(error: sqlx::Error) -> Self {
        StateError::Database(error.to_string())
    }
}
