//! Checks shared by the fuzz targets: the invariants that code downstream of a parser
//! relies on, asserted so that a violation is a crash the fuzzer reports.

use sorat_config::yaml::{Node, Value};
use sorat_config::{Diagnostic, SourceFile};

/// Every diagnostic can be located and printed, and its span lies within the text of the
/// file it points into, on character boundaries: the snippet renderer slices the text with it.
pub fn check_diagnostics<'a>(diagnostics: impl IntoIterator<Item = &'a Diagnostic>) {
    for diagnostic in diagnostics {
        let _ = diagnostic.location();
        let _ = diagnostic.to_string();
        if let Some(file) = &diagnostic.file {
            let span = diagnostic.span;
            let text = file.text();
            let len = text.len();
            assert!(
                span.start <= span.end && span.end <= len,
                "diagnostic span {}..{} is outside the text (length {len}): {diagnostic}",
                span.start,
                span.end,
            );
            assert!(
                text.is_char_boundary(span.start) && text.is_char_boundary(span.end),
                "diagnostic span {}..{} cuts a character: {diagnostic}",
                span.start,
                span.end,
            );
        }
    }
}

/// Every node of a YAML tree covers bytes of its file, and its accessors answer.
pub fn check_node(file: &SourceFile, node: &Node) {
    let len = file.text().len();
    assert!(
        node.span.start <= node.span.end && node.span.end <= len,
        "node span {}..{} is outside the text (length {len})",
        node.span.start,
        node.span.end,
    );
    assert!(
        file.text().is_char_boundary(node.span.start) && file.text().is_char_boundary(node.span.end),
        "node span {}..{} cuts a character",
        node.span.start,
        node.span.end,
    );
    let _ = node.head_span(file);
    let _ = node.kind_name();
    let _ = (node.as_str(), node.scalar_text(), node.is_null());
    let _ = (node.as_bool(), node.as_i64(), node.as_f64());
    match &node.value {
        Value::Scalar(_) => {}
        Value::Seq(items) => items.iter().for_each(|item| check_node(file, item)),
        Value::Map(entries) => entries.iter().for_each(|(key, value)| {
            check_node(file, key);
            check_node(file, value);
        }),
    }
}
