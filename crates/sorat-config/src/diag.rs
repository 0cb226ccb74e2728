//! Located diagnostics: what went wrong, where, and what to do about it.

use std::fmt;

use crate::source::{SourceFile, Span};

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Something that works but is almost certainly not what the author meant.
    Warning,
    /// The input is invalid; nothing may run from it.
    Error,
}

/// One error or warning, with the file and span it concerns.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file the span points into; `None` for problems that concern no file (a CLI flag).
    pub file: Option<SourceFile>,
    /// Where in the file.
    pub span: Span,
    /// What is wrong, as one sentence without a trailing period.
    pub message: String,
    /// What to do about it ("did you mean `needs`?").
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error at `span` of `file`.
    /// The span is clamped into the file and onto character boundaries, so that every
    /// diagnostic can be sliced and rendered safely.
    pub fn error(file: &SourceFile, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            file: Some(file.clone()),
            span: file.clamp(span),
            message: message.into(),
            hint: None,
        }
    }

    /// A warning at `span` of `file`.
    pub fn warning(file: &SourceFile, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, span, message)
        }
    }

    /// An error that concerns no file, such as a bad command-line value.
    pub fn unlocated(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            file: None,
            span: Span::default(),
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    /// `file:line:col` of the diagnostic's start, or `None` when it has no file.
    pub fn location(&self) -> Option<String> {
        let file = self.file.as_ref()?;
        let position = file.line_col(self.span.start);
        Some(format!(
            "{}:{}:{}",
            file.path().display(),
            position.line,
            position.col
        ))
    }

    /// Whether this is an error (as opposed to a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// The one-line form `file:line:col: error: message (hint)`, as editors and CI annotations read it.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(location) = self.location() {
            write!(f, "{location}: ")?;
        }
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// A growing list of diagnostics, collected while a loader keeps going.
#[derive(Clone, Debug, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// An empty list.
    pub fn new() -> Diagnostics {
        Diagnostics::default()
    }

    /// Adds one diagnostic.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.items.push(diagnostic);
    }

    /// Adds one diagnostic and returns it, so that a hint can be set on it in place.
    pub fn add(&mut self, diagnostic: Diagnostic) -> &mut Diagnostic {
        self.items.push(diagnostic);
        let last = self.items.len() - 1;
        &mut self.items[last]
    }

    /// Adds many.
    pub fn extend(&mut self, diagnostics: impl IntoIterator<Item = Diagnostic>) {
        self.items.extend(diagnostics);
    }

    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    /// The number of errors.
    pub fn error_count(&self) -> usize {
        self.items.iter().filter(|d| d.is_error()).count()
    }

    /// All diagnostics, sorted by file and position so that they read top to bottom.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by(|a, b| {
            let path_a = a.file.as_ref().map(|f| f.path().to_path_buf());
            let path_b = b.file.as_ref().map(|f| f.path().to_path_buf());
            path_a
                .cmp(&path_b)
                .then(a.span.start.cmp(&b.span.start))
                .then(b.severity.cmp(&a.severity))
        });
        self.items
    }

    /// The diagnostics in the order they were found.
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}
