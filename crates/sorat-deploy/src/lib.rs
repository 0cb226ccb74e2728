//! Sorat's deployment core: numbered releases on hosts (a local folder, an SSH host, or an
//! agent's host), their services, health checks, strategies, analyses and rollback.
//!
//! Principal types, one module each, from the disk up:
//! - [`release`]: [`Host`] (a host's folder: `releases/<n>/`, each with `release.json`, and
//!   the atomically switched `current` symlink), [`ReleaseFile`], [`ReleaseRecord`].
//! - [`service`]: [`Supervisor`] runs a host's service in its own process group, sends its
//!   output as [`ServiceLine`]s, restarts it with backoff, gives up when it keeps dying, and
//!   stops it with SIGTERM then SIGKILL.
//! - [`health`]: [`HealthCheck`] (HTTP, TCP or command probes, interval, timeout, success
//!   threshold) and [`wait_healthy`].
//! - [`ssh`]: [`SshHost`], the same layout on a host over OpenSSH, its service under a
//!   detached `sh` supervisor there (and, for blue-green, its two slots and the router).
//! - [`agent`]: `agent` targets, both ends: the server's `AgentHost` and the agent's
//!   `HostExecutor`, speaking `HostOp`s.
//! - [`router`]: the TCP router that switches a blue-green target's traffic between slots.
//! - [`analysis`]: Argo Rollouts-style analyses over a `MetricsSource` (Prometheus).
//! - [`deploy`](mod@deploy): [`Target`], [`deploy()`](fn@deploy) by [`Strategy`] (rolling,
//!   all at once, blue-green, canary) with automatic rollback of every switched host on
//!   failure, and [`rollback`]; both end with a [`DeployReport`].
//!
//! What it must not know: artifacts' storage and signatures (the caller hands it files with
//! their digests), the state store, HTTP APIs and terminals. It never prints; it logs with
//! `tracing` and returns reports.

pub mod agent;
pub mod analysis;
pub mod deploy;
pub mod health;
pub mod release;
pub mod router;
pub mod service;
pub mod ssh;

pub use deploy::{
    BlueGreenSlots, DeployError, DeployReport, Environment, HostOutcome, HostReport, Outcome,
    Phase, Progress, ReleaseSpec, SLOT_NAMES, SecretResolver, ServiceConfig, Strategy, Target,
    Timing, deploy, next_release_number, rollback,
};
pub use health::{HealthCheck, Healthy, Probe, ProbeTarget, Unhealthy, wait_healthy};
pub use release::{
    Host, ReleaseConfig, ReleaseError, ReleaseFile, ReleaseMeta, ReleaseRecord, ReleaseStatus,
    digest_file,
};
pub use service::{
    RestartPolicy, ServiceLine, ServiceSpec, ServiceState, StopOutcome, Stream, Supervisor,
};
pub use ssh::{RemoteService, SshHost, SshTarget};
