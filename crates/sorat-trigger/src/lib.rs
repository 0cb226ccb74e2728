//! Triggers: what starts a run.
//!
//! Three sources turn the outside world into "build this commit of this ref":
//!
//! - [`webhook`]: a forge's delivery (GitHub, GitLab, Gitea, Forgejo). [`webhook::detect`]
//!   tells the forge from the headers, [`webhook::verify`] checks the signature against the
//!   repository's secret, and [`webhook::parse`] reads the body into a
//!   [`webhook::TriggerEvent`] (or says why the delivery starts nothing). The event feeds
//!   `sorat_pipeline::trigger::matches` through [`webhook::TriggerEvent::facts`], and
//!   [`webhook::TriggerEvent::passes`] adds the checks `matches` leaves out (pull request
//!   `types`, deletions).
//! - [`schedule`]: a pipeline's `on.schedule` cron entry in a time zone; [`schedule::Schedule::next_after`]
//!   says when it fires next, right across daylight saving time changes.
//! - [`poll`]: for repositories that cannot send webhooks, [`poll::remote_heads`] lists a
//!   remote's branches and tags with `git ls-remote`, and [`poll::changes`] compares two
//!   listings.
//!
//! The crate owns the forges' wire formats and their quirks, so nothing above it has to know
//! that GitLab calls a pull request a merge request. It knows no HTTP server (it reads an
//! [`http::HeaderMap`] and bytes; mapping its errors to responses is the server's job, helped by
//! [`webhook::WebhookError::status`]), no database (the caller keeps the previous poll listing
//! and the last schedule tick) and no queue. It never prints.

pub mod poll;
pub mod schedule;
pub mod webhook;
