//! `sorat_expr::parse` and `Template::parse`, then evaluation: any text parses to an
//! expression or an error, and any expression evaluates to a value or an error, never a
//! panic.
//!
//! Input: the expression (also read as a template), then optionally a NUL byte and a JSON
//! object whose members are the contexts; without one, a fixed context of every kind of
//! value is used.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sorat_expr::{Context, Host, JobStatus, NameSet, PIPELINE_CONTEXTS, Template, Value};

/// Contexts with every kind of value, nested, and keys that differ only in case.
const DEFAULT_CONTEXT: &str = r#"{
  "github": {"event_name": "push", "ref": "refs/heads/main", "sha": "0123abc",
             "event": {"commits": [{"id": "a", "message": "fix"}, {"id": "b", "message": "Feat"}],
                       "number": 42, "draft": false, "labels": []}},
  "env": {"CI": "true", "EMPTY": "", "NUM": "0x10", "Spaces": " 1e3 "},
  "matrix": {"os": "linux", "shard": 2, "include": [{"a": 1}, {"a": null}]},
  "steps": {"build": {"outputs": {"version": "1.2.3"}, "outcome": "success"}},
  "needs": {"lint": {"result": "failure", "outputs": {}}},
  "inputs": {"greeting": "hello", "count": -0.5, "flag": true},
  "strategy": {"job-total": 2, "fail-fast": false},
  "vars": {"Key": "upper", "key": "lower"},
  "secrets": {},
  "a": [1, "1", true, null, 1.5e300, [], {}],
  "b": {"x": {"y": {"z": "deep"}}},
  "x": "ı İ ß"
}"#;

struct FuzzHost {
    status: JobStatus,
}

impl Host for FuzzHost {
    fn hash_files(&self, patterns: &[String]) -> Result<String, String> {
        if patterns.iter().any(String::is_empty) {
            return Err("an empty pattern".to_owned());
        }
        Ok(format!("{:064x}", patterns.iter().map(String::len).sum::<usize>()))
    }

    fn job_status(&self) -> JobStatus {
        self.status
    }
}

fn look_at(value: &Value) {
    let _ = value.to_display_string();
    let _ = value.to_json();
    let _ = value.to_pretty_json();
    let _ = value.is_truthy();
}

fn default_context() -> Context {
    // The constant is valid JSON whose top level is an object: both checked by the first run.
    let json = serde_json::from_str(DEFAULT_CONTEXT).expect("the default context is JSON");
    Context::from_json(&json).expect("the default context is an object")
}

fuzz_target!(|data: &[u8]| {
    let (source, context_json) = match data.iter().position(|&byte| byte == 0) {
        Some(nul) => (&data[..nul], Some(&data[nul + 1..])),
        None => (data, None),
    };
    let source = String::from_utf8_lossy(source);
    let context = context_json
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(json).ok())
        .and_then(|json| Context::from_json(&json))
        .unwrap_or_else(default_context);
    let names = NameSet::allowing_context(&context).with_named_values(PIPELINE_CONTEXTS);
    let host = FuzzHost {
        status: match data.len() % 3 {
            0 => JobStatus::Success,
            1 => JobStatus::Failure,
            _ => JobStatus::Cancelled,
        },
    };

    match sorat_expr::parse(&source, &names) {
        Ok(expr) => {
            let _ = (expr.source(), expr.is_empty(), expr.uses_status_function());
            if let Ok(value) = expr.eval(&context, &host) {
                look_at(&value);
            }
        }
        Err(error) => {
            let _ = error.to_string();
            assert!(error.byte_offset() <= error.expression.len());
        }
    }

    match Template::parse(&source, &names) {
        Ok(template) => {
            let _ = (template.is_literal(), template.literal_text());
            let _ = (template.single_expression(), template.mixes_text_and_expression());
            let _ = template.uses_status_function();
            for (offset, _) in template.expressions() {
                assert!(offset <= source.len(), "expression offset {offset} is past the text");
            }
            if let Ok(value) = template.eval(&context, &host) {
                look_at(&value);
            }
            let _ = template.eval_to_string(&context, &host);
        }
        Err(error) => {
            let _ = error.to_string();
            // The loader turns this offset into a span of the pipeline file.
            let offset = error.error_offset();
            assert!(offset <= source.len(), "error offset {offset} is past the text ({error})");
        }
    }
});
