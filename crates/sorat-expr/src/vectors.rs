//! Runs test-vector files in the format of GitHub's `actions/languageservices`
//! (`expressions/testdata/*.json`), which `sorat expr test` and this crate's tests use.
//!
//! A file is a JSON object of named groups, each an array of cases:
//!
//! ```json
//! { "group": [ { "expr": "1 == 2", "contexts": {}, "result": { "kind": "Boolean", "value": false } },
//!              { "expr": "1 <", "err": { "kind": "parsing", "value": "Unexpected end of expression" } } ] }
//! ```
//!
//! A result matches when the kinds are equal and the values are deeply equal (numbers as
//! doubles with NaN equal to NaN; object keys in the same order). An error matches when
//! the kinds (`lexing`, `parsing`, `evaluation`) are equal and the actual message
//! *contains* the expected one, which is how the upstream harness compares them.
//! `options.skip` is ignored: every case runs.
//!
//! Sorat's own cases may add fields (the upstream harness ignores unknown fields):
//!
//! * `"template": true` — `expr` is a template such as `a-${{ x }}`, evaluated with
//!   [`Template::eval`]; its parse errors have the kind `template`, or the kind of the
//!   inner expression's error;
//! * `"host": { "job_status": "success" | "failure" | "cancelled", "hash_files": { "<patterns joined by newlines>": "<hash>" } }`
//!   — answers for the status functions and `hashFiles` (patterns not listed hash to
//!   `''`, as when nothing matches); without `hash_files`, `hashFiles` fails;
//! * `"functions": ["hashFiles", "status"]` — allow only these host functions (by
//!   default all are allowed);
//! * `"uses_status_function"`, `"mixes_text_and_expression"`, `"is_literal"` — booleans
//!   checked against [`Expr::uses_status_function`] and the [`Template`] methods.
//!
//! Each case's named values are exactly its `contexts`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::eval::{Host, JobStatus, NoHost};
use crate::expr::{Expr, parse};
use crate::parser::NameSet;
use crate::template::{Template, TemplateErrorKind};
use crate::value::{Context, Value};

/// Why a vector file could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum VectorFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The reason.
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON is not a vector file.
    #[error("not a vector file: {0}")]
    Format(String),
}

/// What a case expects, or what it produced.
#[derive(Debug, Clone, PartialEq)]
pub enum CaseResult {
    /// A value (its kind is the value's kind).
    Value(Value),
    /// An error of a kind (`lexing`, `parsing`, `evaluation`, `template`) with a message.
    Error {
        /// The kind, as the vectors spell it.
        kind: String,
        /// The message.
        message: String,
    },
}

impl fmt::Display for CaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaseResult::Value(value) => write!(f, "{} {}", value.kind_name(), value.to_json()),
            CaseResult::Error { kind, message } => write!(f, "{kind} error: {message}"),
        }
    }
}

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseOutcome {
    /// The group's name.
    pub group: String,
    /// The case's index within its group (from 0).
    pub index: usize,
    /// The expression (or template) text.
    pub expr: String,
    /// What the file expects.
    pub expected: CaseResult,
    /// What Sorat produced.
    pub actual: CaseResult,
    /// Every check that failed, in words; empty when the case passed.
    pub failures: Vec<String>,
}

impl CaseOutcome {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

impl fmt::Display for CaseOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "ok" } else { "FAILED" };
        write!(
            f,
            "{verdict} {}[{}]: {:?}",
            self.group, self.index, self.expr
        )?;
        for failure in &self.failures {
            write!(f, "\n    {failure}")?;
        }
        Ok(())
    }
}

/// Reads and runs a vector file.
pub fn run_file(path: impl AsRef<Path>) -> Result<Vec<CaseOutcome>, VectorFileError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| VectorFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    run_json(&text)
}

/// Runs the cases in a vector file's text.
pub fn run_json(text: &str) -> Result<Vec<CaseOutcome>, VectorFileError> {
    let document: serde_json::Value = serde_json::from_str(text)?;
    let groups = document
        .as_object()
        .ok_or_else(|| VectorFileError::Format("the top level is not an object".to_owned()))?;
    let mut outcomes = Vec::new();
    for (group, cases) in groups {
        let cases = cases.as_array().ok_or_else(|| {
            VectorFileError::Format(format!("group {group:?} is not an array of cases"))
        })?;
        for (index, case) in cases.iter().enumerate() {
            outcomes.push(run_case(group, index, case)?);
        }
    }
    Ok(outcomes)
}

fn run_case(
    group: &str,
    index: usize,
    case: &serde_json::Value,
) -> Result<CaseOutcome, VectorFileError> {
    let malformed =
        |what: &str| VectorFileError::Format(format!("group {group:?}, case {index}: {what}"));
    let expr = case
        .get("expr")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| malformed("no \"expr\" string"))?;
    let expected = expected_result(case)
        .ok_or_else(|| malformed("needs \"result\" {kind, value} or \"err\" {kind, value}"))?;
    let context = match case.get("contexts") {
        None | Some(serde_json::Value::Null) => Context::new(),
        Some(json) => {
            Context::from_json(json).ok_or_else(|| malformed("\"contexts\" is not an object"))?
        }
    };
    let names = case_names(case, &context);
    let host = VectorHost::from_case(case);
    let is_template = case
        .get("template")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);

    let mut failures = Vec::new();
    let actual = if is_template {
        match Template::parse(expr, &names) {
            Ok(template) => {
                check_flag(
                    case,
                    "uses_status_function",
                    template.uses_status_function(),
                    &mut failures,
                );
                check_flag(
                    case,
                    "mixes_text_and_expression",
                    template.mixes_text_and_expression(),
                    &mut failures,
                );
                check_flag(case, "is_literal", template.is_literal(), &mut failures);
                evaluation_result(template.eval(&context, &host))
            }
            Err(error) => {
                let kind = match &error.kind {
                    TemplateErrorKind::Expression { error, .. } => error.kind.as_str(),
                    _ => "template",
                };
                CaseResult::Error {
                    kind: kind.to_owned(),
                    message: error.to_string(),
                }
            }
        }
    } else {
        match parse(expr, &names) {
            Ok(parsed) => {
                check_flag(
                    case,
                    "uses_status_function",
                    parsed.uses_status_function(),
                    &mut failures,
                );
                evaluation_result(Expr::eval(&parsed, &context, &host))
            }
            Err(error) => CaseResult::Error {
                kind: error.kind.as_str().to_owned(),
                message: error.to_string(),
            },
        }
    };
    if let Some(mismatch) = compare(&expected, &actual) {
        failures.insert(0, mismatch);
    }
    Ok(CaseOutcome {
        group: group.to_owned(),
        index,
        expr: expr.to_owned(),
        expected,
        actual,
        failures,
    })
}

fn expected_result(case: &serde_json::Value) -> Option<CaseResult> {
    if let Some(error) = case.get("err") {
        let kind = error.get("kind")?.as_str()?.to_owned();
        let message = error.get("value")?.as_str()?.to_owned();
        return Some(CaseResult::Error { kind, message });
    }
    let result = case.get("result")?;
    let kind = result.get("kind")?.as_str()?;
    let value = Value::from_json(result.get("value").unwrap_or(&serde_json::Value::Null));
    // The kind is redundant with the value except that the file states it; a file that
    // states a kind its value does not have expects something no value can be.
    if value.kind_name() != kind {
        return Some(CaseResult::Error {
            kind: format!("(file says {kind} for a {} value)", value.kind_name()),
            message: String::new(),
        });
    }
    Some(CaseResult::Value(value))
}

fn evaluation_result(result: Result<Value, crate::eval::EvalError>) -> CaseResult {
    match result {
        Ok(value) => CaseResult::Value(value),
        Err(error) => CaseResult::Error {
            kind: "evaluation".to_owned(),
            message: error.to_string(),
        },
    }
}

fn compare(expected: &CaseResult, actual: &CaseResult) -> Option<String> {
    let matches = match (expected, actual) {
        (CaseResult::Value(expected), CaseResult::Value(actual)) => {
            expected.kind_name() == actual.kind_name() && expected.same_as(actual)
        }
        (
            CaseResult::Error {
                kind: expected_kind,
                message: expected_message,
            },
            CaseResult::Error { kind, message },
        ) => expected_kind == kind && message.contains(expected_message.as_str()),
        _ => false,
    };
    (!matches).then(|| format!("expected {expected}\n    actual   {actual}"))
}

fn check_flag(case: &serde_json::Value, field: &str, actual: bool, failures: &mut Vec<String>) {
    if let Some(expected) = case.get(field).and_then(serde_json::Value::as_bool)
        && expected != actual
    {
        failures.push(format!("expected {field} = {expected}, actual {actual}"));
    }
}

fn case_names(case: &serde_json::Value, context: &Context) -> NameSet {
    let Some(functions) = case.get("functions").and_then(serde_json::Value::as_array) else {
        return NameSet::allowing_context(context);
    };
    let mut names = NameSet::new().with_named_values(context.names());
    for function in functions.iter().filter_map(serde_json::Value::as_str) {
        if function.eq_ignore_ascii_case("hashFiles") {
            names = names.with_hash_files();
        } else if function.eq_ignore_ascii_case("status") {
            names = names.with_status_functions();
        }
    }
    names
}

/// The host a case describes with its `"host"` field.
struct VectorHost {
    status: JobStatus,
    hashes: Option<Vec<(String, String)>>,
}

impl VectorHost {
    fn from_case(case: &serde_json::Value) -> VectorHost {
        let host = case.get("host");
        let status = match host
            .and_then(|host| host.get("job_status"))
            .and_then(serde_json::Value::as_str)
        {
            Some("failure") => JobStatus::Failure,
            Some("cancelled") => JobStatus::Cancelled,
            _ => JobStatus::Success,
        };
        let hashes = host
            .and_then(|host| host.get("hash_files"))
            .and_then(serde_json::Value::as_object)
            .map(|table| {
                table
                    .iter()
                    .map(|(patterns, hash)| {
                        (
                            patterns.clone(),
                            hash.as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            });
        VectorHost { status, hashes }
    }
}

impl Host for VectorHost {
    fn hash_files(&self, patterns: &[String]) -> Result<String, String> {
        let Some(hashes) = &self.hashes else {
            return NoHost.hash_files(patterns);
        };
        let key = patterns.join("\n");
        Ok(hashes
            .iter()
            .find(|(candidate, _)| *candidate == key)
            .map(|(_, hash)| hash.clone())
            .unwrap_or_default())
    }

    fn job_status(&self) -> JobStatus {
        self.status
    }
}
