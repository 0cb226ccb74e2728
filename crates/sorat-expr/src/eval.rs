//! Evaluates a syntax tree against a [`Context`] with GitHub's semantics: loose equality
//! with JavaScript-like coercion, case-insensitive strings, `&&`/`||` that return an
//! operand, `*` filters, and reference identity for arrays and objects.
//!
//! Evaluation works on [`Val`], which borrows from the context instead of copying it:
//! arrays and objects are either a reference into the context or a shared, reference-
//! counted value built during evaluation (by `fromJSON` or a `*` filter). Both kinds have
//! an identity, which `==` needs: GitHub compares arrays and objects by reference, so
//! `a == a` is true but two equal-looking objects are not equal.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::rc::Rc;

use indexmap::IndexMap;

use crate::json::write_pretty_json;
use crate::number::{format_number, is_js_whitespace, parse_js_number};
use crate::parser::{CompareOp, Function, Index, Literal, LogicalOp, Node};
use crate::value::{Context, Value, keys_match};

/// How much memory an evaluation may hold in intermediate results, counted as GitHub
/// counts it (a string is 26 bytes plus 2 per UTF-16 unit; any other value 24 bytes).
/// GitHub fails such evaluations with "The maximum allowed memory size was exceeded";
/// 1 MiB is the limit that reproduces the reference's test vector.
pub const MAX_MEMORY_BYTES: usize = 1024 * 1024;

const STRING_BASE_BYTES: usize = 26;
const MIN_OBJECT_BYTES: usize = 24;

/// The state of the job, which the status functions report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum JobStatus {
    /// Every earlier step succeeded (or the job has not run a step yet).
    #[default]
    Success,
    /// An earlier step failed.
    Failure,
    /// The run was cancelled.
    Cancelled,
}

/// What an expression needs from the world outside it: file hashes for `hashFiles` and
/// the job's status for `success()`, `failure()`, `always()` and `cancelled()`. The
/// expression language itself never touches files or processes.
pub trait Host {
    /// The hash of the files matching `patterns` (GitHub: a SHA-256 over the matched
    /// files' SHA-256s, or `''` when nothing matches); `Err` with a message for the user.
    fn hash_files(&self, patterns: &[String]) -> Result<String, String>;

    /// The status of the job so far.
    fn job_status(&self) -> JobStatus;
}

/// A [`Host`] for places without a workspace (tests, the vector runner): the job counts
/// as successful and `hashFiles` fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHost;

impl Host for NoHost {
    fn hash_files(&self, _patterns: &[String]) -> Result<String, String> {
        Err("hashFiles is not available here: there is no workspace".to_owned())
    }

    fn job_status(&self) -> JobStatus {
        JobStatus::Success
    }
}

/// What kind of failure stopped an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EvalErrorKind {
    /// A function rejected its arguments: an invalid `format` string, text that is not
    /// JSON given to `fromJSON`, a `case` predicate that is not a boolean.
    Function,
    /// The [`Host`] could not answer (`hashFiles` failed).
    Host,
    /// Intermediate results exceeded [`MAX_MEMORY_BYTES`].
    MemoryExceeded,
}

/// An evaluation failure; its message is GitHub's where GitHub has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EvalError {
    /// What kind of failure.
    pub kind: EvalErrorKind,
    /// The message for the user.
    pub message: String,
}

impl EvalError {
    fn function(message: impl Into<String>) -> EvalError {
        EvalError {
            kind: EvalErrorKind::Function,
            message: message.into(),
        }
    }
}

/// A value during evaluation (see the module documentation).
#[derive(Debug, Clone)]
pub(crate) enum Val<'a> {
    Null,
    Bool(bool),
    Number(f64),
    String(Cow<'a, str>),
    Array(ArrayVal<'a>),
    Object(ObjectVal<'a>),
}

#[derive(Debug, Clone)]
pub(crate) enum ArrayVal<'a> {
    /// An array inside the context.
    Context(&'a Vec<Value>),
    /// An array built during evaluation. `filtered` marks the result of a `*`: indexing a
    /// filtered array applies the index to each element instead (`a.*.name`).
    Built {
        items: Rc<Vec<Val<'a>>>,
        filtered: bool,
    },
}

#[derive(Debug, Clone)]
pub(crate) enum ObjectVal<'a> {
    /// An object inside the context.
    Context(&'a IndexMap<String, Value>),
    /// An object built by `fromJSON`; keys are unique ignoring case.
    Built(Rc<Vec<(String, Val<'a>)>>),
}

impl<'a> Val<'a> {
    pub(crate) fn from_value(value: &'a Value) -> Val<'a> {
        match value {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Val::Number(*n),
            Value::String(s) => Val::String(Cow::Borrowed(s)),
            Value::Array(items) => Val::Array(ArrayVal::Context(items)),
            Value::Object(map) => Val::Object(ObjectVal::Context(map)),
        }
    }

    fn string(text: String) -> Val<'a> {
        Val::String(Cow::Owned(text))
    }

    fn filtered(items: Vec<Val<'a>>) -> Val<'a> {
        Val::Array(ArrayVal::Built {
            items: Rc::new(items),
            filtered: true,
        })
    }

    pub(crate) fn to_value(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Number(n) => Value::Number(*n),
            Val::String(s) => Value::String(s.clone().into_owned()),
            Val::Array(ArrayVal::Context(items)) => Value::Array((*items).clone()),
            Val::Array(array) => Value::Array(array.items().map(|item| item.to_value()).collect()),
            Val::Object(ObjectVal::Context(map)) => Value::Object((*map).clone()),
            Val::Object(object) => Value::Object(
                object
                    .entries()
                    .map(|(key, item)| (key.to_owned(), item.to_value()))
                    .collect(),
            ),
        }
    }

    fn kind_name(&self) -> &'static str {
        match self {
            Val::Null => "Null",
            Val::Bool(_) => "Boolean",
            Val::Number(_) => "Number",
            Val::String(_) => "String",
            Val::Array(_) => "Array",
            Val::Object(_) => "Object",
        }
    }

    fn is_primitive(&self) -> bool {
        !matches!(self, Val::Array(_) | Val::Object(_))
    }

    fn is_truthy(&self) -> bool {
        match self {
            Val::Null => false,
            Val::Bool(b) => *b,
            Val::Number(n) => !(*n == 0.0 || n.is_nan()),
            Val::String(s) => !s.is_empty(),
            Val::Array(_) | Val::Object(_) => true,
        }
    }

    fn to_number(&self) -> f64 {
        match self {
            Val::Null => 0.0,
            Val::Bool(b) => f64::from(u8::from(*b)),
            Val::Number(n) => *n,
            Val::String(s) => parse_js_number(s),
            Val::Array(_) | Val::Object(_) => f64::NAN,
        }
    }

    fn to_display(&self) -> Cow<'_, str> {
        match self {
            Val::Null => Cow::Borrowed(""),
            Val::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Val::Number(n) => Cow::Owned(format_number(*n)),
            Val::String(s) => Cow::Borrowed(s),
            Val::Array(_) => Cow::Borrowed("Array"),
            Val::Object(_) => Cow::Borrowed("Object"),
        }
    }

    /// Memory as GitHub accounts it for a result.
    fn accounted_bytes(&self) -> usize {
        match self {
            Val::String(s) => string_bytes(s),
            _ => MIN_OBJECT_BYTES,
        }
    }
}

fn string_bytes(text: &str) -> usize {
    STRING_BASE_BYTES + 2 * utf16_len(text)
}

fn utf16_len(text: &str) -> usize {
    if text.is_ascii() {
        text.len()
    } else {
        text.chars().map(char::len_utf16).sum()
    }
}

impl<'a> ArrayVal<'a> {
    fn len(&self) -> usize {
        match self {
            ArrayVal::Context(items) => items.len(),
            ArrayVal::Built { items, .. } => items.len(),
        }
    }

    fn get(&self, index: usize) -> Option<Val<'a>> {
        match self {
            ArrayVal::Context(items) => items.get(index).map(Val::from_value),
            ArrayVal::Built { items, .. } => items.get(index).cloned(),
        }
    }

    pub(crate) fn items(&self) -> Box<dyn Iterator<Item = Val<'a>> + '_> {
        match self {
            ArrayVal::Context(items) => Box::new(items.iter().map(Val::from_value)),
            ArrayVal::Built { items, .. } => Box::new(items.iter().cloned()),
        }
    }

    fn is_filtered(&self) -> bool {
        matches!(self, ArrayVal::Built { filtered: true, .. })
    }

    fn same_reference(&self, other: &ArrayVal<'a>) -> bool {
        match (self, other) {
            (ArrayVal::Context(a), ArrayVal::Context(b)) => std::ptr::eq(*a, *b),
            (ArrayVal::Built { items: a, .. }, ArrayVal::Built { items: b, .. }) => {
                Rc::ptr_eq(a, b)
            }
            _ => false,
        }
    }
}

impl<'a> ObjectVal<'a> {
    fn get(&self, key: &str) -> Option<Val<'a>> {
        match self {
            ObjectVal::Context(map) => map
                .iter()
                .find(|(candidate, _)| keys_match(candidate, key))
                .map(|(_, value)| Val::from_value(value)),
            ObjectVal::Built(entries) => entries
                .iter()
                .find(|(candidate, _)| keys_match(candidate, key))
                .map(|(_, value)| value.clone()),
        }
    }

    fn values(&self) -> Box<dyn Iterator<Item = Val<'a>> + '_> {
        Box::new(self.entries().map(|(_, value)| value))
    }

    pub(crate) fn entries(&self) -> Box<dyn Iterator<Item = (&str, Val<'a>)> + '_> {
        match self {
            ObjectVal::Context(map) => Box::new(
                map.iter()
                    .map(|(key, value)| (key.as_str(), Val::from_value(value))),
            ),
            ObjectVal::Built(entries) => Box::new(
                entries
                    .iter()
                    .map(|(key, value)| (key.as_str(), value.clone())),
            ),
        }
    }

    fn same_reference(&self, other: &ObjectVal<'a>) -> bool {
        match (self, other) {
            (ObjectVal::Context(a), ObjectVal::Context(b)) => std::ptr::eq(*a, *b),
            (ObjectVal::Built(a), ObjectVal::Built(b)) => Rc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// Evaluates `root` (`None` is the empty expression, which is `null`).
pub(crate) fn evaluate(
    root: Option<&Node>,
    source: &str,
    context: &Context,
    host: &dyn Host,
) -> Result<Value, EvalError> {
    let Some(root) = root else {
        return Ok(Value::Null);
    };
    let mut evaluator = Evaluator {
        context,
        host,
        source,
        memory_used: 0,
    };
    Ok(evaluator.eval(root)?.to_value())
}

struct Evaluator<'a> {
    context: &'a Context,
    host: &'a dyn Host,
    source: &'a str,
    memory_used: usize,
}

impl<'a> Evaluator<'a> {
    /// Evaluates a node. Like GitHub, memory held by a node's operands is released when
    /// the node completes, and only its result stays accounted.
    fn eval(&mut self, node: &'a Node) -> Result<Val<'a>, EvalError> {
        let mark = self.memory_used;
        let value = self.eval_node(node)?;
        self.memory_used = mark;
        self.account(value.accounted_bytes())?;
        Ok(value)
    }

    fn account(&mut self, bytes: usize) -> Result<(), EvalError> {
        self.memory_used = self.memory_used.saturating_add(bytes);
        if self.memory_used > MAX_MEMORY_BYTES {
            return Err(self.memory_exceeded());
        }
        Ok(())
    }

    fn memory_exceeded(&self) -> EvalError {
        EvalError {
            kind: EvalErrorKind::MemoryExceeded,
            message: format!(
                "The maximum allowed memory size was exceeded while evaluating the following expression: {}",
                self.source
            ),
        }
    }

    fn eval_node(&mut self, node: &'a Node) -> Result<Val<'a>, EvalError> {
        match node {
            Node::Literal(literal) => Ok(match literal {
                Literal::Null => Val::Null,
                Literal::Bool(b) => Val::Bool(*b),
                Literal::Number(n) => Val::Number(*n),
                Literal::String(s) => Val::String(Cow::Borrowed(s)),
            }),
            Node::NamedValue(name) => Ok(self.context.get(name).map_or(Val::Null, Val::from_value)),
            Node::Index { target, index } => {
                let target = self.eval(target)?;
                let key = match index {
                    Index::Star => IndexKey::Star,
                    Index::Key(key) => IndexKey::from_val(&self.eval(key)?),
                };
                Ok(access(&target, &key))
            }
            Node::Not(inner) => Ok(Val::Bool(!self.eval(inner)?.is_truthy())),
            Node::Compare { first, rest } => {
                let mut left = self.eval(first)?;
                for (op, right) in rest {
                    let right = self.eval(right)?;
                    left = Val::Bool(compare(*op, &left, &right));
                }
                Ok(left)
            }
            Node::Logical { op, operands } => {
                let mut result = Val::Null;
                for operand in operands {
                    result = self.eval(operand)?;
                    let decided = match op {
                        LogicalOp::And => !result.is_truthy(),
                        LogicalOp::Or => result.is_truthy(),
                    };
                    if decided {
                        break;
                    }
                }
                Ok(result)
            }
            Node::Call { function, args } => self.call(*function, args),
        }
    }

    fn call(&mut self, function: Function, args: &'a [Node]) -> Result<Val<'a>, EvalError> {
        match function {
            Function::Case => return self.case(args),
            Function::Format => return self.format(args),
            Function::Success => {
                return Ok(Val::Bool(self.host.job_status() == JobStatus::Success));
            }
            Function::Failure => {
                return Ok(Val::Bool(self.host.job_status() == JobStatus::Failure));
            }
            Function::Cancelled => {
                return Ok(Val::Bool(self.host.job_status() == JobStatus::Cancelled));
            }
            Function::Always => return Ok(Val::Bool(true)),
            _ => {}
        }
        let mut values = Vec::with_capacity(args.len());
        for arg in args {
            values.push(self.eval(arg)?);
        }
        let first = values.first().cloned().unwrap_or(Val::Null);
        let second = values.get(1).cloned().unwrap_or(Val::Null);
        match function {
            Function::Contains => Ok(Val::Bool(contains(&first, &second))),
            Function::StartsWith => Ok(Val::Bool(affix_matches(&first, &second, |text, affix| {
                text.starts_with(affix)
            }))),
            Function::EndsWith => Ok(Val::Bool(affix_matches(&first, &second, |text, affix| {
                text.ends_with(affix)
            }))),
            Function::Join => Ok(join(&first, values.get(1))),
            Function::ToJson => {
                let mut out = String::new();
                write_pretty_json(&mut out, &first, 0);
                Ok(Val::string(out))
            }
            Function::FromJson => self.parse_json(&first),
            Function::HashFiles => {
                let patterns: Vec<String> = values
                    .iter()
                    .map(|value| value.to_display().into_owned())
                    .collect();
                self.host
                    .hash_files(&patterns)
                    .map(Val::string)
                    .map_err(|message| EvalError {
                        kind: EvalErrorKind::Host,
                        message,
                    })
            }
            Function::Case
            | Function::Format
            | Function::Success
            | Function::Failure
            | Function::Cancelled
            | Function::Always => Ok(Val::Null),
        }
    }

    /// `case(pred1, value1, pred2, value2, ..., default)`: the value after the first
    /// predicate that is `true`. Like GitHub's runner, only what is needed is evaluated,
    /// and a predicate must be a boolean (no truthiness).
    fn case(&mut self, args: &'a [Node]) -> Result<Val<'a>, EvalError> {
        let Some((default, pairs)) = args.split_last() else {
            return Ok(Val::Null);
        };
        for pair in pairs.chunks(2) {
            let [predicate, value] = pair else {
                break;
            };
            match self.eval(predicate)? {
                Val::Bool(true) => return self.eval(value),
                Val::Bool(false) => {}
                _ => {
                    return Err(EvalError::function(
                        "case predicate must evaluate to a boolean value",
                    ));
                }
            }
        }
        self.eval(default)
    }

    /// `format('{0} and {1}', a, b)` with `{{`/`}}` escapes. The format string is checked
    /// whole before any argument is evaluated, and only the arguments it references are
    /// evaluated, once each, as GitHub's runner does.
    fn format(&mut self, args: &'a [Node]) -> Result<Val<'a>, EvalError> {
        let Some((first, rest)) = args.split_first() else {
            return Ok(Val::string(String::new()));
        };
        let format = self.eval(first)?.to_display().into_owned();
        let segments = parse_format(&format, rest.len())?;
        let mut cache: Vec<Option<Val<'a>>> = vec![None; rest.len()];
        let mut out = String::new();
        let mut out_units = 0usize;
        for segment in segments {
            let piece: Cow<'_, str> = match segment {
                FormatSegment::Text(text) => Cow::Owned(text),
                FormatSegment::Argument { index, specifiers } => {
                    if cache[index].is_none() {
                        cache[index] = Some(self.eval(&rest[index])?);
                    }
                    let value = cache[index]
                        .as_ref()
                        .map_or(Cow::Borrowed(""), Val::to_display);
                    if !specifiers.is_empty() {
                        let kind = cache[index].as_ref().map_or("Null", Val::kind_name);
                        return Err(EvalError::function(format!(
                            "The format specifiers '{specifiers}' are not valid for objects of type '{kind}'"
                        )));
                    }
                    value
                }
            };
            out_units += utf16_len(&piece);
            if self
                .memory_used
                .saturating_add(STRING_BASE_BYTES + 2 * out_units)
                > MAX_MEMORY_BYTES
            {
                return Err(self.memory_exceeded());
            }
            out.push_str(&piece);
        }
        Ok(Val::string(out))
    }

    fn parse_json(&mut self, input: &Val<'a>) -> Result<Val<'a>, EvalError> {
        let text = input.to_display();
        if text.trim_matches(is_js_whitespace).is_empty() {
            return Err(EvalError::function(
                "Error parsing JSON when evaluating fromJson: the input is empty",
            ));
        }
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|error| {
            EvalError::function(format!(
                "Error parsing JSON when evaluating fromJson: {error}"
            ))
        })?;
        let mut bytes = 0usize;
        let value = val_from_json(&json, &mut bytes);
        self.account(bytes)?;
        Ok(value)
    }
}

/// Converts parsed JSON to a built value, keeping the first of keys that differ only in
/// case, and totals its memory as GitHub would account it.
fn val_from_json<'a>(json: &serde_json::Value, bytes: &mut usize) -> Val<'a> {
    *bytes = bytes.saturating_add(MIN_OBJECT_BYTES);
    match json {
        serde_json::Value::Null => Val::Null,
        serde_json::Value::Bool(b) => Val::Bool(*b),
        serde_json::Value::Number(n) => Val::Number(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => {
            *bytes = bytes.saturating_add(string_bytes(s));
            Val::String(Cow::Owned(s.clone()))
        }
        serde_json::Value::Array(items) => {
            let items = items
                .iter()
                .map(|item| val_from_json(item, bytes))
                .collect();
            Val::Array(ArrayVal::Built {
                items: Rc::new(items),
                filtered: false,
            })
        }
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, Val<'a>)> = Vec::with_capacity(map.len());
            let mut seen = std::collections::HashSet::with_capacity(map.len());
            for (key, item) in map {
                if seen.insert(key.to_lowercase()) {
                    *bytes = bytes.saturating_add(string_bytes(key));
                    entries.push((key.clone(), val_from_json(item, bytes)));
                }
            }
            Val::Object(ObjectVal::Built(Rc::new(entries)))
        }
    }
}

enum FormatSegment {
    Text(String),
    Argument { index: usize, specifiers: String },
}

/// Splits a format string into text and `{N}` references, validating it as GitHub's
/// runner does: `{{` and `}}` are escapes, `{N}` needs `N` in 0..=255 and an argument to
/// match, `{N:spec}` is accepted by the grammar but no value here supports specifiers.
fn parse_format(format: &str, argument_count: usize) -> Result<Vec<FormatSegment>, EvalError> {
    let invalid =
        || EvalError::function(format!("The following format string is invalid: {format}"));
    let chars: Vec<char> = format.chars().collect();
    let char_at = |index: usize| chars.get(index).copied();
    let find = |c: char, from: usize| {
        chars[from.min(chars.len())..]
            .iter()
            .position(|x| *x == c)
            .map(|at| at + from)
    };
    let text = |from: usize, to: usize| -> String { chars[from..to].iter().collect() };
    let mut segments = Vec::new();
    let mut index = 0;
    while index < chars.len() {
        let left = find('{', index);
        let right = find('}', index);
        match (left, right) {
            (Some(left), right) if right.is_none_or(|right| right > left) => {
                if char_at(left + 1) == Some('{') {
                    segments.push(FormatSegment::Text(text(index, left + 1)));
                    index = left + 2;
                    continue;
                }
                let reference = right
                    .filter(|right| *right > left + 1)
                    .and_then(|_| read_argument_index(&chars, left + 1))
                    .and_then(|(argument, after)| {
                        read_format_specifiers(&chars, after)
                            .map(|(specifiers, close)| (argument, specifiers, close))
                    });
                let Some((argument, specifiers, close)) = reference else {
                    return Err(invalid());
                };
                if argument >= argument_count {
                    return Err(EvalError::function(format!(
                        "The following format string references more arguments than were supplied: {format}"
                    )));
                }
                if left > index {
                    segments.push(FormatSegment::Text(text(index, left)));
                }
                segments.push(FormatSegment::Argument {
                    index: argument,
                    specifiers,
                });
                index = close + 1;
            }
            (_, Some(right)) => {
                if char_at(right + 1) != Some('}') {
                    return Err(invalid());
                }
                segments.push(FormatSegment::Text(text(index, right + 1)));
                index = right + 2;
            }
            (_, None) => {
                segments.push(FormatSegment::Text(text(index, chars.len())));
                break;
            }
        }
    }
    Ok(segments)
}

/// Reads the digits of `{N`; `N` must fit a byte, as in GitHub. Returns the index and the
/// position after the digits.
fn read_argument_index(chars: &[char], start: usize) -> Option<(usize, usize)> {
    let digits: String = chars[start.min(chars.len())..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    if digits.is_empty() {
        return None;
    }
    let index: u8 = digits.parse().ok()?;
    Some((usize::from(index), start + digits.len()))
}

/// Reads an optional `:specifiers` up to the closing brace (`}}` inside is an escaped
/// brace). Returns the specifiers and the position of the closing brace.
fn read_format_specifiers(chars: &[char], start: usize) -> Option<(String, usize)> {
    match chars.get(start) {
        Some('}') => return Some((String::new(), start)),
        Some(':') => {}
        _ => return None,
    }
    let mut specifiers = String::new();
    let mut index = start + 1;
    loop {
        match chars.get(index) {
            None => return None,
            Some('}') if chars.get(index + 1) == Some(&'}') => {
                specifiers.push('}');
                index += 2;
            }
            Some('}') => return Some((specifiers, index)),
            Some(c) => {
                specifiers.push(*c);
                index += 1;
            }
        }
    }
}

/// An evaluated index: `*`, or a key as a string (for objects) and as a non-negative
/// whole number (for arrays), as GitHub coerces it.
enum IndexKey {
    Star,
    Key {
        text: Option<String>,
        position: Option<usize>,
    },
}

impl IndexKey {
    fn from_val(value: &Val<'_>) -> IndexKey {
        let text = value
            .is_primitive()
            .then(|| value.to_display().into_owned());
        let number = value.to_number();
        // `as` saturates, so a huge index simply finds nothing.
        let position = (number.is_finite() && number >= 0.0).then(|| number.floor() as usize);
        IndexKey::Key { text, position }
    }
}

fn access<'a>(target: &Val<'a>, key: &IndexKey) -> Val<'a> {
    match (target, key) {
        (Val::Array(array), _) if array.is_filtered() => Val::filtered(filtered_access(array, key)),
        (Val::Array(array), IndexKey::Star) => Val::filtered(array.items().collect()),
        (Val::Array(array), IndexKey::Key { position, .. }) => position
            .filter(|position| *position < array.len())
            .and_then(|position| array.get(position))
            .unwrap_or(Val::Null),
        (Val::Object(object), IndexKey::Star) => Val::filtered(object.values().collect()),
        (Val::Object(object), IndexKey::Key { text, .. }) => text
            .as_deref()
            .and_then(|text| object.get(text))
            .unwrap_or(Val::Null),
        (_, IndexKey::Star) => Val::filtered(Vec::new()),
        (_, IndexKey::Key { .. }) => Val::Null,
    }
}

/// Indexing a filtered array indexes each of its elements and collects what is found:
/// `labels.*.name` is every label's name.
fn filtered_access<'a>(array: &ArrayVal<'a>, key: &IndexKey) -> Vec<Val<'a>> {
    let mut found = Vec::new();
    for item in array.items() {
        match (&item, key) {
            (Val::Object(object), IndexKey::Star) => found.extend(object.values()),
            (
                Val::Object(object),
                IndexKey::Key {
                    text: Some(text), ..
                },
            ) => found.extend(object.get(text)),
            (Val::Array(inner), IndexKey::Star) => found.extend(inner.items()),
            (
                Val::Array(inner),
                IndexKey::Key {
                    position: Some(position),
                    ..
                },
            ) => found.extend(inner.get(*position)),
            _ => {}
        }
    }
    found
}

/// A value after GitHub's type coercion for comparison.
#[derive(Clone, Copy)]
enum Operand<'v, 'a> {
    Null,
    Bool(bool),
    Number(f64),
    String(&'v str),
    Array(&'v ArrayVal<'a>),
    Object(&'v ObjectVal<'a>),
}

impl<'v, 'a> Operand<'v, 'a> {
    fn of(value: &'v Val<'a>) -> Operand<'v, 'a> {
        match value {
            Val::Null => Operand::Null,
            Val::Bool(b) => Operand::Bool(*b),
            Val::Number(n) => Operand::Number(*n),
            Val::String(s) => Operand::String(s),
            Val::Array(array) => Operand::Array(array),
            Val::Object(object) => Operand::Object(object),
        }
    }

    fn rank(self) -> u8 {
        match self {
            Operand::Null => 0,
            Operand::Bool(_) => 1,
            Operand::Number(_) => 2,
            Operand::String(_) => 3,
            Operand::Array(_) => 4,
            Operand::Object(_) => 5,
        }
    }

    fn to_number(self) -> f64 {
        match self {
            Operand::Null => 0.0,
            Operand::Bool(b) => f64::from(u8::from(b)),
            Operand::Number(n) => n,
            Operand::String(s) => parse_js_number(s),
            Operand::Array(_) | Operand::Object(_) => f64::NAN,
        }
    }
}

/// JavaScript's abstract equality coercion, except that arrays and objects are never
/// converted: null and booleans become numbers, and a string meeting a number becomes a
/// number.
fn coerce<'v, 'a>(
    left: Operand<'v, 'a>,
    right: Operand<'v, 'a>,
) -> (Operand<'v, 'a>, Operand<'v, 'a>) {
    if left.rank() == right.rank() {
        return (left, right);
    }
    match (left, right) {
        (Operand::Number(_), Operand::String(_)) => (left, Operand::Number(right.to_number())),
        (Operand::String(_), Operand::Number(_)) => (Operand::Number(left.to_number()), right),
        (Operand::Null | Operand::Bool(_), _) => coerce(Operand::Number(left.to_number()), right),
        (_, Operand::Null | Operand::Bool(_)) => coerce(left, Operand::Number(right.to_number())),
        _ => (left, right),
    }
}

fn loose_equal(left: &Val<'_>, right: &Val<'_>) -> bool {
    match coerce(Operand::of(left), Operand::of(right)) {
        (Operand::Null, Operand::Null) => true,
        (Operand::Bool(a), Operand::Bool(b)) => a == b,
        // NaN is unequal to everything; 0 equals -0.
        (Operand::Number(a), Operand::Number(b)) => a == b,
        (Operand::String(a), Operand::String(b)) => strings_equal_ignoring_case(a, b),
        (Operand::Array(a), Operand::Array(b)) => a.same_reference(b),
        (Operand::Object(a), Operand::Object(b)) => a.same_reference(b),
        _ => false,
    }
}

/// `<` and `>` after coercion; `None` when the operands do not order (different kinds,
/// NaN, arrays, objects, null).
fn loose_order(left: &Val<'_>, right: &Val<'_>) -> Option<Ordering> {
    match coerce(Operand::of(left), Operand::of(right)) {
        (Operand::Number(a), Operand::Number(b)) => a.partial_cmp(&b),
        (Operand::String(a), Operand::String(b)) => Some(compare_ignoring_case(a, b)),
        (Operand::Bool(a), Operand::Bool(b)) => Some(a.cmp(&b)),
        _ => None,
    }
}

fn compare(op: CompareOp, left: &Val<'_>, right: &Val<'_>) -> bool {
    match op {
        CompareOp::Equal => loose_equal(left, right),
        CompareOp::NotEqual => !loose_equal(left, right),
        CompareOp::Greater => loose_order(left, right) == Some(Ordering::Greater),
        CompareOp::Less => loose_order(left, right) == Some(Ordering::Less),
        CompareOp::GreaterEqual => {
            loose_equal(left, right) || loose_order(left, right) == Some(Ordering::Greater)
        }
        CompareOp::LessEqual => {
            loose_equal(left, right) || loose_order(left, right) == Some(Ordering::Less)
        }
    }
}

/// Upper-cases as GitHub compares strings: Unicode upper case for every character except
/// the dotless `ı`, which stays as it is (so `ı` and `I` differ, as do `i` and `İ`).
fn upper_for_comparison(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        return if text.bytes().any(|b| b.is_ascii_lowercase()) {
            Cow::Owned(text.to_ascii_uppercase())
        } else {
            Cow::Borrowed(text)
        };
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == 'ı' {
            out.push(c);
        } else {
            out.extend(c.to_uppercase());
        }
    }
    Cow::Owned(out)
}

pub(crate) fn strings_equal_ignoring_case(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        upper_for_comparison(a) == upper_for_comparison(b)
    }
}

/// Orders strings ignoring case, by UTF-16 code units as JavaScript does.
fn compare_ignoring_case(a: &str, b: &str) -> Ordering {
    let (a, b) = (upper_for_comparison(a), upper_for_comparison(b));
    a.encode_utf16().cmp(b.encode_utf16())
}

/// `contains(search, item)`: a case-insensitive substring test for primitives, or
/// membership by loose equality for an array.
fn contains(search: &Val<'_>, item: &Val<'_>) -> bool {
    match search {
        Val::Array(array) => array.items().any(|element| loose_equal(item, &element)),
        Val::Object(_) => false,
        _ if item.is_primitive() => search
            .to_display()
            .to_lowercase()
            .contains(&item.to_display().to_lowercase()),
        _ => false,
    }
}

fn affix_matches(text: &Val<'_>, affix: &Val<'_>, test: fn(&str, &str) -> bool) -> bool {
    if !text.is_primitive() || !affix.is_primitive() {
        return false;
    }
    let text = text.to_display();
    let affix = affix.to_display();
    test(&upper_for_comparison(&text), &upper_for_comparison(&affix))
}

/// `join(array, separator = ',')`; a primitive is returned as a string, an object gives
/// `''`, and a separator that is not a primitive is ignored.
fn join<'a>(items: &Val<'a>, separator: Option<&Val<'a>>) -> Val<'a> {
    match items {
        Val::Array(array) => {
            let separator = separator
                .filter(|value| value.is_primitive())
                .map_or(Cow::Borrowed(","), Val::to_display);
            let parts: Vec<String> = array
                .items()
                .map(|item| item.to_display().into_owned())
                .collect();
            Val::string(parts.join(&separator))
        }
        Val::Object(_) => Val::string(String::new()),
        primitive => Val::string(primitive.to_display().into_owned()),
    }
}
