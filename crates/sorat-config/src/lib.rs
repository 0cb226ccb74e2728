//! Reading Sorat's configuration files so that every mistake has a place.
//!
//! Principal types:
//! - [`SourceFile`] holds a file's text and turns byte offsets into lines and columns.
//! - [`yaml::Node`] is a YAML document as a tree whose every node knows its [`Span`]; mappings
//!   keep their order and duplicates so that the loader can report them.
//! - [`MapReader`] reads a mapping key by key and, when dropped into [`MapReader::finish`], reports
//!   every key nobody asked for, with a "did you mean" hint.
//! - [`Diagnostic`] is one located error or warning; loaders collect them all rather than stop
//!   at the first ("parsing never fails": they return a value and a list of diagnostics).
//! - [`Duration`](duration::parse_duration) strings such as `90s` and `1h30m`.
//!
//! This crate knows nothing about pipelines, servers or terminals: it never prints, and the
//! rendering of a diagnostic with a source snippet belongs to the binary.

pub mod diag;
pub mod duration;
pub mod platform;
pub mod reader;
pub mod source;
pub mod suggest;
pub mod yaml;

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use reader::MapReader;
pub use source::{SourceFile, Span};
pub use yaml::Node;
