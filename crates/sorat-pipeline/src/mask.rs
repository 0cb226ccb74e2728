//! Secret masking: every registered value becomes `***` in every line of output.
//!
//! Each secret is registered as its whole value and as each of its lines, so that a
//! multi-line secret (a private key) is masked even when printed line by line; a trailing
//! newline is not part of the value. Values shorter than [`MIN_SECRET_LEN`] are refused:
//! masking `a` or `1` would blank out half of every log and protect nothing.

use aho_corasick::{AhoCorasick, MatchKind};

/// The shortest value accepted as a secret.
pub const MIN_SECRET_LEN: usize = 4;

/// Why a value cannot be masked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    /// The value (or one of its lines) is too short to mask without masking everything.
    #[error(
        "the secret `{name}` is {len} characters long; secrets must have at least {MIN_SECRET_LEN}, or masking it would hide ordinary text"
    )]
    TooShort {
        /// The secret's name.
        name: String,
        /// Its length.
        len: usize,
    },
}

/// Replaces registered secret values in text.
#[derive(Clone, Debug, Default)]
pub struct Masker {
    values: Vec<String>,
    automaton: Option<AhoCorasick>,
}

impl Masker {
    /// A masker with nothing to mask.
    pub fn new() -> Masker {
        Masker::default()
    }

    /// Registers a named secret. An empty value is ignored (there is nothing to leak); a short
    /// one is refused.
    pub fn add_secret(&mut self, name: &str, value: &str) -> Result<(), MaskError> {
        let value = value.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Ok(());
        }
        let lines: Vec<&str> = value
            .lines()
            .map(|line| line.trim_end_matches('\r'))
            .filter(|line| !line.trim().is_empty())
            .collect();
        if value.chars().count() < MIN_SECRET_LEN {
            return Err(MaskError::TooShort {
                name: name.to_string(),
                len: value.chars().count(),
            });
        }
        let mut new_values = vec![value.to_string()];
        for line in lines {
            // A line of a multi-line secret that is too short to mask alone (a PEM's `=`
            // padding line) is still masked as part of the whole value.
            if line.trim().chars().count() >= MIN_SECRET_LEN {
                new_values.push(line.to_string());
                new_values.push(line.trim().to_string());
            }
        }
        self.extend(new_values);
        Ok(())
    }

    /// Registers a value to mask from a step's `::add-mask::` command; short values are
    /// masked too here, because the step asked explicitly.
    pub fn add_value(&mut self, value: &str) {
        let value = value.trim();
        if !value.is_empty() {
            self.extend(vec![value.to_string()]);
        }
    }

    fn extend(&mut self, new_values: Vec<String>) {
        let before = self.values.len();
        for value in new_values {
            if !self.values.contains(&value) {
                self.values.push(value);
            }
        }
        if self.values.len() != before {
            // Leftmost-longest, so that a whole value wins over one of its own lines.
            self.automaton = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&self.values)
                .ok();
        }
    }

    /// The length in bytes of the longest value masked.
    pub fn longest(&self) -> usize {
        self.values.iter().map(String::len).max().unwrap_or(0)
    }

    /// Where to split a long text that arrives in pieces so that no masked value is cut in
    /// two: at or before `preferred`, never inside a match (a match crossing `preferred`
    /// moves the split to its start, or to its end when it starts at 0). The caller keeps at
    /// least [`Masker::longest`]` - 1` bytes after the split, so a value that has only begun
    /// to arrive is whole in the next piece.
    pub fn safe_split(&self, text: &str, preferred: usize) -> usize {
        let mut split = preferred.min(text.len());
        while !text.is_char_boundary(split) {
            split -= 1;
        }
        if let Some(automaton) = &self.automaton {
            for found in automaton.find_iter(text) {
                if found.start() >= split {
                    break;
                }
                if found.end() > split {
                    split = if found.start() > 0 {
                        found.start()
                    } else {
                        found.end()
                    };
                    break;
                }
            }
        }
        split
    }

    /// Whether there is anything to mask.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The text with every registered value replaced by `***`.
    pub fn mask(&self, text: &str) -> String {
        match &self.automaton {
            Some(automaton) => {
                let replacements = vec!["***"; self.values.len()];
                automaton.replace_all(text, &replacements)
            }
            None => text.to_string(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn masks_exact_values_anywhere_in_a_line() {
        let mut masker = Masker::new();
        masker.add_secret("TOKEN", "hunter2-secret").unwrap();
        assert_eq!(
            masker.mask("token=hunter2-secret; again:hunter2-secret"),
            "token=***; again:***"
        );
    }

    #[test]
    fn masks_each_line_of_a_multi_line_secret_and_ignores_the_trailing_newline() {
        let mut masker = Masker::new();
        let key = "-----BEGIN KEY-----\nMIIEabcdefgh\nZZZZyyyyxxxx\n-----END KEY-----\n";
        masker.add_secret("KEY", key).unwrap();
        assert_eq!(masker.mask("MIIEabcdefgh"), "***");
        assert_eq!(masker.mask("  ZZZZyyyyxxxx  "), "  ***  ");
        assert_eq!(masker.mask("-----END KEY-----"), "***");
        assert!(!masker.mask(key).contains("MIIE"));
    }

    #[test]
    fn refuses_short_secrets() {
        let mut masker = Masker::new();
        let error = masker.add_secret("PIN", "123").unwrap_err();
        assert_eq!(
            error,
            MaskError::TooShort {
                name: "PIN".into(),
                len: 3
            }
        );
        assert!(error.to_string().contains("at least 4"));
        masker.add_secret("EMPTY", "").unwrap();
        assert!(masker.is_empty());
    }

    #[test]
    fn a_split_never_cuts_a_secret() {
        let mut masker = Masker::new();
        masker.add_secret("T", "QWERTYUIOP").unwrap();
        let text = "xxxxQWERTYUIOPyyyy";
        assert_eq!(masker.safe_split(text, 8), 4, "moved to the match's start");
        assert_eq!(masker.safe_split(text, 2), 2, "before the match");
        assert_eq!(masker.safe_split(text, 16), 16, "after the match");
        assert_eq!(
            masker.safe_split("QWERTYUIOPzz", 5),
            10,
            "a match at 0 moves to its end"
        );
        assert_eq!(masker.longest(), 10);
    }

    #[test]
    fn the_longest_overlapping_value_wins() {
        let mut masker = Masker::new();
        masker.add_secret("A", "abcd").unwrap();
        masker.add_secret("B", "abcdefgh").unwrap();
        assert_eq!(masker.mask("xabcdefghx"), "x***x");
    }
}
