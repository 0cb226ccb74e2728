//! `toJSON`'s output: what JavaScript's `JSON.stringify(value, null, 2)` prints.

use std::fmt::Write as _;

use crate::eval::{ArrayVal, ObjectVal, Val};
use crate::number::js_number_to_string;

/// Appends `value` as pretty JSON (two-space indentation, `[]`/`{}` for empty
/// containers, `"key": value`), with numbers in JavaScript's notation and NaN and the
/// infinities as `null`. `indent` is the current nesting level.
pub(crate) fn write_pretty_json(out: &mut String, value: &Val<'_>, indent: usize) {
    match value {
        Val::Null => out.push_str("null"),
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Val::Number(n) if n.is_finite() => out.push_str(&js_number_to_string(*n)),
        Val::Number(_) => out.push_str("null"),
        Val::String(s) => write_json_string(out, s),
        Val::Array(array) => write_array(out, array, indent),
        Val::Object(object) => write_object(out, object, indent),
    }
}

fn write_array(out: &mut String, array: &ArrayVal<'_>, indent: usize) {
    let mut items = array.items().peekable();
    if items.peek().is_none() {
        out.push_str("[]");
        return;
    }
    out.push('[');
    let mut first = true;
    for item in items {
        if !first {
            out.push(',');
        }
        first = false;
        newline(out, indent + 1);
        write_pretty_json(out, &item, indent + 1);
    }
    newline(out, indent);
    out.push(']');
}

fn write_object(out: &mut String, object: &ObjectVal<'_>, indent: usize) {
    let mut entries = object.entries().peekable();
    if entries.peek().is_none() {
        out.push_str("{}");
        return;
    }
    out.push('{');
    let mut first = true;
    for (key, item) in entries {
        if !first {
            out.push(',');
        }
        first = false;
        newline(out, indent + 1);
        write_json_string(out, key);
        out.push_str(": ");
        write_pretty_json(out, &item, indent + 1);
    }
    newline(out, indent);
    out.push('}');
}

fn newline(out: &mut String, indent: usize) {
    out.push('\n');
    for _ in 0..indent {
        out.push_str("  ");
    }
}

/// A JSON string as `JSON.stringify` writes it: only `"`, `\` and control characters are
/// escaped; everything else, non-ASCII included, is written as is.
fn write_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
