//! The values expressions compute with, and the named values (contexts) they read.

use indexmap::IndexMap;

use crate::json::write_pretty_json;
use crate::number::format_number;

/// A value of the expression language: what a context holds and what an expression
/// yields. The six kinds are JSON's; numbers are doubles, as in GitHub Actions.
///
/// Object keys are case-insensitive when looked up (`github.Event_Name` finds
/// `event_name`). An object should not hold two keys that differ only in case;
/// [`Value::from_json`] keeps the first of such keys, and lookups always find the first.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// `null`, and what a missing property or out-of-range index yields.
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A double-precision number (NaN and the infinities included).
    Number(f64),
    /// A string.
    String(String),
    /// An ordered list of values.
    Array(Vec<Value>),
    /// A map from keys to values that keeps the keys' order.
    Object(IndexMap<String, Value>),
}

impl Value {
    /// Converts a JSON value. Of object keys that differ only in case, the first is kept,
    /// as GitHub's case-insensitive dictionaries do.
    pub fn from_json(json: &serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(items) => {
                Value::Array(items.iter().map(Value::from_json).collect())
            }
            serde_json::Value::Object(map) => {
                let mut object = IndexMap::with_capacity(map.len());
                let mut seen = std::collections::HashSet::with_capacity(map.len());
                for (key, item) in map {
                    if seen.insert(key.to_lowercase()) {
                        object.insert(key.clone(), Value::from_json(item));
                    }
                }
                Value::Object(object)
            }
        }
    }

    /// Converts to a JSON value. Whole numbers within ±2^53 become JSON integers (so `1`
    /// stays `1`, not `1.0`); NaN and the infinities, which JSON cannot hold, become
    /// `null`, as `JSON.stringify` does.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => number_to_json(*n),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(Value::to_json).collect())
            }
            Value::Object(map) => serde_json::Value::Object(
                map.iter()
                    .map(|(key, item)| (key.clone(), item.to_json()))
                    .collect(),
            ),
        }
    }

    /// GitHub's truthiness: `null`, `false`, `0`, `-0`, `NaN` and `''` are falsy;
    /// everything else, every array and object included, is truthy.
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => !(*n == 0.0 || n.is_nan()),
            Value::String(s) => !s.is_empty(),
            Value::Array(_) | Value::Object(_) => true,
        }
    }

    /// GitHub's coercion to a string, as `format` and `${{ }}` inside text apply it:
    /// `null` is empty, booleans are `true`/`false`, numbers print with at most 15
    /// fractional digits (`1`, `0.5`, `-Infinity`, `NaN`), arrays are `Array` and
    /// objects are `Object`.
    pub fn to_display_string(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => if *b { "true" } else { "false" }.to_owned(),
            Value::Number(n) => format_number(*n),
            Value::String(s) => s.clone(),
            Value::Array(_) => "Array".to_owned(),
            Value::Object(_) => "Object".to_owned(),
        }
    }

    /// The kind's name as GitHub spells it in messages and the test vectors:
    /// `Null`, `Boolean`, `Number`, `String`, `Array` or `Object`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "Null",
            Value::Bool(_) => "Boolean",
            Value::Number(_) => "Number",
            Value::String(_) => "String",
            Value::Array(_) => "Array",
            Value::Object(_) => "Object",
        }
    }

    /// Looks a key up in an object, ignoring case; `None` for a missing key or a value
    /// that is not an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(map) => map
                .iter()
                .find(|(candidate, _)| keys_match(candidate, key))
                .map(|(_, value)| value),
            _ => None,
        }
    }

    /// The value as `toJSON` prints it: JSON with two-space indentation, numbers in
    /// JavaScript's notation, NaN and the infinities as `null`.
    pub fn to_pretty_json(&self) -> String {
        let mut out = String::new();
        write_pretty_json(&mut out, &crate::eval::Val::from_value(self), 0);
        out
    }

    /// Structural equality for tests and the vector harness: like `==` on [`Value`] but
    /// NaN equals NaN and object keys must appear in the same order.
    pub fn same_as(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Number(a), Value::Number(b)) => a == b || (a.is_nan() && b.is_nan()),
            (Value::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_as(y))
            }
            (Value::Object(a), Value::Object(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((ka, va), (kb, vb))| ka == kb && va.same_as(vb))
            }
            _ => self == other,
        }
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Bool(value)
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Value::Number(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::String(value.to_owned())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::String(value)
    }
}

impl From<Vec<Value>> for Value {
    fn from(value: Vec<Value>) -> Self {
        Value::Array(value)
    }
}

impl From<IndexMap<String, Value>> for Value {
    fn from(value: IndexMap<String, Value>) -> Self {
        Value::Object(value)
    }
}

impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Number(n) => number_to_json(*n).serialize(serializer),
            Value::String(s) => serializer.serialize_str(s),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (key, item) in map {
                    out.serialize_entry(key, item)?;
                }
                out.end()
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = serde_json::Value::deserialize(deserializer)?;
        Ok(Value::from_json(&json))
    }
}

fn number_to_json(n: f64) -> serde_json::Value {
    const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() <= EXACT_INTEGER_LIMIT {
        // The range check makes the conversion exact; -0 becomes 0.
        serde_json::Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

/// Whether two object keys or context names are the same name: GitHub compares them
/// ignoring case (JavaScript's `toLowerCase` on both sides).
pub(crate) fn keys_match(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.to_lowercase() == b.to_lowercase()
    }
}

/// The named values an expression can read (`github`, `env`, `matrix`, ...), looked up
/// ignoring case.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    values: IndexMap<String, Value>,
}

impl Context {
    /// An empty context.
    pub fn new() -> Context {
        Context::default()
    }

    /// Reads the named values from a JSON object (`{"github": {...}, "env": {...}}`);
    /// `None` if the JSON is not an object.
    pub fn from_json(json: &serde_json::Value) -> Option<Context> {
        match Value::from_json(json) {
            Value::Object(values) => Some(Context { values }),
            _ => None,
        }
    }

    /// Sets a named value, replacing one whose name differs only in case; returns the
    /// value replaced.
    pub fn insert(&mut self, name: impl Into<String>, value: Value) -> Option<Value> {
        let name = name.into();
        match self
            .values
            .iter_mut()
            .find(|(existing, _)| keys_match(existing, &name))
        {
            Some((_, slot)) => Some(std::mem::replace(slot, value)),
            None => {
                self.values.insert(name, value);
                None
            }
        }
    }

    /// The named value, ignoring case.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values
            .iter()
            .find(|(candidate, _)| keys_match(candidate, name))
            .map(|(_, value)| value)
    }

    /// The named value for changing in place, ignoring case.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Value> {
        self.values
            .iter_mut()
            .find(|(candidate, _)| keys_match(candidate, name))
            .map(|(_, value)| value)
    }

    /// Removes a named value, ignoring case, and returns it.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let index = self
            .values
            .keys()
            .position(|candidate| keys_match(candidate, name))?;
        self.values
            .shift_remove_index(index)
            .map(|(_, value)| value)
    }

    /// The names, as they were inserted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// The names with their values.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values
            .iter()
            .map(|(name, value)| (name.as_str(), value))
    }

    /// How many named values there are.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no named values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl<N: Into<String>> FromIterator<(N, Value)> for Context {
    fn from_iter<I: IntoIterator<Item = (N, Value)>>(iter: I) -> Self {
        let mut context = Context::new();
        context.extend(iter);
        context
    }
}

impl<N: Into<String>> Extend<(N, Value)> for Context {
    fn extend<I: IntoIterator<Item = (N, Value)>>(&mut self, iter: I) {
        for (name, value) in iter {
            self.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_from_json_keep_the_first_of_keys_that_differ_in_case() {
        let json: serde_json::Value = serde_json::json!({"Foo": 1, "foo": 2, "bar": 3});
        let value = Value::from_json(&json);
        assert_eq!(value.get("FOO"), Some(&Value::Number(1.0)));
        assert_eq!(value.to_json(), serde_json::json!({"Foo": 1, "bar": 3}));
    }

    #[test]
    fn numbers_become_json_integers_when_whole() {
        assert_eq!(Value::Number(1.0).to_json().to_string(), "1");
        assert_eq!(Value::Number(-0.0).to_json().to_string(), "0");
        assert_eq!(Value::Number(0.5).to_json().to_string(), "0.5");
        assert_eq!(Value::Number(f64::NAN).to_json(), serde_json::Value::Null);
        assert_eq!(Value::Number(1e300).to_json().to_string(), "1e+300");
    }

    #[test]
    fn context_names_ignore_case() {
        let mut context = Context::new();
        context.insert("GitHub", Value::from("a"));
        assert_eq!(
            context.insert("github", Value::from("b")),
            Some(Value::from("a"))
        );
        assert_eq!(context.len(), 1);
        assert_eq!(context.get("GITHUB"), Some(&Value::from("b")));
        assert_eq!(context.names().collect::<Vec<_>>(), ["GitHub"]);
        assert_eq!(context.remove("gitHUB"), Some(Value::from("b")));
        assert!(context.is_empty());
    }
}
