//! The server end to end: real `sorat up` and `sorat agent` processes, a real git repository,
//! real HTTP on loopback. Each test starts its own server on a free port with its own data
//! folder, and stops it (and its agents) when it ends, pass or fail.

#![allow(
    clippy::unwrap_used,
    clippy::print_stderr,
    clippy::print_stdout,
    unreachable_pub,
    dead_code
)]

mod agents;
mod api;
mod artifacts;
mod deploys;
mod hooks;
mod quickstart;
#[path = "../../../sorat-deploy/tests/common/sshd.rs"]
mod sshd;
mod support;
mod triggers;
