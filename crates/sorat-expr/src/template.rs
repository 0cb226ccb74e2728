//! Strings with `${{ }}` inside: how a pipeline file's scalar values embed expressions.

use std::fmt;

use crate::eval::{EvalError, Host};
use crate::expr::{Expr, parse};
use crate::parser::{NameSet, ParseError};
use crate::value::{Context, Value};

const OPEN: &str = "${{";

/// A scalar from a pipeline file, split into literal text and `${{ expression }}`
/// segments, as GitHub's template reader splits it.
///
/// * `build-${{ matrix.os }}` evaluates to a string (each expression's value coerced as
///   `format` coerces it);
/// * `${{ fromJSON(needs.plan.outputs.matrix) }}`, exactly one expression and nothing
///   else, evaluates to the expression's value, unconverted;
/// * `${{ 'a literal }} string' }}` is the literal text inside the quotes.
///
/// Quotes inside an expression are honoured when looking for the closing `}}`, so
/// `${{ format('{{x}}') }}` is one expression.
#[derive(Debug, Clone)]
pub struct Template {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
enum Segment {
    Text(String),
    Expression {
        expr: Expr,
        /// Byte offset of the `${{` in the template's text.
        offset: usize,
    },
}

/// Why a template did not parse, and where: `offset` is the byte offset of the failing
/// `${{` in the text given to [`Template::parse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TemplateError {
    /// Byte offset of the `${{` that starts the failing expression.
    pub offset: usize,
    /// What is wrong.
    pub kind: TemplateErrorKind,
}

/// What is wrong with a template.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TemplateErrorKind {
    /// A `${{` without a closing `}}`.
    NotClosed,
    /// `${{ }}` with nothing inside.
    EmptyExpression,
    /// The expression inside does not parse.
    Expression {
        /// The parse error, positioned within the expression.
        error: ParseError,
        /// Byte offset in the template's text where the expression (without its
        /// surrounding white space) begins.
        expression_offset: usize,
    },
}

impl TemplateError {
    /// The most precise byte offset in the template's text: the offending token for an
    /// expression that does not parse, the `${{` otherwise.
    pub fn error_offset(&self) -> usize {
        match &self.kind {
            TemplateErrorKind::Expression {
                error,
                expression_offset,
            } => expression_offset + error.byte_offset(),
            _ => self.offset,
        }
    }
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            TemplateErrorKind::NotClosed => f.write_str(
                "The expression is not closed. An unescaped ${{ sequence was found, but the closing }} sequence was not found.",
            ),
            TemplateErrorKind::EmptyExpression => f.write_str("An expression was expected"),
            TemplateErrorKind::Expression { error, .. } => error.fmt(f),
        }
    }
}

impl Template {
    /// Splits `text` into literal text and expressions, parsing each expression with
    /// `names`.
    pub fn parse(text: &str, names: &NameSet) -> Result<Template, TemplateError> {
        let mut segments: Vec<Segment> = Vec::new();
        let mut position = 0;
        while let Some(found) = text[position..].find(OPEN) {
            let open = position + found;
            if open > position {
                push_text(&mut segments, &text[position..open]);
            }
            let close = find_close(text, open + OPEN.len()).ok_or(TemplateError {
                offset: open,
                kind: TemplateErrorKind::NotClosed,
            })?;
            // `close` is the second brace of `}}`.
            let inner = &text[open + OPEN.len()..close - 1];
            let trimmed = inner.trim();
            if trimmed.is_empty() {
                return Err(TemplateError {
                    offset: open,
                    kind: TemplateErrorKind::EmptyExpression,
                });
            }
            let expression_offset = open + OPEN.len() + (inner.len() - inner.trim_start().len());
            let expr = parse(trimmed, names).map_err(|error| TemplateError {
                offset: open,
                kind: TemplateErrorKind::Expression {
                    error,
                    expression_offset,
                },
            })?;
            segments.push(Segment::Expression { expr, offset: open });
            position = close + 1;
        }
        if position < text.len() || segments.is_empty() {
            push_text(&mut segments, &text[position..]);
        }
        // `${{ 'text' }}` alone is GitHub's way to write a literal that contains `${{`.
        if let [Segment::Expression { expr, .. }] = segments.as_slice()
            && let Some(literal) = string_literal(expr.source())
        {
            segments = vec![Segment::Text(literal)];
        }
        Ok(Template { segments })
    }

    /// Whether the template has no expression: its value is its text.
    pub fn is_literal(&self) -> bool {
        !self
            .segments
            .iter()
            .any(|segment| matches!(segment, Segment::Expression { .. }))
    }

    /// The text of a literal template.
    pub fn literal_text(&self) -> Option<&str> {
        match self.segments.as_slice() {
            [Segment::Text(text)] => Some(text),
            _ => None,
        }
    }

    /// The expression when the template is exactly one `${{ }}` and nothing else.
    pub fn single_expression(&self) -> Option<&Expr> {
        match self.segments.as_slice() {
            [Segment::Expression { expr, .. }] => Some(expr),
            _ => None,
        }
    }

    /// Every expression with the byte offset of its `${{`.
    pub fn expressions(&self) -> impl Iterator<Item = (usize, &Expr)> {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Expression { expr, offset } => Some((*offset, expr)),
            Segment::Text(_) => None,
        })
    }

    /// Whether the template has both literal text and an expression. In an `if:` that is
    /// the classic trap: `if: ${{ a }} == b` or `if: true && ${{ false }}` evaluates to a
    /// non-empty string, which is always truthy, whatever the expressions say.
    pub fn mixes_text_and_expression(&self) -> bool {
        !self.is_literal()
            && self
                .segments
                .iter()
                .any(|segment| matches!(segment, Segment::Text(_)))
    }

    /// Whether any expression calls a status function (see
    /// [`Expr::uses_status_function`]).
    pub fn uses_status_function(&self) -> bool {
        self.expressions()
            .any(|(_, expr)| expr.uses_status_function())
    }

    /// The template's value: its text if literal, the expression's value unconverted if
    /// it is a single expression, and otherwise the concatenation of its text with each
    /// expression's value coerced to a string.
    pub fn eval(&self, context: &Context, host: &dyn Host) -> Result<Value, EvalError> {
        if let Some(expr) = self.single_expression() {
            return expr.eval(context, host);
        }
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::Expression { expr, .. } => {
                    out.push_str(&expr.eval(context, host)?.to_display_string())
                }
            }
        }
        Ok(Value::String(out))
    }

    /// The template's value coerced to a string (see [`Value::to_display_string`]).
    pub fn eval_to_string(&self, context: &Context, host: &dyn Host) -> Result<String, EvalError> {
        Ok(self.eval(context, host)?.to_display_string())
    }
}

fn push_text(segments: &mut Vec<Segment>, text: &str) {
    if let Some(Segment::Text(last)) = segments.last_mut() {
        last.push_str(text);
    } else {
        segments.push(Segment::Text(text.to_owned()));
    }
}

/// Finds the `}}` that closes an expression starting at byte `from`, skipping `}}` inside
/// single-quoted strings (`''` toggles twice, so escaped quotes need no special case).
/// Returns the byte index of the second brace.
fn find_close(text: &str, from: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut in_string = false;
    for index in from..bytes.len() {
        match bytes[index] {
            b'\'' => in_string = !in_string,
            b'}' if !in_string && index > 0 && bytes[index - 1] == b'}' => return Some(index),
            _ => {}
        }
    }
    None
}

/// The value of an expression that is nothing but one string literal (`'a''b'` is
/// `a'b`).
fn string_literal(source: &str) -> Option<String> {
    let inner = source.strip_prefix('\'')?.strip_suffix('\'')?;
    let mut value = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\'' {
            // Inside the literal a quote must be doubled.
            if chars.next() != Some('\'') {
                return None;
            }
        }
        value.push(c);
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::NoHost;

    fn names() -> NameSet {
        NameSet::new().with_named_values(["matrix", "github"])
    }

    #[test]
    fn splits_text_and_expressions() {
        let template = Template::parse("build-${{ matrix.os }}-${{ github.sha }}", &names())
            .unwrap_or_else(|e| panic!("{e}"));
        let offsets: Vec<usize> = template.expressions().map(|(offset, _)| offset).collect();
        assert_eq!(offsets, [6, 23]);
        assert!(template.mixes_text_and_expression());
        let context = Context::from_json(
            &serde_json::json!({"matrix": {"os": "linux"}, "github": {"sha": "abc"}}),
        )
        .unwrap_or_default();
        assert_eq!(
            template.eval(&context, &NoHost),
            Ok(Value::from("build-linux-abc"))
        );
    }

    #[test]
    fn quoted_braces_do_not_close_an_expression() {
        let template =
            Template::parse("${{ format('{{x}}') }}", &names()).unwrap_or_else(|e| panic!("{e}"));
        assert!(template.single_expression().is_some());
        assert_eq!(
            template.eval(&Context::new(), &NoHost),
            Ok(Value::from("{x}"))
        );
    }

    #[test]
    fn a_lone_string_literal_is_literal_text() {
        let template = Template::parse("${{ '${{ not an expression }}' }}", &names())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(template.literal_text(), Some("${{ not an expression }}"));
        assert!(string_literal("'a' + 'b'").is_none());
        assert_eq!(string_literal("'it''s'").as_deref(), Some("it's"));
    }

    #[test]
    fn errors_point_at_the_failing_expression() {
        let error = Template::parse("ok ${{ matrix.os }} then ${{ nope }}", &names()).err();
        let error = error.unwrap_or_else(|| panic!("expected an error"));
        assert_eq!(error.offset, 25);
        assert_eq!(error.error_offset(), 29);
        assert_eq!(
            error.to_string(),
            "Unrecognized named-value: 'nope'. Located at position 1 within expression: nope"
        );

        let error = Template::parse("a ${{ matrix.os ", &names())
            .err()
            .unwrap_or_else(|| panic!("expected an error"));
        assert_eq!(
            (error.offset, error.kind),
            (2, TemplateErrorKind::NotClosed)
        );
    }
}
