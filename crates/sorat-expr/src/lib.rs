//! The expression language of pipelines: `${{ }}` with GitHub Actions semantics.
//!
//! The principal types:
//!
//! * [`Value`] — what expressions compute with (null, boolean, number, string, array,
//!   object), with GitHub's truthiness and string coercion;
//! * [`Context`] — the named values an expression reads (`github`, `env`, `matrix`, ...);
//! * [`NameSet`] — which named values and host functions an expression may use, checked
//!   when it is parsed;
//! * [`Expr`] — a parsed expression ([`parse`]), evaluated with [`Expr::eval`];
//! * [`Template`] — a string with `${{ }}` segments, as pipeline files write them;
//! * [`Host`] — what the caller answers for `hashFiles` and the status functions
//!   (`success()`, `failure()`, `always()`, `cancelled()`); [`NoHost`] for none;
//! * [`vectors`] — runs test-vector files in the format of GitHub's reference
//!   implementation (`sorat expr test`).
//!
//! The semantics are GitHub's, checked against the test vectors of
//! `actions/languageservices`: loose equality with JavaScript-like coercion,
//! case-insensitive string comparison and property names, `&&`/`||` returning an
//! operand, `*` filters, reference identity for arrays and objects, 15-digit number
//! formatting, the same error messages with their positions, and a nesting limit of 50.
//! `docs/expressions.md` is the reference for users.
//!
//! Boundary: this crate knows nothing about YAML, pipelines, processes or files.
//! `hashFiles` is answered by the caller through [`Host`], and the pipeline engine
//! decides where which names are allowed. The one exception is
//! [`vectors::run_file`], which reads the vector file it is given. Nothing here prints.

mod eval;
mod expr;
mod json;
mod lexer;
mod number;
mod parser;
mod template;
mod value;
pub mod vectors;

pub use eval::{EvalError, EvalErrorKind, Host, JobStatus, MAX_MEMORY_BYTES, NoHost};
pub use expr::{Expr, parse};
pub use parser::{NameSet, PIPELINE_CONTEXTS, ParseError, ParseErrorKind};
pub use template::{Template, TemplateError, TemplateErrorKind};
pub use value::{Context, Value};
