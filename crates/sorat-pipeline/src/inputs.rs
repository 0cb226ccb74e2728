//! The values a run is started with: manual inputs (`--input k=v`), checked against the
//! pipeline's declared types.

use indexmap::IndexMap;
use sorat_expr::Value;

use crate::load::coerce_input;
use crate::spec::Pipeline;
use crate::trigger::EventKind;

/// Checks `--input` values against `on.manual.inputs` and fills in defaults. Every problem is
/// returned, not only the first.
pub fn resolve_inputs(
    pipeline: &Pipeline,
    event: EventKind,
    given: &[(String, String)],
) -> Result<IndexMap<String, Value>, Vec<String>> {
    let declared = pipeline
        .triggers
        .manual
        .as_ref()
        .map(|manual| &manual.inputs);
    let mut problems = Vec::new();
    let mut values = IndexMap::new();
    for (name, text) in given {
        match declared.and_then(|inputs| inputs.get(name)) {
            Some(input) => match coerce_input(&input.kind, text) {
                Ok(value) => {
                    values.insert(name.clone(), value);
                }
                Err(message) => problems.push(format!("--input {name}: the value {message}")),
            },
            None => {
                let known: Vec<&str> = declared
                    .map(|inputs| inputs.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                let hint = match sorat_config::suggest::closest(name, known.iter().copied()) {
                    Some(candidate) => format!("; did you mean `{candidate}`?"),
                    None if known.is_empty() => {
                        "; the pipeline declares no inputs under `on.manual.inputs`".into()
                    }
                    None => format!("; the inputs are {}", known.join(", ")),
                };
                problems.push(format!("--input {name}: no such input{hint}"));
            }
        }
    }
    if let Some(declared) = declared {
        for (name, input) in declared {
            if values.contains_key(name) {
                continue;
            }
            match &input.default {
                Some(default) => {
                    values.insert(name.clone(), default.clone());
                }
                None if input.required && event == EventKind::Manual => {
                    problems.push(format!(
                        "the input `{name}` is required: pass --input {name}=…"
                    ));
                }
                None => {
                    let empty = match input.kind {
                        crate::spec::InputKind::Boolean => Value::Bool(false),
                        _ => Value::String(String::new()),
                    };
                    values.insert(name.clone(), empty);
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(values)
    } else {
        Err(problems)
    }
}
