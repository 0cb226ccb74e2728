//! YAML as a tree of located nodes.
//!
//! Built directly on `saphyr-parser`'s event stream rather than on a serde deserializer: the
//! loaders need the span of every key and value (to say `file:line:col`), the order of keys,
//! and duplicate keys kept so that they can be reported instead of silently overwritten.
//! Scalars resolve by the YAML 1.2 core schema, so `on:` is the string "on", not `true`.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError};

use crate::diag::{Diagnostic, Diagnostics};
use crate::source::{SourceFile, Span};

/// Nodes allowed in one document after aliases are expanded; a guard against "billion laughs".
const MAX_NODES: usize = 1_000_000;
/// How deeply collections may nest; deeper documents are refused rather than risk the stack
/// of code that walks the tree recursively.
pub const MAX_DEPTH: usize = 256;

/// One YAML node and where it stands in its file.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The bytes of the file this node covers.
    pub span: Span,
    /// What the node holds.
    pub value: Value,
}

/// The content of a [`Node`].
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A scalar, with its resolved kind.
    Scalar(Scalar),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping in the order written, duplicates included.
    Map(Vec<(Node, Node)>),
}

/// A scalar's text and what the core schema resolves it to.
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    /// The scalar's content after YAML unescaping (for a number, the digits as written).
    pub text: String,
    /// The resolved type.
    pub kind: ScalarKind,
    /// Whether it was written quoted or as a block (`|`, `>`): such scalars are always strings.
    pub quoted: bool,
}

/// The type of a scalar under the YAML 1.2 core schema.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScalarKind {
    /// `~`, `null`, or nothing at all.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer (decimal, `0x`, `0o`).
    Int(i64),
    /// A float, `.inf` and `.nan` included.
    Float(f64),
    /// Anything else.
    String,
}

impl Node {
    /// The mapping's entries, or `None` when this is not a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The sequence's items, or `None` when this is not a sequence.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// The scalar, or `None` for a collection.
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.value {
            Value::Scalar(scalar) => Some(scalar),
            _ => None,
        }
    }

    /// The text of a scalar that resolved to a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(Scalar {
                text,
                kind: ScalarKind::String,
                ..
            }) => Some(text),
            _ => None,
        }
    }

    /// The text of any scalar but null, as written: `1.10` stays `1.10`. Environment values and
    /// step inputs are strings whatever YAML thinks of them, so they read through this.
    pub fn scalar_text(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(scalar) if scalar.kind != ScalarKind::Null => Some(&scalar.text),
            _ => None,
        }
    }

    /// Whether this is a null scalar (`~`, `null`, or an empty value).
    pub fn is_null(&self) -> bool {
        matches!(
            &self.value,
            Value::Scalar(Scalar {
                kind: ScalarKind::Null,
                ..
            })
        )
    }

    /// The value of a boolean scalar.
    pub fn as_bool(&self) -> Option<bool> {
        match &self.value {
            Value::Scalar(Scalar {
                kind: ScalarKind::Bool(value),
                ..
            }) => Some(*value),
            _ => None,
        }
    }

    /// The value of an integer scalar.
    pub fn as_i64(&self) -> Option<i64> {
        match &self.value {
            Value::Scalar(Scalar {
                kind: ScalarKind::Int(value),
                ..
            }) => Some(*value),
            _ => None,
        }
    }

    /// The value of a numeric scalar, integer or float.
    pub fn as_f64(&self) -> Option<f64> {
        match &self.value {
            Value::Scalar(Scalar {
                kind: ScalarKind::Int(value),
                ..
            }) => Some(*value as f64),
            Value::Scalar(Scalar {
                kind: ScalarKind::Float(value),
                ..
            }) => Some(*value),
            _ => None,
        }
    }

    /// A word for the node's type, for messages ("expected a mapping, found a sequence").
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Map(_) => "a mapping",
            Value::Seq(_) => "a sequence",
            Value::Scalar(scalar) => match scalar.kind {
                ScalarKind::Null => "nothing (null)",
                ScalarKind::Bool(_) => "a boolean",
                ScalarKind::Int(_) | ScalarKind::Float(_) => "a number",
                ScalarKind::String => "a string",
            },
        }
    }

    /// The span of the node's first line: a collection's span may cover many lines, and a
    /// message about it reads best pointing at where it starts.
    pub fn head_span(&self, file: &SourceFile) -> Span {
        let text = file.slice(self.span);
        let end = text.find(['\n', '\r']).unwrap_or(text.len());
        file.clamp(Span::new(self.span.start, self.span.start + end))
    }
}

/// Parses one YAML document.
///
/// Returns the root node (`None` for an empty file or a syntax error that left nothing usable)
/// and every problem found: syntax errors, duplicate keys, documents after the first.
pub fn parse(file: &SourceFile) -> (Option<Node>, Diagnostics) {
    let mut builder = TreeBuilder {
        file,
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        documents: 0,
        nodes: 0,
        diagnostics: Diagnostics::new(),
    };
    let mut cursor = CharCursor::new(file.text());
    for event in Parser::new_from_str(file.text()) {
        match event {
            Ok((event, span)) => {
                let start = cursor.byte_offset(span.start.index());
                let end = cursor.byte_offset(span.end.index());
                if let Err(stop) = builder.event(event, Span::new(start, end)) {
                    builder.diagnostics.push(stop);
                    return (None, builder.diagnostics);
                }
            }
            Err(error) => {
                builder
                    .diagnostics
                    .push(scan_error(file, &mut cursor, &error));
                return (None, builder.diagnostics);
            }
        }
    }
    (builder.root, builder.diagnostics)
}

/// Turns the parser's character indices into byte offsets. Markers arrive mostly in
/// increasing order, so the cursor walks from where it last stood instead of from the start.
struct CharCursor<'a> {
    text: &'a str,
    chars: usize,
    bytes: usize,
}

impl<'a> CharCursor<'a> {
    fn new(text: &'a str) -> CharCursor<'a> {
        CharCursor {
            text,
            chars: 0,
            bytes: 0,
        }
    }

    fn byte_offset(&mut self, char_index: usize) -> usize {
        while self.chars < char_index && self.bytes < self.text.len() {
            let width = self.text[self.bytes..]
                .chars()
                .next()
                .map_or(1, char::len_utf8);
            self.bytes += width;
            self.chars += 1;
        }
        while self.chars > char_index && self.bytes > 0 {
            let width = self.text[..self.bytes]
                .chars()
                .next_back()
                .map_or(1, char::len_utf8);
            self.bytes -= width;
            self.chars -= 1;
        }
        self.bytes
    }
}

fn scan_error(file: &SourceFile, cursor: &mut CharCursor<'_>, error: &ScanError) -> Diagnostic {
    let offset = cursor.byte_offset(error.marker().index());
    Diagnostic::error(
        file,
        Span::new(offset, offset + 1),
        format!("invalid YAML: {}", error.info()),
    )
}

/// A collection being built while its events arrive.
enum Open {
    Seq {
        start: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: usize,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
        /// Each scalar key's first span, to find duplicates without a quadratic scan.
        seen: HashMap<String, Span>,
    },
}

struct TreeBuilder<'a> {
    file: &'a SourceFile,
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    documents: usize,
    nodes: usize,
    diagnostics: Diagnostics,
}

impl TreeBuilder<'_> {
    /// Takes one event; an `Err` stops the parse with that diagnostic.
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), Diagnostic> {
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(Diagnostic::error(
                        self.file,
                        span,
                        "a second YAML document (`---`) in one file",
                    )
                    .with_hint("put each document in its own file"));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let quoted = !matches!(style, ScalarStyle::Plain);
                let forced_string = tag
                    .as_ref()
                    .is_some_and(|tag| tag.is_yaml_core_schema() && tag.suffix == "str");
                let kind = if quoted || forced_string {
                    ScalarKind::String
                } else {
                    resolve_plain(&text)
                };
                let node = Node {
                    span,
                    value: Value::Scalar(Scalar {
                        text: text.into_owned(),
                        kind,
                        quoted,
                    }),
                };
                self.finish_node(node, anchor)?;
            }
            Event::Alias(anchor) => {
                let Some(node) = self.anchors.get(&anchor).cloned() else {
                    return Err(Diagnostic::error(
                        self.file,
                        span,
                        "alias to an unknown anchor",
                    ));
                };
                self.nodes += count_nodes(&node);
                let node = Node { span, ..node };
                self.finish_node(node, 0)?;
            }
            Event::SequenceStart(anchor, _) => {
                self.check_depth(span)?;
                self.stack.push(Open::Seq {
                    start: span.start,
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, _) => {
                self.check_depth(span)?;
                self.stack.push(Open::Map {
                    start: span.start,
                    anchor,
                    entries: Vec::new(),
                    pending_key: None,
                    seen: HashMap::new(),
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let end = self.collection_end(span);
                match self.stack.pop() {
                    Some(Open::Seq {
                        start,
                        anchor,
                        items,
                    }) => {
                        let node = Node {
                            span: Span::new(start, end),
                            value: Value::Seq(items),
                        };
                        self.finish_node(node, anchor)?;
                    }
                    Some(Open::Map {
                        start,
                        anchor,
                        entries,
                        ..
                    }) => {
                        let node = Node {
                            span: Span::new(start, end),
                            value: Value::Map(entries),
                        };
                        self.finish_node(node, anchor)?;
                    }
                    None => {}
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
        Ok(())
    }

    fn check_depth(&self, span: Span) -> Result<(), Diagnostic> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(Diagnostic::error(
                self.file,
                span,
                format!("collections nest deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    /// A block collection's end event sits at the start of whatever follows it, often on a
    /// later line; trim the span back to the last non-blank byte so it covers only the node.
    fn collection_end(&self, span: Span) -> usize {
        let text = self.file.text();
        let end = span.end.min(text.len());
        text[..end].trim_end().len()
    }

    fn finish_node(&mut self, node: Node, anchor: usize) -> Result<(), Diagnostic> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(Diagnostic::error(
                self.file,
                node.span,
                format!("the document expands to more than {MAX_NODES} nodes through aliases"),
            ));
        }
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Seq { items, .. }) => items.push(node),
            Some(Open::Map {
                entries,
                pending_key,
                seen,
                ..
            }) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => {
                    if let Some(text) = key.scalar_text()
                        && let Some(first) = seen.get(text).copied().or_else(|| {
                            seen.insert(text.to_string(), key.span);
                            None
                        })
                    {
                        let first_line = self.file.line_col(first.start).line;
                        self.diagnostics.push(
                            Diagnostic::error(
                                self.file,
                                key.span,
                                format!("duplicate key `{text}`"),
                            )
                            .with_hint(format!("it is first defined on line {first_line}")),
                        );
                    }
                    entries.push((key, node));
                }
            },
        }
        Ok(())
    }
}

fn count_nodes(node: &Node) -> usize {
    match &node.value {
        Value::Scalar(_) => 1,
        Value::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(key, value)| count_nodes(key) + count_nodes(value))
                .sum::<usize>()
        }
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema.
fn resolve_plain(text: &str) -> ScalarKind {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return ScalarKind::Null,
        "true" | "True" | "TRUE" => return ScalarKind::Bool(true),
        "false" | "False" | "FALSE" => return ScalarKind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return ScalarKind::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return ScalarKind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return ScalarKind::Float(f64::NAN),
        _ => {}
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return match i64::from_str_radix(hex, 16) {
            Ok(value) if !hex.is_empty() => ScalarKind::Int(value),
            _ => ScalarKind::String,
        };
    }
    if let Some(octal) = text.strip_prefix("0o") {
        return match i64::from_str_radix(octal, 8) {
            Ok(value) if !octal.is_empty() => ScalarKind::Int(value),
            _ => ScalarKind::String,
        };
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<i64>() {
            Ok(value) => ScalarKind::Int(value),
            Err(_) => text
                .parse::<f64>()
                .map_or(ScalarKind::String, ScalarKind::Float),
        };
    }
    if is_core_float(digits)
        && let Ok(value) = text.parse::<f64>()
    {
        return ScalarKind::Float(value);
    }
    ScalarKind::String
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` without its sign.
fn is_core_float(text: &str) -> bool {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(index) => (&text[..index], Some(&text[index + 1..])),
        None => (text, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((whole, fraction)) => {
            whole.bytes().all(|b| b.is_ascii_digit())
                && fraction.bytes().all(|b| b.is_ascii_digit())
                && !(whole.is_empty() && fraction.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exponent_ok = exponent.is_none_or(|exponent| {
        let digits = exponent.strip_prefix(['-', '+']).unwrap_or(exponent);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> (Option<Node>, Vec<Diagnostic>) {
        let file = SourceFile::new("t.yaml", text);
        let (node, diagnostics) = parse(&file);
        (node, diagnostics.into_sorted())
    }

    #[test]
    fn core_schema_resolution() {
        let cases = [
            ("on", ScalarKind::String),
            ("yes", ScalarKind::String),
            ("true", ScalarKind::Bool(true)),
            ("~", ScalarKind::Null),
            ("12", ScalarKind::Int(12)),
            ("-3", ScalarKind::Int(-3)),
            ("0x1f", ScalarKind::Int(31)),
            ("1.5", ScalarKind::Float(1.5)),
            ("1e3", ScalarKind::Float(1000.0)),
            ("1.2.3", ScalarKind::String),
            ("90s", ScalarKind::String),
        ];
        for (text, kind) in cases {
            assert_eq!(resolve_plain(text), kind, "{text}");
        }
    }

    #[test]
    fn spans_point_at_keys_and_values() {
        let text = "jobs:\n  build:\n    need: [a]\n";
        let (root, diagnostics) = parse_str(text);
        assert!(diagnostics.is_empty());
        let root = root.unwrap();
        let jobs = &root.as_map().unwrap()[0].1;
        let build = &jobs.as_map().unwrap()[0].1;
        let (key, value) = &build.as_map().unwrap()[0];
        assert_eq!(&text[key.span.start..key.span.end], "need");
        assert_eq!(&text[value.span.start..value.span.end], "[a]");
    }

    #[test]
    fn duplicate_keys_are_reported_with_the_first_line() {
        let (_, diagnostics) = parse_str("a: 1\nb: 2\na: 3\n");
        assert_eq!(diagnostics.len(), 1);
        assert_eq!(diagnostics[0].message, "duplicate key `a`");
        assert_eq!(diagnostics[0].location().unwrap(), "t.yaml:3:1");
        assert!(diagnostics[0].hint.as_ref().unwrap().contains("line 1"));
    }

    #[test]
    fn syntax_errors_are_located() {
        let (root, diagnostics) = parse_str("a: [1, 2\nb: 3\n");
        assert!(root.is_none());
        assert_eq!(diagnostics.len(), 1);
        assert!(diagnostics[0].message.starts_with("invalid YAML"));
        assert!(diagnostics[0].location().is_some());
    }

    #[test]
    fn aliases_expand_and_bombs_are_refused() {
        let (root, diagnostics) = parse_str("a: &x [1, 2]\nb: *x\n");
        assert!(diagnostics.is_empty());
        let entries = root.unwrap();
        let entries = entries.as_map().unwrap();
        assert_eq!(entries[1].1.as_seq().unwrap().len(), 2);

        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..8 {
            let previous = level - 1;
            bomb.push_str(&format!(
                "a{level}: &a{level} [*a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}]\n"
            ));
        }
        let (root, diagnostics) = parse_str(&bomb);
        assert!(root.is_none());
        assert!(diagnostics[0].message.contains("more than"));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let text = "[".repeat(10_000);
        let (root, diagnostics) = parse_str(&text);
        assert!(root.is_none());
        assert!(!diagnostics.is_empty());
    }

    #[test]
    fn spans_are_bytes_after_multibyte_characters_and_lone_carriage_returns() {
        let text = "é: 1\rb: [x, ü]\r";
        let (root, diagnostics) = parse_str(text);
        assert!(diagnostics.is_empty());
        let root = root.unwrap();
        let (key, value) = &root.as_map().unwrap()[1];
        assert_eq!(&text[key.span.start..key.span.end], "b");
        let item = &value.as_seq().unwrap()[1];
        assert_eq!(&text[item.span.start..item.span.end], "ü");
    }

    #[test]
    fn syntax_errors_at_the_end_stay_inside_the_text() {
        for text in ["%", "[", "[]é"] {
            let (_, diagnostics) = parse_str(text);
            for diagnostic in diagnostics {
                assert!(
                    diagnostic.span.end <= text.len(),
                    "{text:?}: {diagnostic:?}"
                );
                assert!(text.is_char_boundary(diagnostic.span.start));
                assert!(text.is_char_boundary(diagnostic.span.end));
            }
        }
    }

    #[test]
    fn many_keys_are_checked_for_duplicates_in_linear_time() {
        // 100,000 keys: a quadratic check would take minutes.
        let text: String = (0..100_000).map(|i| format!("k{i}: 1\n")).collect();
        let (root, diagnostics) = parse_str(&format!("{text}k7: 2\n"));
        assert_eq!(root.unwrap().as_map().unwrap().len(), 100_001);
        assert_eq!(diagnostics.len(), 1);
        assert_eq!(diagnostics[0].message, "duplicate key `k7`");
    }

    #[test]
    fn second_document_is_an_error() {
        let (_, diagnostics) = parse_str("a: 1\n---\nb: 2\n");
        assert!(diagnostics[0].message.contains("second YAML document"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = parse_str(&text);
        }
    }
}
