//! Reading a JSON payload field by field, so that every error names the field's path.
//!
//! Payloads are read as `serde_json::Value` rather than into typed structs: the forges add
//! and drop fields across versions, and a `Value` walk reports `pull_request.head.sha` as
//! the missing field where serde would report a line and column.

use serde_json::Value;

use super::WebhookError;

/// A place in the payload: the value there (`None` when missing or null) and its path.
#[derive(Clone, Debug)]
pub(super) struct Node<'a> {
    value: Option<&'a Value>,
    path: String,
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'a> Node<'a> {
    pub(super) fn root(value: &'a Value) -> Node<'a> {
        Node {
            value: Some(value),
            path: String::new(),
        }
    }

    fn wrong_type(&self, expected: &'static str, found: &Value) -> WebhookError {
        WebhookError::WrongType {
            path: self.display_path(),
            expected,
            found: type_name(found),
        }
    }

    fn display_path(&self) -> String {
        if self.path.is_empty() {
            "(the payload)".to_string()
        } else {
            self.path.clone()
        }
    }

    /// The field `key` of this object; missing when this node is missing or null.
    pub(super) fn get(&self, key: &str) -> Result<Node<'a>, WebhookError> {
        let path = if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        };
        let value = match self.value {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => map.get(key).filter(|value| !value.is_null()),
            Some(other) => return Err(self.wrong_type("an object", other)),
        };
        Ok(Node { value, path })
    }

    /// Follows a dotted path of object keys (`pull_request.head.sha`).
    pub(super) fn at(&self, dotted: &str) -> Result<Node<'a>, WebhookError> {
        let mut node = self.clone();
        for key in dotted.split('.') {
            node = node.get(key)?;
        }
        Ok(node)
    }

    /// The value here, if any.
    pub(super) fn value(&self) -> Option<&'a Value> {
        self.value
    }

    /// The path of this place, for messages.
    pub(super) fn path(&self) -> String {
        self.display_path()
    }

    /// Whether a value (not null) is here.
    pub(super) fn is_present(&self) -> bool {
        self.value.is_some()
    }

    /// A required string.
    pub(super) fn str(&self) -> Result<&'a str, WebhookError> {
        self.opt_str()?.ok_or_else(|| WebhookError::MissingField {
            path: self.display_path(),
        })
    }

    /// A string, if present.
    pub(super) fn opt_str(&self) -> Result<Option<&'a str>, WebhookError> {
        match self.value {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(self.wrong_type("a string", other)),
        }
    }

    /// A string, if present and not empty, owned.
    pub(super) fn non_empty(&self) -> Result<Option<String>, WebhookError> {
        Ok(self
            .opt_str()?
            .filter(|text| !text.is_empty())
            .map(str::to_string))
    }

    /// A required non-negative integer.
    pub(super) fn u64(&self) -> Result<u64, WebhookError> {
        self.opt_u64()?.ok_or_else(|| WebhookError::MissingField {
            path: self.display_path(),
        })
    }

    /// A non-negative integer, if present.
    pub(super) fn opt_u64(&self) -> Result<Option<u64>, WebhookError> {
        match self.value {
            None => Ok(None),
            Some(value @ Value::Number(number)) => number
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong_type("a non-negative integer", value)),
            Some(other) => Err(self.wrong_type("a non-negative integer", other)),
        }
    }

    /// A boolean, if present.
    pub(super) fn opt_bool(&self) -> Result<Option<bool>, WebhookError> {
        match self.value {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(other) => Err(self.wrong_type("a boolean", other)),
        }
    }

    /// The items of an array; none when missing.
    pub(super) fn items(&self) -> Result<Vec<Node<'a>>, WebhookError> {
        match self.value {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items
                .iter()
                .enumerate()
                .map(|(index, item)| Node {
                    value: (!item.is_null()).then_some(item),
                    path: format!("{}[{index}]", self.path),
                })
                .collect()),
            Some(other) => Err(self.wrong_type("an array", other)),
        }
    }
}
