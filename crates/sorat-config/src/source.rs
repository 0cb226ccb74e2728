//! Source files and spans: byte offsets in, `line:col` out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A half-open byte range `[start, end)` in one [`SourceFile`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end` (byte offsets).
    pub fn new(start: usize, end: usize) -> Span {
        Span {
            start,
            end: end.max(start),
        }
    }

    /// A span of `len` bytes starting `offset` bytes after the start of this one.
    pub fn sub(self, offset: usize, len: usize) -> Span {
        let start = (self.start + offset).min(self.end.max(self.start + offset));
        Span::new(start, start + len)
    }
}

/// The text of a configuration file, shared cheaply between diagnostics.
#[derive(Clone, Debug)]
pub struct SourceFile {
    inner: Arc<SourceInner>,
}

#[derive(Debug)]
struct SourceInner {
    path: PathBuf,
    text: String,
    /// Byte offset at which each line starts; `line_starts[0] == 0`.
    line_starts: Vec<usize>,
}

/// A position for humans: 1-based line and 1-based column counted in characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineCol {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

impl SourceFile {
    /// Wraps `text` read from `path` (the path is only used to name the file in messages).
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> SourceFile {
        let text = text.into();
        // Lines end at `\n`, `\r\n` or a lone `\r`, as YAML (and editors) count them.
        let mut line_starts = vec![0];
        let bytes = text.as_bytes();
        for (index, &byte) in bytes.iter().enumerate() {
            let ends_line =
                byte == b'\n' || (byte == b'\r' && bytes.get(index + 1) != Some(&b'\n'));
            if ends_line {
                line_starts.push(index + 1);
            }
        }
        SourceFile {
            inner: Arc::new(SourceInner {
                path: path.into(),
                text,
                line_starts,
            }),
        }
    }

    /// The path the file was read from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The file's text.
    pub fn text(&self) -> &str {
        &self.inner.text
    }

    /// The 1-based line and column of a byte offset (clamped into the file).
    pub fn line_col(&self, offset: usize) -> LineCol {
        let text = &self.inner.text;
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line_index = match self.inner.line_starts.binary_search(&offset) {
            Ok(index) => index,
            Err(index) => index - 1,
        };
        let line_start = self.inner.line_starts[line_index];
        let col = text[line_start..offset].chars().count() + 1;
        LineCol {
            line: line_index + 1,
            col,
        }
    }

    /// `span` made safe to slice with: inside the text, and on character boundaries (the
    /// start moves back, the end forward, so that the span still covers what it meant).
    pub fn clamp(&self, span: Span) -> Span {
        let text = &self.inner.text;
        let mut start = span.start.min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = span.end.clamp(start, text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        Span { start, end }
    }

    /// The byte offset of a 1-based line and 0-based character column, as YAML markers give them.
    pub fn offset_of(&self, line: usize, char_col: usize) -> usize {
        let text = &self.inner.text;
        let Some(&line_start) = self.inner.line_starts.get(line.saturating_sub(1)) else {
            return text.len();
        };
        let line_text = &text[line_start..];
        let line_end = line_text.find(['\n', '\r']).unwrap_or(line_text.len());
        match line_text[..line_end].char_indices().nth(char_col) {
            Some((byte, _)) => line_start + byte,
            // YAML markers may point one past the end of a line; its end is the closest place.
            None => line_start + line_end,
        }
    }

    /// The text covered by `span`, or an empty string when it is out of range.
    pub fn slice(&self, span: Span) -> &str {
        self.inner.text.get(span.start..span.end).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters_not_bytes() {
        let file = SourceFile::new("x.yaml", "a: é\nbb: 1\n");
        assert_eq!(file.line_col(0), LineCol { line: 1, col: 1 });
        assert_eq!(file.line_col(6), LineCol { line: 2, col: 1 });
        assert_eq!(file.line_col(9), LineCol { line: 2, col: 4 });
        assert_eq!(file.offset_of(1, 3), 3);
        assert_eq!(file.offset_of(2, 1), 7);
    }

    #[test]
    fn a_lone_carriage_return_ends_a_line() {
        let file = SourceFile::new("x.yaml", "a: 1\rb: 2\r\nc: 3");
        assert_eq!(file.line_col(5), LineCol { line: 2, col: 1 });
        assert_eq!(file.line_col(11), LineCol { line: 3, col: 1 });
        assert_eq!(file.offset_of(3, 0), 11);
    }

    #[test]
    fn clamped_spans_are_inside_and_on_boundaries() {
        let file = SourceFile::new("x.yaml", "é");
        assert_eq!(file.clamp(Span::new(1, 2)), Span { start: 0, end: 2 });
        assert_eq!(file.clamp(Span::new(5, 9)), Span { start: 2, end: 2 });
    }
}
