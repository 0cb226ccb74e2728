//! Matrix expansion with GitHub's rules for `include` and `exclude`.
//!
//! 1. The cartesian product of the axes, first axis outermost.
//! 2. Combinations matching an `exclude` entry (every key of the entry equal) are removed.
//! 3. Each `include` entry is merged into every remaining combination whose original axis
//!    values it does not contradict (it may add keys, and overwrite keys added by an earlier
//!    include, but never an original axis value); an entry that fits no combination becomes
//!    a combination of its own.

use indexmap::IndexMap;
use sorat_expr::Value;

/// GitHub's limit on combinations per job.
pub const MAX_COMBINATIONS: usize = 256;

/// One combination: axis name to value.
pub type Combination = IndexMap<String, Value>;

/// Why a matrix cannot be expanded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MatrixError {
    /// More combinations than allowed.
    #[error("the matrix expands to {0} combinations; at most {MAX_COMBINATIONS} are allowed")]
    TooLarge(usize),
    /// An `include`/`exclude` entry, or an axis, has the wrong type.
    #[error("{0}")]
    Shape(String),
    /// Nothing is left to run.
    #[error("the matrix has no combinations left (every one was excluded)")]
    Empty,
}

/// Expands axes, `include` and `exclude` into combinations.
pub fn expand(
    axes: &IndexMap<String, Vec<Value>>,
    include: &[Value],
    exclude: &[Value],
) -> Result<Vec<Combination>, MatrixError> {
    let product_size = axes
        .values()
        .try_fold(1usize, |size, values| size.checked_mul(values.len()));
    match product_size {
        Some(size) if size <= MAX_COMBINATIONS || axes.is_empty() => {}
        Some(size) => return Err(MatrixError::TooLarge(size)),
        None => return Err(MatrixError::TooLarge(usize::MAX)),
    }
    let mut combinations: Vec<Combination> = if axes.is_empty() {
        Vec::new()
    } else {
        vec![Combination::new()]
    };
    for (name, values) in axes {
        let mut next = Vec::with_capacity(combinations.len() * values.len());
        for combination in &combinations {
            for value in values {
                let mut extended = combination.clone();
                extended.insert(name.clone(), value.clone());
                next.push(extended);
            }
        }
        combinations = next;
    }
    let excludes = objects(exclude, "exclude")?;
    combinations.retain(|combination| {
        !excludes.iter().any(|entry| {
            entry.iter().all(|(key, value)| {
                combination
                    .get(key)
                    .is_some_and(|v| loosely_equal(v, value))
            })
        })
    });
    let had_axes_combinations = !combinations.is_empty();
    let original_count = combinations.len();
    for entry in objects(include, "include")? {
        let mut merged = false;
        for combination in combinations.iter_mut().take(original_count) {
            let fits = entry.iter().all(|(key, value)| {
                !axes.contains_key(key)
                    || combination
                        .get(key)
                        .is_some_and(|existing| loosely_equal(existing, value))
            });
            if fits {
                for (key, value) in entry {
                    combination.insert(key.clone(), value.clone());
                }
                merged = true;
            }
        }
        if !merged {
            combinations.push(entry.clone());
        }
    }
    if combinations.len() > MAX_COMBINATIONS {
        return Err(MatrixError::TooLarge(combinations.len()));
    }
    if combinations.is_empty() && (had_axes_combinations || !axes.is_empty()) {
        return Err(MatrixError::Empty);
    }
    Ok(combinations)
}

fn objects<'v>(
    entries: &'v [Value],
    what: &str,
) -> Result<Vec<&'v IndexMap<String, Value>>, MatrixError> {
    entries
        .iter()
        .map(|entry| match entry {
            Value::Object(map) => Ok(map),
            other => Err(MatrixError::Shape(format!(
                "each `{what}` entry must be a mapping, found {}",
                other.kind_name()
            ))),
        })
        .collect()
}

/// Matrix values compare as JSON values do, numbers by value.
fn loosely_equal(a: &Value, b: &Value) -> bool {
    a.to_json() == b.to_json()
}

/// The display suffix of a matrix job, as GitHub shows it: `test (linux, 1.80)`.
pub fn display_suffix(combination: &Combination) -> String {
    let parts: Vec<String> = combination
        .values()
        .map(|value| match value {
            Value::Object(_) | Value::Array(_) => {
                serde_json::to_string(&value.to_json()).unwrap_or_default()
            }
            other => other.to_display_string(),
        })
        .collect();
    format!("({})", parts.join(", "))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn value(json: serde_json::Value) -> Value {
        Value::from_json(&json)
    }

    fn axes(json: serde_json::Value) -> IndexMap<String, Vec<Value>> {
        let serde_json::Value::Object(map) = json else {
            panic!("axes must be an object")
        };
        map.into_iter()
            .map(|(k, v)| {
                let serde_json::Value::Array(items) = v else {
                    panic!("axis must be an array")
                };
                (k, items.iter().map(Value::from_json).collect())
            })
            .collect()
    }

    fn as_json(combinations: &[Combination]) -> serde_json::Value {
        serde_json::Value::Array(
            combinations
                .iter()
                .map(|c| Value::Object(c.clone()).to_json())
                .collect(),
        )
    }

    /// The example from GitHub's documentation of `include`.
    #[test]
    fn include_follows_githubs_documented_example() {
        let axes = axes(serde_json::json!({"fruit": ["apple", "pear"], "animal": ["cat", "dog"]}));
        let include = [
            value(serde_json::json!({"color": "green"})),
            value(serde_json::json!({"color": "pink", "animal": "cat"})),
            value(serde_json::json!({"fruit": "apple", "shape": "circle"})),
            value(serde_json::json!({"fruit": "banana"})),
            value(serde_json::json!({"fruit": "banana", "animal": "cat"})),
        ];
        let combinations = expand(&axes, &include, &[]).unwrap();
        assert_eq!(
            as_json(&combinations),
            serde_json::json!([
                {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
                {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
                {"fruit": "pear", "animal": "cat", "color": "pink"},
                {"fruit": "pear", "animal": "dog", "color": "green"},
                {"fruit": "banana"},
                {"fruit": "banana", "animal": "cat"},
            ])
        );
    }

    #[test]
    fn exclude_removes_partial_matches() {
        let axes = axes(serde_json::json!({"os": ["linux", "mac"], "v": [1, 2, 3]}));
        let exclude = [value(serde_json::json!({"os": "mac", "v": 1}))];
        let combinations = expand(&axes, &[], &exclude).unwrap();
        assert_eq!(combinations.len(), 5);
        assert!(
            !combinations
                .iter()
                .any(|c| c["os"] == Value::String("mac".into()) && c["v"] == Value::Number(1.0))
        );
    }

    #[test]
    fn include_only_matrix() {
        let combinations = expand(
            &IndexMap::new(),
            &[
                value(serde_json::json!({"a": 1})),
                value(serde_json::json!({"a": 2})),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(combinations.len(), 2);
    }

    #[test]
    fn too_many_combinations_is_an_error() {
        let many: Vec<serde_json::Value> = (0..20).map(serde_json::Value::from).collect();
        let axes = axes(serde_json::json!({"a": many.clone(), "b": many}));
        assert_eq!(expand(&axes, &[], &[]), Err(MatrixError::TooLarge(400)));
    }

    #[test]
    fn excluding_everything_is_an_error() {
        let axes = axes(serde_json::json!({"a": [1]}));
        let exclude = [value(serde_json::json!({"a": 1}))];
        assert_eq!(expand(&axes, &[], &exclude), Err(MatrixError::Empty));
    }

    #[test]
    fn display_suffix_lists_values() {
        let axes = axes(serde_json::json!({"os": ["linux"], "rust": ["1.80"]}));
        let combinations = expand(&axes, &[], &[]).unwrap();
        assert_eq!(display_suffix(&combinations[0]), "(linux, 1.80)");
    }
}
