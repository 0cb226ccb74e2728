//! Diagnostics for people: `file:line:col: error: message`, the source line, a caret, a hint.
//!
//! The first line is the form editors and CI annotations parse; the snippet under it shows
//! the place. Rendered here rather than with a reporting crate because the one-line form
//! must come first and exactly once, and a single-line snippet is all a YAML mistake needs.

use std::io::{IsTerminal, Write};

use sorat_config::{Diagnostic, Severity};

struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// Renders one diagnostic: the one-line form, then (for a located one) the source line with
/// a caret under the span, then the hint.
pub(crate) fn render(diagnostic: &Diagnostic, color: bool) -> String {
    let paint = Paint { on: color };
    let (level, level_color) = match diagnostic.severity {
        Severity::Error => ("error", "1;31"),
        Severity::Warning => ("warning", "1;33"),
    };
    let mut out = String::new();
    if let Some(location) = diagnostic.location() {
        out.push_str(&paint.wrap("1", &location));
        out.push_str(": ");
    }
    out.push_str(&paint.wrap(level_color, level));
    out.push_str(": ");
    out.push_str(&paint.wrap("1", &diagnostic.message));
    out.push('\n');
    if let Some(file) = &diagnostic.file {
        let text = file.text();
        let span = file.clamp(diagnostic.span);
        let start = span.start;
        let position = file.line_col(start);
        let line_start = text[..start].rfind(['\n', '\r']).map_or(0, |i| i + 1);
        let line_end = text[start..]
            .find(['\n', '\r'])
            .map_or(text.len(), |i| start + i);
        let line = &text[line_start..line_end];
        let end = span.end.clamp(start, line_end);
        let lead: String = text[line_start..start]
            .chars()
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let width = text[start..end].chars().count().max(1);
        let number = position.line.to_string();
        let gutter = " ".repeat(number.len());
        out.push_str(&paint.wrap("34", &format!("{gutter} |\n{number} | ")));
        out.push_str(line);
        out.push('\n');
        out.push_str(&paint.wrap("34", &format!("{gutter} | ")));
        out.push_str(&lead);
        out.push_str(&paint.wrap(level_color, &"^".repeat(width)));
        out.push('\n');
        if let Some(hint) = &diagnostic.hint {
            out.push_str(&paint.wrap("34", &format!("{gutter} = ")));
            out.push_str(&format!("hint: {hint}\n"));
        }
    } else if let Some(hint) = &diagnostic.hint {
        out.push_str(&format!("  hint: {hint}\n"));
    }
    out
}

/// Prints diagnostics to standard error, each followed by a blank line.
pub(crate) fn print(diagnostics: &[Diagnostic]) {
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut stderr = std::io::stderr().lock();
    for diagnostic in diagnostics {
        let _ = writeln!(stderr, "{}", render(diagnostic, color));
    }
}

/// The closing line of a diagnostics listing: `2 errors, 1 warning`.
pub(crate) fn counts(diagnostics: &[Diagnostic]) -> String {
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    let plural = |n: usize, word: &str| {
        if n == 1 {
            format!("{n} {word}")
        } else {
            format!("{n} {word}s")
        }
    };
    format!(
        "{}, {}",
        plural(errors, "error"),
        plural(warnings, "warning")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sorat_config::{SourceFile, Span};

    #[test]
    fn renders_the_line_the_caret_and_the_hint() {
        let file = SourceFile::new("p.yaml", "jobs:\n  a:\n    need: [b]\n");
        let diagnostic = Diagnostic::error(&file, Span::new(15, 19), "unknown key `need`")
            .with_hint("did you mean `needs`?");
        assert_eq!(
            render(&diagnostic, false),
            "p.yaml:3:5: error: unknown key `need`\n  |\n3 |     need: [b]\n  |     ^^^^\n  = hint: did you mean `needs`?\n"
        );
    }
}
