//! Diagnostics for people: `file:line:col: error: message`, the source line, a caret, a hint.

use std::io::IsTerminal;

use codespan_reporting::diagnostic::{Diagnostic as Report, Label, Severity as ReportSeverity};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::termcolor::{ColorChoice, StandardStream};
use codespan_reporting::term::{self, Config, Styles, StylesWriter};
use sorat_config::{Diagnostic, Severity};

/// Prints diagnostics to standard error: the one-line form first (which editors and CI
/// annotations read), then the snippet.
pub(crate) fn print(diagnostics: &[Diagnostic]) {
    let color = if std::io::stderr().is_terminal() {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    let stream = StandardStream::stderr(color);
    let styles = Styles::default();
    let config = Config::default();
    for diagnostic in diagnostics {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("{diagnostic}");
        }
        let Some(file) = &diagnostic.file else {
            continue;
        };
        let simple = SimpleFile::new(file.path().display().to_string(), file.text());
        let severity = match diagnostic.severity {
            Severity::Error => ReportSeverity::Error,
            Severity::Warning => ReportSeverity::Warning,
        };
        let end = diagnostic
            .span
            .end
            .max(diagnostic.span.start + 1)
            .min(file.text().len());
        let start = diagnostic.span.start.min(end);
        let mut report = Report::new(severity)
            .with_message(&diagnostic.message)
            .with_labels(vec![Label::primary((), start..end)]);
        if let Some(hint) = &diagnostic.hint {
            report = report.with_notes(vec![format!("hint: {hint}")]);
        }
        let mut lock = stream.lock();
        let mut writer = StylesWriter::new(&mut lock, &styles);
        let _ = term::emit_to_write_style(&mut writer, &config, &simple, &report);
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
