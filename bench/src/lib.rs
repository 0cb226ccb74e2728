//! Pieces shared by Sorat's benchmarks; each benchmark is a binary under `src/bin/`.
//!
//! - [`inputs`] writes seeded, reproducible input trees ([`inputs::InputKind`]).
//! - [`fingerprint`] reduces a tree to a [`fingerprint::TreeFingerprint`] so that a run which
//!   produced the wrong tree fails instead of reporting a time.
//! - [`page_cache`] flushes dirty pages and evicts or warms files, for cold-ish and warm runs.
//! - [`command`] runs a peer's real program and times it.
//! - [`disk`] measures what plain `cp` and `dd` reach on the same disk, as a ceiling.
//! - [`report`] holds the statistics and the Markdown tables the binaries print.
//! - [`server`] starts a real `sorat up` and `sorat agent`s, talks to their API, and makes the
//!   git repository their project builds; [`webhook`] signs GitHub pushes as GitHub does.
//!
//! Benchmarks run Sorat and its peer side by side and print numbers and ratios; nothing here
//! asserts a time. The library never prints: the binaries do.

pub mod command;
pub mod disk;
pub mod fingerprint;
pub mod inputs;
pub mod page_cache;
pub mod report;
pub mod rng;
pub mod server;
pub mod webhook;
