//! The files a step writes to talk back: `$SORAT_OUTPUT`, `$SORAT_ENV`, `$SORAT_PATH`.
//!
//! The format is GitHub's: `name=value` lines, or a heredoc
//! `name<<DELIMITER` … `DELIMITER` for values with newlines.

use indexmap::IndexMap;

/// A malformed line in an output or env file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}, line {line}: {message}")]
pub struct CommandFileError {
    /// Which file (`SORAT_OUTPUT`).
    pub file: &'static str,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses `name=value` and heredoc entries; later entries win.
pub fn parse_key_values(
    text: &str,
    file: &'static str,
) -> Result<IndexMap<String, String>, CommandFileError> {
    let mut values = IndexMap::new();
    let lines: Vec<&str> = text.split('\n').collect();
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index].strip_suffix('\r').unwrap_or(lines[index]);
        let line_number = index + 1;
        index += 1;
        if line.trim().is_empty() {
            continue;
        }
        let heredoc = line.find("<<");
        let equals = line.find('=');
        let is_heredoc = match (heredoc, equals) {
            (Some(h), Some(e)) => h < e,
            (Some(_), None) => true,
            _ => false,
        };
        if is_heredoc {
            let (name, delimiter) = line.split_at(heredoc.unwrap_or(0));
            let delimiter = &delimiter[2..];
            if name.is_empty() || delimiter.is_empty() {
                return Err(CommandFileError {
                    file,
                    line: line_number,
                    message: "a heredoc needs a name and a delimiter: `name<<EOF`".into(),
                });
            }
            let mut value_lines = Vec::new();
            let mut closed = false;
            while index < lines.len() {
                let value_line = lines[index].strip_suffix('\r').unwrap_or(lines[index]);
                index += 1;
                if value_line == delimiter {
                    closed = true;
                    break;
                }
                value_lines.push(value_line);
            }
            if !closed {
                return Err(CommandFileError {
                    file,
                    line: line_number,
                    message: format!("the heredoc `{name}` is never closed by `{delimiter}`"),
                });
            }
            values.insert(name.to_string(), value_lines.join("\n"));
        } else if let Some(e) = equals {
            let (name, value) = line.split_at(e);
            if name.is_empty() {
                return Err(CommandFileError {
                    file,
                    line: line_number,
                    message: "a line must be `name=value`; the name is empty".into(),
                });
            }
            values.insert(name.to_string(), value[1..].to_string());
        } else {
            return Err(CommandFileError {
                file,
                line: line_number,
                message: format!("`{line}` is neither `name=value` nor `name<<DELIMITER`"),
            });
        }
    }
    Ok(values)
}

/// Parses `$SORAT_PATH`: one folder per line.
pub(crate) fn parse_path_file(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_heredoc_values() {
        let text = "a=1\nb=x=y\nmulti<<EOF\nline one\nline two\nEOF\n\na=2\n";
        let values = parse_key_values(text, "SORAT_OUTPUT").unwrap();
        assert_eq!(values["a"], "2");
        assert_eq!(values["b"], "x=y");
        assert_eq!(values["multi"], "line one\nline two");
    }

    #[test]
    fn an_unclosed_heredoc_is_an_error_with_its_line() {
        let error = parse_key_values("ok=1\nx<<END\nvalue\n", "SORAT_ENV").unwrap_err();
        assert_eq!(error.line, 2);
        assert!(error.to_string().contains("never closed"));
    }

    #[test]
    fn a_line_without_equals_is_an_error() {
        assert!(parse_key_values("nonsense\n", "SORAT_OUTPUT").is_err());
    }
}
